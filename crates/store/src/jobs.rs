//! Jobs: long work done in the background (CSV imports), with their progress kept so that a restart resumes them
//! where the last committed batch ended. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::consent::{ConsentEvent, event_params};
use crate::contacts::{Contact, upsert_plan};
use crate::sql::{Database, Row, Statement, Value, values};

/// A job and its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub account_id: AccountId,
    /// `import`.
    pub kind: String,
    /// `running`, `completed` or `failed`.
    pub state: String,
    /// What it works on, JSON.
    pub spec: String,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    /// Where the next row starts (bytes into the file).
    pub next_offset: u64,
    /// JSON array of the first errors.
    pub errors: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Background jobs.
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn insert_job(&self, job: &Job) -> Result<()>;

    /// An account's job by id.
    async fn job(&self, account: AccountId, id: &str) -> Result<Option<Job>>;

    /// Every job still `running` (to resume at start).
    async fn running_jobs(&self) -> Result<Vec<Job>>;

    /// Saves a job's progress and state; with `with`, statements that commit in the same transaction (the batch
    /// of contacts the progress counts), so progress and work are never apart.
    async fn save_job(&self, job: &Job) -> Result<()>;

    /// Stores one batch of an import and the job's progress after it, in one transaction: the contacts (new ones
    /// created; existing ones updated when `update`, else left alone), their membership of `list`, and the opt-ins
    /// the rows carry (not for a number opted out: an import never lifts an opt-out). For each
    /// The job as saved: `job`'s progress plus the batch's contacts counted as created, updated, or (left alone)
    /// skipped.
    async fn import_batch(&self, job: &Job, batch: &ImportBatch) -> Result<Job>;
}

/// One batch of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportBatch {
    pub contacts: Vec<Contact>,
    /// Update the contacts whose number exists (else leave them alone).
    pub update: bool,
    /// Add every contact of the batch to this list (an id of the job's account).
    pub list: Option<String>,
    /// Consent the rows carry.
    pub consent: Vec<ConsentEvent>,
}

const COLUMNS: &str = "id, account_id, kind, state, spec, rows_read, created, updated, skipped, next_offset, errors, \
     created_at, updated_at";

fn job_of(r: &Row) -> Result<Job> {
    Ok(Job {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        kind: r.get("kind")?,
        state: r.get("state")?,
        spec: r.get("spec")?,
        rows: r.count("rows_read")?,
        created: r.count("created")?,
        updated: r.count("updated")?,
        skipped: r.count("skipped")?,
        next_offset: r.count("next_offset")?,
        errors: r.get("errors")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

#[async_trait]
impl<D: Database> JobStore for D {
    async fn insert_job(&self, j: &Job) -> Result<()> {
        self.execute(
            &format!("INSERT INTO jobs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            values![
                &j.id,
                j.account_id,
                &j.kind,
                &j.state,
                &j.spec,
                j.rows,
                j.created,
                j.updated,
                j.skipped,
                j.next_offset,
                &j.errors,
                j.created_at,
                j.updated_at
            ],
        )
        .await?;
        Ok(())
    }

    async fn job(&self, account: AccountId, id: &str) -> Result<Option<Job>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(job_of).transpose()
    }

    async fn running_jobs(&self) -> Result<Vec<Job>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE state = 'running' ORDER BY id");
        self.query(&sql, Vec::new()).await?.iter().map(job_of).collect()
    }

    async fn save_job(&self, j: &Job) -> Result<()> {
        self.transaction(vec![progress(j)]).await?;
        Ok(())
    }

    async fn import_batch(&self, job: &Job, batch: &ImportBatch) -> Result<Job> {
        let (mut statements, out) = upsert_plan(self, &batch.contacts, batch.update).await?;
        let mut job = job.clone();
        for what in &out {
            match what {
                Some(true) => job.created += 1,
                Some(false) => job.updated += 1,
                None => job.skipped += 1,
            }
        }
        if let (Some(list), Some(first)) = (&batch.list, batch.contacts.first()) {
            for chunk in batch.contacts.chunks(500) {
                let mut params = values![list, job.updated_at, first.account_id];
                params.extend(chunk.iter().map(|c| Value::from(&c.phone)));
                statements.push(Statement {
                    sql: format!(
                        "INSERT INTO list_members (list_id, contact_id, added_at) SELECT ?, id, ? FROM contacts \
                         WHERE account_id = ? AND phone IN ({}) ON CONFLICT DO NOTHING",
                        vec!["?"; chunk.len()].join(", ")
                    ),
                    params,
                });
            }
        }
        statements.extend(consent_in(&batch.consent));
        statements.push(progress(&job));
        self.transaction(statements).await?;
        Ok(job)
    }
}

/// Multi-row statements that keep the opt-ins an import's rows carry in the ledger — except for numbers opted out
/// now: an import never lifts an opt-out (only the person, or the operator, does), and the ledger says only what
/// happened. The opt-ins change no state (a number not opted out is opted in).
fn consent_in(events: &[ConsentEvent]) -> Vec<Statement> {
    let mut out = Vec::new();
    for chunk in events.chunks(500) {
        let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 9);
        for e in chunk {
            params.extend(event_params(e));
        }
        out.push(Statement {
            sql: format!(
                "INSERT INTO consent_events (id, account_id, phone_hash, phone, scope, change, source, evidence, at) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, \
                 v.column9 FROM (VALUES {}) AS v WHERE NOT EXISTS (SELECT 1 FROM opt_outs o \
                 WHERE o.account_id = v.column2 AND o.phone_hash = v.column3)",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            ),
            params,
        });
    }
    out
}

/// The statement that saves a job's progress.
fn progress(j: &Job) -> Statement {
    Statement {
        sql: "UPDATE jobs SET state = ?, rows_read = ?, created = ?, updated = ?, skipped = ?, next_offset = ?, \
                  errors = ?, updated_at = ? WHERE id = ?"
            .into(),
        params: values![
            &j.state,
            j.rows,
            j.created,
            j.updated,
            j.skipped,
            j.next_offset,
            &j.errors,
            j.updated_at,
            &j.id
        ],
    }
}
