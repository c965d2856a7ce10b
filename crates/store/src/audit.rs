//! The audit log: who changed what, kept in the store. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::sql::{Database, Row, values};

/// One change, as the API made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Time-ordered (a UUIDv7): the cursor of a listing.
    pub id: String,
    pub at: Timestamp,
    pub actor_account: Option<AccountId>,
    pub actor_key: Option<String>,
    /// The method and route pattern: `POST /v1/routes`.
    pub action: String,
    /// The path acted on: `/v1/routes/uk`.
    pub target: String,
    pub status: u16,
    /// The request's body, secrets replaced.
    pub detail: Option<String>,
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Keeps an entry.
    async fn record_audit(&self, entry: &AuditEntry) -> Result<()>;

    /// Entries, newest first, before the `cursor` id (exclusive), at most `limit`; only `actor`'s when given.
    async fn audit(&self, actor: Option<AccountId>, cursor: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>>;
}

fn entry_of(r: &Row) -> Result<AuditEntry> {
    let actor: Option<String> = r.get("actor_account")?;
    Ok(AuditEntry {
        id: r.get("id")?,
        at: r.timestamp("at")?,
        actor_account: actor.as_deref().and_then(AccountId::parse),
        actor_key: r.get("actor_key")?,
        action: r.get("action")?,
        target: r.get("target")?,
        status: u16::try_from(r.get::<i64>("status")?).unwrap_or(0),
        detail: r.get("detail")?,
    })
}

#[async_trait]
impl<D: Database> AuditStore for D {
    async fn record_audit(&self, e: &AuditEntry) -> Result<()> {
        self.execute(
            "INSERT INTO audit_log (id, at, actor_account, actor_key, action, target, status, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            values![
                &e.id,
                e.at,
                e.actor_account.map(|a| a.to_string()),
                e.actor_key.as_deref(),
                &e.action,
                &e.target,
                i64::from(e.status),
                e.detail.as_deref(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn audit(&self, actor: Option<AccountId>, cursor: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut sql = String::from(
            "SELECT id, at, actor_account, actor_key, action, target, status, detail FROM audit_log WHERE 1 = 1",
        );
        let mut params = Vec::new();
        if let Some(a) = actor {
            sql.push_str(" AND actor_account = ?");
            params.push(a.into());
        }
        if let Some(c) = cursor {
            sql.push_str(" AND id < ?");
            params.push(c.into());
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.clamp(1, 1000)));
        self.query(&sql, params).await?.iter().map(entry_of).collect()
    }
}
