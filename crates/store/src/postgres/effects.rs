//! The rows status changes make on PostgreSQL: each statement that moves messages returns [`effect_columns`];
//! [`write_effects`] asks [`crate::effects`] what each change makes and writes the callbacks and deliver_sm in
//! multi-row inserts, in the change's transaction. A group whose changes make nothing costs no extra statement.

use smsgate_core::{StatusMask, Timestamp};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::{ROWS_PER_STATEMENT, pow2_chunks, values_rows};
use crate::Result;
use crate::effects::{AccountHooks, Change, effects};
use crate::rollups::{Counted, KEY_COLUMNS, Rollups, counter_columns};
use crate::schema::status_of;
use crate::smpp_outbox::SmppReceipts;

/// What a statement moving `messages` returns for [`write_effects`], for the status it set in the SQL expression
/// `status` at the time `at`. Every column is named `effect_*`, apart from whatever else the statement returns.
/// The account's URLs are read only where the message alone does not decide, and whether it has SMPP
/// credentials only for an inbound message.
pub(super) fn effect_columns(status: &str, at: &str) -> String {
    format!(
        "messages.id AS effect_id, messages.account_id AS effect_account, \
         messages.callback_url AS effect_callback_url, messages.callback_statuses AS effect_callback_statuses, \
         messages.error_code AS effect_error_code, length(messages.journey)::bigint AS effect_seq, \
         {status} AS effect_status, {at} AS effect_at, messages.smpp_receipts AS effect_smpp_receipts, \
         messages.smpp_parts AS effect_smpp_parts, messages.direction AS effect_direction, \
         messages.to_addr AS effect_to, messages.from_addr AS effect_from, messages.campaign_id AS effect_campaign, \
         messages.connector AS effect_connector, messages.price_micros AS effect_price, \
         messages.created_at AS effect_created, \
         CASE WHEN messages.callback_url IS NULL THEN (SELECT w.status_url FROM webhooks w \
         WHERE w.account_id = messages.account_id) END AS effect_status_url, \
         CASE WHEN {status} = 'received' THEN (SELECT w.inbound_url FROM webhooks w \
         WHERE w.account_id = messages.account_id) END AS effect_inbound_url, \
         CASE WHEN {status} = 'received' THEN EXISTS (SELECT 1 FROM smpp_credentials c \
         WHERE c.account_id = messages.account_id) END AS effect_smpp_clients"
    )
}

/// Adds what a change counts ([`crate::rollups::counts`]) to `rollups`.
fn count(rollups: &mut Rollups, r: &PgRow, status: smsgate_core::Status) -> Result<()> {
    let inbound = r.try_get::<String, _>("effect_direction")? == "inbound";
    let (to, from): (String, String) = (r.try_get("effect_to")?, r.try_get("effect_from")?);
    let (account, campaign, connector): (String, Option<String>, Option<String>) =
        (r.try_get("effect_account")?, r.try_get("effect_campaign")?, r.try_get("effect_connector")?);
    let (handset, address) = if inbound { (&from, &to) } else { (&to, &from) };
    let counted = Counted {
        account_id: &account,
        inbound,
        handset,
        address,
        campaign: campaign.as_deref(),
        connector: connector.as_deref(),
        price_micros: r.try_get("effect_price")?,
        created_at: Timestamp(r.try_get("effect_created")?),
    };
    rollups.count(&counted, status, Timestamp(r.try_get("effect_at")?));
    Ok(())
}

