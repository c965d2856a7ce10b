//! Running the real `smsgate serve` in tests: start it on an ephemeral port and read its start-up lines; stop it
//! with SIGTERM and expect a clean exit.
#![allow(dead_code, clippy::unwrap_used)] // Each test file uses part of it; a failure is a test failure.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An HTTP client for talking to the server under test, with TLS set up as the binary sets it up.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    smsgate_api::webhooks::install_tls();
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

/// A running server.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// What it printed while starting.
    pub lines: Vec<String>,
}

/// Starts `smsgate serve` on `data` with `args` added; `admin_key` sets `SMSGATE_ADMIN_KEY` (or unsets it). Returns
/// once the server printed its last start-up line.
pub fn start<I, S>(data: &Path, args: I, admin_key: Option<&str>) -> Server
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smsgate"));
    cmd.args(["serve", "--http", "127.0.0.1:0", "--smpp", "127.0.0.1:0", "--data-dir"]).arg(data).args(args);
    // The tests' webhook receivers listen on loopback, which an operator allows by name.
    cmd.env("SMSGATE_WEBHOOKS_ALLOW_PRIVATE", "127.0.0.1/32");
    match admin_key {
        Some(k) => cmd.env("SMSGATE_ADMIN_KEY", k),
        None => cmd.env_remove("SMSGATE_ADMIN_KEY"),
    };
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut base = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "serve exited early: {lines:?}");
        if let Some(rest) = line.strip_prefix("smsgate: listening on ") {
            base = rest.split_whitespace().next().map(String::from);
        }
        let last = line.starts_with("smsgate: try");
        lines.push(line);
        if last {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not finish starting: {lines:?}");
    }
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Server { child, base: base.expect("a listening line"), lines }
}

/// A test that fails before [`stop`] still leaves no server behind.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM, and a clean exit within 15 s.
pub fn stop(mut server: Server) {
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(code) = server.child.try_wait().unwrap() {
            assert!(code.success(), "serve exited with {code}");
            return;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh data folder for a test, in the temporary folder.
pub fn data_dir(name: &str) -> std::path::PathBuf {
    let data = std::env::temp_dir().join(format!("smsgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    data
}

/// The PostgreSQL the tests use.
pub fn postgres_url() -> String {
    std::env::var("SMSGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs a statement on the tests' PostgreSQL.
pub async fn on_server(sql: String) {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.expect("PostgreSQL is up");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("statement");
    pool.close().await;
}

/// A request with `key` that must succeed: its JSON answer.
pub async fn call_as(
    key: &str,
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut req = client.request(method.parse().unwrap(), format!("{base}{path}")).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}
