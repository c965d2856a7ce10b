//! The worker: reads inbound messages, fires schedules and date fields, and walks due runs step by step under a
//! lease; each send rendered, admitted and stored with the step's idempotency key.

use std::time::Duration;

use serde_json::{Value, json};
use smsgate_core::admission::{ErrorCode, Request};
use smsgate_core::consent::Category;
use smsgate_core::{MessageId, Timestamp};
use smsgate_store::{Automation, AutomationRun, Contact, Inserted};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::steps::{
    enter_case, lookup, next_position, parse_duration, parse_position, pick_case, position_text, step_at,
};
use super::triggers::log_of;
use super::{Automations, LEASE, PAGE, REPLY_WAIT_MS, STEPS_PER_TURN, Step, corrupt, parse_spec};
use crate::campaigns::OnMissingField;
use crate::contacts::{ContactPatch, zone_of};
use crate::error::{Result, ServiceError};
use crate::links::Links;
use crate::messages::{ZoneOf, rfc3339};
use crate::templates::{self, Compiled};

/// What a step did, for where the run goes next.
enum Taken {
    /// On to the next step.
    Next,
    /// Into a branch's case (`cases.len()`: its default).
    Case(usize),
    /// On to the next step, due at this time (or when a reply comes).
    Pause(Timestamp),
    /// The run ends in `state` (`canceled` for an opt-out, `failed` otherwise) with the code and why.
    End { state: &'static str, code: String, message: String },
}

/// A run being walked, with what its steps read.
struct Walk {
    automation: Automation,
    contact: Contact,
    /// The trigger's data.
    data: Value,
    run: AutomationRun,
    /// The steps taken, the run's log.
    log: Vec<Value>,
    now: Timestamp,
}

/// Writes into a step's log entry that it was done, or skipped with why; a failure of the store or the engine is
/// the walk's (it is tried again).
fn note_done(entry: &mut Value, done: Result<()>) -> Result<()> {
    match done {
        Ok(()) => entry["outcome"] = json!("done"),
        Err(e @ (ServiceError::Store(_) | ServiceError::Engine(_))) => return Err(e),
        Err(e) => {
            entry["outcome"] = json!("skipped");
            entry["detail"] = json!(e.to_string());
        }
    }
    Ok(())
}

/// A send step's settings.
struct SendStep<'a> {
    from: &'a str,
    body: Option<&'a str>,
    template_id: Option<&'a str>,
    category: Option<&'a str>,
    on_missing_field: OnMissingField,
}

impl Automations {
    // Running.

