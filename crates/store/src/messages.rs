//! Messages and the queue: storing messages, claiming what is due, recording status changes and receipts. The
//! hot paths (insert, claim, record, expire, unpark) are written per database, each in its own shape; the reads
//! and the rare writes are written once ([`Database`]).
//!
//! Every status change goes through [`smsgate_core::Status::can_become`] inside the transaction that writes it,
//! and writes in that same transaction what the change makes for webhooks and SMPP clients ([`crate::effects`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Direction, Event, Message, MessageId, Status, StatusMask, Timestamp};

use crate::Result;
use crate::schema::{MESSAGE_COLUMNS, corrupt, journey_line, list_query, parse_journey, waiting};
use crate::smpp_outbox::SmppReceipts;
use crate::sql::{Database, Row, values};

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
    /// The campaign or automation it is sent for (or, inbound, answers).
    pub origin: Origin,
}

impl NewMessage {
    /// A message to store as it is, with its first event's detail.
    pub fn new(message: Message, detail: impl Into<String>) -> NewMessage {
        NewMessage {
            message,
            detail: detail.into(),
            idempotency: None,
            claim: None,
            smpp: None,
            origin: Origin::default(),
        }
    }
}

/// What a message was sent for: a campaign, an automation, or neither; for an inbound message, what it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub campaign: Option<String>,
    pub automation: Option<String>,
}

/// A dispatcher's lease on a message: who holds it and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub owner: String,
    pub until: Timestamp,
}

/// What [`MessageStore::insert_messages`] did with one message.
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
    /// (`retry_at` is ignored) until [`MessageStore::unpark`] puts it back, instead of being claimed again and again.
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

/// A place among the messages that wait for their route, in the order [`MessageStore::unpark`] takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingAt {
    pub route: String,
    pub id: MessageId,
}

/// One status change, for [`MessageStore::transition_many`].
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

/// Messages and the queue.
#[async_trait]
pub trait MessageStore: Database {
    /// Stores messages and their first events in one transaction: all or none. A message whose idempotency key
    /// the account used before is not stored again; its result says which message has the key.
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>>;

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

    /// Applies status changes and receipts in one transaction (group commit). Transitions apply first, in order,
    /// each seeing the ones before it; then receipts, each moving the message its connector's carrier id names.
    /// Returns whether each transition moved its message, and for each receipt the message it moved, if any.
    async fn record(
        &self,
        transitions: &[Transition],
        receipts: &[ReceiptUpdate],
    ) -> Result<(Vec<bool>, Vec<Option<MessageId>>)>;

    /// Moves every message whose validity ended by `now` and is not final to `expired`; returns their ids.
    async fn expire_due(&self, now: Timestamp, limit: u32) -> Result<Vec<MessageId>>;

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
    /// [`MessageStore::transition`] would; returns, in order, whether each moved.
    async fn transition_many(&self, batch: &[Transition]) -> Result<Vec<bool>> {
        Ok(self.record(batch, &[]).await?.0)
    }

