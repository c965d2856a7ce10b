//! Consent in the engine: who is opted out now, kept in memory for admission (asked on every message), and what an
//! inbound keyword does — on every inbound path, since every inbound message is stored here
//! ([`Engine::store_inbound`]).
//!
//! Numbers are keyed by a keyed hash ([`ConsentBook::hash`], HMAC-SHA256 under a key from the server's secret), so
//! the opt-outs table, the ledger and this copy hold no number that erasure would have to find. A change made on
//! this node is in the copy before the call that made it returns; one made on another node sharing the database
//! within [`REFRESH_EVERY`] (the copy reads the ledger's recent changes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use smsgate_core::consent::{Category, Compliance, Keyword, OptOutScope, Source};
use smsgate_core::senders::address_key;
use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};
use smsgate_store::{ConsentEvent, ListFilter, NewMessage, Store, StoreError, Transition};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{DomainEvent, Engine, EngineError};

/// How often the copy of opt-outs reads the changes other nodes made.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How far back each refresh reads, past the last: a change committed late with an earlier time is not missed.
const REFRESH_OVERLAP_MS: i64 = 10_000;

/// How long an account's compliance settings are trusted without reading them again.
pub const SETTINGS_TTL: Duration = Duration::from_secs(5);

/// How long an automatic reply stays valid.
const REPLY_VALIDITY_SECS: i64 = 24 * 3600;

/// Opt-outs by account, then by number hash: the scopes each is opted out in (`""`: the whole account).
type OptedOut = HashMap<AccountId, HashMap<String, Vec<String>>>;

/// Opt-outs and compliance settings, as admission asks them. One per engine.
#[derive(Debug)]
pub struct ConsentBook {
    key: ring::hmac::Key,
    opted: RwLock<OptedOut>,
    loaded: AtomicBool,
    /// Where the next refresh reads from.
    watermark: Mutex<Timestamp>,
    settings: Mutex<HashMap<AccountId, (Instant, Arc<Compliance>)>>,
}

impl ConsentBook {
    /// A book keying numbers with `secret`.
    pub fn new(secret: &[u8]) -> ConsentBook {
        ConsentBook {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            opted: RwLock::new(HashMap::new()),
            loaded: AtomicBool::new(false),
            watermark: Mutex::new(Timestamp(0)),
            settings: Mutex::new(HashMap::new()),
        }
    }

    /// The keyed hash a number (E.164) is known by in the consent tables and after erasure.
    pub fn hash(&self, phone: &str) -> String {
        let mut mac = ring::hmac::Context::with_key(&self.key);
        mac.update(b"phone:");
        mac.update(phone.as_bytes());
        hex::encode(&mac.sign().as_ref()[..20])
    }

