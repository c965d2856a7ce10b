//! The built-in simulated carrier network (connector kind `sim`). One [`SimNetwork`] holds the virtual handsets
//! (every number has an inbox) and what was taken; carriers submit into it. The network itself is the connector
//! named `sim`, whose virtual carriers are chosen by number prefix (the zero-config default); every connector of
//! kind `sim` made over the API is a [`SimConnector`]: one virtual carrier of its own, with a submit latency, a
//! receipt delay, a delivery ratio and a [`SimMode`] to play a carrier's bad days.
//!
//! Magic destinations — the last four digits choose a fault:
//!
//! | ends in | what happens |
//! |---|---|
//! | `0001` | refused at submit: invalid destination (the message `failed`) |
//! | `0002` | taken, then an undelivered receipt (`undelivered`) |
//! | `0003` | taken, and no receipt ever (`sent` until its validity ends, then `expired`) |
//! | `0004` | the carrier throttles the first two attempts (a temporary error), then takes it (`delivered`) |
//!
//! A message is taken at most once per id: a second submission of the same message (after a crash between the
//! submit and our record of it) returns the first carrier id, delivers nothing again, and sends the receipt again
//! (as a real SMSC repeats a receipt nobody acknowledged). With [`SimNetwork::with_log`] the network keeps what it
//! took in an append-only file of JSON lines, so this holds across restarts and a crash test can count
//! deliveries. Lines are written before `submit` returns (no fsync: the network survives a process crash, which
//! is what it is for, not a power cut).
//!
//! The network forgets: it keeps the last [`KEPT`] messages (in the handsets' inboxes, and as taken), the log is
//! rewritten with those alone whenever it has grown by as many again, and a start reads only the log's last
//! [`KEPT`] lines into memory. A message forgotten and submitted again is taken as new.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use smsgate_core::{Message, MessageId, Timestamp};
use tokio::sync::mpsc;

use crate::{Connector, ConnectorEvent, Inbound, Receipt, ReceiptState, SettingsError, SubmitError};

/// One virtual carrier.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualCarrier {
    pub name: String,
    /// Numbers starting with this (E.164, with the `+`) belong to it; the longest matching prefix wins, and `"+"`
    /// catches everything.
    pub prefix: String,
    pub submit_latency: Duration,
    pub receipt_delay: Duration,
    /// The share of messages delivered, 0.0 to 1.0; the rest get an undelivered receipt.
    pub delivery_ratio: f64,
}

impl Default for VirtualCarrier {
    fn default() -> Self {
        VirtualCarrier {
            name: "sim-carrier".into(),
            prefix: "+".into(),
            submit_latency: Duration::from_millis(2),
            receipt_delay: Duration::from_millis(100),
            delivery_ratio: 1.0,
        }
    }
}

/// A message as a virtual handset has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandsetMessage {
    /// The connector whose carrier took it.
    pub connector: String,
    pub from: String,
    pub body: String,
    pub carrier_id: String,
    pub at: Timestamp,
}

/// The simulated network; also the [`Connector`] named `"sim"`.
#[derive(Debug)]
pub struct SimNetwork {
    carriers: Vec<VirtualCarrier>,
    events: mpsc::Sender<ConnectorEvent>,
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Where taken messages are logged, when the network is persistent; and how many lines it has.
    log: Option<(std::path::PathBuf, std::fs::File, usize)>,
    /// The messages kept, oldest first; `first_seq` is the sequence number of the first.
    kept: VecDeque<Kept>,
    first_seq: u64,
    /// Each handset's messages, by sequence number, oldest first.
    inboxes: HashMap<String, VecDeque<u64>>,
    /// Carrier ids of messages taken (one per part), by our id.
    taken: HashMap<MessageId, Vec<String>>,
    /// Submissions refused as throttled, by our id (for the `0004` fault).
    throttled: HashMap<MessageId, u32>,
    next_id: u64,
    /// How many messages are kept.
    capacity: usize,
}

/// A message the network took and still remembers.
#[derive(Debug, Clone)]
struct Kept {
    id: MessageId,
    to: String,
    parts: Vec<String>,
    message: HandsetMessage,
}

