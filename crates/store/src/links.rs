//! Short links: a code per link per text, the URL it redirects to, and each visit. Cold-path SQL, written once
//! ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::sql::{Database, Row, Statement, Value, values};

/// One short link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub code: String,
    pub account_id: AccountId,
    pub url: String,
    pub message_id: Option<String>,
    pub contact_id: Option<String>,
    pub campaign_id: Option<String>,
    pub created_at: Timestamp,
}

/// One visit of a short link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub id: String,
    pub code: String,
    pub at: Timestamp,
    /// A link preview or a crawler, not a person.
    pub robot: bool,
    pub user_agent: Option<String>,
}

/// Short links and their clicks.
#[async_trait]
pub trait LinkStore: Send + Sync {
    /// The base URL an account's links are served at, if it set one.
    async fn link_base(&self, account: AccountId) -> Result<Option<String>>;

    /// Sets (or with `None` clears) an account's link base URL.
    async fn set_link_base(&self, account: AccountId, base: Option<&str>, now: Timestamp) -> Result<()>;

    /// Stores links (codes are random: one already taken is an error).
    async fn insert_links(&self, links: &[Link]) -> Result<()>;

    /// A link by its code.
    async fn link(&self, code: &str) -> Result<Option<Link>>;

    /// Records a visit.
    /// Records a visit and, in the same transaction, what it adds to the rollups (nothing for a robot's).
    async fn record_click(&self, click: &Click, counts: &crate::rollups::Rollups) -> Result<()>;

    /// The visits of a link, oldest first.
    async fn clicks(&self, code: &str) -> Result<Vec<Click>>;

    /// A campaign's clicks by people (not robots), and how many contacts clicked.
    async fn campaign_clicks(&self, campaign: &str) -> Result<(u64, u64)>;

    /// Deletes the links made for a contact (and their clicks); how many.
    async fn forget_links(&self, account: AccountId, contact: &str) -> Result<u64>;
}

const LINK_COLUMNS: &str = "code, account_id, url, message_id, contact_id, campaign_id, created_at";

fn link_of(r: &Row) -> Result<Link> {
    Ok(Link {
        code: r.get("code")?,
        account_id: r.account_id("account_id")?,
        url: r.get("url")?,
        message_id: r.get("message_id")?,
        contact_id: r.get("contact_id")?,
        campaign_id: r.get("campaign_id")?,
        created_at: r.timestamp("created_at")?,
    })
}

#[async_trait]
impl<D: Database> LinkStore for D {
    async fn link_base(&self, account: AccountId) -> Result<Option<String>> {
        let row = self.query_one("SELECT base_url FROM link_settings WHERE account_id = ?", values![account]).await?;
        row.map(|r| r.get("base_url")).transpose()
    }

    async fn set_link_base(&self, account: AccountId, base: Option<&str>, now: Timestamp) -> Result<()> {
        match base {
            Some(b) => {
                self.execute(
                    "INSERT INTO link_settings (account_id, base_url, updated_at) VALUES (?, ?, ?) \
                     ON CONFLICT (account_id) DO UPDATE SET base_url = excluded.base_url, \
                     updated_at = excluded.updated_at",
                    values![account, b, now],
                )
                .await?
            }
            None => self.execute("DELETE FROM link_settings WHERE account_id = ?", values![account]).await?,
        };
        Ok(())
    }

    async fn insert_links(&self, links: &[Link]) -> Result<()> {
        let mut statements = Vec::new();
        for chunk in links.chunks(500) {
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 7);
            for l in chunk {
                params.extend(values![
                    &l.code,
                    l.account_id,
                    &l.url,
                    l.message_id.as_deref(),
                    l.contact_id.as_deref(),
                    l.campaign_id.as_deref(),
                    l.created_at
                ]);
            }
            statements.push(Statement {
                sql: format!(
                    "INSERT INTO links ({LINK_COLUMNS}) VALUES {}",
                    vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
                ),
                params,
            });
        }
        if !statements.is_empty() {
            self.transaction(statements).await?;
        }
        Ok(())
    }

    async fn link(&self, code: &str) -> Result<Option<Link>> {
        let sql = format!("SELECT {LINK_COLUMNS} FROM links WHERE code = ?");
        self.query_one(&sql, values![code]).await?.as_ref().map(link_of).transpose()
    }

    async fn record_click(&self, c: &Click, counts: &crate::rollups::Rollups) -> Result<()> {
        let mut statements = vec![crate::sql::Statement {
            sql: "INSERT INTO link_clicks (id, code, at, robot, user_agent) VALUES (?, ?, ?, ?, ?)".into(),
            params: values![&c.id, &c.code, c.at, i64::from(c.robot), c.user_agent.as_deref()],
        }];
        statements.extend(crate::rollups::delta_statements(counts));
        self.transaction(statements).await?;
        Ok(())
    }

    async fn clicks(&self, code: &str) -> Result<Vec<Click>> {
        let rows = self
            .query(
                "SELECT id, code, at, robot, user_agent FROM link_clicks WHERE code = ? ORDER BY at, id",
                values![code],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Click {
                    id: r.get("id")?,
                    code: r.get("code")?,
                    at: r.timestamp("at")?,
                    robot: r.get::<i64>("robot")? != 0,
                    user_agent: r.get("user_agent")?,
                })
            })
            .collect()
    }

    async fn campaign_clicks(&self, campaign: &str) -> Result<(u64, u64)> {
        let row = self
            .query_one(
                "SELECT count(*) AS clicks, count(DISTINCT l.contact_id) AS people FROM link_clicks c \
                 JOIN links l ON l.code = c.code WHERE l.campaign_id = ? AND c.robot = 0",
                values![campaign],
            )
            .await?;
        match row {
            Some(r) => Ok((r.count("clicks")?, r.count("people")?)),
            None => Ok((0, 0)),
        }
    }

    async fn forget_links(&self, account: AccountId, contact: &str) -> Result<u64> {
        let n = self
            .transaction(vec![
                Statement {
                    sql: "DELETE FROM link_clicks WHERE code IN (SELECT code FROM links WHERE account_id = ? \
                          AND contact_id = ?)"
                        .into(),
                    params: values![account, contact],
                },
                Statement {
                    sql: "DELETE FROM links WHERE account_id = ? AND contact_id = ?".into(),
                    params: values![account, contact],
                },
            ])
            .await?;
        Ok(n.last().copied().unwrap_or(0))
    }
}
