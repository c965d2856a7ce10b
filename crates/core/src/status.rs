//! Message statuses and the one state machine that decides every transition.
//!
//! ```text
//! scheduled ─→ queued ─→ sending ─→ sent ─→ delivered | undelivered
//!     │           │  ↖──────┘ (retry)  │
//!     └─→ canceled ←┘       ↓          ↓
//!     expired ←────────── failed     expired
//! ```
//!
//! Final statuses never change. A late or duplicate receipt can therefore never move a message backwards: the
//! transition is refused, and the caller records it as a note, not a status.

use serde::{Deserialize, Serialize};

/// Where a message is on its journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, waiting for its `send_at`.
    Scheduled,
    /// Accepted and due: waiting for a connector.
    Queued,
    /// Claimed by a dispatcher and being handed to a carrier.
    Sending,
    /// The carrier's server accepted it and returned its id ("sent via server").
    Sent,
    /// A receipt says the handset has it.
    Delivered,
    /// A receipt says it could not be delivered.
    Undelivered,
    /// It could not be sent: refused by the carrier, or no route.
    Failed,
    /// Its validity passed before it was sent or before a final receipt came.
    Expired,
    /// Canceled by the sender before it was sent.
    Canceled,
    /// An inbound message, from a handset to us.
    Received,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Scheduled,
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Delivered,
        Status::Undelivered,
        Status::Failed,
        Status::Expired,
        Status::Canceled,
        Status::Received,
    ];

    /// The name used in the API and the store: `"queued"`, `"sent"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Undelivered => "undelivered",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
            Status::Received => "received",
        }
    }

    /// The status with this name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// This status's bit in a [`StatusMask`].
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Whether the message will change no more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Delivered
                | Status::Undelivered
                | Status::Failed
                | Status::Expired
                | Status::Canceled
                | Status::Received
        )
    }

    /// Whether `self → next` is a move the state machine allows.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Scheduled, Queued | Canceled | Expired)
                | (Queued, Sending | Canceled | Expired | Failed)
                | (Sending, Sent | Queued | Failed | Expired)
                | (Sent, Delivered | Undelivered | Expired | Failed)
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("DELIVERED"), None);
    }

    #[test]
    fn final_statuses_never_change() {
        for from in Status::ALL.into_iter().filter(|s| s.is_final()) {
            for to in Status::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn no_status_becomes_itself_or_goes_back_to_scheduled() {
        for s in Status::ALL {
            assert!(!s.can_become(s), "{s}");
            assert!(!s.can_become(Status::Scheduled));
            assert!(!s.can_become(Status::Received));
        }
    }

    #[test]
    fn the_happy_path_and_a_retry() {
        use Status::*;
        let path = [Scheduled, Queued, Sending, Queued, Sending, Sent, Delivered];
        for w in path.windows(2) {
            assert!(w[0].can_become(w[1]), "{} -> {}", w[0], w[1]);
        }
        // A receipt for a message still "sending" (the carrier was faster than our write) is not a legal move;
        // the engine first records `sent`.
        assert!(!Sending.can_become(Delivered));
    }
}

/// A set of statuses as bits ([`Status::bit`]): which status changes of a message call its webhook back
/// (`callback_statuses`); stored as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatusMask(pub u32);

impl StatusMask {
    pub fn of(statuses: &[Status]) -> StatusMask {
        StatusMask(statuses.iter().fold(0, |m, s| m | s.bit()))
    }

    pub fn contains(self, status: Status) -> bool {
        self.0 & status.bit() != 0
    }

    /// The statuses in the set, in [`Status::ALL`]'s order.
    pub fn statuses(self) -> Vec<Status> {
        Status::ALL.into_iter().filter(|s| self.contains(*s)).collect()
    }
}
