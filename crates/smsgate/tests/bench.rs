#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! `smsgate bench http` against the real server: every message accepted and delivered, the report's fields, the
//! batch and fixed-rate modes, and clear errors for bad arguments.

mod common;

use std::process::Command;

use common::{start, stop};
use serde_json::Value;

const KEY: &str = "sk_test_bench_0123456789";

fn bench(base: &str, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["bench", "http", "--target", base, "--api-key", KEY, "--json", "--timeout", "60"])
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), report, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bench_http_reports_what_the_server_did() {
    let data = std::env::temp_dir().join(format!("smsgate-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server = start(&data, [] as [&str; 0], Some(KEY));

    // One message per request, with receipts: all accepted and delivered.
    let (ok, r, err) = bench(&server.base, &["--messages", "60", "--concurrency", "6", "--receipts"]);
    assert!(ok, "{err}");
    assert_eq!((r["sent"].as_u64(), r["accepted"].as_u64(), r["requests"].as_u64()), (Some(60), Some(60), Some(60)));
    assert_eq!(r["errors"], serde_json::json!({}));
    for field in ["accepted_per_s", "delivered_per_s", "submit_p50_ms", "submit_p99_ms"] {
        assert!(r[field].as_f64().is_some_and(|v| v > 0.0), "{field} in {r}");
    }
    assert!(r["submit_p50_ms"].as_f64() <= r["submit_p99_ms"].as_f64());

    // Batches: 250 messages in 3 requests (100, 100, 50), at a fixed rate of 20 requests per second.
    let (ok, r, err) = bench(&server.base, &["--messages", "250", "--batch", "100", "--rate", "20"]);
    assert!(ok, "{err}");
    assert_eq!((r["accepted"].as_u64(), r["requests"].as_u64()), (Some(250), Some(3)));
    // The third request starts 100 ms after the first.
    assert!(r["seconds"].as_f64().unwrap() >= 0.1, "{r}");

    // Refusals are counted by their code.
    let (ok, r, err) = bench(&server.base, &["--messages", "5", "--to-prefix", "+1"]);
    assert!(ok, "{err}");
    assert_eq!(r["accepted"].as_u64(), Some(0));
    assert_eq!(r["errors"]["invalid_destination"].as_u64(), Some(5), "{r}");
    stop(server);

    for bad in [["--messages", "0"], ["--batch", "0"], ["--concurrency", "0"], ["--rate", "0"]] {
        let (ok, _, err) = bench("http://127.0.0.1:9", &bad);
        assert!(!ok && err.starts_with("smsgate: "), "{bad:?}: {err}");
    }
    std::fs::remove_dir_all(&data).unwrap();
}
