//! [`Templates`]: message bodies with merge fields, per account, and [`render`], the one way a body becomes a
//! text for a contact — for a preview now, for campaigns and automations next. Bodies are minijinja templates run
//! sandboxed: no file or include, no auto-escaping (texts are not HTML), undefined fields render empty (the caller
//! decides what a missing field does: [`Rendered::missing`]), and each render has bounded work ([`FUEL`]).
//!
//! A template sees `name`, `phone`, `email`, `time_zone` and `fields` (the contact's custom fields) and `data` (a
//! send's or an event's own), with minijinja's filters and a `date` filter that writes a time (RFC 3339 text, a
//! date, or seconds since 1970) in the contact's zone: `{{ fields.appointment_at | date("%a %H:%M") }}`.

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::value::Serde;
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior, Value};
use serde_json::{Map, json};
use smsgate_core::AccountId;
use smsgate_core::consent::Category;
use smsgate_store::{Contact, Store, Template};

use crate::contacts::{ContactSpec, Contacts};
use crate::error::{Result, ServiceError};

/// The work one render may do (minijinja's fuel: about one unit an instruction). A body of a few hundred
/// characters with filters takes well under a thousand; a loop that would run away stops here.
pub const FUEL: u64 = 50_000;
/// The most characters a template's body has.
pub const MAX_BODY: usize = 4_000;

/// Templates of accounts.
#[derive(Debug, Clone)]
pub struct Templates {
    contacts: Contacts,
    links: crate::links::Links,
    store: Arc<dyn Store>,
}

/// What a template is made of, as a caller gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateSpec {
    pub name: String,
    pub body: String,
    pub category: Category,
}

/// A change to a template: what is given replaces what is there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplatePatch {
    pub name: Option<String>,
    pub body: Option<String>,
    pub category: Option<Category>,
}

/// A body rendered for a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text, with its links (`link(url)`) still marked: [`Rendered::with_links`] gives what is sent.
    pub text: String,
    /// The merge fields the template names that the contact and data do not have (such as `fields.plan`),
    /// sorted; they rendered empty (or as their `default`).
    pub missing: Vec<String>,
    /// The render's link markers.
    pub(crate) nonce: String,
}

impl Rendered {
    /// The text with each link written by `short(url)` (its short link).
    pub fn with_links(&self, mut short: impl FnMut(&str) -> String) -> String {
        let (open, close) = markers(&self.nonce);
        if self.nonce.is_empty() || !self.text.contains(&open) {
            return self.text.clone();
        }
        let mut out = String::with_capacity(self.text.len());
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find(&open) {
            out.push_str(&rest[..i]);
            let after = &rest[i + open.len()..];
            let Some(j) = after.find(&close) else {
                rest = after;
                continue;
            };
            out.push_str(&short(&after[..j]));
            rest = &after[j + close.len()..];
        }
        out.push_str(rest);
        out
    }

    /// Whether the text has links.
    pub fn has_links(&self) -> bool {
        !self.nonce.is_empty() && self.text.contains(&markers(&self.nonce).0)
    }
}

/// A preview: the text and what sending it would be.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The text as it will be sent (each link as long as its short link will be, with `x`s for its code).
    pub text: String,
    /// The merge fields that were missing.
    pub missing: Vec<String>,
    /// `gsm7`, `ucs2`, ...
    pub encoding: String,
    pub segments: u32,
    /// The route's price per segment times the segments, for the contact's number; `None` when no route prices it.
    pub cost_micros: Option<i64>,
}

/// What a preview renders for.
#[derive(Debug, Clone, PartialEq)]
pub enum PreviewFor {
    /// A contact of the account.
    Contact(String),
    /// A contact as given (not stored).
    Given(ContactSpec),
    /// Nobody: only `data`.
    Nobody,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

fn no_template() -> ServiceError {
    ServiceError::not_found("not_found", "no such template")
}

/// The sandbox every template runs in. `link(url)` writes the URL between markers that hold `nonce` (random for
/// each compiled body, so no contact's field can make a link by containing them); [`Rendered::with_links`] makes
/// them short links.
fn environment(nonce: &str) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("date", date);
    let (open, close) = markers(nonce);
    env.add_function("link", move |url: String| -> std::result::Result<String, Error> {
        crate::links::check_target(&url).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))?;
        Ok(format!("{open}{url}{close}"))
    });
    env
}

/// Where a link starts and ends in a rendered text before it is shortened.
fn markers(nonce: &str) -> (String, String) {
    (format!("\u{E000}{nonce}\u{E001}"), format!("\u{E000}/{nonce}\u{E001}"))
}

