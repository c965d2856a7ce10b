//! The server's history and what it keeps of it: final messages older than the server's `history_days` are
//! deleted with what is left of them (parts, callbacks, SMPP receipts not delivered), a batch at a time; a
//! campaign's texts are counted into `campaign_archive` as they go, so its stats stay whole. Webhook callbacks that
//! are done (delivered, or given up) are deleted after a shorter span. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{MessageId, Status, Timestamp};

use crate::Result;
use crate::sql::{Database, Statement, Value, values};

/// What the history sweep deletes.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Deletes final messages made before `before`, walking messages by id after `after`, `limit` at a time; those
    /// of the walk that are not final stay. How many were deleted, and the last id walked (`None`: nothing left
    /// before `before`).
    async fn delete_history(
        &self,
        before: Timestamp,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<(u64, Option<MessageId>)>;

    /// Deletes up to `limit` webhook callbacks that are done (delivered or given up) and were made before
    /// `before`; how many.
    async fn delete_done_callbacks(&self, before: Timestamp, limit: u32) -> Result<u64>;
}

/// Up to `limit` ids of messages made before `before` (and within `scope`: SQL ending in `AND `, with its
/// parameters), after `after`, oldest first. Ids sort by the time they were made (UUIDv7, by the system's clock,
/// which is the engine's in `serve`), which bounds the walk by the index that ends in `id`; `created_at` decides.
pub(crate) async fn ids_made_before<D: Database + ?Sized>(
    db: &D,
    (scope, mut params): (&str, Vec<Value>),
    before: Timestamp,
    after: Option<MessageId>,
    limit: u32,
) -> Result<Vec<MessageId>> {
    let mut sql = format!("SELECT id FROM messages WHERE {scope}id < ? AND created_at < ?");
    params.extend(values![MessageId::first_at(before), before]);
    if let Some(after) = after {
        sql.push_str(" AND id > ?");
        params.push(after.into());
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
    db.query(&sql, params).await?.iter().map(|r| r.message_id("id")).collect()
}

/// A statement that deletes the chain heads (`recipients`) that are among the final outbound messages `ids`: a
/// chain whose newest message goes (or loses its number) is forgotten. `None` when none is a head.
pub(crate) async fn chain_heads_among<D: Database + ?Sized>(db: &D, ids: &[Value]) -> Result<Option<Statement>> {
    let sql = format!(
        "SELECT r.handset, r.address, r.account_id, r.last_id FROM messages m JOIN recipients r \
         ON r.handset = m.to_addr AND r.address = m.from_addr AND r.account_id = m.account_id AND r.last_id = m.id \
         WHERE m.id IN ({}) AND m.direction = 'outbound' AND m.status IN ({})",
        vec!["?"; ids.len()].join(", "),
        finals()
    );
    let heads = db.query(&sql, ids.to_vec()).await?;
    if heads.is_empty() {
        return Ok(None);
    }
    let mut params = Vec::with_capacity(heads.len() * 4);
    for h in &heads {
        for column in ["handset", "address", "account_id", "last_id"] {
            params.push(Value::from(h.get::<String>(column)?));
        }
    }
    let one = "(handset = ? AND address = ? AND account_id = ? AND last_id = ?)";
    Ok(Some(Statement { sql: format!("DELETE FROM recipients WHERE {}", vec![one; heads.len()].join(" OR ")), params }))
}

/// The final statuses as an SQL list.
pub(crate) fn finals() -> String {
    Status::ALL.iter().filter(|s| s.is_final()).map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl<D: Database> HistoryStore for D {
    async fn delete_history(
        &self,
        before: Timestamp,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<(u64, Option<MessageId>)> {
        // Through the primary key, from where the last batch stopped.
        let ids = ids_made_before(self, ("", Vec::new()), before, after, limit).await?;
        let Some(&last) = ids.last() else { return Ok((0, None)) };
        let list = vec!["?"; ids.len()].join(", ");
        let ids: Vec<Value> = ids.iter().map(|&id| id.into()).collect();
        let with_time = |mut v: Vec<Value>| {
            v.push(before.into());
            v
        };
        let heads = chain_heads_among(self, &ids).await?;
        let doomed = format!("id IN ({list}) AND status IN ({}) AND created_at < ?", finals());
        let of_doomed = format!("message_id IN (SELECT id FROM messages WHERE {doomed})");
        let mut statements: Vec<Statement> = heads.into_iter().collect();
        statements.extend([
            // A campaign's texts, counted where its stats will find them.
            Statement {
                sql: format!(
                    "INSERT INTO campaign_archive (campaign_id, status, n, price_micros) \
                     SELECT campaign_id, status, count(*), CAST(coalesce(sum(price_micros), 0) AS BIGINT) \
                     FROM messages WHERE {doomed} AND campaign_id IS NOT NULL GROUP BY campaign_id, status \
                     ON CONFLICT (campaign_id, status) DO UPDATE SET n = campaign_archive.n + excluded.n, \
                     price_micros = campaign_archive.price_micros + excluded.price_micros"
                ),
                params: with_time(ids.clone()),
            },
            Statement { sql: format!("DELETE FROM message_parts WHERE {of_doomed}"), params: with_time(ids.clone()) },
            Statement { sql: format!("DELETE FROM callbacks WHERE {of_doomed}"), params: with_time(ids.clone()) },
            Statement { sql: format!("DELETE FROM smpp_outbox WHERE {of_doomed}"), params: with_time(ids.clone()) },
            Statement { sql: format!("DELETE FROM messages WHERE {doomed}"), params: with_time(ids) },
        ]);
        let changed = self.transaction(statements).await?;
        Ok((changed.last().copied().unwrap_or(0), Some(last)))
    }

    async fn delete_done_callbacks(&self, before: Timestamp, limit: u32) -> Result<u64> {
        let changed = self
            .transaction(vec![Statement {
                // Their ids sort by the time they were made (UUIDv7): the oldest first, through the primary key.
                sql: format!(
                    "DELETE FROM callbacks WHERE id IN (SELECT id FROM callbacks WHERE id < ? AND state <> 'pending' \
                     AND created_at < ? ORDER BY id LIMIT {limit})"
                ),
                params: values![MessageId::first_at(before), before],
            }])
            .await?;
        Ok(changed.first().copied().unwrap_or(0))
    }
}
