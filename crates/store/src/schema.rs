//! What both stores share: the migrations (valid SQL for SQLite and PostgreSQL), the message columns, and the
//! parsing of what the database holds back into core types.

use smsgate_core::{AccountId, MessageId, Status};

use crate::{ListFilter, Result, StoreError};

/// The migrations, in order. Each runs once, in a transaction, recorded in `schema_migrations`.
pub(crate) const MIGRATIONS: &[(i64, &str)] =
    &[(1, include_str!("../migrations/0001_init.sql")), (2, include_str!("../migrations/0002_event_count.sql"))];

/// The columns of `messages` that make a `Message`, in the order both stores read them.
pub(crate) const MESSAGE_COLUMNS: &str = "id, account_id, direction, to_addr, from_addr, body, encoding, segments, \
     price_micros, connector, carrier_id, status, error_code, reference, callback_url, send_at, expires_at, \
     attempts, created_at, updated_at";

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
}

/// A query parameter of [`list_query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// The `SELECT` that lists an account's messages, newest first, after `cursor`, with `?` placeholders (in the
/// order of the returned values). Only fixed SQL text is formatted in; every value is a parameter.
pub(crate) fn list_query(
    account: AccountId,
    filter: &ListFilter,
    cursor: Option<MessageId>,
    limit: u32,
) -> (String, Vec<Param>) {
    let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = ?");
    let mut values = vec![Param::Text(account.to_string())];
    let mut add = |clause: &str, v: Param| {
        sql.push_str(clause);
        values.push(v);
    };
    if let Some(d) = filter.direction {
        add(" AND direction = ?", Param::Text(d.as_str().into()));
    }
    if let Some(s) = filter.status {
        add(" AND status = ?", Param::Text(s.as_str().into()));
    }
    if let Some(to) = &filter.to {
        add(" AND to_addr = ?", Param::Text(to.clone()));
    }
    if let Some(from) = &filter.from {
        add(" AND from_addr = ?", Param::Text(from.clone()));
    }
    if let Some(c) = cursor {
        add(" AND id < ?", Param::Text(c.to_string()));
    }
    if let Some(t) = filter.since {
        add(" AND created_at >= ?", Param::Int(t.0));
    }
    if let Some(t) = filter.until {
        add(" AND created_at < ?", Param::Int(t.0));
    }
    add(" ORDER BY id DESC LIMIT ?", Param::Int(i64::from(limit)));
    (sql, values)
}
