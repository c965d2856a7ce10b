//! Connector kind `smpp`: binds to a carrier's SMSC as an ESME and submits through it.
//!
//! [`SmppConnector`] keeps [`SmppSettings::sessions`] binds up (a transceiver each, or a transmitter and a receiver),
//! rebinding with a doubling backoff when one drops. A message is submitted part by part through one session:
//! parts carry a UDH (`esm_class` 0x40), SAR TLVs, or the whole text goes as one `message_payload`, as the
//! carrier wants. The SMSC's answers map to [`SubmitError`]: throttling, a full queue, a system error, a timeout or
//! a lost session are temporary (the dispatcher retries, possibly elsewhere); anything else refuses the message.
//!
//! Receipts (`deliver_sm` with a receipt `esm_class`) become [`ConnectorEvent::Receipt`] under the carrier's id,
//! taken from `receipted_message_id` or else the receipt text, in the form the submit's response gave (carriers
//! mix hex and decimal, cases and leading zeros: [`smpp::receipt::id_variants`]). Other `deliver_sm` are inbound
//! messages. Both go to the engine as [`ConnectorEvent::Durable`] and are acknowledged once it says they are kept.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use smpp::pdu::{Bind, SubmitSm, SubmitSmResp};
use smpp::receipt::{MessageState, Receipt as ReceiptText, id_variants, normalize_id};
use smpp::tlv::Tlv;
use smpp::{Body, CommandStatus, Pdu, ShortMessage, Tlvs};
use smpp_session::{BindKind, Handler, RequestError, Session};
use sms_text::reassembly::{Pushed, Reassembler};
use sms_text::udh::Concat;
use smsgate_core::{Message, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Connector, ConnectorEvent, Inbound, Receipt, ReceiptState, SettingsError, SubmitError};

/// How parts of a long message are marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Concatenation {
    /// A user data header in each part (`esm_class` 0x40): what most SMSCs expect.
    #[default]
    Udh,
    /// The `sar_msg_ref_num`, `sar_total_segments` and `sar_segment_seqnum` TLVs.
    Sar,
    /// The whole text in one submit's `message_payload` TLV; the SMSC splits it.
    Payload,
}

/// How the connector binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BindMode {
    /// One transceiver bind a session.
    #[default]
    Transceiver,
    /// A transmitter and a receiver bind a session.
    TransmitterReceiver,
}

/// What `data_coding` 0 means to the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAlphabet {
    /// The GSM 7-bit default alphabet, one septet an octet.
    #[default]
    Gsm,
    /// ISO 8859-1: GSM texts go as Latin-1 octets (when every character is one; otherwise as UCS-2).
    Latin1,
}

/// The settings of an `smpp` connector, as its JSON gives them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmppSettings {
    pub host: String,
    pub port: u16,
    /// SMPP over TLS to the SMSC.
    #[serde(default)]
    pub tls: bool,
    /// The CA certificates (PEM) the SMSC's certificate must chain to; without it, the system's roots.
    pub tls_ca_file: Option<String>,
    /// The name the SMSC's certificate must carry; without it, `host`.
    pub tls_server_name: Option<String>,
    pub system_id: String,
    pub password: String,
    #[serde(default)]
    pub system_type: String,
    #[serde(default)]
    pub bind: BindMode,
    /// `interface_version` of the binds: 0x34 (SMPP 3.4) unless the carrier asks for another.
    #[serde(default = "v34")]
    pub interface_version: u8,
    /// TON and NPI of sources and destinations (defaults: alphanumeric senders get TON 5, numbers TON 1 NPI 1).
    pub source_ton: Option<u8>,
    pub source_npi: Option<u8>,
    #[serde(default = "one")]
    pub dest_ton: u8,
    #[serde(default = "one")]
    pub dest_npi: u8,
    /// A sender that replaces every message's own.
    pub source_addr: Option<String>,
    #[serde(default)]
    pub default_alphabet: DefaultAlphabet,
    #[serde(default)]
    pub concatenation: Concatenation,
    /// Binds kept up at once.
    #[serde(default = "one_usize")]
    pub sessions: usize,
    /// Submits waiting for their response at once, per session.
    #[serde(default = "session_window")]
    pub session_window: usize,
    #[serde(default = "thirty")]
    pub enquire_link_secs: u64,
    #[serde(default = "ten_thousand")]
    pub response_timeout_ms: u64,
    #[serde(default = "five_hundred")]
    pub reconnect_min_ms: u64,
    #[serde(default = "sixty_thousand")]
    pub reconnect_max_ms: u64,
}

