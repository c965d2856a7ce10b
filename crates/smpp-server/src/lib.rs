//! smsgate's SMPP 3.4 server for client applications (issue 5, first part): binds are checked against the
//! account's SMPP credentials (`smpp_credentials`: the address ranges first, then the password; every refusal —
//! unknown `system_id`, an address outside the ranges, a wrong password, a bind over `max_binds`, a lockout — is
//! `ESME_RBINDFAIL`, the reason only in the log; failed binds lock out their `system_id` and address for a while,
//! [`smsgate_services::binds`]), and each
//! `submit_sm` goes through the same [`Ingress`] as REST: admitted, committed, and only then answered with
//! `submit_sm_resp`, whose `message_id` is the message's id. `query_sm` reads the account's messages.
//!
//! A long text may come as one `submit_sm` with `message_payload`, or in parts marked by a UDH or SAR TLVs: the
//! parts' responses wait until the last part has come and the whole message is stored, and all carry its one id
//! (a set not whole within [`PARTS_WAIT`], or [`SmppServer::parts_wait`], is refused, every part
//! `ESME_RSUBMITFAIL`, and nothing is stored).
//!
//! Receipts a submit asks for (`registered_delivery`), and the account's inbound messages, go back as deliver_sm
//! to any receiver or transceiver of the account ([`deliver`]). When more than one part of a concatenated submit
//! asks for a receipt, each part is answered with an id of its own (`<message id>.<part>`) and gets its own
//! receipt; otherwise the parts share the message's id and one receipt.
//!
//! `data_sm` and each destination of a `submit_multi` go the same way as `submit_sm`; `schedule_delivery_time`
//! and `validity_period` (absolute or relative) become the message's `send_at` and validity. `cancel_sm` and
//! `replace_sm` act on the account's messages that have not gone to a carrier yet. A credential's `throughput`
//! is shared by its binds; a submit over it is answered `ESME_RTHROTTLED`.
//!
//! With a certificate and key, the same server takes SMPP over TLS on a second address
//! ([`SmppServer::serve_with_tls`]).

pub mod deliver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use smpp::pdu::{Bind, CancelSm, DataSm, DestAddress, QuerySmResp, ReplaceSm, SubmitMulti, SubmitMultiResp};
use smpp::pdu::{SubmitSm, SubmitSmResp, UnsuccessSme, UnsuccessSmes};
use smpp::{Body, CommandStatus, Pdu};
use smpp_session::{BindKind, Binder, Handler, Session};
use sms_text::reassembly::{ExpiryPolicy, Pushed, Reassembler};
use sms_text::udh::Concat;
use smsgate_core::access::{IpRanges, verify_password};
use smsgate_core::admission::{ErrorCode, Request};
use smsgate_core::{AccountId, Message, MessageId, Status, Timestamp};
use smsgate_services::{Admin, Messages, ServiceError, Submitted};
use smsgate_store::{SmppReceipts, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The `system_id` the server answers binds with.
pub const SYSTEM_ID: &str = "smsgate";

/// How long the parts of a concatenated submit wait for the rest of their set, unless set otherwise.
pub const PARTS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A part's text, its submit's `registered_delivery`, and where its submit's answer goes.
type Part = (String, u8, tokio::sync::oneshot::Sender<Result<String, CommandStatus>>);

/// Parts of concatenated submits by account, source and destination.
/// The parts of concatenated submits waiting for their sets, and how many sets each account has open: an account
/// has a share of the buffer ([`PARTS_PER_ACCOUNT`] sets), so that one client's flood of first parts cannot evict
/// another account's sets.
#[derive(Debug)]
struct Parts {
    sets: Reassembler<(AccountId, String, String), Part>,
    open: HashMap<AccountId, usize>,
}

/// The incomplete sets of concatenated parts one account may have open at once.
pub const PARTS_PER_ACCOUNT: usize = 10_000;

impl Parts {
    fn closed(&mut self, account: AccountId) {
        if let Some(n) = self.open.get_mut(&account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&account);
            }
        }
    }

    /// Drops the sets past their time (their parts' waiters hear it).
    fn expire(&mut self, now: std::time::Instant) {
        for gone in self.sets.expire(now) {
            self.closed(gone.key.0);
        }
    }
}

