//! The server's configuration: defaults < TOML file (`--config FILE`, `SMSGATE_CONFIG`) < `SMSGATE_*`
//! environment variables < command-line flags. `smsgate config` prints the result, each value with where it came
//! from. Unknown keys and bad values are errors that name the key and its source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use smsgate_connectors::sim::VirtualCarrier;

/// Everything `serve` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where smsgate keeps its data (the SQLite database, unless `database` says otherwise).
    pub data_dir: PathBuf,
    /// The address the HTTP API listens on.
    pub http: SocketAddr,
    /// The address the SMPP server for client applications listens on.
    pub smpp: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`; empty: SQLite in the data folder.
    pub database: String,
    /// The region national numbers are read in (ISO 3166, such as US or GB); empty: international numbers only.
    pub default_region: String,
    /// This node's name in leases.
    pub node: String,
    /// How long a node's claim on a message lasts; after a crash, its messages are taken up again after this.
    pub lease_secs: u64,
    /// Threads running the server's tasks; 0: one fewer than the machine's cores (SQLite's writer has a thread of
    /// its own), at least one. With one, every task runs on that thread and wakes no other.
    pub threads: u32,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>`.
    pub metrics_token: String,
    /// The URL people reach this server's HTTP API at (such as `https://sms.example.com`): short links in texts
    /// point there unless an account set its own base. Empty: `http://` and the address the API listens on.
    pub public_url: String,
    /// Days final messages are kept (with their journeys, parts and callbacks); then they are deleted, a batch at a
    /// time, and SQLite gives the space back. 0: kept for ever. A campaign's stats keep counting its deleted texts;
    /// analytics come from rollups and keep every hour.
    pub history_days: u32,
    /// Days webhook callbacks that are done (delivered, or given up) are kept for their delivery log.
    pub callback_log_days: u32,
    /// Whether a sender ID an account asks for waits for the operator's approval (a brand's name is not the first
    /// asker's); the admin key's registrations are in force at once either way.
    pub sender_ids_need_approval: bool,
    /// `[smpp_server]`: how the SMPP server treats its sessions.
    #[serde(default)]
    pub smpp_server: SmppServerConfig,
    /// `[webhooks]`: where webhook requests may go.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// `[http_server]`: the HTTP server's limits.
    #[serde(default)]
    pub http_server: HttpServerConfig,
    /// The simulated carrier network.
    pub sim: SimConfig,
    /// `[[connectors]]`: each `{name, kind, ...settings}` as `POST /v1/connectors` takes it, created at start when
    /// the database has no connector of that name; from then on it is managed over the API.
    #[serde(default)]
    pub connectors: Vec<serde_json::Map<String, serde_json::Value>>,
    /// `[[routes]]`: each as `POST /v1/routes` takes it, created at start when the database has no route of that
    /// name.
    #[serde(default)]
    pub routes: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// `[http_server]`: the HTTP server's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Seconds a client has to send a request's headers; also the longest a connection waits idle.
    pub header_timeout_secs: u64,
    /// HTTP connections open at once; past it, new ones are closed (and the log says so).
    pub max_connections: u32,
    /// Seconds requests under way may take to finish when the server stops; then their connections are closed.
    pub shutdown_grace_secs: u64,
    /// An address to serve HTTPS on, with `tls_cert` and `tls_key` (PEM; read again when they change or on
    /// SIGHUP); empty: none.
    pub tls_listen: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Whether plain HTTP is served on `http`; false needs `tls_listen`.
    pub plain: bool,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        let d = smsgate_api::server::ServerSettings::default();
        HttpServerConfig {
            header_timeout_secs: d.header_timeout.as_secs(),
            max_connections: u32::try_from(d.max_connections).unwrap_or(u32::MAX),
            shutdown_grace_secs: d.shutdown_grace.as_secs(),
            tls_listen: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            plain: true,
        }
    }
}