fn v34() -> u8 {
    0x34
}
fn one() -> u8 {
    1
}
fn one_usize() -> usize {
    1
}
fn session_window() -> usize {
    64
}
fn thirty() -> u64 {
    30
}
fn ten_thousand() -> u64 {
    10_000
}
fn five_hundred() -> u64 {
    500
}
fn sixty_thousand() -> u64 {
    60_000
}

impl SmppSettings {
    /// The settings from a connector's JSON; errors say what is wrong, for people.
    pub fn from_json(settings: serde_json::Value) -> Result<SmppSettings, SettingsError> {
        let s: SmppSettings =
            serde_json::from_value(settings).map_err(|e| SettingsError(format!("smpp settings: {e}")))?;
        if s.host.is_empty() || s.port == 0 {
            return Err(SettingsError("smpp settings: host and port are needed".into()));
        }
        if s.tls {
            s.tls_connector().map_err(|e| SettingsError(format!("smpp settings: tls: {e}")))?;
        } else if s.tls_ca_file.is_some() || s.tls_server_name.is_some() {
            return Err(SettingsError("smpp settings: tls_ca_file and tls_server_name need tls: true".into()));
        }
        if s.system_id.is_empty() || s.system_id.len() > 15 || s.password.len() > 8 || s.system_type.len() > 12 {
            return Err(SettingsError(
                "smpp settings: system_id is 1 to 15 characters, password at most 8, system_type at most 12".into(),
            ));
        }
        if !(1..=64).contains(&s.sessions) || !(1..=10_000).contains(&s.session_window) {
            return Err(SettingsError("smpp settings: sessions must be 1 to 64 and session_window 1 to 10,000".into()));
        }
        if s.response_timeout_ms == 0 || s.enquire_link_secs == 0 || s.reconnect_min_ms == 0 {
            return Err(SettingsError("smpp settings: timeouts and intervals must be above zero".into()));
        }
        if s.reconnect_max_ms < s.reconnect_min_ms {
            return Err(SettingsError("smpp settings: reconnect_max_ms must be at least reconnect_min_ms".into()));
        }
        if s.source_addr.as_ref().is_some_and(|a| a.is_empty() || a.len() > 20) {
            return Err(SettingsError("smpp settings: source_addr is 1 to 20 characters".into()));
        }
        Ok(s)
    }

    /// The TLS client and the name the SMSC's certificate must carry.
    fn tls_connector(
        &self,
    ) -> Result<(smpp_session::tls::TlsConnector, rustls::pki_types::ServerName<'static>), SettingsError> {
        let connector = smpp_session::tls::connector(self.tls_ca_file.as_deref().map(std::path::Path::new))
            .map_err(SettingsError)?;
        let name = smpp_session::tls::server_name(self.tls_server_name.as_deref().unwrap_or(&self.host))
            .map_err(SettingsError)?;
        Ok((connector, name))
    }

    fn session_config(&self) -> smpp_session::Config {
        let enquire = Duration::from_secs(self.enquire_link_secs);
        smpp_session::Config {
            window: self.session_window,
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            enquire_link: enquire,
            dead_after: enquire * 3,
            ..Default::default()
        }
    }
}

