//! The domain of smsgate, with no I/O: what a message is ([`message`]), the one state machine every status change
//! goes through ([`status`]), and admission ([`admission`]), the single function every way in (REST, SMPP,
//! campaigns) calls before a message is stored. Time is a parameter ([`Timestamp`]) of every decision here;
//! [`clock`] is where the rest of smsgate reads it from, real or moved by a test.

pub mod access;
pub mod admission;
pub mod clock;
pub mod consent;
pub mod message;
pub mod netguard;
pub mod quiet;
pub mod rate;
pub mod routing;
pub mod senders;
pub mod status;

pub use message::{AccountId, Direction, Event, Message, MessageId, Timestamp};
pub use status::{Status, StatusMask};
