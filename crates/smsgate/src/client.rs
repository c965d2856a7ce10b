//! `smsgate send` and `smsgate messages get|list`: the REST API from the command line. They read `SMSGATE_URL`
//! (default `http://127.0.0.1:8080`) and `SMSGATE_API_KEY`.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The server's URL.
    #[arg(long, env = "SMSGATE_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// The API key.
    #[arg(long, env = "SMSGATE_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The destination, in international form (+ and country code).
    #[arg(long)]
    to: String,
    /// The sender: alphanumeric (up to 11 characters), a short code or a number.
    #[arg(long)]
    from: String,
    /// When to send it, RFC 3339 (e.g. 2026-12-01T09:30:00Z).
    #[arg(long)]
    send_at: Option<String>,
    /// Seconds the message may wait before it expires.
    #[arg(long)]
    validity: Option<i64>,
    /// Your own reference, kept with the message.
    #[arg(long)]
    reference: Option<String>,
    /// Follow the journey until a final status. Exits 0 when it is delivered, 2 when it ends otherwise.
    #[arg(long)]
    wait: bool,
    /// The text.
    body: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Subcommand)]
pub enum MessagesCommand {
    /// Show one message and its journey as a timeline.
    Get {
        id: String,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// List messages, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Received messages instead of sent ones.
        #[arg(long)]
        inbound: bool,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) key: String,
    http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(c: &Connection) -> anyhow::Result<Api> {
        let key = c.api_key.clone().ok_or_else(|| anyhow!("set SMSGATE_API_KEY (or --api-key) to an API key"))?;
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().context("building the HTTP client")?;
        Ok(Api { base: c.url.trim_end_matches('/').to_string(), key, http })
    }

    pub(crate) async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach smsgate at {}", self.base))?;
        answer(&self.base, resp).await
    }
}

impl Api {
    /// A call whose success has no body (204).
    pub(crate) async fn call_empty(&self, method: reqwest::Method, path: &str) -> anyhow::Result<()> {
        let req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        let resp = req.send().await.with_context(|| format!("cannot reach smsgate at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(());
        }
        answer(&self.base, resp).await.map(|_| ())
    }
}

/// A response's JSON, or its error as one line.
pub(crate) async fn answer(base: &str, resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let v: Value = resp.json().await.with_context(|| format!("{base} answered {status} without JSON"))?;
    if !status.is_success() {
        let code = v["error"]["code"].as_str().unwrap_or("error");
        let message = v["error"]["message"].as_str().unwrap_or("");
        bail!("{code}: {message} (HTTP {})", status.as_u16());
    }
    Ok(v)
}

pub(crate) fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?.block_on(f)
}

/// Exit status of `send --wait` for a message that ended other than delivered.
pub const NOT_DELIVERED: u8 = 2;

pub fn send(args: SendArgs) -> anyhow::Result<u8> {
    let mut code = 0;
    block_on(async {
        let api = Api::new(&args.connection)?;
        let mut body = json!({"to": args.to, "from": args.from, "body": args.body});
        for (k, v) in [
            ("send_at", args.send_at.map(Value::from)),
            ("validity", args.validity.map(Value::from)),
            ("reference", args.reference.map(Value::from)),
        ] {
            if let Some(v) = v {
                body[k] = v;
            }
        }
        let m = api.call(reqwest::Method::POST, "/v1/messages", Some(body)).await?;
        let id = m["id"].as_str().ok_or_else(|| anyhow!("the answer has no id"))?.to_string();
        println!("{id}");
        if !args.wait {
            return Ok(());
        }
        let mut shown = 0;
        loop {
            let m = api.call(reqwest::Method::GET, &format!("/v1/messages/{id}"), None).await?;
            let events = m["events"].as_array().cloned().unwrap_or_default();
            for e in events.iter().skip(shown) {
                println!("{}", event_line(e));
            }
            shown = events.len();
            let status = m["status"].as_str().unwrap_or("");
            if matches!(status, "delivered" | "undelivered" | "failed" | "expired" | "canceled") {
                if status != "delivered" {
                    code = NOT_DELIVERED;
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;
    Ok(code)
}

fn event_line(e: &Value) -> String {
    format!(
        "{:<24}  {:<11}  {}",
        e["at"].as_str().unwrap_or(""),
        e["status"].as_str().unwrap_or(""),
        e["detail"].as_str().unwrap_or("")
    )
}

pub fn messages(cmd: MessagesCommand) -> anyhow::Result<()> {
    block_on(async {
        match cmd {
            MessagesCommand::Get { id, json, connection } => {
                let api = Api::new(&connection)?;
                let m = api.call(reqwest::Method::GET, &format!("/v1/messages/{id}"), None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&m)?);
                    return Ok(());
                }
                println!(
                    "{}  {} → {}  {}",
                    m["id"].as_str().unwrap_or(""),
                    m["from"].as_str().unwrap_or(""),
                    m["to"].as_str().unwrap_or(""),
                    m["status"].as_str().unwrap_or("")
                );
                println!(
                    "{:?}  ({}, {} segment(s))",
                    m["body"].as_str().unwrap_or(""),
                    m["encoding"].as_str().unwrap_or(""),
                    m["segments"]
                );
                for e in m["events"].as_array().cloned().unwrap_or_default() {
                    println!("  {}", event_line(&e));
                }
                Ok(())
            }
            MessagesCommand::List { status, to, limit, inbound, json, connection } => {
                let api = Api::new(&connection)?;
                let mut query = vec![format!("limit={limit}")];
                if let Some(s) = status {
                    query.push(format!("status={s}"));
                }
                if let Some(t) = to {
                    query.push(format!("to={}", t.replace('+', "%2B")));
                }
                let path = if inbound { "/v1/inbound" } else { "/v1/messages" };
                let v = api.call(reqwest::Method::GET, &format!("{path}?{}", query.join("&")), None).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                for m in v["data"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{}  {:<11}  {:<16}  {:<16}  {}",
                        m["id"].as_str().unwrap_or(""),
                        m["status"].as_str().unwrap_or(""),
                        m["from"].as_str().unwrap_or(""),
                        m["to"].as_str().unwrap_or(""),
                        m["created_at"].as_str().unwrap_or("")
                    );
                }
                Ok(())
            }
        }
    })
}
