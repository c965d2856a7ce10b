//! The hot paths of [`MessageStore`] on SQLite: inserts, claims, status changes and receipts, expiry, unparking.
//! Each runs on the writer thread ([`SqliteStore::write`]); updates go by rowid, one row a statement, without
//! `RETURNING` (see [`transition_sql`]).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use smsgate_core::{Direction, Message, MessageId, Status, Timestamp};

use super::SqliteStore;
use super::hooks::{CountedMessage, HOOK_COLUMNS, Moved, enqueue};
use crate::messages::mask_of;
use crate::schema::{
    MESSAGE_COLUMNS, account_id_of, claim_lines, corrupt, expiry_lines, first_journey, journey_line, may_become,
    message_id_of, next_attempt, status_of, unpark_from, waiting,
};
use crate::{
    Changes, DeliveryMessage, Inserted, MessageStore, NewMessage, ReceiptUpdate, Result, Transition, WaitingAt,
};

/// A [`Message`] from the columns of [`MESSAGE_COLUMNS`], in order.
pub(super) fn message_from_row(row: &Row<'_>) -> Result<Message> {
    let count = |i: usize| -> Result<u32> {
        let v: i64 = row.get(i)?;
        u32::try_from(v).map_err(|_| corrupt(format!("count {v} in column {i}")))
    };
    let direction: String = row.get(2)?;
    Ok(Message {
        id: message_id_of(&row.get::<_, String>(0)?)?,
        account_id: account_id_of(&row.get::<_, String>(1)?)?,
        direction: Direction::parse(&direction).ok_or_else(|| corrupt(format!("direction {direction:?}")))?,
        to: row.get(3)?,
        from: row.get(4)?,
        body: row.get(5)?,
        encoding: row.get(6)?,
        segments: count(7)?,
        price_micros: row.get(8)?,
        connector: row.get(9)?,
        carrier_id: row.get(10)?,
        status: status_of(&row.get::<_, String>(11)?)?,
        error_code: row.get(12)?,
        reference: row.get(13)?,
        callback_url: row.get(14)?,
        send_at: row.get::<_, Option<i64>>(15)?.map(Timestamp),
        expires_at: row.get::<_, Option<i64>>(16)?.map(Timestamp),
        attempts: count(17)?,
        category: crate::messages::category_of(&row.get::<_, String>(21)?)?,
        created_at: Timestamp(row.get(18)?),
        updated_at: Timestamp(row.get(19)?),
        callback_statuses: mask_of(row.get(20)?)?,
    })
}

/// Moves the message of rowid `?1` to `to` (`?2`) from a status that may become it, fenced by the lease owner
/// (`?9`) when one is given, appending the journey line `?10`. No `RETURNING`: SQLite runs an `UPDATE ...
/// RETURNING` in two passes with a statement journal, which cost twice the update itself; the row is read first
/// ([`moved_by`]) and what the change makes of it worked out ([`Moved::after`]).
pub(super) fn transition_sql(to: Status) -> String {
    let from = may_become("status", to);
    format!(
        "UPDATE OR FAIL messages SET status = ?2, updated_at = ?3, \
         connector = COALESCE(?4, connector), carrier_id = COALESCE(?5, carrier_id), \
         error_code = COALESCE(?6, error_code), price_micros = COALESCE(?7, price_micros), \
         next_attempt_at = COALESCE(?8, next_attempt_at), waiting_route = ?12, \
         lease_owner = CASE WHEN ?2 = 'sending' THEN lease_owner END, \
         lease_until = CASE WHEN ?2 = 'sending' THEN lease_until END, \
         journey = journey || ?10, attempts = attempts - ?11 \
         WHERE rowid = ?1 AND {from} AND (?9 IS NULL OR lease_owner = ?9)"
    )
}

