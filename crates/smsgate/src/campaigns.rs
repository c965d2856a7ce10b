//! `smsgate campaigns`: campaigns on a running server — list them, show one with its numbers, start, pause, resume
//! or cancel one — over the REST API.

use clap::Subcommand;
use serde_json::Value;

use crate::client::{Api, Connection, block_on};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the account's campaigns, oldest first.
    List {
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a campaign: its state and live numbers (audience, skipped by why, queued, sent, delivered, ...).
    Get(One),
    /// Start a draft (now, or armed for its schedule), or run a completed one again.
    Start(One),
    /// Pause a running campaign: nothing more is sent until it is resumed.
    Pause(One),
    /// Resume a paused campaign.
    Resume(One),
    /// Cancel a campaign: what was sent stays sent, the rest is not sent.
    Cancel(One),
}

/// One campaign, by id.
#[derive(Debug, clap::Args)]
pub struct One {
    id: String,
    /// Print the API's JSON instead.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("").to_string()
}

fn number(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// A campaign as lines for people.
fn show(c: &Value) {
    println!("{}  {}  {}", text(c, "id"), text(c, "state"), text(c, "name"));
    if let Some(at) = c["next_run_at"].as_str() {
        println!("  next run   {at}");
    }
    if c["error"].is_object() {
        println!("  stopped    {}: {}", text(&c["error"], "code"), text(&c["error"], "message"));
    }
    let s = &c["stats"];
    if !s.is_object() {
        return;
    }
    println!("  audience   {}  (pending {})", number(s, "audience"), number(s, "pending"));
    let skipped: Vec<String> =
        s["skipped"].as_object().map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect()).unwrap_or_default();
    if !skipped.is_empty() {
        println!("  skipped    {}", skipped.join(", "));
    }
    println!(
        "  texts      queued {}, waiting {}, sent {}, delivered {}, undelivered {}, failed {}, canceled {}",
        number(s, "queued"),
        number(s, "waiting"),
        number(s, "sent"),
        number(s, "delivered"),
        number(s, "undelivered"),
        number(s, "failed"),
        number(s, "canceled")
    );
    println!("  cost       {}", s["cost"]);
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    block_on(async {
        let (connection, json, method, path) = match &cmd {
            Command::List { json, connection } => (connection, *json, reqwest::Method::GET, "/v1/campaigns".into()),
            Command::Get(c) => (&c.connection, c.json, reqwest::Method::GET, format!("/v1/campaigns/{}", c.id)),
            Command::Start(c) | Command::Pause(c) | Command::Resume(c) | Command::Cancel(c) => {
                let verb = match cmd {
                    Command::Start(_) => "start",
                    Command::Pause(_) => "pause",
                    Command::Resume(_) => "resume",
                    _ => "cancel",
                };
                (&c.connection, c.json, reqwest::Method::POST, format!("/v1/campaigns/{}/{verb}", c.id))
            }
        };
        let api = Api::new(connection)?;
        let v = api.call(method, &path, None).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if let Some(list) = v["data"].as_array() {
            for c in list {
                println!("{}  {:<9}  {}  {}", text(c, "id"), text(c, "state"), text(c, "created_at"), text(c, "name"));
            }
        } else {
            show(&v);
        }
        Ok(())
    })
}