/// `value | date(format)`: a time written with chrono's `strftime` format (default `%Y-%m-%d %H:%M`) in the zone
/// of the render's `time_zone` (UTC without one).
fn date(state: &State, value: Value, format: Option<String>) -> std::result::Result<String, Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(String::new());
    }
    let zone: chrono_tz::Tz =
        state.lookup("time_zone").and_then(|z| z.as_str().and_then(|s| s.parse().ok())).unwrap_or(chrono_tz::UTC);
    let utc = if let Some(s) = value.as_str() {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            t.with_timezone(&chrono::Utc)
        } else if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            // A date alone is that day; written in the zone as it is.
            let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
            let format = format.as_deref().unwrap_or("%Y-%m-%d");
            return write_time(midnight.format(format), format);
        } else if let Some(local) = LOCAL_FORMATS.iter().find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        {
            // A local time (no offset) is the recipient's own: written as it is.
            let format = format.as_deref().unwrap_or("%Y-%m-%d %H:%M");
            return write_time(local.format(format), format);
        } else {
            return Err(Error::new(ErrorKind::InvalidOperation, format!("date: {s:?} is not an RFC 3339 time")));
        }
    } else if let Some(secs) = value.as_i64() {
        chrono::DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "date: seconds out of range"))?
    } else {
        return Err(Error::new(ErrorKind::InvalidOperation, "date: give a time as text or seconds"));
    };
    let format = format.as_deref().unwrap_or("%Y-%m-%d %H:%M");
    write_time(utc.with_timezone(&zone).format(format), format)
}

/// The local times (no offset) a field may hold, read in the recipient's zone.
pub(crate) const LOCAL_FORMATS: [&str; 4] =
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"];

/// A time as chrono formats it with `format`; a format chrono cannot write is an error, not a panic.
fn write_time(formatted: impl std::fmt::Display, format: &str) -> std::result::Result<String, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{formatted}")
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("date: {format:?} is not a strftime format")))?;
    Ok(out)
}

/// Why a body cannot be a template, with its line and column, if it cannot.
pub fn check(body: &str) -> Result<()> {
    if body.trim().is_empty() || body.chars().count() > MAX_BODY {
        return Err(invalid("invalid_body", format!("a template's body has 1 to {MAX_BODY} characters")));
    }
    let env = environment("");
    match env.template_from_str(body) {
        Ok(_) => Ok(()),
        Err(e) => {
            let line = e.line().unwrap_or(1);
            let column = e.range().map_or(1, |r| {
                let start = r.start.min(body.len());
                let line_start = body[..start].rfind('\n').map_or(0, |i| i + 1);
                body[line_start..start].chars().count() + 1
            });
            let what = e.detail().unwrap_or("syntax error");
            Err(invalid("invalid_template", format!("line {line}, column {column}: {what}")))
        }
    }
}

/// The context a contact and data give a template.
pub fn context(contact: Option<&Contact>, time_zone: Option<&str>, data: &serde_json::Value) -> serde_json::Value {
    let mut ctx = Map::new();
    if let Some(c) = contact {
        ctx.insert("phone".into(), json!(c.phone));
        if let Some(n) = &c.name {
            ctx.insert("name".into(), json!(n));
        }
        if let Some(e) = &c.email {
            ctx.insert("email".into(), json!(e));
        }
        ctx.insert("fields".into(), serde_json::Value::Object(c.fields.clone()));
    }
    if let Some(z) = time_zone {
        ctx.insert("time_zone".into(), json!(z));
    }
    ctx.insert("data".into(), data.clone());
    serde_json::Value::Object(ctx)
}

/// Renders `body` with `ctx` ([`context`]): the text (trimmed of the blank lines template tags leave) and the merge
/// fields it names that the context lacks. A render that errs (a bad filter argument, work past [`FUEL`]) is
/// `invalid_template` with why.
pub fn render(body: &str, ctx: &serde_json::Value) -> Result<Rendered> {
    Compiled::new(body)?.render(ctx)
}

/// A body parsed once, for rendering many times (a campaign's texts).
#[derive(Debug)]
pub struct Compiled {
    env: Environment<'static>,
    /// The merge fields the body names, as paths (`fields.plan`).
    names: Vec<String>,
    nonce: String,
    /// Whether the body calls `link`.
    links: bool,
}

