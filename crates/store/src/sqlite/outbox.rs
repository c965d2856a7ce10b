//! The outboxes on SQLite: claiming and finishing webhook callbacks and deliver_sm. A claim runs on the writer
//! thread; what the claimed rows need of their messages is read after, on a reader.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use smsgate_core::{AccountId, Message, MessageId, Timestamp};

use super::hooks::FEED;
use super::messages::{limit_literal, message_from_row};
use super::{SqliteStore, rows_of};
use crate::schema::{MESSAGE_COLUMNS, attempt_line};
use crate::smpp_outbox::{DUE_DELIVERY_COLUMNS, due_delivery_of};
use crate::webhooks::{DUE_CALLBACK_COLUMNS, FAIR_WINDOW, Share, due_callback_of};
use crate::{CallbackOutbox, CallbackResult, DeliveryMessage, DeliveryNext, DueCallback, DueDelivery, Result};
use crate::{SmppFeed, SmppOutbox};

/// Claims due callbacks: the oldest pending one of each message whose time has come. A claim moves its callbacks'
/// next attempt to the lease's end, so what is under way leaves the due range (a claim does not walk past it) and
/// comes due again only if its lease runs out unrecorded. Parameters: owner, lease end, now.
/// The oldest due callbacks (a window of them, skipping `?4`'s accounts, a JSON array), numbered by account, then
/// taken turn by turn, at most `?5` of an account.
fn claim_callbacks_sql(limit: u32) -> String {
    let window = limit * FAIR_WINDOW;
    format!(
        "UPDATE OR FAIL callbacks SET lease_owner = ?1, lease_until = ?2, next_attempt_at = ?2 WHERE id IN ( \
         SELECT id FROM (SELECT id, next_attempt_at, \
         ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY next_attempt_at, id) AS turn FROM ( \
         SELECT c.id, c.account_id, c.next_attempt_at FROM callbacks c WHERE c.state = 'pending' \
         AND c.next_attempt_at <= ?3 AND c.account_id NOT IN (SELECT value FROM json_each(?4)) \
         AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.message_id = c.message_id AND p.state = 'pending' \
         AND p.seq < c.seq) ORDER BY c.next_attempt_at LIMIT {window})) \
         WHERE turn <= ?5 ORDER BY turn, next_attempt_at LIMIT {limit}) \
         RETURNING {DUE_CALLBACK_COLUMNS}"
    )
}

/// What a deliver_sm says of a message, by id.
fn delivery_message(conn: &Connection, id: MessageId) -> Result<Option<DeliveryMessage>> {
    let mut st = conn.prepare_cached("SELECT to_addr, from_addr, body, created_at FROM messages WHERE id = ?1")?;
    let mut rows = st.query([id.to_string()])?;
    let Some(r) = rows.next()? else { return Ok(None) };
    Ok(Some(DeliveryMessage { id, to: r.get(0)?, from: r.get(1)?, body: r.get(2)?, created_at: Timestamp(r.get(3)?) }))
}

/// A message by id, whoever owns it.
fn message_by_id(conn: &Connection, id: MessageId) -> Result<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query([id.to_string()])?;
    rows.next()?.map(message_from_row).transpose()
}

/// Claims an account's due deliver_sm: the oldest pending ones of each message whose time has come, their next
/// attempt moved to the lease's end as [`claim_callbacks_sql`] does. Parameters: owner, lease end, now, account.
fn claim_smpp_sql(limit: u32) -> String {
    format!(
        "UPDATE OR FAIL smpp_outbox SET lease_owner = ?1, lease_until = ?2, next_attempt_at = ?2 WHERE id IN ( \
         SELECT c.id FROM smpp_outbox c WHERE c.state = 'pending' AND c.account_id = ?4 AND c.next_attempt_at <= ?3 \
         AND NOT EXISTS (SELECT 1 FROM smpp_outbox p WHERE p.message_id = c.message_id AND p.state = 'pending' \
         AND p.seq < c.seq) ORDER BY c.next_attempt_at LIMIT {limit}) \
         RETURNING {DUE_DELIVERY_COLUMNS}"
    )
}