impl Kept {
    fn line(&self) -> LogLine {
        LogLine {
            id: self.id.to_string(),
            connector: self.message.connector.clone(),
            parts: if self.parts.len() > 1 { self.parts.clone() } else { Vec::new() },
            carrier_id: self.message.carrier_id.clone(),
            to: self.to.clone(),
            from: self.message.from.clone(),
            body: self.message.body.clone(),
            at: self.message.at.0,
        }
    }
}

impl SimState {
    /// Remembers a message taken, forgetting the oldest past the capacity.
    fn keep(&mut self, kept: Kept) {
        let seq = self.first_seq + self.kept.len() as u64;
        self.taken.insert(kept.id, kept.parts.clone());
        self.inboxes.entry(kept.to.clone()).or_default().push_back(seq);
        self.kept.push_back(kept);
        while self.kept.len() > self.capacity.max(1) {
            let Some(old) = self.kept.pop_front() else { break };
            self.first_seq += 1;
            self.taken.remove(&old.id);
            if let Some(inbox) = self.inboxes.get_mut(&old.to) {
                inbox.pop_front();
                if inbox.is_empty() {
                    self.inboxes.remove(&old.to);
                }
            }
        }
        if self.throttled.len() > self.capacity.max(1) {
            self.throttled.clear();
        }
    }

    /// Rewrites the log with the messages kept, once it has grown by the capacity again.
    fn compact_log(&mut self) -> std::io::Result<()> {
        let Some((path, _, lines)) = self.log.as_ref() else { return Ok(()) };
        if *lines <= 2 * self.capacity.max(1) {
            return Ok(());
        }
        let path = path.clone();
        let tmp = path.with_extension("log.tmp");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for k in &self.kept {
                let mut text = serde_json::to_string(&k.line()).unwrap_or_default();
                text.push('\n');
                out.write_all(text.as_bytes())?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        self.log = Some((path, file, self.kept.len()));
        Ok(())
    }
}

/// How many messages the network remembers.
pub const KEPT: usize = 100_000;

/// One line of the log: a message the network took.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub id: String,
    /// The connector that submitted it (lines written before connectors had names: the network's own).
    #[serde(default = "default_connector")]
    pub connector: String,
    /// The carrier ids of all its parts when it had more than one (the first is `carrier_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    pub carrier_id: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub at: i64,
}

fn default_connector() -> String {
    NAME.to_string()
}

/// Reads a log the network wrote: one [`LogLine`] a line.
pub fn read_log(path: &Path) -> std::io::Result<Vec<LogLine>> {
    read_log_tail(path, usize::MAX).map(|(lines, _)| lines.into())
}

/// The last `keep` lines of a log, and how many it has in all; only those are held in memory.
fn read_log_tail(path: &Path, keep: usize) -> std::io::Result<(VecDeque<LogLine>, usize)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((VecDeque::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut out = VecDeque::new();
    let mut count = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // A line cut short by a crash is the end of the log.
        match serde_json::from_str::<LogLine>(&line) {
            Ok(l) => {
                count += 1;
                out.push_back(l);
                if out.len() > keep {
                    out.pop_front();
                }
            }
            Err(_) => break,
        }
    }
    Ok((out, count))
}

/// How far back a restarted network sends receipts again.
pub const RECEIPT_REPLAY: Duration = Duration::from_secs(3600);

/// Carrier ids are hex numbers from here.
const CARRIER_ID_BASE: u64 = 0x5100_0000;

/// The connector name of the simulated network.
pub const NAME: &str = "sim";

impl SimNetwork {
    /// A network of `carriers` (at least the default catch-all one) that reports receipts and inbound messages
    /// on `events`.
    pub fn new(mut carriers: Vec<VirtualCarrier>, events: mpsc::Sender<ConnectorEvent>) -> SimNetwork {
        if !carriers.iter().any(|c| c.prefix == "+") {
            carriers.push(VirtualCarrier::default());
        }
        // Longest prefix first, so the first match is the best.
        carriers.sort_by_key(|c| std::cmp::Reverse(c.prefix.len()));
        let state = SimState { capacity: KEPT, ..SimState::default() };
        SimNetwork { carriers, events, state: Mutex::new(state) }
    }