/// A connector that submits over SMPP binds to a carrier.
#[derive(Debug)]
pub struct SmppConnector {
    name: String,
    settings: SmppSettings,
    shared: Arc<Shared>,
    /// Stops the binds when the connector goes.
    _stop: tokio_util::sync::DropGuard,
}

#[derive(Debug)]
struct Shared {
    name: String,
    /// Bound sessions that submit.
    transmitters: Mutex<Vec<Session>>,
    next: AtomicUsize,
    reference: AtomicU16,
    events: mpsc::Sender<ConnectorEvent>,
    started: std::sync::Once,
    stop: CancellationToken,
    /// Parts of inbound concatenated messages until their sets are whole, by source and destination.
    parts: Mutex<Reassembler<(String, String), String>>,
}

/// How long a carrier's receipt or message waits for the engine to keep it before the carrier is told to send it
/// again (`ESME_RX_T_APPN`): longer than a receipt that overtook its `sent` waits for it.
const KEEP_WAIT: Duration = Duration::from_secs(8);

impl SmppConnector {
    /// A connector; it binds when started ([`Connector::start`]), not before, so that building one to check its
    /// settings connects nowhere.
    pub fn new(name: &str, settings: SmppSettings, events: mpsc::Sender<ConnectorEvent>) -> SmppConnector {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            transmitters: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            reference: AtomicU16::new(0),
            events,
            started: std::sync::Once::new(),
            stop: stop.clone(),
            parts: Mutex::new(Reassembler::new(sms_text::reassembly::Config::default())),
        });
        SmppConnector { name: name.to_string(), settings, shared, _stop: stop.drop_guard() }
    }

    /// Sessions bound for submitting now.
    pub fn bound(&self) -> usize {
        let mut t = self.shared.transmitters.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|s| !s.is_closed());
        t.len()
    }

    fn session(&self) -> Option<Session> {
        let mut t = self.shared.transmitters.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|s| !s.is_closed());
        if t.is_empty() {
            return None;
        }
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % t.len();
        Some(t[i].clone())
    }

    /// The submit_sm bodies of `m`, one a part.
    fn bodies(&self, m: &Message) -> Result<Vec<SubmitSm>, SubmitError> {
        let s = &self.settings;
        let reference = self.shared.reference.fetch_add(1, Ordering::Relaxed);
        let options =
            sms_text::Options { reference: sms_text::Reference::Eight(reference as u8), ..Default::default() };
        let plan = sms_text::plan(&m.body, &options)
            .map_err(|e| SubmitError::Permanent { code: "body_not_encodable".into(), detail: e.to_string() })?;
        let source = s.source_addr.clone().unwrap_or_else(|| m.from.clone());
        let numeric = source.trim_start_matches('+').bytes().all(|b| b.is_ascii_digit());
        let base = SubmitSm {
            source_addr_ton: s.source_ton.unwrap_or(if numeric { 1 } else { 5 }),
            source_addr_npi: s.source_npi.unwrap_or(if numeric { 1 } else { 0 }),
            source_addr: source.trim_start_matches('+').into(),
            dest_addr_ton: s.dest_ton,
            dest_addr_npi: s.dest_npi,
            destination_addr: m.to.trim_start_matches('+').into(),
            registered_delivery: 1,
            ..Default::default()
        };
        // A carrier that reads data_coding 0 as Latin-1 gets GSM texts as Latin-1 octets, and as UCS-2 those with
        // characters Latin-1 lacks (Greek capitals, the euro sign).
        let latin1_default = s.default_alphabet == DefaultAlphabet::Latin1;
        let plan = if latin1_default
            && plan.encoding != sms_text::Encoding::Ucs2
            && !plan.text.chars().all(|c| u32::from(c) < 0x100)
        {
            sms_text::plan::plan_ucs2(&plan.text, &options)
                .map_err(|e| SubmitError::Permanent { code: "body_not_encodable".into(), detail: e.to_string() })?
        } else {
            plan
        };
        let (data_coding, latin1) = match plan.encoding {
            sms_text::Encoding::Ucs2 => (0x08, false),
            _ => (0x00, latin1_default),
        };
        // Latin-1 octets for what the plan has as septets: the same characters, one an octet.
        let text_of = |seg: &sms_text::Segment| -> Vec<u8> {
            if latin1 {
                sms_text::gsm7::Charset::DEFAULT.decode(&seg.payload).chars().map(|c| u32::from(c) as u8).collect()
            } else {
                seg.payload.clone()
            }
        };
        if s.concatenation == Concatenation::Payload && plan.segments.len() > 1 {
            let text: Vec<u8> = plan.segments.iter().flat_map(text_of).collect();
            let mut one = SubmitSm { data_coding, ..base };
            one.tlvs = Tlvs(vec![Tlv::MessagePayload(smpp::tlv::Bounded(smpp::Octets(text)))]);
            return Ok(vec![one]);
        }
        let total = plan.segments.len();
        Ok(plan
            .segments
            .iter()
            .enumerate()
            .map(|(i, seg)| {
                let mut part = SubmitSm { data_coding, ..base.clone() };
                if total > 1 && s.concatenation == Concatenation::Sar {
                    part.short_message = ShortMessage::new(text_of(seg));
                    part.tlvs = Tlvs(vec![
                        Tlv::SarMsgRefNum(reference),
                        Tlv::SarTotalSegments(total as u8),
                        Tlv::SarSegmentSeqnum(i as u8 + 1),
                    ]);
                } else {
                    let mut sm = seg.udh.clone();
                    sm.extend(text_of(seg));
                    part.short_message = ShortMessage::new(sm);
                    if !seg.udh.is_empty() {
                        part.esm_class |= 0x40;
                    }
                }
                part
            })
            .collect())
    }
}

