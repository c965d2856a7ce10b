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

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use smsgate_core::admission::{ErrorCode, Request};
use smsgate_core::consent::{Category, fold};
use smsgate_core::{AccountId, MessageId, Timestamp};
use smsgate_store::{Automation, AutomationRun, Contact, ContactQuery, EventRecord, InboundText, Inserted, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::campaigns::{Audience, OnMissingField, next_cron};
use crate::contacts::{ContactPatch, ContactSpec, Contacts, zone_of};
use crate::error::{Result, ServiceError};
use crate::links::Links;
use crate::messages::{ZoneOf, rfc3339};
use crate::templates::{self, Compiled};

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

/// A duration as `24h`, `90m`, `1d12h`, `-24h` (units `s`, `m`, `h`, `d`, `w`), in milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let (mut total, mut n, mut digits) = (0i64, 0i64, 0);
    for c in rest.chars() {
        if let Some(d) = c.to_digit(10) {
            n = n.checked_mul(10)?.checked_add(i64::from(d))?;
            digits += 1;
            continue;
        }
        let unit = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return None,
        };
        if digits == 0 {
            return None;
        }
        total = total.checked_add(n.checked_mul(unit)?)?;
        (n, digits) = (0, 0);
    }
    if digits != 0 {
        return None;
    }
    Some(sign * total)
}

/// A time as a field holds it: RFC 3339 (`2026-12-03T15:00:00-05:00`), a local time in `zone`
/// (`2026-12-03T15:00`, `2026-12-03 15:00`), a day (`2026-12-03`, its midnight in `zone`) or Unix seconds.
pub fn parse_time(value: &Value, zone: chrono_tz::Tz) -> Option<Timestamp> {
    if let Some(secs) = value.as_i64() {
        return secs.checked_mul(1000).map(Timestamp);
    }
    let s = value.as_str()?.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(Timestamp(t.timestamp_millis()));
    }
    let local = templates::LOCAL_FORMATS
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))?;
    // A local time the clocks skipped (spring forward) is read an hour later; one they repeat, the first time.
    let t = zone
        .from_local_datetime(&local)
        .earliest()
        .or_else(|| zone.from_local_datetime(&(local + chrono::Duration::hours(1))).earliest())?;
    Some(Timestamp(t.timestamp_millis()))
}

/// The value at a dotted path (`fields.appointment_at`) of a JSON object.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| v.get(key)).filter(|v| !v.is_null())
}

// Positions: a step's path in the steps, as "2" or "3.1.0" (step 3, its case 1 — `cases.len()` is the default —,
// that case's step 0).

fn parse_position(s: &str) -> Option<Vec<usize>> {
    let path: Option<Vec<usize>> = s.split('.').map(|p| p.parse().ok()).collect();
    path.filter(|p| p.len() % 2 == 1)
}

fn position_text(path: &[usize]) -> String {
    path.iter().map(usize::to_string).collect::<Vec<_>>().join(".")
}

/// The steps of a branch's case (`cases.len()`: its default).
fn case_steps(step: &Step, case: usize) -> Option<&[Step]> {
    match step {
        Step::Branch { cases, default } if case < cases.len() => Some(&cases[case].steps),
        Step::Branch { cases, default } if case == cases.len() => Some(default),
        _ => None,
    }
}

/// The list of steps a position's last index counts in.
fn list_at<'a>(steps: &'a [Step], prefix: &[usize]) -> Option<&'a [Step]> {
    let mut list = steps;
    for pair in prefix.chunks(2) {
        let [step, case] = pair else { return None };
        list = case_steps(list.get(*step)?, *case)?;
    }
    Some(list)
}

fn step_at<'a>(steps: &'a [Step], path: &[usize]) -> Option<&'a Step> {
    let (last, prefix) = path.split_last()?;
    list_at(steps, prefix)?.get(*last)
}

/// The step after `path` once it is done: the next in its list, else the one after the branch it is in; `None`
/// at the end.
fn next_position(steps: &[Step], path: &[usize]) -> Option<Vec<usize>> {
    let mut p = path.to_vec();
    loop {
        let (last, prefix) = p.split_last()?;
        let len = list_at(steps, prefix)?.len();
        if last + 1 < len {
            *p.last_mut()? += 1;
            return Some(p);
        }
        if p.len() == 1 {
            return None;
        }
        p.truncate(p.len() - 2);
    }
}

/// Where a branch at `path` goes for `case`: its first step, or past the branch when the case has none.
fn enter_case(steps: &[Step], path: &[usize], case: usize) -> Option<Vec<usize>> {
    let has_steps = step_at(steps, path).and_then(|s| case_steps(s, case)).is_some_and(|l| !l.is_empty());
    if has_steps {
        let mut p = path.to_vec();
        p.extend([case, 0]);
        Some(p)
    } else {
        next_position(steps, path)
    }
}

/// The case of a branch a reply picks: the first with a word equal to the reply or its first word.
fn pick_case(cases: &[Case], reply: Option<&str>) -> usize {
    let Some(reply) = reply.map(fold) else { return cases.len() };
    let first = reply.split(' ').next().unwrap_or("");
    cases
        .iter()
        .position(|c| {
            c.words.iter().any(|w| {
                let w = fold(w);
                w == reply || w == first
            })
        })
        .unwrap_or(cases.len())
}

/// Every step, nested ones included, with its depth.
fn each_step(steps: &[Step], depth: usize, out: &mut Vec<(usize, Step)>) {
    for s in steps {
        out.push((depth, s.clone()));
        if let Step::Branch { cases, default } = s {
            for c in cases {
                each_step(&c.steps, depth + 1, out);
            }
            each_step(default, depth + 1, out);
        }
    }
}