    /// The network, remembering `capacity` messages instead of [`KEPT`].
    pub fn keeping(self, capacity: usize) -> SimNetwork {
        self.lock().capacity = capacity.max(1);
        self
    }

    /// Where it reports receipts and inbound messages.
    pub fn events(&self) -> mpsc::Sender<ConnectorEvent> {
        self.events.clone()
    }

    /// A network that keeps what it took in the log at `path` (created if missing) and starts from what the log
    /// holds. Like an SMSC whose client reconnects, it sends again the receipts of the messages it took in the last
    /// [`RECEIPT_REPLAY`]: receipts in flight when the server stopped would otherwise be lost (receipts the server
    /// already applied change nothing). Must be called within a tokio runtime.
    pub fn with_log(
        carriers: Vec<VirtualCarrier>,
        events: mpsc::Sender<ConnectorEvent>,
        path: &Path,
    ) -> std::io::Result<SimNetwork> {
        SimNetwork::with_log_keeping(carriers, events, path, KEPT)
    }

    /// [`SimNetwork::with_log`], remembering `capacity` messages.
    pub fn with_log_keeping(
        carriers: Vec<VirtualCarrier>,
        events: mpsc::Sender<ConnectorEvent>,
        path: &Path,
        capacity: usize,
    ) -> std::io::Result<SimNetwork> {
        let sim = SimNetwork::new(carriers, events).keeping(capacity);
        let replay_from = Timestamp::now().plus_millis(-(RECEIPT_REPLAY.as_millis() as i64));
        let mut replay = Vec::new();
        {
            let mut state = sim.lock();
            let (lines, count) = read_log_tail(path, state.capacity)?;
            for line in lines {
                let Some(id) = MessageId::parse(&line.id) else { continue };
                let parts = if line.parts.is_empty() { vec![line.carrier_id.clone()] } else { line.parts.clone() };
                if line.at >= replay_from.0 {
                    replay.push((id, line.connector.clone(), line.to.clone(), parts.clone()));
                }
                // Carrier ids go on from the highest given, so none is given twice though old lines are gone.
                let highest = parts.iter().filter_map(|p| u64::from_str_radix(p, 16).ok()).max().unwrap_or(0);
                state.next_id = state.next_id.max(highest.saturating_sub(CARRIER_ID_BASE));
                let message = HandsetMessage {
                    connector: line.connector,
                    from: line.from,
                    body: line.body,
                    carrier_id: line.carrier_id,
                    at: Timestamp(line.at),
                };
                state.keep(Kept { id, to: line.to, parts, message });
            }
            let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            state.log = Some((path.to_path_buf(), file, count));
            state.compact_log()?;
        }
        // Receipts go out with the prefix carriers' settings: a connector made over the API may be gone by now.
        for (id, connector, to, parts) in replay {
            let carrier = sim.carrier_for(&to).clone();
            sim.schedule_receipts(&connector, id, &carrier, fault(&to), parts);
        }
        Ok(sim)
    }

    fn carrier_for(&self, number: &str) -> &VirtualCarrier {
        let catch_all = self.carriers.last().expect("a catch-all carrier is always added");
        self.carriers.iter().find(|c| number.starts_with(&c.prefix)).unwrap_or(catch_all)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // The state is only ever changed in whole steps, so a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a handset has received, oldest first.
    pub fn inbox(&self, number: &str) -> Vec<HandsetMessage> {
        let state = self.lock();
        let Some(seqs) = state.inboxes.get(number) else { return Vec::new() };
        seqs.iter()
            .filter_map(|seq| state.kept.get(usize::try_from(seq - state.first_seq).ok()?))
            .map(|k| k.message.clone())
            .collect()
    }

    /// A handset sends a text to `to` (one of our senders or numbers); it arrives as an inbound message.
    pub async fn reply(&self, handset: &str, to: &str, body: &str) -> Result<(), SimError> {
        let inbound = Inbound {
            connector: NAME.into(),
            from: handset.into(),
            to: to.into(),
            body: body.into(),
            at: Timestamp::now(),
        };
        self.events.send(ConnectorEvent::Inbound(inbound)).await.map_err(|_| SimError::Stopped)
    }
}

/// Why the simulated network could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The server is shutting down and takes no more events.
    #[error("the server is stopping")]
    Stopped,
}