    async fn ensure_loaded(&self, store: &dyn Store, now: Timestamp) -> Result<(), StoreError> {
        if self.loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        let all = store.all_opt_outs().await?;
        let mut opted: OptedOut = HashMap::new();
        for (account, hash, scope) in all {
            opted.entry(account).or_default().entry(hash).or_default().push(scope);
        }
        *self.opted.write().unwrap_or_else(|e| e.into_inner()) = opted;
        *self.watermark.lock().unwrap_or_else(|e| e.into_inner()) = now;
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a text of `account` from `from` to `to` (E.164) may not go because the number opted out.
    pub async fn opted_out(
        &self,
        store: &dyn Store,
        account: AccountId,
        to: &str,
        from: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.ensure_loaded(store, now).await?;
        let opted = self.opted.read().unwrap_or_else(|e| e.into_inner());
        // Most accounts have few opt-outs against many messages: no hash unless the account has any.
        let Some(numbers) = opted.get(&account) else { return Ok(false) };
        let Some(scopes) = numbers.get(&self.hash(to)) else { return Ok(false) };
        let sender = address_key(from);
        Ok(scopes.iter().any(|s| s.is_empty() || *s == sender))
    }

    /// Puts what the store says of a number now into the copy.
    async fn settle(&self, store: &dyn Store, account: AccountId, hash: &str) -> Result<(), StoreError> {
        let scopes = store.opt_out_scopes(account, hash).await?;
        self.put(account, hash, scopes);
        Ok(())
    }

    /// Sets the scopes a number is opted out in, in the copy (none: opted in).
    fn put(&self, account: AccountId, hash: &str, scopes: Vec<String>) {
        let mut opted = self.opted.write().unwrap_or_else(|e| e.into_inner());
        let numbers = opted.entry(account).or_default();
        if scopes.is_empty() {
            numbers.remove(hash);
        } else {
            numbers.insert(hash.to_string(), scopes);
        }
    }

    /// Adds one scope to a number's opt-outs in the copy; whether it was not there yet.
    fn hold(&self, account: AccountId, hash: &str, scope: &str) -> bool {
        let mut opted = self.opted.write().unwrap_or_else(|e| e.into_inner());
        let scopes = opted.entry(account).or_default().entry(hash.to_string()).or_default();
        let new = !scopes.iter().any(|s| s == scope);
        if new {
            scopes.push(scope.to_string());
        }
        new
    }

    /// Takes back a scope [`ConsentBook::hold`] added.
    fn release(&self, account: AccountId, hash: &str, scope: &str) {
        let mut opted = self.opted.write().unwrap_or_else(|e| e.into_inner());
        let Some(numbers) = opted.get_mut(&account) else { return };
        let Some(scopes) = numbers.get_mut(hash) else { return };
        scopes.retain(|s| s != scope);
        if scopes.is_empty() {
            numbers.remove(hash);
        }
    }

    /// Records a change of consent and puts it in force on this node; whether the number's state changed.
    ///
    /// An opt-out holds in the copy from before it is written: a send that admission looks at while the write is
    /// under way is refused, and anyone who can read the opt-out in the store finds admission refusing too (taken
    /// back if the write fails). An opt-in lifts it only once written; then the copy is read again from the store,
    /// which has the last word.
    pub async fn record(&self, store: &dyn Store, event: &ConsentEvent) -> Result<bool, StoreError> {
        self.ensure_loaded(store, event.at).await?;
        let (account, hash) = (event.account_id, event.phone_hash.as_str());
        let held = event.opted_out && self.hold(account, hash, &event.scope);
        let changed = match store.record_consent(event).await {
            Ok(changed) => changed,
            Err(e) => {
                if held {
                    self.release(account, hash, &event.scope);
                }
                return Err(e);
            }
        };
        self.settle(store, account, hash).await?;
        Ok(changed)
    }

    /// Reads the changes made since the last refresh (by any node) into the copy.
    pub async fn refresh(&self, store: &dyn Store, now: Timestamp) -> Result<(), StoreError> {
        if !self.loaded.load(Ordering::Acquire) {
            return self.ensure_loaded(store, now).await;
        }
        let since = *self.watermark.lock().unwrap_or_else(|e| e.into_inner());
        for (account, hash, scopes) in store.consent_changed_since(since.plus_millis(-REFRESH_OVERLAP_MS)).await? {
            self.put(account, &hash, scopes);
        }
        *self.watermark.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(())
    }

    /// An account's compliance settings, as read less than [`SETTINGS_TTL`] ago; the defaults for settings that
    /// do not read (logged).
    pub async fn compliance(&self, store: &dyn Store, account: AccountId) -> Result<Arc<Compliance>, StoreError> {
        {
            let settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, c)) = settings.get(&account)
                && at.elapsed() < SETTINGS_TTL
            {
                return Ok(c.clone());
            }
        }
        let c = match store.compliance(account).await? {
            Some(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
                warn!(%account, error = %e, "compliance settings do not read; using the defaults");
                Compliance::default()
            }),
            None => Compliance::default(),
        };
        let c = Arc::new(c);
        let mut settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        if settings.len() >= 10_000 {
            settings.clear();
        }
        settings.insert(account, (Instant::now(), c.clone()));
        Ok(c)
    }

    /// Forgets an account's settings after a change on this node.
    pub fn forget(&self, account: AccountId) {
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).remove(&account);
    }
}

