//! [`SqlStore`]: the [`Store`] on SQLite or PostgreSQL through sqlx's `Any` driver. The schema and nearly every
//! statement are the same on both (`$N` parameters, `RETURNING`, partial indexes); where they differ — SQLite's
//! durability pragmas, PostgreSQL's `FOR UPDATE SKIP LOCKED` and advisory lock — the code says so.

use std::str::FromStr;

use async_trait::async_trait;
use smsgate_core::{AccountId, Direction, Event, Message, MessageId, Status, Timestamp};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
// Statements built with `format!` take only fixed SQL text (column lists, status names, `FOR UPDATE SKIP
// LOCKED`, `$N` placeholders); every value goes through a bind parameter. That is what `AssertSqlSafe` asserts.
use sqlx::{AnyPool, AssertSqlSafe, Row};

use crate::{Account, ApiKey, Changes, Inserted, ListFilter, NewMessage, Result, Store, StoreError, Transition};

/// The migrations, in order. Each runs once, in a transaction, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/0001_init.sql"))];

/// The columns of `messages` that make a [`Message`], in [`message_from_row`]'s order.
const MESSAGE_COLUMNS: &str = "id, account_id, direction, to_addr, from_addr, body, encoding, segments, \
     price_micros, connector, carrier_id, status, error_code, reference, callback_url, send_at, expires_at, \
     attempts, created_at, updated_at";

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