/// The fault a destination number asks for.
fn fault(to: &str) -> Option<&'static str> {
    let last4 = to.get(to.len().saturating_sub(4)..)?;
    match last4 {
        "0001" => Some("reject"),
        "0002" => Some("undelivered"),
        "0003" => Some("no_receipt"),
        "0004" => Some("throttle"),
        _ => None,
    }
}

/// A stable number in 0..1 for a message, so the delivery ratio is deterministic per message.
fn unit_interval(id: MessageId) -> f64 {
    let bits = id.0.as_u128();
    let mixed = (bits ^ (bits >> 64)).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    (mixed >> 75) as f64 / (1u64 << 53) as f64
}

#[async_trait]
impl Connector for SimNetwork {
    fn name(&self) -> &str {
        NAME
    }

    async fn submit(&self, m: &Message) -> Result<Vec<String>, SubmitError> {
        let carrier = self.carrier_for(&m.to).clone();
        self.take(NAME, &carrier, m).await
    }
}

impl SimNetwork {
    /// A carrier of the network takes a message for `connector`: after the carrier's latency, the destination's
    /// fault if it asks for one, else the message goes to the handset's inbox and a receipt is scheduled for each
    /// of its parts, each part with a carrier id of its own (returned in order). The message's `at` in the
    /// handset's inbox is when the carrier received the submission.
    pub async fn take(
        &self,
        connector: &str,
        carrier: &VirtualCarrier,
        m: &Message,
    ) -> Result<Vec<String>, SubmitError> {
        let at = Timestamp::now();
        tokio::time::sleep(carrier.submit_latency).await;
        let fault = fault(&m.to);
        let parts = {
            let mut state = self.lock();
            if let Some(ids) = state.taken.get(&m.id).cloned() {
                drop(state);
                // Taken before: the same ids, and the receipts again.
                self.schedule_receipts(connector, m.id, carrier, fault, ids.clone());
                return Ok(ids);
            }
            match fault {
                Some("reject") => {
                    return Err(SubmitError::Permanent {
                        code: "invalid_destination".into(),
                        detail: format!("{} refused {}: unknown subscriber", carrier.name, m.to),
                    });
                }
                Some("throttle") => {
                    let n = state.throttled.entry(m.id).or_insert(0);
                    if *n < 2 {
                        *n += 1;
                        return Err(SubmitError::Throttled {
                            code: "throttled".into(),
                            detail: format!("{} throttled the submission", carrier.name),
                        });
                    }
                }
                _ => {}
            }
            let parts: Vec<String> = (0..m.segments.max(1))
                .map(|_| {
                    state.next_id += 1;
                    format!("{:X}", CARRIER_ID_BASE + state.next_id)
                })
                .collect();
            let carrier_id = parts[0].clone();
            let message = HandsetMessage {
                connector: connector.to_string(),
                from: m.from.clone(),
                body: m.body.clone(),
                carrier_id,
                at,
            };
            let kept = Kept { id: m.id, to: m.to.clone(), parts: parts.clone(), message };
            if let Some((_, log, lines)) = state.log.as_mut() {
                let mut text = serde_json::to_string(&kept.line()).unwrap_or_default();
                text.push('\n');
                log.write_all(text.as_bytes()).map_err(|e| SubmitError::Temporary {
                    code: "sim_log".into(),
                    detail: format!("the simulated network could not write its log: {e}"),
                })?;
                *lines += 1;
            }
            state.keep(kept);
            if let Err(e) = state.compact_log() {
                tracing::warn!(error = %e, "the simulated network could not rewrite its log; it goes on growing");
            }
            parts
        };
        self.schedule_receipts(connector, m.id, carrier, fault, parts.clone());
        Ok(parts)
    }
}

