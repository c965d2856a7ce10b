//! `smsgate bench http`: a load generator for HTTP submission APIs — smsgate's REST API, Kannel's `sendsms` (with
//! `--kannel`) and Jasmin's `/send` (with `--jasmin`), so one load generator measures all three the same way. It
//! sends N messages, one per request or in batches (smsgate), at most C requests at once or at a fixed rate, and
//! reports what the gateway accepted, how fast, with what latency, and (with `--receipts`) how fast the messages'
//! receipts came back.
//!
//! Receipts are counted where the sender learns of them: Kannel and Jasmin call a URL given with each message
//! (`dlr-url`), which this bench serves itself; smsgate with `--callbacks` posts each message's final status to
//! its `callback_url` (`callback_statuses`), also served here. Without `--callbacks`, smsgate's own count of
//! delivered messages (`/metrics`) is watched instead: the receipt reached the gateway, no callback went out.
//!
//! At a fixed rate each request has a scheduled start, and its latency is counted from that time, not from when a
//! busy client got round to sending it; otherwise a stalled server would hide its own stalls ("coordinated
//! omission", the correction wrk2 makes). A receipt's latency is counted from its message's scheduled start too.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::bench::{Progress, quantile_ms, round};

#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// The gateway's base URL: smsgate's (http://127.0.0.1:8080), Kannel's smsbox with --kannel
    /// (http://127.0.0.1:13013) or Jasmin's HTTP API with --jasmin (http://127.0.0.1:1401).
    #[arg(long)]
    target: String,
    /// smsgate's API key to send with.
    #[arg(long, env = "SMSGATE_API_KEY", hide_env_values = true, required_unless_present_any = ["kannel", "jasmin"])]
    api_key: Option<String>,
    /// Drive Kannel: GET /cgi-bin/sendsms with --username and --password (a sendsms-user).
    #[arg(long, conflicts_with = "jasmin", requires_all = ["username", "password"])]
    kannel: bool,
    /// Drive Jasmin: GET /send with --username and --password (a Jasmin user).
    #[arg(long, requires_all = ["username", "password"])]
    jasmin: bool,
    /// The user Kannel or Jasmin knows the sender as.
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// How many messages to send (1 to 10,000,000).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Requests under way at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Messages per request, through /v1/messages/batch (1 sends each on its own to /v1/messages; smsgate only).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Requests per second, each at its scheduled time; without it, as fast as the concurrency allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Ask for a receipt of every message and wait until all have come back; report the end-to-end rate and the
    /// receipts' latency.
    #[arg(long)]
    receipts: bool,
    /// With --receipts against smsgate: give every message a callback_url served by this bench, called back for
    /// its final status only (callback_statuses), and count those where the sender sees them (as Kannel's and
    /// Jasmin's receipts are counted); without it, the server's count of delivered messages on /metrics is watched.
    #[arg(long, requires = "receipts")]
    callbacks: bool,
    /// Where receipt callbacks come to (--kannel, --jasmin or --callbacks with --receipts).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The text of every message.
    #[arg(long, default_value = "benchmark message")]
    text: String,
    /// The sender.
    #[arg(long, default_value = "Bench")]
    from: String,
    /// Destinations are this prefix followed by four digits and a 5, clear of the simulator's fault endings.
    #[arg(long, default_value = "+4477009")]
    to_prefix: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Every this many seconds, a JSON line of that span: requests answered and refused, their latency, and (with
    /// --callbacks) the receipts that came.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    interval: Option<u64>,
    /// Where the --interval lines are appended (standard error without it).
    #[arg(long, requires = "interval")]
    interval_log: Option<std::path::PathBuf>,
    /// Threads the load runs on: 0 is one a core; 1 is a single thread, which costs the machine less at a modest
    /// --rate (a load sharing its cores with the server it measures takes less from it).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    threads: u16,
}

/// The gateway being driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gateway {
    Smsgate,
    Kannel,
    Jasmin,
}

/// What one request did.
#[derive(Debug)]
struct Outcome {
    latency: Duration,
    accepted: u64,
    errors: Vec<String>,
}

