//! Consent: each account's compliance settings, the ledger of every change of a number's consent, and who is opted
//! out now. Numbers are keyed by a keyed hash (`phone_hash`, made by the services), so that an opt-out outlives the
//! erasure of the person's number. Cold-path SQL, written once ([`Database`]); admission asks an in-memory copy.

use async_trait::async_trait;
use smsgate_core::consent::Source;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::schema::corrupt;
use crate::sql::{Database, Row, Statement, Value, values};

/// One change of a number's consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEvent {
    pub id: String,
    pub account_id: AccountId,
    pub phone_hash: String,
    /// `None` once the person was erased.
    pub phone: Option<String>,
    /// `""`: the whole account; else the address key of the one sender it holds for.
    pub scope: String,
    pub opted_out: bool,
    pub source: Source,
    /// What shows it, JSON: the inbound message and its text, the import job and row, the key used.
    pub evidence: String,
    pub at: Timestamp,
}

/// A number opted out now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    pub account_id: AccountId,
    pub phone_hash: String,
    pub scope: String,
    pub phone: Option<String>,
    pub source: Source,
    pub at: Timestamp,
}

/// Consent settings, ledger and state.
#[async_trait]
pub trait ConsentStore: Send + Sync {
    /// An account's compliance settings as JSON; `None`: the defaults.
    async fn compliance(&self, account: AccountId) -> Result<Option<String>>;

    /// Every account that has compliance settings of its own, with them (JSON).
    async fn all_compliance(&self) -> Result<Vec<(AccountId, String)>>;

    /// Sets an account's compliance settings (JSON); false if there is no such account.
    async fn set_compliance(&self, account: AccountId, json: &str) -> Result<bool>;

    /// Records a change in the ledger and applies it, in one transaction: an opt-out adds its scope's row, an
    /// opt-in removes it (every scope when `event.scope` is `*`) — unless the ledger holds a change of that number
    /// made later (by `at`), which stands. Whether the number's state changed.
    async fn record_consent(&self, event: &ConsentEvent) -> Result<bool>;

    /// The scopes a number is opted out in, for an account (`""` is the whole account).
    async fn opt_out_scopes(&self, account: AccountId, phone_hash: &str) -> Result<Vec<String>>;

    /// An account's opt-outs, newest first, after the `(at, phone_hash)` cursor, at most `limit`.
    async fn opt_outs(
        &self,
        account: AccountId,
        before: Option<(Timestamp, String)>,
        limit: u32,
    ) -> Result<Vec<OptOut>>;

    /// Every opt-out of every account (loaded once at start into admission's copy).
    async fn all_opt_outs(&self) -> Result<Vec<(AccountId, String, String)>>;

    /// The numbers whose consent changed at `since` or later, each with the scopes it is opted out in now (none:
    /// opted in), in one read.
    async fn consent_changed_since(&self, since: Timestamp) -> Result<Vec<(AccountId, String, Vec<String>)>>;

    /// A number's ledger for an account, oldest first.
    async fn consent_events(&self, account: AccountId, phone_hash: &str) -> Result<Vec<ConsentEvent>>;

    /// Forgets the number in clear in an account's ledger and opt-outs (the hashes stay, so an opt-out holds).
    async fn forget_phone(&self, account: AccountId, phone_hash: &str) -> Result<()>;
}

const EVENT_COLUMNS: &str = "id, account_id, phone_hash, phone, scope, change, source, evidence, at";

fn source_of(r: &Row) -> Result<Source> {
    let s: String = r.get("source")?;
    Source::parse(&s).ok_or_else(|| corrupt(format!("consent source {s:?}")))
}

fn event_of(r: &Row) -> Result<ConsentEvent> {
    let change: String = r.get("change")?;
    Ok(ConsentEvent {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        phone_hash: r.get("phone_hash")?,
        phone: r.get("phone")?,
        scope: r.get("scope")?,
        opted_out: match change.as_str() {
            "opt_out" => true,
            "opt_in" => false,
            _ => return Err(corrupt(format!("consent change {change:?}"))),
        },
        source: source_of(r)?,
        evidence: r.get("evidence")?,
        at: r.timestamp("at")?,
    })
}

fn opt_out_of(r: &Row) -> Result<OptOut> {
    Ok(OptOut {
        account_id: r.account_id("account_id")?,
        phone_hash: r.get("phone_hash")?,
        scope: r.get("scope")?,
        phone: r.get("phone")?,
        source: source_of(r)?,
        at: r.timestamp("at")?,
    })
}

/// A ledger row's values, in the order of `EVENT_COLUMNS`.
pub(crate) fn event_params(e: &ConsentEvent) -> Vec<Value> {
    values![
        &e.id,
        e.account_id,
        &e.phone_hash,
        e.phone.as_deref(),
        &e.scope,
        if e.opted_out { "opt_out" } else { "opt_in" },
        e.source.as_str(),
        &e.evidence,
        e.at,
    ]
}