impl SimNetwork {
    /// Sends the receipts of a taken message's parts. The `0002` fault makes the last part undelivered (a
    /// single part: the message); the delivery ratio decides for all parts of a message alike.
    fn schedule_receipts(
        &self,
        connector: &str,
        id: MessageId,
        carrier: &VirtualCarrier,
        fault: Option<&str>,
        parts: Vec<String>,
    ) {
        let last = parts.len().saturating_sub(1);
        for (i, carrier_id) in parts.into_iter().enumerate() {
            let fault = match fault {
                Some("undelivered") if i != last => None,
                other => other,
            };
            self.schedule_receipt(connector, id, carrier, fault, carrier_id);
        }
    }

    /// Sends the receipt of one part, after the carrier's delay.
    fn schedule_receipt(
        &self,
        connector: &str,
        id: MessageId,
        carrier: &VirtualCarrier,
        fault: Option<&str>,
        carrier_id: String,
    ) {
        let state = match fault {
            Some("no_receipt") => None,
            Some("undelivered") => Some(ReceiptState::Undelivered),
            _ if unit_interval(id) >= carrier.delivery_ratio => Some(ReceiptState::Undelivered),
            _ => Some(ReceiptState::Delivered),
        };
        if let Some(state) = state {
            let events = self.events.clone();
            let cid = carrier_id;
            let carrier = carrier.clone();
            let connector = connector.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(carrier.receipt_delay).await;
                let (stat, err) = match state {
                    ReceiptState::Delivered => ("DELIVRD", "000"),
                    _ => ("UNDELIV", "001"),
                };
                let receipt = Receipt {
                    connector,
                    carrier_id: cid.clone(),
                    alternatives: Vec::new(),
                    state,
                    error_code: (err != "000").then(|| format!("sim:{err}")),
                    at: Timestamp::now(),
                    detail: format!("{}: id:{cid} stat:{stat} err:{err}", carrier.name),
                };
                // A receipt for a server that is stopping is lost, as a real carrier's would be until it retries.
                let _ = events.send(ConnectorEvent::Receipt(receipt)).await;
            });
        }
    }
}

/// How a `sim` connector's carrier behaves, settable while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimMode {
    /// As its settings say.
    #[default]
    Healthy,
    /// The carrier answers every submission with a system error (temporary: the message is tried again, on
    /// another connector if its route has one that is up).
    RejectAll,
    /// The connection is down: every submission fails at once (temporary).
    Disconnected,
    /// Every submission takes a second more.
    Slow,
}

impl SimMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SimMode::Healthy => "healthy",
            SimMode::RejectAll => "reject_all",
            SimMode::Disconnected => "disconnected",
            SimMode::Slow => "slow",
        }
    }
}

/// The settings of a connector of kind `sim`, as its JSON has them. A connector that gives none of the carrier
/// settings (latency, receipt delay, delivery ratio) uses the network's own carriers, chosen by number prefix
/// (`[[sim.carriers]]` in the config file); one that gives any is a carrier of its own, with the defaults of
/// [`VirtualCarrier`] for the rest.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submit_latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_delay_ms: Option<u64>,
    /// The share of messages delivered, 0 to 1; the rest get an undelivered receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_ratio: Option<f64>,
    pub mode: SimMode,
}

/// The longest latency or receipt delay a `sim` connector may be given.
const MAX_DELAY_MS: u64 = 600_000;

impl SimSettings {
    /// Settings from a connector's JSON, checked.
    pub fn from_json(value: serde_json::Value) -> Result<SimSettings, SettingsError> {
        let s: SimSettings = serde_json::from_value(value).map_err(|e| SettingsError(e.to_string()))?;
        if let Some(r) = s.delivery_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(SettingsError(format!("delivery_ratio must be from 0 to 1, not {r}")));
        }
        if s.submit_latency_ms.unwrap_or(0) > MAX_DELAY_MS || s.receipt_delay_ms.unwrap_or(0) > MAX_DELAY_MS {
            return Err(SettingsError(format!(
                "submit_latency_ms and receipt_delay_ms must be at most {MAX_DELAY_MS}"
            )));
        }
        Ok(s)
    }

    /// The carrier of its own these settings describe, if they describe one.
    fn carrier(&self, name: &str) -> Option<VirtualCarrier> {
        if self.submit_latency_ms.is_none() && self.receipt_delay_ms.is_none() && self.delivery_ratio.is_none() {
            return None;
        }
        let d = VirtualCarrier::default();
        Some(VirtualCarrier {
            name: name.to_string(),
            prefix: "+".into(),
            submit_latency: self.submit_latency_ms.map_or(d.submit_latency, Duration::from_millis),
            receipt_delay: self.receipt_delay_ms.map_or(d.receipt_delay, Duration::from_millis),
            delivery_ratio: self.delivery_ratio.unwrap_or(d.delivery_ratio),
        })
    }
}

