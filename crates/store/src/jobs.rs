//! Jobs: long work done in the background (CSV imports), with their progress kept so that a restart resumes them
//! where the last committed batch ended. Cold-path SQL, written once ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, Timestamp};

use crate::Result;
use crate::consent::{ConsentEvent, consent_statements};
use crate::contacts::{Contact, upsert_plan};
use crate::sql::{Database, Row, Statement, values};

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

    /// Stores one batch of an import and the job's progress after it, in one transaction: the contacts (as
    /// [`crate::ContactStore::upsert_contacts`]), their membership of `list`, and the consent events. For each
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

fn count(r: &Row, column: &str) -> Result<u64> {
    Ok(u64::try_from(r.get::<i64>(column)?).unwrap_or(0))
}

fn job_of(r: &Row) -> Result<Job> {
    Ok(Job {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        kind: r.get("kind")?,
        state: r.get("state")?,
        spec: r.get("spec")?,
        rows: count(r, "rows_read")?,
        created: count(r, "created")?,
        updated: count(r, "updated")?,
        skipped: count(r, "skipped")?,
        next_offset: count(r, "next_offset")?,
        errors: r.get("errors")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
                int(j.rows),
                int(j.created),
                int(j.updated),
                int(j.skipped),
                int(j.next_offset),
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
        for (what, _) in &out {
            match what {
                Some(true) => job.created += 1,
                Some(false) => job.updated += 1,
                None => job.skipped += 1,
            }
        }
        if let Some(list) = &batch.list {
            for c in &batch.contacts {
                statements.push(Statement {
                    sql: "INSERT INTO list_members (list_id, contact_id, added_at) \
                          SELECT ?, id, ? FROM contacts WHERE account_id = ? AND phone = ? ON CONFLICT DO NOTHING"
                        .into(),
                    params: values![list, job.updated_at, c.account_id, &c.phone],
                });
            }
        }
        for e in &batch.consent {
            statements.extend(consent_statements(e));
        }
        statements.push(progress(&job));
        self.transaction(statements).await?;
        Ok(job)
    }
}

/// The statement that saves a job's progress.
fn progress(j: &Job) -> Statement {
    Statement {
        sql: "UPDATE jobs SET state = ?, rows_read = ?, created = ?, updated = ?, skipped = ?, next_offset = ?, \
                  errors = ?, updated_at = ? WHERE id = ?"
            .into(),
        params: values![
            &j.state,
            int(j.rows),
            int(j.created),
            int(j.updated),
            int(j.skipped),
            int(j.next_offset),
            &j.errors,
            j.updated_at,
            &j.id
        ],
    }
}