impl HttpServerConfig {
    /// The API server's settings.
    pub fn settings(&self) -> smsgate_api::server::ServerSettings {
        smsgate_api::server::ServerSettings {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            max_connections: self.max_connections as usize,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.header_timeout_secs == 0 || self.max_connections == 0 {
            return Err(anyhow!(
                "configuration: http_server.header_timeout_secs and max_connections must be at least 1"
            ));
        }
        check_tls("http_server", &self.tls_listen, &self.tls_cert, &self.tls_key, self.plain)
    }
}

/// A TLS listener's settings make sense: an address, a certificate and a key together; plain off only with TLS on.
fn check_tls(
    table: &str,
    listen: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    plain: bool,
) -> anyhow::Result<()> {
    if !listen.is_empty() {
        listen
            .parse::<SocketAddr>()
            .map_err(|e| anyhow!("configuration: {table}.tls_listen {listen:?} is not an address: {e}"))?;
        if cert.as_os_str().is_empty() || key.as_os_str().is_empty() {
            return Err(anyhow!("configuration: {table}.tls_listen needs tls_cert and tls_key (PEM files)"));
        }
    }
    if !plain && listen.is_empty() {
        return Err(anyhow!("configuration: {table}.plain = false needs tls_listen: nothing would be served"));
    }
    Ok(())
}

/// `[webhooks]`: where the server's webhook requests may go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Private ranges webhooks may reach after all (addresses or CIDR ranges, such as `127.0.0.1/32` for a
    /// receiver on the same host); every public address is allowed, no private one unless named here. Also
    /// `SMSGATE_WEBHOOKS_ALLOW_PRIVATE`, comma-separated.
    pub allow_private: Vec<String>,
}

impl WebhooksConfig {
    /// Where webhooks may go.
    pub fn destinations(&self) -> anyhow::Result<smsgate_core::netguard::Destinations> {
        let ranges = smsgate_core::access::IpRanges::parse(&self.allow_private)
            .map_err(|e| anyhow!("configuration: webhooks.allow_private: {e}"))?;
        Ok(smsgate_core::netguard::Destinations::new(ranges))
    }
}

/// `[smpp_server]`: the SMPP server's sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmppServerConfig {
    /// A client's requests handled at once per session; more wait unread (TCP pushes back).
    pub window: u32,
    /// Our deliver_sm (receipts, inbound messages) waiting for the client's answer at once per session.
    pub deliver_window: u32,
    /// Seconds without a PDU from the client before we send enquire_link.
    pub enquire_link_secs: u64,
    /// Seconds without a PDU from the client (not even an answer to our enquire_link) before the session ends.
    pub idle_secs: u64,
    /// Seconds a deliver_sm waits for the client's answer.
    pub response_timeout_secs: u64,
    /// Seconds the parts of a concatenated submit wait for the rest of their set.
    pub parts_wait_secs: u64,
    /// A second address taking SMPP over TLS, such as `0.0.0.0:3550`; empty: none.
    pub tls_listen: String,
    /// The TLS certificate chain (PEM) and its private key (PEM), for `tls_listen` (read again when they change or
    /// on SIGHUP).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Whether plain SMPP is served on `smpp`; false needs `tls_listen`.
    pub plain: bool,
}

impl Default for SmppServerConfig {
    fn default() -> Self {
        SmppServerConfig {
            window: 256,
            deliver_window: 64,
            enquire_link_secs: 30,
            idle_secs: 90,
            response_timeout_secs: 10,
            parts_wait_secs: 60,
            tls_listen: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            plain: true,
        }
    }
}

impl SmppServerConfig {
    fn check(&self) -> anyhow::Result<()> {
        let positive = [
            ("window", self.window as u64),
            ("deliver_window", self.deliver_window as u64),
            ("enquire_link_secs", self.enquire_link_secs),
            ("idle_secs", self.idle_secs),
            ("response_timeout_secs", self.response_timeout_secs),
            ("parts_wait_secs", self.parts_wait_secs),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(anyhow!("configuration: smpp_server.{key} must be at least 1"));
        }
        check_tls("smpp_server", &self.tls_listen, &self.tls_cert, &self.tls_key, self.plain)?;
        if self.idle_secs <= self.enquire_link_secs {
            return Err(anyhow!(
                "configuration: smpp_server.idle_secs must be longer than enquire_link_secs, or live idle clients are dropped"
            ));
        }
        Ok(())
    }

