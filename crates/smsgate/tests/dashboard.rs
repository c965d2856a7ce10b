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

    /// Signs in on the sign-in page (which must be showing) and waits for the frame, with the user's email in it.
    async fn sign_in(&self, email: &str, password: &str) {
        self.fill("input[name=email]", email).await;
        self.fill("input[name=password]", password).await;
        self.click("button[type=submit]").await;
        self.wait_for(".who .email", Some(email)).await;
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
    b.sign_in("reception@clinic.example", "front desk 2026").await;
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
    // The viewer's own password, from their account page.
    b.click(".who a.email").await;
    b.fill("input[name=current_password]", "front desk 2026").await;
    b.fill("input[name=new_password]", "front desk 2027").await;
    b.click("form button.primary").await;
    b.wait_for(".notice.ok", Some("Your password is changed")).await;
    b.clean("a new password").await;
    b.click(".who button").await;
    b.wait_for("h1", Some("Sign in to smsgate")).await;
    b.clean("signed out").await;
    b.sign_in("reception@clinic.example", "front desk 2027").await;
    b.wait_for(".who .email", Some("viewer")).await;
    b.click(".who button").await;
    b.wait_for("h1", Some("Sign in to smsgate")).await;
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

/// A clinic's day in the browser, as its owner: sign in; import a CSV of patients, with its progress and the row
/// refused; write a template and preview it for a patient; launch a campaign and watch it complete, with its
/// chart; a patient's reply arrives in the inbox without a reload, and is answered there; a STOP lands in the
/// opt-outs; sign out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_imports_texts_a_list_and_answers_a_reply_in_the_browser() {
    let data = data_dir("dashboard-clinic");
    let server = start(&data, Vec::<String>::new(), Some(KEY));
    let base = server.base.clone();
    let http = common::http_client(Duration::from_secs(10));
    // The operator's part: the clinic's account, its number, its owner.
    let account = api(&http, &base, "POST", "/v1/accounts", Some(json!({"name": "Riverside Clinic"}))).await;
    let account = account["id"].as_str().unwrap().to_string();
    let number = "+447700900900";
    api(&http, &base, "POST", "/v1/numbers", Some(json!({"number": number, "account_id": account}))).await;
    let owner = json!({"email": "desk@riverside.example", "password": "riverside clinic", "role": "owner", "account_id": account});
    api(&http, &base, "POST", "/v1/users", Some(owner)).await;

    let b = Browser::start("clinic").await;
    b.go(&base, "").await;
    b.sign_in("desk@riverside.example", "riverside clinic").await;
    b.wait_for(".who .account", Some("Riverside Clinic")).await;
    b.clean("signed in").await;

    // Import: three patients and a row whose number is not one.
    let csv = data.join("patients.csv");
    std::fs::write(
        &csv,
        "Mobile,Full name,Doctor\n+447700900301,Ann Lee,Dr Patel\n+447700900302,Bob Stone,Dr Patel\nnot a number,Cy Broken,Dr Okafor\n+447700900303,Dee Moss,Dr Okafor\n",
    )
    .unwrap();
    b.go(&base, "#/contacts").await;
    b.click("a[href='#/import']").await;
    b.wait_for("input[name=file]", None).await.send_keys(&csv.display().to_string()).await.unwrap();
    let mobile = b.wait_for("select[name='map-Mobile']", None).await;
    assert_eq!(mobile.prop("value").await.unwrap().as_deref(), Some("phone"), "Mobile is guessed as the phone");
    b.wait_for("select[name='map-Full name']", None).await.select_by_value("name").await.unwrap();
    b.fill("input[name=list]", "Patients").await;
    b.click("form button[type=submit]").await;
    b.wait_for("label[for=import-progress]", Some("completed: 4 rows read — 3 created, 0 updated, 1 refused")).await;
    b.wait_for("#import-errors", Some("invalid_phone")).await;
    let full = "const p = document.querySelector('#import-progress'); return p.value === p.max;";
    assert_eq!(b.client.execute(full, vec![]).await.unwrap(), json!(true), "the bar is full");
    b.clean("the import").await;
    b.screenshot("import").await;
    b.go(&base, "#/contacts").await;
    b.wait_for("table", Some("Ann Lee")).await;
    b.wait_for(".columns", Some("Patients")).await;
    b.screenshot("contacts").await;

    // A template, previewed for Ann.
    b.go(&base, "#/templates").await;
    b.click(".heading button.primary").await;
    b.fill("input[name=name]", "Reminder").await;
    b.fill("textarea[name=body]", "Hi {{ name }}, {{ fields.Doctor }} sees you on Friday.").await;
    b.click("form button[type=submit]").await;
    b.wait_for(".notice.ok", Some("Saved Reminder")).await;
    b.fill("input[name=preview_contact]", "+447700900301").await;
    b.click("button.preview-button").await;
    b.wait_for(".preview .sms", Some("Hi Ann Lee, Dr Patel sees you on Friday.")).await;
    b.wait_for(".preview .counter", Some("gsm7 · 1 part")).await;
    b.clean("the template").await;
    b.screenshot("templates").await;

    // A campaign to the list, watched until it has delivered to all three.
    b.go(&base, "#/campaigns/new").await;
    b.fill("input[name=name]", "Friday reminders").await;
    let lists = b.wait_for("select[name=lists]", Some("Patients")).await;
    lists.select_by_label("Patients (3)").await.unwrap();
    b.wait_for("select[name=template_id]", Some("Reminder")).await.select_by_label("Reminder").await.unwrap();
    b.fill("input[name=from]", number).await;
    b.wait_for("select[name=category]", None).await.select_by_value("transactional").await.unwrap();
    b.click("form button[type=submit]").await;
    b.wait_for(".actions button.primary", Some("Start")).await.click().await.unwrap();
    b.wait_for("[data-metric='Delivered']", Some("3")).await;
    b.wait_for("label[for=campaign-progress]", Some("3 of 3")).await;
    b.wait_for(".badge", Some("completed")).await;
    b.wait_for("figure.chart-box", None).await;
    b.clean("the campaign").await;
    b.screenshot("campaign").await;
    let texts = api(&http, &base, "GET", "/v1/sim/handsets/+447700900302/messages", None).await;
    assert_eq!(texts["data"][0]["body"], "Hi Bob Stone, Dr Patel sees you on Friday.");

    // Bob answers; the inbox, already open, shows it without a reload; the answer reaches his handset.
    b.go(&base, "#/inbox").await;
    b.wait_for("main h1", Some("Inbox")).await;
    let reply = json!({"to": number, "body": "Can I come at 11 instead?"});
    api(&http, &base, "POST", "/v1/sim/handsets/+447700900302/reply", Some(reply)).await;
    b.wait_for(".threads .badge.unread", Some("1")).await;
    b.click(".threads a").await;
    b.wait_for(".bubbles", Some("Can I come at 11 instead?")).await;
    b.fill("textarea[name=reply]", "Yes, 11:00 on Friday is yours.").await;
    b.click("form.reply button").await;
    b.wait_for(".bubbles", Some("Yes, 11:00 on Friday is yours.")).await;
    b.clean("the inbox").await;
    b.screenshot("inbox").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let got = api(&http, &base, "GET", "/v1/sim/handsets/+447700900302/messages", None).await;
        if got["data"].as_array().unwrap().iter().any(|m| m["body"] == "Yes, 11:00 on Friday is yours.") {
            break;
        }
        assert!(Instant::now() < deadline, "the answer did not reach the handset: {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Dee texts STOP: it lands in the opt-outs, with where it came from.
    api(&http, &base, "POST", "/v1/sim/handsets/+447700900303/reply", Some(json!({"to": number, "body": "STOP"})))
        .await;
    b.go(&base, "#/compliance").await;
    b.wait_for("table", Some("+447700900303")).await;
    b.clean("the opt-outs").await;
    b.screenshot("compliance").await;

    b.click(".who button").await;
    b.wait_for("h1", Some("Sign in to smsgate")).await;
    b.clean("signed out").await;
    b.close().await;
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// The operator's: two carriers with failover; one put in `disconnected` shows down on the operator's page, and
/// the traffic of its route moves to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_goes_down_shows_down_and_its_traffic_fails_over_in_the_browser() {
    let data = data_dir("dashboard-operator");
    let server = start(&data, Vec::<String>::new(), Some(KEY));
    let base = server.base.clone();
    let http = common::http_client(Duration::from_secs(10));
    api(&http, &base, "POST", "/v1/connectors", Some(json!({"name": "carrier-a", "kind": "sim"}))).await;
    api(&http, &base, "POST", "/v1/connectors", Some(json!({"name": "carrier-b", "kind": "sim"}))).await;
    let route = json!({"name": "uk", "match": {"prefix": "+44"},
        "connectors": [{"name": "carrier-a"}, {"name": "carrier-b", "priority": 1}]});
    api(&http, &base, "POST", "/v1/routes", Some(route)).await;
    let user = json!({"email": "noc@operator.example", "password": "network operations", "role": "owner"});
    api(&http, &base, "POST", "/v1/users", Some(user)).await;

    let b = Browser::start("operator").await;
    b.go(&base, "").await;
    b.sign_in("noc@operator.example", "network operations").await;
    b.click("a[href='#/operator']").await;
    b.wait_for("[data-health='carrier-a']", Some("up")).await;
    b.fill("input[name=resolve_to]", "+447700900123").await;
    b.click(".inline-form button").await;
    b.wait_for(".resolved", Some("carrier-a")).await;
    b.clean("the operator's page").await;

    b.wait_for("select[name='mode-carrier-a']", None).await.select_by_value("disconnected").await.unwrap();
    b.wait_for(".notice.ok", Some("carrier-a is now disconnected")).await;
    // Traffic for the route: five failures in a row take carrier-a down, and each text goes by carrier-b.
    let mut ids = Vec::new();
    for i in 0..8 {
        let m = api(
            &http,
            &base,
            "POST",
            "/v1/messages",
            Some(json!({"to": format!("+4477009005{i:02}"), "from": "Op", "body": "x"})),
        )
        .await;
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    b.wait_for("[data-health='carrier-a']", Some("down")).await;
    b.wait_for("[data-health='carrier-b']", Some("up")).await;
    b.clean("a carrier down").await;
    b.screenshot("operator").await;
    for id in ids {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = api(&http, &base, "GET", &format!("/v1/messages/{id}"), None).await;
            if m["status"] == "delivered" {
                assert_eq!(m["connector"], "carrier-b", "{m}");
                break;
            }
            assert!(Instant::now() < deadline, "not delivered: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    b.close().await;
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// A developer's and an automator's pages, as the admin account's owner: an API key made (shown once, working)
/// and revoked; webhook URLs set and a delivery seen with its attempt; SMPP credentials added; an automation made
/// from an example, fired by an event, and its run seen step by step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_webhooks_credentials_and_automations_in_the_browser() {
    let data = data_dir("dashboard-developers");
    let server = start(&data, Vec::<String>::new(), Some(KEY));
    let base = server.base.clone();
    let http = common::http_client(Duration::from_secs(10));
    // A webhook receiver on loopback that answers 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = format!("http://{}/hook", listener.local_addr().unwrap());
    let receiver = tokio::spawn(async move {
        let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
        axum::serve(listener, app).await.unwrap();
    });
    let user = json!({"email": "dev@operator.example", "password": "developer pages", "role": "owner"});
    api(&http, &base, "POST", "/v1/users", Some(user)).await;

    let b = Browser::start("developers").await;
    b.go(&base, "").await;
    b.sign_in("dev@operator.example", "developer pages").await;
    b.click("a[href='#/developers']").await;

    // A key: shown once, it works; revoked, it does not.
    b.fill("input[name=key_name]", "checkout").await;
    b.click("input[name=scope-read]").await; // read off: send alone
    b.click(".keys-form button.primary").await;
    let key = b.wait_for("code[data-key=new]", Some("sk_")).await.text().await.unwrap();
    let sent = common::call_as(
        &key,
        &http,
        &base,
        "POST",
        "/v1/messages",
        Some(json!({"to": "+447700900777", "from": "Dev", "body": "k"})),
    )
    .await;
    assert!(sent["id"].is_string(), "the key sends: {sent}");
    let read = http.get(format!("{base}/v1/messages")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(read.status(), 403, "no read scope");
    b.wait_for("table", Some("checkout")).await;
    let revoke = b.wait_for("table tr:last-child button.danger", None).await;
    revoke.click().await.unwrap();
    b.client.accept_alert().await.unwrap();
    b.wait_for("table", Some("revoked")).await;
    let after = http.get(format!("{base}/v1/inbound")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(after.status(), 401, "a revoked key");

    // Webhooks: set, then a text's callbacks seen delivered with their attempts.
    b.fill("input[name=status_url]", &hooks).await;
    b.click(".webhooks-form button.primary").await;
    b.wait_for(".notice.ok", Some("Webhooks saved")).await;
    api(&http, &base, "POST", "/v1/messages", Some(json!({"to": "+447700900778", "from": "Dev", "body": "w"}))).await;
    b.wait_for("#deliveries", Some("delivered")).await;
    b.wait_for("#deliveries", Some("http_2xx (")).await;

    // SMPP credentials.
    b.fill("input[name=system_id]", "clinic1").await;
    b.fill("input[name=smpp_password]", "secret1").await;
    b.click(".smpp-form button.primary").await;
    b.wait_for(".notice.ok", Some("clinic1 may bind now")).await;
    b.wait_for("#smpp-credentials", Some("clinic1")).await;
    b.clean("the developers' page").await;
    b.screenshot("developers").await;

    // An automation from an example, fired by an event.
    b.go(&base, "#/automations").await;
    b.click(".heading button.primary").await;
    b.wait_for("select[name=example]", None).await.select_by_value("Order shipped").await.unwrap();
    let spec = json!({"name": "Shipped", "trigger": {"type": "event", "event": "order.shipped"},
        "steps": [{"type": "send", "from": "Shop", "body": "Order {{ data.order_id }} is on its way"}]});
    b.fill("textarea[name=automation]", &spec.to_string()).await;
    b.click("form button.primary").await;
    b.wait_for(".notice.ok", Some("Shipped saved and on")).await;
    let event = json!({"name": "order.shipped", "contact": {"phone": "+447700900779", "name": "Eve"}, "data": {"order_id": "A-17"}});
    api(&http, &base, "POST", "/v1/events", Some(event)).await;
    b.click("table button.link").await;
    let deadline = Instant::now() + WAIT;
    loop {
        b.click(".inline-form button[type=submit]").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let runs = b.wait_for("#main", None).await.text().await.unwrap();
        if runs.contains("completed") && runs.contains("0 send") {
            break;
        }
        assert!(Instant::now() < deadline, "no run: {runs}");
    }
    b.clean("the automations").await;
    b.screenshot("automations").await;
    let got = api(&http, &base, "GET", "/v1/sim/handsets/+447700900779/messages", None).await;
    assert_eq!(got["data"][0]["body"], "Order A-17 is on its way");

    b.close().await;
    receiver.abort();
    stop(server);
    let _ = std::fs::remove_dir_all(&data);
}
