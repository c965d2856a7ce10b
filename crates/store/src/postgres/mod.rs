//! [`PgStore`]: the [`Store`] on PostgreSQL through sqlx, for several nodes sharing one database.
//!
//! Every network round trip counts here, so writes go in groups: one multi-row `INSERT` for a batch of messages or
//! events, one `UPDATE ... FROM (VALUES ...)` for a group of status changes, each statement carrying up to
//! [`ROWS_PER_STATEMENT`] rows. Claims take `FOR UPDATE SKIP LOCKED`, so two nodes never claim one message.
//! A claim's pick is `id = ANY(ARRAY(SELECT id ... LIMIT n FOR UPDATE SKIP LOCKED))`: an uncorrelated sub-select
//! that PostgreSQL runs once, before the update (an InitPlan). As `id IN (SELECT ... LIMIT n)` a plan may run the
//! pick again for each row, each run skipping the rows already taken, and claim far more than n (`unpark` was seen
//! to change every row that way). Such a claim is planned for its parameters (`plan_cache_mode =
//! force_custom_plan`): the pool plans generically, and a generic plan made while the table was small reads the
//! whole table to find the picked ids (1.5 s a claim beside 100,000 messages).
//! The schema (migrations) is shared with the SQLite store and valid SQL for both.

mod effects;
mod messages;
mod outbox;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use smsgate_core::{Message, MessageId, Status};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
// Statements built with `format!` take only fixed SQL text (column lists, status names, `FOR UPDATE SKIP
// LOCKED`, `$N` placeholders); every value goes through a bind parameter. That is what `AssertSqlSafe` asserts.
use sqlx::{AssertSqlSafe, Column, Row as _, TypeInfo};

use crate::schema::{MESSAGE_COLUMNS, MIGRATIONS, may_become};
use crate::sql::{Database, Row, Statement, Value, numbered};
use crate::{Result, Store, StoreError};

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A transaction whose statements are planned for their parameters (why claims need it: the module's doc).
    async fn begin_custom_planned(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan").execute(&mut *tx).await?;
        Ok(tx)
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://...`) and runs the migrations.
    pub async fn open(url: &str, max_connections: u32) -> Result<PgStore> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        }
        // Generic plans for prepared statements: PostgreSQL planned each multi-row statement again at every
        // execution (a custom plan for its hundreds of parameters), which took a quarter of its time; the generic
        // plans are the same nested loops over the primary key and the partial indexes.
        let mut options = PgConnectOptions::from_str(url)?.options([("plan_cache_mode", "force_generic_plan")]);
        // TLS as the URL says (`sslmode=require`, `verify-ca`, `verify-full`, with `sslrootcert`); a URL that says
        // nothing gets libpq's `prefer`, except to this machine, where encryption protects nothing and costs
        // every query.
        let says = url.contains("sslmode=") || url.contains("ssl-mode=");
        let local =
            matches!(options.get_host(), "127.0.0.1" | "::1" | "localhost") || options.get_host().starts_with('/');
        if !says && local {
            options = options.ssl_mode(sqlx::postgres::PgSslMode::Disable);
        }
        let pool = PgPoolOptions::new().max_connections(max_connections.max(1)).connect_with(options).await?;
        let store = PgStore { pool };
        store.migrate().await?;
        // Every status change leaves a dead row version behind, and the outboxes delete what they delivered: without
        // autovacuum the tables and their indexes only grow, and every claim walks further through the dead.
        let autovacuum: Option<String> =
            sqlx::query_scalar("SELECT current_setting('autovacuum')").fetch_optional(&store.pool).await?;
        if autovacuum.as_deref() == Some("off") {
            tracing::warn!(
                "PostgreSQL's autovacuum is off: smsgate's tables will grow without end and slow down; turn it on \
                 (docs/operations.md)"
            );
        }
        Ok(store)
    }

    /// Messages by id, whoever owns them, in one query.
    async fn messages_by_id(&self, ids: impl Iterator<Item = MessageId>) -> Result<HashMap<MessageId, Message>> {
        let ids: Vec<String> = ids.map(|id| id.to_string()).collect();
        let mut by_id = HashMap::new();
        if ids.is_empty() {
            return Ok(by_id);
        }
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1)");
        for r in rows_of(&sqlx::query(AssertSqlSafe(sql)).bind(&ids).fetch_all(&self.pool).await?)? {
            let m = crate::messages::message_of(&r)?;
            by_id.insert(m.id, m);
        }
        Ok(by_id)
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        // Nodes starting together migrate one at a time.
        sqlx::query("SELECT pg_advisory_lock(724301)").execute(&mut *conn).await?;
        let result = async {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            for m in MIGRATIONS {
                let (version, sql) = (m.version, m.postgres);
                let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
                if done.is_some() {
                    continue;
                }
                sqlx::raw_sql("BEGIN").execute(&mut *conn).await?;
                let applied = async {
                    sqlx::raw_sql(sql).execute(&mut *conn).await?;
                    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                        .bind(version)
                        .bind(0i64)
                        .execute(&mut *conn)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                }
                .await;
                match applied {
                    Ok(()) => sqlx::raw_sql("COMMIT").execute(&mut *conn).await?,
                    Err(e) => {
                        sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
                        return Err(e);
                    }
                };
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        sqlx::query("SELECT pg_advisory_unlock(724301)").execute(&mut *conn).await?;
        Ok(result?)
    }
}