    /// The server's settings, for this node.
    pub fn settings(&self, node: &str) -> smpp_server::Settings {
        smpp_server::Settings {
            session: smpp_session::Config {
                window: self.deliver_window as usize,
                concurrency: self.window as usize,
                enquire_link: Duration::from_secs(self.enquire_link_secs),
                dead_after: Duration::from_secs(self.idle_secs),
                response_timeout: Duration::from_secs(self.response_timeout_secs),
                ..smpp_session::Config::default()
            },
            parts_wait: Duration::from_secs(self.parts_wait_secs),
            parts_per_account: smpp_server::PARTS_PER_ACCOUNT,
            deliver_per_account: smpp_server::deliver::PER_ACCOUNT,
            node: node.to_string(),
        }
    }
}

/// `[sim]`: the virtual carriers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// `[[sim.carriers]]`; a catch-all carrier with the defaults is always there.
    pub carriers: Vec<CarrierConfig>,
}

/// One `[[sim.carriers]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    pub name: String,
    /// Numbers starting with this (E.164, with `+`) go to this carrier.
    pub prefix: String,
    #[serde(default = "default_submit_latency")]
    pub submit_latency_ms: u64,
    #[serde(default = "default_receipt_delay")]
    pub receipt_delay_ms: u64,
    /// 0.0 to 1.0.
    #[serde(default = "default_ratio")]
    pub delivery_ratio: f64,
}

fn default_submit_latency() -> u64 {
    2
}

fn default_receipt_delay() -> u64 {
    100
}

fn default_ratio() -> f64 {
    1.0
}

impl Config {
    /// The threads the server's tasks run on: `threads`, or one fewer than the cores (at least one).
    pub fn runtime_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).max(1),
            n => n as usize,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("smsgate-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            smpp: SocketAddr::from(([127, 0, 0, 1], 2775)),
            webhooks: WebhooksConfig::default(),
            http_server: HttpServerConfig::default(),
            database: String::new(),
            default_region: String::new(),
            node: "node-1".into(),
            lease_secs: 60,
            history_days: 90,
            callback_log_days: 3,
            threads: 0,
            sender_ids_need_approval: true,
            metrics_token: String::new(),
            public_url: String::new(),
            smpp_server: SmppServerConfig::default(),
            sim: SimConfig::default(),
            connectors: Vec::new(),
            routes: Vec::new(),
        }
    }
}

/// The flags `serve` and `config` share; each overrides the file and the environment.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct Flags {
    /// A TOML configuration file (also SMSGATE_CONFIG).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where smsgate keeps its data [env: SMSGATE_DATA_DIR] [default: smsgate-data].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The address the HTTP API listens on [env: SMSGATE_HTTP] [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The address the SMPP server listens on [env: SMSGATE_SMPP] [default: 127.0.0.1:2775].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smpp: Option<String>,
    /// sqlite://PATH or postgres://USER@HOST:PORT/DB [env: SMSGATE_DATABASE] [default: SQLite in the data folder].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The region national numbers are read in, such as US or GB [env: SMSGATE_DEFAULT_REGION].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_region: Option<String>,
    /// This node's name in leases [env: SMSGATE_NODE] [default: node-1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Seconds a node's claim on a message lasts [env: SMSGATE_LEASE_SECS] [default: 60].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Threads running the server's tasks [env: SMSGATE_THREADS] [default: 0, one fewer than the cores].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Whether sender IDs accounts ask for wait for the admin's approval [env: SMSGATE_SENDER_IDS_NEED_APPROVAL]
    /// [default: true].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_ids_need_approval: Option<bool>,
    /// A token /metrics then requires as `Authorization: Bearer <token>` [env: SMSGATE_METRICS_TOKEN].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// The URL people reach the HTTP API at, for short links [env: SMSGATE_PUBLIC_URL] [default: http:// and the
    /// listening address].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// The environment variables read, without the `SMSGATE_` prefix.
