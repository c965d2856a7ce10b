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

/// `'a', 'b'` for an SQL `IN` list of status names (names are fixed words, never user input).
pub(crate) fn status_list(statuses: impl IntoIterator<Item = Status>) -> String {
    statuses.into_iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
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
