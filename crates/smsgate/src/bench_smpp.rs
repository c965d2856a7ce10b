//! `smsgate bench smpp`: load an SMPP server (smsgate's, `smsgate sim`, Kannel's or Jasmin's) as client
//! applications do: transceiver binds submitting with a window each, optionally waiting for every receipt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use serde_json::{Value, json};
use smpp::pdu::{Bind, SubmitSm, SubmitSmResp};
use smpp::{Body, CommandStatus, Pdu};
use smpp_session::{BindKind, Config, Handler, Session};

use crate::bench::{quantile_ms, round};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The SMPP server's address, e.g. 127.0.0.1:2775.
    #[arg(long)]
    target: String,
    #[arg(long, default_value = "bench")]
    system_id: String,
    #[arg(long, default_value = "bench")]
    password: String,
    /// How many messages to submit (1 to 100,000,000).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Transceiver binds, each submitting its share.
    #[arg(long, default_value_t = 4)]
    sessions: usize,
    /// Submits waiting for their response at once, per session.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Messages per second over all sessions, each submitted at its scheduled time (its latency counted from
    /// then); without it, as fast as the windows allow.
    #[arg(long)]
    rate: Option<f64>,
    /// Ask for a receipt with every submit and wait until all have come back; report the end-to-end rate.
    #[arg(long)]
    receipts: bool,
    /// The text of every message (default: "benchmark message", or with --concat a text of two parts).
    #[arg(long)]
    text: Option<String>,
    /// Send each message as a concatenated SMS: its parts as submit_sm with a UDH (16-bit reference), each asking
    /// for its own receipt with --receipts. The text must be longer than one SMS.
    #[arg(long)]
    concat: bool,
    #[arg(long, default_value = "Bench")]
    from: String,
    /// Destinations are this prefix followed by four digits and a 5, clear of the simulators' fault endings.
    #[arg(long, default_value = "4477009")]
    to_prefix: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Every this many seconds, a JSON line of that span: submits answered and refused, their latency, receipts.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    interval: Option<u64>,
    /// Where the --interval lines are appended (standard error without it).
    #[arg(long, requires = "interval")]
    interval_log: Option<std::path::PathBuf>,
}

/// Counts the receipts that arrive, and how long after its submit each came. A message counts its first receipt
/// only: a gateway that sends one twice (Jasmin does, now and then) must not make up for one that never came.
#[derive(Debug, Default)]
struct Receipts {
    /// Receipts for ids not seen before, and receipts that carry no id at all (which can't be told apart).
    got: AtomicU64,
    /// Receipts for an id that already had one.
    duplicates: AtomicU64,
    other: AtomicU64,
    times: Mutex<Times>,
}

/// What is known of each message id: when its submit went and when its first receipt came.
#[derive(Debug, Default)]
struct Times {
    /// Ids whose submit's answer or receipt is still awaited.
    ids: HashMap<String, Journey>,
    /// Ids with both, as a 64-bit hash: enough to know a second receipt for one, and small enough for a long run's
    /// millions.
    done: HashSet<u64>,
    /// Ids the server answered a submit with (parts that share an id count once).
    answered: u64,
    latencies: Vec<Duration>,
}

#[derive(Debug, Default)]
struct Journey {
    sent: Option<Instant>,
    came: Option<Instant>,
}

impl Receipts {
    /// The server answered a submit, sent at `at`, with `id`.
    fn submitted(&self, id: String, at: Instant) {
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        if id.is_empty() {
            // No id to match its receipt by: owed one all the same.
            t.answered += 1;
            return;
        }
        let hash = hash_of(&id);
        if t.done.contains(&hash) {
            return;
        }
        let journey = t.ids.entry(id.clone()).or_default();
        if journey.sent.is_some() {
            return;
        }
        journey.sent = Some(at);
        let came = journey.came;
        t.answered += 1;
        if let Some(came) = came {
            t.latencies.push(came.saturating_duration_since(at));
            t.ids.remove(&id);
            t.done.insert(hash);
        }
    }

    /// A receipt for `id` came; false when that id already had one.
    fn receipt(&self, id: String) -> bool {
        let now = Instant::now();
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        let hash = hash_of(&id);
        if t.done.contains(&hash) {
            return false;
        }
        let journey = t.ids.entry(id.clone()).or_default();
        if journey.came.is_some() {
            return false;
        }
        journey.came = Some(now);
        if let Some(sent) = journey.sent {
            t.latencies.push(now.saturating_duration_since(sent));
            t.ids.remove(&id);
            t.done.insert(hash);
        }
        true
    }

