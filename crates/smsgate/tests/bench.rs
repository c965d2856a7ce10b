#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! `smsgate bench http` against the real server: every message accepted and delivered, the report's fields, the
//! batch and fixed-rate modes, and clear errors for bad arguments.

mod common;

use std::process::Command;

use common::{start, stop};
use serde_json::{Value, json};

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

/// A request to the server with the test's key: a POST of `body`, or a GET.
fn call(base: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = common::http_client(std::time::Duration::from_secs(10));
        let request = match body {
            Some(b) => client.post(format!("{base}{path}")).json(&b),
            None => client.get(format!("{base}{path}")),
        };
        let r = request.bearer_auth(KEY).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    })
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

    // Receipts counted where the sender sees them: a callback_url served by the bench, the final status counted;
    // the load and its callbacks' listener on one thread.
    let args = ["--messages", "40", "--concurrency", "4", "--receipts", "--callbacks", "--threads", "1"];
    let (ok, r, err) = bench(&server.base, &args);
    assert!(ok, "{err}");
    assert_eq!((r["accepted"].as_u64(), r["receipts"].as_u64()), (Some(40), Some(40)), "{r}");
    assert_eq!((r["receipts_at"].as_str(), &r["receipts_by_status"]), (Some("client"), &json!({"delivered": 40})));
    assert!(
        r["receipt_p50_ms"].as_f64().is_some_and(|v| v > 0.0)
            && r["receipt_p50_ms"].as_f64() <= r["receipt_p99_ms"].as_f64(),
        "{r}"
    );

    // Spans of a long run, with the receipts that came in each.
    let spans = data.join("http-spans.jsonl");
    let log = spans.display().to_string();
    let args = [
        ["--messages", "60", "--rate", "40", "--receipts", "--callbacks"],
        ["--interval", "1", "--interval-log", &log, "--threads", "2"],
    ]
    .concat();
    let (ok, r, err) = bench(&server.base, &args);
    assert!(ok, "{err}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&spans).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty() && lines[0]["t"] == 1, "{lines:?}");
    assert!((30..=50).contains(&lines[0]["answered"].as_u64().unwrap()), "about 40 in the first second: {lines:?}");
    assert!(lines.iter().all(|l| l["receipts"].as_u64().is_some() && l["refused"] == 0), "{lines:?}");
    assert_eq!(r["receipts"].as_u64(), Some(60), "{r}");
    let sum = |f: &str| lines.iter().map(|l| l[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("answered"), sum("receipts"), &lines.last().unwrap()["last"]), (60, 60, &json!(true)));

    // Concatenated SMPP submits: two parts each, reassembled by the server, a receipt back for every part.
    let smpp = server.lines.iter().find_map(|l| l.strip_prefix("smsgate: SMPP on ")).unwrap().trim().to_string();
    let (status, _) =
        call(&server.base, "/v1/smpp/credentials", Some(json!({"system_id": "bench", "password": "benchpw"})));
    assert_eq!(status, 201);
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["bench", "smpp", "--target", &smpp, "--password", "benchpw", "--json", "--timeout", "60"])
        .args(["--messages", "30", "--sessions", "2", "--window", "8", "--concat", "--receipts"])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let counts = ["accepted", "parts", "submits_accepted", "receipts"].map(|f| r[f].as_u64());
    assert_eq!(counts, [Some(30), Some(2), Some(60), Some(60)], "{r}");
    let (_, listed) = call(&server.base, "/v1/messages?limit=1", None);
    let last = &listed["data"][0];
    assert!(last["body"].as_str().is_some_and(|b| b.len() > 160), "the parts were stored as one message: {last}");
    assert_eq!(last["segments"].as_u64(), Some(2), "{last}");

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
    // Kannel and Jasmin modes need a user; they take no batches; --callbacks goes with --receipts.
    let bad: [&[&str]; 5] = [
        &["--kannel"],
        &["--jasmin", "--username", "u"],
        &["--kannel", "--jasmin"],
        &["--callbacks"],
        &["--threads", "300"],
    ];
    for bad in bad {
        let (ok, _, err) = bench("http://127.0.0.1:9", bad);
        assert!(!ok && err.contains("--"), "{bad:?}: {err}");
    }
    let (ok, _, err) = bench("http://127.0.0.1:9", &["--kannel", "--username", "u", "--password", "p", "--batch", "5"]);
    assert!(!ok && err.starts_with("smsgate: ") && err.contains("--batch"), "{err}");
    std::fs::remove_dir_all(&data).unwrap();
}

