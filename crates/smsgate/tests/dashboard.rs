#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! The dashboard in a real browser: Debian's chromium, headless, driven through chromedriver (WebDriver) against
//! the real binary on a loopback port. `./scripts/test` installs both (packages `chromium`, `chromium-driver`);
//! without them these tests fail and say so. Every step fails if the page shows an error it was not asked to, or
//! the browser's console has one. With `SMSGATE_SCREENSHOTS=<folder>` the pages are also saved as PNG at a desktop's
//! and a phone's width (docs/screenshots is made so). Bounded: each wait at most 20 s.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, start, stop};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const KEY: &str = "sk_dashboard_0123456789abcdef";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver on a loopback port, and a session of a headless chromium with a profile of its own.
struct Browser {
    driver: Child,
    client: Client,
    profile: PathBuf,
}

/// The browser's console since it was last read (chromedriver's log endpoint).
#[derive(Debug)]
struct ConsoleLog;

impl fantoccini::wd::WebDriverCompatibleCommand for ConsoleLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type": "browser"}"#.into()))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    async fn start(name: &str) -> Browser {
        for path in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the dashboard's tests need Debian's chromium and chromium-driver (./scripts/test installs them)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = std::env::temp_dir().join(format!("smsgate-chromium-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // As root in a container, with no network beyond loopback: no sandbox, GPU, QUIC or the browser's
                // own calls home (which this machine refuses, many at a time).
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps: serde_json::Map<String, Value> = caps.as_object().unwrap().clone();
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "chromedriver did not start a session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser { driver, client, profile }
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.client.clone().close()).await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }

    /// The console's entries since the last call: (level, message).
    async fn console(&self) -> Vec<(String, String)> {
        let log = self.client.issue_cmd(ConsoleLog).await.unwrap();
        log.as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["level"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    /// Fails if the console has an error or a warning, or the page shows an error.
    async fn clean(&self, step: &str) {
        let bad: Vec<_> =
            self.console().await.into_iter().filter(|(level, _)| level == "SEVERE" || level == "WARNING").collect();
        assert!(bad.is_empty(), "{step}: the console has {bad:?}");
        let shown = self.client.find_all(Locator::Css(".notice.error")).await.unwrap();
        if let Some(e) = shown.first() {
            panic!("{step}: the page shows an error: {}", e.text().await.unwrap());
        }
    }

    /// The element, once it is there and holds `text` (when given).
    async fn wait_for(&self, css: &str, text: Option<&str>) -> fantoccini::elements::Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                match text {
                    None => return e,
                    Some(t) if e.text().await.is_ok_and(|have| have.contains(t)) => return e,
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                let source = self.client.source().await.unwrap_or_default();
                panic!("no {css} with {text:?}; the console: {:?}; the page: {source}", self.console().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.wait_for(css, None).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.wait_for(css, None).await.click().await.unwrap();
    }

    async fn go(&self, base: &str, route: &str) {
        self.client.goto(&format!("{base}/{route}")).await.unwrap();
    }

    /// Saves the page at a desktop's and a phone's width, when `SMSGATE_SCREENSHOTS` names a folder.
    async fn screenshot(&self, name: &str) {
        let Ok(folder) = std::env::var("SMSGATE_SCREENSHOTS") else { return };
        std::fs::create_dir_all(&folder).unwrap();
        for (suffix, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
            self.client.set_window_size(width, height).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(PathBuf::from(&folder).join(format!("{name}-{suffix}.png")), png).unwrap();
        }
        self.client.set_window_size(1280, 900).await.unwrap();
    }
}

async fn api(client: &reqwest::Client, base: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    common::call_as(KEY, client, base, method, path, body).await
}

/// An operator's first day and a business user's: the first user made on the sign-in page with the admin key, the
/// overview, a text sent from the form with its count, followed to delivered on its journey, found in the list; a
/// colleague added as a viewer, who signs in, cannot send, and signs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_user_sends_and_follows_a_text_in_the_browser() {
    let data = data_dir("dashboard");
    let server = start(&data, Vec::<String>::new(), Some(KEY));
    let base = server.base.clone();
    let http = common::http_client(Duration::from_secs(10));
    let b = Browser::start("first-user").await;

    // Signed out, the page asks for a sign-in; a wrong password is said on the page.
    b.go(&base, "").await;
    b.wait_for("h1", Some("Sign in to smsgate")).await;
    b.clean("the sign-in page").await;
    b.fill("input[name=email]", "nobody@clinic.example").await;
    b.fill("input[name=password]", "not a password").await;
    b.click("button[type=submit]").await;
    b.wait_for(".notice.error", Some("wrong email or password")).await;
    let console = b.console().await;
    assert!(console.iter().all(|(_, m)| m.contains("401")), "only the refused sign-in: {console:?}");

    // The first user, with the admin key.
    b.click("a[href='#/setup']").await;
    b.fill("input[name=admin_key]", KEY).await;
    b.fill("input[name=email]", "Operator@Clinic.example").await;
    b.fill("input[name=password]", "correct horse battery").await;
    b.click("button[type=submit]").await;
    b.wait_for("main h1", Some("Overview")).await;
    b.wait_for(".who .email", Some("operator@clinic.example · owner")).await;
    b.wait_for(".cards .stat", Some("Sent")).await;
    b.clean("the overview").await;

    // A text from the form: the counter says how it goes, then it is followed to delivered.
    b.click("a[href='#/send']").await;
    b.fill("input[name=to]", "+447700900123").await;
    b.fill("input[name=from]", "Clinic").await;
    b.fill("textarea[name=body]", "Your appointment is on Friday at 10:00.").await;
    b.wait_for(".counter", Some("39 characters · gsm7 · 1 part")).await;
    b.fill("textarea[name=body]", "Ваш приём в пятницу").await;
    b.wait_for(".counter", Some("ucs2 · 1 part")).await;
    b.fill("textarea[name=body]", "Your appointment is on Friday at 10:00.").await;
    b.screenshot("send").await;
    b.click("form button[type=submit]").await;
    b.wait_for(".notice.ok", Some("Accepted")).await;
    b.clean("the send form").await;
    b.click(".notice.ok + a").await;
    b.wait_for(".timeline", Some("delivered")).await;
    b.wait_for(".facts", Some("+447700900123")).await;
    b.clean("the message's journey").await;
    b.screenshot("message").await;
    let inbox = api(&http, &base, "GET", "/v1/sim/handsets/+447700900123/messages", None).await;
    assert_eq!(inbox["data"][0]["body"], "Your appointment is on Friday at 10:00.", "the handset has it: {inbox}");

    b.click("a[href='#/messages']").await;
    b.wait_for("table", Some("Your appointment is on Friday")).await;
    b.clean("the messages").await;
    b.screenshot("messages").await;
    b.go(&base, "#/overview").await;
    b.wait_for("[data-metric='Sent']", Some("1")).await;
    b.clean("the overview after a send").await;
    b.screenshot("overview").await;

    // A colleague as a viewer: they read, and neither the menu nor the API lets them send.
    b.click("a[href='#/users']").await;
    b.fill("form input[name=email]", "reception@clinic.example").await;
    b.fill("form input[name=password]", "front desk 2026").await;
    let role = b.wait_for("form select[name=role]", None).await;
    role.select_by_value("viewer").await.unwrap();
    b.click("form button[type=submit]").await;
    b.wait_for(".notice.ok", Some("reception@clinic.example was added as viewer")).await;
    b.wait_for("table", Some("reception@clinic.example")).await;
    b.clean("the users").await;
    b.click(".who button").await;
    b.wait_for("h1", Some("Sign in to smsgate")).await;
    b.fill("input[name=email]", "reception@clinic.example").await;
    b.fill("input[name=password]", "front desk 2026").await;
    b.click("button[type=submit]").await;
    b.wait_for(".who .email", Some("viewer")).await;
    let menu = b.wait_for("nav", None).await.text().await.unwrap();
    assert!(menu.contains("Messages") && !menu.contains("Send") && !menu.contains("Users"), "{menu}");
    b.go(&base, "#/send").await;
    b.wait_for("main h1", Some("Not found")).await;
    let tried = b
        .client
        .execute(
            "const s = await (await fetch('/v1/session')).json();
             const r = await fetch('/v1/messages', {method: 'POST', headers: {'Content-Type': 'application/json',
               'X-CSRF-Token': s.csrf_token}, body: JSON.stringify({to: '+447700900124', from: 'Clinic', body: 'x'})});
             return r.status;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(tried, json!(403), "a viewer's session cannot send");
    b.console().await; // the 403 just provoked
    b.click(".who button").await;
    b.wait_for("h1", Some("Sign in to smsgate")).await;
    b.clean("signed out").await;
    let after = b.client.execute("return (await fetch('/v1/session')).json();", vec![]).await.unwrap();
    assert_eq!(after, json!({"signed_in": false}));

    b.close().await;
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// Runs `smsgate users ...` against `base` with the admin key; stdin gives the password.
fn users_cli(base: &str, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .arg("users")
        .args(args)
        .env("SMSGATE_URL", base)
        .env("SMSGATE_API_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `smsgate users add --account ID --email EMAIL --role owner --password-stdin`: the first owner of an account, who
/// then signs in; `users list` shows them, a second add of the email is refused, `users remove` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_added_from_the_command_line() {
    let data = data_dir("users-cli");
    let server = start(&data, Vec::<String>::new(), Some(KEY));
    let base = server.base.clone();
    let http = common::http_client(Duration::from_secs(10));
    let account = api(&http, &base, "POST", "/v1/accounts", Some(json!({"name": "Clinic"}))).await;
    let account = account["id"].as_str().unwrap().to_string();
    let add = ["add", "--account", &account, "--email", "Dr@Clinic.example", "--role", "owner", "--password-stdin"];
    let out = users_cli(&base, &add, "a long password\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.starts_with("added usr_") && said.contains("owner") && said.contains("dr@clinic.example"), "{said}");
    let again = users_cli(&base, &add, "a long password\n");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("email_taken"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let short = users_cli(&base, &["add", "--email", "x@clinic.example", "--password-stdin"], "short\n");
    assert!(String::from_utf8_lossy(&short.stderr).contains("invalid_password"));
    let empty = users_cli(&base, &["add", "--email", "x@clinic.example", "--password-stdin"], "");
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("no password"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    let no_terminal = users_cli(&base, &["add", "--email", "x@clinic.example"], "");
    assert!(String::from_utf8_lossy(&no_terminal.stderr).contains("--password-stdin"));

    // The new owner signs in, in the account named.
    let signed = http
        .post(format!("{base}/v1/session"))
        .json(&json!({"email": "dr@clinic.example", "password": "a long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);
    let session: Value = signed.json().await.unwrap();
    assert_eq!(session["account"]["id"].as_str(), Some(account.as_str()));

    // The admin key's own account lists its users (none); the owner's id removes them.
    let list = users_cli(&base, &["list"], "");
    assert!(list.status.success() && list.stdout.is_empty(), "{}", String::from_utf8_lossy(&list.stdout));
    let id = said.split_whitespace().nth(1).unwrap();
    let gone = users_cli(&base, &["remove", id], "");
    assert!(!gone.status.success(), "another account's user is not the admin account's to remove by id");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not_found"));
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}
