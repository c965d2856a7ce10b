//! Campaigns, their runs and each run's recipients. A run's recipients are materialized (one row per contact, keyed
//! by run and contact) before any is sent, and each is settled with the id of the message it was sent, so a run
//! never sends a contact twice nor skips one. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Status, Timestamp};

use crate::Result;
use crate::sql::{Database, Row, Statement, Value, values};

/// A campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    /// What it sends to whom, JSON (the service's to read).
    pub spec: String,
    /// `draft`, `scheduled`, `running`, `paused`, `completed`, `canceled`.
    pub state: String,
    /// When a scheduled campaign starts its next run.
    pub next_run_at: Option<Timestamp>,
    /// Why it stopped on its own, JSON.
    pub error: Option<String>,
    /// Its run under way, or its last.
    pub current_run: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One sending of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub campaign_id: String,
    pub account_id: AccountId,
    /// `running`, `pausing`, `paused`, `canceling`, `canceled`, `completed`.
    pub state: String,
    /// Materializing: the audience source being read and the last contact id of it done.
    pub source: u32,
    pub source_cursor: Option<String>,
    pub materialized: bool,
    /// The next recipient's order number.
    pub next_seq: i64,
    /// Contacts the sources named more than once.
    pub duplicates: u64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

impl Run {
    /// A run of `campaign` starting at `now`: `running`, its audience not read yet.
    pub fn new(id: String, campaign: &Campaign, now: Timestamp) -> Run {
        Run {
            id,
            campaign_id: campaign.id.clone(),
            account_id: campaign.account_id,
            state: "running".into(),
            source: 0,
            source_cursor: None,
            materialized: false,
            next_seq: 0,
            duplicates: 0,
            lease_owner: None,
            lease_until: None,
            started_at: now,
            finished_at: None,
            updated_at: now,
        }
    }
}

/// One recipient of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub contact_id: String,
    pub seq: i64,
    /// `pending`, `queued`, `skipped`, `held`, `canceled`.
    pub state: String,
    pub reason: Option<String>,
    pub attempt: i64,
    pub message_id: Option<String>,
    pub sender: Option<String>,
}

/// One line of a campaign's report: a recipient of a run, its contact and what became of its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub run_id: String,
    pub seq: i64,
    pub contact_id: String,
    /// `None` once the contact was deleted.
    pub phone: Option<String>,
    pub name: Option<String>,
    pub state: String,
    pub reason: Option<String>,
    pub sender: Option<String>,
    pub message_id: Option<String>,
    pub status: Option<Status>,
    pub error_code: Option<String>,
    pub price_micros: Option<i64>,
    pub updated_at: Option<Timestamp>,
    /// Visits of the text's short links by people.
    pub clicks: u64,
}

/// How many recipients are in a state, for a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientCount {
    pub state: String,
    pub reason: Option<String>,
    pub count: u64,
}

/// How many of a campaign's messages have a status, and what they cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageCount {
    pub status: Status,
    pub count: u64,
    pub price_micros: i64,
}

/// Campaigns.
#[async_trait]
pub trait CampaignStore: Send + Sync {
    async fn insert_campaign(&self, campaign: &Campaign) -> Result<()>;

    /// An account's campaign by id.
    async fn campaign(&self, account: AccountId, id: &str) -> Result<Option<Campaign>>;

    /// An account's campaigns by id (oldest first), after `cursor`, at most `limit`.
    async fn campaigns(&self, account: AccountId, cursor: Option<&str>, limit: u32) -> Result<Vec<Campaign>>;

    /// Writes a campaign's name, spec, state, next run, error and current run if its state is still `expected`;
    /// whether it was.
    async fn save_campaign(&self, campaign: &Campaign, expected: &str) -> Result<bool>;

    /// Deletes an account's campaign with its runs and recipients; false if there was none.
    async fn delete_campaign(&self, account: AccountId, id: &str) -> Result<bool>;

