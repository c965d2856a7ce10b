//! `smsgate contacts import FILE.csv`: uploads a CSV file of contacts to a running server (streamed, as a
//! multipart form with the mapping as JSON), follows the import job with a progress bar over the file's bytes, and
//! prints the report: rows read, created, updated, skipped, and each refused row with its reason.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::client::{Api, Connection, answer, block_on};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import contacts from a CSV file with a header row.
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The CSV file. Headers named phone, name, email, time_zone or tags map to those; any other column becomes a
    /// custom field of its name.
    file: std::path::PathBuf,
    /// A list (name or id) every imported contact joins; made when no list has the name.
    #[arg(long)]
    list: Option<String>,
    /// COLUMN=FIELD: read a column as phone, name, email, time_zone, tags, ignore, or a custom field.
    #[arg(long = "map", value_name = "COLUMN=FIELD")]
    map: Vec<String>,
    /// A tag every imported contact gets (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// The rows carry consent (the people opted in): where it was given, kept in each number's consent history.
    #[arg(long)]
    consent_source: Option<String>,
    /// Leave contacts the account has already as they are (by default they are updated).
    #[arg(long)]
    no_update: bool,
    /// Print the job's JSON at the end instead of the report.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Import(args) => block_on(import(args)),
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    let mut columns = HashMap::new();
    for m in &args.map {
        let Some((column, field)) = m.rsplit_once('=') else { bail!("--map {m:?}: write COLUMN=FIELD") };
        columns.insert(column.to_string(), field.to_string());
    }
    let mapping = json!({
        "columns": columns,
        "list": args.list,
        "tags": args.tags,
        "update_existing": !args.no_update,
        "consent_source": args.consent_source,
    });
    let file = tokio::fs::File::open(&args.file).await.with_context(|| format!("opening {}", args.file.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let name = args.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "contacts.csv".into());
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(file), size)
        .file_name(name)
        .mime_str("text/csv")?;
    let form = reqwest::multipart::Form::new().text("mapping", mapping.to_string()).part("file", part);
    // An upload takes as long as it takes; only connecting is bounded.
    let upload = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    let resp = upload
        .post(format!("{}/v1/contacts/import", api.base))
        .bearer_auth(&api.key)
        .multipart(form)
        .send()
        .await
        .with_context(|| format!("cannot reach smsgate at {}", api.base))?;
    let job = answer(&api.base, resp).await?;
    let id = job["id"].as_str().unwrap_or_default().to_string();
    let bar = indicatif::ProgressBar::with_draw_target(Some(size), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}%  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let job = loop {
        let job = api.call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None).await?;
        bar.set_position(job["bytes_read"].as_u64().unwrap_or(0).min(size));
        bar.set_message(format!("{} rows", job["rows"]));
        if job["state"] != "running" {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        print!("{}", report(&job));
    }
    if job["state"] != "completed" {
        bail!("the import {id} {}", job["state"].as_str().unwrap_or("failed"));
    }
    Ok(())
}

/// The report of a finished job, for people.
fn report(job: &Value) -> String {
    let mut out = format!(
        "import {}: {}\n  rows {}, created {}, updated {}, skipped {}\n",
        job["id"].as_str().unwrap_or(""),
        job["state"].as_str().unwrap_or(""),
        job["rows"],
        job["created"],
        job["updated"],
        job["skipped"]
    );
    for e in job["errors"].as_array().cloned().unwrap_or_default() {
        let column = e["column"].as_str().map(|c| format!(" ({c})")).unwrap_or_default();
        out.push_str(&format!(
            "  row {}{column}: {} — {}\n",
            e["row"],
            e["code"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lists_each_refused_row() {
        let job = json!({"id": "j1", "state": "completed", "rows": 3, "created": 1, "updated": 0, "skipped": 2,
            "errors": [{"row": 3, "column": "phone", "code": "invalid_phone", "message": "not a number"},
                       {"row": 4, "column": null, "code": "duplicate_in_file", "message": "again"}]});
        assert_eq!(
            report(&job),
            "import j1: completed\n  rows 3, created 1, updated 0, skipped 2\n  row 3 (phone): invalid_phone — not a \
             number\n  row 4: duplicate_in_file — again\n"
        );
    }
}