impl Compiled {
    pub fn new(body: &str) -> Result<Compiled> {
        let nonce = crate::links::random(crate::links::CODE_LEN);
        let mut env = environment(&nonce);
        env.add_template_owned("body", body.to_string())
            .map_err(|e| invalid("invalid_template", e.detail().unwrap_or("").to_string()))?;
        let template = env.get_template("body").map_err(|e| invalid("invalid_template", e.to_string()))?;
        let names: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        let links = names.iter().any(|n| n == "link");
        let names = names.into_iter().filter(|p| p != "time_zone" && p != "link").collect();
        Ok(Compiled { env, names, nonce, links })
    }

    /// Whether the body makes links.
    pub fn has_links(&self) -> bool {
        self.links
    }

    /// [`render`], with the body parsed already.
    pub fn render(&self, ctx: &serde_json::Value) -> Result<Rendered> {
        let mut missing = BTreeSet::new();
        for path in &self.names {
            let mut at = Some(ctx);
            for part in path.split('.') {
                at = at.and_then(|v| v.get(part));
            }
            if at.is_none_or(serde_json::Value::is_null) {
                missing.insert(path.clone());
            }
        }
        let template = self.env.get_template("body").map_err(|e| invalid("invalid_template", e.to_string()))?;
        let text = template.render(Value::from(Serde(ctx))).map_err(|e| {
            let why = match e.kind() {
                ErrorKind::OutOfFuel => "the template does too much work for one text".to_string(),
                _ => e.detail().map_or_else(|| e.to_string(), str::to_string),
            };
            invalid("invalid_template", why)
        })?;
        Ok(Rendered {
            text: text.trim().to_string(),
            missing: missing.into_iter().collect(),
            nonce: self.nonce.clone(),
        })
    }
}

impl Templates {
    pub fn new(contacts: Contacts, links: crate::links::Links, store: Arc<dyn Store>) -> Templates {
        Templates { contacts, links, store }
    }

    fn check_spec(name: &str, body: &str) -> Result<()> {
        if name.trim().is_empty() || name.chars().count() > 128 {
            return Err(invalid("invalid_name", "a template's name has 1 to 128 characters"));
        }
        check(body)
    }

    /// Creates a template: [`ServiceError::Conflict`] `template_exists` for a name the account has;
    /// `invalid_template` with the line and column of a body that does not parse.
    pub async fn create(&self, account: AccountId, spec: TemplateSpec) -> Result<Template> {
        Self::check_spec(&spec.name, &spec.body)?;
        if spec.category == Category::Reply {
            return Err(invalid("invalid_category", "category must be \"transactional\" or \"marketing\""));
        }
        let now = self.contacts.messages.now();
        let t = Template {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            name: spec.name.trim().to_string(),
            body: spec.body,
            category: spec.category,
            created_at: now,
            updated_at: now,
        };
        if !self.store.insert_template(&t).await? {
            return Err(ServiceError::conflict("template_exists", format!("a template named {:?} exists", t.name)));
        }
        Ok(t)
    }

    pub async fn get(&self, account: AccountId, id: &str) -> Result<Template> {
        self.store.template(account, id).await?.ok_or_else(no_template)
    }

    pub async fn list(&self, account: AccountId) -> Result<Vec<Template>> {
        Ok(self.store.templates(account).await?)
    }

    pub async fn update(&self, account: AccountId, id: &str, patch: TemplatePatch) -> Result<Template> {
        let mut t = self.get(account, id).await?;
        if let Some(name) = patch.name {
            t.name = name.trim().to_string();
        }
        if let Some(body) = patch.body {
            t.body = body;
        }
        if let Some(category) = patch.category {
            if category == Category::Reply {
                return Err(invalid("invalid_category", "category must be \"transactional\" or \"marketing\""));
            }
            t.category = category;
        }
        Self::check_spec(&t.name, &t.body)?;
        t.updated_at = self.contacts.messages.now();
        match self.store.update_template(&t).await? {
            None => Err(no_template()),
            Some(false) => {
                Err(ServiceError::conflict("template_exists", format!("a template named {:?} exists", t.name)))
            }
            Some(true) => Ok(t),
        }
    }

    pub async fn delete(&self, account: AccountId, id: &str) -> Result<()> {
        if self.store.delete_template(account, id).await? { Ok(()) } else { Err(no_template()) }
    }

    /// Renders an account's template for a contact (of the account, or given) with `data`: the text, its encoding
    /// and segments as admission would plan them, the cost by the route the contact's number would take, and the
    /// merge fields that were missing.
    pub async fn preview(
        &self,
        account: AccountId,
        id: &str,
        who: PreviewFor,
        data: &serde_json::Value,
    ) -> Result<Preview> {
        let t = self.get(account, id).await?;
        self.render_preview(account, &t.body, who, data).await
    }