pub fn run(args: HttpArgs) -> anyhow::Result<()> {
    if !(1..=10_000_000).contains(&args.messages) {
        bail!("--messages must be 1 to 10,000,000");
    }
    if !(1..=10_000).contains(&args.batch) {
        bail!("--batch must be 1 to 10,000");
    }
    if args.batch > 1 && (args.kannel || args.jasmin) {
        bail!("--batch is smsgate's: Kannel and Jasmin take one message a request");
    }
    if args.concurrency == 0 || args.concurrency > 10_000 {
        bail!("--concurrency must be 1 to 10,000");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of requests per second");
    }
    let (as_json, threads) = (args.json, usize::from(args.threads));
    crate::bench::report(as_json, threads, load(args), print_report)
}

/// When each message was sent and when its receipt came, for the receipts' latency.
#[derive(Debug)]
struct Journal {
    started: Instant,
    /// Nanoseconds after `started`, plus one (0: not yet), by message index.
    sent: Vec<AtomicU64>,
    came: Vec<AtomicU64>,
    receipts: AtomicU64,
    by_status: Mutex<BTreeMap<String, u64>>,
}

impl Journal {
    fn new(messages: u64, started: Instant) -> Journal {
        let n = usize::try_from(messages).unwrap_or(0);
        Journal {
            started,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            came: (0..n).map(|_| AtomicU64::new(0)).collect(),
            receipts: AtomicU64::new(0),
            by_status: Mutex::default(),
        }
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn sent(&self, i: u64, at: Instant) {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| self.sent.get(i)) {
            slot.store(self.stamp(at), Ordering::Relaxed);
        }
    }

    /// A message's final receipt came; a second one for the same message is not counted.
    fn came(&self, i: u64, status: &str) {
        let Some(slot) = usize::try_from(i).ok().and_then(|i| self.came.get(i)) else { return };
        if slot.compare_exchange(0, self.stamp(Instant::now()), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.receipts.fetch_add(1, Ordering::Relaxed);
            *self.by_status.lock().unwrap_or_else(|e| e.into_inner()).entry(status.to_string()).or_default() += 1;
        }
    }

    /// Each receipt's time after its message's send, sorted.
    fn latencies(&self) -> Vec<Duration> {
        let mut out: Vec<Duration> = self
            .sent
            .iter()
            .zip(&self.came)
            .filter_map(|(s, c)| {
                let (s, c) = (s.load(Ordering::Relaxed), c.load(Ordering::Relaxed));
                (s > 0 && c > 0).then(|| Duration::from_nanos(c.saturating_sub(s)))
            })
            .collect();
        out.sort();
        out
    }
}

/// The final status a receipt callback reports, or None for an intermediate one (or none at all).
fn final_status(gateway: Gateway, query: &HashMap<String, String>, body: &str) -> Option<String> {
    match gateway {
        // Kannel's %d: 1 delivered, 2 failed, 16 rejected by the SMSC; 4 (buffered) and 8 (SMSC accepted) are not
        // final, and with dlr-mask 3 are not asked for.
        Gateway::Kannel => match query.get("type").map(String::as_str) {
            Some("1") => Some("delivered".into()),
            Some("2") => Some("failed".into()),
            Some("16") => Some("rejected".into()),
            _ => None,
        },
        // Jasmin at dlr-level 2 calls once, with the SMSC's stat (DELIVRD, UNDELIV, ...).
        Gateway::Jasmin => query.get("message_status").cloned(),
        Gateway::Smsgate => {
            let status = serde_json::from_str::<Value>(body).ok()?["status"].as_str()?.to_string();
            matches!(status.as_str(), "delivered" | "undelivered" | "failed" | "expired" | "canceled").then_some(status)
        }
    }
}

