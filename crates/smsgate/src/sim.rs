//! `smsgate sim`: the standalone SMSC simulator (crate `sim-smsc`) on an SMPP port, with its counters over HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use sim_smsc::{SimConfig, SimSmsc};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The SMPP address to listen on.
    #[arg(long, default_value = "127.0.0.1:2776")]
    smpp: std::net::SocketAddr,
    /// Also serve HTTP on this address: GET /stats (the counters, as JSON), GET /handsets/NUMBER/messages (the
    /// last 20 a handset received, each part on its own), and POST /inbound {"system_id", "from", "to", "text"}
    /// to send a handset's message to a bound client.
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
    /// The system_id it answers binds with.
    #[arg(long, default_value = "smsgate-sim")]
    system_id: String,
    /// Take only these binds, SYSTEM_ID:PASSWORD (repeat it); without it, any bind is taken.
    #[arg(long = "account", value_name = "SYSTEM_ID:PASSWORD")]
    accounts: Vec<String>,
    /// Milliseconds before each submit is answered.
    #[arg(long, default_value_t = 0)]
    submit_latency_ms: u64,
    /// Milliseconds from a submit to its delivery receipt.
    #[arg(long, default_value_t = 100)]
    receipt_delay_ms: u64,
    /// The share of receipts that say delivered, 0 to 1; the rest say undeliverable.
    #[arg(long, default_value_t = 1.0)]
    delivery_ratio: f64,
    /// Submits a second each session may make; more are answered ESME_RTHROTTLED.
    #[arg(long)]
    throttle: Option<u32>,
    /// Drop every bound session after each N submits taken (the clients must bind again).
    #[arg(long, value_name = "N")]
    drop_every: Option<u64>,
    /// Take SMPP over TLS on the --smpp address, with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.delivery_ratio) {
        bail!("--delivery-ratio must be 0 to 1");
    }
    let mut credentials = HashMap::new();
    for a in &args.accounts {
        let Some((id, password)) = a.split_once(':') else { bail!("--account takes SYSTEM_ID:PASSWORD, got {a:?}") };
        if id.is_empty() || id.len() > 15 || password.len() > 8 {
            bail!("--account {a:?}: a system_id is 1 to 15 characters and a password at most 8 (SMPP 3.4)");
        }
        credentials.insert(id.to_string(), password.to_string());
    }
    let config = SimConfig {
        system_id: args.system_id.clone(),
        credentials: (!credentials.is_empty()).then_some(credentials),
        submit_latency: Duration::from_millis(args.submit_latency_ms),
        receipt_delay: Duration::from_millis(args.receipt_delay_ms),
        delivery_ratio: args.delivery_ratio,
        throttle: args.throttle,
        keep_inboxes: args.http.is_some(),
        drop_every: args.drop_every.filter(|n| *n > 0),
        session: smpp_session::Config { window: 1024, concurrency: 4096, ..Default::default() },
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(serve(args, config))
}

async fn serve(args: Args, config: SimConfig) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(smpp_session::tls::acceptor(cert, key).map_err(|e| anyhow::anyhow!("{e}"))?),
        _ => None,
    };
    let listener =
        tokio::net::TcpListener::bind(args.smpp).await.with_context(|| format!("listening on {}", args.smpp))?;
    let smsc = SimSmsc::new(config);
    let stop = CancellationToken::new();
    let over = if tls.is_some() { " over TLS" } else { "" };
    println!("smsgate sim: SMPP{over} on {}", listener.local_addr()?);
    if let Some(addr) = args.http {
        let http = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        println!("smsgate sim: counters on http://{}/stats", http.local_addr()?);
        let smsc = Arc::new(smsc.clone());
        let reads = smsc.clone();
        let app = axum::Router::new()
            .route(
                "/stats",
                axum::routing::get(move || {
                    let smsc = reads.clone();
                    async move { axum::Json(stats(&smsc)) }
                }),
            )
            .route(
                "/handsets/{number}/messages",
                axum::routing::get({
                    let smsc = smsc.clone();
                    move |axum::extract::Path(number): axum::extract::Path<String>| {
                        let smsc = smsc.clone();
                        async move {
                            let data: Vec<serde_json::Value> = smsc
                                .inbox(&number)
                                .into_iter()
                                .map(|m| json!({"id": m.id, "from": m.from, "text": m.text, "at_ms": m.at}))
                                .collect();
                            axum::Json(json!({"data": data}))
                        }
                    }
                }),
            )
            .route(
                "/inbound",
                axum::routing::post(move |body: axum::Json<InboundBody>| {
                    let smsc = smsc.clone();
                    async move { inbound(&smsc, body.0).await }
                }),
            );
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(http, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
    }
    let serving = tokio::spawn({
        let (smsc, stop) = (smsc.clone(), stop.clone());
        async move {
            match tls {
                Some(tls) => smsc.serve_tls(listener, tls, stop).await,
                None => smsc.serve(listener, stop).await,
            }
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("signals")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.cancel();
    let _ = serving.await;
    println!("{}", stats(&smsc));
    Ok(())
}

/// `POST /inbound`: a handset's message to a bound client.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundBody {
    /// The client's bind that receives it.
    system_id: String,
    /// The handset's number.
    from: String,
    /// The client's number or sender.
    to: String,
    text: String,
}

async fn inbound(smsc: &SimSmsc, b: InboundBody) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    use axum::http::StatusCode;
    match smsc.inbound(&b.system_id, &b.from, &b.to, &b.text).await {
        Ok(parts) => (StatusCode::ACCEPTED, axum::Json(json!({"parts": parts}))),
        Err(e) => (StatusCode::CONFLICT, axum::Json(json!({"error": {"code": "not_delivered", "message": e}}))),
    }
}

fn stats(smsc: &SimSmsc) -> serde_json::Value {
    let c = smsc.counters();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "binds": n(&c.binds), "refused_binds": n(&c.refused_binds), "submits": n(&c.submits),
        "accepted": n(&c.accepted), "rejected": n(&c.rejected), "throttled": n(&c.throttled),
        "receipts_sent": n(&c.receipts_sent), "receipts_retried": n(&c.receipts_retried),
        "receipts_dropped": n(&c.receipts_dropped), "drops": n(&c.drops),
    })
}
