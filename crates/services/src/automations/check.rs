//! Checking an automation's definition: its trigger and steps, each with a code for what is wrong, and lists and
//! templates named by name resolved to ids.

use smsgate_core::AccountId;
use smsgate_core::consent::Category;

use super::steps::{each_step, parse_duration};
use super::triggers::check_event_name;
use super::{AutomationSpec, Automations, MAX_DEPTH, MAX_NAMES, MAX_STEPS, Step, Trigger, invalid};
use crate::campaigns::next_cron;
use crate::error::Result;
use crate::templates;

impl Automations {
    // Definitions.

    /// Checks a spec for `account` and puts it in its stored form (lists by name become ids).
    pub(super) async fn checked(&self, account: AccountId, mut spec: AutomationSpec) -> Result<AutomationSpec> {
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
}