const ENV_KEYS: [&str; 13] = [
    "metrics_token",
    "history_days",
    "callback_log_days",
    "public_url",
    "data_dir",
    "http",
    "smpp",
    "database",
    "default_region",
    "node",
    "lease_secs",
    "threads",
    "sender_ids_need_approval",
];

impl Flags {
    fn figment(&self) -> anyhow::Result<Figment> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        let file = self.config.clone().or_else(|| std::env::var_os("SMSGATE_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(anyhow!("configuration file {} does not exist", path.display()));
            }
            f = f.merge(Toml::file_exact(path));
        }
        Ok(f.merge(Env::prefixed("SMSGATE_").only(&ENV_KEYS)).merge(Serialized::defaults(self)))
    }

    /// The effective configuration.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config: Config = self.figment()?.extract().map_err(|e| anyhow!("configuration: {e}"))?;
        if let Ok(list) = std::env::var("SMSGATE_WEBHOOKS_ALLOW_PRIVATE") {
            config.webhooks.allow_private =
                list.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
        }
        config.webhooks.destinations()?;
        if !config.public_url.is_empty() {
            smsgate_services::links::check_base(&config.public_url)
                .map_err(|e| anyhow!("configuration: public_url: {e}"))?;
        }
        if config.lease_secs == 0 {
            return Err(anyhow!("configuration: lease_secs must be at least 1"));
        }
        if config.callback_log_days == 0 {
            return Err(anyhow!("configuration: callback_log_days must be at least 1"));
        }
        if config.threads > 1024 {
            return Err(anyhow!("configuration: threads must be 0 (one fewer than the cores) to 1024"));
        }
        config.smpp_server.check()?;
        config.http_server.check()?;
        for c in &config.sim.carriers {
            if !c.prefix.starts_with('+') || !(0.0..=1.0).contains(&c.delivery_ratio) {
                return Err(anyhow!(
                    "configuration: sim carrier {:?} needs a prefix starting with + and a delivery_ratio from 0.0 to 1.0",
                    c.name
                ));
            }
        }
        Ok(config)
    }

    /// The effective configuration as annotated TOML: each value with where it came from.
    pub fn describe(&self) -> anyhow::Result<String> {
        let figment = self.figment()?;
        let config = self.load()?;
        let value = toml_value(&config)?;
        let mut out = String::new();
        let figment::value::Value::Dict(_, dict) = value else {
            return Err(anyhow!("the configuration is not a table"));
        };
        for (key, v) in &dict {
            if matches!(key.as_str(), "sim" | "connectors" | "routes" | "smpp_server" | "webhooks" | "http_server") {
                continue;
            }
            let meta = figment.find_metadata(key);
            let source = match meta.map(|m| m.name.to_string()) {
                Some(name) if name.contains("environment") => format!("environment: SMSGATE_{}", key.to_uppercase()),
                Some(name) if name.contains("Flags") => format!("command line: --{}", key.replace('_', "-")),
                Some(name) if name.contains("TOML") => match meta.and_then(|m| m.source.as_ref()) {
                    Some(src) => format!("file {src}"),
                    None => name,
                },
                _ => "default".to_string(),
            };
            let value = match key.as_str() {
                // Secrets are never printed: a token as stars, a password in a URL as stars.
                "metrics_token" if !config.metrics_token.is_empty() => "\"********\"".to_string(),
                "database" => format!("{:?}", redact_url(&config.database)),
                _ => toml_literal(v),
            };
            out.push_str(&format!("{key} = {value}  # {source}\n"));
        }
        let smpp = &config.smpp_server;
        out.push_str(&format!(
            "\n[smpp_server]\nwindow = {}\ndeliver_window = {}\nenquire_link_secs = {}\nidle_secs = {}\nresponse_timeout_secs = {}\nparts_wait_secs = {}\n",
            smpp.window, smpp.deliver_window, smpp.enquire_link_secs, smpp.idle_secs, smpp.response_timeout_secs,
            smpp.parts_wait_secs
        ));
        if !smpp.tls_listen.is_empty() {
            out.push_str(&format!(
                "tls_listen = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
                smpp.tls_listen,
                smpp.tls_cert.display().to_string(),
                smpp.tls_key.display().to_string()
            ));
        }
        let source = match std::env::var_os("SMSGATE_WEBHOOKS_ALLOW_PRIVATE") {
            Some(_) => "environment: SMSGATE_WEBHOOKS_ALLOW_PRIVATE",
            None if config.webhooks.allow_private.is_empty() => "default: public addresses only",
            None => "file",
        };
        out.push_str(&format!("\n[webhooks]\nallow_private = {:?}  # {source}\n", config.webhooks.allow_private));
        let h = &config.http_server;
        out.push_str(&format!(
            "\n[http_server]\nheader_timeout_secs = {}\nmax_connections = {}\nshutdown_grace_secs = {}\nplain = {}\n",
            h.header_timeout_secs, h.max_connections, h.shutdown_grace_secs, h.plain
        ));
        if !h.tls_listen.is_empty() {
            out.push_str(&format!(
                "tls_listen = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
                h.tls_listen,
                h.tls_cert.display().to_string(),
                h.tls_key.display().to_string()
            ));
        }
        for c in &config.sim.carriers {
            out.push_str(&format!(
                "\n[[sim.carriers]]\nname = {:?}\nprefix = {:?}\nsubmit_latency_ms = {}\nreceipt_delay_ms = {}\ndelivery_ratio = {}\n",
                c.name, c.prefix, c.submit_latency_ms, c.receipt_delay_ms, c.delivery_ratio
            ));
        }
        if config.sim.carriers.is_empty() {
            out.push_str("\n# [[sim.carriers]]: none configured; one catch-all virtual carrier with the defaults\n");
        }
        for (what, items) in [("connectors", &config.connectors), ("routes", &config.routes)] {
            let names: Vec<String> =
                items.iter().map(|c| c.get("name").map_or_else(|| "?".into(), |n| n.to_string())).collect();
            out.push_str(&format!(
                "\n# [[{what}]]: {} (created at start when the database has none of the name)\n",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ));
        }
        Ok(out)
    }
}

