//! The hot paths of [`MessageStore`] on PostgreSQL: multi-row statements for inserts, status changes and
//! receipts; claims by `FOR UPDATE SKIP LOCKED`. Each statement that moves messages returns what
//! [`super::effects::write_effects`] needs, which writes their callbacks and deliver_sm in the same transaction.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use smsgate_core::{Direction, Message, MessageId, Status, Timestamp};
use sqlx::{AssertSqlSafe, Row};

use super::effects::{effect_columns, write_effects};
use super::{PgStore, ROWS_PER_STATEMENT, allowed_moves, distinct_prefix, pow2_chunks, rows_of, values_rows};
use crate::messages::message_of;
use crate::schema::{
    MESSAGE_COLUMNS, claim_lines, corrupt, expiry_lines, first_journey, journey_line, message_id_of, next_attempt,
    unpark_from, waiting,
};
use crate::{Changes, Inserted, MessageStore, NewMessage, ReceiptUpdate, Result, Transition, WaitingAt};

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
                effect_columns("v.column2", "v.column3"),
            );
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
            let rows = query.fetch_all(&mut **tx).await?;
            write_effects(tx, &rows).await?;
            let mut moved = HashSet::new();
            for row in &rows {
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
                effect_columns("v.column3", "v.column4"),
            );
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
            let rows = query.fetch_all(&mut **tx).await?;
            write_effects(tx, &rows).await?;
            let mut moved: HashMap<(String, String), Vec<MessageId>> = HashMap::new();
            for row in &rows {
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

/// An outbound message's chain: its account, number and handset.
type ChainKey = (String, String, String);

fn chain_key(m: &Message) -> ChainKey {
    (m.to.clone(), m.from.clone(), m.account_id.to_string())
}

/// Chains' handsets, addresses and accounts, as three arrays to bind.
fn key_columns<'a>(keys: impl Iterator<Item = &'a ChainKey> + Clone) -> [Vec<String>; 3] {
    [0, 1, 2].map(|i| keys.clone().map(|k| [&k.0, &k.1, &k.2][i].clone()).collect())
}

/// The chains of outbound messages about to be inserted, their heads locked: each one's head before the batch
/// (`None`: a new chain), and the `prev_to` each message gets, in the order they were made. One statement makes the
/// heads not there yet and locks those that are (`ON CONFLICT DO UPDATE` locks the newest version, waiting for a
/// transaction that has it), in key order, so that two nodes inserting for one handset at once chain one after the
/// other rather than both after the same message.
struct Chains {
    heads: std::collections::BTreeMap<ChainKey, Option<String>>,
    prev: HashMap<MessageId, String>,
}

async fn lock_chains(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, messages: &[NewMessage]) -> Result<Chains> {
    let mut chains = Chains { heads: Default::default(), prev: HashMap::new() };
    let outbound = || messages.iter().map(|n| &n.message).filter(|m| m.direction == Direction::Outbound);
    for m in outbound() {
        chains.heads.insert(chain_key(m), None);
    }
    if chains.heads.is_empty() {
        return Ok(chains);
    }
    let [handsets, addresses, accounts] = key_columns(chains.heads.keys());
    let rows = sqlx::query(
        "INSERT INTO recipients (handset, address, account_id, last_id, last_at) \
         SELECT h, a, c, '', 0 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS v(h, a, c) ORDER BY h, a, c \
         ON CONFLICT (handset, address, account_id) DO UPDATE SET last_id = recipients.last_id \
         RETURNING handset, address, account_id, last_id",
    )
    .bind(&handsets)
    .bind(&addresses)
    .bind(&accounts)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let last: String = row.try_get(3)?;
        chains.heads.insert((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?), Some(last).filter(|l| !l.is_empty()));
    }
    let mut at = chains.heads.clone();
    for m in outbound() {
        if let Some(prev) = at.insert(chain_key(m), Some(m.id.to_string())).flatten() {
            chains.prev.insert(m.id, prev);
        }
    }
    Ok(chains)
}