/// What a send step did, when it did not send.
enum StepStop {
    /// Skip the step (a missing field with `skip`): the reason.
    Skip(String),
    /// End the run in `state` (`canceled` for an opt-out, `failed` otherwise) with the code and why.
    End { state: &'static str, code: String, message: String },
}

/// The automations of accounts, and the worker that runs them.
#[derive(Debug, Clone)]
pub struct Automations {
    contacts: Contacts,
    links: Links,
    store: Arc<dyn Store>,
    node: String,
    wake: Arc<Notify>,
}

impl Automations {
    pub fn new(contacts: Contacts, links: Links, store: Arc<dyn Store>, node: impl Into<String>) -> Automations {
        Automations { contacts, links, store, node: node.into(), wake: Arc::default() }
    }

    fn now(&self) -> Timestamp {
        self.contacts.messages.now()
    }

    // Definitions.

    /// Checks a spec for `account` and puts it in its stored form (lists by name become ids).
    async fn checked(&self, account: AccountId, mut spec: AutomationSpec) -> Result<AutomationSpec> {
        spec.name = spec.name.trim().to_string();
        if spec.name.is_empty() || spec.name.chars().count() > 128 {
            return Err(invalid("invalid_name", "an automation's name has 1 to 128 characters"));
        }
        let keyword_trigger = self.check_trigger(account, &mut spec.trigger).await?;
        let mut all = Vec::new();
        each_step(&spec.steps, 0, &mut all);
        if spec.steps.is_empty() || all.len() > MAX_STEPS {
            return Err(invalid("invalid_steps", format!("an automation has 1 to {MAX_STEPS} steps, nested included")));
        }
        if all.iter().any(|(depth, _)| *depth >= MAX_DEPTH) {
            return Err(invalid("invalid_steps", format!("branches nest {MAX_DEPTH} deep at most")));
        }
        self.check_steps(account, &mut spec.steps, keyword_trigger).await?;
        Ok(spec)
    }

    /// Checks a trigger; whether it is a keyword's (whose runs know the number the keyword came to).
    async fn check_trigger(&self, account: AccountId, trigger: &mut Trigger) -> Result<bool> {
        let bad = |m: String| invalid("invalid_trigger", m);
        match trigger {
            Trigger::Keyword { keyword, keywords, numbers } => {
                keywords.extend(keyword.take());
                if keywords.is_empty() || keywords.len() > MAX_NAMES || numbers.len() > MAX_NAMES {
                    return Err(bad(format!("a keyword trigger names 1 to {MAX_NAMES} keywords")));
                }
                let settings = self.contacts.compliance(account).await?;
                for k in keywords.iter_mut() {
                    *k = k.trim().to_uppercase();
                    if k.is_empty() || k.chars().count() > 32 || k.contains(char::is_whitespace) {
                        return Err(bad(format!("{k:?} is not a keyword: one word of 1 to 32 characters")));
                    }
                    if settings.keywords.classify(k).is_some() {
                        return Err(bad(format!(
                            "{k} is one of the account's opt-out, opt-in or help keywords, which consent answers"
                        )));
                    }
                }
                for n in numbers.iter_mut() {
                    self.contacts.messages.check_sender(account, n).await?;
                    *n = smsgate_core::senders::address_key(n);
                }
                Ok(true)
            }
            Trigger::Event { event } => {
                check_event_name(event)?;
                Ok(false)
            }
            Trigger::DateField { field, offset, event, events, cancel_events, key } => {
                events.extend(event.take());
                let source = field.split('.').next().unwrap_or("");
                if !matches!(source, "fields" | "data") || field.split('.').count() < 2 {
                    return Err(bad(format!("field {field:?} is fields.NAME (a contact's) or data.NAME (an event's)")));
                }
                if source == "data" && events.is_empty() {
                    return Err(bad("a date in an event's data needs the events that set it (events)".into()));
                }
                if let Some(o) = offset
                    && parse_duration(o).is_none()
                {
                    return Err(bad(format!("offset {o:?} is not a duration such as -24h or 30m")));
                }
                if let Some(k) = key
                    && !k.starts_with("data.")
                {
                    return Err(bad(format!("key {k:?} is data.NAME, in the events' data")));
                }
                if events.len() + cancel_events.len() > MAX_NAMES {
                    return Err(bad(format!("a trigger names at most {MAX_NAMES} events")));
                }
                for e in events.iter().chain(cancel_events.iter()) {
                    check_event_name(e)?;
                }
                Ok(false)
            }
            Trigger::Schedule { cron, time_zone, audience } => {
                next_cron(cron, time_zone.as_deref().unwrap_or("UTC"), self.now()).map_err(|e| bad(e.to_string()))?;
                if audience.lists.is_empty() && audience.segments.is_empty() && audience.contacts.is_empty() {
                    return Err(bad("a schedule's audience names a list, a segment or contacts".into()));
                }
                if !audience.exclude.lists.is_empty()
                    || !audience.exclude.segments.is_empty()
                    || !audience.exclude.contacts.is_empty()
                {
                    return Err(bad("a schedule's audience excludes nothing: name a segment that leaves out".into()));
                }
                for list in &mut audience.lists {
                    let found = self.contacts.list_by_id_or_name(account, list).await?;
                    *list = found.ok_or_else(|| bad(format!("no list {list:?} in this account")))?.id;
                }
                for s in &audience.segments {
                    if self.store.segment(account, s).await?.is_none() {
                        return Err(bad(format!("no segment {s:?} in this account")));
                    }
                }
                Ok(false)
            }
        }
    }

