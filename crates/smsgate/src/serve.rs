//! `smsgate serve`: the server. With no arguments: data in `./smsgate-data` (SQLite inside), HTTP on
//! `127.0.0.1:8080`, every message to the built-in simulated network. The first start creates the admin account
//! and prints its API key once (or takes it from `SMSGATE_ADMIN_KEY`).

use std::sync::Arc;

use anyhow::{Context, bail};
use smsgate_connectors::Kit;
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::admission::Policy;
use smsgate_engine::{Config as EngineConfig, Engine, Registry};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Flags};

pub fn run(flags: Flags) -> anyhow::Result<()> {
    let config = flags.load()?;
    // One thread: tokio's single-threaded runtime, whose tasks wake each other without waking another thread. On
    // this project's 2-core machine, sharing the cores with the SQLite writer, it carried 17 % more SMPP traffic
    // end to end than two workers (BENCHMARKS.md).
    let mut builder = match config.runtime_threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = builder.enable_all().build().context("starting tokio")?;
    runtime.block_on(serve(config))
}

async fn serve(args: Config) -> anyhow::Result<()> {
    let default_region =
        match args.default_region.as_str() {
            "" => None,
            r => Some(r.to_ascii_uppercase().parse::<phonenumber::country::Id>().map_err(|_| {
                anyhow::anyhow!("default_region {r:?} is not an ISO 3166 region code such as US or GB")
            })?),
        };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data folder {}", args.data_dir.display()))?;
    let database = match args.database.as_str() {
        "" => format!("sqlite://{}", args.data_dir.join("smsgate.db").display()),
        url => url.to_string(),
    };
    // Signals are caught from here on, so a SIGTERM during start-up is a clean stop too.
    let signals = Signals::new()?;
    let store = smsgate_store::open(&database, 8).await.with_context(|| format!("opening {database}"))?;
    tokio::task::spawn_blocking(smsgate_core::admission::load_metadata).await.context("loading number metadata")?;

    let (events_tx, events_rx) = mpsc::channel(10_000);
    let carriers = args.sim.carriers.iter().map(|c| c.to_carrier()).collect();
    let sim_log = args.data_dir.join("sim.log");
    let sim = Arc::new(
        SimNetwork::with_log(carriers, events_tx, &sim_log)
            .with_context(|| format!("opening the simulated network's log {}", sim_log.display()))?,
    );
    let secret = server_secret(&args.data_dir)?;
    let engine_config = EngineConfig {
        node: args.node.clone(),
        consent_key: secret.clone(),
        lease: std::time::Duration::from_secs(args.lease_secs),
        history: (args.history_days > 0).then(|| std::time::Duration::from_secs(u64::from(args.history_days) * 86_400)),
        callback_log: std::time::Duration::from_secs(u64::from(args.callback_log_days) * 86_400),
        ..EngineConfig::default()
    };
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(Kit::new(sim.clone()))), engine_config);
    let shutdown = CancellationToken::new();
    let destinations = args.webhooks.destinations()?;
    // Connector passwords and webhook secrets are sealed under a key from the same secret.
    smsgate_store::seal::install(&secret);
    let admin = smsgate_services::Admin::new(store.clone(), engine.clone())
        .key_secret(&secret)
        .approve_sender_ids(args.sender_ids_need_approval)
        .webhook_destinations(destinations.clone());
    let admin_key = ensure_admin(&admin).await?;
    // The zero-config connector and route, then those the config file adds (when the database lacks them).
    let created = admin
        .seed(args.connectors.clone(), args.routes.clone())
        .await
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    for c in created {
        println!("smsgate: created {c} from the configuration");
    }
    let engine_task = tokio::spawn(engine.clone().run(events_rx, shutdown.clone()));
    let deliverer =
        smsgate_api::webhooks::Deliverer::new(store.clone(), &args.node, engine.clock(), destinations.clone());
    let deliverer_task = tokio::spawn(deliverer.run(shutdown.clone()));

    let policy = Policy { default_region, callbacks: destinations, ..Policy::default() };
    let metrics = install_metrics()?;
    let upkeep_task = tokio::spawn(metrics_upkeep(metrics.clone(), shutdown.clone()));
    let ingress = smsgate_engine::ingress::Ingress::spawn(engine.clone(), store.clone(), Arc::new(policy));
    let smpp_settings = args.smpp_server.settings(&args.node);
    let messages = smsgate_services::Messages::new(ingress, store.clone());
    let smpp = smpp_server::SmppServer::new(store.clone(), messages.clone(), admin.clone(), smpp_settings);
    let imports = args.data_dir.join("imports");
    let contacts = smsgate_services::Contacts::new(messages.clone(), store.clone())
        .import_dir(imports.clone())
        .with_context(|| format!("making the imports folder {}", imports.display()))?;
    match contacts.resume_imports().await {
        Ok(0) => {}
        Ok(n) => println!("smsgate: resuming {n} contact import(s)"),
        Err(e) => eprintln!("smsgate: resuming contact imports failed: {e}"),
    }
    let shown = crate::config::redact_url(&database);
    let listener = match args.http_server.plain {
        true => Some(bind(&args.http.to_string()).await?),
        false => None,
    };
    let mut base = None;
    if let Some(l) = &listener {
        let addr = l.local_addr().context("reading the bound address")?;
        println!("smsgate: listening on http://{addr} (database {shown})");
        base = Some(format!("http://{addr}"));
    }
    // Certificates are read again when their files change, or at SIGHUP.
    let mut certificates = Vec::new();
    let https = match args.http_server.tls_listen.as_str() {
        "" => None,
        address => {
            let pair = smpp_session::tls::Reloading::load(&args.http_server.tls_cert, &args.http_server.tls_key)
                .map_err(|e| anyhow::anyhow!("HTTPS: {e}"))?;
            let l = bind(address).await?;
            let addr = l.local_addr().context("reading the bound address")?;
            println!("smsgate: listening on https://{addr} (database {shown})");
            base = base.or(Some(format!("https://{addr}")));
            let acceptor = pair.acceptor();
            certificates.push(pair);
            Some((l, acceptor))
        }
    };
    // Short links point at the public URL given, else at the address the API answers on.
    let public_url = match args.public_url.as_str() {
        "" => base.clone().unwrap_or_else(|| format!("http://{}", args.http)),
        url => url.to_string(),
    };
    let links = smsgate_services::links::Links::new(store.clone(), &public_url);
    let templates = smsgate_services::Templates::new(contacts.clone(), links.clone(), store.clone());
    let campaigns = smsgate_services::Campaigns::new(contacts.clone(), links.clone(), store.clone(), args.node.clone());
    let campaigns_task = tokio::spawn(campaigns.clone().run(shutdown.clone()));
    let automations =
        smsgate_services::Automations::new(contacts.clone(), links.clone(), store.clone(), args.node.clone());
    let automations_task = tokio::spawn(automations.clone().run(shutdown.clone()));
    let conversations = smsgate_services::Conversations::new(messages.clone(), store.clone());
    let analytics = smsgate_services::Analytics::new(store.clone(), engine.clone().clock());
    let analytics_task = tokio::spawn(analytics.clone().run(shutdown.clone()));
    let users = smsgate_services::Users::new(admin.clone());
    let users_task = tokio::spawn(users.clone().run(shutdown.clone()));
    let state = smsgate_api::AppState {
        messages,
        admin,
        users,
        templates,
        campaigns,
        automations,
        conversations,
        analytics,
        links,
        contacts,
        engine,
        sim: Some(sim),
        metrics: Some(metrics),
        keys: smsgate_api::KeyCache::default(),
        metrics_token: Some(args.metrics_token.as_str()).filter(|t| !t.is_empty()).map(Arc::from),
    };
    let smpp_listener = match args.smpp_server.plain {
        true => Some(bind(&args.smpp.to_string()).await?),
        false => None,
    };
    if let Some(l) = &smpp_listener {
        println!("smsgate: SMPP on {}", l.local_addr().context("reading the bound address")?);
    }
    let smpp_tls = match args.smpp_server.tls_listen.as_str() {
        "" => None,
        address => {
            let pair = smpp_session::tls::Reloading::load(&args.smpp_server.tls_cert, &args.smpp_server.tls_key)
                .map_err(|e| anyhow::anyhow!("SMPP over TLS: {e}"))?;
            let listener = bind(address).await?;
            println!("smsgate: SMPP over TLS on {}", listener.local_addr().context("reading the bound address")?);
            let acceptor = pair.acceptor();
            certificates.push(pair);
            Some((listener, acceptor))
        }
    };
    let reloader = tokio::spawn(reload_certificates(certificates, shutdown.clone()));
    let smpp_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { smpp.serve_with_tls(smpp_listener, smpp_tls, shutdown).await }
    });
    if let Some(key) = admin_key {
        println!("smsgate: admin API key (shown once; keep it): {key}");
    }
    let base = base.unwrap_or_default();
    println!("smsgate: dashboard at {base}/ (the first user: \"Create the first user with the admin key\" there)");
    println!(
        "smsgate: try  curl -s {base}/v1/messages -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' -d '{{\"to\": \"+447700900123\", \"from\": \"smsgate\", \"body\": \"Hello\"}}'"
    );
    let http_shutdown = CancellationToken::new();
    let router = smsgate_api::router(state);
    let settings = args.http_server.settings();
    let mut http = Vec::new();
    if let Some(l) = listener {
        let serving = smsgate_api::server::serve(l, router.clone(), settings, None, http_shutdown.clone());
        http.push(tokio::spawn(serving));
    }
    if let Some((l, acceptor)) = https {
        let serving = smsgate_api::server::serve(l, router, settings, Some(acceptor), http_shutdown.clone());
        http.push(tokio::spawn(serving));
    }
    signals.wait().await;
    http_shutdown.cancel();
    for task in http {
        task.await.context("the HTTP server stopped abnormally")?;
    }
    shutdown.cancel();
    reloader.await.context("the certificate reloader stopped abnormally")?;
    engine_task.await.context("the engine stopped abnormally")?;
    deliverer_task.await.context("the webhook deliverer stopped abnormally")?;
    smpp_task.await.context("the SMPP server stopped abnormally")?;
    upkeep_task.await.context("the metrics upkeep stopped abnormally")?;
    campaigns_task.await.context("the campaign worker stopped abnormally")?;
    automations_task.await.context("the automation worker stopped abnormally")?;
    analytics_task.await.context("the rollups' worker stopped abnormally")?;
    users_task.await.context("the sessions' sweeper stopped abnormally")?;
    store.close().await;
    println!("smsgate: stopped");
    Ok(())
}

