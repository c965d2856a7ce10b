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

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use smsgate_core::{AccountId, Direction, Event, Message, MessageId, Status, StatusMask, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
// Statements built with `format!` take only fixed SQL text (column lists, status names, `FOR UPDATE SKIP
// LOCKED`, `$N` placeholders); every value goes through a bind parameter. That is what `AssertSqlSafe` asserts.
use smsgate_core::routing::Route;
use sqlx::{AssertSqlSafe, Row};

use crate::schema::smpp_wants_sql;
use crate::schema::{
    MESSAGE_COLUMNS, MIGRATIONS, Param, account_id_of, claim_lines, corrupt, expiry_lines, first_journey, journey_line,
    list_query, may_become, message_id_of, next_attempt, parse_journey, status_of, unpark_from, waiting,
};
use crate::schema::{attempt_line, callback_url_sql, parse_attempts, route_json, route_of, routes_json, routes_of};
use crate::{
    Account, ApiKey, ConnectorRecord, Inserted, ListFilter, NewMessage, ReceiptUpdate, Result, Store, StoreError,
    Transition, WaitingAt,
};
use crate::{CallbackNext, CallbackRecord, CallbackResult, Changes, DueCallback, SmppCredential, Webhooks};
use crate::{DeliveryMessage, DeliveryNext, DueDelivery};

/// The columns [`smpp_credential_from_row`] reads.
const SMPP_COLUMNS: &str = "system_id, account_id, password_hash, allowed_ips, max_binds, throughput, created_at";

fn smpp_credential_from_row(r: &sqlx::postgres::PgRow) -> Result<SmppCredential> {
    let ips: Option<String> = r.try_get("allowed_ips")?;
    Ok(SmppCredential {
        system_id: r.try_get("system_id")?,
        account_id: account_id_of(&r.try_get::<String, _>("account_id")?)?,
        password_hash: r.try_get("password_hash")?,
        allowed_ips: ips
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| corrupt(format!("allowed_ips: {e}")))?,
        max_binds: r.try_get::<Option<i64>, _>("max_binds")?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        throughput: r.try_get("throughput")?,
        created_at: Timestamp(r.try_get("created_at")?),
    })
}

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
        let options = PgConnectOptions::from_str(url)?.options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new().max_connections(max_connections.max(1)).connect_with(options).await?;
        let store = PgStore { pool };
        store.migrate().await?;
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
        for r in &sqlx::query(AssertSqlSafe(sql)).bind(&ids).fetch_all(&self.pool).await? {
            let m = message_from_row(r)?;
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

/// `WITH moved AS (<update>), callbacks AS (<insert>) SELECT <out> FROM moved`: one statement that moves (or
/// inserts) messages and writes the webhook callbacks of the changes that report one (statuses after `queued`: to
/// the message's callback URL, else its account's status URL; `received` to the inbound URL), so a status change
/// costs one round trip. `update` must return `id`,
/// `account_id`, `callback_url`, `callback_statuses`, `error_code`, `seq` (the journey's length), `new_status`, `new_at`,
/// `smpp_receipts` and `smpp_parts`. The deliver_sm the changes make for SMPP clients go to `smpp_outbox` in the
/// same statement ([`smpp_outbox_insert`]).
fn moved_with_callbacks(update: &str, out: &str) -> String {
    format!(
        "WITH moved AS ({update}), smpp_written AS ({smpp}), callbacks_written AS ( \
         INSERT INTO callbacks (id, account_id, message_id, seq, kind, url, status, error_code, at, state, \
         next_attempt_at, created_at) \
         SELECT gen_random_uuid()::text, m.account_id, m.id, m.seq, \
         CASE WHEN m.new_status = 'received' THEN 'inbound' ELSE 'status' END, {url}, \
         m.new_status, m.error_code, m.new_at, 'pending', m.new_at, m.new_at \
         FROM moved m LEFT JOIN webhooks w ON w.account_id = m.account_id \
         WHERE m.new_status <> 'queued' AND m.new_status <> 'scheduled' AND {url} IS NOT NULL) \
         SELECT {out} FROM moved",
        url = callback_url_sql("m.new_status"),
        smpp = smpp_outbox_insert("moved m")
    )
}

/// `INSERT INTO smpp_outbox SELECT ... FROM <source>`, where `source` names a relation `m` with the columns
/// [`moved_with_callbacks`] needs: the receipts the submitting client asked for (one per id it was given), and
/// inbound messages of accounts with SMPP credentials.
fn smpp_outbox_insert(source: &str) -> String {
    format!(
        "INSERT INTO smpp_outbox (id, account_id, message_id, seq, part, kind, status, error_code, at, state, \
         next_attempt_at, expires_at, created_at) \
         SELECT gen_random_uuid()::text, m.account_id, m.id, m.seq, p.part, \
         CASE WHEN m.new_status = 'received' THEN 'inbound' ELSE 'receipt' END, m.new_status, m.error_code, \
         m.new_at, 'pending', m.new_at, m.new_at + {ttl}, m.new_at \
         FROM {source} CROSS JOIN LATERAL generate_series( \
         CASE WHEN m.smpp_parts > 1 THEN 1 ELSE 0 END, CASE WHEN m.smpp_parts > 1 THEN m.smpp_parts ELSE 0 END) \
         AS p(part) \
         WHERE (m.new_status = 'received' \
         AND EXISTS (SELECT 1 FROM smpp_credentials c WHERE c.account_id = m.account_id)) OR {wants}",
        ttl = crate::SMPP_DELIVERY_TTL_MS,
        wants = smpp_wants_sql("m.new_status", "m.smpp_receipts"),
    )
}

/// What [`moved_with_callbacks`] needs an `UPDATE messages ... FROM (VALUES ...) AS v` to return, for the new
/// status in `status` and its time in `at`.
fn callback_returning(status: &str, at: &str) -> String {
    format!(
        "messages.account_id, messages.callback_url, messages.error_code, length(messages.journey) AS seq, \
         {status} AS new_status, {at} AS new_at, messages.smpp_receipts, messages.smpp_parts, \
         messages.callback_statuses"
    )
}

/// Writes the callbacks status changes make (message, status, time), for messages whose account (or which
/// itself) has a webhook for them. Run after the statement that made the changes, in its transaction, so each
/// callback's `seq` is its message's journey length right after its change.
async fn enqueue_callbacks(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    changes: &[(MessageId, Status, Timestamp)],
) -> Result<()> {
    let changes: Vec<_> = changes.iter().filter(|(_, s, _)| crate::notifies(*s)).collect();
    for chunk in pow2_chunks(&changes, ROWS_PER_STATEMENT) {
        let url = callback_url_sql("v.column3");
        let sql = format!(
            "INSERT INTO callbacks (id, account_id, message_id, seq, kind, url, status, error_code, at, state, \
             next_attempt_at, created_at) \
             SELECT v.column1, m.account_id, m.id, length(m.journey), \
             CASE WHEN v.column3 = 'received' THEN 'inbound' ELSE 'status' END, {url}, v.column3, m.error_code, \
             v.column4, 'pending', v.column4, v.column4 \
             FROM (VALUES {}) AS v JOIN messages m ON m.id = v.column2 \
             LEFT JOIN webhooks w ON w.account_id = m.account_id WHERE {url} IS NOT NULL",
            values_rows(chunk.len(), 4)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (id, status, at) in chunk.iter() {
            query = query
                .bind(uuid::Uuid::now_v7().hyphenated().to_string())
                .bind(id.to_string())
                .bind(status.as_str())
                .bind(at.0);
        }
        query.execute(&mut **tx).await?;
    }
    // And the deliver_sm for SMPP clients (a message's expiry makes receipts).
    let smpp: Vec<_> = changes.iter().filter(|(_, s, _)| matches!(s, Status::Expired | Status::Sent)).collect();
    for chunk in pow2_chunks(&smpp, ROWS_PER_STATEMENT) {
        let source = format!(
            "(SELECT msg.id, msg.account_id, msg.error_code, length(msg.journey) AS seq, v.column2 AS new_status, \
             v.column3 AS new_at, msg.smpp_receipts, msg.smpp_parts \
             FROM (VALUES {}) AS v JOIN messages msg ON msg.id = v.column1 WHERE msg.smpp_receipts IS NOT NULL) m",
            values_rows(chunk.len(), 3)
        );
        let mut query = sqlx::query(AssertSqlSafe(smpp_outbox_insert(&source)));
        for (id, status, at) in chunk.iter() {
            query = query.bind(id.to_string()).bind(status.as_str()).bind(at.0);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
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

/// Status changes by message id, many per statement: one `UPDATE ... FROM (VALUES ...)` moves every row the state
/// machine (and, when fenced, the lease) allows, appending each one's journey line; the statuses reached go to
/// `changed`.
async fn apply_transitions(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &[Transition],
    changed: &mut Vec<Status>,
) -> Result<Vec<bool>> {
    let mut out = Vec::with_capacity(batch.len());
    let mut rest = batch;
    while !rest.is_empty() {
        let run = distinct_prefix(rest, |t| t.id);
        for chunk in pow2_chunks(&rest[..run], ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE messages SET status = v.column2, updated_at = v.column3, \
                 connector = COALESCE(v.column4, connector), carrier_id = COALESCE(v.column5, carrier_id), \
                 error_code = COALESCE(v.column6, error_code), price_micros = COALESCE(v.column7, price_micros), \
                 next_attempt_at = COALESCE(v.column8, next_attempt_at), waiting_route = v.column12, \
                 lease_owner = CASE WHEN v.column2 = 'sending' THEN lease_owner END, \
                 lease_until = CASE WHEN v.column2 = 'sending' THEN lease_until END, \
                 journey = journey || v.column10, attempts = attempts - v.column11 \
                 FROM (VALUES {}) AS v \
                 WHERE messages.id = v.column1 AND (v.column9 IS NULL OR messages.lease_owner = v.column9) \
                 AND ({}) \
                 RETURNING messages.id, {}",
                values_rows(chunk.len(), 12),
                allowed_moves("v.column2"),
                callback_returning("v.column2", "v.column3"),
            );
            let sql = moved_with_callbacks(&sql, "id");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for t in chunk {
                let c = &t.changes;
                query = query
                    .bind(t.id.to_string())
                    .bind(t.to.as_str())
                    .bind(t.at.0)
                    .bind(c.connector.as_deref())
                    .bind(c.carrier_id.as_deref())
                    .bind(c.error_code.as_deref())
                    .bind(c.price_micros)
                    .bind(next_attempt(c))
                    .bind(c.lease_owner.as_deref())
                    .bind(journey_line(t.to, t.at, &t.detail))
                    .bind(i64::from(c.attempt_undone))
                    .bind(c.wait_for_route.as_deref());
            }
            let mut moved = HashSet::new();
            for row in query.fetch_all(&mut **tx).await? {
                moved.insert(message_id_of(&row.try_get::<String, _>(0)?)?);
            }
            let mut parts = Vec::new();
            for t in chunk {
                let m = moved.contains(&t.id);
                if m {
                    changed.push(t.to);
                    if let Some(connector) = t.changes.connector.as_deref().filter(|_| t.changes.parts.len() > 1) {
                        for (i, carrier_id) in t.changes.parts.iter().enumerate() {
                            parts.push((t.id.to_string(), i as i64 + 1, connector.to_string(), carrier_id.clone()));
                        }
                    }
                }
                out.push(m);
            }
            for rows in pow2_chunks(&parts, ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO message_parts (message_id, part, connector, carrier_id, status) \
                     SELECT v.column1, v.column2, v.column3, v.column4, 'sent' FROM (VALUES {}) AS v \
                     ON CONFLICT DO NOTHING",
                    values_rows(rows.len(), 4)
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for (id, part, connector, carrier_id) in rows {
                    query = query.bind(id).bind(part).bind(connector).bind(carrier_id);
                }
                query.execute(&mut **tx).await?;
            }
        }
        rest = &rest[run..];
    }
    Ok(out)
}

/// Receipts for parts of messages sent part by part: records each part's status, and moves a message once its
/// parts decide it (delivered when all are, otherwise at the first part that is not). Returns, for each receipt,
/// the message whose part it was, if it was one.
async fn apply_part_receipts(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    chunk: &[ReceiptUpdate],
    changed: &mut Vec<Status>,
) -> Result<Vec<Option<MessageId>>> {
    // Receipts for parts of one message can be in groups written at once: each would see only its own part as
    // delivered and none would move the message. Locking the messages first (in id order) puts them one after the
    // other, and each counts what the one before committed.
    let sql = format!(
        "SELECT DISTINCT p.message_id FROM message_parts p JOIN (VALUES {}) AS v \
         ON p.connector = v.column1 AND p.carrier_id = v.column2",
        values_rows(chunk.len(), 2)
    );
    let mut query = sqlx::query_as::<_, (String,)>(AssertSqlSafe(sql));
    for r in chunk {
        query = query.bind(&r.connector).bind(&r.carrier_id);
    }
    let owners: Vec<String> = query.fetch_all(&mut **tx).await?.into_iter().map(|(id,)| id).collect();
    if owners.is_empty() {
        return Ok(vec![None; chunk.len()]);
    }
    sqlx::query("SELECT id FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&owners)
        .fetch_all(&mut **tx)
        .await?;
    let sql = format!(
        "UPDATE message_parts SET status = v.column3 FROM (VALUES {}) AS v \
         WHERE message_parts.connector = v.column1 AND message_parts.carrier_id = v.column2 \
         AND message_parts.status = 'sent' \
         RETURNING message_parts.message_id, message_parts.part, message_parts.connector, message_parts.carrier_id",
        values_rows(chunk.len(), 3)
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for r in chunk {
        query = query.bind(&r.connector).bind(&r.carrier_id).bind(r.to.as_str());
    }
    let mut hits: HashMap<(String, String), (MessageId, i64)> = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        let key = (row.try_get::<String, _>(2)?, row.try_get::<String, _>(3)?);
        hits.insert(key, (message_id_of(&row.try_get::<String, _>(0)?)?, row.try_get(1)?));
    }
    if hits.is_empty() {
        return Ok(vec![None; chunk.len()]);
    }
    let ids: Vec<String> = hits.values().map(|(id, _)| id.to_string()).collect();
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT message_id, COUNT(*) FILTER (WHERE status <> 'delivered'), COUNT(*) FROM message_parts \
         WHERE message_id = ANY($1) GROUP BY message_id",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let counts: HashMap<String, (i64, i64)> = counts.into_iter().map(|(id, left, all)| (id, (left, all))).collect();
    let mut out = Vec::with_capacity(chunk.len());
    let mut moves = Vec::new();
    for r in chunk {
        let Some(&(id, part)) = hits.get(&(r.connector.clone(), r.carrier_id.clone())) else {
            out.push(None);
            continue;
        };
        let (left, total) = counts.get(&id.to_string()).copied().unwrap_or((0, 0));
        if r.to != Status::Delivered || left == 0 {
            let changes = Changes { error_code: r.error_code.clone(), ..Changes::default() };
            let detail = format!("part {part} of {total}: {}", r.detail);
            moves.push(Transition { id, to: r.to, at: r.at, detail, changes });
        }
        out.push(Some(id));
    }
    apply_transitions(tx, &moves, changed).await?;
    Ok(out)
}

/// Receipts, many per statement, each moving the message its connector's carrier id names.
async fn apply_receipts(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    batch: &[ReceiptUpdate],
    changed: &mut Vec<Status>,
) -> Result<Vec<Option<MessageId>>> {
    let mut out = Vec::with_capacity(batch.len());
    let mut rest = batch;
    while !rest.is_empty() {
        let run = distinct_prefix(rest, |r| (r.connector.clone(), r.carrier_id.clone()));
        for chunk in pow2_chunks(&rest[..run], ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE messages SET status = v.column3, updated_at = v.column4, \
                 error_code = COALESCE(v.column5, error_code), lease_owner = NULL, lease_until = NULL, \
                 journey = journey || v.column6 \
                 FROM (VALUES {}) AS v \
                 WHERE messages.connector = v.column1 AND messages.carrier_id = v.column2 AND ({}) \
                 AND NOT EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = messages.id) \
                 RETURNING messages.id, messages.connector, messages.carrier_id, {}",
                values_rows(chunk.len(), 6),
                allowed_moves("v.column3"),
                callback_returning("v.column3", "v.column4"),
            );
            let sql = moved_with_callbacks(&sql, "id, connector, carrier_id");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                query = query
                    .bind(&r.connector)
                    .bind(&r.carrier_id)
                    .bind(r.to.as_str())
                    .bind(r.at.0)
                    .bind(r.error_code.as_deref())
                    .bind(journey_line(r.to, r.at, &r.detail));
            }
            let mut moved: HashMap<(String, String), Vec<MessageId>> = HashMap::new();
            for row in query.fetch_all(&mut **tx).await? {
                let id = message_id_of(&row.try_get::<String, _>(0)?)?;
                let key = (row.try_get::<String, _>(1)?, row.try_get::<String, _>(2)?);
                moved.entry(key).or_default().push(id);
            }
            let mut found = Vec::with_capacity(chunk.len());
            for r in chunk {
                // A carrier that reuses an id moves every message still waiting under it; report the newest.
                let hits = moved.remove(&(r.connector.clone(), r.carrier_id.clone())).unwrap_or_default();
                changed.extend(hits.iter().map(|_| r.to));
                found.push(hits.into_iter().max());
            }
            // What moved no message may be a part's receipt (or a late one, which changes nothing).
            let unmatched: Vec<ReceiptUpdate> =
                chunk.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(r, _)| r.clone()).collect();
            let mut parts =
                if unmatched.is_empty() { Vec::new() } else { apply_part_receipts(tx, &unmatched, changed).await? }
                    .into_iter();
            for f in found {
                out.push(if f.is_some() { f } else { parts.next().flatten() });
            }
        }
        rest = &rest[run..];
    }
    Ok(out)
}

fn account_from_row(row: &PgRow) -> Result<Account> {
    Ok(Account {
        id: account_id_of(&row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        created_at: Timestamp(row.try_get("created_at")?),
        routes: routes_of(row.try_get("routes")?)?,
    })
}

fn message_from_row(row: &PgRow) -> Result<Message> {
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
        callback_statuses: row
            .try_get::<Option<i64>, _>("callback_statuses")?
            .map(|v| u32::try_from(v).map(StatusMask).map_err(|_| corrupt(format!("callback_statuses {v}"))))
            .transpose()?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn create_account(&self, name: &str, is_admin: bool, now: Timestamp) -> Result<Account> {
        let account =
            Account { id: AccountId::generate(), name: name.to_string(), is_admin, created_at: now, routes: None };
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
        let row = sqlx::query("SELECT id, name, is_admin, created_at, routes FROM accounts WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn admin_account(&self) -> Result<Option<Account>> {
        let row = sqlx::query(
            "SELECT id, name, is_admin, created_at, routes FROM accounts WHERE is_admin = 1 ORDER BY created_at LIMIT 1",
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
            "SELECT a.id, a.name, a.is_admin, a.created_at, a.routes FROM api_keys k JOIN accounts a ON a.id = k.account_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        let mut tx = self.pool.begin().await?;
        let mut inserted = HashSet::new();
        for chunk in pow2_chunks(messages, ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO messages (id, account_id, direction, to_addr, from_addr, body, encoding, segments, \
                 price_micros, connector, carrier_id, status, error_code, reference, callback_url, send_at, \
                 expires_at, attempts, next_attempt_at, idempotency_key, request_hash, created_at, updated_at, \
                 journey, lease_owner, lease_until, smpp_receipts, smpp_parts, callback_statuses) VALUES {} \
                 ON CONFLICT DO NOTHING \
                 RETURNING id, account_id, callback_url, error_code, length(journey) AS seq, status AS new_status, \
                 created_at AS new_at, smpp_receipts, smpp_parts, callback_statuses",
                values_rows(chunk.len(), 29)
            );
            let sql = moved_with_callbacks(&sql, "id");
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for new in chunk {
                let m = &new.message;
                let (idem_key, idem_hash) = match &new.idempotency {
                    Some((k, h)) => (Some(k.as_str()), Some(h.as_str())),
                    None => (None, None),
                };
                query = query
                    .bind(m.id.to_string())
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
                    .bind(if new.claim.is_some() { Status::Sending } else { m.status }.as_str())
                    .bind(m.error_code.as_deref())
                    .bind(m.reference.as_deref())
                    .bind(m.callback_url.as_deref())
                    .bind(m.send_at.map(|t| t.0))
                    .bind(m.expires_at.map(|t| t.0))
                    .bind(i64::from(m.attempts + u32::from(new.claim.is_some())))
                    .bind(m.send_at.unwrap_or(m.created_at).0)
                    .bind(idem_key)
                    .bind(idem_hash)
                    .bind(m.created_at.0)
                    .bind(m.updated_at.0)
                    .bind(first_journey(new))
                    .bind(new.claim.as_ref().map(|c| c.owner.clone()))
                    .bind(new.claim.as_ref().map(|c| c.until.0))
                    .bind(new.smpp.map(|r| i64::from(r.registered_delivery)))
                    .bind(new.smpp.map(|r| i64::from(r.ids)))
                    .bind(m.callback_statuses.map(|c| i64::from(c.0)));
            }
            for row in query.fetch_all(&mut *tx).await? {
                inserted.insert(message_id_of(&row.try_get::<String, _>(0)?)?);
            }
        }
        let mut out = Vec::with_capacity(messages.len());
        let mut changed = Vec::with_capacity(messages.len());
        for new in messages {
            let m = &new.message;
            if inserted.contains(&m.id) {
                changed.push(m.status);
                if new.claim.is_some() {
                    changed.push(Status::Sending);
                }
                out.push(Inserted::New);
                continue;
            }
            // Only the idempotency index can make a fresh UUIDv7 conflict.
            let Some((key, hash)) = &new.idempotency else {
                return Err(corrupt(format!("message id {} exists already", m.id)));
            };
            let row =
                sqlx::query("SELECT id, request_hash FROM messages WHERE account_id = $1 AND idempotency_key = $2")
                    .bind(m.account_id.to_string())
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
            let existing = message_id_of(&row.try_get::<String, _>("id")?)?;
            let stored: Option<String> = row.try_get("request_hash")?;
            out.push(Inserted::Duplicate { id: existing, same_request: stored.as_ref() == Some(hash) });
        }
        tx.commit().await?;
        crate::count_status_changes(&changed);
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
        let journey: Option<(String,)> = sqlx::query_as("SELECT journey FROM messages WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        journey.map_or(Ok(Vec::new()), |(j,)| parse_journey(&j))
    }

    async fn list_messages(
        &self,
        account: AccountId,
        filter: &ListFilter,
        cursor: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let (text, params) = list_query(account, filter, cursor, limit);
        // `$1`, `$2`, ... for the `?` placeholders, in order (the fixed SQL text has no other `?`).
        let mut sql = String::with_capacity(text.len() + 16);
        for (i, part) in text.split('?').enumerate() {
            if i > 0 {
                sql.push_str(&format!("${i}"));
            }
            sql.push_str(part);
        }
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for p in params {
            query = match p {
                Param::Text(t) => query.bind(t),
                Param::Int(n) => query.bind(n),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn claim_due(&self, owner: &str, now: Timestamp, lease_ms: i64, limit: u32) -> Result<Vec<Message>> {
        let mut tx = self.begin_custom_planned().await?;
        // First the messages whose holder's lease ran out, then what is due. Each UPDATE claims a batch at once,
        // through the partial index of its WHERE term, in index order, so
        // a claim costs the same with a backlog of a million. SET expressions see the row as it was: the journey
        // gets the lines for the old status ($5 scheduled, $6 taken over, $7 queued), `claimed_from` keeps it.
        let [scheduled, taken_over, queued] = claim_lines(owner, now);
        let mut rows = Vec::new();
        for (waiting, order) in [
            ("status = 'sending' AND lease_until < $3".to_string(), "lease_until"),
            (format!("{} AND next_attempt_at <= $3", waiting::QUEUE), "next_attempt_at"),
        ] {
            let Some(room) = i64::from(limit).checked_sub(rows.len() as i64).filter(|&n| n > 0) else { break };
            let sql = format!(
                "UPDATE messages SET claimed_from = status, status = 'sending', lease_owner = $1, lease_until = $2, \
                 attempts = CASE WHEN status = 'sending' THEN attempts ELSE attempts + 1 END, updated_at = $3, \
                 journey = journey || CASE status WHEN 'scheduled' THEN $5 WHEN 'sending' THEN $6 ELSE $7 END \
                 WHERE id = ANY(ARRAY(SELECT id FROM messages WHERE {waiting} ORDER BY {order} LIMIT $4 \
                 FOR UPDATE SKIP LOCKED)) \
                 RETURNING {MESSAGE_COLUMNS}, claimed_from"
            );
            let claimed = sqlx::query(AssertSqlSafe(sql))
                .bind(owner)
                .bind(now.plus_millis(lease_ms).0)
                .bind(now.0)
                .bind(room)
                .bind(&scheduled)
                .bind(&taken_over)
                .bind(&queued)
                .fetch_all(&mut *tx)
                .await?;
            rows.extend(claimed);
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut changed = Vec::with_capacity(rows.len());
        for row in &rows {
            if status_of(&row.try_get::<String, _>("claimed_from")?)? == Status::Scheduled {
                changed.push(Status::Queued);
            }
            changed.push(Status::Sending);
            out.push(message_from_row(row)?);
        }
        let notify: Vec<_> = out.iter().map(|m| (m.id, Status::Sending, now)).collect();
        enqueue_callbacks(&mut tx, &notify).await?;
        tx.commit().await?;
        crate::count_status_changes(&changed);
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    async fn unpark(
        &self,
        route: Option<&str>,
        after: Option<&WaitingAt>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Option<WaitingAt>> {
        // Two statements, each seeking the index by its whole key, even in a plan made once: `$1` is the route,
        // or where to go on from. The pick is a materialised CTE and the update finds its rows by key: as
        // `id IN (SELECT ... LIMIT)` the planner rescanned the pick for each row, and each scan skipped the rows
        // the statement had already changed, so it changed them all; joined `FROM` the CTE, a generic plan
        // hashed a scan of the whole table (231 ms a chunk beside 1,000,000 messages, in psql).
        let which = if route.is_some() { "waiting_route = $1 AND id > $4" } else { "(waiting_route, id) > ($1, $4)" };
        let sql = format!(
            "WITH picked AS MATERIALIZED (SELECT id AS picked_id, waiting_route AS picked_route FROM messages \
             WHERE {w} AND {which} AND id < $5 ORDER BY waiting_route, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
             moved AS (UPDATE messages SET next_attempt_at = $2, waiting_route = NULL \
             WHERE id = ANY(ARRAY(SELECT picked_id FROM picked)) AND {w}) \
             SELECT picked_route, picked_id FROM picked ORDER BY picked_route DESC, picked_id DESC LIMIT 1",
            w = waiting::FOR_ROUTE
        );
        let (key, from_id) = unpark_from(route, after);
        let last = sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .bind(now.0)
            .bind(i64::from(limit))
            .bind(from_id)
            .bind(MessageId::first_at(now).to_string())
            .fetch_optional(&self.pool)
            .await?;
        last.map(|row| Ok(WaitingAt { route: row.try_get(0)?, id: message_id_of(&row.try_get::<String, _>(1)?)? }))
            .transpose()
    }

    async fn release_leases(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE messages SET lease_until = 0 WHERE status = 'sending' AND lease_owner = $1 AND lease_until > 0",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn record(
        &self,
        transitions: &[Transition],
        receipts: &[ReceiptUpdate],
    ) -> Result<(Vec<bool>, Vec<Option<MessageId>>)> {
        if transitions.is_empty() && receipts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::new();
        let moved = apply_transitions(&mut tx, transitions, &mut changed).await?;
        let matched = apply_receipts(&mut tx, receipts, &mut changed).await?;
        tx.commit().await?;
        crate::count_status_changes(&changed);
        Ok((moved, matched))
    }

    async fn replace_message(
        &self,
        account: AccountId,
        id: MessageId,
        r: &Message,
        now: Timestamp,
        detail: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE messages SET body = $3, encoding = $4, segments = $5, price_micros = $6, send_at = $7, \
             expires_at = $8, next_attempt_at = COALESCE($7, next_attempt_at), updated_at = $9, \
             waiting_route = CASE WHEN $7 IS NULL THEN waiting_route END, \
             journey = journey || CASE status WHEN 'scheduled' THEN $10 ELSE $11 END \
             WHERE id = $1 AND account_id = $2 AND status IN ('scheduled', 'queued')",
        )
        .bind(id.to_string())
        .bind(account.to_string())
        .bind(&r.body)
        .bind(&r.encoding)
        .bind(i64::from(r.segments))
        .bind(r.price_micros)
        .bind(r.send_at.map(|t| t.0))
        .bind(r.expires_at.map(|t| t.0))
        .bind(now.0)
        .bind(journey_line(Status::Scheduled, now, detail))
        .bind(journey_line(Status::Queued, now, detail))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn expire_due(&self, now: Timestamp, limit: u32) -> Result<Vec<MessageId>> {
        // A message being sent is left to its dispatcher, which checks the validity before it submits. The journey
        // gets the line for the status it had: $3 scheduled, $4 queued, $5 sent.
        let sql = format!(
            "UPDATE messages SET claimed_from = status, status = 'expired', updated_at = $1, \
             journey = journey || CASE status WHEN 'scheduled' THEN $3 WHEN 'queued' THEN $4 ELSE $5 END \
             WHERE id = ANY(ARRAY(SELECT id FROM messages WHERE {} AND expires_at <= $1 LIMIT $2 \
             FOR UPDATE SKIP LOCKED)) \
             RETURNING id",
            waiting::EXPIRING
        );
        let [scheduled, queued, sent] = expiry_lines(now);
        let mut tx = self.begin_custom_planned().await?;
        let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(now.0)
            .bind(i64::from(limit))
            .bind(scheduled)
            .bind(queued)
            .bind(sent)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = rows.iter().map(|(id,)| message_id_of(id)).collect::<Result<Vec<_>>>()?;
        let notify: Vec<_> = out.iter().map(|&id| (id, Status::Expired, now)).collect();
        enqueue_callbacks(&mut tx, &notify).await?;
        tx.commit().await?;
        crate::count_status_changes(&vec![Status::Expired; out.len()]);
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

    async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        let rows: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as("SELECT name, kind, settings, created_at, updated_at FROM connectors ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(name, kind, settings, created, updated)| ConnectorRecord {
                name,
                kind,
                settings,
                created_at: Timestamp(created),
                updated_at: Timestamp(updated),
            })
            .collect())
    }

    async fn insert_connector(&self, c: &ConnectorRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO connectors (name, kind, settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&c.name)
        .bind(&c.kind)
        .bind(&c.settings)
        .bind(c.created_at.0)
        .bind(c.updated_at.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_connector(&self, c: &ConnectorRecord) -> Result<bool> {
        let done = sqlx::query("UPDATE connectors SET kind = $2, settings = $3, updated_at = $4 WHERE name = $1")
            .bind(&c.name)
            .bind(&c.kind)
            .bind(&c.settings)
            .bind(c.updated_at.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_connector(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM connectors WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        let rows: Vec<(String, i64, String, String)> =
            sqlx::query_as("SELECT name, position, matches, connectors FROM routes").fetch_all(&self.pool).await?;
        rows.into_iter().map(|(name, position, m, c)| route_of(name, position, &m, &c)).collect()
    }

    async fn insert_route(&self, route: &Route, now: Timestamp) -> Result<bool> {
        let (matches, connectors) = route_json(route);
        let done = sqlx::query(
            "INSERT INTO routes (name, position, matches, connectors, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&route.name)
        .bind(route.position)
        .bind(matches)
        .bind(connectors)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_route(&self, route: &Route, now: Timestamp) -> Result<bool> {
        let (matches, connectors) = route_json(route);
        let done = sqlx::query(
            "UPDATE routes SET position = $2, matches = $3, connectors = $4, updated_at = $5 WHERE name = $1",
        )
        .bind(&route.name)
        .bind(route.position)
        .bind(matches)
        .bind(connectors)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_route(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM routes WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn do_once(&self, name: &str, now: Timestamp) -> Result<bool> {
        let done = sqlx::query("INSERT INTO done_once (name, at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn route_limits(&self) -> Result<Vec<(AccountId, Vec<String>)>> {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT id, routes FROM accounts WHERE routes IS NOT NULL").fetch_all(&self.pool).await?;
        rows.into_iter().map(|(id, routes)| Ok((account_id_of(&id)?, routes_of(routes)?.unwrap_or_default()))).collect()
    }

    async fn set_account_routes(&self, account: AccountId, routes: Option<&[String]>) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET routes = $2 WHERE id = $1")
            .bind(account.to_string())
            .bind(routes_json(routes))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn put_webhooks(
        &self,
        account: AccountId,
        status_url: Option<&str>,
        inbound_url: Option<&str>,
        new_secret: &str,
        now: Timestamp,
    ) -> Result<Webhooks> {
        sqlx::query(
            "INSERT INTO webhooks (account_id, status_url, inbound_url, secret, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account_id) DO UPDATE SET status_url = excluded.status_url, \
             inbound_url = excluded.inbound_url, updated_at = excluded.updated_at",
        )
        .bind(account.to_string())
        .bind(status_url)
        .bind(inbound_url)
        .bind(new_secret)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        self.webhooks(account).await?.ok_or_else(|| corrupt("webhooks just written are gone"))
    }

    async fn webhooks(&self, account: AccountId) -> Result<Option<Webhooks>> {
        let row: Option<(Option<String>, Option<String>, String, i64)> =
            sqlx::query_as("SELECT status_url, inbound_url, secret, updated_at FROM webhooks WHERE account_id = $1")
                .bind(account.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(status_url, inbound_url, secret, updated)| Webhooks {
            account_id: account,
            status_url,
            inbound_url,
            secret,
            updated_at: Timestamp(updated),
        }))
    }

    async fn rotate_webhook_secret(&self, account: AccountId, secret: &str, now: Timestamp) -> Result<bool> {
        let done = sqlx::query("UPDATE webhooks SET secret = $2, updated_at = $3 WHERE account_id = $1")
            .bind(account.to_string())
            .bind(secret)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_smpp_credential(&self, c: &SmppCredential) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO smpp_credentials (system_id, account_id, password_hash, allowed_ips, max_binds, throughput, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (system_id) DO NOTHING",
        )
        .bind(&c.system_id)
        .bind(c.account_id.to_string())
        .bind(&c.password_hash)
        .bind(c.allowed_ips.as_ref().map(|a| serde_json::json!(a).to_string()))
        .bind(c.max_binds.map(i64::from))
        .bind(c.throughput)
        .bind(c.created_at.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn smpp_credentials(&self, account: AccountId) -> Result<Vec<SmppCredential>> {
        let sql = format!("SELECT {SMPP_COLUMNS} FROM smpp_credentials WHERE account_id = $1 ORDER BY system_id");
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(account.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(smpp_credential_from_row).collect()
    }

    async fn smpp_credential(&self, system_id: &str) -> Result<Option<SmppCredential>> {
        let sql = format!("SELECT {SMPP_COLUMNS} FROM smpp_credentials WHERE system_id = $1");
        let row = sqlx::query(AssertSqlSafe(sql)).bind(system_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(smpp_credential_from_row).transpose()
    }

    async fn delete_smpp_credential(&self, account: AccountId, system_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM smpp_credentials WHERE account_id = $1 AND system_id = $2")
            .bind(account.to_string())
            .bind(system_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_callbacks(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueCallback>> {
        let mut tx = self.begin_custom_planned().await?;
        let rows = sqlx::query(
            "UPDATE callbacks SET lease_owner = $1, lease_until = $2, next_attempt_at = $2 WHERE id = ANY(ARRAY( \
             SELECT c.id FROM callbacks c WHERE c.state = 'pending' AND c.next_attempt_at <= $3 \
             AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.message_id = c.message_id AND p.state = 'pending' \
             AND p.seq < c.seq) ORDER BY c.next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)) \
             RETURNING id, account_id, message_id, kind, url, status, error_code, at, attempts, created_at, \
             (SELECT secret FROM webhooks w WHERE w.account_id = callbacks.account_id) AS secret",
        )
        .bind(owner)
        .bind(now.plus_millis(lease_ms).0)
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut due = rows
            .iter()
            .map(|r| {
                Ok(DueCallback {
                    id: r.try_get("id")?,
                    account_id: account_id_of(&r.try_get::<String, _>("account_id")?)?,
                    message_id: message_id_of(&r.try_get::<String, _>("message_id")?)?,
                    kind: r.try_get("kind")?,
                    url: r.try_get("url")?,
                    status: status_of(&r.try_get::<String, _>("status")?)?,
                    error_code: r.try_get("error_code")?,
                    at: Timestamp(r.try_get("at")?),
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    created_at: Timestamp(r.try_get("created_at")?),
                    secret: r.try_get::<Option<String>, _>("secret")?.unwrap_or_default(),
                    message: None,
                })
            })
            .collect::<Result<Vec<DueCallback>>>()?;
        // The messages, for the bodies, in one query.
        let by_id = self.messages_by_id(due.iter().map(|c| c.message_id)).await?;
        for c in &mut due {
            c.message = by_id.get(&c.message_id).cloned();
        }
        Ok(due)
    }

    async fn finish_callbacks(&self, results: &[CallbackResult]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in pow2_chunks(results, ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE callbacks SET state = v.column2, attempts = attempts + 1, \
                 next_attempt_at = COALESCE(v.column3, next_attempt_at), lease_owner = NULL, lease_until = NULL, \
                 attempt_log = attempt_log || v.column4 FROM (VALUES {}) AS v WHERE callbacks.id = v.column1",
                values_rows(chunk.len(), 4)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                let (state, next) = match r.next {
                    CallbackNext::Delivered => ("delivered", None),
                    CallbackNext::RetryAt(t) => ("pending", Some(t.0)),
                    CallbackNext::GiveUp => ("failed", None),
                };
                query = query.bind(&r.id).bind(state).bind(next).bind(attempt_line(&r.attempt));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn callbacks(&self, account: AccountId, message: MessageId) -> Result<Vec<CallbackRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, url, status, error_code, at, state, attempt_log, next_attempt_at FROM callbacks \
             WHERE message_id = $1 AND account_id = $2 ORDER BY seq, id",
        )
        .bind(message.to_string())
        .bind(account.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(CallbackRecord {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    url: r.try_get("url")?,
                    status: status_of(&r.try_get::<String, _>("status")?)?,
                    error_code: r.try_get("error_code")?,
                    at: Timestamp(r.try_get("at")?),
                    attempts: parse_attempts(&r.try_get::<String, _>("attempt_log")?)?,
                    next_attempt_at: if state == "pending" {
                        Some(Timestamp(r.try_get("next_attempt_at")?))
                    } else {
                        None
                    },
                    state,
                })
            })
            .collect()
    }

    async fn claim_smpp_deliveries(
        &self,
        owner: &str,
        accounts: &[AccountId],
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let accounts: Vec<String> = accounts.iter().map(|a| a.to_string()).collect();
        // The due rows are taken oldest first, a few times the limit of them (in the due index's order), and only
        // then is each checked for an earlier pending deliver_sm of its message: checking every pending row
        // first made a claim's time grow with the backlog (40 ms at 20,000 pending). Planned for its parameters
        // (the pool plans generically): a generic plan of this statement, made while the outbox was small, took
        // up to 26 s a claim once it held thousands of rows.
        let mut tx = self.begin_custom_planned().await?;
        let rows = sqlx::query(
            "UPDATE smpp_outbox SET lease_owner = $1, lease_until = $2, next_attempt_at = $2 WHERE id = ANY(ARRAY( \
             SELECT c.id FROM (SELECT id, message_id, seq, next_attempt_at FROM smpp_outbox \
             WHERE state = 'pending' AND account_id = ANY($5) AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at LIMIT $6 FOR UPDATE SKIP LOCKED) c \
             WHERE NOT EXISTS (SELECT 1 FROM smpp_outbox p WHERE p.message_id = c.message_id \
             AND p.state = 'pending' AND p.seq < c.seq) ORDER BY c.next_attempt_at LIMIT $4)) \
             RETURNING id, account_id, message_id, kind, part, status, error_code, at, attempts, expires_at",
        )
        .bind(owner)
        .bind(now.plus_millis(lease_ms).0)
        .bind(now.0)
        .bind(i64::from(limit))
        .bind(&accounts)
        .bind(i64::from(limit) * 4)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut due = rows
            .iter()
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get("id")?,
                    account_id: account_id_of(&r.try_get::<String, _>("account_id")?)?,
                    message_id: message_id_of(&r.try_get::<String, _>("message_id")?)?,
                    kind: r.try_get("kind")?,
                    part: u32::try_from(r.try_get::<i64, _>("part")?).unwrap_or(0),
                    status: status_of(&r.try_get::<String, _>("status")?)?,
                    error_code: r.try_get("error_code")?,
                    at: Timestamp(r.try_get("at")?),
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    expires_at: Timestamp(r.try_get("expires_at")?),
                    message: None,
                })
            })
            .collect::<Result<Vec<DueDelivery>>>()?;
        let by_id = self.messages_by_id(due.iter().map(|d| d.message_id)).await?;
        for d in &mut due {
            d.message = by_id.get(&d.message_id).map(DeliveryMessage::from);
        }
        Ok(due)
    }

    async fn finish_smpp_deliveries(&self, results: &[(String, DeliveryNext)]) -> Result<()> {
        // Taken, or given up: deleted; to try again: its next time.
        let (done, again): (Vec<_>, Vec<_>) =
            results.iter().partition(|(_, next)| !matches!(next, DeliveryNext::RetryAt(_)));
        let done: Vec<&str> = done.iter().map(|(id, _)| id.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        if !done.is_empty() {
            sqlx::query("DELETE FROM smpp_outbox WHERE id = ANY($1)").bind(&done).execute(&mut *tx).await?;
        }
        for chunk in pow2_chunks(&again, ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE smpp_outbox SET attempts = attempts + 1, next_attempt_at = v.column2, lease_owner = NULL, \
                 lease_until = NULL FROM (VALUES {}) AS v WHERE smpp_outbox.id = v.column1",
                values_rows(chunk.len(), 2)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (id, next) in chunk {
                let DeliveryNext::RetryAt(t) = next else { continue };
                query = query.bind(id).bind(t.0);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn expire_smpp_deliveries(&self, now: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM smpp_outbox WHERE state = 'pending' AND expires_at <= $1")
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn count_pending_smpp_deliveries(&self) -> Result<i64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM smpp_outbox WHERE state = 'pending'").fetch_one(&self.pool).await?;
        Ok(n)
    }

    async fn count_pending_callbacks(&self) -> Result<i64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM callbacks WHERE state = 'pending'").fetch_one(&self.pool).await?;
        Ok(n)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn count_pending(&self) -> Result<Vec<(Status, i64)>> {
        // Through the partial indexes: the cost follows what waits, not the history.
        let sql = format!(
            "SELECT status, COUNT(*) FROM messages WHERE {} GROUP BY status \
             UNION ALL SELECT 'sending', COUNT(*) FROM messages WHERE status = 'sending'",
            waiting::EXPIRING
        );
        let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        let mut out = rows
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| Ok((status_of(&s)?, n)))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|(s, _)| s.as_str());
        Ok(out)
    }
}
