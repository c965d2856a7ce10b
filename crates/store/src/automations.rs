//! Automations, each contact's runs through them, the events accounts send, and the inbound messages automations
//! have yet to read. A run is keyed by its automation and what triggered it, so a trigger seen twice (an event sent
//! again, an inbound message read again after a crash) starts nothing new. Cold-path SQL, written once
//! ([`Database`]).

use async_trait::async_trait;
use smsgate_core::{AccountId, MessageId, Timestamp};

use crate::Result;
use crate::contacts::{CONTACT_COLUMNS, Contact, contact_of};
use crate::sql::{Database, Row, Statement, Value, values};

/// An automation: a trigger and the steps a contact takes when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automation {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    /// Its trigger and steps, JSON (the service's to read).
    pub spec: String,
    /// Its trigger's type: `keyword`, `event`, `date_field`, `schedule`.
    pub trigger_type: String,
    pub enabled: bool,
    /// A schedule trigger's next firing.
    pub next_run_at: Option<Timestamp>,
    /// A date-field trigger on contacts: how far the changed contacts were read.
    pub cursor: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One contact's way through an automation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomationRun {
    pub id: String,
    pub automation_id: String,
    pub account_id: AccountId,
    pub contact_id: String,
    /// What started it, unique per automation.
    pub trigger_key: String,
    /// What later events name a date trigger's run by; `""` for the contact's only one.
    pub subject: String,
    /// `active`, `waiting`, `completed`, `canceled`, `failed`.
    pub state: String,
    /// The next step's path in the steps.
    pub position: String,
    pub due_at: Option<Timestamp>,
    /// Waiting for a reply: from the contact's number, to one of ours.
    pub reply_from: Option<String>,
    pub reply_to: Option<String>,
    /// The trigger's data, JSON.
    pub data: String,
    /// The last reply's text.
    pub reply: Option<String>,
    /// Each step taken, a JSON array.
    pub log: String,
    pub error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An event an account sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    pub contact_id: String,
    /// JSON.
    pub data: String,
    pub idempotency_key: String,
    /// What it did, JSON.
    pub outcome: String,
    pub created_at: Timestamp,
}

/// An inbound message automations have not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundText {
    pub id: MessageId,
    pub account_id: AccountId,
    /// The handset's number.
    pub from: String,
    /// Ours.
    pub to: String,
    pub body: String,
    pub at: Timestamp,
}

/// Automations and their runs.
#[async_trait]
pub trait AutomationStore: Send + Sync {
    async fn insert_automation(&self, a: &Automation) -> Result<()>;

    /// An account's automation by id.
    async fn automation(&self, account: AccountId, id: &str) -> Result<Option<Automation>>;

    /// An account's automations by id, after `cursor`, at most `limit`.
    async fn automations(&self, account: AccountId, cursor: Option<&str>, limit: u32) -> Result<Vec<Automation>>;

    /// An account's enabled automations (for matching a trigger).
    async fn enabled_automations(&self, account: AccountId) -> Result<Vec<Automation>>;

    /// Enabled automations of every account with a trigger of this type, for the worker's sweeps.
    async fn enabled_automations_of(&self, trigger_type: &str) -> Result<Vec<Automation>>;

    /// Writes an automation's name, spec, enabled, next run and cursor; false if there is none.
    async fn save_automation(&self, a: &Automation) -> Result<bool>;

    /// Moves a schedule trigger's next firing from `expected` to `next` (one caller wins); whether this one did.
    async fn advance_automation(&self, id: &str, expected: Timestamp, next: Option<Timestamp>) -> Result<bool>;

    /// Deletes an account's automation with its runs; false if there was none.
    async fn delete_automation(&self, account: AccountId, id: &str) -> Result<bool>;

    /// Enabled automations with a schedule due.
    async fn due_automations(&self, now: Timestamp, limit: u32) -> Result<Vec<Automation>>;