/// Serves `/dlr/{index}` on `listen` for the receipts' callbacks; returns the base URL.
async fn serve_receipts(gateway: Gateway, listen: SocketAddr, journal: Arc<Journal>) -> anyhow::Result<String> {
    use axum::extract::{Path, Query};
    let app = axum::Router::new().route(
        "/dlr/{i}",
        axum::routing::any(move |Path(i): Path<u64>, Query(query): Query<HashMap<String, String>>, body: String| {
            let journal = journal.clone();
            async move {
                if let Some(status) = final_status(gateway, &query, &body) {
                    journal.came(i, &status);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

async fn load(mut args: HttpArgs) -> anyhow::Result<Value> {
    args.target = args.target.trim_end_matches('/').to_string();
    let gateway = match (args.kannel, args.jasmin) {
        (true, _) => Gateway::Kannel,
        (_, true) => Gateway::Jasmin,
        _ => Gateway::Smsgate,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .context("building the HTTP client")?;
    // Receipts at the sender (a callback served here), or smsgate's count of delivered messages.
    let at_client = args.receipts && (gateway != Gateway::Smsgate || args.callbacks);
    let delivered_before =
        if args.receipts && !at_client { Some(delivered(&client, &args.target).await?) } else { None };
    let journal = Arc::new(Journal::new(if at_client { args.messages } else { 0 }, Instant::now()));
    let callbacks = if at_client { Some(serve_receipts(gateway, args.listen, journal.clone()).await?) } else { None };
    let requests = args.messages.div_ceil(args.batch);
    let spans = match args.interval {
        Some(secs) => Some(crate::bench::Intervals::start(Duration::from_secs(secs), args.interval_log.clone(), {
            let journal = journal.clone();
            move || at_client.then(|| journal.receipts.load(Ordering::Relaxed))
        })?),
        None => None,
    };
    let args = Arc::new(args);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let answered = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("submitted", args.messages, {
        let answered = answered.clone();
        move || answered.load(Ordering::Relaxed)
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..requests {
        if Instant::now() > deadline {
            bail!("gave up after {} s with {r} of {requests} requests sent", args.timeout);
        }
        // The time this request should start: now, or its slot at the fixed rate.
        let scheduled = match args.rate {
            Some(rate) => {
                let at = started + Duration::from_secs_f64(r as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let permit = gate.clone().acquire_owned().await.context("the request gate closed")?;
        let (client, args, callbacks, journal, answered) =
            (client.clone(), args.clone(), callbacks.clone(), journal.clone(), answered.clone());
        let spans = spans.as_ref().map(|(s, _)| s.clone());
        tasks.spawn(async move {
            let first = r * args.batch;
            let count = args.batch.min(args.messages - first);
            for i in first..first + count {
                journal.sent(i, scheduled);
            }
            let request = Request { client: &client, args: &args, callbacks: callbacks.as_deref(), first, count };
            let outcome = match gateway {
                Gateway::Smsgate => request.smsgate().await,
                Gateway::Kannel | Gateway::Jasmin => request.other(gateway).await,
            };
            drop(permit);
            answered.fetch_add(count, Ordering::Relaxed);
            let latency = scheduled.elapsed();
            match (&spans, outcome.errors.is_empty()) {
                (Some(spans), true) => spans.answered(latency),
                (Some(spans), false) => spans.refused(),
                (None, _) => {}
            }
            Outcome { latency, ..outcome }
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
    let (mut accepted, mut errors) = (0u64, BTreeMap::<String, u64>::new());
    while let Some(done) = tasks.join_next().await {
        let o = done.context("a request task failed")?;
        latencies.push(o.latency);
        accepted += o.accepted;
        for e in o.errors {
            *errors.entry(e).or_default() += 1;
        }
    }
    progress.finish();
    let accept_secs = started.elapsed().as_secs_f64();
    let mut report = json!({
        "target": args.target,
        "gateway": format!("{gateway:?}").to_lowercase(),
        "sent": args.messages,
        "requests": requests,
        "accepted": accepted,
        "errors": errors,
        "seconds": round(accept_secs),
        "accepted_per_s": round(accepted as f64 / accept_secs),
    });
    crate::bench::add_latencies(&mut report, &mut latencies, args.rate);
    if let Some(before) = delivered_before {
        let counted = Arc::new(AtomicU64::new(0));
        let progress = Progress::start("delivered", accepted, {
            let counted = counted.clone();
            move || counted.load(Ordering::Relaxed)
        });
        loop {
            let now = delivered(&client, &args.target).await? - before;
            counted.store(now as u64, Ordering::Relaxed);
            if now >= accepted as f64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("gave up after {} s with {now} of {accepted} delivered", args.timeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        progress.finish();
        let e2e = started.elapsed().as_secs_f64();
        report["receipts_at"] = json!("gateway");
        report["delivered_seconds"] = json!(round(e2e));
        report["delivered_per_s"] = json!(round(accepted as f64 / e2e));
    }
    if at_client {
        let progress = Progress::start("receipts", accepted, {
            let journal = journal.clone();
            move || journal.receipts.load(Ordering::Relaxed)
        });
        while journal.receipts.load(Ordering::Relaxed) < accepted {
            if Instant::now() > deadline {
                let got = journal.receipts.load(Ordering::Relaxed);
                bail!("gave up after {} s with {got} of {accepted} receipts", args.timeout);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        progress.finish();
        let e2e = started.elapsed().as_secs_f64();
        report["receipts_at"] = json!("client");
        report["receipts"] = json!(journal.receipts.load(Ordering::Relaxed));
        report["receipts_by_status"] = json!(*journal.by_status.lock().unwrap_or_else(|e| e.into_inner()));
        report["delivered_seconds"] = json!(round(e2e));
        report["delivered_per_s"] = json!(round(accepted as f64 / e2e));
        let waited = journal.latencies();
        report["receipt_p50_ms"] = json!(quantile_ms(&waited, 0.50));
        report["receipt_p99_ms"] = json!(quantile_ms(&waited, 0.99));
    }
    if let Some((_, reporter)) = spans {
        reporter.finish().await;
    }
    Ok(report)
}

/// One request: messages `first .. first + count`.
struct Request<'a> {
    client: &'a reqwest::Client,
    args: &'a HttpArgs,
    /// The receipts' base URL, when they are counted here.
    callbacks: Option<&'a str>,
    first: u64,
    count: u64,
}

impl Request<'_> {
    fn to(&self, i: u64) -> String {
        format!("{}{:04}5", self.args.to_prefix, i % 10_000)
    }

    fn failed(&self, code: String) -> Outcome {
        Outcome { latency: Duration::ZERO, accepted: 0, errors: vec![code; self.count as usize] }
    }

    fn message(&self, i: u64) -> Value {
        let mut m = json!({"to": self.to(i), "from": self.args.from, "body": self.args.text});
        if let Some(base) = self.callbacks {
            // The final statuses only: one callback a message, as Kannel's dlr-mask 3 and Jasmin's level 2 make.
            m["callback_url"] = json!(format!("{base}/dlr/{i}"));
            m["callback_statuses"] = json!(["delivered", "undelivered", "failed", "expired", "canceled"]);
        }
        m
    }

    /// Posts to smsgate: alone, or as one batch.
    async fn smsgate(&self) -> Outcome {
        let (url, body) = if self.args.batch == 1 {
            (format!("{}/v1/messages", self.args.target), self.message(self.first))
        } else {
            let messages: Vec<Value> = (self.first..self.first + self.count).map(|i| self.message(i)).collect();
            (format!("{}/v1/messages/batch", self.args.target), json!({ "messages": messages }))
        };
        let key = self.args.api_key.as_deref().unwrap_or_default();
        let response = match self.client.post(url).bearer_auth(key).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return self.failed(transport_error(&e)),
        };
        let status = response.status();
        let value: Value = match response.json().await {
            Ok(v) => v,
            Err(_) => return self.failed(format!("http_{}", status.as_u16())),
        };
        if !status.is_success() {
            return self.failed(
                value["error"]["code"].as_str().map_or_else(|| format!("http_{}", status.as_u16()), String::from),
            );
        }
        if self.args.batch == 1 {
            return Outcome { latency: Duration::ZERO, accepted: 1, errors: Vec::new() };
        }
        let mut outcome = Outcome { latency: Duration::ZERO, accepted: 0, errors: Vec::new() };
        for item in value["data"].as_array().map(Vec::as_slice).unwrap_or_default() {
            match item["error"]["code"].as_str() {
                Some(code) => outcome.errors.push(code.to_string()),
                None => outcome.accepted += 1,
            }
        }
        outcome
    }

    /// One GET to Kannel's sendsms or Jasmin's /send; any 2xx answer is an acceptance.
    async fn other(&self, gateway: Gateway) -> Outcome {
        let i = self.first;
        let (user, password) =
            (self.args.username.as_deref().unwrap_or_default(), self.args.password.as_deref().unwrap_or_default());
        let to = self.to(i);
        let mut params: Vec<(&str, String)> = vec![("username", user.into()), ("password", password.into())];
        let path = match gateway {
            Gateway::Kannel => {
                params.extend([("from", self.args.from.clone()), ("to", to), ("text", self.args.text.clone())]);
                if let Some(base) = self.callbacks {
                    // 1 delivered + 2 failed: one callback when the message's fate is known.
                    params.extend([("dlr-mask", "3".into()), ("dlr-url", format!("{base}/dlr/{i}?type=%d"))]);
                }
                "/cgi-bin/sendsms"
            }
            _ => {
                params.extend([("from", self.args.from.clone()), ("to", to), ("content", self.args.text.clone())]);
                params.push(("dlr", if self.callbacks.is_some() { "yes" } else { "no" }.into()));
                if let Some(base) = self.callbacks {
                    // Level 2: the SMSC's receipt only, one callback a message.
                    params.extend([
                        ("dlr-url", format!("{base}/dlr/{i}")),
                        ("dlr-level", "2".into()),
                        ("dlr-method", "GET".into()),
                    ]);
                }
                "/send"
            }
        };
        let url = match reqwest::Url::parse_with_params(&format!("{}{path}", self.args.target), &params) {
            Ok(u) => u,
            Err(_) => return self.failed("bad_url".into()),
        };
        match self.client.get(url).send().await {
            Ok(r) if r.status().is_success() => {
                // Read the answer out so the connection can be used again.
                let _ = r.bytes().await;
                Outcome { latency: Duration::ZERO, accepted: 1, errors: Vec::new() }
            }
            Ok(r) => self.failed(format!("http_{}", r.status().as_u16())),
            Err(e) => self.failed(transport_error(&e)),
        }
    }
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() { "timeout" } else { "connection" }.into()
}

/// The server's count of messages that reached `delivered` (`smsgate_status_changes_total`).
async fn delivered(client: &reqwest::Client, target: &str) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{target}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("reading {target}/metrics"))?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("smsgate_status_changes_total{status=\"delivered\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

fn print_report(r: &Value) {
    println!("target        {} ({})", r["target"].as_str().unwrap_or_default(), r["gateway"].as_str().unwrap_or(""));
    println!("sent          {} messages in {} requests", r["sent"], r["requests"]);
    println!("accepted      {} in {} s: {} messages/s", r["accepted"], r["seconds"], r["accepted_per_s"]);
    if let Some(errors) = r["errors"].as_object().filter(|e| !e.is_empty()) {
        for (code, n) in errors {
            println!("error         {code}: {n}");
        }
    }
    println!(
        "latency (ms)  p50 {}  p90 {}  p99 {}  max {}",
        r["submit_p50_ms"], r["submit_p90_ms"], r["submit_p99_ms"], r["submit_max_ms"]
    );
    if !r["delivered_per_s"].is_null() {
        println!(
            "delivered     all after {} s: {} messages/s end to end (receipts seen by the {})",
            r["delivered_seconds"],
            r["delivered_per_s"],
            r["receipts_at"].as_str().unwrap_or("")
        );
    }
    if !r["receipt_p50_ms"].is_null() {
        println!("receipts (ms) p50 {}  p99 {} after the submit", r["receipt_p50_ms"], r["receipt_p99_ms"]);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn receipts_are_final_statuses_only() {
        // Kannel's %d: 1 delivered, 2 failed, 16 rejected; 4 buffered and 8 SMSC-accepted are on the way.
        for (kind, expected) in [("1", Some("delivered")), ("2", Some("failed")), ("16", Some("rejected"))] {
            assert_eq!(final_status(Gateway::Kannel, &query(&[("type", kind)]), "").as_deref(), expected);
        }
        for kind in ["4", "8", "x"] {
            assert_eq!(final_status(Gateway::Kannel, &query(&[("type", kind)]), ""), None, "{kind}");
        }
        assert_eq!(final_status(Gateway::Kannel, &query(&[]), ""), None);
        // Jasmin at level 2: its SMSC's stat, whatever it is.
        let jasmin = query(&[("id", "abc"), ("message_status", "UNDELIV"), ("level", "2")]);
        assert_eq!(final_status(Gateway::Jasmin, &jasmin, "").as_deref(), Some("UNDELIV"));
        // smsgate posts every change; only the final ones count.
        for (body, expected) in [
            (r#"{"status":"sent"}"#, None),
            (r#"{"status":"sending"}"#, None),
            (r#"{"status":"delivered"}"#, Some("delivered")),
            (r#"{"status":"expired"}"#, Some("expired")),
            ("not json", None),
        ] {
            assert_eq!(final_status(Gateway::Smsgate, &query(&[]), body).as_deref(), expected, "{body}");
        }
    }

    #[test]
    fn a_message_counts_its_first_receipt_once() {
        let started = Instant::now();
        let journal = Journal::new(3, started);
        journal.sent(0, started);
        journal.sent(1, started);
        journal.came(0, "delivered");
        journal.came(0, "delivered");
        journal.came(7, "delivered"); // beyond the run: ignored
        assert_eq!(journal.receipts.load(Ordering::Relaxed), 1);
        assert_eq!(journal.latencies().len(), 1);
        assert_eq!(*journal.by_status.lock().unwrap(), BTreeMap::from([("delivered".to_string(), 1)]));
    }
}