    /// Runs automations until `shutdown`: reads inbound messages, fires schedules and date fields, walks due runs.
    pub async fn run(self, shutdown: CancellationToken) {
        let received = self.contacts.messages.engine().inbound_stored();
        loop {
            match self.tick(&shutdown).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "automations: a step failed; trying again in a second"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = received.notified() => {}
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
        let Some(automation) = self.store.automation(run.account_id, &run.automation_id).await? else {
            return Ok(false);
        };
        let Some(contact) = self.store.contact(run.account_id, &run.contact_id).await? else {
            self.end_run(run, "canceled", "the contact was deleted").await?;
            return Ok(false);
        };
        let expected = run.state.clone();
        let spec = parse_spec(&automation)?;
        let mut w = Walk {
            automation,
            contact,
            data: serde_json::from_str(&run.data).unwrap_or_else(|_| json!({})),
            log: log_of(&run),
            run,
            now,
        };
        if w.run.state == "waiting" {
            // The wait for a reply ran out: on without one.
            w.log.push(json!({"step": w.run.position, "type": "reply", "at": rfc3339(now), "outcome": "timed_out"}));
            w.run.state = "active".into();
            w.run.reply = None;
        }
        w.run.reply_from = None;
        let more = self.walk(&mut w, &spec.steps).await?;
        let mut run = w.run;
        run.log = Value::Array(w.log).to_string();
        run.updated_at = self.now();
        self.store.save_automation_run(&run, &expected).await?;
        Ok(more)
    }

    /// Takes a run's steps from its position until one waits, the run ends, or the turn's steps are taken (then
    /// true: it is due again at once).
    async fn walk(&self, w: &mut Walk, steps: &[Step]) -> Result<bool> {
        for _ in 0..STEPS_PER_TURN {
            let Some(path) = parse_position(&w.run.position) else {
                return Err(corrupt(format!("automation run {} position {:?}", w.run.id, w.run.position)));
            };
            let Some(step) = step_at(steps, &path) else {
                w.run.state = "completed".into();
                w.run.due_at = None;
                return Ok(false);
            };
            let mut entry = json!({"step": w.run.position, "type": step.kind(), "at": rfc3339(w.now)});
            let taken = self.take(w, step, &mut entry).await?;
            w.log.push(entry);
            let next = match taken {
                Taken::Next => next_position(steps, &path),
                Taken::Case(case) => enter_case(steps, &path, case),
                Taken::Pause(until) => {
                    w.run.due_at = Some(until);
                    next_position(steps, &path)
                }
                Taken::End { state, code, message } => {
                    w.run.state = state.into();
                    w.run.due_at = None;
                    w.run.error = Some(json!({"code": code, "message": message}).to_string());
                    return Ok(false);
                }
            };
            // Past the last step, the position is one past the end of the top list: the run completes there.
            w.run.position = position_text(&next.unwrap_or_else(|| vec![steps.len()]));
            if matches!(taken, Taken::Pause(_)) {
                return Ok(false);
            }
        }
        w.run.due_at = Some(w.now);
        Ok(true)
    }

    /// Takes one step, writing what it did into its log `entry`.
    async fn take(&self, w: &mut Walk, step: &Step, entry: &mut Value) -> Result<Taken> {
        let outcome = |entry: &mut Value, o: &str| entry["outcome"] = json!(o);
        match step {
            Step::Send { from, body, template_id, category, on_missing_field } => {
                // After a keyword, the reply goes from the number the keyword came to.
                let from = from
                    .clone()
                    .or_else(|| lookup(&w.data, "message.to").and_then(Value::as_str).map(String::from))
                    .unwrap_or_default();
                let send = SendStep {
                    from: &from,
                    body: body.as_deref(),
                    template_id: template_id.as_deref(),
                    category: category.as_deref(),
                    on_missing_field: *on_missing_field,
                };
                match self.send(w, &send).await? {
                    Ok(id) => {
                        outcome(entry, "sent");
                        entry["message_id"] = json!(id.to_string());
                        w.run.reply_to = Some(from);
                    }
                    Err(Taken::Next) => {
                        outcome(entry, "skipped");
                        entry["detail"] = json!("missing_field");
                    }
                    Err(end) => {
                        if let Taken::End { state, message, .. } = &end {
                            outcome(entry, state);
                            entry["detail"] = json!(message);
                        }
                        return Ok(end);
                    }
                }
                Ok(Taken::Next)
            }
            Step::Wait { duration, until: reply, timeout } => {
                let (wait, what) = if reply.is_some() {
                    w.run.state = "waiting".into();
                    w.run.reply = None;
                    w.run.reply_from = Some(w.contact.phone.clone());
                    (timeout.as_deref().and_then(parse_duration).unwrap_or(REPLY_WAIT_MS), "waiting_for_reply")
                } else {
                    (duration.as_deref().and_then(parse_duration).unwrap_or(0), "waiting")
                };
                let until = w.now.plus_millis(wait);
                entry["until"] = json!(rfc3339(until));
                outcome(entry, what);
                Ok(Taken::Pause(until))
            }
            Step::Branch { cases, .. } => {
                let case = pick_case(cases, w.run.reply.as_deref());
                entry["reply"] = json!(w.run.reply);
                entry["outcome"] =
                    json!(if case == cases.len() { "default".to_string() } else { format!("case {case}") });
                Ok(Taken::Case(case))
            }
            Step::Tag { tag } | Step::Untag { tag } => {
                let tags = self.store.contact(w.run.account_id, &w.contact.id).await?.map(|c| c.tags);
                let mut tags = tags.unwrap_or_default();
                tags.retain(|t| t != tag);
                if matches!(step, Step::Tag { .. }) {
                    tags.push(tag.clone());
                }
                let patch = ContactPatch { tags: Some(tags), ..ContactPatch::default() };
                let done = self.contacts.update(w.run.account_id, &w.contact.id, patch).await.map(|_| ());
                note_done(entry, done)?;
                Ok(Taken::Next)
            }
            Step::AddToList { list_id } => {
                let contact = std::slice::from_ref(&w.contact.id);
                let done = self.contacts.add_members(w.run.account_id, list_id, contact, &[]).await.map(|_| ());
                note_done(entry, done)?;
                Ok(Taken::Next)
            }
            Step::RemoveFromList { list_id } => {
                self.store.remove_member(list_id, &w.contact.id).await?;
                outcome(entry, "done");
                Ok(Taken::Next)
            }
            Step::Webhook { url } => {
                self.queue_webhook(w, url, entry).await?;
                outcome(entry, "queued");
                Ok(Taken::Next)
            }
        }
    }

    /// Queues a webhook step's POST: the run, the contact, the data and the reply, signed when delivered.
    async fn queue_webhook(&self, w: &Walk, url: &str, entry: &Value) -> Result<()> {
        let (run, contact) = (&w.run, &w.contact);
        let Some(key) = MessageId::parse(&run.id) else {
            return Err(corrupt(format!("automation run id {:?}", run.id)));
        };
        let id = format!("{}:{}", run.id, run.position);
        let payload = json!({
            "id": id, "type": "automation.step", "at": entry["at"],
            "automation_id": w.automation.id, "automation": w.automation.name, "run_id": run.id,
            "step": run.position,
            "contact": {"id": contact.id, "phone": contact.phone, "name": contact.name, "fields": contact.fields},
            "data": w.data, "reply": run.reply,
        });
        let callback = smsgate_store::PayloadCallback {
            id,
            account_id: run.account_id,
            key,
            seq: i64::try_from(w.log.len()).unwrap_or(i64::MAX),
            url: url.to_string(),
            payload: payload.to_string(),
        };
        Ok(self.store.enqueue_payload(&callback, w.now).await?)
    }

    /// Renders, admits and stores a send step's text for the contact: the message's id, or why not.
    async fn send(&self, w: &Walk, step: &SendStep<'_>) -> Result<std::result::Result<MessageId, Taken>> {
        let (a, run, contact, data, now) = (&w.automation, &w.run, &w.contact, &w.data, w.now);
        let end = |state: &'static str, code: &str, message: String| {
            Ok(Err(Taken::End { state, code: code.to_string(), message }))
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
                OnMissingField::Skip => return Ok(Err(Taken::Next)),
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
            ..Request::default()
        };
        let messages = &self.contacts.messages;
        let mut prepared = match messages
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
        prepared.origin.automation = Some(a.id.clone());
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
                self.conversations.touch(a.account_id, &message.to, &message.from, message.created_at).await?;
                message.id
            }
            Inserted::Duplicate { id, .. } => id,
        };
        Ok(Ok(id))
    }
}
