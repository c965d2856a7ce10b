//! [`Automations`]: what an account's texting does on its own — answer JOIN with a welcome and a list membership,
//! remind a patient the day before an appointment, tell a customer an order shipped — each send through the same
//! admission as every other message (opt-out, quiet hours, sender ownership, encoding).
//!
//! An automation is a trigger and steps. Triggers: `keyword` (an inbound message whose first word matches),
//! `event` (`POST /v1/events` from the account's systems), `date_field` (a time in a contact's field or an event's
//! data, plus an offset: the reminder; later events move or cancel what waits) and `schedule` (a cron in a zone,
//! for an audience). Steps: `send`, `wait` (a duration, or for a reply), `branch` (on the reply), `tag`, `untag`,
//! `add_to_list`, `remove_from_list`, `webhook`.
//!
//! Each time a trigger fires for a contact, a **run** is stored, keyed by the automation and what fired it (the
//! event's idempotency key, the inbound message, the date and its subject, the schedule's time), so a trigger seen
//! twice starts nothing new. The worker takes due runs under a lease and walks their steps, recording each in the
//! run's log and saving its position; a send is stored with the idempotency key
//! `smsgate:automation:{run}:{position}`, so a step taken again after a crash sends nothing twice. A run waiting
//! for a reply is woken by the contact's next inbound message (read from the store, so none is missed across a
//! restart) or goes on without one when its wait runs out.

mod check;
mod steps;
mod triggers;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smsgate_core::{AccountId, Timestamp};
use smsgate_store::{Automation, AutomationRun, EventRecord, Store};
use tokio::sync::Notify;

use crate::campaigns::{Audience, OnMissingField, next_cron};
use crate::contacts::{ContactSpec, Contacts};
use crate::error::{Result, ServiceError};
use crate::links::Links;

pub use steps::{parse_duration, parse_time};

/// The most steps an automation has, those inside branches included.
const MAX_STEPS: usize = 50;
/// How deep branches nest.
const MAX_DEPTH: usize = 4;
/// The most keywords, numbers or event names a trigger names.
const MAX_NAMES: usize = 100;
/// Steps a run takes in one turn before the worker looks at the others (a run of waits-free steps goes on at its
/// next turn).
const STEPS_PER_TURN: usize = 20;
/// How long a node holds a run it works on.
const LEASE: Duration = Duration::from_secs(30);
/// Inbound messages, due runs and changed contacts read at once.
const PAGE: u32 = 200;
/// A contact changed this recently may not be committed yet by a concurrent writer: read on the next pass.
const CHANGE_LAG_MS: i64 = 5_000;
/// How long a wait for a reply lasts when it names no timeout (a week, as replies count for campaigns).
const REPLY_WAIT_MS: i64 = 7 * 24 * 3600 * 1000;
/// The most runs a page lists.
pub const MAX_PAGE: u32 = 500;

/// An automation as a caller describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationSpec {
    pub name: String,
    pub trigger: Trigger,
    pub steps: Vec<Step>,
    /// Whether it reacts to its trigger from the start (yes when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An inbound message whose first word is one of these (case and accents as the consent keywords fold them),
    /// sent to one of `numbers` (any of the account's when none). A number with no contact gets one.
    Keyword {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyword: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keywords: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        numbers: Vec<String>,
    },
    /// An event of this name (`POST /v1/events`).
    Event { event: String },
    /// A time in a contact's field (`fields.appointment_at`) or an event's data (`data.appointment_at`), plus
    /// `offset` (`-24h`). For `data.*`, the `events` set or move it; for `fields.*`, a change of the contact does.
    /// `cancel_events` drop what waits; `key` (`data.appointment_id`) tells one appointment of a contact from
    /// another.
    DateField {
        field: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        events: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cancel_events: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Each time `cron` matches in `time_zone` (UTC when none), a run for each contact of `audience`.
    Schedule {
        cron: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_zone: Option<String>,
        audience: Audience,
    },
}

impl Trigger {
    /// The type's name, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Keyword { .. } => "keyword",
            Trigger::Event { .. } => "event",
            Trigger::DateField { .. } => "date_field",
            Trigger::Schedule { .. } => "schedule",
        }
    }
}

impl Step {
    /// The type's name, as a run's log writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Send { .. } => "send",
            Step::Wait { .. } => "wait",
            Step::Branch { .. } => "branch",
            Step::Tag { .. } => "tag",
            Step::Untag { .. } => "untag",
            Step::AddToList { .. } => "add_to_list",
            Step::RemoveFromList { .. } => "remove_from_list",
            Step::Webhook { .. } => "webhook",
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// A text to the contact: `body` or `template_id`, from `from` (after a keyword trigger, the number the
    /// keyword came to when not given).
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_id: Option<String>,
        /// `transactional` (when not given) or `marketing`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        #[serde(default)]
        on_missing_field: OnMissingField,
    },
    /// `duration` (`"24h"`), or `until: "reply"` for at most `timeout` (a week when not given).
    Wait {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
    },
    /// The first case one of whose words is the reply's text or its first word; `default` otherwise (no reply
    /// included). The run goes on after the branch once the case's steps are done.
    Branch {
        cases: Vec<Case>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        default: Vec<Step>,
    },
    Tag {
        tag: String,
    },
    Untag {
        tag: String,
    },
    /// A list by id (or by name, resolved at create).
    AddToList {
        list_id: String,
    },
    RemoveFromList {
        list_id: String,
    },
    /// A signed POST of the run, the contact and the data to `url`, delivered like status webhooks.
    Webhook {
        url: String,
    },
}