    async fn check_steps(&self, account: AccountId, steps: &mut [Step], keyword_trigger: bool) -> Result<()> {
        let bad = |m: String| invalid("invalid_steps", m);
        for step in steps {
            match step {
                Step::Send { from, body, template_id, category, .. } => {
                    match (&*body, &*template_id) {
                        (Some(b), None) => templates::check(b)?,
                        (None, Some(id)) => {
                            let t = self.store.template(account, id).await?;
                            let t = t.ok_or_else(|| {
                                invalid("invalid_template", format!("no template {id:?} in this account"))
                            })?;
                            category.get_or_insert_with(|| t.category.as_str().to_string());
                        }
                        _ => return Err(invalid("invalid_body", "a send step has template_id or body, not both")),
                    }
                    if Category::requested(category.as_deref().unwrap_or("transactional")).is_none() {
                        return Err(invalid("invalid_category", "category is transactional or marketing"));
                    }
                    match from {
                        Some(f) => self.contacts.messages.check_sender(account, f).await?,
                        None if keyword_trigger => {}
                        None => return Err(invalid("invalid_sender", "a send step needs from")),
                    }
                }
                Step::Wait { duration, until, timeout } => match (duration.as_deref(), until.as_deref()) {
                    (Some(d), None) if parse_duration(d).is_some_and(|ms| ms > 0) => {}
                    (None, Some("reply"))
                        if timeout.as_deref().is_none_or(|t| parse_duration(t).is_some_and(|ms| ms > 0)) => {}
                    _ => {
                        return Err(bad(
                            "a wait has a duration (such as 24h), or until: \"reply\" with an optional timeout".into(),
                        ));
                    }
                },
                Step::Branch { cases, default } => {
                    if cases.is_empty() || cases.iter().any(|c| c.words.is_empty()) {
                        return Err(bad("a branch has cases, each matching one or more words".into()));
                    }
                    for c in cases.iter_mut() {
                        Box::pin(self.check_steps(account, &mut c.steps, keyword_trigger)).await?;
                    }
                    Box::pin(self.check_steps(account, default, keyword_trigger)).await?;
                }
                Step::Tag { tag } | Step::Untag { tag } => {
                    *tag = tag.trim().to_string();
                    if tag.is_empty() || tag.chars().count() > 64 {
                        return Err(bad("a tag has 1 to 64 characters".into()));
                    }
                }
                Step::AddToList { list_id } | Step::RemoveFromList { list_id } => {
                    let found = self.contacts.list_by_id_or_name(account, list_id).await?;
                    *list_id = found.ok_or_else(|| bad(format!("no list {list_id:?} in this account")))?.id;
                }
                Step::Webhook { url } => {
                    let parsed = url::Url::parse(url).map_err(|_| bad(format!("{url:?} is not a URL")))?;
                    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                        return Err(bad(format!("{url:?} is not an http(s) URL")));
                    }
                }
            }
        }
        Ok(())
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

    // Triggers.

    /// Records an event and fires what it triggers: runs of `event` automations, date triggers set, moved or
    /// canceled. An idempotency key used before does nothing new and answers what the first did.
    pub async fn event(&self, account: AccountId, spec: EventSpec) -> Result<EventOutcome> {
        check_event_name(&spec.name)?;
        let data = spec.data.unwrap_or_else(|| json!({}));
        if !data.is_object() || data.to_string().len() > 16 * 1024 {
            return Err(invalid("invalid_data", "data is a JSON object of 16 KiB at most"));
        }
        if let Some(k) = &spec.idempotency_key
            && (k.is_empty() || k.len() > 255)
        {
            return Err(invalid("invalid_idempotency_key", "an idempotency_key has 1 to 255 characters"));
        }
        let contact = match (spec.contact_id, spec.contact) {
            (Some(id), None) => self.store.contact(account, &id).await?.ok_or_else(|| {
                ServiceError::not_found("contact_not_found", format!("no contact {id:?} in this account"))
            })?,
            (None, Some(c)) => self.contacts.create(account, c, true).await?.1.contact,
            _ => return Err(invalid("invalid_contact", "give contact_id or contact, not both")),
        };
        let now = self.now();
        let id = uuid::Uuid::now_v7().to_string();
        let record = EventRecord {
            id: id.clone(),
            account_id: account,
            name: spec.name.clone(),
            contact_id: contact.id.clone(),
            data: data.to_string(),
            idempotency_key: spec.idempotency_key.unwrap_or_else(|| id.clone()),
            outcome: "{}".into(),
            created_at: now,
        };
        let stored = self.store.insert_event(&record).await?;
        if stored.id != id {
            let outcome = serde_json::from_str(&stored.outcome).unwrap_or_else(|_| json!({}));
            return Ok(EventOutcome { event: stored, duplicate: true, outcome });
        }
        let mut outcome = Outcome::default();
        let trigger_key = format!("event:{}", record.idempotency_key);
        // Date triggers look their field and key up in the event's data as `data.NAME`.
        let wrapped = json!({"data": data});
        for a in self.store.enabled_automations(account).await? {
            let spec = parse_spec(&a)?;
            match &spec.trigger {
                Trigger::Event { event } if *event == record.name => {
                    let run = new_run(&a, &contact, trigger_key.clone(), String::new(), &data, now, Some(now));
                    if self.store.insert_automation_runs(std::slice::from_ref(&run)).await?[0] {
                        outcome.started.push(run.id);
                    }
                }
                Trigger::DateField { field, offset, events, cancel_events, key, .. } => {
                    let subject = key.as_deref().and_then(|k| lookup(&wrapped, k)).map(text_of);
                    let subject = subject.unwrap_or_default();
                    if cancel_events.contains(&record.name) {
                        for run in self.store.open_runs(&a.id, &contact.id, &subject).await? {
                            let id = run.id.clone();
                            if self.end_run(run, "canceled", &format!("canceled by event {}", record.name)).await? {
                                outcome.canceled.push(id);
                            }
                        }
                    } else if events.contains(&record.name) {
                        let fields = contact_json(&contact);
                        let source = if field.starts_with("data.") { &wrapped } else { &fields };
                        let at = lookup(source, field).and_then(|v| parse_time(v, zone(&contact)));
                        match at {
                            Some(at) => {
                                let due = at.plus_millis(offset.as_deref().and_then(parse_duration).unwrap_or(0));
                                let r = self.set_date(&a, &contact, &subject, at, due, &data, now).await?;
                                outcome.note(r);
                            }
                            None => outcome.errors.push(json!({
                                "automation_id": a.id, "code": "invalid_date",
                                "message": format!("{field} is missing or not a time")
                            })),
                        }
                    }
                }
                _ => {}
            }
        }
        let outcome = outcome.json();
        self.store.set_event_outcome(&record.id, &outcome.to_string()).await?;
        self.wake.notify_one();
        Ok(EventOutcome { event: EventRecord { outcome: outcome.to_string(), ..record }, duplicate: false, outcome })
    }

