//! [`Campaigns`]: one text, personalized, to many contacts of an account — now, at a time, or on a cron — sent
//! through the same admission as every other message (opt-out, quiet hours in each recipient's zone, sender
//! ownership, encoding), exactly once per recipient.
//!
//! A start makes a run. The run first materializes its audience: one recipient row per contact (the lists, segments
//! and contacts named, less the excluded), keyed by run and contact, page by page with its progress saved in the same
//! transaction. Then it sends in batches: each recipient's text rendered and admitted, the batch stored in one
//! transaction with an idempotency key per recipient (`smsgate:campaign:{run}:{contact}:{attempt}`), then the
//! recipients settled with their message ids. A crash between the two is harmless: the next try stores nothing
//! new (the keys are taken) and settles the recipients with the messages stored the first time. A node works on a
//! run under a lease, so several nodes share campaigns without sharing a run.
//!
//! A pause stops new sends at once and takes the run's texts still waiting in the queue back (canceled, their
//! recipients pending again, to be sent on resume under a new attempt's key); a cancel does the same and marks
//! every recipient not sent `canceled`. What reached a carrier stays sent.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use smsgate_core::admission::{ErrorCode, Request};
use smsgate_core::consent::Category;
use smsgate_core::{AccountId, MessageId, Status, Timestamp};
use smsgate_store::{Campaign, ContactQuery, Inserted, Recipient, Run, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::contacts::{Contacts, SegmentFilter, zone_of};
use crate::error::{Result, ServiceError};
use crate::links::Links;
use crate::messages::{Messages, ZoneOf};
use crate::templates::{self, Compiled};

/// The most recipients one send step renders and stores (one transaction).
const BATCH: usize = 1000;
/// The contacts one materializing step reads.
const PAGE: u32 = 1000;
/// Batches of a run stored at once (their commits group in the store's writer).
const IN_FLIGHT: usize = 3;
/// How long a node holds a run it works on without renewing.
const LEASE: Duration = Duration::from_secs(30);
/// How long a node works on one run before looking at the others.
const SLICE: Duration = Duration::from_secs(2);
/// The most contacts, lists and segments an audience names.
const MAX_NAMED: usize = 10_000;
/// The most numbers in a sender pool.
const MAX_POOL: usize = 100;
/// The most campaigns a page lists.
pub const MAX_PAGE: u32 = 500;

/// Who a campaign is for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Audience {
    /// List ids (or names, resolved at create).
    pub lists: Vec<String>,
    /// Segment ids.
    pub segments: Vec<String>,
    /// Contact ids.
    pub contacts: Vec<String>,
    /// Who is left out even if named above.
    pub exclude: Exclude,
}

/// Who an audience leaves out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Exclude {
    pub lists: Vec<String>,
    pub segments: Vec<String>,
    pub contacts: Vec<String>,
}

/// When a campaign runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Once, at this time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Each time this cron expression matches (five fields, or six with seconds), in `time_zone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// An IANA zone for `cron` (UTC when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// What a recipient whose contact lacks a merge field gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingField {
    /// The text as rendered: the template's `default(...)`, else nothing, where the field would be.
    #[default]
    Default,
    /// No text; the recipient is counted as skipped (`missing_field`).
    Skip,
    /// The campaign stops (paused, with the contact and the fields in its `error`) before sending anything more.
    Fail,
}

/// A campaign as a caller describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    pub audience: Audience,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_pool: Option<Vec<String>>,
    /// `transactional` or `marketing`; the template's when it has one and this is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// At most this many texts a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<u32>,
    #[serde(default)]
    pub on_missing_field: OnMissingField,
    /// The campaign's own merge data (`{{ data.offer }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl CampaignSpec {
    /// The sender a text to `phone` goes from: the campaign's, or the pool's number for that phone.
    fn sender_for(&self, phone: &str) -> String {
        match (&self.from, &self.sender_pool) {
            (Some(f), _) => f.clone(),
            (None, Some(pool)) => sticky(pool, phone).to_string(),
            (None, None) => String::new(),
        }
    }
}

/// A campaign with its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignView {
    pub campaign: Campaign,
    pub spec: CampaignSpec,
    pub stats: Stats,
}

/// What became of a campaign's (or a run's) recipients and texts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Contacts it is for (each once).
    pub audience: u64,
    /// Not sent yet.
    pub pending: u64,
    /// Not sent, by why: `opted_out`, `missing_field`, `invalid_number`, `duplicate` (named twice by the audience,
    /// sent once), ...
    pub skipped: serde_json::Map<String, Value>,
    /// Recipients a text was made for (stored for sending).
    pub queued: u64,
    /// The texts the campaign made, whatever became of them (a text taken back by a pause and made again on resume
    /// counts twice here, once in `queued`).
    pub texts: u64,
    /// Texts waiting for the recipient's allowed hours or their turn.
    pub waiting: u64,
    /// Texts a carrier took (delivered or not, so far).
    pub sent: u64,
    pub delivered: u64,
    pub undelivered: u64,
    /// Refused, expired or failed before a carrier took them.
    pub failed: u64,
    /// Taken back by a cancel.
    pub canceled: u64,
    /// Messages from recipients answering the campaign's texts (within a week of them).
    pub replies: u64,
    /// Numbers that opted out (by keyword) answering the campaign's texts.
    pub opt_outs: u64,
    /// Visits of the campaign's short links by people (link previews and crawlers not counted).
    pub clicks: u64,
    /// Contacts who clicked.
    pub clicked: u64,
    /// What the texts cost, in millionths of the account's currency.
    pub cost_micros: i64,
}

/// One run of a campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub run: Run,
    pub stats: Stats,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

fn no_campaign() -> ServiceError {
    ServiceError::not_found("not_found", "no such campaign")
}