/// The SMPP server. Clones share it.
#[derive(Debug, Clone)]
pub struct SmppServer {
    inner: Arc<Inner>,
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Each session's window, timeouts and enquire_link.
    pub session: smpp_session::Config,
    /// How long the parts of a concatenated submit wait for the rest of their set.
    pub parts_wait: std::time::Duration,
    /// The incomplete sets one account may have open at once; past it, a part that would start another is
    /// answered `ESME_RTHROTTLED`.
    pub parts_per_account: usize,
    /// The deliver_sm one account may have under way at once (its share of the deliverer).
    pub deliver_per_account: usize,
    /// This node's name, as the deliver_sm outbox's leases record it.
    pub node: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            session: smpp_session::Config::default(),
            parts_wait: PARTS_WAIT,
            parts_per_account: PARTS_PER_ACCOUNT,
            deliver_per_account: deliver::PER_ACCOUNT,
            node: "node-1".into(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// For the outbox of deliver_sm only: everything else goes through the services.
    store: Arc<dyn Store>,
    messages: Messages,
    admin: Admin,
    settings: Settings,
    /// Binds open now, by `system_id`.
    binds: Mutex<HashMap<String, u32>>,
    /// The account of each `system_id` bound since the start.
    accounts: Mutex<HashMap<String, AccountId>>,
    /// Parts of concatenated submits until their sets are whole.
    parts: Mutex<Parts>,
    /// Each credential's throughput limit, shared by its binds.
    throttles: Mutex<HashMap<String, Arc<Throttle>>>,
    /// Sessions that take deliver_sm, by account.
    receivers: Arc<deliver::Receivers>,
    /// Password checks under way at once: each takes Argon2's memory (7 MiB, 19 MiB for older hashes) and a core
    /// for tens of milliseconds, so a storm of binds waits its turn instead of taking the machine's memory.
    checks: tokio::sync::Semaphore,
}

/// The most password checks at once: the cores, and at least two.
fn password_checks() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

impl SmppServer {
    /// A server whose clients' messages go through `messages` and whose binds `admin` checks; `store` holds the
    /// outbox of deliver_sm it sends.
    pub fn new(store: Arc<dyn Store>, messages: Messages, admin: Admin, settings: Settings) -> SmppServer {
        let sets = Reassembler::new(sms_text::reassembly::Config {
            timeout: settings.parts_wait,
            policy: ExpiryPolicy::Drop,
            ..Default::default()
        });
        let parts = Parts { sets, open: HashMap::new() };
        let deliver_share = settings.deliver_per_account;
        SmppServer {
            inner: Arc::new(Inner {
                store,
                messages,
                admin,
                settings,
                binds: Mutex::default(),
                accounts: Mutex::default(),
                parts: Mutex::new(parts),
                throttles: Mutex::default(),
                receivers: Arc::new(deliver::Receivers::with_share(deliver_share)),
                checks: tokio::sync::Semaphore::new(password_checks()),
            }),
        }
    }

    /// The incomplete sets of concatenated parts `account` has open here.
    pub fn parts_open(&self, account: AccountId) -> usize {
        self.inner.parts.lock().unwrap_or_else(|e| e.into_inner()).open.get(&account).copied().unwrap_or(0)
    }

    /// Binds open now with `system_id`.
    pub fn binds(&self, system_id: &str) -> u32 {
        self.inner.binds.lock().unwrap_or_else(|e| e.into_inner()).get(system_id).copied().unwrap_or(0)
    }

    /// Takes connections until `shutdown`, sending the outbox's deliver_sm to the receivers bound; then unbinds
    /// its sessions.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        self.serve_with_tls(Some(listener), None, shutdown).await;
    }

    /// [`SmppServer::serve`], taking SMPP over TLS on a second listener too.
    pub async fn serve_with_tls(
        &self,
        listener: Option<TcpListener>,
        tls: Option<(TcpListener, smpp_session::tls::TlsAcceptor)>,
        shutdown: CancellationToken,
    ) {
        let inner = &self.inner;
        let deliverer = tokio::spawn(deliver::run(
            inner.store.clone(),
            inner.messages.clock(),
            inner.settings.node.clone(),
            inner.receivers.clone(),
            shutdown.clone(),
        ));
        let binder: Arc<dyn Binder> = Arc::new(CredentialBinder { inner: inner.clone() });
        let stop = shutdown.clone();
        let server = inner.clone();
        let bound = move |session: Session| {
            let stop = stop.clone();
            let server = server.clone();
            async move {
                info!(system_id = session.system_id(), bind = session.kind().as_str(), peer = ?session.peer(), "SMPP bind");
                let account =
                    server.accounts.lock().unwrap_or_else(|e| e.into_inner()).get(session.system_id()).copied();
                if let Some(account) = account.filter(|_| session.kind().can_receive()) {
                    server.receivers.add(account, session.clone());
                }
                tokio::select! {
                    _ = session.closed() => {}
                    _ = stop.cancelled() => session.unbind().await,
                }
            }
        };
        let config = inner.settings.session.clone();
        let plain = {
            let (config, binder, bound, shutdown) = (config.clone(), binder.clone(), bound.clone(), shutdown.clone());
            async move {
                if let Some(listener) = listener {
                    smpp_session::listen(listener, shutdown, SYSTEM_ID, config, binder, bound).await;
                }
            }
        };
        let secure = async {
            if let Some((listener, acceptor)) = tls {
                smpp_session::listen_tls(listener, acceptor, shutdown.clone(), SYSTEM_ID, config, binder, bound).await;
            }
        };
        tokio::join!(plain, secure);
        let _ = deliverer.await;
        for s in inner.receivers.all() {
            s.close();
        }
    }
}