/// One case of a branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(rename = "match")]
    pub words: Vec<String>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// An automation with its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct AutomationView {
    pub automation: Automation,
    pub spec: AutomationSpec,
    pub stats: AutomationStats,
}

/// An automation's runs by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AutomationStats {
    pub runs: u64,
    pub active: u64,
    pub waiting: u64,
    pub completed: u64,
    pub canceled: u64,
    pub failed: u64,
}

/// An event as the account's systems send it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventSpec {
    pub name: String,
    pub contact_id: Option<String>,
    /// A contact by number, made (or updated with what is given) first.
    pub contact: Option<ContactSpec>,
    pub data: Option<Value>,
    pub idempotency_key: Option<String>,
}

/// What an event did.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    pub event: EventRecord,
    /// The event's key was used before: nothing new was done; `outcome` is what the first did.
    pub duplicate: bool,
    pub outcome: Value,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

fn no_automation() -> ServiceError {
    ServiceError::not_found("not_found", "no such automation")
}

fn corrupt(what: String) -> ServiceError {
    ServiceError::Store(smsgate_store::StoreError::Corrupt(what))
}

fn parse_spec(a: &Automation) -> Result<AutomationSpec> {
    serde_json::from_str(&a.spec).map_err(|e| corrupt(format!("automation {} spec: {e}", a.id)))
}

/// The automations of accounts, and the worker that runs them.
#[derive(Debug, Clone)]
pub struct Automations {
    contacts: Contacts,
    conversations: crate::conversations::Conversations,
    links: Links,
    store: Arc<dyn Store>,
    node: String,
    wake: Arc<Notify>,
}

impl Automations {
    pub fn new(contacts: Contacts, links: Links, store: Arc<dyn Store>, node: impl Into<String>) -> Automations {
        let conversations = crate::conversations::Conversations::new(contacts.messages.clone(), store.clone());
        Automations { contacts, conversations, links, store, node: node.into(), wake: Arc::default() }
    }

    fn now(&self) -> Timestamp {
        self.contacts.messages.now()
    }

    /// Creates an automation (enabled unless the spec says not).
    pub async fn create(&self, account: AccountId, spec: AutomationSpec) -> Result<AutomationView> {
        let mut spec = self.checked(account, spec).await?;
        let now = self.now();
        let enabled = spec.enabled.take().unwrap_or(true);
        let a = Automation {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            name: spec.name.clone(),
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            trigger_type: spec.trigger.kind().into(),
            enabled,
            next_run_at: self.next_firing(&spec.trigger, now),
            cursor: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_automation(&a).await?;
        self.wake.notify_one();
        self.view(a).await
    }

    /// A schedule's next firing after `now`.
    fn next_firing(&self, trigger: &Trigger, now: Timestamp) -> Option<Timestamp> {
        match trigger {
            Trigger::Schedule { cron, time_zone, .. } => {
                next_cron(cron, time_zone.as_deref().unwrap_or("UTC"), now).ok()
            }
            _ => None,
        }
    }

    async fn find(&self, account: AccountId, id: &str) -> Result<Automation> {
        self.store.automation(account, id).await?.ok_or_else(no_automation)
    }

    async fn view(&self, automation: Automation) -> Result<AutomationView> {
        let spec = parse_spec(&automation)?;
        let mut stats = AutomationStats::default();
        for (state, n) in self.store.automation_run_counts(&automation.id).await? {
            stats.runs += n;
            match state.as_str() {
                "active" => stats.active += n,
                "waiting" => stats.waiting += n,
                "completed" => stats.completed += n,
                "canceled" => stats.canceled += n,
                _ => stats.failed += n,
            }
        }
        Ok(AutomationView { automation, spec, stats })
    }

    pub async fn get(&self, account: AccountId, id: &str) -> Result<AutomationView> {
        let a = self.find(account, id).await?;
        self.view(a).await
    }

    pub async fn list(&self, account: AccountId, cursor: Option<&str>, limit: u32) -> Result<Vec<AutomationView>> {
        let mut out = Vec::new();
        for a in self.store.automations(account, cursor, limit.clamp(1, MAX_PAGE)).await? {
            out.push(self.view(a).await?);
        }
        Ok(out)
    }

    /// Turns an automation's trigger on or off; runs under way go on either way.
    pub async fn set_enabled(&self, account: AccountId, id: &str, enabled: bool) -> Result<AutomationView> {
        let mut a = self.find(account, id).await?;
        let now = self.now();
        if enabled && !a.enabled {
            a.next_run_at = self.next_firing(&parse_spec(&a)?.trigger, now);
        }
        a.enabled = enabled;
        a.updated_at = now;
        if !self.store.save_automation(&a).await? {
            return Err(no_automation());
        }
        self.wake.notify_one();
        self.view(a).await
    }

    /// Deletes an automation with its runs (what they sent stays).
    pub async fn delete(&self, account: AccountId, id: &str) -> Result<()> {
        if self.store.delete_automation(account, id).await? { Ok(()) } else { Err(no_automation()) }
    }

    /// An automation's runs, of one contact if given.
    pub async fn runs(
        &self,
        account: AccountId,
        id: &str,
        contact: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AutomationRun>> {
        let a = self.find(account, id).await?;
        Ok(self.store.automation_runs(&a.id, contact, cursor, limit.clamp(1, MAX_PAGE)).await?)
    }
}