    /// Sets a date trigger's run for a contact and subject at `due` (for the time `at`): a run already waiting for
    /// that time stays; one waiting for another is canceled (moved) and a new one stored. Nothing for a time
    /// already past.
    #[allow(clippy::too_many_arguments)]
    async fn set_date(
        &self,
        a: &Automation,
        contact: &Contact,
        subject: &str,
        at: Timestamp,
        due: Timestamp,
        data: &Value,
        now: Timestamp,
    ) -> Result<DateChange> {
        let key = format!("date:{subject}:{}", at.0);
        let open = self.store.open_runs(&a.id, &contact.id, subject).await?;
        if open.iter().any(|r| r.trigger_key == key) {
            return Ok(DateChange::Same);
        }
        let mut ended = Vec::new();
        for run in open {
            // Only runs that have not begun their steps move; one under way (a reply awaited) goes on.
            let id = run.id.clone();
            if run.position == "0"
                && run.state == "active"
                && self.end_run(run, "canceled", "moved: the date changed").await?
            {
                ended.push(id);
            }
        }
        if at < now {
            return Ok(DateChange::Ended(ended));
        }
        // A reminder whose time has passed while the date is still ahead goes now.
        let run = new_run(a, contact, key, subject.to_string(), data, now, Some(due.max(now)));
        let new = self.store.insert_automation_runs(std::slice::from_ref(&run)).await?[0];
        Ok(match (new, ended.is_empty()) {
            (false, _) => DateChange::Same,
            (true, true) => DateChange::Started(run.id),
            (true, false) => DateChange::Moved(run.id, ended),
        })
    }

    /// Ends a run under way (`canceled`, `failed`) with why; whether it was still under way.
    async fn end_run(&self, mut run: AutomationRun, state: &str, why: &str) -> Result<bool> {
        let expected = run.state.clone();
        let now = self.now();
        let mut log = log_of(&run);
        log.push(json!({"step": run.position, "type": "end", "at": rfc3339(now), "outcome": state, "detail": why}));
        run.log = Value::Array(log).to_string();
        run.state = state.into();
        run.due_at = None;
        run.error = Some(json!({"code": state, "message": why}).to_string());
        run.updated_at = now;
        Ok(self.store.save_automation_run(&run, &expected).await?)
    }

    /// Reads inbound messages not read yet: keyword triggers, replies awaited.
    async fn inbound(&self) -> Result<usize> {
        let texts = self.store.unautomated_inbound(PAGE).await?;
        for t in &texts {
            self.read_inbound(t).await?;
        }
        let ids: Vec<MessageId> = texts.iter().map(|t| t.id).collect();
        self.store.mark_automated(&ids, self.now()).await?;
        Ok(texts.len())
    }

    async fn read_inbound(&self, t: &InboundText) -> Result<()> {
        let now = self.now();
        // Replies first: a run waiting on this number from this contact goes on with the text.
        for mut run in self.store.runs_awaiting_reply(t.account_id, &t.from).await? {
            if run
                .reply_to
                .as_deref()
                .is_some_and(|to| smsgate_core::senders::address_key(to) != smsgate_core::senders::address_key(&t.to))
            {
                continue;
            }
            let mut log = log_of(&run);
            log.push(
                json!({"step": run.position, "type": "reply", "at": rfc3339(t.at), "message_id": t.id.to_string(),
                "text": t.body}),
            );
            run.log = Value::Array(log).to_string();
            run.reply = Some(t.body.clone());
            run.state = "active".into();
            run.due_at = Some(now);
            run.updated_at = now;
            self.store.save_automation_run(&run, "waiting").await?;
        }
        let settings = self.contacts.compliance(t.account_id).await?;
        if settings.keywords.classify(&t.body).is_some() {
            return Ok(());
        }
        let folded = fold(&t.body);
        let first = folded.split(' ').next().unwrap_or("").to_string();
        if first.is_empty() {
            return Ok(());
        }
        let to_key = smsgate_core::senders::address_key(&t.to);
        let mut contact = None;
        for a in self.store.enabled_automations(t.account_id).await? {
            let spec = parse_spec(&a)?;
            let Trigger::Keyword { keywords, numbers, .. } = &spec.trigger else { continue };
            if !keywords.iter().any(|k| fold(k) == first) || (!numbers.is_empty() && !numbers.contains(&to_key)) {
                continue;
            }
            let c = match &contact {
                Some(c) => c,
                None => contact.insert(self.contact_for(t).await?),
            };
            let data = json!({"message": {"id": t.id.to_string(), "from": t.from, "to": t.to, "body": t.body}});
            let run = new_run(&a, c, format!("message:{}", t.id), String::new(), &data, now, Some(now));
            self.store.insert_automation_runs(std::slice::from_ref(&run)).await?;
        }
        Ok(())
    }

    /// The contact an inbound message's number is, made when the account has none.
    async fn contact_for(&self, t: &InboundText) -> Result<Contact> {
        if let Some(c) = self.store.contact_by_phone(t.account_id, &t.from).await? {
            return Ok(c);
        }
        let spec = ContactSpec { phone: t.from.clone(), ..ContactSpec::default() };
        Ok(self.contacts.create(t.account_id, spec, true).await?.1.contact)
    }

