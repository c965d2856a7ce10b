//! Domain events, in process: what was committed, told to whoever listens — keyword handling (STOP), automations
//! and the dashboard's live views react to them instead of polling the store.
//!
//! An event is published only after the change it tells of is committed, and a subscriber that falls behind
//! loses events ([`tokio::sync::broadcast`]'s `Lagged`), never data: the store stays the truth, and a subscriber
//! that lagged reads it. Messages are told whole once, when they come in ([`DomainEvent::Accepted`],
//! [`DomainEvent::Received`]); after that by id, which is all the writer knows of a change.

use smsgate_core::{Message, MessageId, Status, Timestamp};
use tokio::sync::broadcast;

/// Events kept for a subscriber that has not read them yet; past this, it lags.
pub const BACKLOG: usize = 4096;

/// Something that happened to a message, committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    /// A message from an account was stored (`queued`, `scheduled`, or `sending` when it went straight to the
    /// dispatcher).
    Accepted(Message),
    /// An inbound message was stored for the account it belongs to.
    Received(Message),
    /// A message moved to `status`: claimed for sending, sent, failed, put back, canceled, expired.
    StatusChanged { id: MessageId, status: Status, at: Timestamp },
    /// A carrier's receipt was recorded for a message: it moved to `status`, or, for one part of a message sent
    /// in parts, that part did (the message moves once its parts decide).
    ReceiptRecorded { id: MessageId, status: Status, at: Timestamp },
}

/// The engine's event bus. Cheap to clone; clones publish to the same subscribers.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<DomainEvent>,
}

impl Default for Events {
    fn default() -> Events {
        Events { tx: broadcast::channel(BACKLOG).0 }
    }
}

impl Events {
    /// Every event published from now on (up to [`BACKLOG`] unread).
    pub fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.tx.subscribe()
    }

    /// Tells the subscribers, if any. Call only after the change is committed.
    pub fn publish(&self, event: DomainEvent) {
        // No subscriber is not an error: nobody listens.
        let _ = self.tx.send(event);
    }

    /// Whether anybody listens (so a publisher can skip building events nobody reads).
    pub fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_hear_what_is_published_after_they_subscribe() {
        let events = Events::default();
        assert!(!events.listened());
        let change =
            |n: i64| DomainEvent::StatusChanged { id: MessageId::generate(), status: Status::Sent, at: Timestamp(n) };
        events.publish(change(1));
        let mut rx = events.subscribe();
        assert!(events.listened());
        let second = change(2);
        events.publish(second.clone());
        assert_eq!(rx.try_recv().ok(), Some(second));
        assert!(rx.try_recv().is_err(), "nothing from before it subscribed");
    }

    #[test]
    fn a_slow_subscriber_lags_and_keeps_the_newest() {
        let events = Events::default();
        let mut rx = events.subscribe();
        for n in 0..(BACKLOG as i64 + 10) {
            events.publish(DomainEvent::StatusChanged {
                id: MessageId::generate(),
                status: Status::Sent,
                at: Timestamp(n),
            });
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(10))));
        let next = rx.try_recv().ok();
        assert!(matches!(next, Some(DomainEvent::StatusChanged { at: Timestamp(10), .. })), "{next:?}");
    }
}