impl SqlStore {
    /// Opens (creating a SQLite file if needed) the database at `url` and runs the migrations.
    ///
    /// SQLite runs in WAL mode with `synchronous=FULL`, so a commit is on disk when it returns.
    pub async fn open(url: &str, max_connections: u32) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let url = match backend {
            // Create the file if it does not exist.
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; FULL fsyncs every commit; the busy timeout
                        // makes a second writer wait for the first instead of failing.
                        sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = SqlStore { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Nodes starting together migrate one at a time.
            sqlx::query("SELECT pg_advisory_lock(724301)").execute(&mut *conn).await?;
        }
        let result = async {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            for &(version, sql) in MIGRATIONS {
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
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock(724301)").execute(&mut *conn).await?;
        }
        Ok(result?)
    }

    /// `FOR UPDATE SKIP LOCKED` where the database has it: PostgreSQL's row locks keep two nodes from claiming one
    /// message. SQLite has one writer at a time, so its claim statement is atomic anyway.
    fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// Appends an event to a message's journey, numbered after the last one.
async fn add_event<'c, E>(conn: E, id: &str, status: Status, at: Timestamp, detail: &str) -> Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO message_events (message_id, seq, status, at, detail) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM message_events WHERE message_id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(at.0)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// One status change inside a transaction: the row moves only from a status that may become `to` (and, when
/// fenced, only while `changes.lease_owner` holds the lease); the event is appended when it does.
async fn apply_transition(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: MessageId,
    to: Status,
    now: Timestamp,
    detail: &str,
    changes: &Changes,
) -> Result<bool> {
    let from = status_list(Status::ALL.into_iter().filter(|s| s.can_become(to)));
    if from.is_empty() {
        return Ok(false);
    }
    let leaving_sending = to != Status::Sending;
    let sql = format!(
        "UPDATE messages SET status = $1, updated_at = $2, \
         connector = COALESCE($3, connector), carrier_id = COALESCE($4, carrier_id), \
         error_code = COALESCE($5, error_code), price_micros = COALESCE($6, price_micros), \
         next_attempt_at = COALESCE($7, next_attempt_at){} \
         WHERE id = $8 AND status IN ({from}) AND ($9 IS NULL OR lease_owner = $9)",
        if leaving_sending { ", lease_owner = NULL, lease_until = NULL" } else { "" }
    );
    let moved = sqlx::query(AssertSqlSafe(sql))
        .bind(to.as_str())
        .bind(now.0)
        .bind(changes.connector.as_deref())
        .bind(changes.carrier_id.as_deref())
        .bind(changes.error_code.as_deref())
        .bind(changes.price_micros)
        .bind(changes.retry_at.map(|t| t.0))
        .bind(id.to_string())
        .bind(changes.lease_owner.as_deref())
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if moved {
        add_event(&mut **tx, &id.to_string(), to, now, detail).await?;
    }
    Ok(moved)
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn status_of(s: &str) -> Result<Status> {
    Status::parse(s).ok_or_else(|| corrupt(format!("status {s:?}")))
}

fn account_id_of(s: &str) -> Result<AccountId> {
    AccountId::parse(s).ok_or_else(|| corrupt(format!("account id {s:?}")))
}

fn message_id_of(s: &str) -> Result<MessageId> {
    MessageId::parse(s).ok_or_else(|| corrupt(format!("message id {s:?}")))
}

fn account_from_row(row: &AnyRow) -> Result<Account> {
    Ok(Account {
        id: account_id_of(&row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

fn message_from_row(row: &AnyRow) -> Result<Message> {
    let direction: String = row.try_get("direction")?;
    let count = |name: &str| -> Result<u32> {
        let v: i64 = row.try_get(name)?;
        u32::try_from(v).map_err(|_| corrupt(format!("{name} {v}")))
    };
    Ok(Message {
        id: message_id_of(&row.try_get::<String, _>("id")?)?,
        account_id: account_id_of(&row.try_get::<String, _>("account_id")?)?,
        direction: Direction::parse(&direction).ok_or_else(|| corrupt(format!("direction {direction:?}")))?,
        to: row.try_get("to_addr")?,
        from: row.try_get("from_addr")?,
        body: row.try_get("body")?,
        encoding: row.try_get("encoding")?,
        segments: count("segments")?,
        price_micros: row.try_get("price_micros")?,
        connector: row.try_get("connector")?,
        carrier_id: row.try_get("carrier_id")?,
        status: status_of(&row.try_get::<String, _>("status")?)?,
        error_code: row.try_get("error_code")?,
        reference: row.try_get("reference")?,
        callback_url: row.try_get("callback_url")?,
        send_at: row.try_get::<Option<i64>, _>("send_at")?.map(Timestamp),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(Timestamp),
        attempts: count("attempts")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
    })
}

/// `'a', 'b'` for an SQL `IN` list of status names (names are fixed words, never user input).
fn status_list(statuses: impl IntoIterator<Item = Status>) -> String {
    statuses.into_iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl Store for SqlStore {
    async fn create_account(&self, name: &str, is_admin: bool, now: Timestamp) -> Result<Account> {
        let account = Account { id: AccountId::generate(), name: name.to_string(), is_admin, created_at: now };
        sqlx::query("INSERT INTO accounts (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)")
            .bind(account.id.to_string())
            .bind(name)
            .bind(i64::from(is_admin))
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(account)
    }

    async fn account(&self, id: AccountId) -> Result<Option<Account>> {
        let row = sqlx::query("SELECT id, name, is_admin, created_at FROM accounts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn admin_account(&self) -> Result<Option<Account>> {
        let row = sqlx::query(
            "SELECT id, name, is_admin, created_at FROM accounts WHERE is_admin = 1 ORDER BY created_at LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn create_api_key(&self, account: AccountId, key_hash: &str, prefix: &str, now: Timestamp) -> Result<ApiKey> {
        let key = ApiKey {
            id: uuid::Uuid::now_v7().hyphenated().to_string(),
            account_id: account,
            prefix: prefix.to_string(),
            created_at: now,
        };
        sqlx::query("INSERT INTO api_keys (id, account_id, key_hash, prefix, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&key.id)
            .bind(account.to_string())
            .bind(key_hash)
            .bind(prefix)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(key)
    }

    async fn key_count(&self, account: AccountId) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL")
            .bind(account.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    async fn account_by_key_hash(&self, key_hash: &str) -> Result<Option<Account>> {
        let row = sqlx::query(
            "SELECT a.id, a.name, a.is_admin, a.created_at FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(messages.len());
        for new in messages {
            let m = &new.message;
            let id = m.id.to_string();
            let (idem_key, idem_hash) = match &new.idempotency {
                Some((k, h)) => (Some(k.as_str()), Some(h.as_str())),
                None => (None, None),
            };
            let inserted = sqlx::query(
                "INSERT INTO messages (id, account_id, direction, to_addr, from_addr, body, encoding, segments, \
                 price_micros, connector, carrier_id, status, error_code, reference, callback_url, send_at, \
                 expires_at, attempts, next_attempt_at, idempotency_key, request_hash, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
                 $20, $21, $22, $23) ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(m.account_id.to_string())
            .bind(m.direction.as_str())
            .bind(&m.to)
            .bind(&m.from)
            .bind(&m.body)
            .bind(&m.encoding)
            .bind(i64::from(m.segments))
            .bind(m.price_micros)
            .bind(m.connector.as_deref())
            .bind(m.carrier_id.as_deref())
            .bind(m.status.as_str())
            .bind(m.error_code.as_deref())
            .bind(m.reference.as_deref())
            .bind(m.callback_url.as_deref())
            .bind(m.send_at.map(|t| t.0))
            .bind(m.expires_at.map(|t| t.0))
            .bind(i64::from(m.attempts))
            .bind(m.send_at.unwrap_or(m.created_at).0)
            .bind(idem_key)
            .bind(idem_hash)
            .bind(m.created_at.0)
            .bind(m.updated_at.0)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 1 {
                add_event(&mut *tx, &id, m.status, m.created_at, &new.detail).await?;
                out.push(Inserted::New);
                continue;
            }
            // Only the idempotency index can make a fresh UUIDv7 conflict.
            let Some(key) = idem_key else {
                return Err(corrupt(format!("message id {id} exists already")));
            };
            let row =
                sqlx::query("SELECT id, request_hash FROM messages WHERE account_id = $1 AND idempotency_key = $2")
                    .bind(m.account_id.to_string())
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
            let existing = message_id_of(&row.try_get::<String, _>("id")?)?;
            let hash: Option<String> = row.try_get("request_hash")?;
            out.push(Inserted::Duplicate { id: existing, same_request: hash.as_deref() == idem_hash });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn message(&self, account: AccountId, id: MessageId) -> Result<Option<Message>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND account_id = $2"
        )))
        .bind(id.to_string())
        .bind(account.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    async fn events(&self, id: MessageId) -> Result<Vec<Event>> {
        let rows = sqlx::query("SELECT status, at, detail FROM message_events WHERE message_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    status: status_of(&r.try_get::<String, _>("status")?)?,
                    at: Timestamp(r.try_get("at")?),
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn list_messages(
        &self,
        account: AccountId,
        filter: &ListFilter,
        cursor: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        // Parameters are numbered as they are added; only fixed SQL text is formatted in.
        let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = $1");
        let mut texts: Vec<String> = vec![account.to_string()];
        let mut numbers: Vec<i64> = Vec::new();
        let mut order: Vec<bool> = vec![true];
        let mut text = |sql: &mut String, clause: &str, v: String| {
            texts.push(v);
            order.push(true);
            sql.push_str(&clause.replace('?', &format!("${}", order.len())));
        };
        if let Some(d) = filter.direction {
            text(&mut sql, " AND direction = ?", d.as_str().to_string());
        }
        if let Some(s) = filter.status {
            text(&mut sql, " AND status = ?", s.as_str().to_string());
        }
        if let Some(to) = &filter.to {
            text(&mut sql, " AND to_addr = ?", to.clone());
        }
        if let Some(from) = &filter.from {
            text(&mut sql, " AND from_addr = ?", from.clone());
        }
        if let Some(c) = cursor {
            text(&mut sql, " AND id < ?", c.to_string());
        }
        for (value, clause) in [(filter.since, " AND created_at >= ?"), (filter.until, " AND created_at < ?")] {
            if let Some(t) = value {
                numbers.push(t.0);
                order.push(false);
                sql.push_str(&clause.replace('?', &format!("${}", order.len())));
            }
        }
        order.push(false);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", order.len()));
        numbers.push(i64::from(limit));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        let (mut t, mut n) = (texts.into_iter(), numbers.into_iter());
        for is_text in order {
            query = if is_text { query.bind(t.next()) } else { query.bind(n.next()) };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn claim_due(&self, owner: &str, now: Timestamp, lease_ms: i64, limit: u32) -> Result<Vec<Message>> {
        let mut tx = self.pool.begin().await?;
        // One UPDATE claims the batch, so on SQLite the transaction takes the write lock at once.
        let sql = format!(
            "UPDATE messages SET claimed_from = status, status = 'sending', lease_owner = $1, lease_until = $2, \
             attempts = CASE WHEN status = 'sending' THEN attempts ELSE attempts + 1 END, updated_at = $3 \
             WHERE id IN (SELECT id FROM messages \
                 WHERE (status IN ('queued', 'scheduled') AND next_attempt_at <= $3) \
                    OR (status = 'sending' AND lease_until < $3) \
                 ORDER BY next_attempt_at LIMIT $4{}) \
             RETURNING {MESSAGE_COLUMNS}, claimed_from",
            self.skip_locked()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(now.plus_millis(lease_ms).0)
            .bind(now.0)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let m = message_from_row(row)?;
            let id = m.id.to_string();
            let from = status_of(&row.try_get::<String, _>("claimed_from")?)?;
            match from {
                Status::Scheduled => {
                    add_event(&mut *tx, &id, Status::Queued, now, "send_at reached").await?;
                    add_event(&mut *tx, &id, Status::Sending, now, &format!("claimed by {owner}")).await?;
                }
                Status::Sending => {
                    let detail = format!("previous lease ran out; claimed by {owner}");
                    add_event(&mut *tx, &id, Status::Sending, now, &detail).await?;
                }
                _ => add_event(&mut *tx, &id, Status::Sending, now, &format!("claimed by {owner}")).await?,
            }
            out.push(m);
        }
        tx.commit().await?;
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    async fn transition(
        &self,
        id: MessageId,
        to: Status,
        now: Timestamp,
        detail: &str,
        changes: &Changes,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = apply_transition(&mut tx, id, to, now, detail, changes).await?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn transition_many(&self, batch: &[Transition]) -> Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(batch.len());
        for t in batch {
            out.push(apply_transition(&mut tx, t.id, t.to, t.at, &t.detail, &t.changes).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn expire_due(&self, now: Timestamp, limit: u32) -> Result<Vec<MessageId>> {
        // A message being sent is left to its dispatcher, which checks the validity before it submits.
        let sql = format!(
            "UPDATE messages SET claimed_from = status, status = 'expired', updated_at = $1 \
             WHERE id IN (SELECT id FROM messages \
                 WHERE status IN ('scheduled', 'queued', 'sent') AND expires_at <= $1 LIMIT $2{}) \
             RETURNING id, claimed_from",
            self.skip_locked()
        );
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(now.0).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let from: String = row.try_get("claimed_from")?;
            add_event(&mut *tx, &id, Status::Expired, now, &format!("validity ended while {from}")).await?;
            out.push(message_id_of(&id)?);
        }
        tx.commit().await?;
        out.sort();
        Ok(out)
    }

    async fn message_by_carrier_id(&self, connector: &str, carrier_id: &str) -> Result<Option<MessageId>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT id FROM messages WHERE connector = $1 AND carrier_id = $2 ORDER BY id DESC LIMIT 1")
                .bind(connector)
                .bind(carrier_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(id,)| message_id_of(&id)).transpose()
    }

    async fn message_status(&self, id: MessageId) -> Result<Option<Status>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT status FROM messages WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(s,)| status_of(&s)).transpose()
    }

    async fn account_for_reply(&self, handset: &str, sender: &str) -> Result<Option<AccountId>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT account_id FROM messages WHERE direction = 'outbound' AND to_addr = $1 AND from_addr = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(handset)
        .bind(sender)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(a,)| account_id_of(&a)).transpose()
    }

    async fn count_by_status(&self) -> Result<Vec<(Status, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM messages GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|(s, n)| Ok((status_of(&s)?, n))).collect()
    }
}
