//! SQL written once for both databases: the [`Database`] both stores implement, and the values and rows it
//! carries.
//!
//! What is not on the hot path (accounts, keys, connectors, routes, webhook settings, SMPP credentials, listings
//! and counts) is one SQL text with `?` placeholders, numbered in order, and one mapping of its rows by column
//! name; SQLite takes `?` as it is, PostgreSQL gets `$1`, `$2`, ... ([`numbered`]). Only the hot paths (inserting
//! messages, claims, recording status changes) are written per database, where each one's shape pays.
//!
//! The schema keeps to three column types (`TEXT`, `BIGINT`, `DOUBLE PRECISION`), so a [`Value`] is one of those,
//! each with its own null: PostgreSQL types every parameter, and a null bound as text into a `BIGINT` column is
//! an error.

use async_trait::async_trait;
use smsgate_core::{AccountId, MessageId, Status, Timestamp};

use crate::Result;
use crate::schema::{account_id_of, corrupt, message_id_of, status_of};

/// A parameter or a column's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}

/// A count, as the databases keep it (saturating at `i64::MAX`).
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(Some(i64::from(v)))
    }
}

impl From<Option<f64>> for Value {
    fn from(v: Option<f64>) -> Value {
        Value::Real(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_string()))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        Value::Text(v.map(str::to_string))
    }
}

impl From<Timestamp> for Value {
    fn from(v: Timestamp) -> Value {
        Value::Int(Some(v.0))
    }
}

impl From<AccountId> for Value {
    fn from(v: AccountId) -> Value {
        Value::Text(Some(v.to_string()))
    }
}

impl From<MessageId> for Value {
    fn from(v: MessageId) -> Value {
        Value::Text(Some(v.to_string()))
    }
}

/// `vec![Value, ...]` from anything that converts into a [`Value`].
macro_rules! values {
    ($($v:expr),* $(,)?) => { vec![$($crate::sql::Value::from($v)),*] };
}
pub(crate) use values;

/// A row of a query's answer, read by column name.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: std::sync::Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    /// A row of values under the query's column names (shared by its rows).
    pub fn new(columns: std::sync::Arc<[String]>, values: Vec<Value>) -> Row {
        Row { columns, values }
    }

    /// The value of `column`, as `T`.
    pub fn get<T: FromValue>(&self, column: &str) -> Result<T> {
        let at = self.columns.iter().position(|c| c == column).ok_or_else(|| corrupt(format!("no column {column}")))?;
        T::from_value(&self.values[at]).ok_or_else(|| corrupt(format!("column {column}: {:?}", self.values[at])))
    }

    /// The text of `column`, as a timestamp, an id or a status.
    pub fn timestamp(&self, column: &str) -> Result<Timestamp> {
        self.get(column).map(Timestamp)
    }

    pub fn account_id(&self, column: &str) -> Result<AccountId> {
        account_id_of(&self.get::<String>(column)?)
    }

    pub fn message_id(&self, column: &str) -> Result<MessageId> {
        message_id_of(&self.get::<String>(column)?)
    }

    pub fn status(&self, column: &str) -> Result<Status> {
        status_of(&self.get::<String>(column)?)
    }

    /// A count (a negative one reads as 0).
    pub fn count(&self, column: &str) -> Result<u64> {
        Ok(u64::try_from(self.get::<i64>(column)?).unwrap_or(0))
    }
}

/// A Rust value a column's [`Value`] reads as; `None` when it is of another type (or null, for a non-`Option`).
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<i64> {
        match v {
            Value::Int(Some(n)) => Some(*n),
            _ => None,
        }
    }
}

impl FromValue for Option<i64> {
    fn from_value(v: &Value) -> Option<Option<i64>> {
        match v {
            Value::Int(n) => Some(*n),
            Value::Text(None) | Value::Real(None) => Some(None),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value) -> Option<f64> {
        match v {
            Value::Real(Some(n)) => Some(*n),
            // SQLite keeps a whole number in a REAL column as an integer when it fits.
            Value::Int(Some(n)) => Some(*n as f64),
            _ => None,
        }
    }
}

impl FromValue for Option<f64> {
    fn from_value(v: &Value) -> Option<Option<f64>> {
        match v {
            Value::Real(n) => Some(*n),
            Value::Int(n) => Some(n.map(|n| n as f64)),
            Value::Text(None) => Some(None),
            Value::Text(Some(_)) => None,
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<String> {
        match v {
            Value::Text(Some(s)) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for Option<String> {
    fn from_value(v: &Value) -> Option<Option<String>> {
        match v {
            Value::Text(s) => Some(s.clone()),
            Value::Int(None) | Value::Real(None) => Some(None),
            _ => None,
        }
    }
}

/// One statement and its parameters, for [`Database::transaction`].
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// A database the cold-path SQL runs on: SQL with `?` placeholders, values in their order. Each call is durable
/// when it returns, as every store call is.
#[async_trait]
pub trait Database: Send + Sync {
    /// Runs a query that writes nothing; its rows.
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>>;

    /// Runs one writing statement in a transaction of its own (a group commit on SQLite); the rows it changed.
    async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64> {
        let changed = self.transaction(vec![Statement { sql: sql.to_string(), params }]).await?;
        Ok(changed.first().copied().unwrap_or(0))
    }

    /// Runs writing statements in order in one transaction: all or none; the rows each changed.
    async fn transaction(&self, statements: Vec<Statement>) -> Result<Vec<u64>>;

    /// Brings the planner's statistics of `tables` up to date, where the database plans by them (PostgreSQL's
    /// `ANALYZE`): after a bulk load, a table that was empty a minute ago is planned as if it still were.
    async fn analyze(&self, tables: &[&str]) -> Result<()> {
        let _ = tables;
        Ok(())
    }

    /// The first row of a query, if any.
    async fn query_one(&self, sql: &str, params: Vec<Value>) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, ... in order, as PostgreSQL wants them. A `?` inside a
/// quoted literal or identifier is left alone.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let (mut n, mut quote) = (0, None);
    for c in sql.chars() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('?', None) => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        let check = |sql: &str, expected: &str| assert_eq!(numbered(sql), expected, "{sql}");
        check("SELECT 1", "SELECT 1");
        check("a = ? AND b = ?", "a = $1 AND b = $2");
        check("a = '?' AND b = ?", "a = '?' AND b = $1");
        check("\"odd?\" = ?, 'it''s?' || ?", "\"odd?\" = $1, 'it''s?' || $2");
    }

    #[test]
    fn rows_read_by_name_and_type() {
        let columns: std::sync::Arc<[String]> = vec!["n".to_string(), "s".to_string(), "none".to_string()].into();
        let row = Row::new(columns, values![7i64, "x", None::<String>]);
        assert_eq!(row.get::<i64>("n").ok(), Some(7));
        assert_eq!(row.get::<f64>("n").ok(), Some(7.0));
        assert_eq!(row.get::<String>("s").ok(), Some("x".into()));
        assert_eq!(row.get::<Option<String>>("none").ok(), Some(None));
        assert_eq!(row.get::<Option<i64>>("none").ok(), Some(None));
        assert!(row.get::<i64>("s").is_err(), "a text is not a number");
        assert!(row.get::<String>("missing").is_err());
    }
}
