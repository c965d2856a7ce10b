//! Receipts from connectors: each moves the message its carrier id names, through the group writer, and waits a
//! little for a `sent` it overtook.

use std::time::Duration;

use smsgate_connectors::{ConnectorEvent, Receipt, ReceiptState};
use smsgate_core::Status;
use smsgate_store::ReceiptUpdate;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::writer::{Write, Written};
use crate::{Engine, metric, seconds_between};

impl Engine {
    pub(crate) async fn handle_events(self, mut events: mpsc::Receiver<ConnectorEvent>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let stopped = shutdown.cancelled();
        tokio::pin!(stopped);
        loop {
            let event = tokio::select! {
                _ = &mut stopped => break,
                e = events.recv() => match e { Some(e) => e, None => break },
            };
            let engine = self.clone();
            tasks.spawn(Box::pin(async move { engine.apply_event(event, None).await }));
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Applies a connector's event, telling `kept` (when the carrier waits for it) whether it was kept: written,
    /// or settled for good.
    async fn apply_event(&self, event: ConnectorEvent, mut kept: Option<tokio::sync::oneshot::Sender<bool>>) {
        let done = match event {
            ConnectorEvent::Receipt(r) => self.apply_receipt(r, &mut kept).await,
            ConnectorEvent::Inbound(i) => self.store_inbound(i).await,
            ConnectorEvent::Durable(event, waiting) => return Box::pin(self.apply_event(*event, Some(waiting))).await,
        };
        if let Some(kept) = kept {
            let _ = kept.send(done);
        }
    }

    /// Applies a receipt: it moves the message the carrier's id names, in the same group commit as other changes.
    /// A receipt can overtake the `sent` it follows (the carrier answers before the write lands); one that moves
    /// nothing is tried again, with growing pauses, until the message is final or [`Config::receipt_wait`] passes.
    /// Returns false only when the store kept failing: the carrier should send it again. A receipt that overtook
    /// its `sent` is held here, in memory, while it waits; its carrier is told at once that it is kept (it may be
    /// holding the submit's answer until then), so a crash during that wait loses it.
    async fn apply_receipt(&self, r: Receipt, kept: &mut Option<tokio::sync::oneshot::Sender<bool>>) -> bool {
        let to = match r.state {
            ReceiptState::Delivered => Status::Delivered,
            ReceiptState::Undelivered | ReceiptState::Rejected => Status::Undelivered,
            ReceiptState::Expired => Status::Expired,
        };
        let update = ReceiptUpdate {
            connector: r.connector.clone(),
            carrier_id: r.carrier_id.clone(),
            to,
            at: r.at,
            detail: r.detail.clone(),
            error_code: r.error_code.clone(),
        };
        // The id as the connector reads it first, then the other forms it may have been given in.
        let forms: Vec<&String> = std::iter::once(&r.carrier_id).chain(&r.alternatives).collect();
        let deadline = tokio::time::Instant::now() + self.config.receipt_wait;
        self.wait_for_sent(&forms, deadline).await;
        let mut pause = Duration::from_millis(10);
        loop {
            // Whether this round could not reach the store.
            let mut failed = false;
            for carrier_id in &forms {
                let update = ReceiptUpdate { carrier_id: carrier_id.to_string(), ..update.clone() };
                match self.write(Write::Receipt(update)).await {
                    Ok(Written::Matched(Some(_))) => {
                        metrics::counter!(metric::RECEIPTS, "status" => to.as_str()).increment(1);
                        let sent = self.sent_at.lock().unwrap_or_else(|e| e.into_inner()).remove(*carrier_id);
                        if let Some(sent) = sent {
                            metrics::histogram!(metric::SENT_TO_DELIVERED).record(seconds_between(sent.at, r.at));
                        }
                        return true;
                    }
                    // Nothing moved: the message is final already (a late or duplicate receipt, which changes
                    // nothing), or its `sent` is not recorded yet; only the latter is worth waiting for.
                    Ok(_) => match self.store.message_by_carrier_id(&r.connector, carrier_id).await {
                        Ok(Some(id)) => match self.store.message_status(id).await {
                            Ok(Some(s)) if s.is_final() => {
                                debug!(%id, receipt = %r.detail, "receipt for a message that can no longer move; ignored");
                                return true;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                failed = true;
                                warn!(error = %e, "reading a receipt's message failed; trying again");
                            }
                        },
                        Ok(None) => {}
                        Err(e) => {
                            failed = true;
                            warn!(error = %e, "looking up a receipt's message failed; trying again");
                        }
                    },
                    Err(e) => {
                        failed = true;
                        warn!(error = %e, "recording a receipt failed; trying again");
                    }
                }
            }
            if !failed && let Some(kept) = kept.take() {
                let _ = kept.send(true);
            }
            if tokio::time::Instant::now() >= deadline {
                if failed {
                    warn!(connector = %r.connector, carrier_id = %r.carrier_id, "receipt not recorded: the store failed");
                    return false;
                }
                metrics::counter!(metric::RECEIPTS, "status" => "unmatched").increment(1);
                warn!(connector = %r.connector, carrier_id = %r.carrier_id, receipt = %r.detail, "unmatched receipt");
                return true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Waits (until `deadline` at most) while the `sent` of a message this node submitted under one of `ids` is
    /// being written. A receipt can overtake that write (the carrier answers the submit, then sends the receipt
    /// while the group commit is under way); trying it first cost a write that moved nothing, a look at the message,
    /// and a pause that doubles, which on PostgreSQL held most receipts back for hundreds of milliseconds.
    async fn wait_for_sent(&self, ids: &[&String], deadline: tokio::time::Instant) {
        loop {
            let notified = self.sent_written.notified();
            tokio::pin!(notified);
            // Listening before looking, so a write that finishes in between is not missed.
            notified.as_mut().enable();
            let pending = {
                let sent = self.sent_at.lock().unwrap_or_else(|e| e.into_inner());
                ids.iter().any(|id| sent.get(id.as_str()).is_some_and(|s| !s.written))
            };
            if !pending || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}
