//! [`Messages`]: what every way in does with messages — submit one or many, cancel, replace, read, list — for an
//! account, through the same admission ([`Ingress`]) and the same group writer, so that REST, the SMPP server
//! and the front ends to come cannot drift apart.

use std::sync::Arc;

use smsgate_core::admission::{ErrorCode, Policy, Rejection, Request};
use smsgate_core::consent::Compliance;
use smsgate_core::quiet;
use smsgate_core::{AccountId, Direction, Event, Message, MessageId, Status, Timestamp};
use smsgate_engine::ingress::{Ingress, Prepared};
use smsgate_store::{CallbackRecord, Inserted, ListFilter, Store};

use crate::error::{Result, ServiceError};

/// The most messages a list page holds.
pub const MAX_PAGE: u32 = 1000;

/// The messages of accounts.
#[derive(Debug, Clone)]
pub struct Messages {
    ingress: Ingress,
    store: Arc<dyn Store>,
}

/// What a submission with an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Stored now.
    New(Message),
    /// The key was used before with the same request: the message it made then.
    Repeated(Message),
}

impl Submitted {
    pub fn message(&self) -> &Message {
        match self {
            Submitted::New(m) | Submitted::Repeated(m) => m,
        }
    }
}

/// Where admission finds the zone a recipient's quiet hours are kept in.
#[derive(Debug, Clone, Copy)]
pub enum ZoneOf<'a> {
    /// The recipient's contact, read by number (else the number's zone).
    Lookup,
    /// The zone the recipient's contact gave, already read (`None`: it gave none; the number's zone then).
    Contact(Option<&'a str>),
}

/// A time as RFC 3339 (UTC), for journey lines.
pub(crate) fn rfc3339(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.millis())
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn no_message() -> ServiceError {
    ServiceError::not_found("not_found", "no such message")
}

/// How a text would go ([`Messages::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPlan {
    /// `gsm7` (with its national tables when they fit better) or `ucs2`.
    pub encoding: String,
    pub segments: u32,
    pub characters: u32,
    /// The route's price a segment times the segments; `None` without a destination or a priced route.
    pub cost_micros: Option<i64>,
}

impl Messages {
    pub fn new(ingress: Ingress, store: Arc<dyn Store>) -> Messages {
        Messages { ingress, store }
    }

    /// The engine messages go to.
    pub fn engine(&self) -> &smsgate_engine::Engine {
        self.ingress.engine()
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.ingress.now()
    }

    /// The engine's clock, for the parts of a front end that decide by the same time.
    pub fn clock(&self) -> std::sync::Arc<dyn smsgate_core::clock::Clock> {
        self.ingress.engine().clock()
    }

    /// The admission policy every way in applies.
    pub fn policy(&self) -> &Policy {
        self.ingress.policy()
    }