fn parse_spec(c: &Campaign) -> Result<CampaignSpec> {
    serde_json::from_str(&c.spec)
        .map_err(|e| ServiceError::Store(smsgate_store::StoreError::Corrupt(format!("campaign {} spec: {e}", c.id))))
}

fn time_of(s: &str) -> Result<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| Timestamp(t.timestamp_millis()))
        .map_err(|_| invalid("invalid_schedule", format!("schedule.at {s:?} is not an RFC 3339 time")))
}

/// The next time `cron` matches after `after`, in `zone`.
pub(crate) fn next_cron(cron: &str, zone: &str, after: Timestamp) -> Result<Timestamp> {
    let pattern = croner::Cron::from_str(cron)
        .map_err(|e| invalid("invalid_schedule", format!("schedule.cron {cron:?}: {e}")))?;
    let tz: chrono_tz::Tz =
        zone.parse().map_err(|_| invalid("invalid_schedule", format!("{zone:?} is not an IANA time zone")))?;
    let start = chrono::DateTime::from_timestamp_millis(after.0)
        .ok_or_else(|| invalid("invalid_schedule", "time out of range"))?
        .with_timezone(&tz);
    let next = pattern
        .find_next_occurrence(&start, false)
        .map_err(|e| invalid("invalid_schedule", format!("schedule.cron {cron:?} never matches: {e}")))?;
    Ok(Timestamp(next.timestamp_millis()))
}

/// The pool's number a contact is sent from: the same one every time (rendezvous hashing: the highest hash of
/// the contact's number and a pool number wins, so a number leaving the pool moves only its own contacts).
fn sticky<'a>(pool: &'a [String], phone: &str) -> &'a str {
    pool.iter()
        .max_by_key(|sender| {
            let mut h = Sha256::new();
            h.update(phone.as_bytes());
            h.update([0]);
            h.update(sender.as_bytes());
            let d = h.finalize();
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        })
        .map_or("", String::as_str)
}

/// Why admission's refusal skips a recipient.
fn skip_reason(code: ErrorCode) -> String {
    match code {
        ErrorCode::RecipientOptedOut => "opted_out".into(),
        ErrorCode::InvalidDestination => "invalid_number".into(),
        other => other.as_str().into(),
    }
}

/// The campaigns of accounts, and the worker that runs them.
#[derive(Debug, Clone)]
pub struct Campaigns {
    messages: Messages,
    contacts: Contacts,
    links: Links,
    store: Arc<dyn Store>,
    /// This node's name, for leases.
    node: String,
    wake: Arc<Notify>,
    /// Where each pausing or canceling run's pass over its queued recipients is (their order number).
    taken_back: Arc<std::sync::Mutex<HashMap<String, i64>>>,
}

/// One audience source a run reads while materializing.
enum Source {
    List(String),
    Segment(SegmentFilter),
    Contacts(Vec<String>),
}

/// What a run's audience leaves out.
struct Exclusions {
    lists: Vec<String>,
    segments: Vec<SegmentFilter>,
    contacts: std::collections::HashSet<String>,
}

impl Campaigns {
    pub fn new(contacts: Contacts, links: Links, store: Arc<dyn Store>, node: impl Into<String>) -> Campaigns {
        Campaigns {
            messages: contacts.messages.clone(),
            contacts,
            links,
            store,
            node: node.into(),
            wake: Arc::default(),
            taken_back: Arc::default(),
        }
    }

    fn now(&self) -> Timestamp {
        self.messages.now()
    }