struct CredentialBinder {
    inner: Arc<Inner>,
}

#[async_trait]
impl Binder for CredentialBinder {
    async fn bind(
        &self,
        kind: BindKind,
        bind: &Bind,
        peer: Option<SocketAddr>,
    ) -> Result<Arc<dyn Handler>, CommandStatus> {
        // Every refusal is the same answer, so that a client learns nothing of which part was wrong; the log says.
        let refused = CommandStatus::ESME_RBINDFAIL;
        let system_id = bind.system_id.to_str_lossy().into_owned();
        let address = peer.map(|p| p.ip());
        let guard = self.inner.admin.binds();
        let keys = Admin::bind_keys(Some(&system_id), address);
        if let Some(left) = guard.locked(&keys) {
            info!(%system_id, ?peer, ?left, "SMPP bind refused: locked out after failed binds");
            return Err(refused);
        }
        let credential = match self.inner.admin.credential_for_bind(&system_id).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                info!(%system_id, ?peer, "SMPP bind refused: unknown system_id");
                guard.failed(&keys);
                return Err(refused);
            }
            Err(e) => {
                warn!(error = %e, "reading SMPP credentials failed");
                return Err(CommandStatus::ESME_RSYSERR);
            }
        };
        // The address first: a client outside the ranges gets no password check, and its failures count against
        // its address only (so that it cannot lock out the credential's real client).
        if let Some(ranges) = &credential.allowed_ips {
            let allowed = IpRanges::parse(ranges).is_ok_and(|r| peer.is_some_and(|p| r.contains(p.ip())));
            if !allowed {
                info!(%system_id, ?peer, "SMPP bind refused: an address outside the allowed ranges");
                guard.failed(&Admin::bind_keys(None, address));
                return Err(refused);
            }
        }
        // Argon2 takes its time on purpose: off the async workers.
        let (password, hash) = (bind.password.to_str_lossy().into_owned(), credential.password_hash.clone());
        let good = {
            let Ok(_check) = self.inner.checks.acquire().await else { return Err(CommandStatus::ESME_RSYSERR) };
            tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false)
        };
        if !good {
            info!(%system_id, ?peer, "SMPP bind refused: wrong password");
            guard.failed(&keys);
            return Err(refused);
        }
        guard.succeeded(&keys);
        let slot = BindSlot::take(&self.inner, &system_id, credential.max_binds)?;
        self.inner.accounts.lock().unwrap_or_else(|e| e.into_inner()).insert(system_id, credential.account_id);
        let throttle = credential.throughput.filter(|r| *r > 0.0).map(|rate| {
            let mut throttles = self.inner.throttles.lock().unwrap_or_else(|e| e.into_inner());
            let t = throttles.entry(credential.system_id.clone()).or_insert_with(|| Arc::new(Throttle::new(rate)));
            // A changed limit (the credential was made again) takes effect at the next bind.
            if t.rate != rate {
                *t = Arc::new(Throttle::new(rate));
            }
            t.clone()
        });
        Ok(Arc::new(Client { inner: self.inner.clone(), account: credential.account_id, kind, throttle, _slot: slot }))
    }
}

/// A place among a credential's binds, given back when the session (its handler) goes.
struct BindSlot {
    inner: Arc<Inner>,
    system_id: String,
}

impl BindSlot {
    fn take(inner: &Arc<Inner>, system_id: &str, max: Option<u32>) -> Result<BindSlot, CommandStatus> {
        let mut binds = inner.binds.lock().unwrap_or_else(|e| e.into_inner());
        let n = binds.entry(system_id.to_string()).or_default();
        if max.is_some_and(|m| *n >= m) {
            return Err(CommandStatus::ESME_RBINDFAIL);
        }
        *n += 1;
        Ok(BindSlot { inner: inner.clone(), system_id: system_id.to_string() })
    }
}