/// The ledger's row for a change, then the statement that applies it to `opt_outs`.
fn consent_statements(e: &ConsentEvent) -> Vec<Statement> {
    let insert = Statement {
        sql: format!("INSERT INTO consent_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        params: event_params(e),
    };
    // The latest word wins: a change applies only if the ledger holds none made later (two keywords from one
    // person may be answered at once, in either order).
    let latest = "NOT EXISTS (SELECT 1 FROM consent_events l WHERE l.account_id = ? AND l.phone_hash = ? AND l.at > ?)";
    let apply = if e.opted_out {
        let mut params = values![e.account_id, &e.phone_hash, &e.scope, e.phone.as_deref(), e.source.as_str(), e.at];
        params.extend(values![e.account_id, &e.phone_hash, e.at]);
        Statement {
            sql: format!(
                "INSERT INTO opt_outs (account_id, phone_hash, scope, phone, source, at) \
                 SELECT ?, ?, ?, ?, ?, ? WHERE {latest} ON CONFLICT (account_id, phone_hash, scope) DO NOTHING"
            ),
            params,
        }
    } else if e.scope == "*" {
        Statement {
            sql: format!("DELETE FROM opt_outs WHERE account_id = ? AND phone_hash = ? AND {latest}"),
            params: values![e.account_id, &e.phone_hash, e.account_id, &e.phone_hash, e.at],
        }
    } else {
        Statement {
            sql: format!("DELETE FROM opt_outs WHERE account_id = ? AND phone_hash = ? AND scope = ? AND {latest}"),
            params: values![e.account_id, &e.phone_hash, &e.scope, e.account_id, &e.phone_hash, e.at],
        }
    };
    vec![insert, apply]
}

#[async_trait]
impl<D: Database> ConsentStore for D {
    async fn compliance(&self, account: AccountId) -> Result<Option<String>> {
        let row = self.query_one("SELECT compliance FROM accounts WHERE id = ?", values![account]).await?;
        Ok(match row {
            Some(r) => r.get("compliance")?,
            None => None,
        })
    }

    async fn all_compliance(&self) -> Result<Vec<(AccountId, String)>> {
        let rows = self.query("SELECT id, compliance FROM accounts WHERE compliance IS NOT NULL", Vec::new()).await?;
        rows.iter().map(|r| Ok((r.account_id("id")?, r.get("compliance")?))).collect()
    }

    async fn set_compliance(&self, account: AccountId, json: &str) -> Result<bool> {
        Ok(self.execute("UPDATE accounts SET compliance = ? WHERE id = ?", values![json, account]).await? == 1)
    }

    async fn record_consent(&self, e: &ConsentEvent) -> Result<bool> {
        let changed = self.transaction(consent_statements(e)).await?;
        Ok(changed.get(1).copied().unwrap_or(0) > 0)
    }

    async fn opt_out_scopes(&self, account: AccountId, phone_hash: &str) -> Result<Vec<String>> {
        let rows = self
            .query("SELECT scope FROM opt_outs WHERE account_id = ? AND phone_hash = ?", values![account, phone_hash])
            .await?;
        rows.iter().map(|r| r.get("scope")).collect()
    }

    async fn opt_outs(
        &self,
        account: AccountId,
        before: Option<(Timestamp, String)>,
        limit: u32,
    ) -> Result<Vec<OptOut>> {
        let mut sql =
            "SELECT account_id, phone_hash, scope, phone, source, at FROM opt_outs WHERE account_id = ?".to_string();
        let mut params: Vec<Value> = values![account];
        if let Some((at, hash)) = before {
            sql.push_str(" AND (at < ? OR (at = ? AND phone_hash < ?))");
            params.extend(values![at, at, hash]);
        }
        sql.push_str(&format!(" ORDER BY at DESC, phone_hash DESC LIMIT {limit}"));
        self.query(&sql, params).await?.iter().map(opt_out_of).collect()
    }

    async fn all_opt_outs(&self) -> Result<Vec<(AccountId, String, String)>> {
        let rows = self.query("SELECT account_id, phone_hash, scope FROM opt_outs", Vec::new()).await?;
        rows.iter().map(|r| Ok((r.account_id("account_id")?, r.get("phone_hash")?, r.get("scope")?))).collect()
    }

    async fn consent_changed_since(&self, since: Timestamp) -> Result<Vec<(AccountId, String, Vec<String>)>> {
        let rows = self
            .query(
                "SELECT c.account_id, c.phone_hash, o.scope FROM \
                 (SELECT DISTINCT account_id, phone_hash FROM consent_events WHERE at >= ?) c \
                 LEFT JOIN opt_outs o ON o.account_id = c.account_id AND o.phone_hash = c.phone_hash \
                 ORDER BY c.account_id, c.phone_hash",
                values![since],
            )
            .await?;
        let mut out: Vec<(AccountId, String, Vec<String>)> = Vec::new();
        for r in &rows {
            let (account, hash): (AccountId, String) = (r.account_id("account_id")?, r.get("phone_hash")?);
            let scope: Option<String> = r.get("scope")?;
            match out.last_mut() {
                Some((a, h, scopes)) if *a == account && *h == hash => scopes.extend(scope),
                _ => out.push((account, hash, scope.into_iter().collect())),
            }
        }
        Ok(out)
    }

    async fn consent_events(&self, account: AccountId, phone_hash: &str) -> Result<Vec<ConsentEvent>> {
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM consent_events WHERE account_id = ? AND phone_hash = ? ORDER BY id");
        self.query(&sql, values![account, phone_hash]).await?.iter().map(event_of).collect()
    }

    async fn forget_phone(&self, account: AccountId, phone_hash: &str) -> Result<()> {
        let statements = ["consent_events", "opt_outs"]
            .into_iter()
            .map(|table| Statement {
                sql: format!("UPDATE {table} SET phone = NULL WHERE account_id = ? AND phone_hash = ?"),
                params: values![account, phone_hash],
            })
            .collect();
        self.transaction(statements).await?;
        Ok(())
    }
}