/// Installs the process-wide metrics recorder, with latency buckets from 5 ms to 5 minutes for a message's
/// journey and from half a millisecond to 5 seconds for HTTP and SMPP requests and SQLite's writer.
fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    const BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
    const HTTP_BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .context("metrics buckets")?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(smsgate_api::metric::HTTP_DURATION.to_string()),
            &HTTP_BUCKETS,
        )
        .context("HTTP latency buckets")?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Prefix("smsgate_sqlite_".to_string()),
            &HTTP_BUCKETS,
        )
        .context("SQLite latency buckets")?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(smpp_server::metric::REQUEST_SECONDS.to_string()),
            &HTTP_BUCKETS,
        )
        .context("SMPP latency buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// How often the recorder's histograms are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the samples histograms have taken since the last time into their buckets, every [`METRICS_UPKEEP`],
/// until `shutdown`. The recorder keeps every sample (24 bytes with its timestamp) until then: without this, a
/// server nobody scraped kept about 100 bytes a message it sent (the HTTP request, the submission, the time to
/// `sent` and to `delivered`), 100 MB a million messages.
async fn metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(METRICS_UPKEEP);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// Creates the admin account on first start, with the key `SMSGATE_ADMIN_KEY` names if set. Returns a generated
/// key to print, once.
async fn ensure_admin(admin: &smsgate_services::Admin) -> anyhow::Result<Option<String>> {
    let from_env = std::env::var("SMSGATE_ADMIN_KEY").ok().filter(|k| !k.is_empty());
    if let Some(key) = &from_env
        && key.len() < 16
    {
        bail!("SMSGATE_ADMIN_KEY must be at least 16 characters");
    }
    match admin.bootstrap(from_env.as_deref()).await {
        Ok(new) => Ok(new.map(|n| n.key)),
        Err(smsgate_services::ServiceError::Conflict { .. }) => {
            bail!("SMSGATE_ADMIN_KEY is already the key of another account")
        }
        Err(e) => Err(e).context("creating the admin account"),
    }
}

/// The server's secret (API keys are hashed with it): `SMSGATE_SECRET_KEY` (64 hex digits or more), else
/// `secret.key` in the data folder, made the first time (readable by its owner only). Nodes sharing a database
/// need the same one.
fn server_secret(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let parse = |text: &str, from: &str| {
        hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() >= 32)
            .ok_or_else(|| anyhow::anyhow!("{from} must be at least 64 hex digits (32 random bytes)"))
    };
    if let Ok(text) = std::env::var("SMSGATE_SECRET_KEY") {
        return parse(&text, "SMSGATE_SECRET_KEY");
    }
    let path = data_dir.join("secret.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Vec::with_capacity(32);
            bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path).with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(&bytes)).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(bytes)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Listens on an address, saying which when it cannot.
async fn bind(address: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))
}

/// How often certificate files are looked at for a change.
const CERTIFICATE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads certificates again when their files change (looked at every few seconds) and at every SIGHUP, until
/// `shutdown`. A pair that does not load is logged and the one in force stays.
async fn reload_certificates(pairs: Vec<Arc<smpp_session::tls::Reloading>>, shutdown: CancellationToken) {
    if pairs.is_empty() {
        return;
    }
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let force = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CERTIFICATE_CHECK) => false,
            () = hup => true,
        };
        for pair in &pairs {
            match pair.reload(force) {
                Ok(true) => tracing::info!("a TLS certificate was read again"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "a changed TLS certificate could not be read; the old one stays"),
            }
        }
    }
}

/// SIGINT and SIGTERM, registered when created.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("catching SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("catching SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