    /// Scheduled campaigns whose next run is due.
    async fn due_campaigns(&self, now: Timestamp, limit: u32) -> Result<Vec<Campaign>>;

    /// Starts `run` of `campaign` if the campaign is still in state `expected`: the campaign becomes `campaign`
    /// (its state, next run and `current_run` = the run) and the run is stored, in one transaction. False when
    /// another caller (another node) started it first.
    async fn start_run(&self, campaign: &Campaign, expected: &str, run: &Run) -> Result<bool>;

    /// A run by id.
    async fn run(&self, id: &str) -> Result<Option<Run>>;

    /// A campaign's runs, oldest first.
    async fn runs(&self, campaign: &str) -> Result<Vec<Run>>;

    /// Runs some node has work to do on (`running`, `pausing`, `canceling`).
    async fn active_runs(&self) -> Result<Vec<Run>>;

    /// Takes (or renews) the lease on a run for `owner` until `until`, unless another node holds one that has not
    /// run out at `now`; whether `owner` holds it.
    async fn lease_run(&self, id: &str, owner: &str, now: Timestamp, until: Timestamp) -> Result<bool>;

    /// Saves a run's state and progress, and with `campaign` its campaign's state, in one transaction.
    async fn save_run(&self, run: &Run, campaign: Option<&Campaign>) -> Result<()>;

    /// Adds contacts to a run's recipients (`pending`, in the order given, from `run.next_seq`; one already there
    /// is counted as a duplicate) and saves the run's materializing progress after them, in one transaction. The
    /// run as saved.
    async fn add_recipients(&self, run: &Run, contacts: &[String]) -> Result<Run>;

    /// A run's recipients in one of `states`, in order, after order number `after`, at most `limit`.
    async fn recipients(&self, run: &str, states: &[&str], after: i64, limit: u32) -> Result<Vec<Recipient>>;

    /// Writes recipients' state, reason, attempt, message and sender (by run and contact).
    async fn settle_recipients(&self, run: &str, recipients: &[Recipient]) -> Result<()>;

    /// Sets every recipient of a run in state `from` to `to` with `reason`; how many.
    async fn move_recipients(&self, run: &str, from: &str, to: &str, reason: Option<&str>) -> Result<u64>;

    /// How many recipients of the runs of a campaign (or of one run) are in each state, for each reason.
    async fn recipient_counts(&self, campaign: &str, run: Option<&str>) -> Result<Vec<RecipientCount>>;

    /// How many messages a campaign made have each status, and what they cost (replies to it are `received`).
    async fn campaign_messages(&self, campaign: &str) -> Result<Vec<MessageCount>>;

    /// A page of a run's report, in order, after order number `after`.
    async fn report(&self, run: &str, after: i64, limit: u32) -> Result<Vec<ReportRow>>;

    /// Marks a consent change as answering a campaign.
    async fn attribute_consent(&self, event: &str, campaign: &str) -> Result<()>;

    /// How many numbers opted out answering a campaign.
    async fn campaign_opt_outs(&self, campaign: &str) -> Result<u64>;
}

const CAMPAIGN_COLUMNS: &str =
    "id, account_id, name, spec, state, next_run_at, error, current_run, created_at, updated_at";
const RUN_COLUMNS: &str = "id, campaign_id, account_id, state, source, source_cursor, materialized, next_seq, \
     duplicates, lease_owner, lease_until, started_at, finished_at, updated_at";
const RECIPIENT_COLUMNS: &str = "contact_id, seq, state, reason, attempt, message_id, sender";

/// Rows a multi-row statement writes at most.
const ROWS: usize = 500;

