//! Storage: the [`Store`] trait everything durable goes through, and its two implementations: [`SqliteStore`]
//! (the embedded default: one file, one writer thread that group-commits every write) and [`PgStore`] (for
//! several nodes sharing PostgreSQL). Both run the same migrations and the same conformance suite
//! (`tests/conformance.rs`); [`open`] picks one by the database URL.
//!
//! The queue lives here too: a dispatcher [`Store::claim_due`]s messages with a lease; a lease that runs out (a
//! crash, a lost node) makes the message claimable again, and PostgreSQL's `FOR UPDATE SKIP LOCKED` keeps two
//! nodes from claiming one message. Every status change goes through [`smsgate_core::Status::can_become`] inside
//! the same transaction that writes it, so a late or duplicate receipt never moves a message backwards.

mod postgres;
mod schema;
mod sqlite;

use async_trait::async_trait;
use smsgate_core::routing::Route;
use smsgate_core::{AccountId, Direction, Event, Message, MessageId, Status, Timestamp};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Opens the store a database URL names: `sqlite://PATH` (the embedded default) or `postgres://...`.
pub async fn open(url: &str, max_connections: u32) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    } else {
        Ok(std::sync::Arc::new(PgStore::open(url, max_connections).await?))
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
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    /// The admin account manages accounts and keys.
    pub is_admin: bool,
    pub created_at: Timestamp,
    /// The routes the account may use, by name; `None`: all.
    pub routes: Option<Vec<String>>,
}

/// An account's webhooks: where status and inbound callbacks go, and the secret that signs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhooks {
    pub account_id: AccountId,
    pub status_url: Option<String>,
    pub inbound_url: Option<String>,
    pub secret: String,
    pub updated_at: Timestamp,
}

/// What an account's SMPP client applications bind with.
#[derive(Debug, Clone, PartialEq)]
pub struct SmppCredential {
    pub system_id: String,
    pub account_id: AccountId,
    /// An Argon2 PHC string.
    pub password_hash: String,
    /// Address ranges binds may come from; `None`: anywhere.
    pub allowed_ips: Option<Vec<String>>,
    /// Binds at once; `None`: no limit.
    pub max_binds: Option<u32>,
    /// Submits per second over all its binds; `None`: no limit.
    pub throughput: Option<f64>,
    pub created_at: Timestamp,
}

/// A callback due to go out, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCallback {
    pub id: String,
    pub account_id: AccountId,
    pub message_id: MessageId,
    /// `status` or `inbound`.
    pub kind: String,
    pub url: String,
    /// The status it reports, and its time.
    pub status: Status,
    pub error_code: Option<String>,
    pub at: Timestamp,
    pub attempts: u32,
    pub created_at: Timestamp,
    /// The account's signing secret now (empty if its webhooks were removed).
    pub secret: String,
    /// The message as it is now, for the body.
    pub message: Option<Message>,
}

/// One try at delivering a callback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallbackAttempt {
    pub at: Timestamp,
    /// `200`, `500`, `timeout`, `refused`, ...
    pub result: String,
    /// How long the receiver took, in milliseconds.
    pub ms: u64,
}

/// A callback of a message, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRecord {
    pub id: String,
    pub kind: String,
    pub url: String,
    pub status: Status,
    pub error_code: Option<String>,
    pub at: Timestamp,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: Vec<CallbackAttempt>,
    pub next_attempt_at: Option<Timestamp>,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackNext {
    Delivered,
    /// Try again at this time.
    RetryAt(Timestamp),
    /// No more tries (its 24 hours are over).
    GiveUp,
}

/// A delivery attempt's outcome, for [`Store::finish_callbacks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackResult {
    pub id: String,
    pub attempt: CallbackAttempt,
    pub next: CallbackNext,
}

/// Whether a status change is reported to webhooks: every one after `queued`.
pub(crate) fn notifies(status: Status) -> bool {
    !matches!(status, Status::Queued | Status::Scheduled)
}

/// A connector as stored: its kind and settings (JSON, read by the code that knows the kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorRecord {
    pub name: String,
    pub kind: String,
    pub settings: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An API key's record; the key itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: AccountId,
    pub prefix: String,
    pub created_at: Timestamp,
}