/// `smsgate bench sink` counts what it receives by status and checks every signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sink_counts_and_checks_signatures() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["bench", "sink", "--listen", "127.0.0.1:0", "--secret", "whsec_test"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.rsplit(' ').next().unwrap().to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{first}");
    let client = common::http_client(std::time::Duration::from_secs(10));
    let body = r#"{"status":"delivered"}"#;
    let t = 1_700_000_000;
    let good = smsgate_api::webhooks::signature("whsec_test", t, body);
    let bad = smsgate_api::webhooks::signature("whsec_other", t, body);
    for sig in [good, bad] {
        let r = client.post(format!("{base}/hook")).header("smsgate-signature", sig).body(body).send().await.unwrap();
        assert!(r.status().is_success());
    }
    let stats: Value = client.get(format!("{base}/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["received"], 2, "{stats}");
    assert_eq!(stats["bad_signatures"], 1, "{stats}");
    assert_eq!(stats["by_status"]["delivered"], 2, "{stats}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    let last = lines.next().unwrap().unwrap();
    assert!(last.contains("\"received\":2"), "{last}");
}

/// `smsgate sim` on an ephemeral port, loaded by `smsgate bench smpp`: every submit taken and every receipt back,
/// a bind refused with a clear error, and the counters over HTTP.
#[test]
fn bench_smpp_against_smsgate_sim() {
    use std::io::{BufRead, BufReader};
    let mut sim = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["sim", "--smpp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--receipt-delay-ms", "10"])
        .args(["--account", "bench:bench"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let mut address = |prefix: &str| {
        let line = lines.next().unwrap().unwrap();
        line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line}")).trim_end_matches("/stats").to_string()
    };
    let smpp = address("smsgate sim: SMPP on ");
    let http = address("smsgate sim: counters on ");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
            .args(["bench", "smpp", "--target", &smpp, "--json", "--timeout", "60"])
            .args(args)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), report, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, r, err) = run(&["--messages", "2000", "--sessions", "2", "--window", "50", "--receipts"]);
    assert!(ok, "{err}");
    assert_eq!((r["accepted"].as_u64(), r["receipts"].as_u64()), (Some(2000), Some(2000)), "{r}");
    assert_eq!(r["errors"], serde_json::json!({}));
    for field in ["receipted_per_s", "delivered_per_s", "submit_p50_ms", "submit_p99_ms", "receipt_p50_ms"] {
        assert!(r[field].as_f64().is_some_and(|v| v > 0.0), "{field} in {r}");
    }
    assert!(r["submit_p50_ms"].as_f64() <= r["submit_p90_ms"].as_f64(), "{r}");
    assert!(r["submit_p99_ms"].as_f64() <= r["submit_max_ms"].as_f64(), "{r}");
    // The simulator writes its receipts 10 ms after the submit: no receipt can come back sooner.
    assert!(r["receipt_p50_ms"].as_f64().unwrap() >= 10.0, "{r}");
    assert!(r["receipt_p50_ms"].as_f64() <= r["receipt_p99_ms"].as_f64(), "{r}");
    // Concatenated: two parts a message, each its own submit_sm with a UDH, each with its own receipt.
    let (ok, r, err) = run(&["--messages", "100", "--concat", "--receipts"]);
    assert!(ok, "{err}");
    let counts = ["accepted", "parts", "submits_accepted", "receipts"].map(|f| r[f].as_u64());
    assert_eq!(counts, [Some(100), Some(2), Some(200), Some(200)], "{r}");
    let (ok, _, err) = run(&["--concat", "--text", "short"]);
    assert!(!ok && err.starts_with("smsgate: ") && err.contains("--concat"), "{err}");
    // At a fixed rate: 100 messages at 400 a second, the last one scheduled 247.5 ms after the first.
    let (ok, r, err) = run(&["--messages", "100", "--rate", "400"]);
    assert!(ok, "{err}");
    assert_eq!((r["accepted"].as_u64(), r["rate"].as_f64()), (Some(100), Some(400.0)), "{r}");
    assert!(r["seconds"].as_f64().unwrap() >= 0.24, "{r}");
    let (ok, _, err) = run(&["--rate", "0"]);
    assert!(!ok && err.starts_with("smsgate: ") && err.contains("--rate"), "{err}");
    // A long run's spans: 500 messages at 200 a second, a line for each second with what it answered and received.
    let spans = std::env::temp_dir().join(format!("smsgate-bench-spans-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&spans);
    let log = spans.display().to_string();
    let (ok, r, err) =
        run(&["--messages", "500", "--rate", "200", "--receipts", "--interval", "1", "--interval-log", &log]);
    assert!(ok, "{err}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&spans).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    std::fs::remove_file(&spans).unwrap();
    assert!(lines.len() >= 2, "a line a second for 2.5 s: {lines:?}");
    assert_eq!(lines.iter().map(|l| l["t"].as_u64().unwrap()).take(2).collect::<Vec<_>>(), [1, 2]);
    let answered: u64 = lines.iter().map(|l| l["answered"].as_u64().unwrap()).sum();
    let receipts: u64 = lines.iter().map(|l| l["receipts"].as_u64().unwrap()).sum();
    assert!((150..=250).contains(&lines[0]["answered"].as_u64().unwrap()), "about 200 in the first second: {lines:?}");
    // The last line covers the run from the last mark to its end, so that the lines add up to the whole run.
    assert_eq!((answered, receipts), (500, 500), "{lines:?}");
    assert!(lines.last().unwrap()["last"] == true && lines.iter().rev().skip(1).all(|l| l.get("last").is_none()));
    assert!(lines.iter().all(|l| l["refused"] == 0 && l["submit_p99_ms"].as_f64() >= l["submit_p50_ms"].as_f64()));
    assert_eq!(r["accepted"].as_u64(), Some(500));
    let (ok, _, err) = run(&["--interval", "0"]);
    assert!(!ok && err.contains("--interval"), "{err}");
    // A bind with the wrong password.
    let (ok, _, err) = run(&["--password", "wrong"]);
    assert!(!ok && err.starts_with("smsgate: ") && err.contains("ESME_RINVPASWD"), "{err}");
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(http.trim_start_matches("http://")).unwrap();
        c.write_all(format!("GET {path} HTTP/1.0\r\nHost: sim\r\n\r\n").as_bytes()).unwrap();
        let mut response = String::new();
        c.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str::<Value>(body).unwrap_or(Value::Null)
    };
    let stats = get("/stats");
    // The handsets' inboxes: bench smpp sent to +4477009{0000..9999}5; the first got the first message.
    let inbox = get("/handsets/+447700900005/messages");
    let first = &inbox["data"][0];
    assert_eq!((first["from"].as_str(), first["text"].as_str()), (Some("Bench"), Some("benchmark message")), "{inbox}");
    assert!(stats["accepted"].as_u64().unwrap() >= 2000, "{stats}");
    assert_eq!(stats["refused_binds"].as_u64(), Some(1), "{stats}");
    sim.kill().unwrap();
    sim.wait().unwrap();
}