    /// Renders a body that is not stored (checked as one would be, 422 `invalid_template` with its line and
    /// column), as [`Templates::preview`] does a template: what a template being written would make.
    pub async fn preview_body(
        &self,
        account: AccountId,
        body: &str,
        who: PreviewFor,
        data: &serde_json::Value,
    ) -> Result<Preview> {
        check(body)?;
        self.render_preview(account, body, who, data).await
    }

    /// The preview of a body known to parse (a stored template's was checked when it was written).
    async fn render_preview(
        &self,
        account: AccountId,
        body: &str,
        who: PreviewFor,
        data: &serde_json::Value,
    ) -> Result<Preview> {
        let contact = match who {
            PreviewFor::Contact(contact_id) => Some(
                self.store
                    .contact(account, &contact_id)
                    .await?
                    .ok_or_else(|| ServiceError::not_found("contact_not_found", "no such contact in this account"))?,
            ),
            PreviewFor::Given(spec) => Some(self.contacts.build(account, spec)?),
            PreviewFor::Nobody => None,
        };
        let info = match contact {
            Some(c) => Some(self.contacts.info(c).await?),
            None => None,
        };
        let ctx = context(info.as_ref().map(|i| &i.contact), info.as_ref().and_then(|i| i.time_zone.as_deref()), data);
        let rendered = render(body, &ctx)?;
        let text = crate::links::Links::sample(&rendered, &self.links.base(account).await?);
        let policy = self.contacts.messages.policy();
        let (encoding, segments) = sms_text::plan::count(&text, &policy.plan);
        let (encoding, segments) = (encoding.name(), u32::try_from(segments).unwrap_or(u32::MAX));
        let cost_micros = info.as_ref().and_then(|i| {
            let r = self.contacts.engine().registry().resolve(&i.contact.phone, "smsgate", account);
            match r.decision {
                smsgate_core::routing::Decision::Connector { price_micros: Some(p), .. } => {
                    Some(p.saturating_mul(i64::from(segments)))
                }
                _ => None,
            }
        });
        Ok(Preview { text, missing: rendered.missing, encoding, segments, cost_micros })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> serde_json::Value {
        json!({"name": "Ann", "phone": "+13055550100", "time_zone": "America/New_York",
               "fields": {"appointment_at": "2026-12-09T15:00:00Z", "visits": 3}, "data": {"order_id": "A-17"}})
    }

    fn check_render(body: &str, text: &str, missing: &[&str]) {
        let r = render(body, &ctx()).unwrap();
        assert_eq!(
            (r.text.as_str(), r.missing.iter().map(String::as_str).collect::<Vec<_>>()),
            (text, missing.to_vec()),
            "{body}"
        );
    }

    #[test]
    fn merge_fields_filters_and_what_is_missing() {
        check_render("Hi {{ name }}", "Hi Ann", &[]);
        check_render("Order {{ data.order_id }} is on its way", "Order A-17 is on its way", &[]);
        check_render("See you {{ fields.appointment_at | date(\"%a %H:%M\") }}", "See you Wed 10:00", &[]);
        check_render("Hi {{ nickname | default(\"there\") }}", "Hi there", &["nickname"]);
        check_render("Plan: {{ fields.plan }}.", "Plan: .", &["fields.plan"]);
        check_render("{{ fields.visits + 1 }} visits", "4 visits", &[]);
        check_render("{{ '<b>' }}", "<b>", &[]);
        check_render("{{ '2026-12-24' | date('%d %b') }}", "24 Dec", &[]);
        // A local time (no offset) is the recipient's: written as it is, whatever the zone.
        check_render("{{ '2026-12-24 18:30' | date('%a %H:%M') }}", "Thu 18:30", &[]);
        check_render("{{ '2026-12-24T18:30:00' | date }}", "2026-12-24 18:30", &[]);
    }

    #[test]
    fn bad_templates_say_where() {
        let e = check("Hello\n{{ name }").unwrap_err();
        assert_eq!(e.code(), "invalid_template");
        assert!(e.to_string().starts_with("line 2, column"), "{e}");
        assert!(check("{% include 'x' %}").is_ok(), "parses; renders nothing it could load");
        assert!(render("{% include 'x' %}", &ctx()).is_err(), "no template to include");
        assert_eq!(check("").unwrap_err().code(), "invalid_body");
    }

    #[test]
    fn work_is_bounded() {
        let e = render("{% for i in range(100000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}", &ctx());
        assert!(e.unwrap_err().to_string().contains("too much work"));
        assert!(render("{{ 'x' | date('%Q') }}", &ctx()).is_err(), "a bad format is an error, not a panic");
    }
}
