//! The outboxes on PostgreSQL: claims by `FOR UPDATE SKIP LOCKED`, planned for their parameters, and
//! multi-row bookkeeping.

use async_trait::async_trait;
use smsgate_core::{AccountId, Timestamp};
use sqlx::AssertSqlSafe;

use super::{PgStore, ROWS_PER_STATEMENT, pow2_chunks, rows_of, values_rows};
use crate::Share;
use crate::SmppOutbox;
use crate::schema::attempt_line;
use crate::smpp_outbox::due_delivery_of;
use crate::webhooks::due_callback_of;
use crate::{CallbackOutbox, CallbackResult, DeliveryMessage, DeliveryNext, DueCallback, DueDelivery, Result};

#[async_trait]
impl CallbackOutbox for PgStore {
    async fn claim_callbacks_fairly(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
        share: &Share,
    ) -> Result<Vec<DueCallback>> {
        let skip: Vec<String> = share.skip.iter().map(|a| a.to_string()).collect();
        let mut tx = self.begin_custom_planned().await?;
        // The oldest due callbacks (a window of them, locked), numbered by account, taken turn by turn.
        let rows = sqlx::query(
            "UPDATE callbacks SET lease_owner = $1, lease_until = $2, next_attempt_at = $2 WHERE id = ANY(ARRAY( \
             SELECT id FROM (SELECT id, next_attempt_at, \
             ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY next_attempt_at, id) AS turn FROM ( \
             SELECT c.id, c.account_id, c.next_attempt_at FROM callbacks c WHERE c.state = 'pending' \
             AND c.next_attempt_at <= $3 AND c.account_id <> ALL($5) \
             AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.message_id = c.message_id AND p.state = 'pending' \
             AND p.seq < c.seq) ORDER BY c.next_attempt_at LIMIT $7 FOR UPDATE SKIP LOCKED) candidates) turns \
             WHERE turn <= $6 ORDER BY turn, next_attempt_at LIMIT $4)) \
             RETURNING id, account_id, message_id, kind, url, status, error_code, at, attempts, created_at, payload, \
             (SELECT secret FROM webhooks w WHERE w.account_id = callbacks.account_id) AS secret, \
             (SELECT CASE WHEN w.previous_until > $3 THEN w.previous_secret END FROM webhooks w \
              WHERE w.account_id = callbacks.account_id) AS previous_secret",
        )
        .bind(owner)
        .bind(now.plus_millis(lease_ms).0)
        .bind(now.0)
        .bind(i64::from(limit))
        .bind(&skip)
        .bind(i64::from(share.per_account.max(1)))
        .bind(i64::from(limit) * i64::from(crate::webhooks::FAIR_WINDOW))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut due = rows_of(&rows)?.iter().map(due_callback_of).collect::<Result<Vec<_>>>()?;
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
                let (state, next) = r.next.state();
                query = query.bind(&r.id).bind(state).bind(next).bind(attempt_line(&r.attempt));
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl SmppOutbox for PgStore {
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
        let mut due = rows_of(&rows)?.iter().map(due_delivery_of).collect::<Result<Vec<_>>>()?;
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
}
