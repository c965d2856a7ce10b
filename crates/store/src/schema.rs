//! What both stores share: the migrations, the message columns, the journey's format, and the parsing of what the
//! database holds back into core types.

use smsgate_core::routing::Route;
use smsgate_core::{AccountId, Direction, Event, MessageId, Status, Timestamp};

use crate::sql::Value;
use crate::{ListFilter, NewMessage, Result, StoreError, WaitingAt};

/// A schema migration: its version, and its SQL for SQLite and for PostgreSQL (the same text where the dialects
/// agree, which is most of the time).
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) sqlite: &'static str,
    pub(crate) postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL both databases take as it is.
    const fn both(version: i64, sql: &'static str) -> Migration {
        Migration { version, sqlite: sql, postgres: sql }
    }
}

/// The migrations, in order. Each runs once, in a transaction, recorded in `schema_migrations`.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration::both(1, include_str!("../migrations/0001_init.sql")),
    Migration::both(2, include_str!("../migrations/0002_event_count.sql")),
    Migration {
        version: 3,
        sqlite: include_str!("../migrations/0003_journey.sqlite.sql"),
        postgres: include_str!("../migrations/0003_journey.postgres.sql"),
    },
    Migration::both(4, include_str!("../migrations/0004_routing.sql")),
    Migration::both(5, include_str!("../migrations/0005_webhooks.sql")),
    Migration::both(6, include_str!("../migrations/0006_parts.sql")),
    Migration::both(7, include_str!("../migrations/0007_smpp.sql")),
    Migration::both(8, include_str!("../migrations/0008_smpp_outbox.sql")),
    Migration::both(9, include_str!("../migrations/0009_smpp_outbox_lean.sql")),
    Migration {
        version: 10,
        sqlite: include_str!("../migrations/0010_smpp_outbox_rowid.sqlite.sql"),
        postgres: include_str!("../migrations/0010_smpp_outbox_rowid.postgres.sql"),
    },
    Migration::both(11, include_str!("../migrations/0011_callback_statuses.sql")),
    Migration::both(12, include_str!("../migrations/0012_waiting_route.sql")),
    Migration::both(13, include_str!("../migrations/0013_senders.sql")),
    Migration::both(14, include_str!("../migrations/0014_webhook_secrets.sql")),
    Migration::both(15, include_str!("../migrations/0015_api_keys.sql")),
    Migration::both(16, include_str!("../migrations/0016_rate_limits.sql")),
    Migration::both(17, include_str!("../migrations/0017_audit.sql")),
    Migration::both(18, include_str!("../migrations/0018_contacts.sql")),
    Migration::both(19, include_str!("../migrations/0019_templates.sql")),
    Migration::both(20, include_str!("../migrations/0020_campaigns.sql")),
    Migration::both(21, include_str!("../migrations/0021_links.sql")),
    Migration::both(22, include_str!("../migrations/0022_automations.sql")),
    Migration::both(23, include_str!("../migrations/0023_conversations.sql")),
    Migration {
        version: 24,
        sqlite: include_str!("../migrations/0024_rollups.sqlite.sql"),
        postgres: include_str!("../migrations/0024_rollups.postgres.sql"),
    },
    Migration::both(25, include_str!("../migrations/0025_history.sql")),
    Migration::both(26, include_str!("../migrations/0026_recipients.sql")),
    Migration::both(27, include_str!("../migrations/0027_users.sql")),
    Migration {
        version: 28,
        sqlite: include_str!("../migrations/0028_list_members.sqlite.sql"),
        postgres: include_str!("../migrations/0028_list_members.postgres.sql"),
    },
];

/// The `next_attempt_at` of a message that waits for a connector of its route ([`crate::Changes::wait_for_route`]):
/// never due, until [`crate::Store::unpark`] makes it due again.
const WAITING_FOR_ROUTE: i64 = i64::MAX;

/// The `next_attempt_at` a change sets, if any: never, for a message that waits for its route.
pub(crate) fn next_attempt(c: &crate::Changes) -> Option<i64> {
    if c.wait_for_route.is_some() { Some(WAITING_FOR_ROUTE) } else { c.retry_at.map(|r| r.0) }
}

/// One step of a journey as the `journey` column keeps it: a JSON object and a newline, appended with `||` by the
/// statement that moves the message.
pub(crate) fn journey_line(status: Status, at: Timestamp, detail: &str) -> String {
    let event = Event { status, at, detail: detail.to_string() };
    let mut line = serde_json::to_string(&event).unwrap_or_default();
    line.push('\n');
    line
}

/// The journey a new message starts with: accepted (`queued` or `scheduled`), and `sending` when it is stored
/// already claimed.
pub(crate) fn first_journey(new: &NewMessage) -> String {
    let m = &new.message;
    let mut journey = journey_line(m.status, m.created_at, &new.detail);
    if let Some(claim) = &new.claim {
        journey.push_str(&journey_line(Status::Sending, m.created_at, &format!("claimed by {}", claim.owner)));
    }
    journey
}