    /// Stores runs, each unless its automation already has one with its trigger key; whether each was new.
    async fn insert_automation_runs(&self, runs: &[AutomationRun]) -> Result<Vec<bool>>;

    /// A run by id.
    async fn automation_run(&self, id: &str) -> Result<Option<AutomationRun>>;

    /// An automation's runs by id (oldest first), of one contact if given, after `cursor`, at most `limit`.
    async fn automation_runs(
        &self,
        automation: &str,
        contact: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AutomationRun>>;

    /// An automation's runs under way (`active` or `waiting`) for a contact and subject.
    async fn open_runs(&self, automation: &str, contact: &str, subject: &str) -> Result<Vec<AutomationRun>>;

    /// Runs due (`active` or `waiting` with `due_at` past) whose lease is free, oldest due first.
    async fn due_automation_runs(&self, now: Timestamp, limit: u32) -> Result<Vec<AutomationRun>>;

    /// Runs of an account waiting for a reply from `from`.
    async fn runs_awaiting_reply(&self, account: AccountId, from: &str) -> Result<Vec<AutomationRun>>;

    /// Takes the lease on a run for `owner` until `until` unless another node holds one at `now`; whether it did.
    async fn lease_automation_run(&self, id: &str, owner: &str, now: Timestamp, until: Timestamp) -> Result<bool>;

    /// Writes a run's state, position, due time, reply, log and error if its state is still `expected` (and
    /// frees its lease); whether it was.
    async fn save_automation_run(&self, run: &AutomationRun, expected: &str) -> Result<bool>;

    /// How many runs of an automation are in each state.
    async fn automation_run_counts(&self, automation: &str) -> Result<Vec<(String, u64)>>;

    /// Stores an event unless the account sent one with its idempotency key; the one stored with that key.
    async fn insert_event(&self, event: &EventRecord) -> Result<EventRecord>;

    /// Writes what an event did.
    async fn set_event_outcome(&self, id: &str, outcome: &str) -> Result<()>;

    /// Inbound messages automations have not read, oldest first.
    async fn unautomated_inbound(&self, limit: u32) -> Result<Vec<InboundText>>;

    /// Marks inbound messages read by automations.
    async fn mark_automated(&self, ids: &[MessageId], at: Timestamp) -> Result<()>;

    /// Deletes a contact's automation runs and the events sent for it (the person was erased); how many rows.
    async fn forget_contact_automations(&self, account: AccountId, contact: &str) -> Result<u64>;

    /// An account's contacts changed after `(updated_at, id)` and at `until` at the latest, in that order.
    async fn changed_contacts(
        &self,
        account: AccountId,
        after: (Timestamp, &str),
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Contact>>;
}

const AUTOMATION_COLUMNS: &str =
    "id, account_id, name, spec, trigger_type, enabled, next_run_at, cursor, created_at, updated_at";
const RUN_COLUMNS: &str = "id, automation_id, account_id, contact_id, trigger_key, subject, state, position, \
     due_at, reply_from, reply_to, data, reply, log, error, lease_owner, lease_until, created_at, updated_at";
const EVENT_COLUMNS: &str = "id, account_id, name, contact_id, data, idempotency_key, outcome, created_at";

fn automation_of(r: &Row) -> Result<Automation> {
    Ok(Automation {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        name: r.get("name")?,
        spec: r.get("spec")?,
        trigger_type: r.get("trigger_type")?,
        enabled: r.get::<i64>("enabled")? != 0,
        next_run_at: r.get::<Option<i64>>("next_run_at")?.map(Timestamp),
        cursor: r.get("cursor")?,
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

fn run_of(r: &Row) -> Result<AutomationRun> {
    Ok(AutomationRun {
        id: r.get("id")?,
        automation_id: r.get("automation_id")?,
        account_id: r.account_id("account_id")?,
        contact_id: r.get("contact_id")?,
        trigger_key: r.get("trigger_key")?,
        subject: r.get("subject")?,
        state: r.get("state")?,
        position: r.get("position")?,
        due_at: r.get::<Option<i64>>("due_at")?.map(Timestamp),
        reply_from: r.get("reply_from")?,
        reply_to: r.get("reply_to")?,
        data: r.get("data")?,
        reply: r.get("reply")?,
        log: r.get("log")?,
        error: r.get("error")?,
        lease_owner: r.get("lease_owner")?,
        lease_until: r.get::<Option<i64>>("lease_until")?.map(Timestamp),
        created_at: r.timestamp("created_at")?,
        updated_at: r.timestamp("updated_at")?,
    })
}

fn event_of(r: &Row) -> Result<EventRecord> {
    Ok(EventRecord {
        id: r.get("id")?,
        account_id: r.account_id("account_id")?,
        name: r.get("name")?,
        contact_id: r.get("contact_id")?,
        data: r.get("data")?,
        idempotency_key: r.get("idempotency_key")?,
        outcome: r.get("outcome")?,
        created_at: r.timestamp("created_at")?,
    })
}

#[async_trait]
impl<D: Database> AutomationStore for D {
    async fn insert_automation(&self, a: &Automation) -> Result<()> {
        self.execute(
            &format!("INSERT INTO automations ({AUTOMATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            values![
                &a.id,
                a.account_id,
                &a.name,
                &a.spec,
                &a.trigger_type,
                a.enabled,
                a.next_run_at.map(|t| t.0),
                a.cursor.as_deref(),
                a.created_at,
                a.updated_at
            ],
        )
        .await?;
        Ok(())
    }

    async fn automation(&self, account: AccountId, id: &str) -> Result<Option<Automation>> {
        let sql = format!("SELECT {AUTOMATION_COLUMNS} FROM automations WHERE id = ? AND account_id = ?");
        self.query_one(&sql, values![id, account]).await?.as_ref().map(automation_of).transpose()
    }

    async fn automations(&self, account: AccountId, cursor: Option<&str>, limit: u32) -> Result<Vec<Automation>> {
        let sql = format!(
            "SELECT {AUTOMATION_COLUMNS} FROM automations WHERE account_id = ? AND id > ? ORDER BY id LIMIT {limit}"
        );
        self.query(&sql, values![account, cursor.unwrap_or("")]).await?.iter().map(automation_of).collect()
    }

    async fn enabled_automations(&self, account: AccountId) -> Result<Vec<Automation>> {
        let sql =
            format!("SELECT {AUTOMATION_COLUMNS} FROM automations WHERE account_id = ? AND enabled = 1 ORDER BY id");
        self.query(&sql, values![account]).await?.iter().map(automation_of).collect()
    }

    async fn enabled_automations_of(&self, trigger_type: &str) -> Result<Vec<Automation>> {
        let sql =
            format!("SELECT {AUTOMATION_COLUMNS} FROM automations WHERE trigger_type = ? AND enabled = 1 ORDER BY id");
        self.query(&sql, values![trigger_type]).await?.iter().map(automation_of).collect()
    }

    async fn save_automation(&self, a: &Automation) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE automations SET name = ?, spec = ?, trigger_type = ?, enabled = ?, next_run_at = ?, \
                 cursor = ?, updated_at = ? WHERE id = ? AND account_id = ?",
                values![
                    &a.name,
                    &a.spec,
                    &a.trigger_type,
                    a.enabled,
                    a.next_run_at.map(|t| t.0),
                    a.cursor.as_deref(),
                    a.updated_at,
                    &a.id,
                    a.account_id
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn advance_automation(&self, id: &str, expected: Timestamp, next: Option<Timestamp>) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE automations SET next_run_at = ? WHERE id = ? AND next_run_at = ?",
                values![next.map(|t| t.0), id, expected],
            )
            .await?;
        Ok(n == 1)
    }

    async fn delete_automation(&self, account: AccountId, id: &str) -> Result<bool> {
        let n = self
            .transaction(vec![
                Statement {
                    sql: "DELETE FROM automation_runs WHERE automation_id = ? AND account_id = ?".into(),
                    params: values![id, account],
                },
                Statement {
                    sql: "DELETE FROM automations WHERE id = ? AND account_id = ?".into(),
                    params: values![id, account],
                },
            ])
            .await?;
        Ok(n.last() == Some(&1))
    }

    async fn due_automations(&self, now: Timestamp, limit: u32) -> Result<Vec<Automation>> {
        let sql = format!(
            "SELECT {AUTOMATION_COLUMNS} FROM automations WHERE next_run_at IS NOT NULL AND next_run_at <= ? \
             AND enabled = 1 ORDER BY next_run_at LIMIT {limit}"
        );
        self.query(&sql, values![now]).await?.iter().map(automation_of).collect()
    }

    async fn insert_automation_runs(&self, runs: &[AutomationRun]) -> Result<Vec<bool>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let statements = runs
            .iter()
            .map(|r| Statement {
                sql: format!(
                    "INSERT INTO automation_runs ({RUN_COLUMNS}) VALUES \
                     (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?) \
                     ON CONFLICT (automation_id, trigger_key) DO NOTHING"
                ),
                params: values![
                    &r.id,
                    &r.automation_id,
                    r.account_id,
                    &r.contact_id,
                    &r.trigger_key,
                    &r.subject,
                    &r.state,
                    &r.position,
                    r.due_at.map(|t| t.0),
                    r.reply_from.as_deref(),
                    r.reply_to.as_deref(),
                    &r.data,
                    r.reply.as_deref(),
                    &r.log,
                    r.error.as_deref(),
                    r.created_at,
                    r.updated_at
                ],
            })
            .collect();
        Ok(self.transaction(statements).await?.into_iter().map(|n| n == 1).collect())
    }

    async fn automation_run(&self, id: &str) -> Result<Option<AutomationRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM automation_runs WHERE id = ?");
        self.query_one(&sql, values![id]).await?.as_ref().map(run_of).transpose()
    }

    async fn automation_runs(
        &self,
        automation: &str,
        contact: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AutomationRun>> {
        let mut params = values![automation, cursor.unwrap_or("")];
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM automation_runs WHERE automation_id = ? AND id > ?");
        if let Some(contact) = contact {
            sql.push_str(" AND contact_id = ?");
            params.push(Value::from(contact));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
        self.query(&sql, params).await?.iter().map(run_of).collect()
    }

    async fn open_runs(&self, automation: &str, contact: &str, subject: &str) -> Result<Vec<AutomationRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM automation_runs WHERE automation_id = ? AND contact_id = ? AND subject = ? \
             AND state IN ('active', 'waiting') ORDER BY id"
        );
        self.query(&sql, values![automation, contact, subject]).await?.iter().map(run_of).collect()
    }

    async fn due_automation_runs(&self, now: Timestamp, limit: u32) -> Result<Vec<AutomationRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM automation_runs WHERE state IN ('active', 'waiting') AND due_at <= ? \
             AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at LIMIT {limit}"
        );
        self.query(&sql, values![now, now]).await?.iter().map(run_of).collect()
    }