/// What an SMSC's refusal means for the message.
fn refusal(status: CommandStatus) -> SubmitError {
    let code = status.name().map_or_else(|| format!("smpp_{:#010x}", status.as_u32()), |n| n.to_ascii_lowercase());
    let detail = format!("the SMSC answered {}", status.name().unwrap_or("an unnamed status"));
    match status {
        CommandStatus::ESME_RTHROTTLED | CommandStatus::ESME_RMSGQFUL => SubmitError::Throttled { code, detail },
        CommandStatus::ESME_RSYSERR
        | CommandStatus::ESME_RSUBMITFAIL
        | CommandStatus::ESME_RX_T_APPN
        | CommandStatus::ESME_RINVBNDSTS => SubmitError::Temporary { code, detail },
        _ => SubmitError::Permanent { code, detail },
    }
}

#[async_trait]
impl Connector for SmppConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self) {
        let shared = self.shared.clone();
        let settings = self.settings.clone();
        self.shared.started.call_once(|| {
            for n in 0..settings.sessions {
                tokio::spawn(keep_bound(shared.clone(), settings.clone(), n));
            }
        });
    }

    fn link(&self) -> serde_json::Value {
        serde_json::json!({"sessions": self.settings.sessions, "bound": self.bound()})
    }

    async fn submit(&self, m: &Message) -> Result<Vec<String>, SubmitError> {
        let bodies = self.bodies(m)?;
        let Some(session) = self.session() else {
            return Err(SubmitError::NotBound { detail: "no session is bound".into() });
        };
        let mut ids = Vec::with_capacity(bodies.len());
        for body in bodies {
            let answer = session.request(Body::SubmitSm(body)).await.map_err(|e| match e {
                RequestError::Closed => SubmitError::ConnectionLost { detail: "the session closed".into() },
                RequestError::Timeout(t) => {
                    SubmitError::Temporary { code: "timeout".into(), detail: format!("no response within {t:?}") }
                }
            })?;
            if answer.command_status != CommandStatus::ESME_ROK {
                return Err(refusal(answer.command_status));
            }
            let Body::SubmitSmResp(SubmitSmResp { message_id, .. }) = answer.body else {
                return Err(SubmitError::Temporary {
                    code: "protocol_error".into(),
                    detail: format!("{} in answer to submit_sm", answer.body.name()),
                });
            };
            // Kept in one form (lower case, no leading zeros), which receipts are matched in.
            ids.push(normalize_id(&message_id.to_str_lossy()));
        }
        Ok(ids)
    }
}