impl Drop for BindSlot {
    fn drop(&mut self) {
        let mut binds = self.inner.binds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = binds.get_mut(&self.system_id) {
            *n = n.saturating_sub(1);
        }
    }
}

/// One bound client's requests.
struct Client {
    inner: Arc<Inner>,
    account: AccountId,
    kind: BindKind,
    /// The credential's throughput, shared by its binds.
    throttle: Option<Arc<Throttle>>,
    _slot: BindSlot,
}

/// The `command_status` for an admission refusal.
fn refused(code: ErrorCode) -> CommandStatus {
    match code {
        ErrorCode::InvalidDestination => CommandStatus::ESME_RINVDSTADR,
        ErrorCode::InvalidSender => CommandStatus::ESME_RINVSRCADR,
        ErrorCode::EmptyBody | ErrorCode::BodyTooLong => CommandStatus::ESME_RINVMSGLEN,
        ErrorCode::InvalidSendAt => CommandStatus::ESME_RINVSCHED,
        ErrorCode::InvalidValidity => CommandStatus::ESME_RINVEXPIRY,
        ErrorCode::InvalidCallbackUrl
        | ErrorCode::InvalidCallbackStatuses
        | ErrorCode::InvalidReference
        | ErrorCode::InvalidCategory => CommandStatus::ESME_RSUBMITFAIL,
        // The recipient opted out: ESME_RX_R_APPN (0x66), "the receiver rejected the message" — here, the person.
        ErrorCode::RecipientOptedOut => CommandStatus::ESME_RX_R_APPN,
        ErrorCode::NoAllowedHours => CommandStatus::ESME_RINVSCHED,
    }
}

/// What a service's refusal of a submit answers: admission's code as its status; anything else a system error.
fn rejected(e: ServiceError) -> CommandStatus {
    match e {
        ServiceError::Rejected(r) => refused(r.code),
        // The account may send only from its own numbers and sender IDs.
        ServiceError::Forbidden { code: "sender_not_owned", .. } => CommandStatus::ESME_RINVSRCADR,
        // Over the account's messages a second.
        ServiceError::RateLimited { .. } => CommandStatus::ESME_RTHROTTLED,
        _ => CommandStatus::ESME_RSYSERR,
    }
}

/// The receipts a submit's `registered_delivery` asks for, if any (bits 0–1 `11` are reserved: none).
fn receipts(registered_delivery: u8, ids: u32) -> Option<SmppReceipts> {
    let finals = registered_delivery & 3;
    let asks = (finals == 1 || finals == 2) || registered_delivery & 0x10 != 0;
    asks.then_some(SmppReceipts { registered_delivery: registered_delivery & 0x13, ids })
}

/// An SMPP address as admission takes it: a number of TON 1 (international) gets its `+`; so does one of TON 0
/// (unknown) when the server reads no national numbers (no default region), as clients often send international
/// numbers with TON 0.
fn address(ton: u8, addr: &[u8], national_region: bool) -> String {
    let s = String::from_utf8_lossy(addr).into_owned();
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits && (ton == 1 || (ton == 0 && !national_region)) { format!("+{s}") } else { s }
}