    async fn runs_awaiting_reply(&self, account: AccountId, from: &str) -> Result<Vec<AutomationRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM automation_runs WHERE account_id = ? AND reply_from = ? AND state = 'waiting' \
             ORDER BY id"
        );
        self.query(&sql, values![account, from]).await?.iter().map(run_of).collect()
    }

    async fn lease_automation_run(&self, id: &str, owner: &str, now: Timestamp, until: Timestamp) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE automation_runs SET lease_owner = ?, lease_until = ? WHERE id = ? \
                 AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)",
                values![owner, until, id, now, owner],
            )
            .await?;
        Ok(n == 1)
    }

    async fn save_automation_run(&self, r: &AutomationRun, expected: &str) -> Result<bool> {
        let n = self
            .execute(
                "UPDATE automation_runs SET state = ?, position = ?, due_at = ?, reply_from = ?, reply_to = ?, \
                 data = ?, reply = ?, log = ?, error = ?, trigger_key = ?, lease_owner = NULL, lease_until = NULL, \
                 updated_at = ? WHERE id = ? AND state = ?",
                values![
                    &r.state,
                    &r.position,
                    r.due_at.map(|t| t.0),
                    r.reply_from.as_deref(),
                    r.reply_to.as_deref(),
                    &r.data,
                    r.reply.as_deref(),
                    &r.log,
                    r.error.as_deref(),
                    &r.trigger_key,
                    r.updated_at,
                    &r.id,
                    expected
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn automation_run_counts(&self, automation: &str) -> Result<Vec<(String, u64)>> {
        let sql = "SELECT state, COUNT(*) AS n FROM automation_runs WHERE automation_id = ? GROUP BY state";
        self.query(sql, values![automation]).await?.iter().map(|r| Ok((r.get("state")?, r.count("n")?))).collect()
    }

    async fn insert_event(&self, e: &EventRecord) -> Result<EventRecord> {
        self.execute(
            &format!(
                "INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (account_id, idempotency_key) DO NOTHING"
            ),
            values![&e.id, e.account_id, &e.name, &e.contact_id, &e.data, &e.idempotency_key, &e.outcome, e.created_at],
        )
        .await?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE account_id = ? AND idempotency_key = ?");
        let row = self.query_one(&sql, values![e.account_id, &e.idempotency_key]).await?;
        row.as_ref().map(event_of).transpose()?.ok_or_else(|| crate::schema::corrupt("an event stored is gone"))
    }

    async fn set_event_outcome(&self, id: &str, outcome: &str) -> Result<()> {
        self.execute("UPDATE events SET outcome = ? WHERE id = ?", values![outcome, id]).await?;
        Ok(())
    }

    async fn unautomated_inbound(&self, limit: u32) -> Result<Vec<InboundText>> {
        let sql = format!(
            "SELECT id, account_id, from_addr, to_addr, body, created_at FROM messages \
             WHERE direction = 'inbound' AND automated_at IS NULL ORDER BY id LIMIT {limit}"
        );
        self.query(&sql, Vec::new())
            .await?
            .iter()
            .map(|r| {
                Ok(InboundText {
                    id: r.message_id("id")?,
                    account_id: r.account_id("account_id")?,
                    from: r.get("from_addr")?,
                    to: r.get("to_addr")?,
                    body: r.get("body")?,
                    at: r.timestamp("created_at")?,
                })
            })
            .collect()
    }

    async fn mark_automated(&self, ids: &[MessageId], at: Timestamp) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let mut params = values![at];
        params.extend(ids.iter().map(|id| Value::from(*id)));
        self.execute(&format!("UPDATE messages SET automated_at = ? WHERE id IN ({marks})"), params).await?;
        Ok(())
    }

    async fn forget_contact_automations(&self, account: AccountId, contact: &str) -> Result<u64> {
        let n = self
            .transaction(vec![
                Statement {
                    sql: "DELETE FROM automation_runs WHERE account_id = ? AND contact_id = ?".into(),
                    params: values![account, contact],
                },
                Statement {
                    sql: "DELETE FROM events WHERE account_id = ? AND contact_id = ?".into(),
                    params: values![account, contact],
                },
            ])
            .await?;
        Ok(n.iter().sum())
    }

    async fn changed_contacts(
        &self,
        account: AccountId,
        after: (Timestamp, &str),
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Contact>> {
        let sql = format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? \
             AND (updated_at > ? OR (updated_at = ? AND id > ?)) AND updated_at <= ? \
             ORDER BY updated_at, id LIMIT {limit}"
        );
        self.query(&sql, values![account, after.0, after.0, after.1, until]).await?.iter().map(contact_of).collect()
    }
}