/// A message to store, with the first step of its journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub message: Message,
    /// The first event's detail ("accepted", "received from +44...").
    pub detail: String,
    /// The `Idempotency-Key` the sender gave, with a hash of its request.
    pub idempotency: Option<(String, String)>,
    /// Claimed at once by the accepting node, which sends it straight away: the message is stored `sending`,
    /// leased to `owner`, its journey `queued` then `sending` (one write instead of an insert and a claim).
    pub claim: Option<Claim>,
    /// Submitted over SMPP with receipts asked for: which, and how many ids the client was given.
    pub smpp: Option<SmppReceipts>,
}

impl NewMessage {
    /// A message to store as it is, with its first event's detail.
    pub fn new(message: Message, detail: impl Into<String>) -> NewMessage {
        NewMessage { message, detail: detail.into(), idempotency: None, claim: None, smpp: None }
    }
}

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
/// claiming them from the outbox ([`Store::feed_smpp_deliveries`]). A deliver_sm for an account with a receiver
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

/// What became of a deliver_sm, for [`Store::finish_smpp_deliveries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryNext {
    /// The client answered OK.
    Delivered,
    /// Try again at this time.
    RetryAt(Timestamp),
    /// Its time is over.
    Expired,
}

/// A dispatcher's lease on a message: who holds it and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub until: Timestamp,
}

/// What [`Store::insert_messages`] did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    New,
    /// A message with this idempotency key exists already: its id, and whether its request hash matched.
    Duplicate { id: MessageId, same_request: bool },
}

/// Filters for listing messages. `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub direction: Option<Direction>,
    pub status: Option<Status>,
    pub to: Option<String>,
    pub from: Option<String>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
}

/// Field changes that go with a status change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub connector: Option<String>,
    pub carrier_id: Option<String>,
    pub error_code: Option<String>,
    pub price_micros: Option<i64>,
    /// For a move back to `queued` (a retry): when it may be tried again.
    pub retry_at: Option<Timestamp>,
    /// For a move back to `queued` because no connector of this route is up: the message waits off the queue
    /// (`retry_at` is ignored) until [`Store::unpark`] puts it back, instead of being claimed again and again.
    /// Any other change of the message ends such a wait.
    pub wait_for_route: Option<String>,
    /// Fencing for a message being sent: the move happens only if this dispatcher still holds the lease, so one
    /// whose lease ran out (and was taken over) cannot overwrite the new holder's work.
    pub lease_owner: Option<String>,
    /// The claim that counted an attempt was not one (the message is put back to wait for its connector's
    /// pace): the count goes back down.
    pub attempt_undone: bool,
    /// For `sent` through a connector that submitted the message part by part: the carrier's id of each part, in
    /// order (`carrier_id` is the first). Receipts then come per part, and the message follows them all.
    pub parts: Vec<String>,
}

/// A place among the messages that wait for their route, in the order [`Store::unpark`] takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingAt {
    pub route: String,
    pub id: MessageId,
}

/// One status change, for [`Store::transition_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub id: MessageId,
    pub to: Status,
    pub at: Timestamp,
    pub detail: String,
    pub changes: Changes,
}

/// A receipt's status change, for a message found by the carrier's id for it rather than by ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptUpdate {
    /// The connector that took the message.
    pub connector: String,
    /// The id the carrier gave it.
    pub carrier_id: String,
    pub to: Status,
    pub at: Timestamp,
    pub detail: String,
    pub error_code: Option<String>,
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