#[async_trait]
impl CallbackOutbox for SqliteStore {
    async fn claim_callbacks_fairly(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
        share: &Share,
    ) -> Result<Vec<DueCallback>> {
        let owner = owner.to_string();
        let sql = claim_callbacks_sql(limit_literal(limit));
        let skip = serde_json::json!(share.skip.iter().map(|a| a.to_string()).collect::<Vec<_>>()).to_string();
        let per_account = i64::from(share.per_account.max(1));
        let mut claimed = self
            .write(move |conn, _| {
                let mut st = conn.prepare_cached(&sql)?;
                let rows = rows_of(&mut st, params![owner, now.plus_millis(lease_ms).0, now.0, skip, per_account])?;
                rows.iter().map(due_callback_of).collect::<Result<Vec<_>>>()
            })
            .await?;
        if claimed.is_empty() {
            return Ok(claimed);
        }
        // Their messages and secrets from a reader, in one go: the writer thread is what callbacks keep busy.
        // One read transaction for them all: each statement on its own would start one, and starting one behind a
        // busy writer re-reads the WAL index and drops the page cache.
        self.read(move |conn| {
            let read = conn.unchecked_transaction()?;
            for c in &mut claimed {
                let secrets: Option<(String, Option<String>)> = conn
                    .prepare_cached(
                        "SELECT secret, CASE WHEN previous_until > ?2 THEN previous_secret END FROM webhooks \
                         WHERE account_id = ?1",
                    )?
                    .query_row(params![c.account_id.to_string(), now.0], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (secret, previous) = secrets.unwrap_or_default();
                c.secret = crate::seal::open_or_empty(&secret);
                c.previous_secret = previous.map(|p| crate::seal::open(&p)).and_then(Result::ok);
                c.message = message_by_id(conn, c.message_id)?;
            }
            read.finish()?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_callbacks(&self, results: &[CallbackResult]) -> Result<()> {
        let results = results.to_vec();
        self.write(move |conn, _| {
            for r in &results {
                let (state, next) = r.next.state();
                conn.prepare_cached(
                    "UPDATE OR FAIL callbacks SET state = ?2, attempts = attempts + 1, \
                     next_attempt_at = COALESCE(?3, next_attempt_at), lease_owner = NULL, lease_until = NULL, \
                     attempt_log = attempt_log || ?4 WHERE id = ?1",
                )?
                .execute(params![r.id, state, next, attempt_line(&r.attempt)])?;
            }
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SmppOutbox for SqliteStore {
    async fn feed_smpp_deliveries(&self, feed: SmppFeed) -> Result<bool> {
        self.write(move |conn, _| {
            conn.prepare_cached(
                "UPDATE OR FAIL smpp_outbox SET lease_owner = NULL, lease_until = NULL, next_attempt_at = at \
                 WHERE lease_owner = ?1",
            )?
            .execute([&feed.node])?;
            FEED.set(Some(feed.clone()));
            Ok(true)
        })
        .await
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
        let owner = owner.to_string();
        let accounts: Vec<String> = accounts.iter().map(|a| a.to_string()).collect();
        let sql = claim_smpp_sql(limit_literal(limit));
        let mut claimed = self
            .write(move |conn, _| {
                let mut st = conn.prepare_cached(&sql)?;
                let mut out = Vec::new();
                for account in &accounts {
                    let rows = rows_of(&mut st, params![owner, now.plus_millis(lease_ms).0, now.0, account])?;
                    for r in &rows {
                        out.push(due_delivery_of(r)?);
                    }
                }
                Ok(out)
            })
            .await?;
        if claimed.is_empty() {
            return Ok(claimed);
        }
        // Their messages from a reader, in one read transaction (as for callbacks).
        self.read(move |conn| {
            let read = conn.unchecked_transaction()?;
            for d in &mut claimed {
                d.message = delivery_message(conn, d.message_id)?;
            }
            read.finish()?;
            Ok(claimed)
        })
        .await
    }

    async fn finish_smpp_deliveries(&self, results: &[(String, DeliveryNext)]) -> Result<()> {
        let results = results.to_vec();
        self.write(move |conn, _| {
            for (id, next) in &results {
                // Ids are rowids here; one that is not was never handed out by this store.
                let Ok(id) = id.parse::<i64>() else { continue };
                match next {
                    DeliveryNext::RetryAt(t) => conn
                        .prepare_cached(
                            "UPDATE OR FAIL smpp_outbox SET attempts = attempts + 1, next_attempt_at = ?2, \
                             lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                        )?
                        .execute(params![id, t.0])?,
                    // Taken, or given up: nothing more to keep.
                    DeliveryNext::Delivered | DeliveryNext::Expired => {
                        conn.prepare_cached("DELETE FROM smpp_outbox WHERE id = ?1")?.execute([id])?
                    }
                };
            }
            Ok(())
        })
        .await
    }
}