/// Makes the newest inserted message of each chain its head. A message not inserted (an idempotency key seen
/// before) is taken out of its chain: the next one links past it, and a chain none of whose messages went in keeps
/// the head it had, or none.
async fn set_chain_heads(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    messages: &[NewMessage],
    inserted: &HashSet<MessageId>,
    chains: Chains,
) -> Result<()> {
    if chains.heads.is_empty() {
        return Ok(());
    }
    let mut heads = chains.heads;
    let before = heads.clone();
    let mut newest: std::collections::BTreeMap<ChainKey, &NewMessage> = Default::default();
    let (mut relinked, mut relinked_to) = (Vec::new(), Vec::new());
    for new in
        messages.iter().filter(|n| n.message.direction == Direction::Outbound && inserted.contains(&n.message.id))
    {
        let m = &new.message;
        let key = chain_key(m);
        let head = heads.get(&key).cloned().flatten();
        if head.as_ref() != chains.prev.get(&m.id) {
            relinked.push(m.id.to_string());
            relinked_to.push(head);
        }
        heads.insert(key.clone(), Some(m.id.to_string()));
        newest.insert(key, new);
    }
    if !relinked.is_empty() {
        sqlx::query("UPDATE messages SET prev_to = v.prev FROM UNNEST($1::text[], $2::text[]) AS v(id, prev) WHERE messages.id = v.id")
            .bind(&relinked)
            .bind(&relinked_to)
            .execute(&mut **tx)
            .await?;
    }
    let (mut keys, mut ids, mut campaigns, mut automations, mut ats) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, new) in &newest {
        keys.push(key);
        ids.push(new.message.id.to_string());
        campaigns.push(new.origin.campaign.clone());
        automations.push(new.origin.automation.clone());
        ats.push(new.message.created_at.0);
    }
    if !keys.is_empty() {
        let [handsets, addresses, accounts] = key_columns(keys.iter().copied());
        sqlx::query(
            "UPDATE recipients SET last_id = v.id, campaign_id = v.campaign, automation_id = v.automation, \
             last_at = v.at FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::bigint[]) AS v(handset, address, account_id, id, campaign, automation, at) \
             WHERE recipients.handset = v.handset AND recipients.address = v.address \
             AND recipients.account_id = v.account_id",
        )
        .bind(handsets)
        .bind(addresses)
        .bind(accounts)
        .bind(&ids)
        .bind(&campaigns)
        .bind(&automations)
        .bind(&ats)
        .execute(&mut **tx)
        .await?;
    }
    // New chains none of whose messages went in.
    let empty: Vec<&ChainKey> =
        before.iter().filter(|(k, h)| h.is_none() && !newest.contains_key(*k)).map(|(k, _)| k).collect();
    if !empty.is_empty() {
        let [handsets, addresses, accounts] = key_columns(empty.iter().copied());
        sqlx::query(
            "DELETE FROM recipients WHERE last_id = '' AND (handset, address, account_id) IN \
             (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))",
        )
        .bind(handsets)
        .bind(addresses)
        .bind(accounts)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl MessageStore for PgStore {
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        let mut tx = self.pool.begin().await?;
        let chains = lock_chains(&mut tx, messages).await?;
        let mut inserted = HashSet::new();
        for chunk in pow2_chunks(messages, ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO messages (id, account_id, direction, to_addr, from_addr, body, encoding, segments, \
                 price_micros, connector, carrier_id, status, error_code, reference, callback_url, send_at, \
                 expires_at, attempts, next_attempt_at, idempotency_key, request_hash, created_at, updated_at, \
                 journey, lease_owner, lease_until, smpp_receipts, smpp_parts, callback_statuses, category, \
                 campaign_id, automation_id, prev_to) VALUES {} ON CONFLICT DO NOTHING RETURNING messages.id, {}",
                values_rows(chunk.len(), 33),
                effect_columns("messages.status", "messages.created_at"),
            );
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
                    .bind(m.callback_statuses.map(|c| i64::from(c.0)))
                    .bind(m.category.as_str())
                    .bind(new.origin.campaign.as_deref())
                    .bind(new.origin.automation.as_deref())
                    .bind(chains.prev.get(&m.id));
            }
            let rows = query.fetch_all(&mut *tx).await?;
            write_effects(&mut tx, &rows).await?;
            for row in &rows {
                inserted.insert(message_id_of(&row.try_get::<String, _>(0)?)?);
            }
        }
        set_chain_heads(&mut tx, messages, &inserted, chains).await?;
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
                 RETURNING {MESSAGE_COLUMNS}, claimed_from, {effects}",
                effects = effect_columns("'sending'", "messages.updated_at"),
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
        for row in rows_of(&rows)? {
            if row.status("claimed_from")? == Status::Scheduled {
                changed.push(Status::Queued);
            }
            changed.push(Status::Sending);
            out.push(message_of(&row)?);
        }
        write_effects(&mut tx, &rows).await?;
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

    async fn expire_due(&self, now: Timestamp, limit: u32) -> Result<Vec<MessageId>> {
        // A message being sent is left to its dispatcher, which checks the validity before it submits. The journey
        // gets the line for the status it had: $3 scheduled, $4 queued, $5 sent.
        let sql = format!(
            "UPDATE messages SET claimed_from = status, status = 'expired', updated_at = $1, \
             journey = journey || CASE status WHEN 'scheduled' THEN $3 WHEN 'queued' THEN $4 ELSE $5 END \
             WHERE id = ANY(ARRAY(SELECT id FROM messages WHERE {} AND expires_at <= $1 LIMIT $2 \
             FOR UPDATE SKIP LOCKED)) \
             RETURNING messages.id, {}",
            waiting::EXPIRING,
            effect_columns("'expired'", "messages.updated_at"),
        );
        let [scheduled, queued, sent] = expiry_lines(now);
        let mut tx = self.begin_custom_planned().await?;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now.0)
            .bind(i64::from(limit))
            .bind(scheduled)
            .bind(queued)
            .bind(sent)
            .fetch_all(&mut *tx)
            .await?;
        write_effects(&mut tx, &rows).await?;
        tx.commit().await?;
        let mut out = rows.iter().map(|r| message_id_of(&r.try_get::<String, _>(0)?)).collect::<Result<Vec<_>>>()?;
        crate::count_status_changes(&vec![Status::Expired; out.len()]);
        out.sort();
        Ok(out)
    }
}
