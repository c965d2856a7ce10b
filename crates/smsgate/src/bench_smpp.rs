//! `smsgate bench smpp`: load an SMPP server (smsgate's, `smsgate sim`, Kannel's or Jasmin's) as client
//! applications do: transceiver binds submitting with a window each, optionally waiting for every receipt.

use std::collections::{BTreeMap, HashMap};
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
    /// How many messages to submit (1 to 10,000,000).
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
    /// The text of every message.
    #[arg(long, default_value = "benchmark message")]
    text: String,
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
}

/// Counts the receipts that arrive, and how long after its submit each came.
#[derive(Debug, Default)]
struct Receipts {
    got: AtomicU64,
    other: AtomicU64,
    times: Mutex<Times>,
}

/// When each message was submitted (by the id its `submit_sm_resp` gave), and what its receipt took.
#[derive(Debug, Default)]
struct Times {
    submitted: HashMap<String, Instant>,
    /// Receipts that came before their submit's answer was read, by id, with their time.
    early: HashMap<String, Instant>,
    latencies: Vec<Duration>,
}

impl Receipts {
    /// The server answered a submit, sent at `at`, with `id`.
    fn submitted(&self, id: String, at: Instant) {
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        match t.early.remove(&id) {
            Some(came) => t.latencies.push(came.saturating_duration_since(at)),
            None => {
                t.submitted.insert(id, at);
            }
        }
    }

    fn receipt(&self, id: String) {
        let now = Instant::now();
        let mut t = self.times.lock().unwrap_or_else(|e| e.into_inner());
        match t.submitted.remove(&id) {
            Some(at) => t.latencies.push(now.saturating_duration_since(at)),
            None => {
                t.early.insert(id, now);
            }
        }
    }
}

#[async_trait]
impl Handler for Receipts {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        match request.body {
            Body::DeliverSm(d) if d.esm_class & 0x3C == 0x04 => {
                self.got.fetch_add(1, Ordering::Relaxed);
                let id =
                    d.tlvs.receipted_message_id().map(|id| String::from_utf8_lossy(id).into_owned()).or_else(|| {
                        smpp::receipt::Receipt::parse(&String::from_utf8_lossy(d.short_message.as_bytes()))
                            .ok()
                            .map(|r| r.id)
                    });
                if let Some(id) = id {
                    self.receipt(id);
                }
            }
            _ => {
                self.other.fetch_add(1, Ordering::Relaxed);
            }
        };
        (CommandStatus::ESME_ROK, Body::DeliverSmResp(SubmitSmResp::default()))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(1..=10_000_000).contains(&args.messages) {
        bail!("--messages must be 1 to 10,000,000");
    }
    if !(1..=256).contains(&args.sessions) || !(1..=10_000).contains(&args.window) {
        bail!("--sessions must be 1 to 256 and --window 1 to 10,000");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of messages per second");
    }
    let as_json = args.json;
    crate::bench::report(as_json, true, load(args), |report| {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:>22}: {v}");
        }
    })
}