/// Keeps session `n` bound until the connector stops: connects, binds, waits for the session to end, and tries
/// again after a pause that doubles from `reconnect_min_ms` to `reconnect_max_ms` (back to the start after a bind
/// that lasted).
async fn keep_bound(shared: Arc<Shared>, settings: SmppSettings, n: usize) {
    let min = Duration::from_millis(settings.reconnect_min_ms);
    let max = Duration::from_millis(settings.reconnect_max_ms);
    let mut pause = min;
    loop {
        let kinds: &[BindKind] = match settings.bind {
            BindMode::Transceiver => &[BindKind::Transceiver],
            BindMode::TransmitterReceiver => &[BindKind::Transmitter, BindKind::Receiver],
        };
        let mut bound = Vec::new();
        for kind in kinds {
            match bind_one(&shared, &settings, *kind).await {
                Ok(s) => bound.push(s),
                Err(e) => {
                    warn!(connector = %shared.name, session = n, bind = kind.as_str(), error = %e, "bind failed; trying again in {pause:?}");
                    break;
                }
            }
        }
        let started = std::time::Instant::now();
        if bound.len() == kinds.len() {
            info!(connector = %shared.name, session = n, "bound");
            for s in &bound {
                if s.kind().can_submit() {
                    shared.transmitters.lock().unwrap_or_else(|e| e.into_inner()).push(s.clone());
                }
            }
            // Until one of them ends (or the connector stops), then the other goes too.
            let ends = futures_util::future::select_all(bound.iter().map(|s| Box::pin(s.closed())));
            tokio::select! {
                _ = ends => {}
                _ = shared.stop.cancelled() => {
                    for s in &bound {
                        s.unbind().await;
                    }
                    return;
                }
            }
            warn!(connector = %shared.name, session = n, "session ended; binding again");
        }
        for s in &bound {
            s.close();
        }
        if started.elapsed() > max {
            pause = min;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shared.stop.cancelled() => return,
        }
        pause = (pause * 2).min(max);
    }
}

/// Why a bind to the carrier's SMSC did not come up.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, #[source] std::io::Error),
    #[error("the TLS handshake with {0} timed out")]
    TlsTimeout(String),
    #[error("the TLS handshake with {0}: {1}")]
    Tls(String, #[source] std::io::Error),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Bind(#[from] smpp_session::BindError),
}