fn campaign_of(r: &Row) -> Result<Campaign> {
    Ok(Campaign {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        name: r.get("name")?,
        spec: r.get("spec")?,
        state: r.get("state")?,
        next_run_at: r.get::<Option<i64>>("next_run_at")?.map(Timestamp),
        error: r.get("error")?,
        current_run: r.get("current_run")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

fn run_of(r: &Row) -> Result<Run> {
    Ok(Run {
        id: r.get("id")?,
        campaign_id: r.get("campaign_id")?,
        account_id: r.account_id("account_id")?,
        state: r.get("state")?,
        source: u32::try_from(r.get::<i64>("source")?).unwrap_or(u32::MAX),
        source_cursor: r.get("source_cursor")?,
        materialized: r.get::<i64>("materialized")? != 0,
        next_seq: r.get("next_seq")?,
        duplicates: r.count("duplicates")?,
        lease_owner: r.get("lease_owner")?,
        lease_until: r.get::<Option<i64>>("lease_until")?.map(Timestamp),
        started_at: r.timestamp("started_at")?,
        finished_at: r.get::<Option<i64>>("finished_at")?.map(Timestamp),
        updated_at: r.timestamp("updated_at")?,
    })
}

fn recipient_of(r: &Row) -> Result<Recipient> {
    Ok(Recipient {
        contact_id: r.get("contact_id")?,
        seq: r.get("seq")?,
        state: r.get("state")?,
        reason: r.get("reason")?,
        attempt: r.get("attempt")?,
        message_id: r.get("message_id")?,
        sender: r.get("sender")?,
    })
}

fn save_run_statement(run: &Run) -> Statement {
    Statement {
        sql: "UPDATE campaign_runs SET state = ?, source = ?, source_cursor = ?, materialized = ?, next_seq = ?, \
              duplicates = ?, finished_at = ?, updated_at = ? WHERE id = ?"
            .into(),
        params: values![
            &run.state,
            i64::from(run.source),
            run.source_cursor.as_deref(),
            i64::from(run.materialized),
            run.next_seq,
            run.duplicates,
            run.finished_at.map(|t| t.0),
            run.updated_at,
            &run.id
        ],
    }
}

/// The statement that writes a campaign, if its state is still `expected` (whatever it is, without one).
fn save_campaign_statement(c: &Campaign, expected: Option<&str>) -> Statement {
    let mut params = values![
        &c.name,
        &c.spec,
        &c.state,
        c.next_run_at.map(|t| t.0),
        c.error.as_deref(),
        c.current_run.as_deref(),
        c.updated_at,
        &c.id,
        c.account_id
    ];
    let mut sql = "UPDATE campaigns SET name = ?, spec = ?, state = ?, next_run_at = ?, error = ?, current_run = ?, \
                   updated_at = ? WHERE id = ? AND account_id = ?"
        .to_string();
    if let Some(state) = expected {
        sql.push_str(" AND state = ?");
        params.push(Value::from(state));
    }
    Statement { sql, params }
}

#[async_trait]
impl<D: Database> CampaignStore for D {
    async fn insert_campaign(&self, c: &Campaign) -> Result<()> {
        self.execute(
            &format!("INSERT INTO campaigns ({CAMPAIGN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            values![
                &c.id,
                c.account_id,
                &c.name,
                &c.spec,
                &c.state,
                c.next_run_at.map(|t| t.0),
                c.error.as_deref(),
                c.current_run.as_deref(),
                c.created_at,
                c.updated_at
            ],
        )
        .await?;
        Ok(())
    }

    async fn campaign(&self, account: AccountId, id: &str) -> Result<Option<Campaign>> {
        let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(campaign_of).transpose()
    }

    async fn campaigns(&self, account: AccountId, cursor: Option<&str>, limit: u32) -> Result<Vec<Campaign>> {
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE account_id = ? AND id > ? ORDER BY id LIMIT {limit}"
        );
        self.query(&sql, values![account, cursor.unwrap_or("")]).await?.iter().map(campaign_of).collect()
    }

    async fn save_campaign(&self, c: &Campaign, expected: &str) -> Result<bool> {
        let s = save_campaign_statement(c, Some(expected));
        Ok(self.execute(&s.sql, s.params).await? == 1)
    }

    async fn delete_campaign(&self, account: AccountId, id: &str) -> Result<bool> {
        let sub = "(SELECT id FROM campaign_runs WHERE campaign_id = ? AND account_id = ?)";
        let n = self
            .transaction(vec![
                Statement {
                    sql: format!("DELETE FROM campaign_recipients WHERE run_id IN {sub}"),
                    params: values![id, account],
                },
                Statement {
                    sql: "DELETE FROM campaign_runs WHERE campaign_id = ? AND account_id = ?".into(),
                    params: values![id, account],
                },
                Statement {
                    sql: "DELETE FROM campaign_archive WHERE campaign_id = \
                          (SELECT id FROM campaigns WHERE id = ? AND account_id = ?)"
                        .into(),
                    params: values![id, account],
                },
                Statement {
                    sql: "DELETE FROM campaigns WHERE id = ? AND account_id = ?".into(),
                    params: values![id, account],
                },
            ])
            .await?;
        Ok(n.last() == Some(&1))
    }

    async fn due_campaigns(&self, now: Timestamp, limit: u32) -> Result<Vec<Campaign>> {
        let sql = format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE next_run_at IS NOT NULL AND next_run_at <= ? \
             AND state = 'scheduled' ORDER BY next_run_at LIMIT {limit}"
        );
        self.query(&sql, values![now]).await?.iter().map(campaign_of).collect()
    }

    async fn start_run(&self, c: &Campaign, expected: &str, run: &Run) -> Result<bool> {
        // The campaign first: a second caller's update waits for the first's commit, then finds the state moved
        // on, and its run is not inserted because the campaign's current run is not it.
        let mark = Statement {
            sql: "UPDATE campaigns SET state = ?, next_run_at = ?, error = NULL, current_run = ?, updated_at = ? \
                  WHERE id = ? AND account_id = ? AND state = ? AND (next_run_at IS NULL OR next_run_at <= ?)"
                .into(),
            params: values![
                &c.state,
                c.next_run_at.map(|t| t.0),
                &run.id,
                c.updated_at,
                &c.id,
                c.account_id,
                expected,
                run.started_at
            ],
        };
        let insert = Statement {
            sql: format!(
                "INSERT INTO campaign_runs ({RUN_COLUMNS}) SELECT ?, ?, ?, ?, 0, NULL, 0, 0, 0, NULL, NULL, ?, NULL, ? \
                 WHERE EXISTS (SELECT 1 FROM campaigns WHERE id = ? AND current_run = ?)"
            ),
            params: values![
                &run.id,
                &run.campaign_id,
                run.account_id,
                &run.state,
                run.started_at,
                run.updated_at,
                &c.id,
                &run.id
            ],
        };
        let n = self.transaction(vec![mark, insert]).await?;
        Ok(n.last() == Some(&1))
    }

    async fn run(&self, id: &str) -> Result<Option<Run>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM campaign_runs WHERE id = ?");
        self.query_one(&sql, values![id]).await?.as_ref().map(run_of).transpose()
    }

    async fn runs(&self, campaign: &str) -> Result<Vec<Run>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM campaign_runs WHERE campaign_id = ? ORDER BY id");
        self.query(&sql, values![campaign]).await?.iter().map(run_of).collect()
    }

    async fn active_runs(&self) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM campaign_runs WHERE state IN ('running', 'pausing', 'canceling') ORDER BY id"
        );
        self.query(&sql, Vec::new()).await?.iter().map(run_of).collect()
    }

    async fn lease_run(&self, id: &str, owner: &str, now: Timestamp, until: Timestamp) -> Result<bool> {
        let n = self.execute(
            "UPDATE campaign_runs SET lease_owner = ?, lease_until = ? WHERE id = ? \
             AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)",
            values![owner, until, id, owner, now],
        );
        Ok(n.await? == 1)
    }

    async fn save_run(&self, run: &Run, campaign: Option<&Campaign>) -> Result<()> {
        let mut statements = vec![save_run_statement(run)];
        if let Some(c) = campaign {
            // Whatever state it was in: the run decides.
            statements.push(save_campaign_statement(c, None));
        }
        self.transaction(statements).await?;
        Ok(())
    }

    async fn add_recipients(&self, run: &Run, contacts: &[String]) -> Result<Run> {
        let mut run = run.clone();
        let first = run.next_seq;
        let mut statements = Vec::new();
        for (i, chunk) in contacts.chunks(ROWS).enumerate() {
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 3);
            for (j, contact) in chunk.iter().enumerate() {
                let seq = first + i64::try_from(i * ROWS + j).unwrap_or(i64::MAX);
                params.extend(values![&run.id, contact, seq]);
            }
            statements.push(Statement {
                sql: format!(
                    "INSERT INTO campaign_recipients (run_id, contact_id, seq, state, attempt) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    vec!["(?, ?, ?, 'pending', 0)"; chunk.len()].join(", ")
                ),
                params,
            });
        }
        run.next_seq = first + i64::try_from(contacts.len()).unwrap_or(i64::MAX);
        // The duplicates are the batch's contacts that were not inserted, counted after the inserts (all of them
        // pending: by state too, so that the count reads the batch's entries of the index and not the run's).
        statements.push(Statement {
            sql: "UPDATE campaign_runs SET source = ?, source_cursor = ?, materialized = ?, next_seq = ?, \
                  duplicates = duplicates + ? - (SELECT count(*) FROM campaign_recipients WHERE run_id = ? \
                  AND state = 'pending' AND seq >= ? AND seq < ?), updated_at = ? WHERE id = ?"
                .into(),
            params: values![
                i64::from(run.source),
                run.source_cursor.as_deref(),
                i64::from(run.materialized),
                run.next_seq,
                i64::try_from(contacts.len()).unwrap_or(i64::MAX),
                &run.id,
                first,
                run.next_seq,
                run.updated_at,
                &run.id
            ],
        });
        self.transaction(statements).await?;
        let saved = CampaignStore::run(self, &run.id).await?;
        Ok(saved.unwrap_or(run))
    }

    async fn recipients(&self, run: &str, states: &[&str], after: i64, limit: u32) -> Result<Vec<Recipient>> {
        let sql = format!(
            "SELECT {RECIPIENT_COLUMNS} FROM campaign_recipients WHERE run_id = ? AND state IN ({}) AND seq > ? \
             ORDER BY seq LIMIT {limit}",
            vec!["?"; states.len()].join(", ")
        );
        let mut params = values![run];
        params.extend(states.iter().map(|s| Value::from(*s)));
        params.push(Value::from(after));
        self.query(&sql, params).await?.iter().map(recipient_of).collect()
    }

    async fn settle_recipients(&self, run: &str, recipients: &[Recipient]) -> Result<()> {
        let mut statements = Vec::new();
        for chunk in recipients.chunks(ROWS) {
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 6 + 1);
            for r in chunk {
                params.extend(values![
                    &r.contact_id,
                    &r.state,
                    r.reason.as_deref(),
                    r.attempt,
                    r.message_id.as_deref(),
                    r.sender.as_deref()
                ]);
            }
            params.push(Value::from(run));
            statements.push(Statement {
                sql: format!(
                    "UPDATE campaign_recipients SET state = v.column2, reason = v.column3, attempt = v.column4, \
                     message_id = v.column5, sender = v.column6 FROM (VALUES {}) AS v \
                     WHERE campaign_recipients.run_id = ? AND campaign_recipients.contact_id = v.column1",
                    vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
                ),
                params,
            });
        }
        if !statements.is_empty() {
            self.transaction(statements).await?;
        }
        Ok(())
    }

    async fn move_recipients(&self, run: &str, from: &str, to: &str, reason: Option<&str>) -> Result<u64> {
        self.execute(
            "UPDATE campaign_recipients SET state = ?, reason = ? WHERE run_id = ? AND state = ?",
            values![to, reason, run, from],
        )
        .await
    }

    async fn recipient_counts(&self, campaign: &str, run: Option<&str>) -> Result<Vec<RecipientCount>> {
        let (filter, key) = match run {
            Some(r) => ("run_id = ?", r),
            None => ("run_id IN (SELECT id FROM campaign_runs WHERE campaign_id = ?)", campaign),
        };
        let sql = format!(
            "SELECT state, reason, count(*) AS n FROM campaign_recipients WHERE {filter} GROUP BY state, reason \
             ORDER BY state, reason"
        );
        let rows = self.query(&sql, values![key]).await?;
        rows.iter()
            .map(|r| Ok(RecipientCount { state: r.get("state")?, reason: r.get("reason")?, count: r.count("n")? }))
            .collect()
    }

    async fn report(&self, run: &str, after: i64, limit: u32) -> Result<Vec<ReportRow>> {
        let sql = format!(
            "SELECT r.run_id, r.seq, r.contact_id, c.phone, c.name, r.state, r.reason, r.sender, r.message_id, \
             m.status, m.error_code, m.price_micros, m.updated_at, \
             (SELECT count(*) FROM links l JOIN link_clicks k ON k.code = l.code \
              WHERE l.message_id = r.message_id AND k.robot = 0) AS clicks \
             FROM campaign_recipients r LEFT JOIN contacts c ON c.id = r.contact_id \
             LEFT JOIN messages m ON m.id = r.message_id \
             WHERE r.run_id = ? AND r.seq > ? ORDER BY r.seq LIMIT {limit}"
        );
        let rows = self.query(&sql, values![run, after]).await?;
        rows.iter()
            .map(|r| {
                let status: Option<String> = r.get("status")?;
                Ok(ReportRow {
                    run_id: r.get("run_id")?,
                    seq: r.get("seq")?,
                    contact_id: r.get("contact_id")?,
                    phone: r.get("phone")?,
                    name: r.get("name")?,
                    state: r.get("state")?,
                    reason: r.get("reason")?,
                    sender: r.get("sender")?,
                    message_id: r.get("message_id")?,
                    status: status.as_deref().map(crate::schema::status_of).transpose()?,
                    error_code: r.get("error_code")?,
                    price_micros: r.get("price_micros")?,
                    updated_at: r.get::<Option<i64>>("updated_at")?.map(Timestamp),
                    clicks: r.count("clicks")?,
                })
            })
            .collect()
    }

    async fn attribute_consent(&self, event: &str, campaign: &str) -> Result<()> {
        self.execute("UPDATE consent_events SET campaign_id = ? WHERE id = ?", values![campaign, event]).await?;
        Ok(())
    }

    async fn campaign_opt_outs(&self, campaign: &str) -> Result<u64> {
        let row = self
            .query_one(
                "SELECT count(*) AS n FROM consent_events WHERE campaign_id = ? AND change = 'opt_out'",
                values![campaign],
            )
            .await?;
        row.map_or(Ok(0), |r| r.count("n"))
    }

    async fn campaign_messages(&self, campaign: &str) -> Result<Vec<MessageCount>> {
        let rows = self
            .query(
                // The texts kept, and those the history sweep deleted (counted as they went).
                "SELECT status, CAST(sum(n) AS BIGINT) AS n, CAST(sum(price) AS BIGINT) AS price FROM ( \
                 SELECT status, count(*) AS n, CAST(coalesce(sum(price_micros), 0) AS BIGINT) AS price FROM messages \
                 WHERE campaign_id = ? GROUP BY status \
                 UNION ALL SELECT status, n, price_micros AS price FROM campaign_archive WHERE campaign_id = ?) AS t \
                 GROUP BY status ORDER BY status",
                values![campaign, campaign],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MessageCount { status: r.status("status")?, count: r.count("n")?, price_micros: r.get("price")? })
            })
            .collect()
    }
}