/// Everything smsgate keeps. Implementations make each call durable before it returns (fsync'd on SQLite, a
/// commit on PostgreSQL).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates an account.
    async fn create_account(&self, name: &str, is_admin: bool, now: Timestamp) -> Result<Account>;

    /// The account with this id.
    async fn account(&self, id: AccountId) -> Result<Option<Account>>;

    /// The admin account, if one was created.
    async fn admin_account(&self) -> Result<Option<Account>>;

    /// Stores a key's hash for an account.
    async fn create_api_key(&self, account: AccountId, key_hash: &str, prefix: &str, now: Timestamp) -> Result<ApiKey>;

    /// How many unrevoked keys an account has.
    async fn key_count(&self, account: AccountId) -> Result<i64>;

    /// The account whose unrevoked key has this hash.
    async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<Account>>;

    /// Stores messages and their first events in one transaction: all or none. A message whose idempotency key
    /// the account used before is not stored again; its result says which message has the key.
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>>;

    /// An account's message.
    async fn message(&self, account: AccountId, id: MessageId) -> Result<Option<Message>>;

    /// A message's journey, oldest first.
    async fn events(&self, id: MessageId) -> Result<Vec<Event>>;

    /// An account's messages, newest first, after the `cursor` id (exclusive), at most `limit`.
    async fn list_messages(
        &self,
        account: AccountId,
        filter: &ListFilter,
        cursor: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>>;

    /// Claims up to `limit` due messages for `owner` until `now + lease_ms`: scheduled ones whose time has come and
    /// queued ones whose next attempt is due move to `sending`; `sending` ones whose lease ran out are taken over.
    async fn claim_due(&self, owner: &str, now: Timestamp, lease_ms: i64, limit: u32) -> Result<Vec<Message>>;

    /// Puts back on the queue, due at `now`, up to `limit` messages accepted before `now` that wait for a connector
    /// of `route` ([`Changes::wait_for_route`]), or for any route when `route` is `None`: the first after `after`
    /// in the order of route names, then ids (oldest first). Returns where it stopped, to go on from there: `None`
    /// when it found none. Calls that go on from where the last stopped, with the same `now`, end even while
    /// messages keep being set waiting meanwhile. Cheap when none waits.
    async fn unpark(
        &self,
        route: Option<&str>,
        after: Option<&WaitingAt>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Option<WaitingAt>>;

    /// Ends every lease `owner` holds, so its messages can be claimed at once: a node that starts again knows that
    /// nothing it claimed before is under way any more. Returns how many. Node names must be unique among nodes
    /// sharing a database.
    async fn release_leases(&self, owner: &str) -> Result<u64>;

    /// Moves a message to `to` if the state machine allows it, with `changes`, recording the event. Returns
    /// whether it moved; a refused move (a late receipt for a final message) changes nothing.
    async fn transition(
        &self,
        id: MessageId,
        to: Status,
        now: Timestamp,
        detail: &str,
        changes: &Changes,
    ) -> Result<bool> {
        let t = Transition { id, to, at: now, detail: detail.to_string(), changes: changes.clone() };
        Ok(self.record(&[t], &[]).await?.0.first().copied().unwrap_or(false))
    }

    /// Applies many status changes in one transaction (group commit: one disk sync for all), each as
    /// [`Store::transition`] would; returns, in order, whether each moved.
    async fn transition_many(&self, batch: &[Transition]) -> Result<Vec<bool>> {
        Ok(self.record(batch, &[]).await?.0)
    }

    /// Applies status changes and receipts in one transaction (group commit). Transitions apply first, in order,
    /// each seeing the ones before it; then receipts, each moving the message its connector's carrier id names.
    /// Returns whether each transition moved its message, and for each receipt the message it moved, if any.
    async fn record(
        &self,
        transitions: &[Transition],
        receipts: &[ReceiptUpdate],
    ) -> Result<(Vec<bool>, Vec<Option<MessageId>>)>;

    /// Replaces the text of an account's message that is still waiting (`scheduled` or `queued`, not being sent),
    /// with `replacement`'s body, encoding, segments, price, and its `send_at` and `expires_at` (the message waits
    /// until the new `send_at`, if any); records `detail` in its journey. Returns whether it was replaced.
    async fn replace_message(
        &self,
        account: AccountId,
        id: MessageId,
        replacement: &Message,
        now: Timestamp,
        detail: &str,
    ) -> Result<bool>;

    /// Moves every message whose validity ended by `now` and is not final to `expired`; returns their ids.
    async fn expire_due(&self, now: Timestamp, limit: u32) -> Result<Vec<MessageId>>;

    /// The message a connector's carrier id belongs to.
    async fn message_by_carrier_id(&self, connector: &str, carrier_id: &str) -> Result<Option<MessageId>>;

    /// A message's status, whoever owns it.
    async fn message_status(&self, id: MessageId) -> Result<Option<Status>>;

    /// The account that last sent from `sender` to `handset`: where a reply from that handset belongs.
    async fn account_for_reply(&self, handset: &str, sender: &str) -> Result<Option<AccountId>>;

    /// Every connector, by name.
    async fn connectors(&self) -> Result<Vec<ConnectorRecord>>;

    /// Stores a new connector; false if one has its name.
    async fn insert_connector(&self, connector: &ConnectorRecord) -> Result<bool>;

    /// Replaces a connector's kind and settings (keeping when it was created); false if there is none by its name.
    async fn update_connector(&self, connector: &ConnectorRecord) -> Result<bool>;

    /// Deletes a connector; false if there was none.
    async fn delete_connector(&self, name: &str) -> Result<bool>;

    /// Every route, in no particular order ([`smsgate_core::routing::RoutingTable`] orders them).
    async fn routes(&self) -> Result<Vec<Route>>;

    /// Stores a new route; false if one has its name.
    async fn insert_route(&self, route: &Route, now: Timestamp) -> Result<bool>;

    /// Replaces a route; false if there is none by its name.
    async fn update_route(&self, route: &Route, now: Timestamp) -> Result<bool>;

    /// Deletes a route; false if there was none.
    async fn delete_route(&self, name: &str) -> Result<bool>;

    /// Records that the one-time step `name` is done; true if this call did it, false if it was done before (by
    /// this node or another).
    async fn do_once(&self, name: &str, now: Timestamp) -> Result<bool>;

    /// The accounts limited to named routes, with their routes.
    async fn route_limits(&self) -> Result<Vec<(AccountId, Vec<String>)>>;

    /// Limits an account to the named routes (`None`: all); false if there is no such account.
    async fn set_account_routes(&self, account: AccountId, routes: Option<&[String]>) -> Result<bool>;

    /// Sets an account's webhook URLs (`None` removes one), keeping its secret, or giving it `new_secret` if it
    /// has none yet.
    async fn put_webhooks(
        &self,
        account: AccountId,
        status_url: Option<&str>,
        inbound_url: Option<&str>,
        new_secret: &str,
        now: Timestamp,
    ) -> Result<Webhooks>;

    /// An account's webhooks, if it set any.
    async fn webhooks(&self, account: AccountId) -> Result<Option<Webhooks>>;

    /// Replaces an account's signing secret; false if it has no webhooks.
    async fn rotate_webhook_secret(&self, account: AccountId, secret: &str, now: Timestamp) -> Result<bool>;

    /// Adds SMPP credentials; false when the `system_id` is taken (by any account: binds name no account).
    async fn create_smpp_credential(&self, credential: &SmppCredential) -> Result<bool>;

    /// An account's SMPP credentials, by `system_id`.
    async fn smpp_credentials(&self, account: AccountId) -> Result<Vec<SmppCredential>>;

    /// The credentials a bind names.
    async fn smpp_credential(&self, system_id: &str) -> Result<Option<SmppCredential>>;

    /// Removes an account's credentials; false when it has none of that `system_id`.
    async fn delete_smpp_credential(&self, account: AccountId, system_id: &str) -> Result<bool>;

    /// Claims up to `limit` callbacks due at `now` for `owner` until `now + lease_ms`: for each message only its
    /// oldest undelivered callback, so a message's callbacks go out in order.
    async fn claim_callbacks(&self, owner: &str, now: Timestamp, lease_ms: i64, limit: u32)
    -> Result<Vec<DueCallback>>;

    /// Records delivery attempts.
    async fn finish_callbacks(&self, results: &[CallbackResult]) -> Result<()>;

    /// A message's callbacks, oldest first (for the account that owns it).
    async fn callbacks(&self, account: AccountId, message: MessageId) -> Result<Vec<CallbackRecord>>;

    /// Callbacks still to deliver, across all accounts.
    async fn count_pending_callbacks(&self) -> Result<i64>;

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
    async fn expire_smpp_deliveries(&self, now: Timestamp) -> Result<u64>;

    /// Deliver_sm still to go, across all accounts.
    async fn count_pending_smpp_deliveries(&self) -> Result<i64>;

    /// Closes the store: waits for writes under way, then releases the database.
    async fn close(&self) {}

    /// Messages still on their way (`scheduled`, `queued`, `sending`, `sent`) by status, across all accounts, for
    /// metrics. Counted through the partial indexes of what waits, so the cost follows the backlog, not the history.
    async fn count_pending(&self) -> Result<Vec<(Status, i64)>>;
}
