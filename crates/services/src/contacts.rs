//! [`Contacts`]: the people an account texts, their lists and segments, their consent, and what the law gives them
//! (an export of everything held about them, erasure). Every call is for one account, which never sees another's.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smsgate_core::admission::normalize_destination;
use smsgate_core::consent::{Compliance, Source};
use smsgate_core::quiet;
use smsgate_core::{AccountId, Direction, Event, Message, Timestamp};
use smsgate_engine::Engine;
use smsgate_store::{ConsentEvent, Contact, ContactList, ContactQuery, ListFilter, OptOut, Segment, Store};

use crate::error::{Result, ServiceError};
use crate::messages::Messages;

/// The most contacts a page holds.
pub const MAX_PAGE: u32 = 1000;
/// The most custom fields a contact has.
pub const MAX_FIELDS: usize = 100;
/// The most tags a contact has.
pub const MAX_TAGS: usize = 50;

/// Contacts, lists, segments, consent and settings of accounts.
#[derive(Debug, Clone)]
pub struct Contacts {
    pub(crate) messages: Messages,
    pub(crate) store: Arc<dyn Store>,
    /// Where uploads for imports are kept; `None`: no imports.
    pub(crate) import_dir: Option<std::path::PathBuf>,
}

/// What a contact is made of, as a caller gives it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactSpec {
    pub phone: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub time_zone: Option<String>,
    pub fields: Map<String, Value>,
    pub tags: Vec<String>,
}

/// A change to a contact: each field given replaces the one there (`Some(None)` clears it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactPatch {
    pub phone: Option<String>,
    pub name: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub time_zone: Option<Option<String>>,
    /// Merged into the fields there; a null value removes that field.
    pub fields: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
}

/// A contact with what is derived for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactInfo {
    pub contact: Contact,
    /// The zone texts are timed by: the contact's, else the number's.
    pub time_zone: Option<String>,
    /// `contact` (given) or `number` (derived; the number's country or area code spans several zones when
    /// `time_zone_several` is true), or `unknown`.
    pub time_zone_source: &'static str,
    pub time_zone_several: bool,
    /// Where the number is, such as `US-FL`.
    pub place: Option<String>,
    pub opted_out: bool,
    pub lists: Vec<String>,
}

/// A segment's filter: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentFilter {
    /// Has every one of these tags.
    pub tags: Vec<String>,
    /// Is in every one of these lists (ids).
    pub lists: Vec<String>,
    /// Is in none of these lists.
    pub not_lists: Vec<String>,
    /// Opted out or not.
    pub opted_out: Option<bool>,
    /// A message from them in the last N days.
    pub active_within_days: Option<u32>,
    /// No message from them in the last N days.
    pub inactive_for_days: Option<u32>,
    /// Conditions on custom fields.
    pub fields: Vec<FieldCondition>,
}

/// A condition on a custom field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCondition {
    pub field: String,
    /// `eq`, `ne`, `gt`, `gte`, `lt`, `lte`, `contains`, `exists`, `missing`.
    pub op: String,
    #[serde(default)]
    pub value: Value,
}

const OPS: [&str; 9] = ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "exists", "missing"];