/// What a submit_sm, a data_sm, or one destination of a submit_multi asks for.
struct Submit<'a> {
    source: (u8, &'a [u8]),
    dest: (u8, &'a [u8]),
    esm_class: u8,
    registered_delivery: u8,
    data_coding: u8,
    short_message: &'a [u8],
    tlvs: &'a smpp::Tlvs,
    /// `schedule_delivery_time` and `validity_period`, empty when not given.
    schedule: &'a [u8],
    validity: &'a [u8],
}

impl<'a> Submit<'a> {
    fn of_submit_sm(s: &'a SubmitSm) -> Submit<'a> {
        Submit {
            source: (s.source_addr_ton, s.source_addr.as_bytes()),
            dest: (s.dest_addr_ton, s.destination_addr.as_bytes()),
            esm_class: s.esm_class,
            registered_delivery: s.registered_delivery,
            data_coding: s.data_coding,
            short_message: s.short_message.as_bytes(),
            tlvs: &s.tlvs,
            schedule: s.schedule_delivery_time.as_bytes(),
            validity: s.validity_period.as_bytes(),
        }
    }

    fn of_data_sm(d: &'a DataSm) -> Submit<'a> {
        Submit {
            source: (d.source_addr_ton, d.source_addr.as_bytes()),
            dest: (d.dest_addr_ton, d.destination_addr.as_bytes()),
            esm_class: d.esm_class,
            registered_delivery: d.registered_delivery,
            data_coding: d.data_coding,
            short_message: &[],
            tlvs: &d.tlvs,
            schedule: &[],
            validity: &[],
        }
    }
}

/// When a message is to be sent and how long it may wait, from SMPP times (absolute or relative to `now`):
/// `send_at` and `validity_secs` as admission takes them.
fn times(schedule: &[u8], validity: &[u8], now: Timestamp) -> Result<(Option<Timestamp>, Option<i64>), CommandStatus> {
    let read = |t: &[u8], refusal| -> Result<Option<i64>, CommandStatus> {
        if t.is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(t).map_err(|_| refusal)?;
        let time = smpp::time::SmppTime::parse(text).map_err(|_| refusal)?;
        Ok(Some(time.resolve(now.0.div_euclid(1000))))
    };
    let send_at = read(schedule, CommandStatus::ESME_RINVSCHED)?.map(|secs| Timestamp(secs * 1000));
    // A time already come is "now".
    let send_at = send_at.filter(|t| *t > now);
    let from = send_at.unwrap_or(now).0.div_euclid(1000);
    let validity = read(validity, CommandStatus::ESME_RINVEXPIRY)?.map(|until| until - from);
    Ok((send_at, validity))
}

/// A credential's submits per second over all its binds: a token bucket holding a second's worth.
#[derive(Debug)]
struct Throttle {
    rate: f64,
    /// Tokens, and when they were counted.
    state: Mutex<(f64, std::time::Instant)>,
}

impl Throttle {
    fn new(rate: f64) -> Throttle {
        Throttle { rate, state: Mutex::new((rate.max(1.0), std::time::Instant::now())) }
    }

    /// Takes one submit's token; false when there is none.
    fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (tokens, then) = *state;
        let tokens = (tokens + now.duration_since(then).as_secs_f64() * self.rate).min(self.rate.max(1.0));
        let (left, ok) = if tokens >= 1.0 { (tokens - 1.0, true) } else { (tokens, false) };
        *state = (left, now);
        ok
    }
}

impl Client {
    /// A submit's checks that come before its content: the bind may submit, and the credential's throughput.
    fn may_submit(&self) -> Result<(), CommandStatus> {
        if !self.kind.can_submit() {
            return Err(CommandStatus::ESME_RINVBNDSTS);
        }
        if self.throttle.as_ref().is_some_and(|t| !t.take()) {
            return Err(CommandStatus::ESME_RTHROTTLED);
        }
        Ok(())
    }

    async fn submit(&self, s: Submit<'_>) -> Result<String, CommandStatus> {
        let udhi = s.esm_class & 0x40 != 0;
        let octets = s.tlvs.message_payload().unwrap_or(s.short_message);
        let decoded = sms_text::decode::decode_short_message(s.data_coding, udhi, octets)
            .map_err(|_| CommandStatus::ESME_RINVESMCLASS)?;
        // Binary data codings carry no text to admit.
        let Some(text) = decoded.text else { return Err(CommandStatus::ESME_RSUBMITFAIL) };
        let national = self.inner.messages.policy().default_region.is_some();
        let to = address(s.dest.0, s.dest.1, national);
        let from = address(s.source.0, s.source.1, national);
        let (send_at, validity_secs) = times(s.schedule, s.validity, self.inner.messages.now())?;
        let request = Request {
            to,
            from,
            body: text,
            send_at,
            validity_secs,
            callback_url: None,
            callback_statuses: None,
            reference: None,
            category: Default::default(),
        };
        let concat = decoded
            .udh
            .as_ref()
            .and_then(|u| u.concat())
            .or_else(|| s.tlvs.sar().map(|(reference, total, seq)| Concat { reference, wide: true, total, seq }));
        let rd = s.registered_delivery;
        match concat.filter(|c| c.total > 1) {
            None => Ok(self.store(request, receipts(rd, 1)).await?.to_string()),
            Some(c) => self.part(request, rd, c).await,
        }
    }

    /// Admits and stores one whole text; its id.
    async fn store(&self, request: Request, smpp: Option<SmppReceipts>) -> Result<MessageId, CommandStatus> {
        let now = self.inner.messages.now();
        let mut prepared = self.inner.messages.prepare(self.account, &request, now).await.map_err(rejected)?;
        prepared.smpp = smpp;
        match self.inner.messages.submit_prepared(self.account, prepared, None, now).await {
            Ok(Submitted::New(m) | Submitted::Repeated(m)) => Ok(m.id),
            Err(e @ ServiceError::RateLimited { .. }) => Err(rejected(e)),
            Err(e) => {
                warn!(error = %e, "storing an SMPP submit failed");
                Err(CommandStatus::ESME_RSYSERR)
            }
        }
    }

    /// One part of a concatenated text: held until its set is whole; then the whole text is stored and every part
    /// answered with its id (or, when more than one part asked for a receipt, with its own id).
    async fn part(&self, request: Request, rd: u8, c: Concat) -> Result<String, CommandStatus> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let now = std::time::Instant::now();
        let key = (self.account, request.to.clone(), request.from.clone());
        let pushed = {
            let mut parts = self.inner.parts.lock().unwrap_or_else(|e| e.into_inner());
            parts.expire(now);
            let opens = parts.sets.starts_set(&key, &c) && c.is_valid() && c.total > 1;
            if opens && parts.open.get(&self.account).copied().unwrap_or(0) >= self.inner.settings.parts_per_account {
                // This account's share of the buffer is full: its new set waits, nobody else's is evicted.
                return Err(CommandStatus::ESME_RTHROTTLED);
            }
            let (pushed, evicted) = parts.sets.push(key, c, (request.body.clone(), rd, tx), now);
            if let Some(gone) = evicted {
                parts.closed(gone.key.0);
            }
            match &pushed {
                Pushed::Pending if opens => *parts.open.entry(self.account).or_default() += 1,
                Pushed::Complete(_) if !opens => parts.closed(self.account),
                _ => {}
            }
            pushed
        };
        match pushed {
            Pushed::Complete(set) => {
                let body: String = set.iter().map(|(t, _, _)| t.as_str()).collect();
                let asking: Vec<u8> =
                    set.iter().map(|(_, rd, _)| *rd).filter(|rd| receipts(*rd, 1).is_some()).collect();
                let per_part = asking.len() > 1;
                let wanted = asking.iter().fold(0, |a, rd| a | rd);
                let ids = if per_part { set.len() as u32 } else { 1 };
                // The schedule and validity are the last part's.
                let stored = self.store(Request { body, ..request }, receipts(wanted, ids)).await;
                for (i, (_, _, waiter)) in set.into_iter().enumerate() {
                    let part = if per_part { i as u32 + 1 } else { 0 };
                    let _ = waiter.send(stored.map(|id| deliver::part_id(id, part)));
                }
            }
            Pushed::Pending => {}
            // The same part again (a client's retry): the first one is answered when the set is.
            Pushed::Duplicate => return Err(CommandStatus::ESME_RSUBMITFAIL),
            // Numbers that make no sense: the part as a message of its own.
            Pushed::Invalid => return Ok(self.store(request, receipts(rd, 1)).await?.to_string()),
        }
        let mut rx = rx;
        if let Ok(answer) = tokio::time::timeout(self.inner.settings.parts_wait, &mut rx).await {
            return answer.unwrap_or(Err(CommandStatus::ESME_RSUBMITFAIL));
        }
        // The wait is over: a set still incomplete is dropped (its waiters hear it); one that completed meanwhile
        // is being stored, and its answer comes.
        self.inner.parts.lock().unwrap_or_else(|e| e.into_inner()).expire(std::time::Instant::now());
        rx.await.unwrap_or(Err(CommandStatus::ESME_RSUBMITFAIL))
    }

    /// submit_multi: each destination a message of its own, through the same admission; the response carries the
    /// first stored message's id and the destinations refused, each with its status.
    async fn submit_multi(&self, m: &SubmitMulti) -> Result<SubmitMultiResp, CommandStatus> {
        if m.dest_address.0.is_empty() {
            return Err(CommandStatus::ESME_RINVNUMDESTS);
        }
        let mut first = None;
        let mut unsuccess = Vec::new();
        for (i, d) in m.dest_address.0.iter().enumerate() {
            // Each destination is a message: it takes a token of the credential's throughput (the first took its
            // own before the PDU was read).
            if i > 0 && self.throttle.as_ref().is_some_and(|t| !t.take()) {
                let (dest_addr_ton, dest_addr_npi, destination_addr) = match d {
                    DestAddress::SmeAddress { dest_addr_ton, dest_addr_npi, destination_addr } => {
                        (*dest_addr_ton, *dest_addr_npi, destination_addr.clone())
                    }
                    DestAddress::DistributionList { .. } => (0, 0, Default::default()),
                };
                let error_status_code = CommandStatus::ESME_RTHROTTLED;
                unsuccess.push(UnsuccessSme { dest_addr_ton, dest_addr_npi, destination_addr, error_status_code });
                continue;
            }
            let DestAddress::SmeAddress { dest_addr_ton, dest_addr_npi, destination_addr } = d else {
                // Distribution lists live on the SMSC; smsgate keeps none.
                unsuccess
                    .push(UnsuccessSme { error_status_code: CommandStatus::ESME_RINVDLNAME, ..Default::default() });
                continue;
            };
            let s = Submit {
                source: (m.source_addr_ton, m.source_addr.as_bytes()),
                dest: (*dest_addr_ton, destination_addr.as_bytes()),
                esm_class: m.esm_class,
                registered_delivery: m.registered_delivery,
                data_coding: m.data_coding,
                short_message: m.short_message.as_bytes(),
                tlvs: &m.tlvs,
                schedule: m.schedule_delivery_time.as_bytes(),
                validity: m.validity_period.as_bytes(),
            };
            match self.submit(s).await {
                Ok(id) => first = first.or(Some(id)),
                Err(status) => unsuccess.push(UnsuccessSme {
                    dest_addr_ton: *dest_addr_ton,
                    dest_addr_npi: *dest_addr_npi,
                    destination_addr: destination_addr.clone(),
                    error_status_code: status,
                }),
            }
        }
        let Some(id) = first else {
            // Nothing stored: the first refusal is the answer's.
            return Err(unsuccess.first().map_or(CommandStatus::ESME_RSUBMITFAIL, |u| u.error_status_code));
        };
        Ok(SubmitMultiResp {
            message_id: id.as_str().into(),
            unsuccess_sme: UnsuccessSmes(unsuccess),
            ..Default::default()
        })
    }

    /// The account's message a client's id names (a part's id names its message).
    async fn message(&self, id: &[u8]) -> Result<Message, CommandStatus> {
        let id = deliver::parse_part_id(&String::from_utf8_lossy(id)).ok_or(CommandStatus::ESME_RINVMSGID)?;
        match self.inner.messages.find(self.account, id).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(CommandStatus::ESME_RINVMSGID),
            Err(_) => Err(CommandStatus::ESME_RSYSERR),
        }
    }

    async fn query(&self, id: &[u8]) -> Result<QuerySmResp, CommandStatus> {
        let m = self.message(id).await?;
        // message_state values of SMPP 3.4 5.2.28.
        let state = match m.status {
            Status::Scheduled | Status::Queued | Status::Sending | Status::Sent => 1,
            Status::Delivered => 2,
            Status::Expired => 3,
            Status::Canceled => 4,
            Status::Undelivered => 5,
            Status::Failed => 8,
            Status::Received => 7,
        };
        let final_date = if m.status.is_final() {
            smpp::time::AbsoluteTime::from_unix(m.updated_at.0.div_euclid(1000))
                .and_then(|t| {
                    let (y, mo, d, h, mi, s) = (t.year % 100, t.month, t.day, t.hour, t.minute, t.second);
                    smpp::TimeString::new(&format!("{y:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}000+"))
                })
                .unwrap_or_default()
        } else {
            smpp::TimeString::default()
        };
        let id = String::from_utf8_lossy(id).trim().to_string();
        Ok(QuerySmResp { message_id: id.as_str().into(), final_date, message_state: state, error_code: 0 })
    }

    /// cancel_sm: the message the id names, or with no id every waiting message from `source_addr` to
    /// `destination_addr`; only what has not gone to a carrier yet (`scheduled`, `queued`) can be canceled.
    async fn cancel(&self, c: &CancelSm) -> Result<(), CommandStatus> {
        if !self.kind.can_submit() {
            return Err(CommandStatus::ESME_RINVBNDSTS);
        }
        const DETAIL: &str = "canceled by the sender (cancel_sm)";
        let canceled = if !c.message_id.as_bytes().is_empty() {
            let id = self.message(c.message_id.as_bytes()).await?.id;
            match self.inner.messages.cancel(self.account, id, DETAIL).await {
                Ok(_) => 1,
                Err(ServiceError::Conflict { .. } | ServiceError::NotFound { .. }) => 0,
                Err(_) => return Err(CommandStatus::ESME_RSYSERR),
            }
        } else {
            let national = self.inner.messages.policy().default_region.is_some();
            let to = address(c.dest_addr_ton, c.destination_addr.as_bytes(), national);
            let from = address(c.source_addr_ton, c.source_addr.as_bytes(), national);
            let canceled = self.inner.messages.cancel_waiting(self.account, &to, &from, DETAIL).await;
            canceled.map_err(|_| CommandStatus::ESME_RSYSERR)?
        };
        if canceled > 0 { Ok(()) } else { Err(CommandStatus::ESME_RCANCELFAIL) }
    }

    /// replace_sm: a new text (and schedule and validity, when given) for a message still waiting.
    async fn replace(&self, r: &ReplaceSm) -> Result<(), CommandStatus> {
        if !self.kind.can_submit() {
            return Err(CommandStatus::ESME_RINVBNDSTS);
        }
        let m = self.message(r.message_id.as_bytes()).await?;
        // The SMSC default alphabet, or the text's own message_payload is not part of replace_sm.
        let text = sms_text::decode::decode_short_message(0, false, r.short_message.as_bytes())
            .ok()
            .and_then(|d| d.text)
            .ok_or(CommandStatus::ESME_RREPLACEFAIL)?;
        let now = self.inner.messages.now();
        let (send_at, validity_secs) = times(r.schedule_delivery_time.as_bytes(), r.validity_period.as_bytes(), now)?;
        let request = Request {
            to: m.to.clone(),
            from: m.from.clone(),
            body: text,
            send_at: send_at.or(m.send_at.filter(|t| *t > now)),
            validity_secs: validity_secs.or_else(|| {
                m.expires_at.map(|e| (e.0 - send_at.or(m.send_at).unwrap_or(now).0).div_euclid(1000).max(1))
            }),
            callback_url: None,
            callback_statuses: None,
            reference: None,
            category: Default::default(),
        };
        let prepared = self.inner.messages.prepare(self.account, &request, now).await.map_err(rejected)?;
        let replaced = self
            .inner
            .messages
            .replace(self.account, m.id, &prepared, "replaced by the sender (replace_sm)")
            .await
            .map_err(|_| CommandStatus::ESME_RSYSERR)?;
        if replaced { Ok(()) } else { Err(CommandStatus::ESME_RREPLACEFAIL) }
    }
}