    /// How many distinct ids the server answered with: one receipt is owed for each.
    fn answered(&self) -> u64 {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).answered
    }
}

fn hash_of(id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(id)
}

#[async_trait]
impl Handler for Receipts {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        match request.body {
            Body::DeliverSm(d) if d.esm_class & 0x3C == 0x04 => {
                let id =
                    d.tlvs.receipted_message_id().map(|id| String::from_utf8_lossy(id).into_owned()).or_else(|| {
                        smpp::receipt::Receipt::parse(&String::from_utf8_lossy(d.short_message.as_bytes()))
                            .ok()
                            .map(|r| r.id)
                    });
                if id.is_none_or(|id| self.receipt(id)) {
                    self.got.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                self.other.fetch_add(1, Ordering::Relaxed);
            }
        };
        (CommandStatus::ESME_ROK, Body::DeliverSmResp(SubmitSmResp::default()))
    }
}

/// The text --concat sends unless told otherwise: 200 GSM characters, two parts.
const LONG_TEXT: &str = "benchmark message in two parts: the first part carries 153 characters of text after its \
    six-octet header and the second part carries the rest, so the gateway reassembles or forwards both of them.";

/// The submit_sm of one message (its parts with --concat; the destination and reference are filled in per message).
fn pdus(args: &Args, text: &str) -> anyhow::Result<Vec<SubmitSm>> {
    let one = |data_coding: u8, esm_class: u8, octets: Vec<u8>| SubmitSm {
        source_addr: args.from.as_str().into(),
        dest_addr_ton: 1,
        dest_addr_npi: 1,
        esm_class,
        data_coding,
        registered_delivery: u8::from(args.receipts),
        short_message: smpp::ShortMessage::new(octets),
        ..Default::default()
    };
    if !args.concat {
        return Ok(vec![one(0, 0, text.as_bytes().to_vec())]);
    }
    let options = sms_text::Options { reference: sms_text::Reference::Sixteen(0), ..Default::default() };
    let plan = sms_text::plan(text, &options).map_err(|e| anyhow::anyhow!("--text cannot be sent: {e}"))?;
    if plan.segments.len() < 2 {
        bail!("--concat needs a --text longer than one SMS (160 GSM characters or 70 in UCS-2)");
    }
    Ok(plan.segments.iter().map(|s| one(plan.encoding.data_coding(), 0x40, s.short_message())).collect())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(1..=100_000_000).contains(&args.messages) {
        bail!("--messages must be 1 to 100,000,000");
    }
    if !(1..=256).contains(&args.sessions) || !(1..=10_000).contains(&args.window) {
        bail!("--sessions must be 1 to 256 and --window 1 to 10,000");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of messages per second");
    }
    let text = args.text.clone().unwrap_or_else(|| match args.concat {
        true => LONG_TEXT.into(),
        false => "benchmark message".into(),
    });
    let parts = pdus(&args, &text)?;
    let as_json = args.json;
    crate::bench::report(as_json, 1, load(args, parts), |report| {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:>22}: {v}");
        }
    })
}

