#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! Automations through the real binary, across a `kill -9`: a run that sent its first text and waits is killed
//! with the server, and after the restart it sends its second text at its time, each text once, on SQLite and on
//! PostgreSQL. Bounded: a minute each.

mod common;

use std::time::{Duration, Instant};

use common::{data_dir, on_server, postgres_url, start, stop};
use serde_json::{Value, json};

const KEY: &str = "sk_automations_0123456789abcdef";

async fn call(client: &reqwest::Client, base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    common::call_as(KEY, client, base, method, path, body).await
}

/// What a virtual handset received, in order.
async fn inbox(client: &reqwest::Client, base: &str, handset: &str) -> Vec<String> {
    let v = call(client, base, "GET", &format!("/v1/sim/handsets/{handset}/messages"), None).await;
    v["data"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap().to_string()).collect()
}

async fn until_inbox(client: &reqwest::Client, base: &str, handset: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = inbox(client, base, handset).await;
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{handset} has {got:?}, waiting for {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_across_a_crash_goes_on_once_on_sqlite() {
    a_run_waiting_across_a_crash_goes_on_once(Vec::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_across_a_crash_goes_on_once_on_postgres() {
    let schema = format!("test_automation_{}", std::process::id());
    on_server(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    on_server(format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    a_run_waiting_across_a_crash_goes_on_once(vec!["--database".into(), url]).await;
    on_server(format!("DROP SCHEMA {schema} CASCADE")).await;
}

async fn a_run_waiting_across_a_crash_goes_on_once(args: Vec<String>) {
    let data = data_dir(&format!("automation-crash-{}", args.len()));
    let mut server = start(&data, &args, Some(KEY));
    let client = common::http_client(Duration::from_secs(30));
    let spec = json!({"name": "Follow-up", "trigger": {"type": "event", "event": "visit.booked"},
        "steps": [{"type": "send", "from": "Clinic", "body": "Booked: {{ data.when }}"},
                  {"type": "wait", "duration": "4s"},
                  {"type": "send", "from": "Clinic", "body": "How was it, {{ name }}?"}]});
    let a = call(&client, &server.base, "POST", "/v1/automations", Some(spec)).await;
    let id = a["id"].as_str().unwrap().to_string();
    let handset = "+447700900201";
    let event = json!({"name": "visit.booked", "contact": {"phone": handset, "name": "Ann"},
        "data": {"when": "Friday"}, "idempotency_key": "visit-1"});
    call(&client, &server.base, "POST", "/v1/events", Some(event.clone())).await;
    assert_eq!(until_inbox(&client, &server.base, handset, 1).await, ["Booked: Friday"]);

    // Killed while the run waits; the event sent again to the new process starts nothing.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = start(&data, &args, Some(KEY));
    let again = call(&client, &server.base, "POST", "/v1/events", Some(event)).await;
    assert_eq!((again["duplicate"].as_bool(), again["started"].as_array().map(Vec::len)), (Some(true), Some(1)));
    // The simulated network keeps its handsets' messages on disk: the first text is there, the second comes.
    let got = until_inbox(&client, &server.base, handset, 2).await;
    assert_eq!(got, ["Booked: Friday", "How was it, Ann?"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(inbox(&client, &server.base, handset).await.len(), 2, "each once");
    let runs = call(&client, &server.base, "GET", &format!("/v1/automations/{id}/runs"), None).await;
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["state"], "completed");
    let sent: Vec<&str> =
        runs[0]["steps"].as_array().unwrap().iter().filter_map(|s| s["message_id"].as_str()).collect();
    assert_eq!(sent.len(), 2, "{runs:?}");
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}