    /// Fires the schedules due: a run for each contact of the audience, keyed by the firing's time.
    async fn schedules(&self) -> Result<()> {
        let now = self.now();
        for a in self.store.due_automations(now, 20).await? {
            let spec = parse_spec(&a)?;
            let Trigger::Schedule { cron, time_zone, audience } = &spec.trigger else { continue };
            let Some(fired) = a.next_run_at else { continue };
            let mut queries = Vec::new();
            for l in &audience.lists {
                queries.push((ContactQuery { lists: vec![l.clone()], ..ContactQuery::default() }, None));
            }
            for s in &audience.segments {
                match self.contacts.segment(a.account_id, s).await {
                    Ok((_, filter)) => queries.push((filter.query(now), Some(filter))),
                    Err(ServiceError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if !audience.contacts.is_empty() {
                queries.push((ContactQuery { ids: Some(audience.contacts.clone()), ..ContactQuery::default() }, None));
            }
            let data = json!({"fired_at": rfc3339(fired)});
            for (query, filter) in queries {
                let mut cursor: Option<String> = None;
                loop {
                    let page = self.store.contacts(a.account_id, &query, cursor.as_deref(), PAGE).await?;
                    let full = page.len() == PAGE as usize;
                    cursor = page.last().map(|c| c.id.clone());
                    let page = match &filter {
                        Some(f) => {
                            let infos = self.contacts.infos(a.account_id, page).await?;
                            infos.into_iter().filter(|i| f.matches(i, now)).map(|i| i.contact).collect()
                        }
                        None => page,
                    };
                    let runs: Vec<AutomationRun> = page
                        .iter()
                        .map(|c| new_run(&a, c, format!("schedule:{}", fired.0), String::new(), &data, now, Some(now)))
                        .collect();
                    self.store.insert_automation_runs(&runs).await?;
                    if !full {
                        break;
                    }
                }
            }
            let next = next_cron(cron, time_zone.as_deref().unwrap_or("UTC"), now).ok();
            self.store.advance_automation(&a.id, fired, next).await?;
        }
        Ok(())
    }

    /// Reads contacts changed since each date trigger on a contact field last looked: sets, moves or drops their
    /// runs.
    async fn date_fields(&self) -> Result<()> {
        let now = self.now();
        let until = now.plus_millis(-CHANGE_LAG_MS);
        for mut a in self.store.enabled_automations_of("date_field").await? {
            let spec = parse_spec(&a)?;
            let Trigger::DateField { field, offset, .. } = &spec.trigger else { continue };
            if !field.starts_with("fields.") {
                continue;
            }
            let (mut at, mut id) = cursor_of(a.cursor.as_deref());
            let page = self.store.changed_contacts(a.account_id, (at, &id), until, PAGE).await?;
            if page.is_empty() {
                continue;
            }
            for c in &page {
                let when = lookup(&contact_json(c), field).and_then(|v| parse_time(v, zone(c)));
                match when {
                    Some(t) => {
                        let due = t.plus_millis(offset.as_deref().and_then(parse_duration).unwrap_or(0));
                        self.set_date(&a, c, "", t, due, &json!({}), now).await?;
                    }
                    None => {
                        for run in self.store.open_runs(&a.id, &c.id, "").await? {
                            if run.position == "0" && run.state == "active" {
                                self.end_run(run, "canceled", &format!("{field} was removed")).await?;
                            }
                        }
                    }
                }
                (at, id) = (c.updated_at, c.id.clone());
            }
            a.cursor = Some(format!("{} {id}", at.0));
            a.updated_at = now;
            self.store.save_automation(&a).await?;
        }
        Ok(())
    }

    // Running.

    /// Runs automations until `shutdown`: reads inbound messages, fires schedules and date fields, walks due runs.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut received = self.contacts.messages.engine().events().subscribe();
        loop {
            match self.tick(&shutdown).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "automations: a step failed; trying again in a second"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                // An inbound message stored, or anything else the engine did: look (cheap when nothing is new).
                r = received.recv() => {
                    if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One round; whether there may be more to do at once (a full page read).
    pub async fn tick(&self, shutdown: &CancellationToken) -> Result<bool> {
        let read = self.inbound().await?;
        self.schedules().await?;
        self.date_fields().await?;
        let now = self.now();
        let due = self.store.due_automation_runs(now, PAGE).await?;
        let mut more = read == PAGE as usize || due.len() == PAGE as usize;
        for run in due {
            if shutdown.is_cancelled() {
                break;
            }
            more |= self.work(run).await?;
        }
        Ok(more)
    }

    /// Walks a run's steps under a lease until it waits or ends; whether it has more to do at once.
    async fn work(&self, run: AutomationRun) -> Result<bool> {
        let now = self.now();
        let until = now.plus_millis(i64::try_from(LEASE.as_millis()).unwrap_or(30_000));
        if !self.store.lease_automation_run(&run.id, &self.node, now, until).await? {
            return Ok(false);
        }
        // Read again under the lease: an event may have canceled it since the pick.
        let Some(run) = self.store.automation_run(&run.id).await? else { return Ok(false) };
        if !matches!(run.state.as_str(), "active" | "waiting") || run.due_at.is_none_or(|t| t > now) {
            return Ok(false);
        }
        let Some(a) = self.store.automation(run.account_id, &run.automation_id).await? else { return Ok(false) };
        let spec = parse_spec(&a)?;
        let Some(contact) = self.store.contact(run.account_id, &run.contact_id).await? else {
            self.end_run(run, "canceled", "the contact was deleted").await?;
            return Ok(false);
        };
        let expected = run.state.clone();
        let mut run = run;
        let mut log = log_of(&run);
        let mut more = false;
        if run.state == "waiting" {
            // The wait for a reply ran out: on without one.
            log.push(json!({"step": run.position, "type": "reply", "at": rfc3339(now), "outcome": "timed_out"}));
            run.state = "active".into();
            run.reply = None;
        }
        run.reply_from = None;
        let data: Value = serde_json::from_str(&run.data).unwrap_or_else(|_| json!({}));
        let mut taken = 0;
        loop {
            let Some(path) = parse_position(&run.position) else {
                return Err(corrupt(format!("automation run {} position {:?}", run.id, run.position)));
            };
            let Some(step) = step_at(&spec.steps, &path) else {
                run.state = "completed".into();
                run.due_at = None;
                break;
            };
            if taken == STEPS_PER_TURN {
                run.due_at = Some(now);
                more = true;
                break;
            }
            taken += 1;
            let at = rfc3339(now);
            let mut entry = json!({"step": run.position, "type": step_type(step), "at": at});
            let mut next = next_position(&spec.steps, &path);
            let mut pause_until = None;
            match step {
                Step::Send { from, body, template_id, category, on_missing_field } => {
                    let from = from
                        .clone()
                        .or_else(|| lookup(&data, "message.to").and_then(Value::as_str).map(String::from))
                        .unwrap_or_default();
                    let send = SendStep {
                        from: &from,
                        body: body.as_deref(),
                        template_id: template_id.as_deref(),
                        category: category.as_deref(),
                        on_missing_field: *on_missing_field,
                    };
                    match self.send(&a, &run, &contact, &data, &send, now).await? {
                        Ok(id) => {
                            entry["outcome"] = json!("sent");
                            entry["message_id"] = json!(id.to_string());
                            run.reply_to = Some(from);
                        }
                        Err(StepStop::Skip(reason)) => {
                            entry["outcome"] = json!("skipped");
                            entry["detail"] = json!(reason);
                        }
                        Err(StepStop::End { state, code, message }) => {
                            entry["outcome"] = json!(state);
                            entry["detail"] = json!(message);
                            log.push(entry);
                            run.state = state.into();
                            run.due_at = None;
                            run.error = Some(json!({"code": code, "message": message}).to_string());
                            break;
                        }
                    }
                }
                Step::Wait { duration, until: reply, timeout } => {
                    if reply.is_some() {
                        let wait = timeout.as_deref().and_then(parse_duration).unwrap_or(REPLY_WAIT_MS);
                        run.state = "waiting".into();
                        run.reply = None;
                        run.reply_from = Some(contact.phone.clone());
                        pause_until = Some(now.plus_millis(wait));
                        entry["until"] = json!(rfc3339(now.plus_millis(wait)));
                        entry["outcome"] = json!("waiting_for_reply");
                    } else {
                        let wait = duration.as_deref().and_then(parse_duration).unwrap_or(0);
                        pause_until = Some(now.plus_millis(wait));
                        entry["until"] = json!(rfc3339(now.plus_millis(wait)));
                        entry["outcome"] = json!("waiting");
                    }
                }
                Step::Branch { cases, .. } => {
                    let case = pick_case(cases, run.reply.as_deref());
                    entry["reply"] = json!(run.reply);
                    entry["outcome"] =
                        json!(if case == cases.len() { "default".to_string() } else { format!("case {case}") });
                    next = enter_case(&spec.steps, &path, case);
                }
                Step::Tag { tag } | Step::Untag { tag } => {
                    let current = self.store.contact(run.account_id, &contact.id).await?;
                    let mut tags = current.map(|c| c.tags).unwrap_or_default();
                    let adding = matches!(step, Step::Tag { .. });
                    tags.retain(|t| t != tag);
                    if adding {
                        tags.push(tag.clone());
                    }
                    let patch = ContactPatch { tags: Some(tags), ..ContactPatch::default() };
                    match self.contacts.update(run.account_id, &contact.id, patch).await {
                        Ok(_) => entry["outcome"] = json!("done"),
                        Err(e @ (ServiceError::Store(_) | ServiceError::Engine(_))) => return Err(e),
                        Err(e) => {
                            entry["outcome"] = json!("skipped");
                            entry["detail"] = json!(e.to_string());
                        }
                    }
                }
                Step::AddToList { list_id } => {
                    match self
                        .contacts
                        .add_members(run.account_id, list_id, std::slice::from_ref(&contact.id), &[])
                        .await
                    {
                        Ok(_) => entry["outcome"] = json!("done"),
                        Err(e @ (ServiceError::Store(_) | ServiceError::Engine(_))) => return Err(e),
                        Err(e) => {
                            entry["outcome"] = json!("skipped");
                            entry["detail"] = json!(e.to_string());
                        }
                    }
                }
                Step::RemoveFromList { list_id } => {
                    self.store.remove_member(list_id, &contact.id).await?;
                    entry["outcome"] = json!("done");
                }
                Step::Webhook { url } => {
                    let Some(key) = MessageId::parse(&run.id) else {
                        return Err(corrupt(format!("automation run id {:?}", run.id)));
                    };
                    let id = format!("{}:{}", run.id, run.position);
                    let payload = json!({
                        "id": id, "type": "automation.step", "at": at,
                        "automation_id": a.id, "automation": a.name, "run_id": run.id, "step": run.position,
                        "contact": {"id": contact.id, "phone": contact.phone, "name": contact.name,
                            "fields": contact.fields},
                        "data": data, "reply": run.reply,
                    });
                    let callback = smsgate_store::PayloadCallback {
                        id,
                        account_id: run.account_id,
                        key,
                        seq: i64::try_from(log.len()).unwrap_or(i64::MAX),
                        url: url.clone(),
                        payload: payload.to_string(),
                    };
                    self.store.enqueue_payload(&callback, now).await?;
                    entry["outcome"] = json!("queued");
                }
            }
            log.push(entry);
            // Past the last step, the position is one past the end of the top list: the run completes there.
            run.position = position_text(&next.unwrap_or_else(|| vec![spec.steps.len()]));
            if let Some(t) = pause_until {
                run.due_at = Some(t);
                break;
            }
        }
        run.log = Value::Array(log).to_string();
        run.updated_at = self.now();
        self.store.save_automation_run(&run, &expected).await?;
        Ok(more)
    }

    /// Renders, admits and stores a send step's text for the contact: the message's id, or why not.
    async fn send(
        &self,
        a: &Automation,
        run: &AutomationRun,
        contact: &Contact,
        data: &Value,
        step: &SendStep<'_>,
        now: Timestamp,
    ) -> Result<std::result::Result<MessageId, StepStop>> {
        let end = |state: &'static str, code: &str, message: String| {
            Ok(Err(StepStop::End { state, code: code.to_string(), message }))
        };
        let body = match (step.body, step.template_id) {
            (Some(b), _) => b.to_string(),
            (None, Some(id)) => match self.store.template(a.account_id, id).await? {
                Some(t) => t.body,
                None => return end("failed", "invalid_template", format!("template {id:?} was deleted")),
            },
            (None, None) => return end("failed", "invalid_body", "the step has no body".into()),
        };
        let zone = zone_of(contact);
        let ctx = templates::context(Some(contact), zone.as_deref(), data);
        let rendered = match Compiled::new(&body).and_then(|t| t.render(&ctx)) {
            Ok(r) => r,
            Err(e) => return end("failed", e.code(), e.to_string()),
        };
        if !rendered.missing.is_empty() {
            let missing = rendered.missing.join(", ");
            match step.on_missing_field {
                OnMissingField::Default => {}
                OnMissingField::Skip => return Ok(Err(StepStop::Skip(format!("missing_field: {missing}")))),
                OnMissingField::Fail => return end("failed", "missing_field", format!("missing: {missing}")),
            }
        }
        let base = self.links.base(a.account_id).await?;
        let short = Links::shorten(&rendered, &base, a.account_id, Some(&contact.id), None, now);
        let request = Request {
            to: contact.phone.clone(),
            from: step.from.to_string(),
            body: short.text,
            category: Category::requested(step.category.unwrap_or("transactional")).unwrap_or_default(),
            reference: Some(format!("automation {}", a.id)),
            ..Request::default()
        };
        let messages = &self.contacts.messages;
        let prepared = match messages
            .prepare_for(a.account_id, &request, now, ZoneOf::Contact(contact.time_zone.as_deref()))
            .await
        {
            Ok(p) => p,
            Err(ServiceError::Rejected(r)) if r.code == ErrorCode::RecipientOptedOut => {
                return end("canceled", "recipient_opted_out", r.message);
            }
            Err(e @ (ServiceError::Rejected(_) | ServiceError::Forbidden { .. } | ServiceError::Invalid { .. })) => {
                return end("failed", e.code(), e.to_string());
            }
            Err(e) => return Err(e),
        };
        // The same key each time the step is taken, so a step taken again after a crash stores nothing new.
        let key = format!("smsgate:automation:{}:{}", run.id, run.position);
        let keyed = vec![(prepared, Some((key.clone(), key)))];
        let stored = messages.submit_keyed(a.account_id, keyed, now).await?;
        let Some((inserted, message)) = stored.into_iter().next() else {
            return Err(corrupt("a send stored nothing".into()));
        };
        let id = match inserted {
            Inserted::New => {
                let mut links = short.links;
                for l in &mut links {
                    l.message_id = Some(message.id.to_string());
                }
                if !links.is_empty() {
                    self.store.insert_links(&links).await?;
                }
                message.id
            }
            Inserted::Duplicate { id, .. } => id,
        };
        Ok(Ok(id))
    }
}

/// A send step's settings.
struct SendStep<'a> {
    from: &'a str,
    body: Option<&'a str>,
    template_id: Option<&'a str>,
    category: Option<&'a str>,
    on_missing_field: OnMissingField,
}

/// What a date trigger did for a contact.
enum DateChange {
    /// Its run for that time was there already.
    Same,
    Started(String),
    /// The runs for the old time were canceled, one for the new time stored.
    Moved(String, Vec<String>),
    /// The time is past: no run, and these for another time canceled.
    Ended(Vec<String>),
}

/// What an event did, as its answer shows it.
#[derive(Default)]
struct Outcome {
    started: Vec<String>,
    moved: Vec<String>,
    canceled: Vec<String>,
    errors: Vec<Value>,
}

impl Outcome {
    fn note(&mut self, change: DateChange) {
        match change {
            DateChange::Started(run) => self.started.push(run),
            DateChange::Moved(run, old) => {
                self.moved.push(run);
                self.canceled.extend(old);
            }
            DateChange::Ended(old) => self.canceled.extend(old),
            DateChange::Same => {}
        }
    }

    fn json(self) -> Value {
        json!({"started": self.started, "moved": self.moved, "canceled": self.canceled, "errors": self.errors})
    }
}

fn check_event_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(invalid("invalid_event", format!("{name:?} is not an event name: 1 to 64 of A-Z a-z 0-9 . _ - :")))
    }
}

/// A JSON value as the text a key is made of.
fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

/// The contact as a date field is looked up in (`fields.NAME`).
fn contact_json(c: &Contact) -> Value {
    json!({"fields": c.fields, "name": c.name, "phone": c.phone})
}

/// The zone a contact's local times are in: its own, the number's, else UTC.
fn zone(c: &Contact) -> chrono_tz::Tz {
    zone_of(c).and_then(|z| z.parse().ok()).unwrap_or(chrono_tz::UTC)
}

fn log_of(run: &AutomationRun) -> Vec<Value> {
    serde_json::from_str(&run.log).unwrap_or_default()
}

fn cursor_of(cursor: Option<&str>) -> (Timestamp, String) {
    let mut parts = cursor.unwrap_or("").splitn(2, ' ');
    let at = parts.next().and_then(|t| t.parse().ok()).map_or(Timestamp(i64::MIN), Timestamp);
    (at, parts.next().unwrap_or("").to_string())
}

fn step_type(step: &Step) -> &'static str {
    match step {
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

/// A new run of `a` for a contact, at its first step, due at `due`.
fn new_run(
    a: &Automation,
    contact: &Contact,
    trigger_key: String,
    subject: String,
    data: &Value,
    now: Timestamp,
    due: Option<Timestamp>,
) -> AutomationRun {
    AutomationRun {
        id: MessageId::generate().to_string(),
        automation_id: a.id.clone(),
        account_id: a.account_id,
        contact_id: contact.id.clone(),
        trigger_key,
        subject,
        state: "active".into(),
        position: "0".into(),
        due_at: due,
        reply_from: None,
        reply_to: None,
        data: data.to_string(),
        reply: None,
        log: "[]".into(),
        error: None,
        lease_owner: None,
        lease_until: None,
        created_at: now,
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let check = |s: &str, ms: Option<i64>| assert_eq!(parse_duration(s), ms, "{s}");
        check("24h", Some(86_400_000));
        check("-24h", Some(-86_400_000));
        check("1d12h", Some(129_600_000));
        check("90m", Some(5_400_000));
        check("2w", Some(1_209_600_000));
        check("+30s", Some(30_000));
        for bad in ["", "h", "24", "24x", "-", "1.5h", "h24", "99999999999999999999d"] {
            check(bad, None);
        }
    }

    #[test]
    fn times_as_fields_hold_them() {
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap_or(chrono_tz::UTC);
        let utc = |s: &str| {
            Some(Timestamp(chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).unwrap_or(0)))
        };
        let check = |v: Value, expected: Option<Timestamp>| assert_eq!(parse_time(&v, ny), expected, "{v}");
        check(json!("2026-12-03T15:00:00-05:00"), utc("2026-12-03T20:00:00Z"));
        check(json!("2026-12-03T15:00"), utc("2026-12-03T20:00:00Z"));
        check(json!("2026-12-03 15:00:30"), utc("2026-12-03T20:00:30Z"));
        check(json!("2026-07-03 15:00"), utc("2026-07-03T19:00:00Z"));
        check(json!("2026-12-03"), utc("2026-12-03T05:00:00Z"));
        // 02:30 on the day clocks spring forward does not exist: an hour later.
        check(json!("2026-03-08 02:30"), utc("2026-03-08T07:30:00Z"));
        check(json!(1_800_000_000), Some(Timestamp(1_800_000_000_000)));
        check(json!("next tuesday"), None);
        check(json!(true), None);
    }

    fn steps() -> Vec<Step> {
        serde_json::from_value(json!([
            {"type": "send", "from": "+1", "body": "Reply YES"},
            {"type": "wait", "until": "reply"},
            {"type": "branch", "cases": [
                {"match": ["YES", "Y"], "steps": [{"type": "tag", "tag": "a"}, {"type": "tag", "tag": "b"}]},
                {"match": ["NO"], "steps": []}
            ], "default": [{"type": "untag", "tag": "a"}]},
            {"type": "webhook", "url": "https://x.example"}
        ]))
        .unwrap_or_default()
    }

    #[test]
    fn positions_walk_into_and_out_of_branches() {
        let s = steps();
        assert_eq!(s.len(), 4);
        assert_eq!(next_position(&s, &[0]), Some(vec![1]));
        assert_eq!(enter_case(&s, &[2], 0), Some(vec![2, 0, 0]));
        assert_eq!(next_position(&s, &[2, 0, 0]), Some(vec![2, 0, 1]));
        assert_eq!(next_position(&s, &[2, 0, 1]), Some(vec![3]), "out of the branch");
        assert_eq!(enter_case(&s, &[2], 1), Some(vec![3]), "a case with no steps goes past the branch");
        assert_eq!(enter_case(&s, &[2], 2), Some(vec![2, 2, 0]), "the default");
        assert_eq!(next_position(&s, &[3]), None);
        assert!(matches!(step_at(&s, &[2, 2, 0]), Some(Step::Untag { .. })));
        assert_eq!(step_at(&s, &[2, 5, 0]), None);
        assert_eq!(parse_position("2.0.1"), Some(vec![2, 0, 1]));
        assert_eq!(parse_position("2.0"), None);
        assert_eq!(position_text(&[2, 0, 1]), "2.0.1");
    }

    #[test]
    fn replies_pick_cases() {
        let Some(Step::Branch { cases, .. }) = steps().into_iter().nth(2) else { panic!("a branch") };
        assert_eq!(pick_case(&cases, Some("yes")), 0);
        assert_eq!(pick_case(&cases, Some(" Y! ")), 0);
        assert_eq!(pick_case(&cases, Some("Yes please")), 0, "the first word");
        assert_eq!(pick_case(&cases, Some("no")), 1);
        assert_eq!(pick_case(&cases, Some("maybe")), 2, "the default");
        assert_eq!(pick_case(&cases, None), 2, "no reply");
    }

    #[test]
    fn specs_refuse_what_they_do_not_know() {
        let spec = |v: Value| serde_json::from_value::<AutomationSpec>(v);
        assert!(spec(json!({"name": "a", "trigger": {"type": "event", "event": "x"}, "steps": []})).is_ok());
        assert!(
            spec(json!({"name": "a", "trigger": {"type": "event", "event": "x", "nope": 1}, "steps": []})).is_err()
        );
        assert!(spec(json!({"name": "a", "trigger": {"type": "cron"}, "steps": []})).is_err());
        assert!(
            spec(json!({"name": "a", "trigger": {"type": "event", "event": "x"},
            "steps": [{"type": "wait", "duration": "1h", "extra": true}]}))
            .is_err()
        );
    }
}
