#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! `smsgate serve` as a user runs it: the real binary on an ephemeral port with a fresh data folder, a message
//! sent over HTTP to `delivered`, SIGTERM for a clean exit, and a restart that finds everything where it was.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "sk_test_0123456789abcdef";

struct Running {
    child: Child,
    base: String,
    lines: Vec<String>,
}

fn start(data: &std::path::Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("SMSGATE_ADMIN_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let base = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "serve exited early: {lines:?}");
        lines.push(line.clone());
        if let Some(rest) = line.strip_prefix("smsgate: listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no listening line: {lines:?}");
    };
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Running { child, base, lines }
}

fn stop(mut r: Running) {
    let status = Command::new("kill").args(["-TERM", &r.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(code) = r.child.try_wait().unwrap() {
            assert!(code.success(), "serve exited with {code}");
            return;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_stops_and_restarts() {
    let data = std::env::temp_dir().join(format!("smsgate-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let server = start(&data);
    assert!(!server.lines.iter().any(|l| l.contains("admin API key")), "a key from the environment is not printed");
    let m: Value = client
        .post(format!("{}/v1/messages", server.base))
        .bearer_auth(KEY)
        .json(&json!({"to": "+447700900123", "from": "smsgate", "body": "Hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = m["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Value = client
            .get(format!("{}/v1/messages/{id}", server.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if got["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("smsgate_messages{status=\"delivered\"} 1"), "{metrics}");
    assert!(metrics.contains("smsgate_submissions_total{outcome=\"sent\"} 1"), "{metrics}");
    assert!(metrics.contains("smsgate_sent_to_delivered_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("smsgate_submit_to_sent_seconds_count 1"), "{metrics}");
    // The command-line client against the same server.
    let cli = |args: &[&str], key: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_smsgate"));
        c.args(args).env("SMSGATE_URL", &server.base).env_remove("SMSGATE_API_KEY");
        if let Some(k) = key {
            c.env("SMSGATE_API_KEY", k);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["send", "--wait", "--to", "+447700900123", "--from", "Acme", "Hi there"], Some(KEY));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("delivered") && out.contains("queued"), "{out}");
    let (code, out, _) = cli(&["send", "--wait", "--to", "+447700900002", "--from", "Acme", "Hi"], Some(KEY));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("undelivered"), "{out}");
    let (code, out, _) = cli(&["messages", "get", &id], Some(KEY));
    assert_eq!(code, Some(0));
    assert!(out.contains("delivered") && out.contains("sim accepted it"), "{out}");
    let (code, out, _) = cli(&["messages", "list", "--limit", "10"], Some(KEY));
    assert_eq!((code, out.lines().count()), (Some(0), 3), "{out}");
    let (code, _, err) = cli(&["messages", "list"], None);
    assert_eq!(code, Some(1));
    assert!(err.contains("SMSGATE_API_KEY"), "{err}");
    let (code, _, err) = cli(&["send", "--to", "nope", "--from", "Acme", "x"], Some(KEY));
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid_destination"), "{err}");
    stop(server);
    let again = start(&data);
    let got: Value = client
        .get(format!("{}/v1/messages/{id}", again.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "delivered");
    assert_eq!(got["events"].as_array().unwrap().len(), 4);
    stop(again);
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn first_start_prints_a_key_once() {
    let data = std::env::temp_dir().join(format!("smsgate-serve-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let run = |data: &std::path::Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
            .args(["serve", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .env_remove("SMSGATE_ADMIN_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0);
            let done = line.starts_with("smsgate: try");
            lines.push(line);
            if done {
                break;
            }
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        stop(Running { child, base: String::new(), lines: lines.clone() });
        lines
    };
    let first = run(&data);
    assert!(first.iter().any(|l| l.contains("admin API key") && l.contains("sk_")), "{first:?}");
    let second = run(&data);
    assert!(!second.iter().any(|l| l.contains("admin API key")), "{second:?}");
    std::fs::remove_dir_all(&data).unwrap();
}