    /// An account's message.
    async fn message(&self, account: AccountId, id: MessageId) -> Result<Option<Message>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(message_of).transpose()
    }

    /// A message's journey, oldest first.
    async fn events(&self, id: MessageId) -> Result<Vec<Event>> {
        let row = self.query_one("SELECT journey FROM messages WHERE id = ?", values![id]).await?;
        row.map_or(Ok(Vec::new()), |r| parse_journey(&r.get::<String>("journey")?))
    }

    /// An account's messages, newest first, after the `cursor` id (exclusive), at most `limit`.
    async fn list_messages(
        &self,
        account: AccountId,
        filter: &ListFilter,
        cursor: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let (sql, params) = list_query(account, filter, cursor, limit);
        self.query(&sql, params).await?.iter().map(message_of).collect()
    }

    /// Ends every lease `owner` holds, so its messages can be claimed at once: a node that starts again knows that
    /// nothing it claimed before is under way any more. Returns how many. Node names must be unique among nodes
    /// sharing a database.
    async fn release_leases(&self, owner: &str) -> Result<u64> {
        self.execute(
            "UPDATE messages SET lease_until = 0 WHERE status = 'sending' AND lease_owner = ? AND lease_until > 0",
            values![owner],
        )
        .await
    }

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
    ) -> Result<bool> {
        let r = replacement;
        let send_at = r.send_at.map(|t| t.0);
        let n = self.execute(
            "UPDATE messages SET body = ?, encoding = ?, segments = ?, price_micros = ?, send_at = ?, \
             expires_at = ?, next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ?, \
             waiting_route = CASE WHEN ? IS NULL THEN waiting_route END, \
             journey = journey || CASE status WHEN 'scheduled' THEN ? ELSE ? END \
             WHERE id = ? AND account_id = ? AND status IN ('scheduled', 'queued')",
            values![
                &r.body,
                &r.encoding,
                i64::from(r.segments),
                r.price_micros,
                send_at,
                r.expires_at.map(|t| t.0),
                send_at,
                now,
                send_at,
                journey_line(Status::Scheduled, now, detail),
                journey_line(Status::Queued, now, detail),
                id,
                account,
            ],
        );
        Ok(n.await? == 1)
    }

    /// The message a connector's carrier id belongs to.
    async fn message_by_carrier_id(&self, connector: &str, carrier_id: &str) -> Result<Option<MessageId>> {
        let sql = "SELECT id FROM messages WHERE connector = ? AND carrier_id = ? ORDER BY id DESC LIMIT 1";
        self.query_one(sql, values![connector, carrier_id]).await?.map(|r| r.message_id("id")).transpose()
    }

    /// A message's status, whoever owns it.
    async fn message_status(&self, id: MessageId) -> Result<Option<Status>> {
        let row = self.query_one("SELECT status FROM messages WHERE id = ?", values![id]).await?;
        row.map(|r| r.status("status")).transpose()
    }

    /// The campaign or automation of the last text `account` sent from `sender` to `handset`, if that text was
    /// made at `since` or later: what a reply from that handset answers.
    async fn replied_to(&self, account: AccountId, handset: &str, sender: &str, since: Timestamp) -> Result<Origin> {
        let sql = "SELECT campaign_id, automation_id, last_at FROM recipients WHERE handset = ? AND address = ? \
                   AND account_id = ?";
        let Some(r) = self.query_one(sql, values![handset, sender, account]).await? else {
            return Ok(Origin::default());
        };
        if r.timestamp("last_at")? < since {
            return Ok(Origin::default());
        }
        Ok(Origin { campaign: r.get("campaign_id")?, automation: r.get("automation_id")? })
    }

    /// The account that last sent from `sender` to `handset`: where a reply from that handset belongs.
    async fn account_for_reply(&self, handset: &str, sender: &str) -> Result<Option<AccountId>> {
        let sql = "SELECT account_id FROM recipients WHERE handset = ? AND address = ? ORDER BY last_id DESC LIMIT 1";
        self.query_one(sql, values![handset, sender]).await?.map(|r| r.account_id("account_id")).transpose()
    }

    /// Messages still on their way (`scheduled`, `queued`, `sending`, `sent`) by status, across all accounts, for
    /// metrics. Counted through the partial indexes of what waits, so the cost follows the backlog, not the
    /// history.
    async fn count_pending(&self) -> Result<Vec<(Status, i64)>> {
        let mut out = Vec::new();
        for r in self.query(&pending_sql(), Vec::new()).await? {
            let n: i64 = r.get("n")?;
            if n > 0 {
                out.push((r.status("status")?, n));
            }
        }
        out.sort_by_key(|(s, _)| s.as_str());
        Ok(out)
    }
}

/// Counts of what waits, through the partial indexes, so the cost follows the backlog, not the history: by status
/// for what can expire, and what is being sent.
pub(crate) fn pending_sql() -> String {
    format!(
        "SELECT status, COUNT(*) AS n FROM messages WHERE {} GROUP BY status \
         UNION ALL SELECT 'sending' AS status, COUNT(*) AS n FROM messages WHERE status = 'sending'",
        waiting::EXPIRING
    )
}

/// A [`Message`] from the [`MESSAGE_COLUMNS`] of a row.
pub(crate) fn message_of(r: &Row) -> Result<Message> {
    let count = |column: &str| -> Result<u32> {
        let v: i64 = r.get(column)?;
        u32::try_from(v).map_err(|_| corrupt(format!("{column} {v}")))
    };
    let direction: String = r.get("direction")?;
    Ok(Message {
        id: r.message_id("id")?,
        account_id: r.account_id("account_id")?,
        direction: Direction::parse(&direction).ok_or_else(|| corrupt(format!("direction {direction:?}")))?,
        to: r.get("to_addr")?,
        from: r.get("from_addr")?,
        body: r.get("body")?,
        encoding: r.get("encoding")?,
        segments: count("segments")?,
        price_micros: r.get("price_micros")?,
        connector: r.get("connector")?,
        carrier_id: r.get("carrier_id")?,
        status: r.status("status")?,
        error_code: r.get("error_code")?,
        reference: r.get("reference")?,
        callback_url: r.get("callback_url")?,
        send_at: r.get::<Option<i64>>("send_at")?.map(Timestamp),
        expires_at: r.get::<Option<i64>>("expires_at")?.map(Timestamp),
        attempts: count("attempts")?,
        category: category_of(&r.get::<String>("category")?)?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
        callback_statuses: mask_of(r.get("callback_statuses")?)?,
    })
}

/// A `category` column's value.
pub(crate) fn category_of(s: &str) -> Result<smsgate_core::consent::Category> {
    smsgate_core::consent::Category::parse(s).ok_or_else(|| corrupt(format!("category {s:?}")))
}

/// A `callback_statuses` column's value.
pub(crate) fn mask_of(v: Option<i64>) -> Result<Option<StatusMask>> {
    v.map(|v| u32::try_from(v).map(StatusMask).map_err(|_| corrupt(format!("callback_statuses {v}")))).transpose()
}