impl FieldCondition {
    /// Whether `fields` meet it. Numbers compare as numbers, anything else as text (RFC 3339 times sort as text).
    pub fn holds(&self, fields: &Map<String, Value>) -> bool {
        let v = fields.get(&self.field).filter(|v| !v.is_null());
        let Some(v) = v else { return self.op == "missing" || self.op == "ne" };
        let order = match (v.as_f64(), self.value.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => Some(text(v).cmp(&text(&self.value))),
        };
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self.op.as_str() {
            "exists" => true,
            "missing" => false,
            "eq" => order == Some(Equal),
            "ne" => order != Some(Equal),
            "gt" => order == Some(Greater),
            "gte" => matches!(order, Some(Greater | Equal)),
            "lt" => order == Some(Less),
            "lte" => matches!(order, Some(Less | Equal)),
            "contains" => text(v).to_lowercase().contains(&text(&self.value).to_lowercase()),
            _ => false,
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SegmentFilter {
    fn problem(&self) -> Option<String> {
        for c in &self.fields {
            if !OPS.contains(&c.op.as_str()) {
                return Some(format!("fields: op {:?} is not one of {}", c.op, OPS.join(", ")));
            }
            if c.field.is_empty() {
                return Some("fields: a condition names no field".into());
            }
        }
        None
    }

    /// Whether a contact (with its lists and opt-out, as [`Contacts::infos`] gives them) meets the filter at
    /// `now`: what [`SegmentFilter::query`] and the field conditions select, decided for one contact in memory.
    pub fn matches(&self, info: &ContactInfo, now: Timestamp) -> bool {
        let c = &info.contact;
        let days = |d: u32| now.plus_secs(-i64::from(d) * 86_400);
        self.tags.iter().all(|t| c.tags.contains(t))
            && self.lists.iter().all(|l| info.lists.contains(l))
            && !self.not_lists.iter().any(|l| info.lists.contains(l))
            && self.opted_out.is_none_or(|o| o == info.opted_out)
            && self.active_within_days.is_none_or(|d| c.last_activity_at.is_some_and(|at| at >= days(d)))
            && self.inactive_for_days.is_none_or(|d| c.last_activity_at.is_none_or(|at| at < days(d)))
            && self.fields.iter().all(|f| f.holds(&c.fields))
    }

    /// The store query for the filter's conditions other than on fields.
    pub fn query(&self, now: Timestamp) -> ContactQuery {
        let days = |d: u32| now.plus_secs(-i64::from(d) * 86_400);
        ContactQuery {
            tags: self.tags.clone(),
            lists: self.lists.clone(),
            not_lists: self.not_lists.clone(),
            opted_out: self.opted_out,
            active_since: self.active_within_days.map(days),
            inactive_since: self.inactive_for_days.map(days),
            ..ContactQuery::default()
        }
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(code, message)
}

fn no_contact() -> ServiceError {
    ServiceError::not_found("not_found", "no such contact")
}

/// Why a contact's parts cannot be kept, if they cannot.
fn check_parts(
    name: Option<&str>,
    email: Option<&str>,
    time_zone: Option<&str>,
    fields: &Map<String, Value>,
    tags: &[String],
) -> Result<()> {
    if name.is_some_and(|n| n.chars().count() > 256) {
        return Err(invalid("invalid_name", "name may have at most 256 characters"));
    }
    if let Some(e) = email
        && (e.len() > 254 || !e.contains('@') || e.chars().any(char::is_whitespace))
    {
        return Err(invalid("invalid_email", format!("email {e:?} is not an address")));
    }
    if let Some(z) = time_zone
        && quiet::zone(z).is_none()
    {
        return Err(invalid(
            "invalid_time_zone",
            format!("time_zone {z:?} is not an IANA zone such as America/New_York"),
        ));
    }
    if fields.len() > MAX_FIELDS {
        return Err(invalid("invalid_fields", format!("a contact has at most {MAX_FIELDS} custom fields")));
    }
    for (k, v) in fields {
        if !crate::imports::field_name_ok(k) {
            return Err(invalid(
                "invalid_fields",
                format!("field name {k:?}: 1 to 64 letters, digits or underscores (it becomes a merge field)"),
            ));
        }
        match v {
            Value::String(s) if s.chars().count() > 1024 => {
                return Err(invalid("invalid_fields", format!("field {k:?}: at most 1024 characters")));
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {}
            _ => {
                return Err(invalid(
                    "invalid_fields",
                    format!("field {k:?}: a string, number, boolean or date/time (as RFC 3339 text)"),
                ));
            }
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(invalid("invalid_tags", format!("a contact has at most {MAX_TAGS} tags")));
    }
    if let Some(t) = tags.iter().find(|t| t.trim().is_empty() || t.chars().count() > 64) {
        return Err(invalid("invalid_tags", format!("tag {t:?}: 1 to 64 characters")));
    }
    Ok(())
}

/// A contact with what is derived for it: the zone texts are timed by and where that came from, its place.
/// The zone a contact's texts are timed by: its own, else its number's.
pub fn zone_of(contact: &Contact) -> Option<String> {
    contact.time_zone.clone().or_else(|| quiet::place_of(&contact.phone).map(|p| p.zone.name().to_string()))
}

/// A contact's info without its lists and opt-out (not read).
pub(crate) fn bare_info(contact: Contact) -> ContactInfo {
    derived(contact, false, Vec::new())
}

fn derived(contact: Contact, opted_out: bool, lists: Vec<String>) -> ContactInfo {
    let place = quiet::place_of(&contact.phone);
    let (time_zone, source, several) = match (&contact.time_zone, &place) {
        (Some(z), _) => (Some(z.clone()), "contact", false),
        (None, Some(p)) => (Some(p.zone.name().to_string()), "number", p.several),
        (None, None) => (None, "unknown", false),
    };
    ContactInfo {
        time_zone,
        time_zone_source: source,
        time_zone_several: several,
        place: place.map(|p| p.name()),
        opted_out,
        lists,
        contact,
    }
}

fn clean_tags(tags: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.trim().to_string();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

impl Contacts {
    pub fn new(messages: Messages, store: Arc<dyn Store>) -> Contacts {
        Contacts { messages, store, import_dir: None }
    }

    /// Takes imports, keeping their uploads in `dir` (made if missing).
    pub fn import_dir(mut self, dir: std::path::PathBuf) -> std::io::Result<Contacts> {
        std::fs::create_dir_all(&dir)?;
        self.import_dir = Some(dir);
        Ok(self)
    }

    pub(crate) fn engine(&self) -> &Engine {
        self.messages.engine()
    }

    fn now(&self) -> Timestamp {
        self.messages.now()
    }

    /// A number in E.164, as admission reads destinations; [`ServiceError::Invalid`] `invalid_phone`.
    pub fn normalize_phone(&self, raw: &str) -> Result<String> {
        let policy = self.messages.policy();
        normalize_destination(raw, policy.default_region, policy.strict_numbers).map_err(|r| {
            // Admission's words are about a message's `to`.
            let message = r.message.strip_prefix("to ").map_or(r.message.clone(), |m| format!("phone {m}"));
            invalid("invalid_phone", message)
        })
    }

    /// The keyed hash a number is known by in the consent tables.
    pub fn phone_hash(&self, phone: &str) -> String {
        self.engine().consent().hash(phone)
    }

    /// A new contact, checked, not stored.
    pub fn build(&self, account: AccountId, spec: ContactSpec) -> Result<Contact> {
        let phone = self.normalize_phone(&spec.phone)?;
        let tags = clean_tags(spec.tags);
        let mut fields = spec.fields;
        fields.retain(|_, v| !v.is_null());
        check_parts(spec.name.as_deref(), spec.email.as_deref(), spec.time_zone.as_deref(), &fields, &tags)?;
        let now = self.now();
        Ok(Contact {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            phone_hash: self.phone_hash(&phone),
            phone,
            name: spec.name.filter(|n| !n.trim().is_empty()),
            email: spec.email.filter(|e| !e.is_empty()),
            time_zone: spec.time_zone,
            fields,
            tags,
            created_at: now,
            updated_at: now,
            last_activity_at: None,
        })
    }

    /// Creates a contact: [`ServiceError::Conflict`] `contact_exists` when the account has one with the number,
    /// unless `upsert`, which updates that one with what `spec` gives. Whether it was created, and the contact.
    pub async fn create(&self, account: AccountId, spec: ContactSpec, upsert: bool) -> Result<(bool, ContactInfo)> {
        let contact = self.build(account, spec.clone())?;
        if self.store.insert_contact(&contact).await? {
            return Ok((true, self.info(contact).await?));
        }
        let existing = self.store.contact_by_phone(account, &contact.phone).await?.ok_or_else(no_contact)?;
        if !upsert {
            return Err(ServiceError::conflict(
                "contact_exists",
                format!("contact {} has the number {} already", existing.id, existing.phone),
            ));
        }
        let patch = ContactPatch {
            phone: None,
            name: spec.name.map(Some),
            email: spec.email.map(Some),
            time_zone: spec.time_zone.map(Some),
            fields: (!spec.fields.is_empty()).then_some(spec.fields),
            tags: (!contact.tags.is_empty()).then_some(contact.tags),
        };
        Ok((false, self.update(account, &existing.id, patch).await?))
    }

    /// A contact and what is derived for it.
    pub async fn info(&self, contact: Contact) -> Result<ContactInfo> {
        let account = contact.account_id;
        let mut one = self.infos(account, vec![contact]).await?;
        one.pop().ok_or_else(no_contact)
    }

    /// A page of contacts and what is derived for each, in two reads for the page.
    pub async fn infos(&self, account: AccountId, page: Vec<Contact>) -> Result<Vec<ContactInfo>> {
        let (members, opted) = self.store.memberships_and_opt_outs(account, &page).await?;
        let mut lists: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        for (contact, list) in members {
            lists.entry(contact).or_default().push(list);
        }
        Ok(page
            .into_iter()
            .map(|c| {
                let (out, l) = (opted.contains(&c.phone_hash), lists.remove(&c.id).unwrap_or_default());
                derived(c, out, l)
            })
            .collect())
    }

    /// An account's contact.
    pub async fn get(&self, account: AccountId, id: &str) -> Result<ContactInfo> {
        let c = self.store.contact(account, id).await?.ok_or_else(no_contact)?;
        self.info(c).await
    }

    /// Changes an account's contact.
    pub async fn update(&self, account: AccountId, id: &str, patch: ContactPatch) -> Result<ContactInfo> {
        let mut c = self.store.contact(account, id).await?.ok_or_else(no_contact)?;
        if let Some(phone) = patch.phone {
            c.phone = self.normalize_phone(&phone)?;
            c.phone_hash = self.phone_hash(&c.phone);
            if let Some(other) = self.store.contact_by_phone(account, &c.phone).await?
                && other.id != c.id
            {
                return Err(ServiceError::conflict(
                    "contact_exists",
                    format!("contact {} has the number {} already", other.id, other.phone),
                ));
            }
        }
        if let Some(name) = patch.name {
            c.name = name.filter(|n| !n.trim().is_empty());
        }
        if let Some(email) = patch.email {
            c.email = email.filter(|e| !e.is_empty());
        }
        if let Some(tz) = patch.time_zone {
            c.time_zone = tz;
        }
        if let Some(fields) = patch.fields {
            for (k, v) in fields {
                if v.is_null() {
                    c.fields.remove(&k);
                } else {
                    c.fields.insert(k, v);
                }
            }
        }
        if let Some(tags) = patch.tags {
            c.tags = clean_tags(tags);
        }
        check_parts(c.name.as_deref(), c.email.as_deref(), c.time_zone.as_deref(), &c.fields, &c.tags)?;
        c.updated_at = self.now();
        if !self.store.update_contact(&c).await? {
            return Err(no_contact());
        }
        self.info(c).await
    }

    /// Deletes an account's contact (its consent history stays: it is the number's, not the contact's).
    pub async fn delete(&self, account: AccountId, id: &str) -> Result<()> {
        if self.store.delete_contact(account, id).await? { Ok(()) } else { Err(no_contact()) }
    }

    /// An account's contacts matching `query`, by id after `cursor`.
    pub async fn list(
        &self,
        account: AccountId,
        query: &ContactQuery,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ContactInfo>> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid("invalid_limit", format!("limit must be 1 to {MAX_PAGE}")));
        }
        for list in &query.lists {
            self.list_record(account, list).await?;
        }
        let page = self.store.contacts(account, query, cursor, limit).await?;
        self.infos(account, page).await
    }

    // Lists.

    async fn list_record(&self, account: AccountId, id: &str) -> Result<ContactList> {
        self.store.list(account, id).await?.ok_or_else(|| ServiceError::not_found("not_found", "no such list"))
    }

    /// Creates a list; [`ServiceError::Conflict`] `list_exists` when the account has one by the name.
    pub async fn create_list(&self, account: AccountId, name: &str) -> Result<ContactList> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(invalid("invalid_name", "a list's name has 1 to 128 characters"));
        }
        let list = ContactList {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            name: name.to_string(),
            created_at: self.now(),
            members: 0,
        };
        if !self.store.insert_list(&list).await? {
            return Err(ServiceError::conflict("list_exists", format!("a list named {name:?} exists")));
        }
        Ok(list)
    }

    pub async fn lists(&self, account: AccountId) -> Result<Vec<ContactList>> {
        Ok(self.store.lists(account).await?)
    }

    pub async fn list_of(&self, account: AccountId, id: &str) -> Result<ContactList> {
        self.list_record(account, id).await
    }

    /// A list by id or, failing that, by name.
    pub async fn list_by_id_or_name(&self, account: AccountId, key: &str) -> Result<Option<ContactList>> {
        if let Some(l) = self.store.list(account, key).await? {
            return Ok(Some(l));
        }
        Ok(self.store.lists(account).await?.into_iter().find(|l| l.name == key))
    }

    pub async fn delete_list(&self, account: AccountId, id: &str) -> Result<()> {
        if self.store.delete_list(account, id).await? {
            Ok(())
        } else {
            Err(ServiceError::not_found("not_found", "no such list"))
        }
    }

    /// Adds contacts to a list, by id or by number (a number with no contact gets one); how many joined.
    pub async fn add_members(
        &self,
        account: AccountId,
        list: &str,
        contacts: &[String],
        phones: &[String],
    ) -> Result<u64> {
        self.list_record(account, list).await?;
        if contacts.len() + phones.len() > 10_000 {
            return Err(invalid("too_many", "at most 10,000 members a request"));
        }
        let mut ids = Vec::with_capacity(contacts.len() + phones.len());
        for id in contacts {
            let c = self.store.contact(account, id).await?.ok_or_else(|| {
                ServiceError::not_found("contact_not_found", format!("no contact {id:?} in this account"))
            })?;
            ids.push(c.id);
        }
        for phone in phones {
            let phone = self.normalize_phone(phone)?;
            let id = match self.store.contact_by_phone(account, &phone).await? {
                Some(c) => c.id,
                None => {
                    let spec = ContactSpec { phone: phone.clone(), ..ContactSpec::default() };
                    self.create(account, spec, true).await?.1.contact.id
                }
            };
            ids.push(id);
        }
        Ok(self.store.add_members(list, &ids, self.now()).await?)
    }

    pub async fn remove_member(&self, account: AccountId, list: &str, contact: &str) -> Result<()> {
        self.list_record(account, list).await?;
        if self.store.remove_member(list, contact).await? {
            Ok(())
        } else {
            Err(ServiceError::not_found("not_found", "the contact is not a member of this list"))
        }
    }

    // Segments.

    async fn check_filter(&self, account: AccountId, filter: &SegmentFilter) -> Result<()> {
        if let Some(p) = filter.problem() {
            return Err(invalid("invalid_filter", p));
        }
        for list in filter.lists.iter().chain(&filter.not_lists) {
            self.list_record(account, list)
                .await
                .map_err(|_| invalid("invalid_filter", format!("no list {list:?}")))?;
        }
        Ok(())
    }

    pub async fn create_segment(&self, account: AccountId, name: &str, filter: SegmentFilter) -> Result<Segment> {
        if name.trim().is_empty() || name.chars().count() > 128 {
            return Err(invalid("invalid_name", "a segment's name has 1 to 128 characters"));
        }
        self.check_filter(account, &filter).await?;
        let now = self.now();
        let segment = Segment {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            name: name.trim().to_string(),
            filter: serde_json::to_string(&filter).unwrap_or_default(),
            created_at: now,
            updated_at: now,
        };
        self.store.insert_segment(&segment).await?;
        Ok(segment)
    }

    pub async fn segments(&self, account: AccountId) -> Result<Vec<Segment>> {
        Ok(self.store.segments(account).await?)
    }

    pub async fn segment(&self, account: AccountId, id: &str) -> Result<(Segment, SegmentFilter)> {
        let s = self
            .store
            .segment(account, id)
            .await?
            .ok_or_else(|| ServiceError::not_found("not_found", "no such segment"))?;
        let filter = serde_json::from_str(&s.filter)
            .map_err(|e| ServiceError::Store(smsgate_store::StoreError::Corrupt(format!("segment filter: {e}"))))?;
        Ok((s, filter))
    }

    pub async fn delete_segment(&self, account: AccountId, id: &str) -> Result<()> {
        if self.store.delete_segment(account, id).await? {
            Ok(())
        } else {
            Err(ServiceError::not_found("not_found", "no such segment"))
        }
    }

    /// The contacts a segment holds now, by id after `cursor`, at most `limit`; and how many it holds.
    pub async fn segment_contacts(
        &self,
        account: AccountId,
        id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<ContactInfo>, u64)> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid("invalid_limit", format!("limit must be 1 to {MAX_PAGE}")));
        }
        let (_, filter) = self.segment(account, id).await?;
        let query = filter.query(self.now());
        if filter.fields.is_empty() {
            let count = self.store.count_contacts(account, &query).await?;
            let page = self.store.contacts(account, &query, cursor, limit).await?;
            return Ok((self.infos(account, page).await?, count));
        }
        // Conditions on custom fields are checked here, over the contacts the rest of the filter selects.
        let (mut out, mut count) = (Vec::new(), 0u64);
        let mut after: Option<String> = None;
        loop {
            let page = self.store.contacts(account, &query, after.as_deref(), MAX_PAGE).await?;
            let full = page.len() == MAX_PAGE as usize;
            after = page.last().map(|c| c.id.clone());
            for c in page {
                if !filter.fields.iter().all(|f| f.holds(&c.fields)) {
                    continue;
                }
                count += 1;
                if out.len() < limit as usize && cursor.is_none_or(|k| c.id.as_str() > k) {
                    out.push(c);
                }
            }
            if !full {
                break;
            }
        }
        Ok((self.infos(account, out).await?, count))
    }

