//! A standalone SMSC simulator over SMPP 3.4 (`smsgate sim`): the carrier at the other end of an SMPP connector,
//! for tests and for benchmarks that measure smsgate, Kannel or Jasmin against the same upstream.
//!
//! It takes any bind (or only those of [`SimConfig::credentials`]), acks each submit with an id of its own (hex)
//! and, when the submit asks for one (`registered_delivery`), sends a delivery receipt after
//! [`SimConfig::receipt_delay`] as a `deliver_sm` to a receiver or transceiver bound with the same `system_id`
//! (held and tried again while none is bound, for up to [`RECEIPT_PATIENCE`]). Destinations choose faults by
//! their last four digits, as on smsgate's built-in network:
//!
//! | ends in | what happens |
//! |---|---|
//! | `0001` | refused at submit: `ESME_RINVDSTADR` |
//! | `0002` | taken, then an `UNDELIV` receipt |
//! | `0003` | taken, and no receipt ever |
//! | `0004` | `ESME_RTHROTTLED` for the first two tries of the same destination and text, then taken |
//!
//! Knobs: submit latency, receipt delay, the share delivered, and a throughput per session above which submits
//! are answered `ESME_RTHROTTLED`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use smpp::pdu::{Bind, DataSm, SubmitSm, SubmitSmResp};
use smpp::receipt::{MessageState, Receipt, ReceiptDate};
use smpp::tlv::Tlv;
use smpp::{Body, CommandStatus, Pdu, ShortMessage, Tlvs};
use smpp_session::{BindKind, Binder, Handler, Session};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How long a receipt waits for a receiver to bind (and is tried again after failures) before it is dropped.
pub const RECEIPT_PATIENCE: Duration = Duration::from_secs(600);

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The `system_id` it answers binds with.
    pub system_id: String,
    /// `system_id` → password of the binds it takes; `None` takes any.
    pub credentials: Option<HashMap<String, String>>,
    pub submit_latency: Duration,
    pub receipt_delay: Duration,
    /// The share of receipts that say delivered (0.0 to 1.0); the rest say undeliverable.
    pub delivery_ratio: f64,
    /// Submits per second a session may make; more within one second are answered `ESME_RTHROTTLED`.
    pub throttle: Option<u32>,
    /// Keep what each handset received ([`SimSmsc::inbox`]): the last [`INBOX_KEPT`] messages of up to
    /// [`HANDSETS_KEPT`] handsets.
    pub keep_inboxes: bool,
    /// Drop every bound session after each this many submits taken (a carrier that loses its links now and then);
    /// the submit that reaches the count is answered, or not, as the connection goes.
    pub drop_every: Option<u64>,
    pub session: smpp_session::Config,
}

/// Messages kept per handset.
pub const INBOX_KEPT: usize = 20;
/// Handsets whose messages are kept; messages to others are not recorded.
pub const HANDSETS_KEPT: usize = 100_000;

/// A message as a simulated handset has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The id the simulator gave it.
    pub id: String,
    pub from: String,
    /// The text as the handset shows it (from `data_coding`; binary as hex).
    pub text: String,
    /// Unix milliseconds.
    pub at: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            system_id: "smsgate-sim".into(),
            credentials: None,
            submit_latency: Duration::ZERO,
            receipt_delay: Duration::from_millis(100),
            delivery_ratio: 1.0,
            throttle: None,
            keep_inboxes: false,
            drop_every: None,
            session: smpp_session::Config::default(),
        }
    }
}

/// What the simulator has done, counted since it started.
#[derive(Debug, Default)]
pub struct Counters {
    pub binds: AtomicU64,
    pub refused_binds: AtomicU64,
    pub submits: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub throttled: AtomicU64,
    pub receipts_sent: AtomicU64,
    pub receipts_retried: AtomicU64,
    pub receipts_dropped: AtomicU64,
    /// Times every session was dropped ([`SimConfig::drop_every`]).
    pub drops: AtomicU64,
}

/// The simulator. Clones share it.
#[derive(Debug, Clone)]
pub struct SimSmsc {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SimConfig,
    next_id: AtomicU64,
    counters: Counters,
    /// Bound sessions that take receipts, by `system_id`.
    receivers: Mutex<HashMap<String, Vec<Session>>>,
    /// Every bound session, for [`SimConfig::drop_every`].
    sessions: Mutex<Vec<Session>>,
    /// Receipts to send, in the order they fall due.
    receipts: mpsc::UnboundedSender<Due>,
    /// Tries so far of `0004` destinations, by destination and text.
    throttled_tries: Mutex<HashMap<Attempted, u32>>,
    /// What handsets received, when kept.
    inboxes: Mutex<HashMap<String, VecDeque<Received>>>,
}

