//! The group-commit writer: status changes and receipts from every send and every receipt handler go through
//! [`Engine::write`], and those that arrive together are written in one transaction ([`crate::group`]), several
//! groups under way at once.

use std::time::Duration;

use smsgate_core::MessageId;
use smsgate_store::{ReceiptUpdate, Store, Transition};
use tracing::warn;

use crate::{DomainEvent, Engine, EngineError, Events};

/// A change for the group-commit writer.
#[derive(Debug)]
pub(crate) enum Write {
    Transition(Transition),
    Receipt(ReceiptUpdate),
}

/// What a [`Write`] did.
#[derive(Debug)]
pub(crate) enum Written {
    /// Whether the transition moved its message.
    Moved(bool),
    /// The message the receipt moved, if any.
    Matched(Option<MessageId>),
}

/// How many times a failed group is written again before its changes are reported failed.
const WRITE_RETRIES: u32 = 3;

/// Runs a store write, and again up to `retries` times while it fails, waiting a little longer each time. For
/// writes that fail whole (a rolled-back transaction changes nothing), so that trying again is safe: PostgreSQL
/// ends one of two transactions that wait on each other (groups written in parallel that change the same messages
/// in opposite orders), and a connection can drop. Each try sees the messages as they are then.
async fn with_retries<T, F, Fut>(retries: u32, mut write: F) -> Result<T, EngineError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, smsgate_store::StoreError>>,
{
    let mut tries = 0;
    loop {
        match write().await {
            Ok(done) => return Ok(done),
            Err(e) if tries < retries => {
                tries += 1;
                warn!(error = %e, tries, "a store write failed; trying again");
                tokio::time::sleep(Duration::from_millis(10 << tries)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes a group: the transitions and the receipts in it, in one [`Store::record`] (one transaction), and the
/// results back in the group's order; once committed, tells `events` what moved.
pub(crate) async fn write_group(
    store: &dyn Store,
    events: &Events,
    group: Vec<Write>,
) -> Result<Vec<Written>, EngineError> {
    // Sized at once: grown push by push, these were a tenth of the server's allocations under load.
    let receipts_in = group.iter().filter(|w| matches!(w, Write::Receipt(_))).count();
    let mut transitions = Vec::with_capacity(group.len() - receipts_in);
    let (mut receipts, mut kinds) = (Vec::with_capacity(receipts_in), Vec::with_capacity(group.len()));
    for w in group {
        kinds.push(matches!(w, Write::Transition(_)));
        match w {
            Write::Transition(t) => transitions.push(t),
            Write::Receipt(r) => receipts.push(r),
        }
    }
    let (moved, matched) = with_retries(WRITE_RETRIES, || store.record(&transitions, &receipts)).await?;
    if events.listened() {
        for (t, _) in transitions.iter().zip(&moved).filter(|(_, m)| **m) {
            events.publish(DomainEvent::StatusChanged { id: t.id, status: t.to, at: t.at });
        }
        for (r, id) in receipts.iter().zip(&matched) {
            if let Some(id) = *id {
                events.publish(DomainEvent::ReceiptRecorded { id, status: r.to, at: r.at });
            }
        }
    }
    let (mut moved, mut matched) = (moved.into_iter(), matched.into_iter());
    Ok(kinds
        .into_iter()
        .map(|is_transition| match is_transition {
            true => Written::Moved(moved.next().unwrap_or(false)),
            false => Written::Matched(matched.next().flatten()),
        })
        .collect())
}

/// The most status changes one group commit writes.
pub(crate) const GROUP_COMMIT: usize = 1000;

/// Groups of status changes written at once. One waits for its commit while the next forms: on PostgreSQL that
/// keeps the server busy (a quarter more messages a second than one at a time); SQLite's writer thread merges them.
pub(crate) const PARALLEL_GROUPS: usize = 3;

impl Engine {
    /// Writes through the group-commit writer: concurrent changes share one transaction (one disk sync).
    pub(crate) async fn write(&self, change: Write) -> Result<Written, EngineError> {
        let recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match recorder {
            Some(r) => r.submit(change).await,
            None => Err(EngineError::NotRunning),
        }
    }

    /// Records a status change through the group writer (in one transaction with the changes and receipts
    /// arriving meanwhile); whether the message moved.
    pub async fn record(&self, transition: Transition) -> Result<bool, EngineError> {
        // The writer answers each write with the result of its kind.
        Ok(matches!(self.write(Write::Transition(transition)).await?, Written::Moved(true)))
    }

    /// Records status changes through the group writer, each as [`Engine::record`]; whether each moved.
    pub async fn record_many(&self, transitions: Vec<Transition>) -> Result<Vec<bool>, EngineError> {
        let writes = transitions.into_iter().map(|t| self.record(t));
        futures_util::future::join_all(writes).await.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_write_is_tried_again_then_reported() {
        let calls = std::cell::Cell::new(0);
        let failing_twice = || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n <= 2 { Err(smsgate_store::StoreError::Commit("deadlock".into())) } else { Ok(n) } }
        };
        assert_eq!(with_retries(3, failing_twice).await.ok(), Some(3));
        calls.set(0);
        let always = || async { Err::<(), _>(smsgate_store::StoreError::Commit("disk full".into())) };
        let said = |e: EngineError| e.to_string();
        assert_eq!(with_retries(2, always).await.map_err(said), Err("store: commit failed: disk full".to_string()));
        let once = with_retries(0, failing_twice).await.map_err(said);
        assert_eq!(once, Err("store: commit failed: deadlock".to_string()));
    }
}