/// Appends a transaction's counts, added up by row, to the rollups' deltas (not the rollups: nodes would wait on
/// each other's row locks there).
async fn write_rollups(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, rollups: &Rollups) -> Result<()> {
    let rows = rollups.rows();
    let counters = counter_columns();
    for chunk in pow2_chunks(&rows, ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO rollup_deltas ({KEY_COLUMNS}, {}) VALUES {}",
            counters.join(", "),
            values_rows(chunk.len(), 4 + counters.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (k, c) in chunk {
            query = query.bind(&k.account_id).bind(k.dimension).bind(k.hour).bind(&k.value);
            for v in c.values() {
                query = query.bind(v);
            }
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A callback row to write: id, account, message, seq, kind, url, status, error code, time.
type CallbackRow = (String, String, String, i64, &'static str, String, &'static str, Option<String>, i64);

/// A deliver_sm row to write: id, account, message, seq, part, kind, status, error code, time, expiry.
type DeliveryRow = (String, String, String, i64, i64, &'static str, &'static str, Option<String>, i64, i64);

/// Writes the callbacks and deliver_sm that the changes in `rows` (each with [`effect_columns`]) make.
pub(super) async fn write_effects(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, rows: &[PgRow]) -> Result<()> {
    let mut callbacks: Vec<CallbackRow> = Vec::new();
    let mut deliveries: Vec<DeliveryRow> = Vec::new();
    let mut rollups = Rollups::default();
    for r in rows {
        let status = status_of(&r.try_get::<String, _>("effect_status")?)?;
        count(&mut rollups, r, status)?;
        let callback_url: Option<String> = r.try_get("effect_callback_url")?;
        let status_url: Option<String> = r.try_get("effect_status_url")?;
        let inbound_url: Option<String> = r.try_get("effect_inbound_url")?;
        let smpp = r.try_get::<Option<i64>, _>("effect_smpp_receipts")?.map(|rd| SmppReceipts {
            registered_delivery: u8::try_from(rd).unwrap_or(0),
            ids: r
                .try_get::<Option<i64>, _>("effect_smpp_parts")
                .ok()
                .flatten()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1)
                .max(1),
        });
        let change = Change {
            status,
            callback_url: callback_url.as_deref(),
            callback_statuses: r
                .try_get::<Option<i64>, _>("effect_callback_statuses")?
                .and_then(|v| u32::try_from(v).ok())
                .map(StatusMask),
            smpp,
        };
        let account = AccountHooks {
            status_url: status_url.as_deref(),
            inbound_url: inbound_url.as_deref(),
            smpp_clients: r.try_get::<Option<bool>, _>("effect_smpp_clients")?.unwrap_or(false),
        };
        let made = effects(&change, &account);
        if made.callback.is_none() && made.deliveries.is_none() {
            continue;
        }
        let id: String = r.try_get("effect_id")?;
        let account_id: String = r.try_get("effect_account")?;
        let seq: i64 = r.try_get("effect_seq")?;
        let error_code: Option<String> = r.try_get("effect_error_code")?;
        let at = Timestamp(r.try_get("effect_at")?);
        if let Some(c) = made.callback {
            let callback_id = uuid::Uuid::now_v7().hyphenated().to_string();
            let row = (callback_id, account_id.clone(), id.clone(), seq, c.kind, c.url.to_string());
            callbacks.push((row.0, row.1, row.2, row.3, row.4, row.5, status.as_str(), error_code.clone(), at.0));
        }
        if let Some(d) = made.deliveries {
            for part in d.parts {
                let delivery_id = uuid::Uuid::now_v7().hyphenated().to_string();
                let expires_at = at.0 + crate::SMPP_DELIVERY_TTL_MS;
                deliveries.push((
                    delivery_id,
                    account_id.clone(),
                    id.clone(),
                    seq,
                    i64::from(part),
                    d.kind,
                    status.as_str(),
                    error_code.clone(),
                    at.0,
                    expires_at,
                ));
            }
        }
    }
    write_rollups(tx, &rollups).await?;
    for chunk in pow2_chunks(&callbacks, ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO callbacks (id, account_id, message_id, seq, kind, url, status, error_code, at, state, \
             next_attempt_at, created_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, \
             v.column9, 'pending', v.column9, v.column9 FROM (VALUES {}) AS v",
            values_rows(chunk.len(), 9)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for c in chunk {
            query =
                query.bind(&c.0).bind(&c.1).bind(&c.2).bind(c.3).bind(c.4).bind(&c.5).bind(c.6).bind(&c.7).bind(c.8);
        }
        query.execute(&mut **tx).await?;
    }
    for chunk in pow2_chunks(&deliveries, ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO smpp_outbox (id, account_id, message_id, seq, part, kind, status, error_code, at, state, \
             next_attempt_at, expires_at, created_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, \
             v.column9, 'pending', v.column9, v.column10, v.column9 FROM (VALUES {}) AS v",
            values_rows(chunk.len(), 10)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for d in chunk {
            query = query.bind(&d.0).bind(&d.1).bind(&d.2).bind(d.3).bind(d.4).bind(d.5).bind(d.6).bind(&d.7);
            query = query.bind(d.8).bind(d.9);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