/// Splits `items` into runs whose lengths are powers of two, at most `max` (a power of two), largest first. Every
/// multi-row statement then has one of a few shapes, and each shape is prepared once per connection and cached.
fn pow2_chunks<T>(mut items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let fit = max.min(items.len());
        let (head, rest) = items.split_at(1 << (usize::BITS - 1 - fit.leading_zeros()));
        items = rest;
        Some(head)
    })
}

/// `($1, $2), ($3, $4)`: the placeholders of a multi-row `VALUES` with `rows` rows of `columns` values.
fn values_rows(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 6);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * columns + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// The most rows one multi-row statement carries (a power of two; PostgreSQL allows 65,535 parameters).
const ROWS_PER_STATEMENT: usize = 256;

/// `(<to> = 'sent' AND messages.status = 'sending') OR ...`: the moves the state machine allows, for an
/// `UPDATE` whose target status is the column `to`. Fixed text: status names, never input.
fn allowed_moves(to: &str) -> String {
    Status::ALL
        .into_iter()
        .filter_map(|target| {
            let from = may_become("messages.status", target);
            (!from.is_empty()).then(|| format!("({to} = '{}' AND {from})", target.as_str()))
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The longest prefix of `items` in which no key appears twice: one `UPDATE ... FROM` moves a row at most once,
/// so a second change to the same message waits for the next statement.
fn distinct_prefix<T, K: std::hash::Hash + Eq>(items: &[T], key: impl Fn(&T) -> K) -> usize {
    let mut seen = HashSet::new();
    items.iter().take_while(|t| seen.insert(key(t))).count()
}

/// Binds a [`Value`] to a query: every value with its own type, a null too.
fn bind_value<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    v: Value,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match v {
        Value::Int(n) => query.bind(n),
        Value::Real(x) => query.bind(x),
        Value::Text(t) => query.bind(t),
    }
}

/// A row of sqlx's as a [`Row`], each column by its PostgreSQL type.
fn row_of(columns: &std::sync::Arc<[String]>, r: &PgRow) -> Result<Row> {
    let mut values = Vec::with_capacity(columns.len());
    for (i, column) in r.columns().iter().enumerate() {
        values.push(match column.type_info().name() {
            "INT8" => Value::Int(r.try_get::<Option<i64>, _>(i)?),
            "INT4" => Value::Int(r.try_get::<Option<i32>, _>(i)?.map(i64::from)),
            "INT2" => Value::Int(r.try_get::<Option<i16>, _>(i)?.map(i64::from)),
            "BOOL" => Value::Int(r.try_get::<Option<bool>, _>(i)?.map(i64::from)),
            "FLOAT8" => Value::Real(r.try_get::<Option<f64>, _>(i)?),
            "FLOAT4" => Value::Real(r.try_get::<Option<f32>, _>(i)?.map(f64::from)),
            _ => Value::Text(r.try_get::<Option<String>, _>(i)?),
        });
    }
    Ok(Row::new(columns.clone(), values))
}

/// sqlx's rows as [`Row`]s.
fn rows_of(rows: &[PgRow]) -> Result<Vec<Row>> {
    let Some(first) = rows.first() else { return Ok(Vec::new()) };
    let columns: std::sync::Arc<[String]> = first.columns().iter().map(|c| c.name().to_string()).collect();
    rows.iter().map(|r| row_of(&columns, r)).collect()
}

/// The cold path's SQL is planned at every run, not prepared once per connection: a plan made while a table was
/// small (a contact import's first batch) reads the whole table once it has grown, and an import then slowed from
/// 4,000 rows a second to a few hundred as its table filled.
#[async_trait]
impl Database for PgStore {
    async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        let mut query = sqlx::query(AssertSqlSafe(numbered(sql))).persistent(false);
        for v in params {
            query = bind_value(query, v);
        }
        rows_of(&query.fetch_all(&self.pool).await?)
    }

    async fn analyze(&self, tables: &[&str]) -> Result<()> {
        if !tables.is_empty() {
            sqlx::query(AssertSqlSafe(format!("ANALYZE {}", tables.join(", ")))).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn transaction(&self, statements: Vec<Statement>) -> Result<Vec<u64>> {
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::with_capacity(statements.len());
        for s in statements {
            let mut query = sqlx::query(AssertSqlSafe(numbered(&s.sql))).persistent(false);
            for v in s.params {
                query = bind_value(query, v);
            }
            changed.push(query.execute(&mut *tx).await?.rows_affected());
        }
        tx.commit().await?;
        Ok(changed)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn close(&self) {
        self.pool.close().await;
    }
}
