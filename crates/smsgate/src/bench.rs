//! `smsgate bench`: load generators for HTTP submission APIs (`http`, in [`crate::bench_http`]) and SMPP servers
//! (`smpp`, in [`crate::bench_smpp`]), and `sink`, a webhook receiver that counts what it gets and checks
//! signatures. What they share lives here: the runtime and report printing, quantiles, the progress bar, and the
//! reports of each span of a long run (`--interval`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Load an HTTP submission API: smsgate's POST /v1/messages (or /v1/messages/batch with --batch), Kannel's
    /// sendsms (--kannel) or Jasmin's /send (--jasmin).
    Http(crate::bench_http::HttpArgs),
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

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Http(args) => crate::bench_http::run(args),
        Command::Smpp(args) => crate::bench_smpp::run(args),
        Command::Sink(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
            runtime.block_on(sink(args))
        }
    }
}

/// Runs a load on a runtime of its own and prints its report: as JSON, or through `human`. `threads`: 1 runs it on
/// the calling thread alone, for a load whose tasks mostly wake each other (SMPP sessions): a multi-threaded
/// runtime spent its time waking its workers, which a load generator sharing cores with what it measures cannot
/// spare; 0 is a worker a core.
pub(crate) fn report(
    as_json: bool,
    threads: usize,
    load: impl std::future::Future<Output = anyhow::Result<Value>>,
    human: fn(&Value),
) -> anyhow::Result<()> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
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

/// Adds the submit latency fields (`submit_p50_ms`, `_p90_`, `_p99_`, `_max_`) of `latencies` to `report`, and the
/// fixed rate when there was one.
pub(crate) fn add_latencies(report: &mut Value, latencies: &mut [Duration], rate: Option<f64>) {
    latencies.sort();
    for (field, q) in
        [("submit_p50_ms", 0.50), ("submit_p90_ms", 0.90), ("submit_p99_ms", 0.99), ("submit_max_ms", 1.0)]
    {
        report[field] = json!(quantile_ms(latencies, q));
    }
    if let Some(rate) = rate {
        report["rate"] = json!(rate);
    }
}

/// The `q` quantile of `sorted`, in milliseconds (0 when empty).
pub(crate) fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).map_or(0.0, |d| round(d.as_secs_f64() * 1000.0))
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A progress bar on standard error while a load runs, drawn from a count the load keeps (so the hot path pays
/// one atomic add, not a draw); nothing is drawn when standard error is not a terminal.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Shows `done()` of `total` under `label`, four times a second, until [`Progress::finish`].
    pub(crate) fn start(label: &'static str, total: u64, done: impl Fn() -> u64 + Send + 'static) -> Progress {
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len}  {elapsed} (eta {eta})")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(label);
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_position(done());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Progress { bar, task }
    }

    pub(crate) fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

/// The task that writes [`Intervals`]' lines.
pub(crate) struct Reporter {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Writes the last span's line and stops.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// With `--interval SECS`: a JSON line for every span of that many seconds — the submits answered in it, their
/// latency, the refusals and the receipts that came — appended to `--interval-log` (standard error without one), so
/// a long run at a fixed rate shows whether it slows as it goes (`bench/soak.sh`).
pub(crate) struct Intervals {
    latencies: std::sync::Mutex<Vec<Duration>>,
    refused: std::sync::atomic::AtomicU64,
}

impl Intervals {
    /// Starts reporting every `every` from now; `receipts` counts the receipts that came so far. The run ends with
    /// [`Reporter::finish`], which writes the last span (from the last mark to the end), so that the log always
    /// covers the whole run, however it lines up with the marks.
    pub(crate) fn start(
        every: Duration,
        log: Option<std::path::PathBuf>,
        receipts: impl Fn() -> Option<u64> + Send + 'static,
    ) -> anyhow::Result<(Arc<Intervals>, Reporter)> {
        use std::io::Write;
        let mut out: Box<dyn Write + Send> = match &log {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            None => Box::new(std::io::stderr()),
        };
        let spans = Arc::new(Intervals { latencies: Default::default(), refused: Default::default() });
        let started = Instant::now();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let spans = spans.clone();
            async move {
                let (mut n, mut receipts_before) = (1u32, receipts().unwrap_or(0));
                loop {
                    let last = tokio::select! {
                        () = tokio::time::sleep_until((started + every * n).into()) => false,
                        _ = &mut stopped => true,
                    };
                    let mut line = spans.take(started.elapsed(), &mut receipts_before, receipts());
                    if last {
                        line["last"] = json!(true);
                    }
                    // A log that cannot be written loses its lines, not the run.
                    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                    if last {
                        return;
                    }
                    n += 1;
                }
            }
        });
        Ok((spans, Reporter { stop, task }))
    }

    /// A submit answered after `latency`.
    pub(crate) fn answered(&self, latency: Duration) {
        self.latencies.lock().unwrap_or_else(|e| e.into_inner()).push(latency);
    }

    /// A submit refused.
    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The span that ends at `at` (after the start) as a JSON line, and a new span begun.
    fn take(&self, at: Duration, receipts_before: &mut u64, receipts: Option<u64>) -> Value {
        let mut latencies = std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        let refused = self.refused.swap(0, std::sync::atomic::Ordering::Relaxed);
        let mut line = json!({"t": at.as_secs(), "answered": latencies.len(), "refused": refused});
        add_latencies(&mut line, &mut latencies, None);
        if let Some(now) = receipts {
            line["receipts"] = json!(now.saturating_sub(*receipts_before));
            *receipts_before = now;
        }
        line
    }
}
