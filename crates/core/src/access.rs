//! Who may bind over SMPP: password hashes (Argon2id, in PHC form) and allowed source address ranges.

use std::net::IpAddr;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Argon2id's memory in KiB and passes for new hashes: 7 MiB and 5 passes, one of OWASP's equivalent settings (its
/// first, and the crate's default, is 19 MiB and 2). The memory is taken at every hash and every bind's check,
/// and the allocator keeps it afterwards: 19 MiB made a third of an idle server's memory, and many binds at once
/// need it each.
const M_COST_KIB: u32 = 7 * 1024;
const T_COST: u32 = 5;

/// The PHC string (`$argon2id$...`) of `password` with a fresh salt. SMPP passwords are at most 8 characters, so a
/// slow hash is what stands between a stolen database and the passwords.
pub fn hash_password(password: &str) -> String {
    let hasher = match Params::new(M_COST_KIB, T_COST, 1, None) {
        Ok(params) => Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        Err(_) => Argon2::default(),
    };
    hasher.hash_password(password.as_bytes()).map(|h| h.to_string()).unwrap_or_default()
}

/// Whether `password` is the one `hash` was made from (false for a hash that does not parse). The hash names its
/// own cost, so hashes made with other settings (the 19 MiB default of earlier versions) still verify.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Address ranges, such as `10.0.0.0/8`, `192.0.2.7` or `2001:db8::/32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRanges(Vec<ipnet::IpNet>);

/// A range that is neither an address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or a CIDR range")]
pub struct InvalidRange(pub String);

impl IpRanges {
    /// The ranges, each an address or CIDR; the first that is neither is the error.
    pub fn parse<S: AsRef<str>>(ranges: &[S]) -> Result<IpRanges, InvalidRange> {
        ranges
            .iter()
            .map(|r| {
                let r = r.as_ref().trim();
                r.parse::<ipnet::IpNet>()
                    .or_else(|_| r.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| InvalidRange(r.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(IpRanges)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let h = hash_password("secret");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("secret", &h));
        assert!(!verify_password("Secret", &h));
        assert_ne!(hash_password("secret"), h, "salted");
        assert!(!verify_password("secret", "not a hash"));
        assert!(h.contains("$m=7168,t=5,p=1$"), "{h}");
        // A hash made with the crate's defaults (19 MiB, 2 passes), as earlier versions stored them.
        let old = Argon2::default().hash_password(b"secret").unwrap().to_string();
        assert!(old.contains("$m=19456,t=2,p=1$"), "{old}");
        assert!(verify_password("secret", &old) && !verify_password("Secret", &old));
    }

    #[test]
    fn ranges() {
        let r = IpRanges::parse(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]).unwrap();
        for (addr, inside) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("2001:db8::1", true),
            ("::ffff:10.9.9.9", true),
            ("::1", false),
        ] {
            assert_eq!(r.contains(addr.parse().unwrap()), inside, "{addr}");
        }
        assert!(IpRanges::parse(&["10.0.0.0/33"]).unwrap_err().to_string().contains("10.0.0.0/33"));
        assert!(IpRanges::parse(&["example.com"]).is_err());
    }
}
