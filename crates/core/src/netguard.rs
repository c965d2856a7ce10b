//! Where the server may send requests on a tenant's behalf (webhooks): public addresses only, unless the operator
//! allows a private range by name. A tenant that could make smsgate POST to `127.0.0.1:5432`, to a LAN printer or
//! to a cloud's metadata service at `169.254.169.254` could probe and reach what only the server reaches.
//!
//! [`Destinations::allows`] is asked of every address actually connected to (after DNS, so a name that resolves
//! to a public address when set and a private one when used gets nowhere); [`Destinations::check_url`] refuses
//! what is private on its face (a literal address, `localhost`) when the URL is given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::access::IpRanges;

/// The addresses requests may go to: every public one, and the private ranges the operator named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    allow_private: IpRanges,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an http or https URL with a host.
    #[error("not an http or https URL")]
    NotHttp,
    /// Its host is an address (or `localhost`) that is not public and not allowed.
    #[error("{0} is a loopback, private, link-local, multicast or reserved address")]
    Private(String),
}

impl Destinations {
    /// Public addresses and the ranges in `allow_private`.
    pub fn new(allow_private: IpRanges) -> Destinations {
        Destinations { allow_private }
    }

    /// Whether a request may go to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow_private.contains(ip)
    }

    /// Refuses a URL whose host is private on its face: an address [`Destinations::allows`] refuses, or
    /// `localhost` (and names under it) unless loopback is allowed. A name is checked again when it is resolved.
    pub fn check_url(&self, url: &str) -> Result<(), Refused> {
        let parsed = url::Url::parse(url).map_err(|_| Refused::NotHttp)?;
        self.check_parsed(&parsed)
    }

    /// [`Destinations::check_url`] for a URL parsed already.
    pub fn check_parsed(&self, parsed: &url::Url) -> Result<(), Refused> {
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Refused::NotHttp);
        }
        let ip = match parsed.host() {
            None => return Err(Refused::NotHttp),
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    return Ok(());
                }
            }
        };
        if self.allows(ip) { Ok(()) } else { Err(Refused::Private(ip.to_string())) }
    }
}

/// Whether `ip` is a global unicast address: not loopback, private (RFC 1918, unique local), shared (CGNAT),
/// link-local (the metadata services), multicast, documentation, benchmarking or otherwise reserved. An IPv6
/// address that embeds an IPv4 one (mapped, NAT64, 6to4) is judged by the IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = a == 0                                  // "this network"
        || a == 10                                         // RFC 1918
        || (a == 100 && (64..128).contains(&b))            // shared address space (CGNAT)
        || a == 127                                        // loopback
        || (a == 169 && b == 254)                          // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))             // RFC 1918
        || (a == 192 && b == 0 && c == 0)                  // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                  // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)                // 6to4 relay anycast
        || (a == 192 && b == 168)                          // RFC 1918
        || (a == 198 && (b == 18 || b == 19))              // benchmarking
        || (a == 198 && b == 51 && c == 100)               // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)                // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0]                   // IPv4-compatible (deprecated)
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0])         // discard-only
        || (s[0] == 0x2001 && s[1] == 0xdb8)               // documentation
        || (s[0] == 0x2001 && s[1] < 0x200)                // IETF protocol assignments (Teredo, ORCHID, ...)
        || (s[0] & 0xfe00) == 0xfc00                       // unique local
        || (s[0] & 0xffc0) == 0xfe80                       // link-local
        || (s[0] & 0xffc0) == 0xfec0                       // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00; // multicast
    !reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(addr: &str, public: bool) {
        let ip: IpAddr = addr.parse().unwrap_or_else(|_| panic!("{addr}"));
        assert_eq!(is_public(ip), public, "{addr}");
    }

    #[test]
    fn private_and_reserved_addresses_are_not_public() {
        for a in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:101::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            check(a, false);
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2a00:1450:4001::1",
        ] {
            check(a, true);
        }
    }

    #[test]
    fn urls_are_refused_on_their_face_and_allowed_by_range() {
        let strict = Destinations::default();
        for url in [
            "http://127.0.0.1:5432/",
            "http://[::1]/hook",
            "https://169.254.169.254/latest/meta-data/",
            "http://localhost:8080/x",
            "http://api.LOCALHOST./x",
            "http://10.0.0.7/",
            "http://[::ffff:192.168.0.1]/",
            "http://2130706433/", // 127.0.0.1 as one number: the URL parser reads it as an address
            "http://0x7f.1/",
        ] {
            assert!(matches!(strict.check_url(url), Err(Refused::Private(_))), "{url}");
        }
        assert_eq!(strict.check_url("ftp://example.com/"), Err(Refused::NotHttp));
        assert_eq!(strict.check_url("http://"), Err(Refused::NotHttp));
        for url in ["https://example.com/hook", "http://8.8.8.8/", "http://hooks.internal.example/"] {
            assert_eq!(strict.check_url(url), Ok(()), "{url}");
        }
        let local = Destinations::new(IpRanges::parse(&["127.0.0.1/32", "10.0.0.0/8"]).unwrap());
        assert_eq!(local.check_url("http://127.0.0.1:9000/hook"), Ok(()));
        assert_eq!(local.check_url("http://localhost:9000/hook"), Ok(()));
        assert_eq!(local.check_url("http://10.9.8.7/"), Ok(()));
        assert!(local.check_url("http://127.0.0.2/").is_err());
        assert!(local.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!local.allows("169.254.169.254".parse().unwrap()));
    }
}