/// A destination and a text, as submitted.
type Attempted = (Vec<u8>, Vec<u8>);

/// A receipt and when it is due.
#[derive(Debug)]
struct Due {
    at: Instant,
    first_due: Instant,
    system_id: String,
    body: SubmitSm,
}

impl SimSmsc {
    /// A simulator; its receipts go out from a task of the current runtime.
    pub fn new(config: SimConfig) -> SimSmsc {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            config,
            next_id: AtomicU64::new(0x1000_0000),
            counters: Counters::default(),
            receivers: Mutex::new(HashMap::new()),
            sessions: Mutex::new(Vec::new()),
            receipts: tx,
            throttled_tries: Mutex::new(HashMap::new()),
            inboxes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(receipts(Arc::downgrade(&inner), rx));
        SimSmsc { inner }
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// What the handset `number` received, oldest first (with [`SimConfig::keep_inboxes`]); a leading `+` is
    /// ignored.
    pub fn inbox(&self, number: &str) -> Vec<Received> {
        let inboxes = self.inner.inboxes.lock().unwrap_or_else(|e| e.into_inner());
        inboxes.get(number.trim_start_matches('+')).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    /// A message from handset `from` to `to` (a number or sender of the client's), sent as `deliver_sm` to a
    /// receiver bound as `system_id`: GSM 7-bit or UCS-2 as the text needs, in parts with a UDH when long. The parts
    /// sent, or why none was.
    pub async fn inbound(&self, system_id: &str, from: &str, to: &str, text: &str) -> Result<usize, String> {
        let reference = self.inner.next_id.fetch_add(1, Ordering::Relaxed) as u8;
        let options = sms_text::Options { reference: sms_text::Reference::Eight(reference), ..Default::default() };
        let plan = sms_text::plan(text, &options).map_err(|e| e.to_string())?;
        let receiver = {
            let mut receivers = self.inner.receivers.lock().unwrap_or_else(|e| e.into_inner());
            let list = receivers.entry(system_id.to_string()).or_default();
            list.retain(|s| !s.is_closed());
            list.first().cloned()
        };
        let Some(session) = receiver else { return Err(format!("no receiver is bound as {system_id:?}")) };
        for segment in &plan.segments {
            let body = SubmitSm {
                source_addr_ton: 1,
                source_addr_npi: 1,
                source_addr: from.trim_start_matches('+').into(),
                destination_addr: to.trim_start_matches('+').into(),
                esm_class: if segment.udh.is_empty() { 0 } else { 0x40 },
                data_coding: plan.encoding.data_coding(),
                short_message: ShortMessage::new(segment.short_message()),
                ..Default::default()
            };
            match session.request(Body::DeliverSm(body)).await {
                Ok(r) if r.command_status == CommandStatus::ESME_ROK => {}
                Ok(r) => return Err(format!("the client answered {:?}", r.command_status)),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(plan.segments.len())
    }

    /// Takes connections from `listener` until `shutdown`, then unbinds every session.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken) {
        self.serve_with(listener, None, shutdown).await;
    }

    /// [`SimSmsc::serve`], over TLS.
    pub async fn serve_tls(
        &self,
        listener: TcpListener,
        tls: smpp_session::tls::TlsAcceptor,
        shutdown: CancellationToken,
    ) {
        self.serve_with(listener, Some(tls), shutdown).await;
    }

    async fn serve_with(
        &self,
        listener: TcpListener,
        tls: Option<smpp_session::tls::TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        let binder: Arc<dyn Binder> = Arc::new(SimBinder { inner: self.inner.clone() });
        let inner = self.inner.clone();
        let bound = move |session: Session| {
            let inner = inner.clone();
            async move {
                info!(system_id = session.system_id(), bind = session.kind().as_str(), peer = ?session.peer(), "bound");
                if inner.config.drop_every.is_some() {
                    let mut sessions = inner.sessions.lock().unwrap_or_else(|e| e.into_inner());
                    sessions.retain(|s| !s.is_closed());
                    sessions.push(session.clone());
                }
                if session.kind().can_receive() {
                    let mut receivers = inner.receivers.lock().unwrap_or_else(|e| e.into_inner());
                    let list = receivers.entry(session.system_id().to_string()).or_default();
                    list.retain(|s| !s.is_closed());
                    list.push(session);
                }
            }
        };
        let config = self.inner.config.session.clone();
        let our_id = &self.inner.config.system_id;
        match tls {
            None => smpp_session::listen(listener, shutdown, our_id, config, binder, bound).await,
            Some(tls) => smpp_session::listen_tls(listener, tls, shutdown, our_id, config, binder, bound).await,
        }
        let all: Vec<Session> =
            self.inner.receivers.lock().unwrap_or_else(|e| e.into_inner()).values().flatten().cloned().collect();
        for s in all {
            s.close();
        }
    }
}

struct SimBinder {
    inner: Arc<Inner>,
}

#[async_trait]
impl Binder for SimBinder {
    async fn bind(
        &self,
        kind: BindKind,
        bind: &Bind,
        _: Option<SocketAddr>,
    ) -> Result<Arc<dyn Handler>, CommandStatus> {
        let system_id = bind.system_id.to_str_lossy().into_owned();
        if let Some(known) = &self.inner.config.credentials {
            let refused = match known.get(&system_id) {
                None => Some(CommandStatus::ESME_RINVSYSID),
                Some(p) if p.as_bytes() != bind.password.as_bytes() => Some(CommandStatus::ESME_RINVPASWD),
                Some(_) => None,
            };
            if let Some(status) = refused {
                self.inner.counters.refused_binds.fetch_add(1, Ordering::Relaxed);
                return Err(status);
            }
        }
        self.inner.counters.binds.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(SimSession { inner: self.inner.clone(), system_id, kind, second: Mutex::new((Instant::now(), 0)) }))
    }
}

/// One bound session's side of the simulator.
struct SimSession {
    inner: Arc<Inner>,
    system_id: String,
    kind: BindKind,
    /// The current second of the throttle and the submits in it.
    second: Mutex<(Instant, u32)>,
}

/// The fault a destination asks for by its last four digits.
fn fault(destination: &[u8]) -> Option<u8> {
    match destination.len().checked_sub(4).map(|i| &destination[i..]) {
        Some(b"0001") => Some(1),
        Some(b"0002") => Some(2),
        Some(b"0003") => Some(3),
        Some(b"0004") => Some(4),
        _ => None,
    }
}

impl SimSession {
    /// Whether the session went over its throughput this second.
    fn over_rate(&self) -> bool {
        let Some(limit) = self.inner.config.throttle else { return false };
        let mut s = self.second.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.elapsed() >= Duration::from_secs(1) {
            *s = (Instant::now(), 0);
        }
        s.1 += 1;
        s.1 > limit
    }

    /// Takes (or refuses) one message to `destination`; the id it gets.
    async fn take(&self, source: &SubmitSm) -> Result<String, CommandStatus> {
        let c = &self.inner.counters;
        c.submits.fetch_add(1, Ordering::Relaxed);
        if !self.kind.can_submit() {
            return Err(CommandStatus::ESME_RINVBNDSTS);
        }
        if self.over_rate() {
            c.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(CommandStatus::ESME_RTHROTTLED);
        }
        let destination = source.destination_addr.as_bytes();
        let fault = fault(destination);
        if fault == Some(1) {
            c.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(CommandStatus::ESME_RINVDSTADR);
        }
        if fault == Some(4) {
            let key = (destination.to_vec(), source.short_message.as_bytes().to_vec());
            let mut tries = self.inner.throttled_tries.lock().unwrap_or_else(|e| e.into_inner());
            let n = tries.entry(key.clone()).or_default();
            *n += 1;
            if *n <= 2 {
                c.throttled.fetch_add(1, Ordering::Relaxed);
                return Err(CommandStatus::ESME_RTHROTTLED);
            }
            tries.remove(&key);
        }
        let latency = self.inner.config.submit_latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{n:x}");
        let taken = c.accepted.fetch_add(1, Ordering::Relaxed) + 1;
        if self.inner.config.drop_every.is_some_and(|k| k > 0 && taken.is_multiple_of(k)) {
            c.drops.fetch_add(1, Ordering::Relaxed);
            let all: Vec<Session> = std::mem::take(&mut *self.inner.sessions.lock().unwrap_or_else(|e| e.into_inner()));
            for session in all {
                session.close();
            }
        }
        if self.inner.config.keep_inboxes {
            self.keep(&id, source);
        }
        if source.registered_delivery & 0x03 != 0 && fault != Some(3) {
            // Delivered or not: fault 0002, or the share not delivered (spread evenly over the ids).
            let delivered = fault != Some(2)
                && (n.wrapping_mul(2_654_435_761) % 1000)
                    < (self.inner.config.delivery_ratio.clamp(0.0, 1.0) * 1000.0) as u64;
            let at = Instant::now() + self.inner.config.receipt_delay;
            let body = receipt(&id, source, delivered);
            let _ = self.inner.receipts.send(Due { at, first_due: at, system_id: self.system_id.clone(), body });
        }
        Ok(id)
    }
}

impl SimSession {
    fn keep(&self, id: &str, source: &SubmitSm) {
        let udhi = source.esm_class & 0x40 != 0;
        let text =
            match sms_text::decode::decode_short_message(source.data_coding, udhi, source.short_message.as_bytes()) {
                Ok(d) => d.text.unwrap_or_else(|| hex(&d.body)),
                Err(_) => hex(source.short_message.as_bytes()),
            };
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let to = String::from_utf8_lossy(source.destination_addr.as_bytes()).trim_start_matches('+').to_string();
        let from = String::from_utf8_lossy(source.source_addr.as_bytes()).into_owned();
        let mut inboxes = self.inner.inboxes.lock().unwrap_or_else(|e| e.into_inner());
        if !inboxes.contains_key(&to) && inboxes.len() >= HANDSETS_KEPT {
            return;
        }
        let inbox = inboxes.entry(to).or_default();
        if inbox.len() >= INBOX_KEPT {
            inbox.pop_front();
        }
        inbox.push_back(Received { id: id.to_string(), from, text, at });
    }
}

fn hex(octets: &[u8]) -> String {
    octets.iter().map(|b| format!("{b:02x}")).collect()
}

/// The deliver_sm that reports on message `id` (submitted as `source`).
fn receipt(id: &str, source: &SubmitSm, delivered: bool) -> SubmitSm {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let date = ReceiptDate::from_unix(now);
    let stat = if delivered { MessageState::Delivered } else { MessageState::Undeliverable };
    let text = Receipt {
        id: id.to_string(),
        sub: 1,
        dlvrd: u32::from(delivered),
        submit_date: date,
        done_date: date,
        err: if delivered { "000".into() } else { "001".into() },
        text: String::from_utf8_lossy(source.short_message.as_bytes()).chars().take(20).collect(),
        stat: stat.clone(),
    }
    .format();
    let mut tlvs = vec![Tlv::ReceiptedMessageId(id.into())];
    if let Some(v) = stat.to_tlv() {
        tlvs.push(Tlv::MessageState(v));
    }
    SubmitSm {
        source_addr_ton: source.dest_addr_ton,
        source_addr_npi: source.dest_addr_npi,
        source_addr: source.destination_addr.clone(),
        dest_addr_ton: source.source_addr_ton,
        dest_addr_npi: source.source_addr_npi,
        destination_addr: source.source_addr.clone(),
        esm_class: 0x04,
        short_message: ShortMessage::new(text.into_bytes()),
        tlvs: Tlvs(tlvs),
        ..Default::default()
    }
}

#[async_trait]
impl Handler for SimSession {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        let resp = |id: Result<String, CommandStatus>| match id {
            Ok(id) => (CommandStatus::ESME_ROK, SubmitSmResp { message_id: id.as_str().into(), ..Default::default() }),
            Err(status) => (status, SubmitSmResp::default()),
        };
        match request.body {
            Body::SubmitSm(s) => {
                let (status, r) = resp(self.take(&s).await);
                (status, Body::SubmitSmResp(r))
            }
            Body::DataSm(d) => {
                let (status, r) = resp(self.take(&data_as_submit(&d)).await);
                (status, Body::DataSmResp(r))
            }
            Body::SubmitMulti(m) => {
                let mut first = None;
                let mut failed = Vec::new();
                for d in &m.dest_address.0 {
                    let smpp::pdu::DestAddress::SmeAddress { dest_addr_ton, dest_addr_npi, destination_addr } = d
                    else {
                        continue;
                    };
                    let one = SubmitSm {
                        source_addr: m.source_addr.clone(),
                        destination_addr: destination_addr.clone(),
                        registered_delivery: m.registered_delivery,
                        short_message: m.short_message.clone(),
                        ..Default::default()
                    };
                    match self.take(&one).await {
                        Ok(id) => {
                            first.get_or_insert(id);
                        }
                        Err(status) => failed.push(smpp::pdu::UnsuccessSme {
                            dest_addr_ton: *dest_addr_ton,
                            dest_addr_npi: *dest_addr_npi,
                            destination_addr: destination_addr.clone(),
                            error_status_code: status,
                        }),
                    }
                }
                let r = smpp::pdu::SubmitMultiResp {
                    message_id: first.unwrap_or_default().as_str().into(),
                    unsuccess_sme: smpp::pdu::UnsuccessSmes(failed),
                    ..Default::default()
                };
                (CommandStatus::ESME_ROK, Body::SubmitMultiResp(r))
            }
            // It keeps nothing to query, cancel or replace.
            Body::QuerySm(_) => (CommandStatus::ESME_RQUERYFAIL, Body::QuerySmResp(Default::default())),
            Body::CancelSm(_) => (CommandStatus::ESME_RCANCELFAIL, Body::CancelSmResp),
            Body::ReplaceSm(_) => (CommandStatus::ESME_RREPLACEFAIL, Body::ReplaceSmResp),
            // A client's deliver_sm is not for an SMSC.
            Body::DeliverSm(_) => (CommandStatus::ESME_RINVCMDID, Body::DeliverSmResp(Default::default())),
            _ => (CommandStatus::ESME_RINVCMDID, Body::GenericNack),
        }
    }
}

/// A data_sm's fields that matter here, as a submit_sm.
fn data_as_submit(d: &DataSm) -> SubmitSm {
    let payload: &[u8] = d.tlvs.message_payload().unwrap_or_default();
    // data_sm addresses may be longer (65); a receipt's fields take 21.
    let short = |a: &[u8]| smpp::COctetString::<21>::from_unchecked(a.iter().copied().take(20).collect::<Vec<u8>>());
    SubmitSm {
        source_addr: short(d.source_addr.as_bytes()),
        destination_addr: short(d.destination_addr.as_bytes()),
        registered_delivery: d.registered_delivery,
        short_message: ShortMessage::new(payload.iter().copied().take(160).collect::<Vec<u8>>()),
        ..Default::default()
    }
}

/// Sends receipts as they fall due, to a receiver of their `system_id`; one that finds none bound, or is not
/// acknowledged, is tried again a second later until [`RECEIPT_PATIENCE`] has passed.
async fn receipts(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Due>) {
    let mut queue: VecDeque<Due> = VecDeque::new();
    // Retries fall due later than fresh receipts; they wait in a queue of their own (also in order).
    let mut again: VecDeque<Due> = VecDeque::new();
    let mut turn = 0usize;
    loop {
        let next_at = [queue.front(), again.front()].into_iter().flatten().map(|d| d.at).min();
        let due = tokio::select! {
            got = rx.recv() => match got {
                // A retry (due later than first) keeps to its own queue, so both stay in order.
                Some(d) if d.at > d.first_due => { again.push_back(d); continue; }
                Some(d) => { queue.push_back(d); continue; }
                None => return,
            },
            _ = async {
                match next_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                let from_again = again.front().is_some_and(|a| queue.front().is_none_or(|q| a.at <= q.at));
                let d = if from_again { again.pop_front() } else { queue.pop_front() };
                let Some(d) = d else { continue };
                d
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let receiver = {
            let mut receivers = inner.receivers.lock().unwrap_or_else(|e| e.into_inner());
            let list = receivers.entry(due.system_id.clone()).or_default();
            list.retain(|s| !s.is_closed());
            turn = turn.wrapping_add(1);
            (!list.is_empty()).then(|| list[turn % list.len()].clone())
        };
        let retry = |mut d: Due, inner: &Inner| {
            if d.first_due.elapsed() >= RECEIPT_PATIENCE {
                inner.counters.receipts_dropped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            inner.counters.receipts_retried.fetch_add(1, Ordering::Relaxed);
            d.at = Instant::now() + Duration::from_secs(1);
            Some(d)
        };
        let Some(session) = receiver else {
            if let Some(d) = retry(due, &inner) {
                again.push_back(d);
            }
            continue;
        };
        let sender = inner.receipts.clone();
        tokio::spawn(async move {
            let answer = session.request(Body::DeliverSm(due.body.clone())).await;
            match answer {
                Ok(r) if r.command_status == CommandStatus::ESME_ROK => {
                    inner.counters.receipts_sent.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    if let Some(d) = retry(due, &inner) {
                        let _ = sender.send(d);
                    }
                }
            }
        });
    }
}
