//! `smsgate bench sink`: a webhook receiver that counts what it gets and checks signatures, for measuring a server
//! with webhooks on.
//!
//! `smsgate bench http`: a load generator for the REST API. It posts N messages, one per request or in batches, at
//! most C requests at once or at a fixed rate, and reports what the server accepted, how fast, with what latency,
//! and (with `--receipts`) how fast messages reached `delivered`.
//!
//! At a fixed rate each request has a scheduled start, and its latency is counted from that time, not from when a
//! busy client got round to sending it; otherwise a stalled server would hide its own stalls ("coordinated
//! omission", the correction wrk2 makes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Load the REST API: POST /v1/messages (or /v1/messages/batch with --batch).
    Http(HttpArgs),
    /// Load an SMPP server: transceiver binds submitting with a window each (and, with --receipts, waiting for
    /// every receipt).
    Smpp(crate::bench_smpp::Args),
    /// Receive webhooks: answer every POST 200, count them by status, check signatures; GET /stats shows the
    /// counts as JSON. Runs until SIGINT or SIGTERM.
    Sink(SinkArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8099")]
    listen: std::net::SocketAddr,
    /// The account's webhook secret: each POST's Smsgate-Signature is checked with it.
    #[arg(long, env = "SMSGATE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

/// What the sink has received.
#[derive(Debug, Default)]
struct SinkStats {
    received: u64,
    by_status: BTreeMap<String, u64>,
    bad_signatures: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl SinkStats {
    fn json(&self) -> Value {
        let span = match (self.first, self.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => 0.0,
        };
        json!({"received": self.received, "by_status": self.by_status, "bad_signatures": self.bad_signatures,
               "seconds_first_to_last": round(span)})
    }
}

async fn sink(args: SinkArgs) -> anyhow::Result<()> {
    let stats = Arc::new(std::sync::Mutex::new(SinkStats::default()));
    let (posts, reads) = (stats.clone(), stats.clone());
    let secret = args.secret.clone();
    let app = axum::Router::new()
        .route(
            "/stats",
            axum::routing::get(move || {
                let reads = reads.clone();
                async move { axum::Json(reads.lock().unwrap_or_else(|e| e.into_inner()).json()) }
            }),
        )
        .fallback(axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (posts, secret) = (posts.clone(), secret.clone());
            async move {
                let good = secret.as_deref().is_none_or(|s| {
                    let header = headers.get("smsgate-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let t = header.strip_prefix("t=").and_then(|h| h.split(',').next()).unwrap_or("");
                    t.parse::<i64>().is_ok_and(|t| smsgate_api::webhooks::signature(s, t, &body) == header)
                });
                let status = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(String::from))
                    .unwrap_or_else(|| "unknown".into());
                let mut st = posts.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                st.first.get_or_insert(now);
                st.last = Some(now);
                st.received += 1;
                *st.by_status.entry(status).or_default() += 1;
                if !good {
                    st.bad_signatures += 1;
                }
                axum::http::StatusCode::OK
            }
        }));
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    println!("smsgate bench sink: listening on http://{}", listener.local_addr()?);
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(stop).await.context("serving")?;
    println!("{}", stats.lock().unwrap_or_else(|e| e.into_inner()).json());
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    target: String,
    /// The API key to send with.
    #[arg(long, env = "SMSGATE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// How many messages to send (1 to 10,000,000).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Requests under way at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Messages per request, through /v1/messages/batch (1 sends each on its own to /v1/messages).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Requests per second, each at its scheduled time; without it, as fast as the concurrency allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Also wait until every accepted message is delivered (watching the server's /metrics) and report the
    /// end-to-end rate.
    #[arg(long)]
    receipts: bool,
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
}

/// What one request did.
#[derive(Debug)]
struct Outcome {
    latency: Duration,
    accepted: u64,
    errors: Vec<String>,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    let args = match cmd {
        Command::Http(args) => args,
        Command::Smpp(args) => return crate::bench_smpp::run(args),
        Command::Sink(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            return runtime.block_on(sink(args));
        }
    };
    if !(1..=10_000_000).contains(&args.messages) {
        bail!("--messages must be 1 to 10,000,000");
    }
    if !(1..=10_000).contains(&args.batch) {
        bail!("--batch must be 1 to 10,000");
    }
    if args.concurrency == 0 || args.concurrency > 10_000 {
        bail!("--concurrency must be 1 to 10,000");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number of requests per second");
    }
    let as_json = args.json;
    report(as_json, false, http(args), print_report)
}

