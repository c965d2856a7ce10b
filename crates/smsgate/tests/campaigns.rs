#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! Campaigns through the real binary: one killed (`kill -9`) half-way through its sends and started again sends each
//! contact exactly one text, on SQLite and on PostgreSQL; `smsgate campaigns list|get|start|pause|resume|cancel`
//! drive one from the command line. Bounded: 2 minutes each.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{data_dir, on_server, postgres_url, start, stop};
use serde_json::{Value, json};

const KEY: &str = "sk_campaigns_0123456789abcdef";

async fn call(client: &reqwest::Client, base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    common::call_as(KEY, client, base, method, path, body).await
}

/// Imports `rows` contacts into the list Everyone and waits for the job.
async fn import(client: &reqwest::Client, base: &str, rows: usize) {
    let mut csv = String::from("phone,name,plan\n");
    for i in 0..rows {
        csv.push_str(&format!("+4477009{:05},Person {i},{}\n", i + 10, if i % 2 == 0 { "gold" } else { "silver" }));
    }
    let resp = client
        .post(format!("{base}/v1/contacts/import?list=Everyone"))
        .bearer_auth(KEY)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let job: Value = resp.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = call(client, base, "GET", &format!("/v1/jobs/{id}"), None).await;
        if j["state"] == "completed" {
            assert_eq!(j["created"].as_u64(), Some(rows as u64), "{j}");
            return;
        }
        assert!(Instant::now() < deadline && j["state"] == "running", "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_killed_half_way_sends_each_contact_once_on_sqlite() {
    a_campaign_killed_half_way_sends_each_contact_once(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_killed_half_way_sends_each_contact_once_on_postgres() {
    let schema = format!("test_campaign_{}", std::process::id());
    on_server(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    on_server(format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    a_campaign_killed_half_way_sends_each_contact_once(vec!["--database".into(), url]).await;
    on_server(format!("DROP SCHEMA {schema} CASCADE")).await;
}

async fn a_campaign_killed_half_way_sends_each_contact_once(args: Vec<String>) {
    const ROWS: usize = 20_000;
    let data = data_dir(&format!("campaign-crash-{}", args.len()));
    let mut server = start(&data, &args, Some(KEY));
    let client = common::http_client(Duration::from_secs(30));
    import(&client, &server.base, ROWS).await;
    let spec = json!({"name": "crash", "audience": {"lists": ["Everyone"]}, "from": "Acme",
                      "category": "transactional", "throughput": 4000,
                      "body": "Hi {{ name }}, {{ fields.plan }} members save today"});
    let c = call(&client, &server.base, "POST", "/v1/campaigns", Some(spec)).await;
    let id = c["id"].as_str().unwrap().to_string();
    call(&client, &server.base, "POST", &format!("/v1/campaigns/{id}/start"), None).await;
    // Killed once some texts are stored and before the last (a loaded machine's disk may make the first slow).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = call(&client, &server.base, "GET", &format!("/v1/campaigns/{id}"), None).await;
        let queued = c["stats"]["queued"].as_u64().unwrap();
        if queued > 1000 {
            assert!(queued < ROWS as u64, "the campaign ended before it could be killed: {c}");
            break;
        }
        assert!(Instant::now() < deadline, "the campaign never sent: {c}");
        // Not faster: each look counts the campaign's recipients and texts, and a busy machine has to send too.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = start(&data, &args, Some(KEY));
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let c = call(&client, &server.base, "GET", &format!("/v1/campaigns/{id}"), None).await;
        if c["state"] == "completed" {
            break c;
        }
        assert!(Instant::now() < deadline && c["state"] == "running", "the campaign did not finish: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let s = &done["stats"];
    let n = ROWS as u64;
    assert_eq!(
        (s["audience"].as_u64(), s["queued"].as_u64(), s["texts"].as_u64(), s["pending"].as_u64()),
        (Some(n), Some(n), Some(n), Some(0)),
        "every contact one text, none two: {done}"
    );
    assert_eq!(s["skipped"], json!({}), "{done}");
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}

fn cli(base: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["campaigns"])
        .args(args)
        .env("SMSGATE_URL", base)
        .env("SMSGATE_API_KEY", KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_starts_and_pauses_campaigns() {
    let data = data_dir("campaign-cli");
    let server = start(&data, [] as [&str; 0], Some(KEY));
    let client = common::http_client(Duration::from_secs(30));
    import(&client, &server.base, 40).await;
    let spec = json!({"name": "Spring sale", "audience": {"lists": ["Everyone"]}, "from": "Acme",
                      "category": "transactional", "throughput": 2, "body": "Hi {{ name }}"});
    let c = call(&client, &server.base, "POST", "/v1/campaigns", Some(spec)).await;
    let id = c["id"].as_str().unwrap().to_string();
    let (ok, out) = cli(&server.base, &["list"]);
    assert!(ok && out.contains(&id) && out.contains("draft") && out.contains("Spring sale"), "{out}");
    let (ok, out) = cli(&server.base, &["start", &id]);
    assert!(ok && out.contains("running"), "{out}");
    let (ok, out) = cli(&server.base, &["pause", &id]);
    assert!(ok && out.contains("paused"), "{out}");
    let (ok, out) = cli(&server.base, &["get", &id]);
    assert!(ok && out.contains("audience") && out.contains("paused"), "{out}");
    let (ok, out) = cli(&server.base, &["get", &id, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!((ok, v["state"].as_str()), (true, Some("paused")));
    let (ok, out) = cli(&server.base, &["pause", &id]);
    assert!(!ok && out.contains("invalid_state"), "a second pause is refused: {out}");
    let (ok, out) = cli(&server.base, &["resume", &id]);
    assert!(ok && out.contains("running"), "{out}");
    let (ok, out) = cli(&server.base, &["cancel", &id]);
    assert!(ok && out.contains("canceled"), "{out}");
    let (ok, out) = cli(&server.base, &["get", "nope"]);
    assert!(!ok && out.contains("not_found"), "{out}");
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}