async fn bind_one(shared: &Arc<Shared>, settings: &SmppSettings, kind: BindKind) -> Result<Session, LinkError> {
    let config = settings.session_config();
    let address = format!("{}:{}", settings.host, settings.port);
    let stream = tokio::time::timeout(config.response_timeout, tokio::net::TcpStream::connect(&address))
        .await
        .map_err(|_| LinkError::ConnectTimeout(address.clone()))?
        .map_err(|e| LinkError::Connect(address.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let bind = Bind {
        system_id: settings.system_id.as_str().into(),
        password: settings.password.as_str().into(),
        system_type: settings.system_type.as_str().into(),
        interface_version: settings.interface_version,
        ..Default::default()
    };
    let handler = Arc::new(Receiver { shared: shared.clone() });
    let (session, _) = if settings.tls {
        let (tls, name) = settings.tls_connector()?;
        let stream = tokio::time::timeout(config.response_timeout, tls.connect(name, stream))
            .await
            .map_err(|_| LinkError::TlsTimeout(address.clone()))?
            .map_err(|e| LinkError::Tls(address.clone(), e))?;
        smpp_session::bind(stream, kind, bind, config, handler).await
    } else {
        smpp_session::bind(stream, kind, bind, config, handler).await
    }?;
    Ok(session)
}

/// Takes what the SMSC delivers: receipts and inbound messages.
struct Receiver {
    shared: Arc<Shared>,
}

#[async_trait]
impl Handler for Receiver {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        let (deliver, data) = match request.body {
            Body::DeliverSm(d) => (d, false),
            Body::DataSm(d) => (
                SubmitSm {
                    source_addr: short(d.source_addr.as_bytes()),
                    destination_addr: short(d.destination_addr.as_bytes()),
                    esm_class: d.esm_class,
                    data_coding: d.data_coding,
                    tlvs: d.tlvs,
                    ..Default::default()
                },
                true,
            ),
            other => {
                return (CommandStatus::ESME_RINVCMDID, Pdu::refusal(&other, 0, CommandStatus::ESME_RINVCMDID).body);
            }
        };
        let answer = |status| {
            if data {
                (status, Body::DataSmResp(SubmitSmResp::default()))
            } else {
                (status, Body::DeliverSmResp(SubmitSmResp::default()))
            }
        };
        let event = if deliver.esm_class & 0x3C == 0x04 || deliver.esm_class & 0x3C == 0x08 {
            match self.receipt(&deliver) {
                Some(r) => ConnectorEvent::Receipt(r),
                None => {
                    warn!(connector = %self.shared.name, "a receipt without an id; acknowledged and dropped");
                    return answer(CommandStatus::ESME_ROK);
                }
            }
        } else {
            let Some((part, concat)) = inbound(&self.shared.name, &deliver) else {
                return answer(CommandStatus::ESME_ROK);
            };
            // A part of a longer message is held until its set is whole (or, incomplete, its time is up).
            let (whole, expired) = match concat {
                None => (Some(part), Vec::new()),
                Some(c) => self.shared.reassemble(part, c),
            };
            for e in expired {
                if self.shared.events.send(ConnectorEvent::Inbound(e)).await.is_err() {
                    return answer(CommandStatus::ESME_RX_T_APPN);
                }
            }
            match whole {
                Some(i) => ConnectorEvent::Inbound(i),
                None => return answer(CommandStatus::ESME_ROK),
            }
        };
        // Acknowledged only once the engine has kept it (written, or settled for good): a crash before that leaves
        // the SMSC without our answer, and it sends the receipt or message again. A full channel makes it wait.
        let (kept, answered) = tokio::sync::oneshot::channel();
        if self.shared.events.send(ConnectorEvent::Durable(Box::new(event), kept)).await.is_err() {
            return answer(CommandStatus::ESME_RX_T_APPN);
        }
        match tokio::time::timeout(KEEP_WAIT, answered).await {
            Ok(Ok(true)) => answer(CommandStatus::ESME_ROK),
            _ => answer(CommandStatus::ESME_RX_T_APPN),
        }
    }
}

impl Receiver {
    fn receipt(&self, d: &SubmitSm) -> Option<Receipt> {
        let text = String::from_utf8_lossy(d.short_message.as_bytes()).into_owned();
        let parsed = ReceiptText::parse(&text).ok();
        let tlv_id = d.tlvs.receipted_message_id().map(|s| String::from_utf8_lossy(s).into_owned());
        let tlv_state = d.tlvs.message_state().map(MessageState::from_tlv);
        let id = tlv_id.filter(|i| !i.trim().is_empty()).or_else(|| parsed.as_ref().map(|p| p.id.clone()))?;
        let state = tlv_state.or_else(|| parsed.as_ref().map(|p| p.stat.clone())).unwrap_or(MessageState::Unknown);
        let state = match state {
            MessageState::Delivered => ReceiptState::Delivered,
            MessageState::Expired => ReceiptState::Expired,
            MessageState::Rejected => ReceiptState::Rejected,
            MessageState::Undeliverable | MessageState::Deleted | MessageState::Unknown => ReceiptState::Undelivered,
            // Intermediate states say nothing final.
            MessageState::Enroute | MessageState::Accepted | MessageState::Other(_) => {
                debug!(connector = %self.shared.name, %id, "an intermediate receipt; nothing to record");
                return None;
            }
        };
        // The receipt's `err`, kept as the carrier wrote it and named by the connector (as `sim:` codes are).
        let error_code = parsed
            .as_ref()
            .map(|p| p.err.trim().to_string())
            .filter(|e| !e.trim_start_matches('0').is_empty())
            .map(|e| format!("{}:{e}", self.shared.name));
        // The journey's detail: what the receipt says that the journey does not hold already (its dates are the
        // event's time, its text the message's own start); one in a form of the carrier's own, as it came.
        let detail = match &parsed {
            Some(p) => format!(
                "{}: id:{} sub:{:03} dlvrd:{:03} stat:{} err:{}",
                self.shared.name,
                p.id,
                p.sub.min(999),
                p.dlvrd.min(999),
                p.stat.stat(),
                p.err.trim()
            ),
            None => format!("{}: id:{id} {}", self.shared.name, text.trim()).trim_end().to_string(),
        };
        // As written first (most carriers write receipts as they answered submits), then the other bases.
        let mut ids = id_variants(&id);
        Some(Receipt {
            connector: self.shared.name.clone(),
            carrier_id: ids.remove(0),
            alternatives: ids,
            state,
            error_code,
            at: Timestamp::now(),
            detail,
        })
    }
}

impl Shared {
    /// Holds `part` of a concatenated inbound message; the whole message when this part completes it, and any sets
    /// that expired incomplete (released with what came, their gaps marked).
    fn reassemble(&self, part: Inbound, concat: Concat) -> (Option<Inbound>, Vec<Inbound>) {
        let clock = std::time::Instant::now();
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let key = (part.from.clone(), part.to.clone());
        let (pushed, evicted) = parts.push(key, concat, part.body.clone(), clock);
        let mut expired: Vec<_> = parts.expire(clock);
        expired.extend(evicted);
        let released = expired
            .into_iter()
            .filter(|e| !e.parts.is_empty())
            .map(|e| {
                warn!(connector = %self.name, missing = ?e.missing, "an inbound message expired incomplete");
                let body = e.parts.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(" [...] ");
                Inbound { connector: self.name.clone(), from: e.key.0, to: e.key.1, body, at: Timestamp::now() }
            })
            .collect();
        let whole = match pushed {
            Pushed::Complete(texts) => Some(Inbound { body: texts.concat(), ..part }),
            // Held, or a part seen before: nothing to hand on yet.
            Pushed::Pending | Pushed::Duplicate => None,
            // Numbers that make no sense: the part on its own.
            Pushed::Invalid => Some(part),
        };
        (whole, released)
    }
}

/// A `deliver_sm` that is not a receipt, as an inbound message, and where it stands among the parts of a longer
/// one (from its UDH or SAR TLVs).
fn inbound(connector: &str, d: &SubmitSm) -> Option<(Inbound, Option<Concat>)> {
    let octets = d.tlvs.message_payload().unwrap_or(d.short_message.as_bytes());
    let decoded = sms_text::decode::decode_short_message(d.data_coding, d.esm_class & 0x40 != 0, octets).ok()?;
    let number = |a: &[u8]| {
        let s = String::from_utf8_lossy(a).into_owned();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { format!("+{s}") } else { s }
    };
    let concat = decoded
        .udh
        .as_ref()
        .and_then(|u| u.concat())
        .or_else(|| d.tlvs.sar().map(|(reference, total, seq)| Concat { reference, wide: true, total, seq }));
    let message = Inbound {
        connector: connector.to_string(),
        from: number(d.source_addr.as_bytes()),
        to: number(d.destination_addr.as_bytes()),
        body: decoded.text.unwrap_or_default(),
        at: Timestamp::now(),
    };
    Some((message, concat.filter(|c| c.total > 1)))
}

/// An address of a data_sm (up to 64 characters) where a deliver_sm's (up to 20) goes.
fn short(address: &[u8]) -> smpp::COctetString<21> {
    smpp::COctetString::from_unchecked(address.iter().copied().take(20).collect::<Vec<u8>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> Message {
        crate::testing::message("+447700900125", body)
    }

    fn connector(extra: serde_json::Value) -> SmppConnector {
        let mut s = serde_json::json!({"host": "127.0.0.1", "port": 2775, "system_id": "a", "password": "p"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            s[k] = v.clone();
        }
        SmppConnector::new("c", SmppSettings::from_json(s).unwrap(), mpsc::channel(1).0)
    }

    #[tokio::test]
    async fn what_goes_on_the_wire() {
        let gsm = connector(serde_json::json!({}));
        let one = gsm.bodies(&message("Café {x}")).unwrap();
        assert_eq!(one.len(), 1);
        // GSM 7-bit unpacked, one septet an octet, escapes included; an alphanumeric sender is TON 5.
        assert_eq!((one[0].data_coding, one[0].source_addr_ton, one[0].dest_addr_ton), (0, 5, 1));
        assert_eq!(one[0].short_message.as_bytes(), &[0x43, 0x61, 0x66, 0x05, 0x20, 0x1B, 0x28, 0x78, 0x1B, 0x29]);
        assert_eq!(one[0].destination_addr.as_bytes(), b"447700900125");
        // Latin-1 where the carrier reads 0 as Latin-1; UCS-2 when a character is not Latin-1.
        let latin = connector(serde_json::json!({"default_alphabet": "latin1"}));
        let one = latin.bodies(&message("Café {x}")).unwrap();
        assert_eq!(one[0].data_coding, 0);
        assert_eq!(one[0].short_message.as_bytes(), &[0x43, 0x61, 0x66, 0xE9, 0x20, 0x7B, 0x78, 0x7D]);
        let greek = latin.bodies(&message("Ωmega")).unwrap();
        assert_eq!(
            (greek[0].data_coding, greek[0].short_message.as_bytes()),
            (8, &[0x03, 0xA9, 0, 0x6D, 0, 0x65, 0, 0x67, 0, 0x61][..])
        );
        // Long: UDH parts by default, SAR TLVs, or one message_payload.
        let long = "x".repeat(200);
        let udh = gsm.bodies(&message(&long)).unwrap();
        assert_eq!(udh.len(), 2);
        assert!(udh.iter().all(|p| p.esm_class & 0x40 != 0 && p.short_message.as_bytes()[..3] == [5, 0, 3]));
        let sar = connector(serde_json::json!({"concatenation": "sar"})).bodies(&message(&long)).unwrap();
        assert_eq!(sar.len(), 2);
        assert_eq!(sar[1].tlvs.sar().map(|(_, total, seq)| (total, seq)), Some((2, 2)));
        assert!(sar.iter().all(|p| p.esm_class & 0x40 == 0));
        let payload = connector(serde_json::json!({"concatenation": "payload"})).bodies(&message(&long)).unwrap();
        assert_eq!(payload.len(), 1);
        assert!(payload[0].short_message.as_bytes().is_empty());
        assert!(matches!(&payload[0].tlvs.0[..], [Tlv::MessagePayload(p)] if p.0.0.len() == 200));
        // A numeric sender is TON 1 NPI 1 without its +; a source_addr setting replaces every sender.
        let numbered = gsm.bodies(&Message { from: "+447700900999".into(), ..message("hi") }).unwrap();
        assert_eq!((numbered[0].source_addr_ton, numbered[0].source_addr.as_bytes()), (1, &b"447700900999"[..]));
        let fixed = connector(serde_json::json!({"source_addr": "Brand"})).bodies(&message("hi")).unwrap();
        assert_eq!(fixed[0].source_addr.as_bytes(), b"Brand");
    }
}