/// A connector of kind `sim`: a carrier of the network (its own, or the network's by prefix) in a mode.
#[derive(Debug)]
pub struct SimConnector {
    name: String,
    network: std::sync::Arc<SimNetwork>,
    carrier: Option<VirtualCarrier>,
    mode: SimMode,
}

impl SimConnector {
    pub fn new(name: &str, network: std::sync::Arc<SimNetwork>, settings: &SimSettings) -> SimConnector {
        SimConnector { name: name.to_string(), network, carrier: settings.carrier(name), mode: settings.mode }
    }

    fn carrier_for(&self, to: &str) -> VirtualCarrier {
        self.carrier.clone().unwrap_or_else(|| self.network.carrier_for(to).clone())
    }
}

#[async_trait]
impl Connector for SimConnector {
    fn name(&self) -> &str {
        &self.name
    }

    async fn submit(&self, m: &Message) -> Result<Vec<String>, SubmitError> {
        let carrier = self.carrier_for(&m.to);
        match self.mode {
            SimMode::Healthy => self.network.take(&self.name, &carrier, m).await,
            SimMode::Slow => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                self.network.take(&self.name, &carrier, m).await
            }
            SimMode::RejectAll => {
                tokio::time::sleep(carrier.submit_latency).await;
                Err(SubmitError::Temporary {
                    code: "carrier_error".into(),
                    detail: format!("{} answered with a system error (mode reject_all)", self.name),
                })
            }
            // Nothing goes out: as an SMPP connector with no session bound.
            SimMode::Disconnected => {
                Err(SubmitError::NotBound { detail: format!("{} is not connected (mode disconnected)", self.name) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(to: &str) -> Message {
        crate::testing::message(to, "Hi")
    }

    fn fast() -> VirtualCarrier {
        VirtualCarrier { submit_latency: Duration::ZERO, receipt_delay: Duration::from_millis(1), ..Default::default() }
    }

    #[tokio::test]
    async fn delivers_with_a_receipt_and_fills_the_inbox() {
        let (tx, mut rx) = mpsc::channel(16);
        let sim = SimNetwork::new(vec![fast()], tx);
        let m = message("+447700900123");
        let cid = sim.submit(&m).await.unwrap();
        // The same message again is not taken twice.
        assert_eq!(sim.submit(&m).await.unwrap(), cid);
        assert_eq!(sim.inbox("+447700900123").len(), 1);
        let Some(ConnectorEvent::Receipt(r)) = rx.recv().await else { panic!("a receipt") };
        assert_eq!((r.carrier_id, r.state), (cid[0].clone(), ReceiptState::Delivered));
    }

    #[tokio::test]
    async fn magic_numbers() {
        let (tx, mut rx) = mpsc::channel(16);
        let sim = SimNetwork::new(vec![fast()], tx);
        assert!(matches!(sim.submit(&message("+447700900001")).await, Err(SubmitError::Permanent { .. })));
        sim.submit(&message("+447700900002")).await.unwrap();
        let Some(ConnectorEvent::Receipt(r)) = rx.recv().await else { panic!("a receipt") };
        assert_eq!(r.state, ReceiptState::Undelivered);
        sim.submit(&message("+447700900003")).await.unwrap();
        let throttled = message("+447700900004");
        assert!(matches!(sim.submit(&throttled).await, Err(SubmitError::Throttled { .. })));
        assert!(matches!(sim.submit(&throttled).await, Err(SubmitError::Throttled { .. })));
        sim.submit(&throttled).await.unwrap();
        let Some(ConnectorEvent::Receipt(r)) = rx.recv().await else { panic!("a receipt") };
        assert_eq!(r.state, ReceiptState::Delivered);
        // 0003 never sent one: nothing else is waiting.
        assert!(tokio::time::timeout(Duration::from_millis(50), rx.recv()).await.is_err());
    }

    #[tokio::test]
    async fn carriers_by_prefix_and_delivery_ratio() {
        let (tx, mut rx) = mpsc::channel(256);
        let lossy = VirtualCarrier { name: "lossy".into(), prefix: "+1".into(), delivery_ratio: 0.5, ..fast() };
        let sim = SimNetwork::new(vec![fast(), lossy], tx);
        assert_eq!(sim.carrier_for("+14155550123").name, "lossy");
        assert_eq!(sim.carrier_for("+447700900123").name, "sim-carrier");
        for _ in 0..100 {
            sim.submit(&message("+14155550123")).await.unwrap();
        }
        let mut delivered = 0;
        for _ in 0..100 {
            if let Some(ConnectorEvent::Receipt(r)) = rx.recv().await
                && r.state == ReceiptState::Delivered
            {
                delivered += 1;
            }
        }
        assert!((25..=75).contains(&delivered), "{delivered} of 100 delivered at ratio 0.5");
    }

    #[tokio::test]
    async fn the_log_survives_a_restart() {
        let path = std::env::temp_dir().join(format!("smsgate-sim-{}.log", MessageId::generate()));
        let m = message("+447700900123");
        let first = {
            let (tx, _rx) = mpsc::channel(16);
            let sim = SimNetwork::with_log(vec![fast()], tx, &path).unwrap();
            sim.submit(&m).await.unwrap()
        };
        let (tx, mut rx) = mpsc::channel(16);
        let sim = SimNetwork::with_log(vec![fast()], tx, &path).unwrap();
        assert_eq!(sim.inbox("+447700900123").len(), 1);
        // Submitted again after the "crash": the same carrier id, no second delivery, and the receipt again.
        assert_eq!(sim.submit(&m).await.unwrap(), first);
        assert_eq!(sim.inbox("+447700900123").len(), 1);
        assert!(matches!(rx.recv().await, Some(ConnectorEvent::Receipt(_))));
        assert_eq!(read_log(&path).unwrap().len(), 1);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn the_network_forgets_and_its_log_stays_bounded() {
        let path = std::env::temp_dir().join(format!("smsgate-sim-{}.log", MessageId::generate()));
        let (tx, _rx) = mpsc::channel(1024);
        let sim = SimNetwork::with_log_keeping(vec![fast()], tx, &path, 3).unwrap();
        let mut ids = std::collections::HashSet::new();
        let first = message("+447700900111");
        ids.extend(sim.submit(&first).await.unwrap());
        for i in 0..9 {
            ids.extend(sim.submit(&message(&format!("+44770090020{i}"))).await.unwrap());
        }
        assert!(sim.inbox("+447700900111").is_empty(), "the oldest is forgotten");
        assert_eq!(sim.inbox("+447700900208").len(), 1);
        assert!(read_log(&path).unwrap().len() <= 2 * 3 + 1, "the log is rewritten with what is kept");
        drop(sim);
        // A restart reads the kept lines only; carrier ids go on from the highest, never given twice.
        let (tx, _rx) = mpsc::channel(1024);
        let sim = SimNetwork::with_log_keeping(vec![fast()], tx, &path, 3).unwrap();
        assert_eq!(sim.inbox("+447700900208").len(), 1);
        assert!(sim.inbox("+447700900203").is_empty());
        for i in 0..5 {
            for id in sim.submit(&message(&format!("+44770090030{i}"))).await.unwrap() {
                assert!(ids.insert(id.clone()), "carrier id {id} given twice");
            }
        }
        // Forgotten, a message submitted again is taken as new.
        assert_ne!(sim.submit(&first).await.unwrap().len(), 0);
        assert_eq!(sim.inbox("+447700900111").len(), 1);
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn connectors_of_their_own_and_their_modes() {
        let (tx, mut rx) = mpsc::channel(16);
        let network = std::sync::Arc::new(SimNetwork::new(vec![fast()], tx));
        let kit = crate::Kit::new(network.clone());
        let own = kit.build("alpha", "sim", serde_json::json!({"receipt_delay_ms": 1})).unwrap();
        let id = own.submit(&message("+447700900123")).await.unwrap();
        let Some(ConnectorEvent::Receipt(r)) = rx.recv().await else { panic!("a receipt") };
        assert_eq!((r.connector.as_str(), r.carrier_id.as_str()), ("alpha", id[0].as_str()));
        assert!(r.detail.starts_with("alpha: "), "its own carrier: {}", r.detail);
        // No carrier settings: the network's carriers by prefix.
        let plain = kit.build("beta", "sim", serde_json::json!({})).unwrap();
        plain.submit(&message("+447700900124")).await.unwrap();
        let Some(ConnectorEvent::Receipt(r)) = rx.recv().await else { panic!("a receipt") };
        assert!(r.detail.starts_with("sim-carrier: "), "{}", r.detail);
        assert_eq!(r.connector, "beta");
        for (mode, code) in [("reject_all", "carrier_error"), ("disconnected", "not_bound")] {
            let down = kit.build("gamma", "sim", serde_json::json!({"mode": mode, "submit_latency_ms": 0})).unwrap();
            match down.submit(&message("+447700900125")).await {
                Err(e) => assert_eq!(e.code(), code),
                other => panic!("{mode}: {other:?}"),
            }
        }
        assert_eq!(network.inbox("+447700900125").len(), 0, "nothing reached the handset");
        for (settings, error) in [
            (serde_json::json!({"delivery_ratio": 1.5}), "delivery_ratio"),
            (serde_json::json!({"mode": "sleepy"}), "unknown variant"),
            (serde_json::json!({"latency": 3}), "unknown field"),
            (serde_json::json!({"receipt_delay_ms": 700_000}), "at most"),
        ] {
            let e = kit.build("bad", "sim", settings).unwrap_err();
            assert!(e.0.contains(error), "{e}");
        }
        assert!(kit.build("x", "smtp", serde_json::json!({})).unwrap_err().0.contains("unknown connector kind"));
    }

    /// Each part gets a carrier id and a receipt of its own; `0002` makes only the last part undelivered.
    #[tokio::test]
    async fn parts_each_get_an_id_and_a_receipt() {
        let (tx, mut rx) = mpsc::channel(16);
        let sim = SimNetwork::new(vec![fast()], tx);
        let three = Message { segments: 3, ..message("+447700900123") };
        let ids = sim.submit(&three).await.unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(sim.submit(&three).await.unwrap(), ids, "taken once");
        let bad = Message { segments: 2, ..message("+447700900002") };
        let bad_ids = sim.submit(&bad).await.unwrap();
        let mut states = std::collections::HashMap::new();
        while states.len() < 5 {
            let Some(ConnectorEvent::Receipt(r)) = rx.recv().await else { panic!("a receipt") };
            states.insert(r.carrier_id, r.state);
        }
        assert!(ids.iter().all(|id| states[id] == ReceiptState::Delivered), "{states:?}");
        assert_eq!((states[&bad_ids[0]], states[&bad_ids[1]]), (ReceiptState::Delivered, ReceiptState::Undelivered));
        assert_eq!(sim.inbox("+447700900123").len(), 1, "the handset gets the whole message once");
    }

    #[tokio::test]
    async fn replies_arrive_as_inbound() {
        let (tx, mut rx) = mpsc::channel(4);
        let sim = SimNetwork::new(vec![], tx);
        sim.reply("+447700900123", "Acme", "STOP").await.unwrap();
        let Some(ConnectorEvent::Inbound(i)) = rx.recv().await else { panic!("inbound") };
        assert_eq!((i.from.as_str(), i.to.as_str(), i.body.as_str()), ("+447700900123", "Acme", "STOP"));
    }
}
