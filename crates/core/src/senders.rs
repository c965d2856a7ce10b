//! Who may send from what: numbers and sender IDs are owned by accounts, and an account's [`SenderPolicy`] says
//! whether it may send only from what it owns. Addresses are compared by [`address_key`], so that `+447700900001`
//! and `447700900001`, or `AcmeBank` and `ACMEBANK`, are one sender.

use crate::admission::SenderKind;

/// Whether an account may send from senders it does not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenderPolicy {
    /// Only from numbers and sender IDs assigned to it (the default for new accounts).
    Owned,
    /// From any sender admission accepts; the operator's choice (the zero-config admin account has it).
    Any,
}

impl SenderPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderPolicy::Owned => "owned",
            SenderPolicy::Any => "any",
        }
    }

    pub fn parse(s: &str) -> Option<SenderPolicy> {
        match s {
            "owned" => Some(SenderPolicy::Owned),
            "any" => Some(SenderPolicy::Any),
            _ => None,
        }
    }
}

/// What kind of sender a registered address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// A full number, E.164.
    LongCode,
    /// 3 to 8 digits.
    ShortCode,
    /// An alphanumeric sender ID.
    Alphanumeric,
}

impl AddressKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressKind::LongCode => "long_code",
            AddressKind::ShortCode => "short_code",
            AddressKind::Alphanumeric => "alphanumeric",
        }
    }

    pub fn parse(s: &str) -> Option<AddressKind> {
        match s {
            "long_code" => Some(AddressKind::LongCode),
            "short_code" => Some(AddressKind::ShortCode),
            "alphanumeric" => Some(AddressKind::Alphanumeric),
            _ => None,
        }
    }
}

impl From<SenderKind> for AddressKind {
    fn from(k: SenderKind) -> AddressKind {
        match k {
            SenderKind::International => AddressKind::LongCode,
            SenderKind::ShortCode => AddressKind::ShortCode,
            SenderKind::Alphanumeric => AddressKind::Alphanumeric,
        }
    }
}

/// Where a registered sender stands: sender IDs may wait for the operator's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SenderStatus {
    /// It may be sent from, and what is sent to it belongs to its account.
    Active,
    /// Asked for; waiting for the operator.
    Pending,
    /// The operator said no; it blocks nobody else once deleted.
    Rejected,
}

impl SenderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderStatus::Active => "active",
            SenderStatus::Pending => "pending",
            SenderStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<SenderStatus> {
        match s {
            "active" => Some(SenderStatus::Active),
            "pending" => Some(SenderStatus::Pending),
            "rejected" => Some(SenderStatus::Rejected),
            _ => None,
        }
    }
}

/// The form addresses are compared in: trimmed, without a leading `+`, in lower case. A carrier may hand over an
/// inbound message's destination with or without the `+`, and sender IDs differ only in case are the same brand to
/// the people who read them.
pub fn address_key(address: &str) -> String {
    let s = address.trim();
    s.strip_prefix('+').unwrap_or(s).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_numbers_and_brands_as_people_do() {
        let check = |a: &str, b: &str, same: bool| assert_eq!(address_key(a) == address_key(b), same, "{a} vs {b}");
        check("+447700900001", "447700900001", true);
        check(" +447700900001 ", "+447700900001", true);
        check("AcmeBank", "ACMEBANK", true);
        check("AcmeBank", "AcmeBank1", false);
        check("60123", "+60123", true);
        check("+447700900001", "+447700900002", false);
    }

    #[test]
    fn names_round_trip() {
        for p in [SenderPolicy::Owned, SenderPolicy::Any] {
            assert_eq!(SenderPolicy::parse(p.as_str()), Some(p));
        }
        for k in [AddressKind::LongCode, AddressKind::ShortCode, AddressKind::Alphanumeric] {
            assert_eq!(AddressKind::parse(k.as_str()), Some(k));
        }
        for s in [SenderStatus::Active, SenderStatus::Pending, SenderStatus::Rejected] {
            assert_eq!(SenderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(SenderPolicy::parse("Owned"), None);
    }
}
