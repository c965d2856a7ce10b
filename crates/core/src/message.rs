//! What a message is: its identity, its owner, what it says, where it is on its journey, and the journey itself.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::status::Status;

/// Milliseconds since the Unix epoch, UTC. The store keeps times in this form on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The system's time now. Code that decides by the time takes a [`crate::clock::Clock`] instead.
    pub fn now() -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `secs` seconds, saturating.
    pub fn plus_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    /// This time plus `ms` milliseconds, saturating.
    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new id: a UUIDv7, so ids sort by creation time (which keyset pagination relies on).
            pub fn generate() -> $name {
                $name(Uuid::now_v7())
            }

            /// The lowest id [`Self::generate`] gives at `at` or later: every id made before `at` sorts below it.
            pub fn first_at(at: Timestamp) -> $name {
                let ms = u64::try_from(at.0).unwrap_or(0).min((1 << 48) - 1);
                let mut bytes = [0u8; 16];
                bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
                bytes[6] = 0x70; // version 7
                bytes[8] = 0x80; // the RFC 9562 variant
                $name(Uuid::from_bytes(bytes))
            }

            /// Parses the hyphenated form the API shows.
            pub fn parse(s: &str) -> Option<$name> {
                Uuid::try_parse(s).ok().map($name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

id_type! {
    /// A message's id.
    MessageId
}

id_type! {
    /// An account's id. Accounts are tenants: every message, key and list belongs to one.
    AccountId
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From an account to a handset.
    Outbound,
    /// From a handset to an account.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "outbound" => Some(Direction::Outbound),
            "inbound" => Some(Direction::Inbound),
            _ => None,
        }
    }
}

/// One step of a message's journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub status: Status,
    pub at: Timestamp,
    /// What happened, for people: "accepted", "carrier id 4f2a", "receipt stat:DELIVRD err:000", ...
    pub detail: String,
}

/// A message, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub account_id: AccountId,
    pub direction: Direction,
    /// E.164 for outbound messages; the handset's number for inbound ones.
    pub to: String,
    pub from: String,
    pub body: String,
    /// As `sms_text::Encoding::name` gives it: `"gsm7"`, `"ucs2"`, ...
    pub encoding: String,
    pub segments: u32,
    /// Price in millionths of the account's currency unit, once known.
    pub price_micros: Option<i64>,
    /// The name of the connector that took it.
    pub connector: Option<String>,
    /// The id the carrier gave it.
    pub carrier_id: Option<String>,
    pub status: Status,
    /// Why it failed or was undelivered, as a stable code.
    pub error_code: Option<String>,
    /// The sender's own reference.
    pub reference: Option<String>,
    /// Where status webhooks go.
    pub callback_url: Option<String>,
    /// Which status changes call back (its own URL or its account's); `None`: every one.
    pub callback_statuses: Option<crate::StatusMask>,
    /// When it becomes due; `None` for now.
    pub send_at: Option<Timestamp>,
    /// When it expires if not final by then.
    pub expires_at: Option<Timestamp>,
    /// Submission attempts so far.
    pub attempts: u32,
    /// What it is for: marketing waits for quiet hours and never goes after an opt-out.
    #[serde(default)]
    pub category: crate::consent::Category,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_and_parse_back() {
        let a = MessageId::generate();
        let b = MessageId::generate();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(MessageId::parse(&a.to_string()), Some(a));
        assert_eq!(MessageId::parse("nope"), None);
        // The first id of a millisecond sorts after every id made before it and before every id made after it,
        // as text too.
        let before = MessageId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let bound = MessageId::first_at(Timestamp(i64::try_from(since_epoch.as_millis()).unwrap()));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = MessageId::generate();
        assert!(before < bound && bound < after, "{before} {bound} {after}");
        assert!(before.to_string() < bound.to_string() && bound.to_string() < after.to_string());
        assert_eq!(bound.0.get_version_num(), 7);
    }

    #[test]
    fn timestamps_saturate() {
        assert_eq!(Timestamp(i64::MAX - 1).plus_secs(10), Timestamp(i64::MAX));
        assert_eq!(Timestamp(1000).plus_secs(2), Timestamp(3000));
    }
}