/// Runs a load on a runtime of its own and prints its report: as JSON, or through `human`. `one_thread`: on the
/// calling thread alone, for a load whose tasks mostly wake each other (SMPP sessions): a multi-threaded runtime
/// spent its time waking its workers, which a load generator sharing cores with what it measures cannot spare.
pub(crate) fn report(
    as_json: bool,
    one_thread: bool,
    load: impl std::future::Future<Output = anyhow::Result<Value>>,
    human: fn(&Value),
) -> anyhow::Result<()> {
    let mut builder = match one_thread {
        true => tokio::runtime::Builder::new_current_thread(),
        false => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build().context("starting tokio")?;
    let report = runtime.block_on(load)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        human(&report);
    }
    Ok(())
}

/// The `q` quantile of `sorted`, in milliseconds (0 when empty).
pub(crate) fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).map_or(0.0, |d| round(d.as_secs_f64() * 1000.0))
}

fn message(args: &HttpArgs, i: u64) -> Value {
    json!({"to": format!("{}{:04}5", args.to_prefix, i % 10_000), "from": args.from, "body": args.text})
}

async fn http(mut args: HttpArgs) -> anyhow::Result<Value> {
    args.target = args.target.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .context("building the HTTP client")?;
    let delivered_before = if args.receipts { Some(delivered(&client, &args.target).await?) } else { None };
    let requests = args.messages.div_ceil(args.batch);
    let args = Arc::new(args);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let started = Instant::now();
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
        let (client, args) = (client.clone(), args.clone());
        tasks.spawn(async move {
            let first = r * args.batch;
            let count = args.batch.min(args.messages - first);
            let outcome = post(&client, &args, first, count).await;
            drop(permit);
            Outcome { latency: scheduled.elapsed(), ..outcome }
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
    let accept_secs = started.elapsed().as_secs_f64();
    let mut report = json!({
        "target": args.target,
        "sent": args.messages,
        "requests": requests,
        "accepted": accepted,
        "errors": errors,
        "seconds": round(accept_secs),
        "accepted_per_s": round(accepted as f64 / accept_secs),
    });
    latencies.sort();
    let ms = |q: f64| quantile_ms(&latencies, q);
    report["submit_p50_ms"] = json!(ms(0.50));
    report["submit_p90_ms"] = json!(ms(0.90));
    report["submit_p99_ms"] = json!(ms(0.99));
    report["submit_max_ms"] = json!(ms(1.0));
    if let Some(before) = delivered_before {
        loop {
            let now = delivered(&client, &args.target).await?;
            if now - before >= accepted as f64 {
                break;
            }
            if Instant::now() > deadline {
                bail!("gave up after {} s with {} of {accepted} delivered", args.timeout, now - before);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e2e = started.elapsed().as_secs_f64();
        report["delivered_seconds"] = json!(round(e2e));
        report["delivered_per_s"] = json!(round(accepted as f64 / e2e));
    }
    Ok(report)
}

/// Posts messages `first .. first + count`: alone, or as one batch.
async fn post(client: &reqwest::Client, args: &HttpArgs, first: u64, count: u64) -> Outcome {
    let (url, body) = if args.batch == 1 {
        (format!("{}/v1/messages", args.target), message(args, first))
    } else {
        let messages: Vec<Value> = (first..first + count).map(|i| message(args, i)).collect();
        (format!("{}/v1/messages/batch", args.target), json!({ "messages": messages }))
    };
    let failed = |code: String| Outcome { latency: Duration::ZERO, accepted: 0, errors: vec![code; count as usize] };
    let response = match client.post(url).bearer_auth(&args.api_key).json(&body).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return failed("timeout".into()),
        Err(_) => return failed("connection".into()),
    };
    let status = response.status();
    let value: Value = match response.json().await {
        Ok(v) => v,
        Err(_) => return failed(format!("http_{}", status.as_u16())),
    };
    if !status.is_success() {
        return failed(
            value["error"]["code"].as_str().map_or_else(|| format!("http_{}", status.as_u16()), String::from),
        );
    }
    if args.batch == 1 {
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

pub(crate) fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn print_report(r: &Value) {
    println!("target        {}", r["target"].as_str().unwrap_or_default());
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
            "delivered     all after {} s: {} messages/s end to end",
            r["delivered_seconds"], r["delivered_per_s"]
        );
    }
}
