#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! `smsgate serve` as a user runs it: the real binary on an ephemeral port with a fresh data folder, a message
//! sent over HTTP to `delivered`, SIGTERM for a clean exit, and a restart that finds everything where it was.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{start, stop};
use serde_json::{Value, json};

const KEY: &str = "sk_test_0123456789abcdef";

/// `GET /v1/messages/{id}` with the admin key.
async fn message(client: &reqwest::Client, base: &str, id: &str) -> Value {
    client.get(format!("{base}/v1/messages/{id}")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_stops_and_restarts() {
    let data = std::env::temp_dir().join(format!("smsgate-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let client = common::http_client(Duration::from_secs(10));
    let server = start(&data, [] as [&str; 0], Some(KEY));
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
        let got = message(&client, &server.base, &id).await;
        if got["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("smsgate_status_changes_total{status=\"delivered\"} 1"), "{metrics}");
    assert!(metrics.contains("smsgate_messages{status=\"sent\"} 0"), "{metrics}");
    assert!(metrics.contains("smsgate_submissions_total{outcome=\"sent\"} 1"), "{metrics}");
    assert!(metrics.contains("smsgate_sent_to_delivered_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("smsgate_submit_to_sent_seconds_count 1"), "{metrics}");
    // The server's own answer times, by route pattern, in buckets from half a millisecond.
    let sent = "smsgate_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/messages\",status=\"2xx\"} 1";
    assert!(metrics.contains(sent), "{metrics}");
    assert!(metrics.contains("route=\"/v1/messages/{id}\",status=\"2xx\",le=\"0.0005\"}"), "{metrics}");
    // SQLite's writer: its groups, and the syncs of the WAL that made them durable, in the same buckets.
    for histogram in ["smsgate_sqlite_group_seconds", "smsgate_sqlite_sync_seconds"] {
        assert!(metrics.contains(&format!("{histogram}_bucket{{le=\"0.0005\"}}")), "{histogram}: {metrics}");
    }
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
    let again = start(&data, [] as [&str; 0], Some(KEY));
    let got = message(&client, &again.base, &id).await;
    assert_eq!(got["status"], "delivered");
    assert_eq!(got["events"].as_array().unwrap().len(), 4);
    stop(again);
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_key_once_and_it_works_after_a_restart() {
    let data = std::env::temp_dir().join(format!("smsgate-serve-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let client = common::http_client(Duration::from_secs(10));
    let server = start(&data, [] as [&str; 0], None);
    let first = server.lines.clone();
    stop(server);
    let key = first
        .iter()
        .find_map(|l| l.split("admin API key (shown once; keep it): ").nth(1))
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|| panic!("no key printed: {first:?}"));
    assert!(key.starts_with("sk_"), "{key}");
    // The server's secret stays in the data folder, readable by its owner only: the key still works.
    let secret = data.join("secret.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let server = start(&data, ["--metrics-token", "scrape-token-1"], None);
    assert!(!server.lines.iter().any(|l| l.contains("admin API key")), "{:?}", server.lines);
    let list = client.get(format!("{}/v1/messages", server.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(list.status().as_u16(), 200);
    // /metrics wants its token.
    let metrics = format!("{}/metrics", server.base);
    assert_eq!(client.get(&metrics).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.get(&metrics).bearer_auth(&key).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.get(&metrics).bearer_auth("scrape-token-1").send().await.unwrap().status().as_u16(), 200);
    stop(server);
    // Another secret knows no key.
    std::fs::write(&secret, format!("{}\n", "ab".repeat(32))).unwrap();
    let server = start(&data, [] as [&str; 0], None);
    let list = client.get(format!("{}/v1/messages", server.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(list.status().as_u16(), 401);
    stop(server);
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_and_routes_from_the_config_file() {
    let data = std::env::temp_dir().join(format!("smsgate-serve-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let config = data.join("smsgate.toml");
    std::fs::write(
        &config,
        r#"
[[connectors]]
name = "carrier-a"
kind = "sim"
receipt_delay_ms = 20
throughput = 100

[[connectors]]
name = "carrier-b"
kind = "sim"

[[routes]]
name = "uk"
match = { prefix = "+44" }
connectors = [{ name = "carrier-a", price = 0.01 }, { name = "carrier-b", priority = 1 }]
"#,
    )
    .unwrap();
    let client = common::http_client(Duration::from_secs(10));
    let get = |path: &str| {
        let (client, url) = (client.clone(), path.to_string());
        async move { client.get(url).bearer_auth(KEY).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let server = start(&data, ["--config".as_ref(), config.as_os_str()], Some(KEY));
    assert!(server.lines.iter().any(|l| l.contains("created route uk from the configuration")), "{:?}", server.lines);
    let connectors = get(&format!("{}/v1/connectors", server.base)).await;
    let names: Vec<&str> = connectors["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["carrier-a", "carrier-b", "sim"]);
    assert_eq!(connectors["data"][0]["throughput"], 100);
    let routes = get(&format!("{}/v1/routes", server.base)).await;
    let names: Vec<&str> = routes["data"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["uk", "default"]);
    // Changed over the API, then a restart: the database's version stays.
    let r = client
        .patch(format!("{}/v1/connectors/carrier-a", server.base))
        .bearer_auth(KEY)
        .json(&json!({"throughput": 5}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    stop(server);
    let server = start(&data, ["--config".as_ref(), config.as_os_str()], Some(KEY));
    assert!(!server.lines.iter().any(|l| l.contains("from the configuration")), "{:?}", server.lines);
    let a = get(&format!("{}/v1/connectors/carrier-a", server.base)).await;
    assert_eq!(a["throughput"], 5);
    stop(server);
    // A bad entry stops the start with its place named.
    std::fs::write(&config, "[[connectors]]\nname = \"bad\"\nkind = \"sim\"\ndelivery_ratio = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["serve", "--http", "127.0.0.1:0", "--smpp", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env("SMSGATE_ADMIN_KEY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connectors[0]") && err.contains("delivery_ratio"), "{err}");
    std::fs::remove_dir_all(&data).unwrap();
}

/// HTTPS with the HTTP listener off: the certificate from the config file is served, and a new one written over
/// it is taken up without a restart (at SIGHUP here; also when the files' times change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_with_a_certificate_read_again() {
    let data = std::env::temp_dir().join(format!("smsgate-serve-https-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let (cert, key, config) = (data.join("cert.pem"), data.join("key.pem"), data.join("smsgate.toml"));
    let write_pair = || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        made.cert.pem()
    };
    let first = write_pair();
    let toml = format!(
        "[http_server]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\nplain = false\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    std::fs::write(&config, toml).unwrap();
    let server = start(&data, ["--config", config.to_str().unwrap()], Some(KEY));
    assert!(server.base.starts_with("https://"), "{:?}", server.lines);
    assert!(!server.lines.iter().any(|l| l.contains("listening on http://")), "plain HTTP is off: {:?}", server.lines);
    let addr: std::net::SocketAddr = server.base.trim_start_matches("https://").parse().unwrap();
    let trusting = |pem: &str| {
        smsgate_api::webhooks::install_tls();
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
            .resolve("localhost", addr)
            .build()
            .unwrap()
    };
    let url = format!("https://localhost:{}/healthz", addr.port());
    let r = trusting(&first).get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A renewed certificate: SIGHUP, and new connections get it.
    let second = write_pair();
    let status = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if trusting(&second).get(&url).send().await.is_ok_and(|r| r.status().as_u16() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not taken up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trusting(&first).get(&url).send().await.is_err(), "the old certificate is no longer served");
    stop(server);
    std::fs::remove_dir_all(&data).unwrap();
}
