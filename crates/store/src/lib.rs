//! Storage: everything durable goes through the traits here, one per concern, and [`Store`] is all of them. Two
//! implementations: [`SqliteStore`] (the embedded default: one file, one writer thread that group-commits every
//! write) and [`PgStore`] (for several nodes sharing PostgreSQL). Both run the same migrations and the same
//! conformance suite (`tests/conformance.rs`); [`open`] picks one by the database URL.
//!
//! By concern: [`MessageStore`] (messages and the queue), [`TenancyStore`] (accounts and keys),
//! [`RoutingStore`] (connectors, routes), [`WebhookStore`] and [`CallbackOutbox`] (webhook settings and the
//! callbacks to deliver), [`SmppOutbox`] (deliver_sm to SMPP clients), [`CredentialStore`] (SMPP credentials), [`SenderStore`] (numbers and sender IDs accounts own), [`AuditStore`] (who changed what), the business layer's ([`ContactStore`], [`ConsentStore`], [`JobStore`],
//! [`TemplateStore`], [`CampaignStore`], [`LinkStore`], [`AutomationStore`], [`ConversationStore`]) and [`RollupStore`] (what analytics read).
//! SQL that is not on the hot path is written once, over [`sql::Database`]; only the hot paths (insert, claim,
//! record a status change) are written per database, in `sqlite/` and `postgres/`. What a status change makes
//! for webhooks and SMPP clients is decided in Rust, once ([`effects`]).
//!
//! The queue lives here too: a dispatcher [`MessageStore::claim_due`]s messages with a lease; a lease that runs
//! out (a crash, a lost node) makes the message claimable again, and PostgreSQL's `FOR UPDATE SKIP LOCKED` keeps
//! two nodes from claiming one message. Every status change goes through [`smsgate_core::Status::can_become`]
//! inside the same transaction that writes it, so a late or duplicate receipt never moves a message backwards.

pub mod audit;
pub mod automations;
pub mod campaigns;
pub mod consent;
pub mod contacts;
pub mod conversations;
pub mod credentials;
pub mod effects;
pub mod history;
pub mod jobs;
pub mod links;
pub mod messages;
mod postgres;
pub mod rollups;
pub mod routing;
mod schema;
pub mod seal;
pub mod senders;
pub mod smpp_outbox;
pub mod sql;
mod sqlite;
pub mod templates;
pub mod tenancy;
pub mod users;
pub mod webhooks;

use smsgate_core::Status;

pub use audit::{AuditEntry, AuditStore};
pub use automations::{Automation, AutomationRun, AutomationStore, EventRecord, InboundText};
pub use campaigns::{Campaign, CampaignStore, MessageCount, Recipient, RecipientCount, ReportRow, Run};
pub use consent::{ConsentEvent, ConsentStore, OptOut};
pub use contacts::{Contact, ContactList, ContactQuery, ContactStore, Segment};
pub use conversations::{Conversation, ConversationMessage, ConversationStore, Span};
pub use credentials::{CredentialStore, SmppCredential};
pub use history::HistoryStore;
pub use jobs::{ImportBatch, Job, JobStore};
pub use links::{Click, Link, LinkStore};
pub use messages::{
    Changes, Claim, Inserted, ListFilter, MessageStore, NewMessage, Origin, ReceiptUpdate, Transition, WaitingAt,
};
pub use postgres::PgStore;
pub use rollups::{Counters, Grouping, Point, RollupStore, Rollups};
pub use routing::{ConnectorRecord, RoutingStore};
pub use senders::{Sender, SenderFilter, SenderStore};
pub use smpp_outbox::{
    DeliveryMessage, DeliveryNext, DueDelivery, SMPP_DELIVERY_TTL_MS, SmppFeed, SmppOutbox, SmppReceipts,
};
pub use sqlite::SqliteStore;
pub use templates::{Template, TemplateStore};
pub use tenancy::{Account, ApiKey, TenancyStore};
pub use users::{Session, SignedIn, User, UserStore};
pub use webhooks::{
    CallbackAttempt, CallbackNext, CallbackOutbox, CallbackRecord, CallbackResult, DueCallback, PayloadCallback, Share,
    WebhookStore, Webhooks,
};

/// Opens the store a database URL names: `sqlite://PATH` (the embedded default) or `postgres://...`.
pub async fn open(url: &str, max_connections: u32) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else {
        Ok(std::sync::Arc::new(PgStore::open(url, max_connections).await?))
    }
}

/// Everything smsgate keeps: every concern's trait, on one database. Implementations make each call durable
/// before it returns (fsync'd on SQLite, a commit on PostgreSQL). Code that holds a `dyn Store` calls every
/// concern's methods; code that needs one concern can ask for its trait alone.
#[async_trait::async_trait]
pub trait Store:
    MessageStore
    + TenancyStore
    + RoutingStore
    + WebhookStore
    + CallbackOutbox
    + SmppOutbox
    + CredentialStore
    + SenderStore
    + AuditStore
    + ContactStore
    + ConsentStore
    + JobStore
    + TemplateStore
    + CampaignStore
    + LinkStore
    + AutomationStore
    + ConversationStore
    + RollupStore
    + HistoryStore
    + UserStore
    + std::fmt::Debug
{
    /// Closes the store: waits for writes under way, then releases the database.
    async fn close(&self) {}

    /// Gives back to the file system pages that deleted rows freed, beyond `keep` of them kept for the next rows,
    /// at most `at_most` at a time; how many it gave back. SQLite's file keeps them otherwise; PostgreSQL's
    /// autovacuum does this on its own.
    async fn reclaim_space(&self, keep: u64, at_most: u32) -> Result<u64> {
        let _ = (keep, at_most);
        Ok(0)
    }
}

/// Counts recorded status changes in [`metric::STATUS_CHANGES`]; called once they are committed.
pub(crate) fn count_status_changes(statuses: &[Status]) {
    let mut counts = [0u64; Status::ALL.len()];
    for s in statuses {
        if let Some(i) = Status::ALL.iter().position(|a| a == s) {
            counts[i] += 1;
        }
    }
    for (status, n) in Status::ALL.into_iter().zip(counts) {
        if n > 0 {
            metrics::counter!(metric::STATUS_CHANGES, "status" => status.as_str()).increment(n);
        }
    }
}

/// Metric names the store reports.
pub mod metric {
    /// Status changes this node recorded, by the status reached (acceptance counts as `queued` or `scheduled`).
    pub const STATUS_CHANGES: &str = "smsgate_status_changes_total";
    /// SQLite: how long the writer took over one group of writes, from its `BEGIN` to its `COMMIT` returned
    /// (durable); every write of the group waited for all of it.
    pub const SQLITE_GROUP: &str = "smsgate_sqlite_group_seconds";
    /// SQLite: how long the writer stopped to start the WAL over (a RESTART checkpoint), every write behind it
    /// waiting.
    pub const SQLITE_WAL_RESTART: &str = "smsgate_sqlite_wal_restart_seconds";
    /// SQLite: how long one sync of the WAL file took (`fdatasync`, on the sync thread); the groups committed
    /// before it began are answered when it ends.
    pub const SQLITE_SYNC: &str = "smsgate_sqlite_sync_seconds";
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no, or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The group transaction this write was part of could not commit; nothing of it was kept.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The store was closed, or its writer thread could not run.
    #[error("store stopped: {0}")]
    Stopped(String),
    /// The database held something smsgate did not write (a bad status name, id or number).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL is not `sqlite://...` or `postgres://...`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