    /// How a text would go, as admission would plan it, without sending it: its encoding, segments and characters,
    /// and its cost by the route `to` (when given) would take for `account`.
    pub fn plan(&self, account: AccountId, body: &str, to: Option<&str>) -> Result<TextPlan> {
        let policy = self.policy();
        let (encoding, segments) = sms_text::plan::count(body, &policy.plan);
        let segments = u32::try_from(segments).unwrap_or(u32::MAX);
        let cost_micros = match to.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(to) => {
                let to =
                    smsgate_core::admission::normalize_destination(to, policy.default_region, policy.strict_numbers)
                        .map_err(ServiceError::Rejected)?;
                match self.engine().registry().resolve(&to, "smsgate", account).decision {
                    smsgate_core::routing::Decision::Connector { price_micros: Some(p), .. } => {
                        Some(p.saturating_mul(i64::from(segments)))
                    }
                    _ => None,
                }
            }
        };
        Ok(TextPlan {
            encoding: encoding.name(),
            segments,
            characters: u32::try_from(body.chars().count()).unwrap_or(u32::MAX),
            cost_micros,
        })
    }

    /// Admits a request for `account` and builds its message, not yet stored; a refusal is
    /// [`ServiceError::Rejected`] with admission's code (`invalid_destination`, `empty_body`, ...), or
    /// [`ServiceError::Forbidden`] `sender_not_owned` when the sender is another account's, or nobody's and the
    /// account may send only from its own numbers and sender IDs.
    ///
    /// Then consent: a text to a number that opted out of the account's texts (or of this sender's) is refused,
    /// [`ErrorCode::RecipientOptedOut`], unless it is transactional and the account lets those through; a marketing
    /// text (or any, if the account says so) outside the recipient's allowed hours is held for their next opening
    /// (`scheduled`, with a journey line saying why).
    pub async fn prepare(&self, account: AccountId, request: &Request, now: Timestamp) -> Result<Prepared> {
        self.prepare_for(account, request, now, ZoneOf::Lookup).await
    }

    /// [`Messages::prepare`], for a sender that has read the recipient's contact already (a campaign): `zone` says
    /// whose zone quiet hours are kept in, so admission does not read the contact again.
    pub async fn prepare_for(
        &self,
        account: AccountId,
        request: &Request,
        now: Timestamp,
        zone: ZoneOf<'_>,
    ) -> Result<Prepared> {
        let mut prepared = self.ingress.prepare(account, request, now).map_err(ServiceError::Rejected)?;
        self.owns_sender(account, &prepared.message.from).await?;
        let engine = self.ingress.engine();
        let m = &prepared.message;
        let consent = engine.consent();
        let settings = consent.compliance(self.store.as_ref(), account).await?;
        if settings.blocked_by_opt_out(m.category)
            && consent.opted_out(self.store.as_ref(), account, &m.to, &m.from, now).await?
        {
            return Err(ServiceError::Rejected(Rejection::new(
                ErrorCode::RecipientOptedOut,
                format!("{} opted out of this account's texts", m.to),
            )));
        }
        if settings.holds(m.category) {
            self.hold_for_quiet_hours(&mut prepared, &settings, now, zone).await?;
        }
        Ok(prepared)
    }

    /// Whether `account` may send from `from` as admission reads it: [`ServiceError::Rejected`] `invalid_sender`
    /// for a sender no message may have, [`ServiceError::Forbidden`] `sender_not_owned` for one the account may
    /// not use.
    pub async fn check_sender(&self, account: AccountId, from: &str) -> Result<()> {
        let probe = Request { to: "+14155550100".into(), from: from.into(), body: "x".into(), ..Request::default() };
        let prepared = self.ingress.prepare(account, &probe, self.now()).map_err(ServiceError::Rejected)?;
        self.owns_sender(account, &prepared.message.from).await
    }

    /// [`ServiceError::Forbidden`] `sender_not_owned` unless `account` may send from `from` (as admission wrote it).
    async fn owns_sender(&self, account: AccountId, from: &str) -> Result<()> {
        if !self.ingress.engine().senders().may_send_from(self.store.as_ref(), account, from).await? {
            return Err(ServiceError::forbidden(
                "sender_not_owned",
                format!("from {from:?} is not a number or sender ID of this account"),
            ));
        }
        Ok(())
    }

    /// Moves a text's due time to the recipient's next allowed minute, if it falls outside their hours.
    async fn hold_for_quiet_hours(
        &self,
        prepared: &mut Prepared,
        settings: &Compliance,
        now: Timestamp,
        zone: ZoneOf<'_>,
    ) -> Result<()> {
        let m = &prepared.message;
        let Some(place) = quiet::place_of(&m.to) else { return Ok(()) };
        // The contact's own zone when the account gave one, else the number's.
        let given = match zone {
            ZoneOf::Lookup => self.store.contact_by_phone(m.account_id, &m.to).await?.and_then(|c| c.time_zone),
            ZoneOf::Contact(z) => z.map(str::to_string),
        };
        let zone = given.and_then(|z| quiet::zone(&z)).unwrap_or(place.zone);
        let account_hours = settings.quiet_hours.as_ref().and_then(|h| h.parse().ok());
        let due = m.send_at.unwrap_or(now).max(now);
        match quiet::next_opening(due, zone, &place, account_hours.as_deref()) {
            Ok(None) => Ok(()),
            Ok(Some(opening)) => {
                let m = &mut prepared.message;
                let validity = m.expires_at.map_or(0, |e| e.millis() - due.millis());
                m.status = Status::Scheduled;
                m.send_at = Some(opening);
                m.expires_at = Some(opening.plus_millis(validity));
                prepared.detail = format!(
                    "accepted; held for the recipient's allowed hours ({} in {}) until {}",
                    place.name(),
                    zone.name(),
                    rfc3339(opening)
                );
                Ok(())
            }
            Err(_) => Err(ServiceError::Rejected(Rejection::new(
                ErrorCode::NoAllowedHours,
                format!(
                    "the account's quiet_hours and the allowed hours of {} ({}) never meet within a week",
                    place.name(),
                    zone.name()
                ),
            ))),
        }
    }

    /// Admits and stores one message, committed when this returns. `idempotency` is the sender's key and a hash of
    /// its request: a key used before with the same request gives the message it made then; with another request,
    /// [`ServiceError::Conflict`] `idempotency_key_reused`.
    pub async fn submit(
        &self,
        account: AccountId,
        request: &Request,
        idempotency: Option<(String, String)>,
    ) -> Result<Submitted> {
        let now = self.now();
        let prepared = self.prepare(account, request, now).await?;
        self.submit_prepared(account, prepared, idempotency, now).await
    }

    /// Stores one message already admitted ([`Messages::prepare`], perhaps with SMPP receipts asked for).
    pub async fn submit_prepared(
        &self,
        account: AccountId,
        prepared: Prepared,
        idempotency: Option<(String, String)>,
        now: Timestamp,
    ) -> Result<Submitted> {
        self.take_rate(account, 1).await?;
        let (inserted, message) = self.ingress.submit(prepared, idempotency, now).await?;
        match inserted {
            Inserted::New => Ok(Submitted::New(message)),
            Inserted::Duplicate { id, same_request: true } => {
                let original = self.store.message(account, id).await?;
                original.map(Submitted::Repeated).ok_or_else(no_message)
            }
            Inserted::Duplicate { .. } => Err(ServiceError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )),
        }
    }

    /// Stores messages already admitted, in one transaction; returns them as stored, in order.
    pub async fn submit_many(&self, prepared: Vec<Prepared>, now: Timestamp) -> Result<Vec<Message>> {
        let mut per_account: Vec<(AccountId, usize)> = Vec::new();
        for p in &prepared {
            match per_account.iter_mut().find(|(a, _)| *a == p.message.account_id) {
                Some((_, n)) => *n += 1,
                None => per_account.push((p.message.account_id, 1)),
            }
        }
        for (account, n) in per_account {
            self.take_rate(account, n).await?;
        }
        Ok(self.ingress.submit_many(prepared, now).await?)
    }

    /// Stores messages already admitted for `account`, each with its idempotency key (and request hash) if any, in
    /// one transaction, after waiting for the account's messages a second as long as it takes (a caller sends
    /// batches of at most a second's worth, [`Messages::rate`]): what became of each, in order.
    pub async fn submit_keyed(
        &self,
        account: AccountId,
        keyed: Vec<(Prepared, Option<(String, String)>)>,
        now: Timestamp,
    ) -> Result<Vec<(Inserted, Message)>> {
        loop {
            match self.take_rate(account, keyed.len()).await {
                Ok(()) => break,
                Err(ServiceError::RateLimited { retry_after }) => tokio::time::sleep(retry_after).await,
                Err(e) => return Err(e),
            }
        }
        Ok(self.ingress.submit_keyed(keyed, now).await?)
    }

    /// The account's messages a second, if it has a limit.
    pub async fn rate(&self, account: AccountId) -> Result<Option<u32>> {
        let a = self.ingress.engine().senders().account(self.store.as_ref(), account).await?;
        Ok(a.and_then(|a| a.messages_per_second))
    }

    /// Takes `n` messages from the account's messages a second ([`ServiceError::RateLimited`] when over it).
    async fn take_rate(&self, account: AccountId, n: usize) -> Result<()> {
        use smsgate_engine::senders::RateError;
        match self.ingress.engine().senders().take_messages(self.store.as_ref(), account, n).await {
            Ok(()) => Ok(()),
            Err(RateError::Limited(retry_after)) => Err(ServiceError::RateLimited { retry_after }),
            Err(RateError::Store(e)) => Err(e.into()),
        }
    }

    /// An account's message, if it has one by this id.
    pub async fn find(&self, account: AccountId, id: MessageId) -> Result<Option<Message>> {
        Ok(self.store.message(account, id).await?)
    }

    /// An account's message; [`ServiceError::NotFound`] if it has none by this id.
    pub async fn get(&self, account: AccountId, id: MessageId) -> Result<Message> {
        self.find(account, id).await?.ok_or_else(no_message)
    }

    /// An account's message with its journey.
    pub async fn journey(&self, account: AccountId, id: MessageId) -> Result<(Message, Vec<Event>)> {
        let message = self.get(account, id).await?;
        let events = self.store.events(id).await?;
        Ok((message, events))
    }

    /// An account's messages, newest first, after `cursor`, at most `limit` (1 to [`MAX_PAGE`]).
    pub async fn list(
        &self,
        account: AccountId,
        filter: &ListFilter,
        cursor: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ServiceError::invalid("invalid_limit", format!("limit must be 1 to {MAX_PAGE}")));
        }
        Ok(self.store.list_messages(account, filter, cursor, limit).await?)
    }

    /// An account's received messages, as [`Messages::list`].
    pub async fn inbound(
        &self,
        account: AccountId,
        filter: &ListFilter,
        cursor: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<Message>> {
        let filter = ListFilter { direction: Some(Direction::Inbound), ..filter.clone() };
        self.list(account, &filter, cursor, limit).await
    }

    /// Cancels an account's message that has not gone to a carrier yet (`scheduled` or `queued`), through the
    /// engine's group writer; the message as it is after. [`ServiceError::Conflict`] `not_cancelable` for one that
    /// is further along.
    pub async fn cancel(&self, account: AccountId, id: MessageId, detail: &str) -> Result<Message> {
        let message = self.get(account, id).await?;
        let moved = self.cancel_ids(&[id], detail).await?;
        if !moved.first().copied().unwrap_or(false) {
            return Err(ServiceError::conflict(
                "not_cancelable",
                format!("the message is {}; only scheduled or queued messages can be canceled", message.status),
            ));
        }
        self.get(account, id).await
    }

    /// Cancels every waiting message (`scheduled`, `queued`) of an account from `from` to `to`; how many.
    pub async fn cancel_waiting(&self, account: AccountId, to: &str, from: &str, detail: &str) -> Result<usize> {
        Ok(self.engine().cancel_waiting(account, to, Some(from), |_| true, detail).await?)
    }

    /// Cancels messages by id (their owner checked by the caller); whether each moved.
    async fn cancel_ids(&self, ids: &[MessageId], detail: &str) -> Result<Vec<bool>> {
        Ok(self.engine().cancel_ids(ids, detail).await?)
    }

    /// Replaces the text (and schedule and validity) of an account's message still waiting with `replacement`'s
    /// (admitted by [`Messages::prepare`]); whether it was replaced.
    pub async fn replace(
        &self,
        account: AccountId,
        id: MessageId,
        replacement: &Prepared,
        detail: &str,
    ) -> Result<bool> {
        Ok(self.store.replace_message(account, id, &replacement.message, self.now(), detail).await?)
    }

    /// The callbacks of an account's message, oldest first.
    pub async fn callbacks(&self, account: AccountId, id: MessageId) -> Result<Vec<CallbackRecord>> {
        self.get(account, id).await?;
        Ok(self.store.callbacks(account, id).await?)
    }

    /// The account's newest webhook callbacks, newest first, with their attempts: at most `limit`, looked for among
    /// the server's newest 20,000.
    pub async fn recent_callbacks(&self, account: AccountId, limit: u32) -> Result<Vec<CallbackRecord>> {
        Ok(self.store.recent_callbacks(account, limit, 20_000).await?)
    }

    /// Messages on their way, by status, across all accounts (for metrics).
    pub async fn pending(&self) -> Result<Vec<(Status, i64)>> {
        Ok(self.store.count_pending().await?)
    }
}