/// A URL with the password of its user information (`user:password@`) replaced by stars.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s && url[s + 3..at].contains(':') => {
            let user_end = url[s + 3..at].find(':').map_or(at, |i| s + 3 + i);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn toml_value(config: &Config) -> anyhow::Result<figment::value::Value> {
    Figment::from(Serialized::defaults(config))
        .extract::<figment::value::Value>()
        .context("describing the configuration")
}

fn toml_literal(v: &figment::value::Value) -> String {
    use figment::value::Value;
    match v {
        Value::String(_, s) => format!("{s:?}"),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => match (n.to_u128(), n.to_i128(), n.to_f64()) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => format!("{f:?}"),
            (None, None, None) => String::new(),
        },
        other => format!("{other:?}"),
    }
}

impl CarrierConfig {
    pub fn to_carrier(&self) -> VirtualCarrier {
        VirtualCarrier {
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            submit_latency: Duration::from_millis(self.submit_latency_ms),
            receipt_delay: Duration::from_millis(self.receipt_delay_ms),
            delivery_ratio: self.delivery_ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_prints_no_secret() {
        let flags = Flags {
            database: Some("postgres://app:hunter22@db.example/smsgate".into()),
            metrics_token: Some("scrape-me-please".into()),
            ..Flags::default()
        };
        let text = flags.describe().unwrap();
        assert!(!text.contains("hunter22") && !text.contains("scrape-me-please"), "{text}");
        assert!(
            text.contains("postgres://app:***@db.example/smsgate") && text.contains("metrics_token = \"********\"")
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u:p@ss@h/db?sslmode=require"), "postgres://u:***@h/db?sslmode=require");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    use super::*;

    /// Flags naming a configuration file of `toml`, removed when they are dropped.
    struct TomlFile(Flags);

    impl std::ops::Deref for TomlFile {
        type Target = Flags;
        fn deref(&self) -> &Flags {
            &self.0
        }
    }

    impl Drop for TomlFile {
        fn drop(&mut self) {
            if let Some(path) = &self.0.config {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn with_file(toml: &str) -> TomlFile {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("smsgate-config-{}-{n}.toml", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, toml).unwrap();
        TomlFile(Flags { config: Some(path), ..Flags::default() })
    }

    #[test]
    fn defaults_file_and_flags() {
        let flags =
            with_file("http = \"127.0.0.1:9000\"\nnode = \"a\"\n[[sim.carriers]]\nname = \"x\"\nprefix = \"+44\"\n");
        let c = flags.load().unwrap();
        assert_eq!(
            (c.http.port(), c.node.as_str(), c.data_dir.as_path()),
            (9000, "a", std::path::Path::new("smsgate-data"))
        );
        assert_eq!(c.sim.carriers[0].receipt_delay_ms, 100);
        let flags = Flags { node: Some("b".into()), ..flags.0.clone() };
        assert_eq!(flags.load().unwrap().node, "b");
        let text = flags.describe().unwrap();
        assert!(text.contains("node = \"b\"") && text.contains("http = \"127.0.0.1:9000\""), "{text}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = with_file("htp = \"x\"\n").load().unwrap_err().to_string();
        assert!(e.contains("htp"), "{e}");
        let e = with_file("http = \"not an address\"\n").load().unwrap_err().to_string();
        assert!(e.contains("http"), "{e}");
        let e = with_file("[[sim.carriers]]\nname = \"x\"\nprefix = \"44\"\n").load().unwrap_err().to_string();
        assert!(e.contains("prefix"), "{e}");
        let e = Flags { config: Some("/nonexistent.toml".into()), ..Flags::default() }.load().unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = with_file("[[routes]]\nname = 3\n[[routes]]\nname = \"x\"\n").load().map(|c| c.routes.len());
        assert_eq!(e.unwrap(), 2, "routes are checked when they are created");
        let e = with_file("connectors = 3\n").load().unwrap_err().to_string();
        assert!(e.contains("connectors"), "{e}");
        let e = with_file("[smpp_server]\nwindw = 3\n").load().unwrap_err().to_string();
        assert!(e.contains("windw"), "{e}");
        let e = with_file("[smpp_server]\nidle_secs = 20\n").load().unwrap_err().to_string();
        assert!(e.contains("idle_secs"), "{e}");
        let e = with_file("[smpp_server]\nwindow = 0\n").load().unwrap_err().to_string();
        assert!(e.contains("smpp_server.window"), "{e}");
        let e = with_file("[smpp_server]\ntls_listen = \"127.0.0.1:3550\"\n").load().unwrap_err().to_string();
        assert!(e.contains("tls_cert"), "{e}");
    }

    #[test]
    fn threads_and_numbers() {
        let flags = with_file("threads = 3\n");
        assert_eq!(flags.load().unwrap().runtime_threads(), 3);
        let text = flags.describe().unwrap();
        assert!(text.contains("threads = 3  # file") && text.contains("lease_secs = 60  # default"), "{text}");
        let auto = Flags::default().load().unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(auto.runtime_threads(), cores.saturating_sub(1).max(1));
        let e = with_file("threads = 5000\n").load().unwrap_err().to_string();
        assert!(e.contains("threads"), "{e}");
    }

    #[test]
    fn smpp_server_settings() {
        let flags = with_file("[smpp_server]\nwindow = 8\nidle_secs = 300\nparts_wait_secs = 5\n");
        let c = flags.load().unwrap();
        let s = c.smpp_server.settings("n2");
        assert_eq!((s.session.concurrency, s.session.window, s.node.as_str()), (8, 64, "n2"));
        assert_eq!((s.session.dead_after.as_secs(), s.parts_wait.as_secs()), (300, 5));
        assert!(flags.describe().unwrap().contains("[smpp_server]\nwindow = 8\n"));
    }
}