async fn load(args: Args) -> anyhow::Result<Value> {
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
    let args = Arc::new(args);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut tasks = tokio::task::JoinSet::new();
    for (n, session) in sessions.iter().enumerate() {
        let (session, args, receipts) = (session.clone(), args.clone(), receipts.clone());
        tasks.spawn(async move { submit_share(session, args, n, started, receipts).await });
    }
    let (mut accepted, mut latencies, mut errors) = (0u64, Vec::new(), BTreeMap::<String, u64>::new());
    while let Some(done) = tasks.join_next().await {
        let (a, l, e) = done.context("a session's task failed")?;
        accepted += a;
        latencies.extend(l);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let submit_secs = started.elapsed().as_secs_f64();
    let mut report = json!({
        "target": args.target, "sessions": args.sessions, "window": args.window, "sent": args.messages,
        "accepted": accepted, "errors": errors, "seconds": round(submit_secs),
        "accepted_per_s": round(accepted as f64 / submit_secs),
    });
    latencies.sort();
    let ms = |q: f64| quantile_ms(&latencies, q);
    report["submit_p50_ms"] = json!(ms(0.50));
    report["submit_p90_ms"] = json!(ms(0.90));
    report["submit_p99_ms"] = json!(ms(0.99));
    report["submit_max_ms"] = json!(ms(1.0));
    if let Some(rate) = args.rate {
        report["rate"] = json!(rate);
    }
    if args.receipts {
        while receipts.got.load(Ordering::Relaxed) < accepted {
            if Instant::now() > deadline {
                bail!(
                    "gave up after {} s with {} of {accepted} receipts",
                    args.timeout,
                    receipts.got.load(Ordering::Relaxed)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e2e = started.elapsed().as_secs_f64();
        report["receipts"] = json!(receipts.got.load(Ordering::Relaxed));
        report["receipted_seconds"] = json!(round(e2e));
        report["receipted_per_s"] = json!(round(accepted as f64 / e2e));
        report["delivered_per_s"] = report["receipted_per_s"].clone();
        let mut waited = std::mem::take(&mut receipts.times.lock().unwrap_or_else(|e| e.into_inner()).latencies);
        waited.sort();
        report["receipt_p50_ms"] = json!(quantile_ms(&waited, 0.50));
        report["receipt_p99_ms"] = json!(quantile_ms(&waited, 0.99));
    }
    for s in &sessions {
        s.unbind().await;
    }
    Ok(report)
}

/// Submits messages `n, n + sessions, n + 2 * sessions, ...` through one session, its window full (or each at its
/// time at a fixed rate, message `i` at `started + i / rate`).
async fn submit_share(
    session: Session,
    args: Arc<Args>,
    n: usize,
    started: Instant,
    receipts: Arc<Receipts>,
) -> (u64, Vec<Duration>, BTreeMap<String, u64>) {
    let mut under_way = tokio::task::JoinSet::new();
    let (mut accepted, mut latencies, mut errors) = (0u64, Vec::new(), BTreeMap::<String, u64>::new());
    let mut tally = |r: Result<(bool, Duration, String), tokio::task::JoinError>| match r {
        Ok((true, latency, _)) => {
            accepted += 1;
            latencies.push(latency);
        }
        Ok((false, _, why)) => *errors.entry(why).or_default() += 1,
        Err(_) => *errors.entry("task".into()).or_default() += 1,
    };
    let mut i = n as u64;
    while i < args.messages {
        while under_way.len() >= args.window {
            if let Some(r) = under_way.join_next().await {
                tally(r);
            }
        }
        let body = Body::SubmitSm(SubmitSm {
            source_addr: args.from.as_str().into(),
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            destination_addr: format!("{}{:04}5", args.to_prefix, i % 10_000).as_str().into(),
            registered_delivery: u8::from(args.receipts),
            short_message: smpp::ShortMessage::new(args.text.as_bytes()),
            ..Default::default()
        });
        // Its time: now, or its slot at the fixed rate (and its latency counts from that slot).
        let sent = match args.rate {
            Some(rate) => {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let (session, receipts, wants) = (session.clone(), receipts.clone(), args.receipts);
        under_way.spawn(async move {
            match session.request(body).await {
                Ok(r) if r.command_status == CommandStatus::ESME_ROK => {
                    if let (true, Body::SubmitSmResp(resp)) = (wants, &r.body) {
                        receipts.submitted(String::from_utf8_lossy(resp.message_id.as_bytes()).into_owned(), sent);
                    }
                    (true, sent.elapsed(), String::new())
                }
                Ok(r) => (
                    false,
                    sent.elapsed(),
                    r.command_status.name().map_or_else(|| format!("{:#x}", r.command_status.as_u32()), String::from),
                ),
                Err(e) => (false, sent.elapsed(), e.to_string()),
            }
        });
        i += args.sessions as u64;
    }
    while let Some(r) = under_way.join_next().await {
        tally(r);
    }
    (accepted, latencies, errors)
}