    /// Checks a spec for `account` and puts it in its stored form (lists named by name become ids).
    async fn checked(&self, account: AccountId, mut spec: CampaignSpec) -> Result<CampaignSpec> {
        spec.name = spec.name.trim().to_string();
        if spec.name.is_empty() || spec.name.chars().count() > 128 {
            return Err(invalid("invalid_name", "a campaign's name has 1 to 128 characters"));
        }
        let a = &mut spec.audience;
        let named = a.lists.len() + a.segments.len() + a.contacts.len();
        if named == 0 {
            return Err(invalid("invalid_audience", "audience names no list, segment or contact"));
        }
        let excluded = a.exclude.lists.len() + a.exclude.segments.len() + a.exclude.contacts.len();
        if named > MAX_NAMED || excluded > MAX_NAMED {
            return Err(invalid(
                "invalid_audience",
                format!("an audience names at most {MAX_NAMED} in all, and excludes as many"),
            ));
        }
        for list in a.lists.iter_mut().chain(a.exclude.lists.iter_mut()) {
            let found = self.contacts.list_by_id_or_name(account, list).await?;
            *list = found.ok_or_else(|| invalid("invalid_audience", format!("no list {list:?} in this account")))?.id;
        }
        for segment in a.segments.iter().chain(&a.exclude.segments) {
            if self.store.segment(account, segment).await?.is_none() {
                return Err(invalid("invalid_audience", format!("no segment {segment:?} in this account")));
            }
        }
        for id in a.contacts.iter().chain(&a.exclude.contacts) {
            if id.is_empty() || id.len() > 64 {
                return Err(invalid("invalid_audience", format!("{id:?} is not a contact id")));
            }
        }
        match (&spec.template_id, &spec.body) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid("invalid_body", "give template_id or body, not both"));
            }
            (Some(id), None) => {
                let t = self.store.template(account, id).await?;
                let t = t.ok_or_else(|| invalid("invalid_template", format!("no template {id:?} in this account")))?;
                spec.category.get_or_insert_with(|| t.category.as_str().to_string());
            }
            (None, Some(body)) => templates::check(body)?,
        }
        let category = spec.category.as_deref().unwrap_or("");
        if Category::requested(category).is_none() {
            return Err(invalid("invalid_category", "category is transactional or marketing"));
        }
        let senders: Vec<String> = match (&spec.from, &spec.sender_pool) {
            (Some(from), None) => vec![from.clone()],
            (None, Some(pool)) if !pool.is_empty() && pool.len() <= MAX_POOL => pool.clone(),
            (None, Some(_)) => {
                return Err(invalid("invalid_sender", format!("a sender_pool has 1 to {MAX_POOL} numbers")));
            }
            _ => return Err(invalid("invalid_sender", "give from or sender_pool, not both")),
        };
        for from in &senders {
            self.messages.check_sender(account, from).await?;
        }
        if let Some(s) = &spec.schedule {
            match (&s.at, &s.cron) {
                (Some(at), None) => {
                    time_of(at)?;
                }
                (None, Some(cron)) => {
                    next_cron(cron, s.time_zone.as_deref().unwrap_or("UTC"), self.now())?;
                }
                _ => return Err(invalid("invalid_schedule", "a schedule has at or cron, not both")),
            }
        }
        if spec.throughput == Some(0) {
            return Err(invalid("invalid_throughput", "throughput is at least 1 text a second"));
        }
        if spec.data.as_ref().is_some_and(|d| !d.is_object()) {
            return Err(invalid("invalid_data", "data is a JSON object"));
        }
        Ok(spec)
    }

    /// Creates a campaign, a `draft` until started.
    pub async fn create(&self, account: AccountId, spec: CampaignSpec) -> Result<CampaignView> {
        let spec = self.checked(account, spec).await?;
        let now = self.now();
        let campaign = Campaign {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            name: spec.name.clone(),
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            state: "draft".into(),
            next_run_at: None,
            error: None,
            current_run: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_campaign(&campaign).await?;
        Ok(CampaignView { campaign, spec, stats: Stats::default() })
    }

    async fn find(&self, account: AccountId, id: &str) -> Result<Campaign> {
        self.store.campaign(account, id).await?.ok_or_else(no_campaign)
    }

    /// An account's campaign with its live numbers.
    pub async fn get(&self, account: AccountId, id: &str) -> Result<CampaignView> {
        let campaign = self.find(account, id).await?;
        let spec = parse_spec(&campaign)?;
        let stats = self.stats(&campaign.id, None, 0).await?;
        Ok(CampaignView { campaign, spec, stats })
    }

    /// An account's campaigns (without their numbers), oldest first, after `cursor`.
    pub async fn list(&self, account: AccountId, cursor: Option<&str>, limit: u32) -> Result<Vec<CampaignView>> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid("invalid_limit", format!("limit must be 1 to {MAX_PAGE}")));
        }
        let page = self.store.campaigns(account, cursor, limit).await?;
        page.into_iter()
            .map(|campaign| Ok(CampaignView { spec: parse_spec(&campaign)?, campaign, stats: Stats::default() }))
            .collect()
    }

    /// Deletes a campaign that is not under way (its texts stay, as every message does).
    pub async fn delete(&self, account: AccountId, id: &str) -> Result<()> {
        let c = self.find(account, id).await?;
        if matches!(c.state.as_str(), "running" | "paused") {
            return Err(ServiceError::conflict("campaign_active", "cancel the campaign before deleting it"));
        }
        self.store.delete_campaign(account, id).await?;
        Ok(())
    }

    /// A campaign's runs with their numbers, oldest first.
    pub async fn runs(&self, account: AccountId, id: &str) -> Result<Vec<RunView>> {
        let c = self.find(account, id).await?;
        let mut out = Vec::new();
        for run in self.store.runs(&c.id).await? {
            let stats = self.stats(&c.id, Some(&run.id), run.duplicates).await?;
            out.push(RunView { run, stats });
        }
        Ok(out)
    }

    /// The ids of an account's campaign's runs, oldest first (for its report).
    pub async fn run_ids(&self, account: AccountId, id: &str) -> Result<Vec<String>> {
        let c = self.find(account, id).await?;
        Ok(self.store.runs(&c.id).await?.into_iter().map(|r| r.id).collect())
    }

    /// A page of a run's report (the run one of [`Campaigns::run_ids`] gave), after order number `after`.
    pub async fn report_page(&self, run: &str, after: i64, limit: u32) -> Result<Vec<smsgate_store::ReportRow>> {
        Ok(self.store.report(run, after, limit).await?)
    }

    /// Starts a `draft`: at once, or armed for its schedule (`scheduled`). A campaign `completed` or `canceled`
    /// may be started again: a new run, with the audience as it is now.
    pub async fn start(&self, account: AccountId, id: &str) -> Result<CampaignView> {
        let c = self.find(account, id).await?;
        if !matches!(c.state.as_str(), "draft" | "completed" | "canceled") {
            return Err(ServiceError::conflict(
                "invalid_state",
                format!("the campaign is {}; only a draft, completed or canceled campaign starts", c.state),
            ));
        }
        let spec = parse_spec(&c)?;
        let now = self.now();
        let next = match &spec.schedule {
            Some(Schedule { at: Some(at), .. }) => Some(time_of(at)?).filter(|t| *t > now),
            Some(Schedule { cron: Some(cron), time_zone, .. }) => {
                Some(next_cron(cron, time_zone.as_deref().unwrap_or("UTC"), now)?)
            }
            _ => None,
        };
        match next {
            Some(at) => {
                let armed = Campaign { state: "scheduled".into(), next_run_at: Some(at), updated_at: now, ..c.clone() };
                if !self.store.save_campaign(&armed, &c.state).await? {
                    return Err(ServiceError::conflict("invalid_state", "the campaign changed meanwhile; try again"));
                }
            }
            None => {
                if !self.start_run(&c, None).await? {
                    return Err(ServiceError::conflict("invalid_state", "the campaign changed meanwhile; try again"));
                }
            }
        }
        self.get(account, id).await
    }

    /// Starts a run of `c` (in its current state) now; `next` is when a recurring campaign runs after this one.
    async fn start_run(&self, c: &Campaign, next: Option<Timestamp>) -> Result<bool> {
        let now = self.now();
        let run = Run::new(uuid::Uuid::now_v7().to_string(), c, now);
        let running = Campaign { state: "running".into(), next_run_at: next, updated_at: now, ..c.clone() };
        let started = self.store.start_run(&running, &c.state, &run).await?;
        if started {
            info!(campaign = %c.id, run = %run.id, "campaign run started");
            self.wake.notify_one();
        }
        Ok(started)
    }

    /// Pauses a running campaign: no new text within a second, and its texts still waiting in the queue taken back
    /// (sent on resume).
    pub async fn pause(&self, account: AccountId, id: &str) -> Result<CampaignView> {
        self.turn(account, id, &["running"], "paused", "pausing").await
    }

    /// Resumes a paused campaign where it stopped.
    pub async fn resume(&self, account: AccountId, id: &str) -> Result<CampaignView> {
        self.turn(account, id, &["paused"], "running", "running").await
    }

    /// Cancels a campaign: what was sent stays sent; the rest is marked canceled (and a scheduled campaign is not
    /// run again).
    pub async fn cancel(&self, account: AccountId, id: &str) -> Result<CampaignView> {
        let c = self.find(account, id).await?;
        if matches!(c.state.as_str(), "draft" | "scheduled") {
            let now = self.now();
            let canceled = Campaign { state: "canceled".into(), next_run_at: None, updated_at: now, ..c.clone() };
            if !self.store.save_campaign(&canceled, &c.state).await? {
                return Err(ServiceError::conflict("invalid_state", "the campaign changed meanwhile; try again"));
            }
            return self.get(account, id).await;
        }
        self.turn(account, id, &["running", "paused"], "canceled", "canceling").await
    }

    /// Moves a campaign from one of `from` to `to`, and its current run to `run_state`.
    async fn turn(
        &self,
        account: AccountId,
        id: &str,
        from: &[&str],
        to: &str,
        run_state: &str,
    ) -> Result<CampaignView> {
        let c = self.find(account, id).await?;
        if !from.contains(&c.state.as_str()) {
            return Err(ServiceError::conflict(
                "invalid_state",
                format!("the campaign is {}; this needs it {}", c.state, from.join(" or ")),
            ));
        }
        let run_id = c.current_run.clone().ok_or_else(no_campaign)?;
        let mut run = self.store.run(&run_id).await?.ok_or_else(no_campaign)?;
        let now = self.now();
        run.state = run_state.to_string();
        run.updated_at = now;
        let mut moved = Campaign { state: to.to_string(), updated_at: now, ..c.clone() };
        if to == "canceled" {
            moved.next_run_at = None;
        }
        if to == "running" {
            moved.error = None;
        }
        self.store.save_run(&run, Some(&moved)).await?;
        self.wake.notify_one();
        self.get(account, id).await
    }

    /// Sends the campaign's text once to `to` (made from the contact with that number, if the account has one),
    /// through the same admission; it is not counted in the campaign's numbers.
    pub async fn test(&self, account: AccountId, id: &str, to: &str) -> Result<crate::Submitted> {
        let c = self.find(account, id).await?;
        let spec = parse_spec(&c)?;
        let body = self.body_of(account, &spec).await?;
        let phone = self.contacts.normalize_phone(to)?;
        let contact = self.store.contact_by_phone(account, &phone).await?;
        let zone = contact
            .as_ref()
            .map_or_else(|| smsgate_core::quiet::place_of(&phone).map(|p| p.zone.name().to_string()), zone_of);
        let data = spec.data.clone().unwrap_or_else(|| json!({}));
        let mut ctx = templates::context(contact.as_ref(), zone.as_deref(), &data);
        if contact.is_none() {
            ctx["phone"] = json!(phone);
        }
        let rendered = Compiled::new(&body)?.render(&ctx)?;
        let base = self.links.base(account).await?;
        let now = self.now();
        let short = Links::shorten(&rendered, &base, account, contact.as_ref().map(|c| c.id.as_str()), None, now);
        let from = spec.sender_for(&phone);
        let request = Request {
            to: phone,
            from,
            body: short.text,
            category: Category::requested(spec.category.as_deref().unwrap_or("")).unwrap_or_default(),
            reference: Some(format!("campaign test {}", c.id)),
            ..Request::default()
        };
        let prepared = self.messages.prepare(account, &request, now).await?;
        self.store_links(short.links, prepared.message.id).await?;
        self.messages.submit_prepared(account, prepared, None, now).await
    }

    /// Stores the links made for a message.
    async fn store_links(&self, mut links: Vec<smsgate_store::Link>, message: MessageId) -> Result<()> {
        if links.is_empty() {
            return Ok(());
        }
        for l in &mut links {
            l.message_id = Some(message.to_string());
        }
        Ok(self.store.insert_links(&links).await?)
    }

    /// The body a campaign sends.
    async fn body_of(&self, account: AccountId, spec: &CampaignSpec) -> Result<String> {
        match (&spec.body, &spec.template_id) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(id)) => {
                let t = self.store.template(account, id).await?;
                Ok(t.ok_or_else(|| invalid("invalid_template", format!("template {id:?} was deleted")))?.body)
            }
            (None, None) => Err(invalid("invalid_body", "the campaign has no body")),
        }
    }

    /// The numbers of a campaign (or of one of its runs, with the duplicates it counted).
    async fn stats(&self, campaign: &str, run: Option<&str>, duplicates: u64) -> Result<Stats> {
        let mut s = Stats::default();
        let mut duplicates = duplicates;
        if run.is_none() {
            for r in self.store.runs(campaign).await? {
                duplicates += r.duplicates;
            }
        }
        for c in self.store.recipient_counts(campaign, run).await? {
            s.audience += c.count;
            match c.state.as_str() {
                "pending" | "held" => s.pending += c.count,
                "skipped" | "canceled" => {
                    if c.state == "canceled" {
                        s.canceled += c.count;
                        continue;
                    }
                    let reason = c.reason.unwrap_or_else(|| "other".into());
                    let n = s.skipped.get(&reason).and_then(Value::as_u64).unwrap_or(0) + c.count;
                    s.skipped.insert(reason, json!(n));
                }
                _ => s.queued += c.count,
            }
        }
        if duplicates > 0 {
            s.skipped.insert("duplicate".into(), json!(duplicates));
        }
        if run.is_none() {
            (s.clicks, s.clicked) = self.store.campaign_clicks(campaign).await?;
            s.opt_outs = self.store.campaign_opt_outs(campaign).await?;
            // The texts, by what became of them; a text canceled by a pause was never sent and its recipient is
            // counted again when sent on resume.
            for m in self.store.campaign_messages(campaign).await? {
                s.cost_micros += m.price_micros;
                if m.status != Status::Received {
                    s.texts += m.count;
                }
                match m.status {
                    Status::Scheduled | Status::Queued | Status::Sending => s.waiting += m.count,
                    Status::Sent => s.sent += m.count,
                    Status::Delivered => {
                        s.sent += m.count;
                        s.delivered += m.count;
                    }
                    Status::Undelivered => {
                        s.sent += m.count;
                        s.undelivered += m.count;
                    }
                    Status::Failed | Status::Expired => s.failed += m.count,
                    Status::Received => s.replies += m.count,
                    Status::Canceled => {}
                }
            }
        }
        Ok(s)
    }

    // The worker.

    /// Runs campaigns until `shutdown`: starts scheduled ones when due, and works on the runs under way (this
    /// node's, or any whose node stopped renewing its lease).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.tick(&shutdown).await {
                warn!(error = %e, "campaigns: a step failed; trying again in a second");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One round: due campaigns started, each active run worked on for a slice.
    pub async fn tick(&self, shutdown: &CancellationToken) -> Result<()> {
        let now = self.now();
        for c in self.store.due_campaigns(now, 100).await? {
            let spec = parse_spec(&c)?;
            let next = match &spec.schedule {
                Some(Schedule { cron: Some(cron), time_zone, .. }) => {
                    next_cron(cron, time_zone.as_deref().unwrap_or("UTC"), now).ok()
                }
                _ => None,
            };
            self.start_run(&c, next).await?;
        }
        for run in self.store.active_runs().await? {
            if shutdown.is_cancelled() {
                break;
            }
            self.work(run, shutdown).await?;
        }
        Ok(())
    }

    /// Works on a run for a slice, if this node holds (or takes) its lease.
    async fn work(&self, run: Run, shutdown: &CancellationToken) -> Result<()> {
        let started = std::time::Instant::now();
        let lease = |now: Timestamp| now.plus_millis(i64::try_from(LEASE.as_millis()).unwrap_or(30_000));
        let Some(c) = self.store.campaign(run.account_id, &run.campaign_id).await? else { return Ok(()) };
        let spec = parse_spec(&c)?;
        let mut compiled: Option<Compiled> = None;
        let mut exclusions: Option<Exclusions> = None;
        let mut pace = Pace::new(spec.throughput);
        // Sending is pipelined: the next batch is rendered and admitted while the one before is stored, and read
        // after the last order number taken (its recipients are not settled yet).
        let mut storing: std::collections::VecDeque<tokio::task::JoinHandle<Result<usize>>> = Default::default();
        let mut after = -1;
        let mut leased_at: Option<std::time::Instant> = None;
        let outcome = loop {
            if started.elapsed() >= SLICE || shutdown.is_cancelled() {
                break Ok(());
            }
            if leased_at.is_none_or(|at| at.elapsed() > LEASE / 3) {
                let now = self.now();
                if !self.store.lease_run(&run.id, &self.node, now, lease(now)).await? {
                    break Ok(());
                }
                leased_at = Some(std::time::Instant::now());
            }
            // The run as it is now: a pause or cancel takes effect at the next step.
            let Some(mut run) = self.store.run(&run.id).await? else { break Ok(()) };
            match run.state.as_str() {
                "running" if !run.materialized => {
                    if exclusions.is_none() {
                        exclusions = Some(self.exclusions(run.account_id, &spec).await?);
                    }
                    let ex = exclusions.as_ref().ok_or_else(no_campaign)?;
                    self.materialize(&mut run, &spec, ex).await?;
                }
                "running" => {
                    if compiled.is_none() {
                        match self.body_of(run.account_id, &spec).await.and_then(|b| Compiled::new(&b)) {
                            Ok(t) => compiled = Some(t),
                            Err(e) => break self.stop(&run, "invalid_template", &e.to_string(), json!({})).await,
                        }
                    }
                    let t = compiled.as_ref().ok_or_else(no_campaign)?;
                    let limit = pace.batch(self.messages.rate(run.account_id).await?);
                    let step = self.prepare_batch(&run, &c, &spec, t, limit, after).await?;
                    // At most IN_FLIGHT batches being stored; all of them once the run has none left to read.
                    let keep = if matches!(step, Step::Ready(_)) { IN_FLIGHT - 1 } else { 0 };
                    while storing.len() > keep {
                        let Some(previous) = storing.pop_front() else { break };
                        previous.await.map_err(|e| no_worker(&e))??;
                    }
                    match step {
                        Step::Ready(b) => {
                            after = b.last;
                            let n = b.keyed.len();
                            let job = self.clone().store_batch(run.id.clone(), run.account_id, b);
                            storing.push_back(tokio::spawn(job));
                            pace.wait(n).await;
                        }
                        // None left after the last taken: done if none is pending at all (a batch that failed to
                        // store leaves its recipients pending: they are read again).
                        Step::Done if after < 0 => break self.finish(run, &c, &spec).await,
                        Step::Done => after = -1,
                        Step::Stop(settled, code, message, detail) => {
                            self.store.settle_recipients(&run.id, &settled).await?;
                            break self.stop(&run, code, &message, detail).await;
                        }
                    }
                }
                "pausing" | "canceling" => {
                    while let Some(previous) = storing.pop_front() {
                        previous.await.map_err(|e| no_worker(&e))??;
                    }
                    let canceling = run.state == "canceling";
                    if self.take_back(&run, canceling).await? == 0 {
                        if canceling {
                            self.store
                                .move_recipients(&run.id, "pending", "canceled", Some("campaign_canceled"))
                                .await?;
                        }
                        run.state = if canceling { "canceled" } else { "paused" }.into();
                        run.updated_at = self.now();
                        if canceling {
                            run.finished_at = Some(run.updated_at);
                        }
                        self.store.save_run(&run, None).await?;
                        break Ok(());
                    }
                }
                _ => break Ok(()),
            }
        };
        // Whatever ended the slice, the batches being stored are stored (or failed) before the next look at the run.
        while let Some(previous) = storing.pop_front() {
            previous.await.map_err(|e| no_worker(&e))??;
        }
        outcome
    }

    /// What a run's audience leaves out, read once a run.
    async fn exclusions(&self, account: AccountId, spec: &CampaignSpec) -> Result<Exclusions> {
        let mut segments = Vec::new();
        for id in &spec.audience.exclude.segments {
            segments.push(self.contacts.segment(account, id).await?.1);
        }
        Ok(Exclusions {
            lists: spec.audience.exclude.lists.clone(),
            segments,
            contacts: spec.audience.exclude.contacts.iter().cloned().collect(),
        })
    }

    /// Reads one page of the run's current audience source and adds its contacts (less the excluded) as
    /// recipients, with the progress.
    async fn materialize(&self, run: &mut Run, spec: &CampaignSpec, ex: &Exclusions) -> Result<()> {
        let a = &spec.audience;
        let account = run.account_id;
        let sources = a.lists.len() + a.segments.len() + usize::from(!a.contacts.is_empty());
        let i = run.source as usize;
        let now = self.now();
        if i >= sources {
            run.materialized = true;
            run.updated_at = now;
            *run = self.store.add_recipients(run, &[]).await?;
            return Ok(());
        }
        let source = if i < a.lists.len() {
            Source::List(a.lists[i].clone())
        } else if i < a.lists.len() + a.segments.len() {
            match self.contacts.segment(account, &a.segments[i - a.lists.len()]).await {
                Ok((_, filter)) => Source::Segment(filter),
                // A segment deleted since: it names no one.
                Err(ServiceError::NotFound { .. }) => Source::Contacts(Vec::new()),
                Err(e) => return Err(e),
            }
        } else {
            Source::Contacts(a.contacts.clone())
        };
        let query = match &source {
            Source::List(l) => ContactQuery { lists: vec![l.clone()], ..ContactQuery::default() },
            Source::Segment(f) => f.query(now),
            Source::Contacts(ids) => ContactQuery { ids: Some(ids.clone()), ..ContactQuery::default() },
        };
        let page = self.store.contacts(account, &query, run.source_cursor.as_deref(), PAGE).await?;
        let full = page.len() == PAGE as usize;
        let last = page.last().map(|c| c.id.clone());
        let wants_info = !ex.lists.is_empty() || !ex.segments.is_empty() || matches!(source, Source::Segment(_));
        let infos = if wants_info {
            self.contacts.infos(account, page).await?
        } else {
            page.into_iter().map(crate::contacts::bare_info).collect()
        };
        let mut ids = Vec::with_capacity(infos.len());
        for info in infos {
            if let Source::Segment(f) = &source
                && !f.matches(&info, now)
            {
                continue;
            }
            let excluded = ex.contacts.contains(&info.contact.id)
                || ex.lists.iter().any(|l| info.lists.contains(l))
                || ex.segments.iter().any(|f| f.matches(&info, now));
            if !excluded {
                ids.push(info.contact.id);
            }
        }
        if full {
            run.source_cursor = last;
        } else {
            run.source += 1;
            run.source_cursor = None;
        }
        run.updated_at = now;
        *run = self.store.add_recipients(run, &ids).await?;
        Ok(())
    }

    /// Renders and admits the next batch of a run's pending recipients after order number `after`: what to store.
    async fn prepare_batch(
        &self,
        run: &Run,
        c: &Campaign,
        spec: &CampaignSpec,
        t: &Compiled,
        limit: usize,
        after: i64,
    ) -> Result<Step> {
        let account = run.account_id;
        let limit32 = u32::try_from(limit).unwrap_or(1);
        let batch = self.store.recipients(&run.id, &["pending"], after, limit32).await?;
        let Some(last) = batch.last().map(|r| r.seq) else { return Ok(Step::Done) };
        let ids: Vec<String> = batch.iter().map(|r| r.contact_id.clone()).collect();
        let query = ContactQuery { ids: Some(ids), ..ContactQuery::default() };
        let found = self.store.contacts(account, &query, None, limit32).await?;
        let contacts: HashMap<String, smsgate_store::Contact> = found.into_iter().map(|c| (c.id.clone(), c)).collect();
        let category = Category::requested(spec.category.as_deref().unwrap_or("")).unwrap_or_default();
        let data = spec.data.clone().unwrap_or_else(|| json!({}));
        let now = self.now();
        let base = if t.has_links() { self.links.base(account).await? } else { String::new() };
        let mut b = Batch { last, now, ..Batch::default() };
        let skip = |r: &Recipient, reason: &str| Recipient {
            state: "skipped".into(),
            reason: Some(reason.to_string()),
            ..r.clone()
        };
        for r in batch {
            let Some(contact) = contacts.get(&r.contact_id) else {
                b.settled.push(skip(&r, "contact_deleted"));
                continue;
            };
            let zone = zone_of(contact);
            let ctx = templates::context(Some(contact), zone.as_deref(), &data);
            let Ok(rendered) = t.render(&ctx) else {
                b.settled.push(skip(&r, "render_failed"));
                continue;
            };
            if !rendered.missing.is_empty() {
                match spec.on_missing_field {
                    OnMissingField::Default => {}
                    OnMissingField::Skip => {
                        b.settled.push(skip(&r, "missing_field"));
                        continue;
                    }
                    OnMissingField::Fail => {
                        let what = json!({"contact_id": contact.id, "fields": rendered.missing});
                        let message = format!("contact {} lacks {}", contact.id, rendered.missing.join(", "));
                        return Ok(Step::Stop(b.settled, "missing_field", message, what));
                    }
                }
            }
            let from = spec.sender_for(&contact.phone);
            let short = Links::shorten(&rendered, &base, account, Some(&contact.id), Some(&c.id), now);
            let request = Request {
                to: contact.phone.clone(),
                from: from.clone(),
                body: short.text,
                category,
                ..Request::default()
            };
            match self.messages.prepare_for(account, &request, now, ZoneOf::Contact(contact.time_zone.as_deref())).await
            {
                Ok(mut p) => {
                    let id = p.message.id.to_string();
                    b.links.extend(
                        short.links.into_iter().map(|l| smsgate_store::Link { message_id: Some(id.clone()), ..l }),
                    );
                    p.origin.campaign = Some(c.id.clone());
                    p.detail = format!("{}; campaign {:?}", p.detail, c.name);
                    let key = format!("smsgate:campaign:{}:{}:{}", run.id, r.contact_id, r.attempt);
                    b.keyed.push((p, Some((key, "campaign".to_string()))));
                    b.waiting.push(Recipient { sender: Some(from), ..r });
                }
                Err(ServiceError::Rejected(rejection)) => b.settled.push(skip(&r, &skip_reason(rejection.code))),
                Err(ServiceError::Forbidden { code, message }) => {
                    return Ok(Step::Stop(b.settled, code, message, json!({"from": from})));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Step::Ready(b))
    }

    /// Stores a batch's texts (its links first: a stored text never names a code that is not there) and settles
    /// its recipients; how many texts.
    async fn store_batch(self, run: String, account: AccountId, b: Batch) -> Result<usize> {
        let Batch { keyed, waiting, mut settled, links, now, .. } = b;
        let n = keyed.len();
        if !links.is_empty() {
            self.store.insert_links(&links).await?;
        }
        let stored = self.messages.submit_keyed(account, keyed, now).await?;
        for (r, (inserted, m)) in waiting.into_iter().zip(stored) {
            let id = match inserted {
                Inserted::New => m.id,
                Inserted::Duplicate { id, .. } => id,
            };
            settled.push(Recipient { state: "queued".into(), message_id: Some(id.to_string()), ..r });
        }
        self.store.settle_recipients(&run, &settled).await?;
        Ok(n)
    }

    /// Stops a running campaign on its own (paused, with why), for a cause every recipient would meet.
    async fn stop(&self, run: &Run, code: &str, message: &str, detail: Value) -> Result<()> {
        let Some(c) = self.store.campaign(run.account_id, &run.campaign_id).await? else { return Ok(()) };
        let now = self.now();
        let mut detail = detail;
        detail["code"] = json!(code);
        detail["message"] = json!(message);
        warn!(campaign = %c.id, run = %run.id, code, message, "campaign stopped");
        let paused = Campaign { state: "paused".into(), error: Some(detail.to_string()), updated_at: now, ..c };
        let run = Run { state: "paused".into(), updated_at: now, ..run.clone() };
        self.store.save_run(&run, Some(&paused)).await?;
        Ok(())
    }

    /// Ends a run whose recipients are all settled: the campaign `completed`, or `scheduled` for its next run.
    async fn finish(&self, mut run: Run, c: &Campaign, spec: &CampaignSpec) -> Result<()> {
        let now = self.now();
        run.state = "completed".into();
        run.finished_at = Some(now);
        run.updated_at = now;
        let Some(c) = self.store.campaign(c.account_id, &c.id).await? else { return Ok(()) };
        let recurring = spec.schedule.as_ref().is_some_and(|s| s.cron.is_some()) && c.next_run_at.is_some();
        let state = if recurring { "scheduled" } else { "completed" };
        let done = Campaign { state: state.into(), updated_at: now, ..c };
        self.store.save_run(&run, Some(&done)).await?;
        info!(campaign = %done.id, run = %run.id, "campaign run completed");
        Ok(())
    }

    /// Takes a page of a pausing (or canceling) run's texts still waiting back from the queue: their recipients are
    /// marked `held` first (so a crash in between is resolved by reading the message), then the texts canceled;
    /// those canceled make their recipients pending again (or canceled), the others stay queued. How many
    /// recipients it looked at (0: none left to take back).
    async fn take_back(&self, run: &Run, canceling: bool) -> Result<usize> {
        // Held ones first (a crash left them): what became of their texts decides.
        let held = self.store.recipients(&run.id, &["held"], -1, BATCH as u32).await?;
        let page = if held.is_empty() {
            let queued =
                self.store.recipients(&run.id, &["queued"], self.taken_back_after(&run.id), BATCH as u32).await?;
            if queued.is_empty() {
                self.forget_taken_back(&run.id);
                return Ok(0);
            }
            let marked: Vec<Recipient> =
                queued.iter().map(|r| Recipient { state: "held".into(), ..r.clone() }).collect();
            self.store.settle_recipients(&run.id, &marked).await?;
            marked
        } else {
            held
        };
        let ids: Vec<MessageId> =
            page.iter().filter_map(|r| r.message_id.as_deref().and_then(MessageId::parse)).collect();
        let detail = if canceling { "campaign canceled" } else { "campaign paused; sent again on resume" };
        let moved = self.messages.engine().cancel_ids(&ids, detail).await?;
        let mut by_id: HashMap<MessageId, bool> = ids.iter().copied().zip(moved).collect();
        let mut settled = Vec::with_capacity(page.len());
        for r in &page {
            let id = r.message_id.as_deref().and_then(MessageId::parse);
            let mut taken = id.and_then(|id| by_id.remove(&id)).unwrap_or(false);
            if !taken && let Some(id) = id {
                // Not moved now: canceled already (by the try a crash cut short), or on its way.
                taken = self.store.message(run.account_id, id).await?.is_some_and(|m| m.status == Status::Canceled);
            }
            let r = r.clone();
            settled.push(match (taken, canceling) {
                (true, true) => Recipient { state: "canceled".into(), reason: Some("campaign_canceled".into()), ..r },
                (true, false) => Recipient { state: "pending".into(), attempt: r.attempt + 1, message_id: None, ..r },
                (false, _) => Recipient { state: "queued".into(), ..r },
            });
        }
        self.store.settle_recipients(&run.id, &settled).await?;
        if let Some(last) = page.last() {
            self.note_taken_back(&run.id, last.seq);
        }
        Ok(page.len())
    }
}

impl Campaigns {
    fn taken_back_after(&self, run: &str) -> i64 {
        self.taken_back.lock().unwrap_or_else(|e| e.into_inner()).get(run).copied().unwrap_or(-1)
    }

    fn note_taken_back(&self, run: &str, seq: i64) {
        self.taken_back.lock().unwrap_or_else(|e| e.into_inner()).insert(run.to_string(), seq);
    }

    fn forget_taken_back(&self, run: &str) {
        self.taken_back.lock().unwrap_or_else(|e| e.into_inner()).remove(run);
    }
}

/// How a run keeps to its throughput.
struct Pace {
    per_second: Option<u32>,
    since: std::time::Instant,
    sent: u64,
}

impl Pace {
    fn new(per_second: Option<u32>) -> Pace {
        Pace { per_second, since: std::time::Instant::now(), sent: 0 }
    }

    /// The next batch's size: at most a second's worth of the campaign's and the account's rates.
    fn batch(&self, account_rate: Option<u32>) -> usize {
        let mut n = BATCH;
        for rate in [self.per_second, account_rate].into_iter().flatten() {
            n = n.min(rate.max(1) as usize);
        }
        n
    }

    /// Waits until `n` more texts keep within the throughput.
    async fn wait(&mut self, n: usize) {
        self.sent += n as u64;
        let Some(rate) = self.per_second else { return };
        let due = Duration::from_secs_f64(self.sent as f64 / f64::from(rate));
        if let Some(left) = due.checked_sub(self.since.elapsed()) {
            tokio::time::sleep(left).await;
        }
    }
}

/// A batch of texts rendered and admitted, to store.
#[derive(Default)]
struct Batch {
    /// The texts with their idempotency keys, and their recipients (settled `queued` once stored).
    keyed: Vec<(smsgate_engine::ingress::Prepared, Option<(String, String)>)>,
    waiting: Vec<Recipient>,
    /// Recipients settled without a text (skipped).
    settled: Vec<Recipient>,
    links: Vec<smsgate_store::Link>,
    /// The batch's last order number.
    last: i64,
    now: Timestamp,
}

/// What a send step found.
enum Step {
    Ready(Batch),
    /// No recipient pending after the order number asked.
    Done,
    /// The campaign must stop: the recipients settled so far, and the error's code, message and detail.
    Stop(Vec<Recipient>, &'static str, String, Value),
}

/// A storing task that panicked or was dropped.
fn no_worker(e: &tokio::task::JoinError) -> ServiceError {
    ServiceError::Store(smsgate_store::StoreError::Corrupt(format!("a campaign batch failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::rfc3339;

    #[test]
    fn a_pool_keeps_each_contact_on_one_number() {
        let pool: Vec<String> = ["+14155550101", "+14155550102", "+14155550103"].map(String::from).to_vec();
        let mut used = std::collections::HashSet::new();
        for i in 0..300 {
            let phone = format!("+1305555{i:04}");
            let first = sticky(&pool, &phone);
            assert_eq!(first, sticky(&pool, &phone));
            used.insert(first.to_string());
            // Without a number that is not its own, a contact stays where it was.
            let smaller: Vec<String> = pool.iter().filter(|p| *p != "+14155550103").cloned().collect();
            if first != "+14155550103" {
                assert_eq!(sticky(&smaller, &phone), first);
            }
        }
        assert_eq!(used.len(), 3, "spread over the pool");
    }

    #[test]
    fn cron_runs_in_its_zone() {
        // 09:00 on the 1st in New York, from 2026-12-06: 2027-01-01 14:00 UTC.
        let after = Timestamp(chrono::DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().timestamp_millis());
        let next = next_cron("0 9 1 * *", "America/New_York", after).unwrap();
        assert_eq!(rfc3339(next), "2027-01-01T14:00:00Z");
        assert_eq!(next_cron("nope", "UTC", after).unwrap_err().code(), "invalid_schedule");
        assert_eq!(next_cron("0 9 * * *", "Mars/Base", after).unwrap_err().code(), "invalid_schedule");
    }

    #[test]
    fn batches_keep_to_a_second_of_the_rates() {
        assert_eq!(Pace::new(None).batch(None), BATCH);
        assert_eq!(Pace::new(Some(50)).batch(None), 50);
        assert_eq!(Pace::new(Some(5000)).batch(Some(20)), 20);
    }
}