/// What a claim appends to a journey, by the status the message had: scheduled (its time came, then the claim),
/// sending (a lease that ran out, taken over), queued.
pub(crate) fn claim_lines(owner: &str, now: Timestamp) -> [String; 3] {
    let claimed = journey_line(Status::Sending, now, &format!("claimed by {owner}"));
    [
        journey_line(Status::Queued, now, "send_at reached") + &claimed,
        journey_line(Status::Sending, now, &format!("previous lease ran out; claimed by {owner}")),
        claimed,
    ]
}

/// What expiry appends to a journey, by the status the message had: scheduled, queued, sent.
pub(crate) fn expiry_lines(now: Timestamp) -> [String; 3] {
    [Status::Scheduled, Status::Queued, Status::Sent]
        .map(|from| journey_line(Status::Expired, now, &format!("validity ended while {from}")))
}

/// The JSON an account's route list is kept as; `None` stays NULL.
pub(crate) fn routes_json(routes: Option<&[String]>) -> Option<String> {
    routes.map(|r| serde_json::to_string(r).unwrap_or_else(|_| "[]".into()))
}

/// An account's route list from its column.
pub(crate) fn routes_of(json: Option<String>) -> Result<Option<Vec<String>>> {
    json.map(|j| serde_json::from_str(&j).map_err(|e| corrupt(format!("account routes {j:?}: {e}")))).transpose()
}

/// A route's `matches` and `connectors` columns.
pub(crate) fn route_json(route: &Route) -> (String, String) {
    let matches = serde_json::to_string(&route.matches).unwrap_or_else(|_| "{}".into());
    let connectors = serde_json::to_string(&route.connectors).unwrap_or_else(|_| "[]".into());
    (matches, connectors)
}

/// A route from its columns.
pub(crate) fn route_of(name: String, position: i64, matches: &str, connectors: &str) -> Result<Route> {
    let bad = |what: &str, e: serde_json::Error| corrupt(format!("route {name:?} {what}: {e}"));
    Ok(Route {
        matches: serde_json::from_str(matches).map_err(|e| bad("matches", e))?,
        connectors: serde_json::from_str(connectors).map_err(|e| bad("connectors", e))?,
        name,
        position,
    })
}

/// The attempts of an `attempt_log` column, oldest first.
pub(crate) fn parse_attempts(log: &str) -> Result<Vec<crate::CallbackAttempt>> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| corrupt(format!("callback attempt {l:?}: {e}"))))
        .collect()
}

/// One attempt as the `attempt_log` column keeps it.
pub(crate) fn attempt_line(a: &crate::CallbackAttempt) -> String {
    let mut line = serde_json::to_string(a).unwrap_or_default();
    line.push('\n');
    line
}

/// The events of a `journey` column, oldest first.
pub(crate) fn parse_journey(journey: &str) -> Result<Vec<Event>> {
    journey
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| corrupt(format!("journey line {l:?}: {e}"))))
        .collect()
}

/// The columns of `messages` that make a `Message`, in the order both stores read them.
pub(crate) const MESSAGE_COLUMNS: &str = "id, account_id, direction, to_addr, from_addr, body, encoding, segments, \
     price_micros, connector, carrier_id, status, error_code, reference, callback_url, send_at, expires_at, \
     attempts, created_at, updated_at, callback_statuses, category";

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

pub(crate) fn status_of(s: &str) -> Result<Status> {
    Status::parse(s).ok_or_else(|| corrupt(format!("status {s:?}")))
}

pub(crate) fn account_id_of(s: &str) -> Result<AccountId> {
    AccountId::parse(s).ok_or_else(|| corrupt(format!("account id {s:?}")))
}

pub(crate) fn message_id_of(s: &str) -> Result<MessageId> {
    MessageId::parse(s).ok_or_else(|| corrupt(format!("message id {s:?}")))
}

/// `(<column> = 'a' OR <column> = 'b')`: whether `column` holds one of `statuses`; empty for none. Names are
/// fixed words, never input. Not `IN (...)`: SQLite builds a temporary table for an `IN` list each time it
/// evaluates one, and a partial index's `WHERE` is evaluated at every change of a row (twelve microseconds a
/// change, measured); for the same reason the partial indexes of the migrations are written this way, and a
/// query repeats an index's term word for word so that SQLite can use the index.
pub(crate) fn status_any(column: &str, statuses: impl IntoIterator<Item = Status>) -> String {
    let terms: Vec<String> = statuses.into_iter().map(|s| format!("{column} = '{}'", s.as_str())).collect();
    match terms.len() {
        0 => String::new(),
        1 => terms[0].clone(),
        _ => format!("({})", terms.join(" OR ")),
    }
}

/// The statuses a message must have to become `to`, as [`status_any`] of `column`.
pub(crate) fn may_become(column: &str, to: Status) -> String {
    status_any(column, Status::ALL.into_iter().filter(|s| s.can_become(to)))
}

