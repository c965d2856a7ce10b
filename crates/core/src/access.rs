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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// What an API key may do. A key holds a set of these; a route asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Send and cancel messages.
    Send,
    /// Read messages, inbound messages, callbacks and settings.
    Read,
    /// Change the account's settings: webhooks, SMPP credentials, sender IDs, API keys.
    Manage,
    /// The operator's routes: accounts, connectors, routes, numbers, approvals (keys of the admin account only).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Send, Scope::Read, Scope::Manage, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Manage => "manage",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Send => 1,
            Scope::Read => 2,
            Scope::Manage => 4,
            Scope::Admin => 8,
        }
    }
}

/// A set of [`Scope`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

/// A scope name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a scope: send, read, manage or admin")]
pub struct InvalidScope(pub String);

impl Scopes {
    /// Every scope an account's key may have: all four for the admin account, the first three for others.
    pub fn all_for(is_admin: bool) -> Scopes {
        let all = Scopes::of(&[Scope::Send, Scope::Read, Scope::Manage]);
        if is_admin { all.with(Scope::Admin) } else { all }
    }

    pub fn of(scopes: &[Scope]) -> Scopes {
        scopes.iter().fold(Scopes(0), |s, x| s.with(*x))
    }

    pub fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes in both sets.
    pub fn and(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    /// Whether every scope of `other` is in this set.
    pub fn covers(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names, in [`Scope::ALL`]'s order.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL.into_iter().filter(|s| self.contains(*s)).map(Scope::as_str).collect()
    }

    /// Scopes from their names; the first that is not one is the error.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Scopes, InvalidScope> {
        names.iter().try_fold(Scopes(0), |acc, n| {
            Scope::parse(n.as_ref().trim()).map(|s| acc.with(s)).ok_or_else(|| InvalidScope(n.as_ref().to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_name_and_as_sets() {
        let s = Scopes::parse(&["send", " read"]).unwrap();
        assert!(s.contains(Scope::Send) && s.contains(Scope::Read) && !s.contains(Scope::Manage));
        assert_eq!(s.names(), ["send", "read"]);
        assert_eq!(Scopes::parse(&["send", "write"]), Err(InvalidScope("write".into())));
        assert!(Scopes::all_for(true).contains(Scope::Admin) && !Scopes::all_for(false).contains(Scope::Admin));
        assert!(Scopes::all_for(false).covers(s) && !s.covers(Scopes::all_for(false)));
        assert!(Scopes::parse::<&str>(&[]).unwrap().is_empty());
    }

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

/// What a dashboard user may do in their account. Each role can do what the one after it can, and more:
/// `viewer` reads; `member` also sends and does the account's daily work (contacts, templates, campaigns,
/// automations, conversations); `admin` also changes the account's settings (API keys, webhooks, SMPP credentials,
/// senders, compliance) and its users other than owners; `owner` also manages owners. A user of the admin account
/// with the role `admin` or `owner` is an operator: connectors, routes and every account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

/// A role name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a role: owner, admin, member or viewer")]
pub struct InvalidRole(pub String);

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Result<Role, InvalidRole> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| InvalidRole(s.to_string()))
    }

    /// The API scopes a signed-in user of this role holds, in an account that is (or is not) the admin's. A
    /// member's `manage` stops short of the account's settings; the API's routes say which those are.
    pub fn scopes(self, is_admin_account: bool) -> Scopes {
        let scopes = match self {
            Role::Viewer => Scopes::of(&[Scope::Read]),
            Role::Member => Scopes::of(&[Scope::Read, Scope::Send, Scope::Manage]),
            Role::Admin | Role::Owner => Scopes::all_for(is_admin_account),
        };
        scopes.and(Scopes::all_for(is_admin_account))
    }

    /// Whether a user of this role may create, change or remove a user who has (or is to have) `other`.
    pub fn may_manage(self, other: Role) -> bool {
        match self {
            Role::Owner => true,
            Role::Admin => other != Role::Owner,
            Role::Member | Role::Viewer => false,
        }
    }
}

#[cfg(test)]
mod role_tests {
    use super::*;

    #[test]
    fn roles_parse_and_order() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert!(Role::parse("root").is_err());
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Member && Role::Member > Role::Viewer);
    }

    #[test]
    fn scopes_grow_with_the_role_and_admin_only_for_the_operator() {
        assert_eq!(Role::Viewer.scopes(true), Scopes::of(&[Scope::Read]));
        assert!(!Role::Member.scopes(true).contains(Scope::Admin));
        assert!(Role::Member.scopes(false).contains(Scope::Send));
        assert!(Role::Admin.scopes(true).contains(Scope::Admin));
        assert!(!Role::Owner.scopes(false).contains(Scope::Admin), "only the admin account's users operate");
    }

    #[test]
    fn who_manages_whom() {
        assert!(Role::Owner.may_manage(Role::Owner));
        assert!(Role::Admin.may_manage(Role::Admin) && !Role::Admin.may_manage(Role::Owner));
        assert!(!Role::Member.may_manage(Role::Viewer));
    }
}
