#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! The crash test: `kill -9` the server while thousands of messages are queued and in flight, start it again, and
//! check that every message that got a 2xx reaches a final status and that the simulated carrier took none of
//! them twice (its log, `sim.log`, records every message it took). Bounded: 120 s at most.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{start, stop};
use serde_json::{Value, json};

const KEY: &str = "sk_crash_0123456789abcdef";
const BATCHES: usize = 12;
const PER_BATCH: usize = 200;

fn gauge(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_sends_nothing_twice() {
    let data = std::env::temp_dir().join(format!("smsgate-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("smsgate.toml");
    // Short leases, so the messages the dead server held are taken up again quickly; slow receipts, so many are
    // in flight when it dies.
    std::fs::write(
        &config,
        "lease_secs = 2\n[[sim.carriers]]\nname = \"slow\"\nprefix = \"+\"\nsubmit_latency_ms = 5\nreceipt_delay_ms = 300\n",
    )
    .unwrap();
    let config_arg = [std::ffi::OsStr::new("--config"), config.as_os_str()];
    let mut server = start(&data, config_arg, Some(KEY));
    let base = server.base.clone();
    let client = common::http_client(Duration::from_secs(30));

    // Send every batch, four at a time; then kill the server while messages are queued, being sent, and sent
    // but without their receipt.
    let mut acknowledged: Vec<String> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for b in 0..BATCHES {
        let (client, base) = (client.clone(), base.clone());
        tasks.spawn(async move {
            let messages: Vec<Value> = (0..PER_BATCH)
                .map(|i| json!({"to": format!("+4477009{:05}", (b * PER_BATCH + i) * 10 + 5), "from": "Crash", "body": "x"}))
                .collect();
            let r = client
                .post(format!("{base}/v1/messages/batch"))
                .bearer_auth(KEY)
                .json(&json!({"messages": messages}))
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: Value = r.json().await.ok()?;
            Some(v["data"].as_array()?.iter().filter_map(|m| m["id"].as_str().map(String::from)).collect::<Vec<_>>())
        });
        if tasks.len() >= 4
            && let Some(Ok(Some(ids))) = tasks.join_next().await
        {
            acknowledged.extend(ids);
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(ids)) = r {
            acknowledged.extend(ids);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if gauge(&m, "smsgate_messages{status=\"sent\"}") >= 50 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(acknowledged.len(), BATCHES * PER_BATCH, "every batch was acknowledged before the kill");

    // Start again: everything acknowledged reaches a final status.
    let server = start(&data, config_arg, Some(KEY));
    let base = server.base.clone();
    let first = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    eprintln!(
        "after kill -9: {} acknowledged; {} queued or sending, {} sent",
        acknowledged.len(),
        gauge(&first, "smsgate_queue_depth"),
        gauge(&first, "smsgate_messages{status=\"sent\"}"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let open = gauge(&m, "smsgate_queue_depth")
            + gauge(&m, "smsgate_messages{status=\"sent\"}")
            + gauge(&m, "smsgate_messages{status=\"scheduled\"}");
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still {open} messages open:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut delivered = 0;
    for id in &acknowledged {
        let m: Value =
            client.get(format!("{base}/v1/messages/{id}")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
        assert_eq!(m["status"], "delivered", "{m}");
        delivered += 1;
    }
    stop(server);

    // The carrier took each message once.
    let log = smsgate_connectors::sim::read_log(&data.join("sim.log")).unwrap();
    let mut taken: HashMap<&str, usize> = HashMap::new();
    for line in &log {
        *taken.entry(line.id.as_str()).or_default() += 1;
    }
    assert!(taken.values().all(|&n| n == 1), "a message was taken twice");
    for id in &acknowledged {
        assert_eq!(taken.get(id.as_str()), Some(&1), "{id} was not taken exactly once");
    }
    assert_eq!(delivered, acknowledged.len());
    std::fs::remove_dir_all(&data).unwrap();
}
