//! The SMPP outbox: receipts and inbound messages on their way to the account's SMPP clients as deliver_sm.
//! Written by the store in the transaction of the change they carry ([`crate::effects`] says which); claimed and
//! finished by the SMPP server's deliverer. The claim and its bookkeeping are tuned per database; the rest is
//! written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Message, MessageId, Status, Timestamp};

use crate::Result;
use crate::sql::{Database, Row, values};

/// The receipts an SMPP client asked for with a message it submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmppReceipts {
    /// The submit's `registered_delivery` (SMPP 3.4 5.2.17): bits 0–1 `01` a receipt for the final status, `10`
    /// only for a final failure; bit 4 intermediate notifications (here: `sent`, the carrier took it).
    pub registered_delivery: u8,
    /// Ids the client was given for the message: 1, or its parts' count when it asked for a receipt per part
    /// (each part then has its own id, and gets its own receipt).
    pub ids: u32,
}

impl SmppReceipts {
    /// Whether a change to `status` makes a receipt.
    pub fn wants(&self, status: Status) -> bool {
        let finals = self.registered_delivery & 3;
        match status {
            Status::Delivered => finals == 1,
            Status::Undelivered | Status::Failed | Status::Expired => finals == 1 || finals == 2,
            Status::Canceled => finals == 1,
            Status::Sent => self.registered_delivery & 0x10 != 0,
            _ => false,
        }
    }
}

/// How long a deliver_sm waits for a receiver of its account to bind and take it.
pub const SMPP_DELIVERY_TTL_MS: i64 = 72 * 3600 * 1000;

/// A deliver_sm due to go to an account's SMPP client: a receipt, or an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: String,
    pub account_id: AccountId,
    pub message_id: MessageId,
    /// `receipt` or `inbound`.
    pub kind: String,
    /// 0: for the message; else the part (its own id) the receipt is for.
    pub part: u32,
    /// The status it reports, and its time.
    pub status: Status,
    pub error_code: Option<String>,
    pub at: Timestamp,
    pub attempts: u32,
    pub expires_at: Timestamp,
    /// What the deliver_sm says of its message (none when the message is gone).
    pub message: Option<DeliveryMessage>,
}

/// What a deliver_sm says of its message: the addresses, the text (for an inbound message; a receipt quotes its
/// start) and when it was submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMessage {
    pub id: MessageId,
    pub to: String,
    pub from: String,
    pub body: String,
    pub created_at: Timestamp,
}

impl From<&Message> for DeliveryMessage {
    fn from(m: &Message) -> DeliveryMessage {
        DeliveryMessage {
            id: m.id,
            to: m.to.clone(),
            from: m.from.clone(),
            body: m.body.clone(),
            created_at: m.created_at,
        }
    }
}

/// The way a node's SMPP server hears, straight from the store, of deliver_sm it can send at once, instead of
/// claiming them from the outbox ([`SmppOutbox::feed_smpp_deliveries`]). A deliver_sm for an account with a receiver
/// bound on this node is written already leased to `node` for `lease_ms` and handed over `tx` once its
/// transaction commits; if it is not taken in time (the channel full, the node stopped), its lease runs out and a
/// claim takes it, so the feed is only a shortcut, never the one copy. Only deliver_sm that are alone of their
/// message (a final receipt when no intermediate one was asked for, an inbound message) are fed: a message's
/// deliver_sm must go in order, which the claim sees to.
#[derive(Clone)]
pub struct SmppFeed {
    pub node: String,
    pub lease_ms: i64,
    /// Whether the account has a receiver (or transceiver) bound on this node now.
    pub bound: std::sync::Arc<dyn Fn(AccountId) -> bool + Send + Sync>,
    pub tx: tokio::sync::mpsc::Sender<DueDelivery>,
}

impl std::fmt::Debug for SmppFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmppFeed").field("node", &self.node).field("lease_ms", &self.lease_ms).finish_non_exhaustive()
    }
}

/// What became of a deliver_sm, for [`SmppOutbox::finish_smpp_deliveries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryNext {
    /// The client answered OK.
    Delivered,
    /// Try again at this time.
    RetryAt(Timestamp),
    /// Its time is over.
    Expired,
}

/// What the SMPP server's deliverer claims and records.
#[async_trait]
pub trait SmppOutbox: Database {
    /// Hands deliver_sm for accounts bound on this node straight to `feed` from now on (see [`SmppFeed`]), and
    /// releases this node's earlier leases on the outbox (a node starting again takes them back at once). Returns
    /// false, doing nothing, where the store cannot: the SMPP server then claims everything.
    async fn feed_smpp_deliveries(&self, feed: SmppFeed) -> Result<bool> {
        let _ = feed;
        Ok(false)
    }

    /// Claims up to `limit` deliver_sm due at `now` for the `accounts` bound here, for `owner` until
    /// `now + lease_ms`: for each message only its oldest pending ones, so a message's receipts go out in order.
    async fn claim_smpp_deliveries(
        &self,
        owner: &str,
        accounts: &[AccountId],
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>>;

    /// Records what became of deliver_sm.
    async fn finish_smpp_deliveries(&self, results: &[(String, DeliveryNext)]) -> Result<()>;

    /// Gives up the deliver_sm whose time ran out by `now` (no receiver bound in time); returns how many.
    async fn expire_smpp_deliveries(&self, now: Timestamp) -> Result<u64> {
        self.execute("DELETE FROM smpp_outbox WHERE state = 'pending' AND expires_at <= ?", values![now]).await
    }

    /// Deliver_sm still to go, across all accounts.
    async fn count_pending_smpp_deliveries(&self) -> Result<i64> {
        let row = self.query_one("SELECT COUNT(*) AS n FROM smpp_outbox WHERE state = 'pending'", Vec::new()).await?;
        row.map_or(Ok(0), |r| r.get("n"))
    }
}

/// The columns a claim of deliver_sm returns, for [`due_delivery_of`].
pub(crate) const DUE_DELIVERY_COLUMNS: &str =
    "id, account_id, message_id, kind, part, status, error_code, at, attempts, expires_at";

/// A claimed deliver_sm from the [`DUE_DELIVERY_COLUMNS`], without its message. Its id is a number on SQLite
/// (the rowid) and a text on PostgreSQL; either way the deliverer hands it back as text.
pub(crate) fn due_delivery_of(r: &Row) -> Result<DueDelivery> {
    let id = match r.get::<i64>("id") {
        Ok(n) => n.to_string(),
        Err(_) => r.get("id")?,
    };
    Ok(DueDelivery {
        id,
        account_id: r.account_id("account_id")?,
        message_id: r.message_id("message_id")?,
        kind: r.get("kind")?,
        part: u32::try_from(r.get::<i64>("part")?).unwrap_or(0),
        status: r.status("status")?,
        error_code: r.get("error_code")?,
        at: r.timestamp("at")?,
        attempts: u32::try_from(r.get::<i64>("attempts")?).unwrap_or(u32::MAX),
        expires_at: r.timestamp("expires_at")?,
        message: None,
    })
}