/// The rowid of a message by id, and what a change needs of it ([`HOOK_COLUMNS`]) as it is before the change.
fn moved_by(conn: &Connection, id: &str) -> Result<Option<(i64, Moved)>> {
    let sql = format!("SELECT rowid, {HOOK_COLUMNS} FROM messages WHERE id = ?1");
    Ok(conn.prepare_cached(&sql)?.query_row([id], |r| Ok((r.get(0)?, Moved::from_row(r, 1)?))).optional()?)
}

/// Moves one message by id if the state machine (and, when fenced, the lease) allows, with its journey line.
fn apply_transition(conn: &Connection, t: &Transition) -> Result<bool> {
    if may_become("status", t.to).is_empty() {
        return Ok(false);
    }
    let c = &t.changes;
    let Some((rowid, before)) = moved_by(conn, &t.id.to_string())? else { return Ok(false) };
    let line = journey_line(t.to, t.at, &t.detail);
    let changed = conn.prepare_cached(&transition_sql(t.to))?.execute(params![
        rowid,
        t.to.as_str(),
        t.at.0,
        c.connector,
        c.carrier_id,
        c.error_code,
        c.price_micros,
        next_attempt(c),
        c.lease_owner,
        line,
        i64::from(c.attempt_undone),
        c.wait_for_route,
    ])?;
    if changed == 0 {
        return Ok(false);
    }
    let moved = before.after(&line, c.error_code.as_deref()).priced(c.connector.as_deref(), c.price_micros);
    enqueue(conn, &moved, t.to, t.at)?;
    {
        let id = moved.id;
        if let Some(connector) = c.connector.as_deref().filter(|_| c.parts.len() > 1) {
            for (i, carrier_id) in c.parts.iter().enumerate() {
                conn.prepare_cached(
                    "INSERT INTO message_parts (message_id, part, connector, carrier_id, status) \
                     VALUES (?1, ?2, ?3, ?4, 'sent') ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, i as i64 + 1, connector, carrier_id])?;
            }
        }
    }
    Ok(true)
}

/// The messages a connector (`?1`) gave a carrier id (`?2`) that may become `to`, each sent whole: their rowids
/// and [`HOOK_COLUMNS`].
pub(super) fn receipt_match_sql(to: Status) -> String {
    let from = may_become("status", to);
    format!(
        "SELECT rowid, {HOOK_COLUMNS} FROM messages WHERE connector = ?1 AND carrier_id = ?2 AND {from} \
         AND NOT EXISTS (SELECT 1 FROM message_parts p WHERE p.message_id = messages.id)"
    )
}

/// Moves the message of rowid `?1` to `to` (`?2`) from a status that may become it, appending the journey line
/// `?5` (without `RETURNING`, as [`transition_sql`]).
fn receipt_sql(to: Status) -> String {
    let from = may_become("status", to);
    format!(
        "UPDATE OR FAIL messages SET status = ?2, updated_at = ?3, error_code = COALESCE(?4, error_code), \
         lease_owner = NULL, lease_until = NULL, journey = journey || ?5 WHERE rowid = ?1 AND {from}"
    )
}

/// Moves the messages a receipt's carrier id names; returns the newest it moved. A receipt that moves none may be
/// for a part of a message sent part by part: [`apply_part_receipt`].
fn apply_receipt(conn: &Connection, r: &ReceiptUpdate) -> Result<Option<MessageId>> {
    if may_become("status", r.to).is_empty() {
        return Ok(None);
    }
    let found: Vec<(i64, Moved)> = conn
        .prepare_cached(&receipt_match_sql(r.to))?
        .query_map(params![r.connector, r.carrier_id], |row| Ok((row.get(0)?, Moved::from_row(row, 1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // A carrier that reuses an id moves every message still waiting under it; report the newest.
    let mut newest = None;
    let line = journey_line(r.to, r.at, &r.detail);
    for (rowid, before) in found {
        let changed = conn.prepare_cached(&receipt_sql(r.to))?.execute(params![
            rowid,
            r.to.as_str(),
            r.at.0,
            r.error_code,
            line
        ])?;
        if changed == 0 {
            continue;
        }
        let m = before.after(&line, r.error_code.as_deref());
        enqueue(conn, &m, r.to, r.at)?;
        newest = newest.max(Some(message_id_of(&m.id)?));
    }
    if newest.is_some() {
        return Ok(newest);
    }
    // Nothing moved: a part's receipt, or a late one (which changes nothing).
    apply_part_receipt(conn, r)
}

/// A receipt for a part of a message sent part by part: records the part and returns its message, which moves once
/// its parts decide it (delivered when all are, otherwise at the first part that is not).
fn apply_part_receipt(conn: &Connection, r: &ReceiptUpdate) -> Result<Option<MessageId>> {
    let part: Option<(String, i64)> = conn
        .prepare_cached(
            "UPDATE OR FAIL message_parts SET status = ?3 WHERE connector = ?1 AND carrier_id = ?2 AND status = 'sent' \
             RETURNING message_id, part",
        )?
        .query_row(params![r.connector, r.carrier_id, r.to.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((message, part)) = part {
        let (left, total): (i64, i64) = conn
            .prepare_cached(
                "SELECT COUNT(*) FILTER (WHERE status <> 'delivered'), COUNT(*) FROM message_parts WHERE message_id = ?1",
            )?
            .query_row([&message], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let id = message_id_of(&message)?;
        if r.to != Status::Delivered || left == 0 {
            let changes = Changes { error_code: r.error_code.clone(), ..Changes::default() };
            let detail = format!("part {part} of {total}: {}", r.detail);
            apply_transition(conn, &Transition { id, to: r.to, at: r.at, detail, changes })?;
        }
        return Ok(Some(id));
    }
    Ok(None)
}

/// The largest power of two not above `n` (at least 1, at most 1,024): the `LIMIT` a statement takes as a literal.
/// A `LIMIT` given as a parameter makes SQLite prepare an `IN (SELECT ... LIMIT ?)` statement again at every
/// execution (it plans with the value); literals from a handful of sizes keep each shape prepared once.
pub(super) fn limit_literal(n: u32) -> u32 {
    let n = n.clamp(1, 1024);
    1 << (u32::BITS - 1 - n.leading_zeros())
}

/// What the claims take, in order: messages whose holder's lease ran out, then what is due at `?1`; each through
/// the partial index of its `WHERE` term in index order, so a claim costs the same with a backlog of a million.
/// Each row: [`MESSAGE_COLUMNS`] as they are, the journey's length, the rowid; [`CLAIM_ONE`] then claims it.
pub(super) fn claim_sql(limit: u32) -> [String; 2] {
    let pick = |waiting: &str, order: &str| {
        format!(
            "SELECT {MESSAGE_COLUMNS}, length(journey), rowid FROM messages WHERE {waiting} \
             ORDER BY {order} LIMIT {limit}"
        )
    };
    [
        pick("status = 'sending' AND lease_until < ?1", "lease_until"),
        pick(&format!("{} AND next_attempt_at <= ?1", waiting::QUEUE), "next_attempt_at"),
    ]
}

/// Claims the message of rowid `?1` for `?2` until `?3`, at `?4`, with the journey line `?5`: one single-row
/// update, as a multi-row `UPDATE ... RETURNING` costs twice as much (see [`transition_sql`]).
const CLAIM_ONE: &str = "UPDATE OR FAIL messages SET status = 'sending', lease_owner = ?2, lease_until = ?3, \
     attempts = CASE WHEN status = 'sending' THEN attempts ELSE attempts + 1 END, updated_at = ?4, \
     journey = journey || ?5 WHERE rowid = ?1";

/// Ends what waited past its validity, at most `limit` (a [`limit_literal`]). A message being sent is left to its
/// dispatcher, which checks the validity before it submits. Parameters: now, and the journey lines for a message
/// that was scheduled, queued, sent.
pub(super) fn expire_sql(limit: u32) -> String {
    format!(
        "UPDATE OR FAIL messages SET claimed_from = status, status = 'expired', updated_at = ?1, \
         journey = journey || CASE status WHEN 'scheduled' THEN ?2 WHEN 'queued' THEN ?3 ELSE ?4 END \
         WHERE id IN (SELECT id FROM messages WHERE {} AND expires_at <= ?1 LIMIT {limit}) \
         RETURNING {HOOK_COLUMNS}",
        waiting::EXPIRING
    )
}

/// Makes a new outbound message the head of its chain (`recipients`; parameters: handset, address, account, id,
/// campaign, automation, created_at). One row per account, number and handset, rewritten in place.
const SET_CHAIN_HEAD: &str = "INSERT INTO recipients (handset, address, account_id, last_id, campaign_id, automation_id, \
     last_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (handset, address, account_id) DO UPDATE SET \
     last_id = excluded.last_id, campaign_id = excluded.campaign_id, automation_id = excluded.automation_id, \
     last_at = excluded.last_at";

/// The newest outbound message of `account` from `address` to `handset`: what a new one links back to.
fn chain_head(conn: &Connection, handset: &str, address: &str, account: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT last_id FROM recipients WHERE handset = ?1 AND address = ?2 AND account_id = ?3")?
        .query_row(params![handset, address, account], |r| r.get(0))
        .optional()
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_messages(&self, messages: &[NewMessage]) -> Result<Vec<Inserted>> {
        let messages = messages.to_vec();
        self.write(move |conn, changed| {
            let mut out = Vec::with_capacity(messages.len());
            for new in &messages {
                let m = &new.message;
                let id = m.id.to_string();
                let (status, attempts) = match new.claim {
                    Some(_) => (Status::Sending, m.attempts + 1),
                    None => (m.status, m.attempts),
                };
                let (idem_key, idem_hash) = match &new.idempotency {
                    Some((k, h)) => (Some(k.as_str()), Some(h.as_str())),
                    None => (None, None),
                };
                let journey = first_journey(new);
                let account = m.account_id.to_string();
                let outbound = m.direction == Direction::Outbound;
                let prev_to = if outbound { chain_head(conn, &m.to, &m.from, &account)? } else { None };
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO messages (id, account_id, direction, to_addr, from_addr, body, encoding, \
                         segments, price_micros, connector, carrier_id, status, error_code, reference, callback_url, \
                         send_at, expires_at, attempts, next_attempt_at, idempotency_key, request_hash, created_at, \
                         updated_at, journey, lease_owner, lease_until, smpp_receipts, smpp_parts, \
                         callback_statuses, category, campaign_id, automation_id, prev_to) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
                         ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33) \
                         ON CONFLICT DO NOTHING",
                    )?
                    .execute(params![
                        id,
                        m.account_id.to_string(),
                        m.direction.as_str(),
                        m.to,
                        m.from,
                        m.body,
                        m.encoding,
                        i64::from(m.segments),
                        m.price_micros,
                        m.connector,
                        m.carrier_id,
                        status.as_str(),
                        m.error_code,
                        m.reference,
                        m.callback_url,
                        m.send_at.map(|t| t.0),
                        m.expires_at.map(|t| t.0),
                        i64::from(attempts),
                        m.send_at.unwrap_or(m.created_at).0,
                        idem_key,
                        idem_hash,
                        m.created_at.0,
                        m.updated_at.0,
                        journey,
                        new.claim.as_ref().map(|c| c.owner.as_str()),
                        new.claim.as_ref().map(|c| c.until.0),
                        new.smpp.map(|r| i64::from(r.registered_delivery)),
                        new.smpp.map(|r| i64::from(r.ids)),
                        m.callback_statuses.map(|c| i64::from(c.0)),
                        m.category.as_str(),
                        new.origin.campaign,
                        new.origin.automation,
                        prev_to,
                    ])?;
                if inserted == 1 {
                    if outbound {
                        conn.prepare_cached(SET_CHAIN_HEAD)?.execute(params![
                            m.to,
                            m.from,
                            account,
                            id,
                            new.origin.campaign,
                            new.origin.automation,
                            m.created_at.0
                        ])?;
                    }
                    changed.push(m.status);
                    let moved = Moved {
                        id: id.clone(),
                        account: m.account_id.to_string(),
                        callback_url: m.callback_url.clone(),
                        callback_statuses: m.callback_statuses,
                        error_code: m.error_code.clone(),
                        seq: journey.chars().count() as i64,
                        smpp: new.smpp,
                        message: Some(DeliveryMessage::from(m)),
                        counted: CountedMessage::of(m, new.origin.campaign.as_deref()),
                    };
                    enqueue(conn, &moved, m.status, m.created_at)?;
                    if new.claim.is_some() {
                        changed.push(Status::Sending);
                        enqueue(conn, &moved, Status::Sending, m.created_at)?;
                    }
                    out.push(Inserted::New);
                    continue;
                }
                // Only the idempotency index can make a fresh UUIDv7 conflict.
                let Some(key) = idem_key else {
                    return Err(corrupt(format!("message id {id} exists already")));
                };
                let (existing, hash): (String, Option<String>) = conn
                    .prepare_cached(
                        "SELECT id, request_hash FROM messages WHERE account_id = ?1 AND idempotency_key = ?2",
                    )?
                    .query_row(params![m.account_id.to_string(), key], |r| Ok((r.get(0)?, r.get(1)?)))?;
                out.push(Inserted::Duplicate {
                    id: message_id_of(&existing)?,
                    same_request: hash.as_deref() == idem_hash,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn claim_due(&self, owner: &str, now: Timestamp, lease_ms: i64, limit: u32) -> Result<Vec<Message>> {
        let [scheduled, taken_over, queued] = claim_lines(owner, now);
        let owner = owner.to_string();
        self.write(move |conn, changed| {
            let mut out = Vec::new();
            let mut claimed = Vec::new();
            for kind in 0..2 {
                // In steps of the literal limits, until the room is full or nothing more waits.
                loop {
                    let room = limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX));
                    if room == 0 {
                        break;
                    }
                    let step = limit_literal(room);
                    // Read first, then claim each: no update under a read still walking the index it changes.
                    let picked: Vec<(Message, i64, i64)> = conn
                        .prepare_cached(&claim_sql(step)[kind])?
                        .query_map([now.0], |r| Ok((message_from_row(r), r.get(22)?, r.get(23)?)))?
                        .map(|row| {
                            let (m, length, rowid) = row?;
                            Ok((m?, length, rowid))
                        })
                        .collect::<Result<_>>()?;
                    let got = picked.len();
                    let lease_end = now.plus_millis(lease_ms).0;
                    for (mut m, length, rowid) in picked {
                        let line = match m.status {
                            Status::Scheduled => &scheduled,
                            Status::Sending => &taken_over,
                            _ => &queued,
                        };
                        conn.prepare_cached(CLAIM_ONE)?.execute(params![rowid, owner, lease_end, now.0, line])?;
                        if m.status == Status::Scheduled {
                            changed.push(Status::Queued);
                        }
                        changed.push(Status::Sending);
                        if m.status != Status::Sending {
                            m.attempts += 1;
                        }
                        m.status = Status::Sending;
                        m.updated_at = now;
                        claimed.push(Moved {
                            id: m.id.to_string(),
                            account: m.account_id.to_string(),
                            callback_url: m.callback_url.clone(),
                            callback_statuses: m.callback_statuses,
                            error_code: m.error_code.clone(),
                            seq: length + line.chars().count() as i64,
                            smpp: None,
                            message: None,
                            counted: CountedMessage::default(),
                        });
                        out.push(m);
                    }
                    if got < step as usize {
                        break;
                    }
                }
            }
            for m in &claimed {
                enqueue(conn, m, Status::Sending, now)?;
            }
            out.sort_by_key(|m| m.id);
            Ok(out)
        })
        .await
    }

    async fn unpark(
        &self,
        route: Option<&str>,
        after: Option<&WaitingAt>,
        now: Timestamp,
        limit: u32,
    ) -> Result<Option<WaitingAt>> {
        // Two statements, each seeking the index by its whole key (`?1 IS NULL OR` would keep SQLite from it):
        // `?1` is the route, or where to go on from.
        let which = if route.is_some() { "waiting_route = ?1 AND id > ?3" } else { "(waiting_route, id) > (?1, ?3)" };
        let sql = format!(
            "SELECT rowid, waiting_route, id FROM messages WHERE {} AND {which} AND id < ?4 \
             ORDER BY waiting_route, id LIMIT ?2",
            waiting::FOR_ROUTE
        );
        let (key, from_id) = unpark_from(route, after);
        let before = MessageId::first_at(now).to_string();
        let found: Vec<(i64, String, String)> = self
            .read(move |conn| {
                let mut st = conn.prepare_cached(&sql)?;
                let rows =
                    st.query_map(params![key, limit, from_id, before], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        // Found on a reader, so that a look that finds none costs the writer nothing; each put back only if it
        // still waits.
        let Some((_, route, id)) = found.last() else { return Ok(None) };
        let last = WaitingAt { route: route.clone(), id: message_id_of(id)? };
        let sql = format!(
            "UPDATE OR FAIL messages SET next_attempt_at = ?2, waiting_route = NULL WHERE rowid = ?1 AND {}",
            waiting::FOR_ROUTE
        );
        self.write(move |conn, _| {
            for (rowid, _, _) in &found {
                conn.prepare_cached(&sql)?.execute(params![rowid, now.0])?;
            }
            Ok(())
        })
        .await?;
        Ok(Some(last))
    }

    async fn record(
        &self,
        transitions: &[Transition],
        receipts: &[ReceiptUpdate],
    ) -> Result<(Vec<bool>, Vec<Option<MessageId>>)> {
        if transitions.is_empty() && receipts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (transitions, receipts) = (transitions.to_vec(), receipts.to_vec());
        self.write(move |conn, changed| {
            let mut moved = Vec::with_capacity(transitions.len());
            for t in &transitions {
                let m = apply_transition(conn, t)?;
                if m {
                    changed.push(t.to);
                }
                moved.push(m);
            }
            let mut matched = Vec::with_capacity(receipts.len());
            for r in &receipts {
                let m = apply_receipt(conn, r)?;
                if m.is_some() {
                    changed.push(r.to);
                }
                matched.push(m);
            }
            Ok((moved, matched))
        })
        .await
    }

    async fn expire_due(&self, now: Timestamp, limit: u32) -> Result<Vec<MessageId>> {
        let [scheduled, queued, sent] = expiry_lines(now);
        self.write(move |conn, changed| {
            let mut out = Vec::new();
            loop {
                let room = limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX));
                if room == 0 {
                    break;
                }
                let step = limit_literal(room);
                let mut st = conn.prepare_cached(&expire_sql(step))?;
                let mut rows = st.query(params![now.0, scheduled, queued, sent])?;
                let mut got = 0;
                let mut ids = Vec::new();
                while let Some(r) = rows.next()? {
                    ids.push(Moved::from_row(r, 0)?);
                    changed.push(Status::Expired);
                    got += 1;
                }
                drop(rows);
                for m in ids {
                    enqueue(conn, &m, Status::Expired, now)?;
                    out.push(message_id_of(&m.id)?);
                }
                if got < step {
                    break;
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }
}