    // Consent.

    /// An account's compliance settings.
    pub async fn compliance(&self, account: AccountId) -> Result<Compliance> {
        Ok((*self.engine().consent().compliance(self.store.as_ref(), account).await?).clone())
    }

    /// Replaces an account's compliance settings.
    pub async fn set_compliance(&self, account: AccountId, settings: &Compliance) -> Result<()> {
        if let Some(p) = settings.problem() {
            return Err(invalid("invalid_settings", p));
        }
        let json = serde_json::to_string(settings).unwrap_or_default();
        if !self.store.set_compliance(account, &json).await? {
            return Err(ServiceError::not_found("not_found", "no such account"));
        }
        self.engine().consent().forget(account);
        Ok(())
    }

    /// Opts a number out of an account's texts (every sender), recorded with `source` and `evidence`; whether it
    /// was opted in before. Waiting texts to it are canceled.
    pub async fn opt_out(&self, account: AccountId, phone: &str, source: Source, evidence: Value) -> Result<bool> {
        let phone = self.normalize_phone(phone)?;
        let changed = self.change_consent(account, &phone, true, "", source, evidence).await?;
        if changed {
            let now = self.now();
            let account_id = account.to_string();
            let counted = smsgate_store::rollups::Counted {
                account_id: &account_id,
                inbound: false,
                handset: &phone,
                address: "",
                campaign: None,
                connector: None,
                price_micros: None,
                created_at: now,
            };
            let one = smsgate_store::Counters { opt_outs: 1, ..Default::default() };
            self.store.add_rollups(&smsgate_store::Rollups::of(&counted, now, one)).await?;
        }
        let settings = self.compliance(account).await?;
        self.engine().cancel_for_opt_out(account, &phone, None, &settings).await?;
        Ok(changed)
    }