/// The scope an opt-out or opt-in by keyword to `to` has under `settings`.
pub fn keyword_scope(settings: &Compliance, to: &str) -> String {
    match settings.opt_out_scope {
        OptOutScope::Account => String::new(),
        OptOutScope::Number => address_key(to),
    }
}

impl Engine {
    /// Opt-outs and compliance settings.
    pub fn consent(&self) -> &ConsentBook {
        &self.consent
    }

    /// Reads other nodes' consent changes every [`REFRESH_EVERY`].
    pub(crate) async fn refresh_consent_every(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.consent.refresh(self.store.as_ref(), self.now()).await {
                warn!(error = %e, "reading consent changes failed; trying again");
            }
        }
    }

    /// What an inbound message that is a keyword does: the change of consent (recorded with the message as its
    /// evidence), waiting texts to an opted-out number canceled, and the automatic reply. Called once the message
    /// is stored; a failure is logged (the message stays stored, and the number can be opted out over the API).
    pub(crate) async fn answer_keyword(&self, inbound: &Message, campaign: Option<&str>) {
        if let Err(e) = self.try_answer_keyword(inbound, campaign).await {
            warn!(error = %e, message = %inbound.id, "acting on an inbound keyword failed");
        }
    }

    async fn try_answer_keyword(&self, inbound: &Message, campaign: Option<&str>) -> Result<(), StoreError> {
        let store = self.store.as_ref();
        let account = inbound.account_id;
        if let Err(e) = store.touch_contact(account, &inbound.from, inbound.created_at).await {
            warn!(error = %e, "noting a contact's activity failed");
        }
        let settings = self.consent.compliance(store, account).await?;
        let Some(keyword) = settings.keywords.classify(&inbound.body) else { return Ok(()) };
        let now = self.now();
        let scope = keyword_scope(&settings, &inbound.to);
        let changed = match keyword {
            Keyword::Help => false,
            Keyword::OptOut | Keyword::OptIn => {
                let opted_out = keyword == Keyword::OptOut;
                let event = ConsentEvent {
                    id: uuid::Uuid::now_v7().to_string(),
                    account_id: account,
                    phone_hash: self.consent.hash(&inbound.from),
                    phone: Some(inbound.from.clone()),
                    scope: scope.clone(),
                    opted_out,
                    source: Source::Keyword,
                    evidence: serde_json::json!({
                        "message_id": inbound.id.to_string(),
                        "text": inbound.body,
                        "to": inbound.to,
                    })
                    .to_string(),
                    // When the person said it: of two keywords answered at once, the later word stands.
                    at: inbound.created_at,
                };
                let changed = self.consent.record(store, &event).await?;
                info!(%account, message = %inbound.id, opted_out, changed, "consent changed by keyword");
                if let (true, true, Some(c)) = (opted_out, changed, campaign) {
                    store.attribute_consent(&event.id, c).await?;
                }
                if opted_out && changed {
                    // Counted just after the change it counts (a crash between loses the count, not the opt-out).
                    let account_id = account.to_string();
                    let counted = smsgate_store::rollups::Counted {
                        account_id: &account_id,
                        inbound: true,
                        handset: &inbound.from,
                        address: &inbound.to,
                        campaign,
                        connector: inbound.connector.as_deref(),
                        price_micros: None,
                        created_at: inbound.created_at,
                    };
                    let one = smsgate_store::Counters { opt_outs: 1, ..Default::default() };
                    store.add_rollups(&smsgate_store::Rollups::of(&counted, inbound.created_at, one)).await?;
                }
                let from = if scope.is_empty() { "" } else { inbound.to.as_str() };
                if opted_out && self.consent.opted_out(store, account, &inbound.from, from, now).await? {
                    let from = (!scope.is_empty()).then_some(inbound.to.as_str());
                    if let Err(e) = self.cancel_for_opt_out(account, &inbound.from, from, &settings).await {
                        warn!(error = %e, "canceling the texts waiting for a number that opted out failed");
                    }
                }
                changed
            }
        };
        // A number that opted out is told once; a repeated STOP gets no second text. An opt-in is confirmed only
        // when the number was opted out: a YES that answers a question (an automation's "Reply YES") gets none.
        let reply = settings.auto_reply && (keyword == Keyword::Help || changed);
        if reply {
            let business = match &settings.business_name {
                Some(name) => name.clone(),
                None => store.account(account).await?.map(|a| a.name).unwrap_or_default(),
            };
            let text = settings.replies.text(keyword, &business);
            self.send_reply(inbound, keyword, text, now).await?;
        }
        Ok(())
    }

    /// Cancels an account's texts to `to` that have not gone yet (only those from `from` when the opt-out holds for
    /// that number alone; only marketing when transactional texts may still go); how many.
    pub async fn cancel_for_opt_out(
        &self,
        account: AccountId,
        to: &str,
        from: Option<&str>,
        settings: &Compliance,
    ) -> Result<usize, EngineError> {
        let keep = |m: &Message| settings.blocked_by_opt_out(m.category);
        self.cancel_waiting(account, to, from, keep, "recipient opted out").await
    }

    /// Cancels the waiting (`scheduled`, `queued`) outbound messages of an account to `to` (from `from`, when given)
    /// that `which` picks, through the group writer; how many moved.
    pub async fn cancel_waiting(
        &self,
        account: AccountId,
        to: &str,
        from: Option<&str>,
        which: impl Fn(&Message) -> bool,
        detail: &str,
    ) -> Result<usize, EngineError> {
        const PAGE: u32 = 1000;
        let mut ids = Vec::new();
        for status in [Status::Scheduled, Status::Queued] {
            let filter = ListFilter {
                status: Some(status),
                to: Some(to.to_string()),
                from: from.map(str::to_string),
                direction: Some(Direction::Outbound),
                ..ListFilter::default()
            };
            let mut cursor = None;
            loop {
                let page = self.store.list_messages(account, &filter, cursor, PAGE).await?;
                ids.extend(page.iter().filter(|m| which(m)).map(|m| m.id));
                match page.last() {
                    Some(last) if page.len() == PAGE as usize => cursor = Some(last.id),
                    _ => break,
                }
            }
        }
        Ok(self.cancel_ids(&ids, detail).await?.into_iter().filter(|&m| m).count())
    }

    /// Cancels messages by id (their owner checked by the caller) through the group writer; whether each moved.
    pub async fn cancel_ids(&self, ids: &[MessageId], detail: &str) -> Result<Vec<bool>, EngineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let changes = ids
            .iter()
            .map(|&id| Transition {
                id,
                to: Status::Canceled,
                at: now,
                detail: detail.into(),
                changes: Default::default(),
            })
            .collect();
        self.record_many(changes).await
    }

    /// Stores the automatic reply to a keyword: from the number it came to, to its sender, exempt from the
    /// opt-out it confirms (it does not go through admission's consent check).
    async fn send_reply(
        &self,
        inbound: &Message,
        keyword: Keyword,
        text: String,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (encoding, segments) = sms_text::plan::count(&text, &sms_text::Options::default());
        let reply = Message {
            id: MessageId::generate(),
            account_id: inbound.account_id,
            direction: Direction::Outbound,
            to: inbound.from.clone(),
            from: inbound.to.clone(),
            body: text,
            encoding: encoding.name(),
            segments: u32::try_from(segments).unwrap_or(u32::MAX),
            price_micros: None,
            connector: None,
            carrier_id: None,
            status: Status::Queued,
            error_code: None,
            reference: None,
            callback_url: None,
            callback_statuses: None,
            send_at: None,
            expires_at: Some(now.plus_secs(REPLY_VALIDITY_SECS)),
            attempts: 0,
            category: Category::Reply,
            created_at: now,
            updated_at: now,
        };
        let what = match keyword {
            Keyword::OptOut => "opt-out confirmation",
            Keyword::OptIn => "opt-in confirmation",
            Keyword::Help => "help",
        };
        let detail = format!("accepted; automatic reply ({what}) to message {}", inbound.id);
        self.store.insert_messages(&[NewMessage::new(reply.clone(), detail)]).await?;
        self.wake();
        self.events.publish(DomainEvent::Accepted(reply));
        Ok(())
    }
}