/// The names of this server's metrics.
pub mod metric {
    /// A client's request (`submit_sm`, `data_sm`, `submit_multi`, `query_sm`, ...), from the handler's start to
    /// its answer ready to write: for a submit, admission and the durable store.
    pub const REQUEST_SECONDS: &str = "smsgate_smpp_request_seconds";
}

#[async_trait]
impl Handler for Client {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        let began = std::time::Instant::now();
        let command = request.body.name();
        let answer = self.answer(request).await;
        metrics::histogram!(metric::REQUEST_SECONDS, "command" => command).record(began.elapsed());
        answer
    }
}

impl Client {
    async fn answer(&self, request: Pdu) -> (CommandStatus, Body) {
        let answer = |r: Result<String, CommandStatus>| match r {
            Ok(id) => (CommandStatus::ESME_ROK, SubmitSmResp { message_id: id.as_str().into(), ..Default::default() }),
            Err(status) => (status, SubmitSmResp::default()),
        };
        let empty = |r: Result<(), CommandStatus>| r.err().unwrap_or(CommandStatus::ESME_ROK);
        match request.body {
            Body::SubmitSm(s) => {
                let r = match self.may_submit() {
                    Ok(()) => self.submit(Submit::of_submit_sm(&s)).await,
                    Err(status) => Err(status),
                };
                let (status, body) = answer(r);
                (status, Body::SubmitSmResp(body))
            }
            Body::DataSm(d) => {
                let r = match self.may_submit() {
                    Ok(()) => self.submit(Submit::of_data_sm(&d)).await,
                    Err(status) => Err(status),
                };
                let (status, body) = answer(r);
                (status, Body::DataSmResp(body))
            }
            Body::SubmitMulti(m) => {
                let r = match self.may_submit() {
                    Ok(()) => self.submit_multi(&m).await,
                    Err(status) => Err(status),
                };
                match r {
                    Ok(resp) => (CommandStatus::ESME_ROK, Body::SubmitMultiResp(resp)),
                    Err(status) => (status, Body::SubmitMultiResp(Default::default())),
                }
            }
            Body::QuerySm(q) => match self.query(q.message_id.as_bytes()).await {
                Ok(r) => (CommandStatus::ESME_ROK, Body::QuerySmResp(r)),
                Err(status) => (status, Body::QuerySmResp(Default::default())),
            },
            Body::CancelSm(c) => (empty(self.cancel(&c).await), Body::CancelSmResp),
            Body::ReplaceSm(r) => (empty(self.replace(&r).await), Body::ReplaceSmResp),
            _ => (CommandStatus::ESME_RINVCMDID, Body::GenericNack),
        }
    }
}