    /// Opts a number back in to an account's texts, in every scope; whether it was opted out.
    pub async fn opt_in(&self, account: AccountId, phone: &str, source: Source, evidence: Value) -> Result<bool> {
        let phone = self.normalize_phone(phone)?;
        self.change_consent(account, &phone, false, "*", source, evidence).await
    }

    async fn change_consent(
        &self,
        account: AccountId,
        phone: &str,
        opted_out: bool,
        scope: &str,
        source: Source,
        evidence: Value,
    ) -> Result<bool> {
        let event = ConsentEvent {
            id: uuid::Uuid::now_v7().to_string(),
            account_id: account,
            phone_hash: self.phone_hash(phone),
            phone: Some(phone.to_string()),
            scope: scope.to_string(),
            opted_out,
            source,
            evidence: evidence.to_string(),
            at: self.now(),
        };
        Ok(self.engine().consent().record(self.store.as_ref(), &event).await?)
    }

    /// An account's opt-outs, newest first, after the cursor (`at` and hash of the last one seen).
    pub async fn opt_outs(
        &self,
        account: AccountId,
        before: Option<(Timestamp, String)>,
        limit: u32,
    ) -> Result<Vec<OptOut>> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid("invalid_limit", format!("limit must be 1 to {MAX_PAGE}")));
        }
        Ok(self.store.opt_outs(account, before, limit).await?)
    }

    /// Whether a number is opted out of an account's texts, and in which scopes.
    pub async fn opt_out_scopes(&self, account: AccountId, phone: &str) -> Result<Vec<String>> {
        let phone = self.normalize_phone(phone)?;
        Ok(self.store.opt_out_scopes(account, &self.phone_hash(&phone)).await?)
    }

    /// A contact's consent ledger, oldest first.
    pub async fn consent(&self, account: AccountId, id: &str) -> Result<Vec<ConsentEvent>> {
        let c = self.store.contact(account, id).await?.ok_or_else(no_contact)?;
        Ok(self.store.consent_events(account, &c.phone_hash).await?)
    }

    // GDPR.

    /// Every message of an account to or from a number, oldest first, with journeys.
    async fn messages_of(&self, account: AccountId, phone: &str) -> Result<Vec<(Message, Vec<Event>)>> {
        let mut out = Vec::new();
        for (direction, filter) in [
            (Direction::Outbound, ListFilter { to: Some(phone.to_string()), ..ListFilter::default() }),
            (Direction::Inbound, ListFilter { from: Some(phone.to_string()), ..ListFilter::default() }),
        ] {
            let filter = ListFilter { direction: Some(direction), ..filter };
            let mut cursor = None;
            loop {
                let page = self.store.list_messages(account, &filter, cursor, crate::messages::MAX_PAGE).await?;
                for m in &page {
                    let events = self.store.events(m.id).await?;
                    out.push((m.clone(), events));
                }
                match page.last() {
                    Some(last) if page.len() == crate::messages::MAX_PAGE as usize => cursor = Some(last.id),
                    _ => break,
                }
            }
        }
        out.sort_by_key(|(m, _)| m.id);
        Ok(out)
    }

    /// Everything held about a contact's person: the contact, its consent ledger, every message to and from the
    /// number (GDPR articles 15 and 20).
    pub async fn export(&self, account: AccountId, id: &str) -> Result<Export> {
        let info = self.get(account, id).await?;
        let consent = self.store.consent_events(account, &info.contact.phone_hash).await?;
        let messages = self.messages_of(account, &info.contact.phone).await?;
        Ok(Export { contact: info, consent, messages })
    }

    /// Erases a contact's person (GDPR article 17): the contact deleted, every message to or from the number
    /// anonymized (the number replaced by `erased:` and a keyed hash, the body removed; counts and prices kept),
    /// the number forgotten in the consent ledger. An opt-out holds on, keyed by the hash. How many messages.
    pub async fn erase(&self, account: AccountId, id: &str) -> Result<u64> {
        let c = self.store.contact(account, id).await?.ok_or_else(no_contact)?;
        let replacement = format!("erased:{}", &c.phone_hash[..16.min(c.phone_hash.len())]);
        let n = self.store.anonymize_messages(account, &c.phone, &replacement).await?;
        self.store.forget_phone(account, &c.phone_hash).await?;
        // The short links made for them, with their clicks (a link's URL may carry what identified them).
        self.store.forget_links(account, id).await?;
        // Their conversations, automation runs and the events about them (their data may name them).
        self.store.forget_conversations(account, &c.phone).await?;
        self.store.forget_contact_automations(account, id).await?;
        self.store.delete_contact(account, id).await?;
        Ok(n)
    }
}

/// What [`Contacts::export`] gives.
#[derive(Debug, Clone)]
pub struct Export {
    pub contact: ContactInfo,
    pub consent: Vec<ConsentEvent>,
    pub messages: Vec<(Message, Vec<Event>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_conditions() {
        let fields: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"plan": "gold", "visits": 3, "since": "2026-01-05"})).unwrap();
        let check = |field: &str, op: &str, value: Value, expected: bool| {
            let c = FieldCondition { field: field.into(), op: op.into(), value };
            assert_eq!(c.holds(&fields), expected, "{field} {op}");
        };
        check("plan", "eq", "gold".into(), true);
        check("plan", "ne", "gold".into(), false);
        check("visits", "gt", 2.into(), true);
        check("visits", "lte", 2.into(), false);
        check("since", "gte", "2026-01-01".into(), true);
        check("plan", "contains", "OL".into(), true);
        check("nothing", "missing", Value::Null, true);
        check("nothing", "exists", Value::Null, false);
        check("nothing", "ne", "x".into(), true);
    }
}