async fn load(args: Args, parts: Vec<SubmitSm>) -> anyhow::Result<Value> {
    let receipts = Arc::new(Receipts::default());
    let mut sessions = Vec::new();
    for _ in 0..args.sessions {
        let stream = tokio::net::TcpStream::connect(&args.target)
            .await
            .with_context(|| format!("connecting to {}", args.target))?;
        let _ = stream.set_nodelay(true);
        let bind = Bind {
            system_id: args.system_id.as_str().into(),
            password: args.password.as_str().into(),
            interface_version: 0x34,
            ..Default::default()
        };
        let config = Config { window: args.window, ..Config::default() };
        let (session, _) = smpp_session::bind(stream, BindKind::Transceiver, bind, config, receipts.clone())
            .await
            .with_context(|| format!("binding to {}", args.target))?;
        sessions.push(session);
    }
    let n_parts = parts.len() as u64;
    let spans = match args.interval {
        Some(secs) => Some(crate::bench::Intervals::start(Duration::from_secs(secs), args.interval_log.clone(), {
            let receipts = receipts.clone();
            let counted = args.receipts;
            move || counted.then(|| receipts.got.load(Ordering::Relaxed))
        })?),
        None => None,
    };
    let load = Arc::new(Load {
        args,
        parts,
        answered: AtomicU64::new(0),
        receipts: receipts.clone(),
        spans: spans.as_ref().map(|(s, _)| s.clone()),
    });
    let progress = crate::bench::Progress::start("submitted", load.args.messages, {
        let load = load.clone();
        move || load.answered.load(Ordering::Relaxed)
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(load.args.timeout);
    let mut tasks = tokio::task::JoinSet::new();
    for (n, session) in sessions.iter().enumerate() {
        let (session, load) = (session.clone(), load.clone());
        tasks.spawn(async move { load.submit_share(session, n, started).await });
    }
    let mut share = Share::default();
    while let Some(done) = tasks.join_next().await {
        share.add(done.context("a session's task failed")?);
    }
    progress.finish();
    let args = &load.args;
    let submit_secs = started.elapsed().as_secs_f64();
    let mut report = json!({
        "target": args.target, "sessions": args.sessions, "window": args.window, "sent": args.messages,
        "accepted": share.accepted, "errors": share.errors, "seconds": round(submit_secs),
        "accepted_per_s": round(share.accepted as f64 / submit_secs),
    });
    if args.concat {
        report["parts"] = json!(n_parts);
        report["submits_accepted"] = json!(share.parts);
    }
    crate::bench::add_latencies(&mut report, &mut share.latencies, args.rate);
    if args.receipts {
        // One receipt for every id the server answered with: with --concat, one a part unless the parts share one.
        let expected = receipts.answered();
        let progress = crate::bench::Progress::start("receipts", expected, {
            let receipts = receipts.clone();
            move || receipts.got.load(Ordering::Relaxed)
        });
        while receipts.got.load(Ordering::Relaxed) < expected {
            if Instant::now() > deadline {
                bail!(
                    "gave up after {} s with {} of {expected} receipts",
                    args.timeout,
                    receipts.got.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        progress.finish();
        let e2e = started.elapsed().as_secs_f64();
        report["receipts_at"] = json!("client");
        report["receipts"] = json!(receipts.got.load(Ordering::Relaxed));
        report["duplicate_receipts"] = json!(receipts.duplicates.load(Ordering::Relaxed));
        report["receipted_seconds"] = json!(round(e2e));
        report["receipted_per_s"] = json!(round(share.accepted as f64 / e2e));
        report["delivered_per_s"] = report["receipted_per_s"].clone();
        let mut waited = std::mem::take(&mut receipts.times.lock().unwrap_or_else(|e| e.into_inner()).latencies);
        waited.sort();
        report["receipt_p50_ms"] = json!(quantile_ms(&waited, 0.50));
        report["receipt_p99_ms"] = json!(quantile_ms(&waited, 0.99));
    }
    for s in &sessions {
        s.unbind().await;
    }
    if let Some((_, reporter)) = spans {
        reporter.finish().await;
    }
    Ok(report)
}

/// What every session's task shares.
struct Load {
    args: Args,
    /// The submit_sm of one message, as templates.
    parts: Vec<SubmitSm>,
    /// Messages answered (every part), for the progress bar.
    answered: AtomicU64,
    receipts: Arc<Receipts>,
    /// The span reports, with --interval.
    spans: Option<Arc<crate::bench::Intervals>>,
}

/// What one session's share came to, or all of them.
#[derive(Debug, Default)]
struct Share {
    /// Messages all of whose parts were accepted.
    accepted: u64,
    /// submit_sm accepted.
    parts: u64,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

impl Share {
    fn add(&mut self, other: Share) {
        self.accepted += other.accepted;
        self.parts += other.parts;
        self.latencies.extend(other.latencies);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// One message's outcome: its parts accepted, the time until its last answer, and the first refusal.
type Sent = (u64, Duration, Option<String>);

impl Load {
    /// Submits messages `n, n + sessions, n + 2 * sessions, ...` through one session, its window full (or each at
    /// its time at a fixed rate, message `i` at `started + i / rate`).
    async fn submit_share(self: Arc<Self>, session: Session, n: usize, started: Instant) -> Share {
        let args = &self.args;
        let mut under_way = tokio::task::JoinSet::new();
        let mut share = Share::default();
        let mut tally = |r: Result<Sent, tokio::task::JoinError>| match r {
            Ok((parts, latency, None)) => {
                share.accepted += 1;
                share.parts += parts;
                share.latencies.push(latency);
            }
            Ok((parts, _, Some(why))) => {
                share.parts += parts;
                *share.errors.entry(why).or_default() += 1;
            }
            Err(_) => *share.errors.entry("task".into()).or_default() += 1,
        };
        // Messages under way at once: the window holds every part of each.
        let room = (args.window / self.parts.len()).max(1);
        let mut i = n as u64;
        while i < args.messages {
            while under_way.len() >= room {
                if let Some(r) = under_way.join_next().await {
                    tally(r);
                }
            }
            // Its time: now, or its slot at the fixed rate (and its latency counts from that slot).
            let sent = match args.rate {
                Some(rate) => {
                    let at = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                    at
                }
                None => Instant::now(),
            };
            let (session, load) = (session.clone(), self.clone());
            under_way.spawn(async move { load.submit(session, i, sent).await });
            i += args.sessions as u64;
        }
        while let Some(r) = under_way.join_next().await {
            tally(r);
        }
        share
    }

    /// Submits message `i`: its parts all at once (a gateway may hold every answer until the last part has come).
    async fn submit(&self, session: Session, i: u64, sent: Instant) -> Sent {
        let to = format!("{}{:04}5", self.args.to_prefix, i % 10_000);
        let mut answers = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            let mut pdu = part.clone();
            pdu.destination_addr = to.as_str().into();
            if self.args.concat {
                // The UDH's 16-bit reference (octets 3 and 4): the message's index, so no two sets under way share
                // one for a destination.
                let mut octets = pdu.short_message.as_bytes().to_vec();
                if let Some(r) = octets.get_mut(3..5) {
                    r.copy_from_slice(&(i as u16).to_be_bytes());
                }
                pdu.short_message = smpp::ShortMessage::new(octets);
            }
            answers.push(pdu);
        }
        // One part is awaited here; more go out side by side, each on a task of its own.
        let answers: Vec<Result<_, tokio::task::JoinError>> = match answers.len() {
            1 => vec![Ok(session.request(Body::SubmitSm(answers.remove(0))).await)],
            _ => {
                let tasks: Vec<_> = answers
                    .into_iter()
                    .map(|pdu| {
                        let session = session.clone();
                        tokio::spawn(async move { session.request(Body::SubmitSm(pdu)).await })
                    })
                    .collect();
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await);
                }
                out
            }
        };
        let (mut accepted, mut refused) = (0u64, None);
        for answer in answers {
            let why = match answer {
                Ok(Ok(r)) if r.command_status == CommandStatus::ESME_ROK => {
                    accepted += 1;
                    if let (true, Body::SubmitSmResp(resp)) = (self.args.receipts, &r.body) {
                        let id = String::from_utf8_lossy(resp.message_id.as_bytes()).into_owned();
                        self.receipts.submitted(id, sent);
                    }
                    continue;
                }
                Ok(Ok(r)) => {
                    r.command_status.name().map_or_else(|| format!("{:#x}", r.command_status.as_u32()), String::from)
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "task".into(),
            };
            refused.get_or_insert(why);
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        let latency = sent.elapsed();
        match (&self.spans, &refused) {
            (Some(spans), None) => spans.answered(latency),
            (Some(spans), Some(_)) => spans.refused(),
            (None, _) => {}
        }
        (accepted, latency, refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_counts_its_first_receipt_once() {
        let receipts = Receipts::default();
        let at = Instant::now();
        receipts.submitted("a".into(), at);
        assert!(receipts.receipt("a".into()));
        assert!(!receipts.receipt("a".into()), "a second receipt for a is a duplicate");
        // A receipt may come before its submit's answer is read; it is still the first for its id.
        assert!(receipts.receipt("b".into()));
        receipts.submitted("b".into(), at);
        assert!(!receipts.receipt("b".into()));
        // Parts answered with one id owe one receipt between them.
        receipts.submitted("c".into(), at);
        receipts.submitted("c".into(), at);
        // Submits answered without an id owe a receipt each.
        receipts.submitted(String::new(), at);
        receipts.submitted(String::new(), at);
        assert_eq!(receipts.answered(), 5);
        assert_eq!(receipts.times.lock().unwrap().latencies.len(), 2);
    }
}