/// The `WHERE` terms of the partial indexes, word for word.
pub(crate) mod waiting {
    /// `messages_queue`: due when `next_attempt_at` comes.
    pub(crate) const QUEUE: &str = "(status = 'queued' OR status = 'scheduled')";
    /// `messages_expiring`: ended by `expires_at`.
    pub(crate) const EXPIRING: &str = "(status = 'scheduled' OR status = 'queued' OR status = 'sent')";
    /// `messages_waiting`: off the queue until a connector of `waiting_route` comes up.
    pub(crate) const FOR_ROUTE: &str = "(status = 'queued' AND waiting_route IS NOT NULL)";
}

/// Where [`crate::Store::unpark`] starts: the first key of the index (the route, or where to go on from among all
/// routes) and the id the messages of that key come after.
pub(crate) fn unpark_from(route: Option<&str>, after: Option<&WaitingAt>) -> (String, String) {
    match (route, after) {
        (Some(r), Some(at)) if at.route == r => (r.to_string(), at.id.to_string()),
        (Some(r), _) => (r.to_string(), String::new()),
        (None, Some(at)) => (at.route.clone(), at.id.to_string()),
        (None, None) => (String::new(), String::new()),
    }
}

/// The ids of the outbound messages an account sent to a handset (from one of its numbers, or from any), newest
/// first: a `WITH RECURSIVE` clause naming them `chain (id)`, walked from each chain's head in `recipients` back
/// through `prev_to`. Its parameters: the handset, the account, and the address when one is given. A chain ends
/// where history was deleted.
pub(crate) fn chain_clause(one_address: bool) -> String {
    let address = if one_address { " AND r.address = ?" } else { "" };
    format!(
        "WITH RECURSIVE chain (id, prev) AS (\
         SELECT m.id, m.prev_to FROM recipients r JOIN messages m ON m.id = r.last_id \
         WHERE r.handset = ? AND r.account_id = ?{address} \
         UNION ALL SELECT m.id, m.prev_to FROM chain c JOIN messages m ON m.id = c.prev) "
    )
}

/// The `SELECT` that lists an account's messages, newest first, after `cursor`, with `?` placeholders (in the
/// order of the returned values). Only fixed SQL text is formatted in; every value is a parameter. Messages to a
/// number (`to`) are found without an index of numbers: the outbound ones through their chains
/// ([`chain_clause`]), the inbound ones (to one of the account's numbers) through the account's inbound messages.
pub(crate) fn list_query(
    account: AccountId,
    filter: &ListFilter,
    cursor: Option<MessageId>,
    limit: u32,
) -> (String, Vec<Value>) {
    let mut clauses = String::new();
    let mut params = Vec::new();
    let mut add = |clause: &str, v: Value| {
        clauses.push_str(clause);
        params.push(v);
    };
    if let Some(d) = filter.direction {
        add(" AND direction = ?", Value::from(d.as_str()));
    }
    if let Some(s) = filter.status {
        add(" AND status = ?", Value::from(s.as_str()));
    }
    if let Some(to) = &filter.to {
        add(" AND to_addr = ?", Value::from(to));
    }
    if let Some(from) = &filter.from {
        add(" AND from_addr = ?", Value::from(from));
    }
    if let Some(c) = cursor {
        add(" AND id < ?", Value::from(c));
    }
    if let Some(t) = filter.since {
        add(" AND created_at >= ?", Value::from(t));
    }
    if let Some(t) = filter.until {
        add(" AND created_at < ?", Value::from(t));
    }
    let limit = Value::from(i64::from(limit));
    let Some(to) = &filter.to else {
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = ?{clauses} ORDER BY id DESC LIMIT ?");
        let mut values = vec![Value::from(account)];
        values.extend(params);
        values.push(limit);
        return (sql, values);
    };
    // Each half only where the direction filter lets it find something.
    let sent = filter.direction != Some(Direction::Inbound);
    let received = filter.direction != Some(Direction::Outbound);
    let mut halves = Vec::new();
    let mut values = Vec::new();
    if sent {
        values.extend([Value::from(to), Value::from(account)]);
    }
    for (wanted, scope) in [(sent, "id IN (SELECT id FROM chain) AND "), (received, "direction = 'inbound' AND ")] {
        if wanted {
            halves.push(format!(
                "SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM messages WHERE {scope}account_id = ?{clauses} \
                 ORDER BY id DESC LIMIT ?) half{}",
                halves.len()
            ));
            values.push(Value::from(account));
            values.extend(params.iter().cloned());
            values.push(limit.clone());
        }
    }
    let sql = format!(
        "{chain}SELECT {MESSAGE_COLUMNS} FROM ({}) listed ORDER BY id DESC LIMIT ?",
        halves.join(" UNION ALL "),
        chain = if sent { chain_clause(false) } else { String::new() }
    );
    values.push(limit);
    (sql, values)
}
