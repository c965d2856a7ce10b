//! What starts runs: events (`POST /v1/events`), inbound messages (keywords, and replies a run waits for),
//! schedules, and contacts whose date field changed; and what moves or cancels a run that waits.

use serde_json::{Value, json};
use smsgate_core::consent::fold;
use smsgate_core::{AccountId, MessageId, Timestamp};
use smsgate_store::{Automation, AutomationRun, Contact, ContactQuery, EventRecord, InboundText};

use super::steps::{lookup, parse_duration, parse_time};
use super::{Automations, CHANGE_LAG_MS, EventOutcome, EventSpec, PAGE, Trigger, invalid, parse_spec};
use crate::campaigns::next_cron;
use crate::contacts::{ContactSpec, zone_of};
use crate::error::{Result, ServiceError};
use crate::messages::rfc3339;

impl Automations {
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
            _ => return Err(invalid("invalid_contact", "give one of contact_id and contact")),
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
        let key = format!("date:{}:{subject}:{}", contact.id, at.0);
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
    pub(super) async fn end_run(&self, mut run: AutomationRun, state: &str, why: &str) -> Result<bool> {
        let expected = run.state.clone();
        let now = self.now();
        let mut log = log_of(&run);
        log.push(json!({"step": run.position, "type": "end", "at": rfc3339(now), "outcome": state, "detail": why}));
        // A date's run ended before its time frees its key: the same date set again (a booking restored, a field
        // put back) starts a run again.
        if run.trigger_key.starts_with("date:") {
            run.trigger_key = format!("{}#ended:{}", run.trigger_key, run.id);
        }
        run.log = Value::Array(log).to_string();
        run.state = state.into();
        run.due_at = None;
        run.error = Some(json!({"code": state, "message": why}).to_string());
        run.updated_at = now;
        Ok(self.store.save_automation_run(&run, &expected).await?)
    }

    /// Reads inbound messages not read yet: each filed in its conversation, then keyword triggers and replies
    /// awaited.
    pub(super) async fn inbound(&self) -> Result<usize> {
        let texts = self.store.unautomated_inbound(PAGE).await?;
        for t in &texts {
            self.conversations.file(t).await?;
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
                None => match self.contact_for(t).await {
                    Ok(c) => contact.insert(c),
                    Err(e @ (ServiceError::Store(_) | ServiceError::Engine(_))) => return Err(e),
                    // A sender no contact can have (an alphanumeric one): no run, and the next messages are read.
                    Err(e) => {
                        tracing::info!(message = %t.id, error = %e, "a keyword from a sender that is no contact");
                        return Ok(());
                    }
                },
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
    pub(super) async fn schedules(&self) -> Result<()> {
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
                        .map(|c| {
                            let key = format!("schedule:{}:{}", fired.0, c.id);
                            new_run(&a, c, key, String::new(), &data, now, Some(now))
                        })
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
    pub(super) async fn date_fields(&self) -> Result<()> {
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

pub(super) fn check_event_name(name: &str) -> Result<()> {
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

pub(super) fn log_of(run: &AutomationRun) -> Vec<Value> {
    serde_json::from_str(&run.log).unwrap_or_default()
}

fn cursor_of(cursor: Option<&str>) -> (Timestamp, String) {
    let mut parts = cursor.unwrap_or("").splitn(2, ' ');
    let at = parts.next().and_then(|t| t.parse().ok()).map_or(Timestamp(i64::MIN), Timestamp);
    (at, parts.next().unwrap_or("").to_string())
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
