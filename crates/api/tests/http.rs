#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! The REST API over a real socket: the router with the real store (SQLite, and the real PostgreSQL in a fresh
//! schema), the engine and the simulated network, served on an ephemeral loopback port and driven with an HTTP
//! client. Waits are bounded polls (10 s at most).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use smsgate_api::{AppState, generate_key, key_prefix};
use smsgate_connectors::Kit;
use smsgate_connectors::sim::{SimNetwork, VirtualCarrier};
use smsgate_core::admission::Policy;
use smsgate_engine::{Config, Engine, Registry};
use smsgate_store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Server {
    base: String,
    admin_key: String,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    engine: smsgate_engine::Engine,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The webhook deliverer, apart so that a test can restart it.
    deliverer: std::sync::Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    cleanup: ServerCleanup,
}

fn postgres_url() -> String {
    std::env::var("SMSGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn on_server(sql: String) {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.expect("PostgreSQL is up");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("statement");
    pool.close().await;
}

/// Where webhooks may go in these tests: public addresses, and the receivers on 127.0.0.1 (as an operator allows
/// a receiver on the same host); no other private address.
fn local() -> smsgate_core::netguard::Destinations {
    smsgate_core::netguard::Destinations::new(smsgate_core::access::IpRanges::parse(&["127.0.0.1/32"]).unwrap())
}

async fn start(backend: &str) -> Server {
    let (url, cleanup): (String, ServerCleanup) = match backend {
        "sqlite" => {
            let path = std::env::temp_dir().join(format!("smsgate-api-{}.db", uuid::Uuid::now_v7().simple()));
            let url = format!("sqlite://{}", path.display());
            (
                url,
                Box::new(move || {
                    Box::pin(async move {
                        for suffix in ["", "-wal", "-shm"] {
                            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                        }
                    })
                }),
            )
        }
        _ => {
            let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
            on_server(format!("CREATE SCHEMA {schema}")).await;
            let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
            (url, Box::new(move || Box::pin(async move { on_server(format!("DROP SCHEMA {schema} CASCADE")).await })))
        }
    };
    let store = smsgate_store::open(&url, 4).await.expect("store");
    let admin = store.create_account("admin", true, smsgate_core::Timestamp::now()).await.unwrap();
    let (admin_key, hash) = generate_key();
    store.create_api_key(admin.id, &hash, &key_prefix(&admin_key), smsgate_core::Timestamp::now()).await.unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let carrier = VirtualCarrier {
        submit_latency: Duration::from_millis(1),
        receipt_delay: Duration::from_millis(20),
        ..VirtualCarrier::default()
    };
    let sim = Arc::new(SimNetwork::new(vec![carrier], tx));
    let config = Config {
        poll_interval: Duration::from_millis(20),
        retry_base: Duration::from_millis(20),
        expiry_interval: Duration::from_millis(50),
        // Room the batch test goes beyond.
        max_in_flight: 1000,
        ..Config::default()
    };
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(Kit::new(sim.clone()))), config);
    let shutdown = CancellationToken::new();
    let engine_task = tokio::spawn(engine.clone().run(rx, shutdown.clone()));
    // Requests find the dispatcher running (and routes loaded), as they would a server that has been up a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.is_running() {
        assert!(tokio::time::Instant::now() < deadline, "the engine did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let deliverer_stop = CancellationToken::new();
    let deliverer = tokio::spawn(
        smsgate_api::webhooks::Deliverer::new(store.clone(), "test", smsgate_core::clock::system(), local())
            .run(deliverer_stop.clone()),
    );
    let policy = Policy { callbacks: local(), ..Policy::default() };
    let ingress = smsgate_engine::ingress::Ingress::spawn(engine.clone(), store.clone(), Arc::new(policy));
    let messages = smsgate_services::Messages::new(ingress, store.clone());
    let imports = std::env::temp_dir().join(format!("smsgate-imports-{}", uuid::Uuid::now_v7()));
    let contacts = smsgate_services::Contacts::new(messages.clone(), store.clone()).import_dir(imports).unwrap();
    let links = smsgate_services::links::Links::new(store.clone(), "https://go.example");
    let campaigns = smsgate_services::Campaigns::new(contacts.clone(), links.clone(), store.clone(), "test");
    tokio::spawn(campaigns.clone().run(shutdown.clone()));
    let automations = smsgate_services::Automations::new(contacts.clone(), links.clone(), store.clone(), "test");
    tokio::spawn(automations.clone().run(shutdown.clone()));
    let analytics = smsgate_services::Analytics::new(store.clone(), smsgate_core::clock::system());
    tokio::spawn(analytics.clone().run(shutdown.clone()));
    let admin = smsgate_services::Admin::new(store.clone(), engine.clone()).webhook_destinations(local());
    let state = AppState {
        templates: smsgate_services::Templates::new(contacts.clone(), links.clone(), store.clone()),
        campaigns: campaigns.clone(),
        automations: automations.clone(),
        conversations: smsgate_services::Conversations::new(messages.clone(), store.clone()),
        analytics: analytics.clone(),
        links,
        contacts,
        messages,
        users: smsgate_services::Users::new(admin.clone()),
        admin,
        engine: engine.clone(),
        sim: Some(sim),
        metrics: None,
        keys: smsgate_api::KeyCache::default(),
        metrics_token: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let http_shutdown = shutdown.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, smsgate_api::router(state))
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await
            .unwrap();
    });
    smsgate_api::webhooks::install_tls();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    Server {
        base,
        admin_key,
        client,
        store,
        engine,
        shutdown,
        tasks: vec![engine_task, http],
        deliverer: std::sync::Mutex::new(Some((deliverer_stop, deliverer))),
        cleanup,
    }
}

type ServerCleanup = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

impl Server {
    /// Stops the webhook deliverer (letting deliveries under way finish) and starts a new one on the same store.
    async fn restart_deliverer(&self) {
        let old = self.deliverer.lock().unwrap().take();
        if let Some((stop, task)) = old {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("stops").unwrap();
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            smsgate_api::webhooks::Deliverer::new(self.store.clone(), "test", smsgate_core::clock::system(), local())
                .run(stop.clone()),
        );
        *self.deliverer.lock().unwrap() = Some((stop, task));
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let deliverer = self.deliverer.lock().unwrap().take();
        if let Some((stop, task)) = deliverer {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("stops").unwrap();
        }
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t).await.expect("stops").unwrap();
        }
        self.store.close().await;
        (self.cleanup)().await;
    }

    async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            return (status, Value::Null); // 204
        }
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}")))
    }

    /// A new account and its key, made with the admin key; the operator lets it send from any sender, as the
    /// tests of other things send from whatever they like ([`Server::owned_tenant`] keeps the default).
    async fn tenant(&self, name: &str) -> (String, String) {
        self.account_with(json!({"name": name, "sender_policy": "any"})).await
    }

    /// A new account that sends only from what it owns (the default), and its key.
    async fn owned_tenant(&self, name: &str) -> (String, String) {
        self.account_with(json!({"name": name})).await
    }

    async fn account_with(&self, body: Value) -> (String, String) {
        let (s, account) = self.call("POST", "/v1/accounts", Some(&self.admin_key), Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{account}");
        let id = account["id"].as_str().unwrap().to_string();
        let (s, key) = self.call("POST", &format!("/v1/accounts/{id}/keys"), Some(&self.admin_key), None).await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        (id, key["key"].as_str().unwrap().to_string())
    }

    async fn until(&self, key: &str, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (s, m) = self.call("GET", &format!("/v1/messages/{id}"), Some(key), None).await;
            assert_eq!(s, StatusCode::OK);
            if m["status"] == status {
                return m;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck at {}, waiting for {status}", m["status"]);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let s = super::start("sqlite").await; super::$name(&s).await; s.stop().await; }
        )* }
        mod on_postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let s = super::start("postgres").await; super::$name(&s).await; s.stop().await; }
        )* }
    };
}

on_both!(
    send_to_delivered,
    errors_are_json_with_stable_codes,
    idempotency,
    tenants,
    cancel,
    lists_and_inbound,
    batch,
    openapi_matches_the_routes,
    concurrent_sends,
    connectors_and_routes,
    throughput_limits,
    full_windows_step_back,
    failover_and_recovery,
    outages_wait_off_the_queue,
    webhooks_signed_in_order_and_retried,
    concatenated_messages_by_parts,
    smpp_credentials,
    senders_are_owned_and_inbound_follows_them,
    the_simulated_network_is_the_operators,
    a_batch_may_use_its_own_limit,
    webhooks_reach_no_private_address,
    keys_are_listed_scoped_and_revoked,
    rate_limits_answer_429_with_retry_after,
    changes_are_audited,
    one_accounts_stuck_webhooks_do_not_hold_anothers,
    stop_is_enforced_on_every_path,
    contacts_lists_and_segments,
    quiet_hours_hold_marketing,
    import_export_and_erase,
    an_opt_out_may_hold_for_one_number,
    templates_render_as_previewed,
    campaigns_send_each_contact_once,
    campaigns_pause_resume_and_cancel,
    automations_answer_events_for_their_account_only,
    conversations_thread_both_ways_for_their_account_only,
    analytics_equal_a_count_over_the_messages,
    short_links_count_each_visit,
    users_sign_in_with_their_roles_and_csrf,
    the_dashboard_is_served_from_the_binary
);

async fn send_to_delivered(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (status, m) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"to": "+44 7700 900123", "from": "Acme", "body": "Hello €"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m}");
    // The dispatcher has room: the message was stored claimed and is on its way.
    assert_eq!((m["status"].as_str(), m["to"].as_str()), (Some("sending"), Some("+447700900123")));
    assert_eq!((m["encoding"].as_str(), m["segments"].as_u64()), (Some("gsm7"), Some(1)));
    let done = s.until(&key, m["id"].as_str().unwrap(), "delivered").await;
    let journey: Vec<&str> = done["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(journey, ["queued", "sending", "sent", "delivered"]);
    assert_eq!(done["connector"], "sim");
    let (status, inbox) = s.call("GET", "/v1/sim/handsets/+447700900123/messages", Some(&s.admin_key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inbox["data"][0]["body"], "Hello €");
    let metrics = s.client.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("smsgate_messages{status=\"sent\"} 0"), "{metrics}");
    assert!(metrics.contains("smsgate_queue_depth 0"), "{metrics}");
    let (status, health) = s.call("GET", "/healthz", None, None).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));
}

async fn errors_are_json_with_stable_codes(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap().to_string();
    let good = json!({"to": "+447700900123", "from": "Acme", "body": "x"});
    let (st, v) = s.call("POST", "/v1/messages", None, Some(good.clone())).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (st, v) = s.call("POST", "/v1/messages", Some("sk_wrong"), Some(good.clone())).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    for (body, want) in [
        (json!({"to": "+447700900123", "from": "Acme", "body": ""}), "empty_body"),
        (json!({"to": "12345", "from": "Acme", "body": "x"}), "invalid_destination"),
        (json!({"to": "+447700900123", "from": "ThisIsTooLong", "body": "x"}), "invalid_sender"),
        (json!({"to": "+447700900123", "from": "Acme", "body": "a".repeat(2000)}), "body_too_long"),
        (json!({"to": "+447700900123", "from": "Acme", "body": "x", "send_at": "tomorrow"}), "invalid_send_at"),
        (json!({"to": "+447700900123", "from": "Acme", "body": "x", "validity": 0}), "invalid_validity"),
        (
            json!({"to": "+447700900123", "from": "Acme", "body": "x", "callback_statuses": ["queued"]}),
            "invalid_callback_statuses",
        ),
        (
            json!({"to": "+447700900123", "from": "Acme", "body": "x", "callback_statuses": []}),
            "invalid_callback_statuses",
        ),
        (
            json!({"to": "+447700900123", "from": "Acme", "body": "x", "callback_statuses": "delivered"}),
            "invalid_field",
        ),
        (json!({"to": "+447700900123", "from": "Acme", "body": "x", "colour": "red"}), "invalid_field"),
        (json!({"to": "+447700900123", "from": "Acme"}), "invalid_field"),
    ] {
        let (st, v) = s.call("POST", "/v1/messages", Some(&key), Some(body)).await;
        assert_eq!((st, code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, want), "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // A good callback_statuses is kept and shown with the message.
    let picky =
        json!({"to": "+447700900123", "from": "Acme", "body": "x", "callback_statuses": ["failed", "delivered"]});
    let (st, v) = s.call("POST", "/v1/messages", Some(&key), Some(picky)).await;
    assert_eq!((st, &v["callback_statuses"]), (StatusCode::CREATED, &json!(["delivered", "failed"])), "{v}");
    let raw = |body: &'static str, ct: &'static str| {
        let req = s.client.post(format!("{}/v1/messages", s.base)).bearer_auth(&key).header("content-type", ct);
        async move {
            let r = req.body(body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = raw("{not json", "application/json").await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (st, v) = raw("to=x", "application/x-www-form-urlencoded").await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    // The server answers 413 without reading the rest and closes that connection, so it gets a client of its own.
    let big = format!("{{\"body\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", s.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (st, v) = (r.status(), r.json::<Value>().await.unwrap());
    assert_eq!((st, code(&v).as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    let (st, v) = s.call("GET", "/v1/messages/01a21626-06c7-75b5-b27d-dbce5b772ecb", Some(&key), None).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (st, v) = s.call("GET", "/v1/messages/not-an-id", Some(&key), None).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (st, v) = s.call("GET", "/v1/nowhere", Some(&key), None).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let (st, v) = s.call("POST", "/v1/accounts", Some(&key), Some(json!({"name": "x"}))).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, v) = s.call("GET", "/v1/messages?limit=0", Some(&key), None).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_limit"));
    let (st, v) = s.call("GET", "/v1/messages?status=lost", Some(&key), None).await;
    assert_eq!((st, code(&v).as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_status"));
}

async fn idempotency(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let send = |body: Value| {
        let req =
            s.client.post(format!("{}/v1/messages", s.base)).bearer_auth(&key).header("idempotency-key", "order-42");
        async move {
            let r = req.json(&body).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"to": "+447700900123", "from": "Acme", "body": "once"});
    let (st1, first) = send(body.clone()).await;
    let (st2, again) = send(body).await;
    assert_eq!((st1, st2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["id"], again["id"]);
    let (st, v) = send(json!({"to": "+447700900123", "from": "Acme", "body": "twice"})).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    let (_, list) = s.call("GET", "/v1/messages", Some(&key), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

async fn tenants(s: &Server) {
    let (_, a) = s.tenant("a").await;
    let (_, b) = s.tenant("b").await;
    let (_, m) =
        s.call("POST", "/v1/messages", Some(&a), Some(json!({"to": "+447700900123", "from": "A", "body": "x"}))).await;
    let id = m["id"].as_str().unwrap();
    let (st, _) = s.call("GET", &format!("/v1/messages/{id}"), Some(&b), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.call("DELETE", &format!("/v1/messages/{id}"), Some(&b), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = s.call("GET", "/v1/messages", Some(&b), None).await;
    assert!(list["data"].as_array().unwrap().is_empty());
    let (st, _) = s.call("GET", &format!("/v1/messages/{id}/callbacks"), Some(&b), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // SMPP credentials and webhook settings are their account's too.
    let system_id = format!("t{}", &id[id.len() - 8..]);
    let creds = json!({"system_id": system_id, "password": "secret"});
    assert_eq!(s.call("POST", "/v1/smpp/credentials", Some(&a), Some(creds)).await.0, StatusCode::CREATED);
    for method in ["GET", "DELETE"] {
        let (st, _) = s.call(method, &format!("/v1/smpp/credentials/{system_id}"), Some(&b), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method}");
    }
    let (_, theirs) = s.call("GET", "/v1/smpp/credentials", Some(&b), None).await;
    assert!(theirs["data"].as_array().unwrap().is_empty());
    let hooks = json!({"status_url": "https://a.example/hook"});
    let (_, theirs) = s.call("PUT", "/v1/webhooks", Some(&a), Some(hooks)).await;
    let (_, w) = s.call("GET", "/v1/webhooks", Some(&b), None).await;
    assert!(w["status_url"].is_null() && w["secret"].is_string() && w["secret"] != theirs["secret"], "{w}");
}

async fn cancel(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let later = json!({"to": "+447700900123", "from": "Acme", "body": "later", "send_at": "2099-01-01T00:00:00Z"});
    let (st, v) = s.call("POST", "/v1/messages", Some(&key), Some(later)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "more than a year ahead: {v}");
    let soon = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (st, m) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"to": "+447700900123", "from": "Acme", "body": "x", "send_at": soon})),
        )
        .await;
    assert_eq!((st, m["status"].as_str()), (StatusCode::CREATED, Some("scheduled")));
    let id = m["id"].as_str().unwrap();
    let (st, c) = s.call("DELETE", &format!("/v1/messages/{id}"), Some(&key), None).await;
    assert_eq!((st, c["status"].as_str()), (StatusCode::OK, Some("canceled")));
    let (st, v) = s.call("DELETE", &format!("/v1/messages/{id}"), Some(&key), None).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_cancelable")));
}

async fn lists_and_inbound(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let to = format!("+4477009001{i}5");
        let (_, m) =
            s.call("POST", "/v1/messages", Some(&key), Some(json!({"to": to, "from": "Acme", "body": "x"}))).await;
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let (_, page1) = s.call("GET", "/v1/messages?limit=3", Some(&key), None).await;
    assert_eq!(page1["data"].as_array().unwrap().len(), 3);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = s.call("GET", &format!("/v1/messages?limit=3&cursor={cursor}"), Some(&key), None).await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 2);
    assert!(page2["next_cursor"].is_null());
    let (_, only) = s.call("GET", "/v1/messages?to=%2B447700900125", Some(&key), None).await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1);
    s.until(&key, &ids[0], "delivered").await;
    let (st, _) = s
        .call(
            "POST",
            "/v1/sim/handsets/+447700900105/reply",
            Some(&s.admin_key),
            Some(json!({"to": "Acme", "body": "Thanks"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, inbound) = s.call("GET", "/v1/inbound", Some(&key), None).await;
        if let Some(m) = inbound["data"].as_array().unwrap().first() {
            assert_eq!((m["status"].as_str(), m["body"].as_str()), (Some("received"), Some("Thanks")));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no inbound message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn batch(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let items = json!({"messages": [
        {"to": "+447700900115", "from": "Acme", "body": "one"},
        {"to": "nope", "from": "Acme", "body": "two"},
        {"to": "+447700900125", "from": "Acme", "body": "three", "colour": "red"},
        {"to": "+447700900135", "from": "Acme", "body": "four"},
    ]});
    let (st, v) = s.call("POST", "/v1/messages/batch", Some(&key), Some(items)).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    assert_eq!(data[0]["body"], "one");
    assert_eq!(data[1]["error"]["code"], "invalid_destination");
    assert_eq!(data[2]["error"]["code"], "invalid_field");
    assert_eq!(data[3]["body"], "four");
    for m in [&data[0], &data[3]] {
        s.until(&key, m["id"].as_str().unwrap(), "delivered").await;
    }
    // More than the dispatcher has room for (1,000 submissions at once): as many as it has room for are stored
    // claimed and sent at once, the rest queue and are claimed as room frees up. All arrive.
    let many: Vec<Value> =
        (0..1500).map(|i| json!({"to": format!("+4477009{:04}5", i), "from": "A", "body": "x"})).collect();
    let (st, v) = s.call("POST", "/v1/messages/batch", Some(&key), Some(json!({"messages": many}))).await;
    assert_eq!(st, StatusCode::OK);
    let data = v["data"].as_array().unwrap();
    let status = |i: usize| data[i]["status"].as_str().unwrap().to_string();
    // (Fewer than 1,000 when the dispatcher holds slots for a claim of its own at that moment.)
    let sending = (0..1500).filter(|&i| status(i) == "sending").count();
    assert!((1..=1000).contains(&sending), "{sending} sent at once");
    assert!((0..1500).all(|i| status(i) == if i < sending { "sending" } else { "queued" }));
    for i in [0, sending - 1, sending, 1499] {
        s.until(&key, data[i]["id"].as_str().unwrap(), "delivered").await;
    }
    // Batches at once, beyond the dispatcher's room, while it claims queued ones: slots are shared between
    // what the API hands over and what the dispatcher claims, and every message arrives.
    let mut posts = tokio::task::JoinSet::new();
    for b in 0..4 {
        let (client, base, key) = (s.client.clone(), s.base.clone(), key.clone());
        posts.spawn(async move {
            let many: Vec<Value> = (0..800)
                .map(|i| json!({"to": format!("+4477009{:04}5", b * 800 + i), "from": "A", "body": "x"}))
                .collect();
            let v: Value = client
                .post(format!("{base}/v1/messages/batch"))
                .bearer_auth(&key)
                .json(&json!({ "messages": many }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        });
    }
    let mut ids = Vec::new();
    while let Some(batch) = posts.join_next().await {
        ids.extend(batch.unwrap());
    }
    assert_eq!(ids.len(), 3200);
    for id in ids.iter().step_by(97).chain(ids.last()) {
        s.until(&key, id, "delivered").await;
    }
    let (st, v) = s.call("POST", "/v1/messages/batch", Some(&key), Some(json!({"messages": []}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_batch")));
    let many: Vec<Value> = (0..10_001).map(|_| json!({"to": "+447700900115", "from": "A", "body": "x"})).collect();
    let (st, v) = s.call("POST", "/v1/messages/batch", Some(&key), Some(json!({"messages": many}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_batch")));
}

async fn openapi_matches_the_routes(s: &Server) {
    let (st, doc) = s.call("GET", "/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/v1/messages", "post"),
        ("/v1/messages", "get"),
        ("/v1/messages/batch", "post"),
        ("/v1/messages/{id}", "get"),
        ("/v1/messages/{id}", "delete"),
        ("/v1/inbound", "get"),
        ("/v1/accounts", "post"),
        ("/v1/accounts", "get"),
        ("/v1/webhooks/deliveries", "get"),
        ("/v1/accounts/{id}/keys", "post"),
        ("/v1/accounts/{id}/keys", "get"),
        ("/v1/accounts/{id}/keys/{key_id}", "delete"),
        ("/v1/sim/handsets/{number}/messages", "get"),
        ("/v1/sim/handsets/{number}/reply", "post"),
        ("/v1/connectors", "post"),
        ("/v1/connectors", "get"),
        ("/v1/connectors/{name}", "get"),
        ("/v1/connectors/{name}", "patch"),
        ("/v1/connectors/{name}", "delete"),
        ("/v1/routes", "post"),
        ("/v1/routes", "get"),
        ("/v1/routes/{name}", "get"),
        ("/v1/routes/{name}", "patch"),
        ("/v1/routes/{name}", "delete"),
        ("/v1/routes/resolve", "get"),
        ("/v1/accounts/{id}", "patch"),
        ("/v1/webhooks", "put"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/rotate-secret", "post"),
        ("/v1/messages/{id}/callbacks", "get"),
        ("/v1/smpp/credentials", "post"),
        ("/v1/smpp/credentials", "get"),
        ("/v1/smpp/credentials/{system_id}", "get"),
        ("/v1/smpp/credentials/{system_id}", "delete"),
        ("/v1/smpp/lockouts", "get"),
        ("/v1/smpp/lockouts", "delete"),
        ("/v1/audit", "get"),
        ("/v1/numbers", "post"),
        ("/v1/numbers", "get"),
        ("/v1/numbers/{id}", "get"),
        ("/v1/numbers/{id}", "delete"),
        ("/v1/sender-ids", "post"),
        ("/v1/sender-ids", "get"),
        ("/v1/sender-ids/{id}", "get"),
        ("/v1/sender-ids/{id}", "delete"),
        ("/v1/sender-ids/{id}/approve", "post"),
        ("/v1/sender-ids/{id}/reject", "post"),
        ("/v1/contacts", "post"),
        ("/v1/contacts", "get"),
        ("/v1/contacts/export", "get"),
        ("/v1/contacts/import", "post"),
        ("/v1/contacts/{id}", "get"),
        ("/v1/contacts/{id}", "patch"),
        ("/v1/contacts/{id}", "delete"),
        ("/v1/contacts/{id}/consent", "get"),
        ("/v1/contacts/{id}/export", "get"),
        ("/v1/contacts/{id}/erase", "post"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/lists", "post"),
        ("/v1/lists", "get"),
        ("/v1/lists/{id}", "get"),
        ("/v1/lists/{id}", "delete"),
        ("/v1/lists/{id}/members", "post"),
        ("/v1/lists/{id}/members/{contact_id}", "delete"),
        ("/v1/segments", "post"),
        ("/v1/segments", "get"),
        ("/v1/segments/{id}", "get"),
        ("/v1/segments/{id}", "delete"),
        ("/v1/segments/{id}/contacts", "get"),
        ("/v1/opt-outs", "get"),
        ("/v1/opt-outs", "post"),
        ("/v1/opt-outs/{phone}", "delete"),
        ("/v1/settings/compliance", "get"),
        ("/v1/settings/compliance", "put"),
        ("/v1/templates", "post"),
        ("/v1/templates", "get"),
        ("/v1/templates/{id}", "get"),
        ("/v1/templates/{id}", "patch"),
        ("/v1/templates/{id}", "delete"),
        ("/v1/templates/{id}/preview", "post"),
        ("/v1/campaigns", "post"),
        ("/v1/campaigns", "get"),
        ("/v1/campaigns/{id}", "get"),
        ("/v1/campaigns/{id}", "delete"),
        ("/v1/campaigns/{id}/start", "post"),
        ("/v1/campaigns/{id}/pause", "post"),
        ("/v1/campaigns/{id}/resume", "post"),
        ("/v1/campaigns/{id}/cancel", "post"),
        ("/v1/campaigns/{id}/test", "post"),
        ("/v1/campaigns/{id}/runs", "get"),
        ("/v1/campaigns/{id}/report.csv", "get"),
        ("/v1/settings/links", "get"),
        ("/v1/settings/links", "put"),
        ("/l/{code}", "get"),
        ("/v1/automations", "post"),
        ("/v1/automations", "get"),
        ("/v1/automations/{id}", "get"),
        ("/v1/automations/{id}", "delete"),
        ("/v1/automations/{id}/enable", "post"),
        ("/v1/automations/{id}/disable", "post"),
        ("/v1/automations/{id}/runs", "get"),
        ("/v1/events", "post"),
        ("/v1/conversations", "get"),
        ("/v1/conversations", "post"),
        ("/v1/conversations/{id}", "get"),
        ("/v1/conversations/{id}/messages", "get"),
        ("/v1/conversations/{id}/messages", "post"),
        ("/v1/conversations/{id}/read", "post"),
        ("/v1/analytics", "get"),
        ("/v1/messages/plan", "post"),
        ("/v1/users", "post"),
        ("/v1/users", "get"),
        ("/v1/users/{id}", "get"),
        ("/v1/users/{id}", "patch"),
        ("/v1/users/{id}", "delete"),
        ("/v1/session", "post"),
        ("/v1/session", "get"),
        ("/v1/session", "delete"),
        ("/v1/session/password", "post"),
        ("/v1/templates/preview", "post"),
    ];
    for (path, method) in expected {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing from the document");
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "the document has routes the test does not know");
    // A real answer has exactly the properties the document gives MessageView.
    let schema = &doc["components"]["schemas"]["MessageView"]["properties"];
    let (_, key) = s.tenant("acme").await;
    let (_, m) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+447700900123", "from": "A", "body": "x"})))
        .await;
    let (_, got) = s.call("GET", &format!("/v1/messages/{}", m["id"].as_str().unwrap()), Some(&key), None).await;
    let mut real: Vec<&String> = got.as_object().unwrap().keys().collect();
    let mut doc_keys: Vec<&String> = schema.as_object().unwrap().keys().collect();
    real.sort();
    doc_keys.sort();
    assert_eq!(real, doc_keys);
}

async fn concurrent_sends(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (client, base, key) = (s.client.clone(), s.base.clone(), key.clone());
        tasks.spawn(async move {
            let mut req = client.post(format!("{base}/v1/messages")).bearer_auth(&key);
            // Every tenth request repeats one idempotency key: they must all get one message.
            if i % 10 == 0 {
                req = req.header("idempotency-key", "same");
            }
            let body = json!({"to": "+447700900123", "from": "Acme", "body": if i % 10 == 0 { "same".to_string() } else { format!("n{i}") }});
            let r = req.json(&body).send().await.unwrap();
            (i, r.status(), r.json::<Value>().await.unwrap())
        });
    }
    let mut ids = std::collections::HashSet::new();
    let mut same = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (i, status, m) = done.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{m}");
        let id = m["id"].as_str().unwrap().to_string();
        if i % 10 == 0 {
            same.insert(id);
        } else {
            assert!(ids.insert(id));
        }
    }
    assert_eq!((ids.len(), same.len()), (180, 1));
    let (_, list) = s.call("GET", "/v1/messages?limit=1000", Some(&key), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 181);
}

async fn connectors_and_routes(s: &Server) {
    let admin = Some(s.admin_key.as_str());
    let (account, key) = s.tenant("acme").await;
    // Tenants do not manage connectors or routes.
    let (st, e) = s.call("GET", "/v1/connectors", Some(&key), None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    // The zero-config connector and route are there.
    let (_, all) = s.call("GET", "/v1/connectors", admin, None).await;
    assert_eq!(all["data"][0]["name"], "sim");
    let (_, routes) = s.call("GET", "/v1/routes", admin, None).await;
    assert_eq!(routes["data"][0]["name"], "default");

    let alpha =
        json!({"name": "alpha", "kind": "sim", "submit_latency_ms": 0, "receipt_delay_ms": 5, "throughput": 500});
    let (st, c) = s.call("POST", "/v1/connectors", admin, Some(alpha.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!(
        (c["receipt_delay_ms"].as_u64(), c["throughput"].as_u64(), c["in_force"].as_bool()),
        (Some(5), Some(500), Some(true))
    );
    let (st, e) = s.call("POST", "/v1/connectors", admin, Some(alpha)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("connector_exists")));
    for bad in [
        json!({"name": "x", "kind": "smtp"}),
        json!({"name": "x", "kind": "sim", "delivery_ratio": 2}),
        json!({"name": "x", "kind": "sim", "mode": "asleep"}),
        json!({"name": "x", "kind": "sim", "throughput": -1}),
        json!({"name": "no spaces", "kind": "sim"}),
        json!({"kind": "sim"}),
    ] {
        let (st, e) = s.call("POST", "/v1/connectors", admin, Some(bad.clone())).await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_connector")),
            "{bad}"
        );
    }
    let (st, _) = s
        .call("POST", "/v1/connectors", admin, Some(json!({"name": "beta", "kind": "sim", "receipt_delay_ms": 5})))
        .await;
    assert_eq!(st, StatusCode::CREATED);

    // UK numbers through alpha at 0.01 a segment, beta behind it.
    let uk = json!({"name": "uk", "match": {"prefix": "44"}, "connectors": [
        {"name": "alpha", "price": 0.01}, {"name": "beta", "priority": 1, "price": 0.005}]});
    let (st, r) = s.call("POST", "/v1/routes", admin, Some(uk.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{r}");
    assert_eq!(r["match"]["prefix"], "+44");
    let (st, e) = s.call("POST", "/v1/routes", admin, Some(uk)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("route_exists")));
    let unknown = json!({"name": "x", "connectors": [{"name": "gamma"}]});
    let (st, e) = s.call("POST", "/v1/routes", admin, Some(unknown)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_connector")));
    let (st, e) = s
        .call(
            "POST",
            "/v1/routes",
            admin,
            Some(json!({"name": "x", "match": {"country": "Britain"}, "connectors": [{"name": "beta"}]})),
        )
        .await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_route")));
    let (_, routes) = s.call("GET", "/v1/routes", admin, None).await;
    let order: Vec<&str> = routes["data"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["uk", "default"]);

    // A question without a destination gets a JSON error like every other.
    let (st, e) = s.call("GET", "/v1/routes/resolve?from=Acme", admin, None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_query")));
    // Resolve explains; a message follows it, priced by its segments.
    let (st, why) = s.call("GET", "/v1/routes/resolve?to=%2B447700900123&from=Acme", admin, None).await;
    assert_eq!(st, StatusCode::OK, "{why}");
    assert_eq!(
        (why["decision"].as_str(), why["route"].as_str(), why["connector"].as_str()),
        (Some("connector"), Some("uk"), Some("alpha"))
    );
    assert!(why["why"].as_array().unwrap().iter().any(|w| w == "route \"uk\" matches"), "{why}");
    let long = "x".repeat(200);
    let (_, m) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+447700900123", "from": "Acme", "body": long})))
        .await;
    let done = s.until(&key, m["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(
        (done["connector"].as_str(), done["segments"].as_u64(), done["price"].as_f64()),
        (Some("alpha"), Some(2), Some(0.02))
    );
    // Elsewhere: the default route.
    let (_, m) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+14155550123", "from": "Acme", "body": "hi"})))
        .await;
    assert_eq!(s.until(&key, m["id"].as_str().unwrap(), "delivered").await["connector"], "sim");

    // alpha rejects everything: a retry passes over it to beta.
    let (st, c) = s.call("PATCH", "/v1/connectors/alpha", admin, Some(json!({"mode": "reject_all"}))).await;
    assert_eq!((st, c["mode"].as_str(), c["receipt_delay_ms"].as_u64()), (StatusCode::OK, Some("reject_all"), Some(5)));
    let (_, m) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+447700900124", "from": "Acme", "body": "hi"})))
        .await;
    let done = s.until(&key, m["id"].as_str().unwrap(), "delivered").await;
    assert_eq!((done["connector"].as_str(), done["price"].as_f64()), (Some("beta"), Some(0.005)));
    let journey: Vec<&str> = done["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(journey, ["queued", "sending", "queued", "sending", "sent", "delivered"]);
    assert!(done["events"][2]["detail"].as_str().unwrap().contains("reject_all"), "{done}");

    // An account limited to named routes uses only those.
    let path = format!("/v1/accounts/{account}");
    let (st, e) = s.call("PATCH", &path, admin, Some(json!({"routes": ["nope"]}))).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_route")));
    let (st, a) = s.call("PATCH", &path, admin, Some(json!({"routes": ["default"]}))).await;
    assert_eq!((st, a["routes"].clone()), (StatusCode::OK, json!(["default"])));
    let (_, why) =
        s.call("GET", &format!("/v1/routes/resolve?to=%2B447700900123&account={account}"), admin, None).await;
    assert_eq!((why["route"].as_str(), why["connector"].as_str()), (Some("default"), Some("sim")), "{why}");
    assert!(why["why"][0].as_str().unwrap().contains("not among the account's routes"), "{why}");
    let (_, m) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+447700900125", "from": "Acme", "body": "hi"})))
        .await;
    assert_eq!(s.until(&key, m["id"].as_str().unwrap(), "delivered").await["connector"], "sim");
    let (st, a) = s.call("PATCH", &path, admin, Some(json!({"routes": null}))).await;
    assert_eq!((st, a["routes"].clone()), (StatusCode::OK, Value::Null));

    // A connector a route names cannot go; a route can, the default one too, and then nothing matches.
    let (st, e) = s.call("DELETE", "/v1/connectors/beta", admin, None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("connector_in_use")));
    let (st, _) = s.call("PATCH", "/v1/routes/uk", admin, Some(json!({"connectors": [{"name": "alpha"}]}))).await;
    assert_eq!(st, StatusCode::OK);
    for gone in ["/v1/connectors/beta", "/v1/routes/default"] {
        let r = s.client.delete(format!("{}{gone}", s.base)).bearer_auth(&s.admin_key).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{gone}");
    }
    let (_, why) = s.call("GET", &format!("/v1/routes/resolve?to=%2B14155550123&account={account}"), admin, None).await;
    assert_eq!(why["decision"], "no_route");
    let (_, m) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+14155550123", "from": "Acme", "body": "hi"})))
        .await;
    let failed = s.until(&key, m["id"].as_str().unwrap(), "failed").await;
    assert_eq!(failed["error_code"], "no_route");
    let (st, _) = s.call("GET", "/v1/routes/default", admin, None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// Sends `n` messages to distinct handsets (none a magic number), starting at `first`; returns their ids.
async fn send_many(s: &Server, key: &str, first: usize, n: usize) -> Vec<String> {
    let messages: Vec<Value> = (first..first + n)
        .map(|i| json!({"to": format!("+447700{:05}5", 10_000 + i), "from": "Acme", "body": "hi"}))
        .collect();
    let (st, r) = s.call("POST", "/v1/messages/batch", Some(key), Some(json!({"messages": messages}))).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    r["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

/// When each of `n` messages reached the carrier through `connector`, sorted (what the simulated handsets
/// +447700{first}5, +447700{first + 1}5, ... say).
async fn reached_carrier(s: &Server, first: usize, n: usize, connector: &str) -> Vec<i64> {
    let mut times = Vec::new();
    for i in first..first + n {
        let path = format!("/v1/sim/handsets/+447700{i:05}5/messages");
        let (_, inbox) = s.call("GET", &path, Some(&s.admin_key), None).await;
        let got = &inbox["data"][0];
        assert_eq!(got["connector"], connector, "{inbox}");
        let at = chrono::DateTime::parse_from_rfc3339(got["received_at"].as_str().unwrap()).unwrap();
        times.push(at.timestamp_millis());
    }
    times.sort();
    times
}

/// The most of `times` (sorted) within any one second.
fn busiest_second(times: &[i64]) -> usize {
    (0..times.len()).map(|i| times[i..].iter().take_while(|u| **u - times[i] < 1000).count()).max().unwrap_or(0)
}

async fn throughput_limits(s: &Server) {
    let admin = Some(s.admin_key.as_str());
    let (_, key) = s.tenant("acme").await;
    for c in [
        json!({"name": "slow", "kind": "sim", "submit_latency_ms": 0, "receipt_delay_ms": 5, "throughput": 20}),
        json!({"name": "fast", "kind": "sim", "submit_latency_ms": 0, "receipt_delay_ms": 5}),
    ] {
        assert_eq!(s.call("POST", "/v1/connectors", admin, Some(c)).await.0, StatusCode::CREATED);
    }
    for r in [
        json!({"name": "limited", "match": {"sender": "Slow"}, "connectors": [{"name": "slow"}]}),
        json!({"name": "open", "match": {"sender": "Acme"}, "connectors": [{"name": "fast"}]}),
    ] {
        assert_eq!(s.call("POST", "/v1/routes", admin, Some(r)).await.0, StatusCode::CREATED);
    }
    // 50 messages to the limited connector and 300 to the unlimited one, at once.
    let slow: Vec<Value> =
        (0..50).map(|i| json!({"to": format!("+447700{:05}5", 20_000 + i), "from": "Slow", "body": "hi"})).collect();
    let started = tokio::time::Instant::now();
    let (st, r) = s.call("POST", "/v1/messages/batch", Some(&key), Some(json!({"messages": slow}))).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    let slow_ids: Vec<String> =
        r["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    let fast_ids = send_many(s, &key, 0, 300).await;
    for id in &fast_ids {
        s.until(&key, id, "delivered").await;
    }
    for id in &slow_ids {
        s.until(&key, id, "delivered").await;
    }
    let slow_done = started.elapsed();
    assert!(slow_done >= Duration::from_millis(2_400), "50 messages at 20/s took only {slow_done:?}");
    // The limited connector: never more than 20 in any one second, at the carrier.
    let slow_times = reached_carrier(s, 20_000, 50, "slow").await;
    assert!(busiest_second(&slow_times) <= 20, "{} in one second: {slow_times:?}", busiest_second(&slow_times));
    // The unlimited one was not held back by it, nor paced itself: it ran at well over the limited rate (how far
    // over is the machine's business, not this test's).
    let fast_times = reached_carrier(s, 10_000, 300, "fast").await;
    assert!(busiest_second(&fast_times) > 40, "the unlimited one did {} a second at best", busiest_second(&fast_times));
    let (_, c) = s.call("GET", "/v1/connectors/slow", admin, None).await;
    assert_eq!(c["counters"]["accepted"], 50, "{c}");
    assert!(c["counters"]["put_back"].as_u64().unwrap() > 0, "{c}");
}

/// A slow carrier with a window of one and more messages waiting for it than the node has submission slots: they
/// step back into the queue instead of holding the slots, so another connector's messages go through meanwhile.
async fn full_windows_step_back(s: &Server) {
    let admin = Some(s.admin_key.as_str());
    let (_, key) = s.tenant("acme").await;
    for c in [
        json!({"name": "narrow", "kind": "sim", "submit_latency_ms": 200, "receipt_delay_ms": 5, "window": 1}),
        json!({"name": "wide", "kind": "sim", "submit_latency_ms": 0, "receipt_delay_ms": 5}),
    ] {
        assert_eq!(s.call("POST", "/v1/connectors", admin, Some(c)).await.0, StatusCode::CREATED);
    }
    for r in [
        json!({"name": "narrow", "match": {"sender": "Narrow"}, "connectors": [{"name": "narrow"}]}),
        json!({"name": "wide", "match": {"sender": "Acme"}, "connectors": [{"name": "wide"}]}),
    ] {
        assert_eq!(s.call("POST", "/v1/routes", admin, Some(r)).await.0, StatusCode::CREATED);
    }
    // 1,100 for the narrow carrier (at 5 a second: minutes of work), more than the 1,000 submission slots.
    for batch in 0..2 {
        let messages: Vec<Value> = (0..550)
            .map(|i| json!({"to": format!("+447701{:05}5", batch * 550 + i), "from": "Narrow", "body": "hi"}))
            .collect();
        let (st, r) = s.call("POST", "/v1/messages/batch", Some(&key), Some(json!({"messages": messages}))).await;
        assert_eq!(st, StatusCode::OK, "{r}");
    }
    for id in send_many(s, &key, 0, 50).await {
        assert_eq!(s.until(&key, &id, "delivered").await["connector"], "wide");
    }
    // Held behind the narrow window, the 50 would have waited for at least 100 of its submissions (20 s).
    let (_, c) = s.call("GET", "/v1/connectors/narrow", admin, None).await;
    let accepted = c["counters"]["accepted"].as_u64().unwrap();
    assert!(accepted < 50, "the narrow carrier took {accepted} first: {c}");
    // Each put back once, for about when the window can take it (a second's work waits in memory): not back
    // every few hundred milliseconds, each time a claim and a put-back.
    let put_back = c["counters"]["put_back"].as_u64().unwrap();
    assert!(put_back > 0 && put_back < 1500, "{c}");
    assert!(c["counters"]["in_flight"].as_u64().unwrap() <= 1, "{c}");
}

async fn failover_and_recovery(s: &Server) {
    let admin = Some(s.admin_key.as_str());
    let (_, key) = s.tenant("acme").await;
    for c in ["main", "backup"] {
        let body = json!({"name": c, "kind": "sim", "submit_latency_ms": 0, "receipt_delay_ms": 5});
        assert_eq!(s.call("POST", "/v1/connectors", admin, Some(body)).await.0, StatusCode::CREATED);
    }
    let route = json!({"name": "uk", "match": {"prefix": "+44"},
                       "connectors": [{"name": "main"}, {"name": "backup", "priority": 1}]});
    assert_eq!(s.call("POST", "/v1/routes", admin, Some(route)).await.0, StatusCode::CREATED);
    let by = |m: &Value| m["connector"].as_str().unwrap().to_string();
    for id in send_many(s, &key, 0, 20).await {
        assert_eq!(by(&s.until(&key, &id, "delivered").await), "main");
    }
    // The main carrier goes away mid-run: nothing is lost, traffic moves to the backup, main is marked down.
    let (st, _) = s.call("PATCH", "/v1/connectors/main", admin, Some(json!({"mode": "disconnected"}))).await;
    assert_eq!(st, StatusCode::OK);
    let ids = send_many(s, &key, 20, 40).await;
    for id in &ids {
        assert_eq!(by(&s.until(&key, id, "delivered").await), "backup");
    }
    let (_, c) = s.call("GET", "/v1/connectors/main", admin, None).await;
    assert_eq!(c["health"]["up"], false, "{c}");
    assert!(c["health"]["consecutive_failures"].as_u64().unwrap() >= 5, "{c}");
    let (_, why) = s.call("GET", "/v1/routes/resolve?to=%2B447700900123", admin, None).await;
    assert_eq!(why["connector"], "backup", "{why}");
    // It heals: after its cool-down a probe brings it back, and traffic returns.
    let (st, _) = s.call("PATCH", "/v1/connectors/main", admin, Some(json!({"mode": "healthy"}))).await;
    assert_eq!(st, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut next = 60;
    loop {
        let id = &send_many(s, &key, next, 1).await[0];
        next += 1;
        if by(&s.until(&key, id, "delivered").await) == "main" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "main never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, c) = s.call("GET", "/v1/connectors/main", admin, None).await;
    assert_eq!(
        (c["health"]["up"].as_bool(), c["health"]["consecutive_failures"].as_u64()),
        (Some(true), Some(0)),
        "{c}"
    );
}

/// Messages whose route has no connector up wait off the queue: one line in their journey for the whole outage,
/// not a claim and a put-back every so often. They go when the routes change (another route now takes them) or
/// when a connector of their route comes back.
async fn outages_wait_off_the_queue(s: &Server) {
    let admin = Some(s.admin_key.as_str());
    let (_, key) = s.tenant("acme").await;
    for body in [
        json!({"name": "flaky", "kind": "sim", "mode": "disconnected", "submit_latency_ms": 0}),
        json!({"name": "spare", "kind": "sim", "submit_latency_ms": 0, "receipt_delay_ms": 5}),
    ] {
        assert_eq!(s.call("POST", "/v1/connectors", admin, Some(body)).await.0, StatusCode::CREATED);
    }
    let route = json!({"name": "outage", "match": {"sender": "Outage"}, "connectors": [{"name": "flaky"}]});
    assert_eq!(s.call("POST", "/v1/routes", admin, Some(route)).await.0, StatusCode::CREATED);
    // A change of routes sends every waiting message back to routing, twice a tick apart; let it pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !s.engine.rerouted() {
        assert!(tokio::time::Instant::now() < deadline, "the waiting messages were never routed again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = key.as_str();
    let send = |first: usize| {
        let messages: Vec<Value> = (first..first + 10)
            .map(|i| json!({"to": format!("+447702{:05}5", i), "from": "Outage", "body": "hi"}))
            .collect();
        async move {
            let (st, r) = s.call("POST", "/v1/messages/batch", Some(key), Some(json!({"messages": messages}))).await;
            assert_eq!(st, StatusCode::OK, "{r}");
            r["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    let waits = |m: &Value| {
        let events = m["events"].as_array().unwrap();
        events.iter().filter(|e| e["detail"].as_str().unwrap().contains("is up: waiting for one")).count()
    };
    // The first five sends find the link down (and are tried again after a pause); the fifth failure takes the
    // connector down. None of it spends an attempt: the connector failed, not the messages.
    let first = send(0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for id in &first {
        loop {
            let (_, m) = s.call("GET", &format!("/v1/messages/{id}"), Some(key), None).await;
            if m["status"] == "queued" && waits(&m) == 1 {
                assert_eq!(m["attempts"], 0, "{m}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "never waited for its route: {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Three seconds of outage later: still one waiting line each (each message used to be claimed and put back
    // several times a second at first). The connector's probe may have taken one of them meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut probed = Vec::new();
    for id in &first {
        let (_, m) = s.call("GET", &format!("/v1/messages/{id}"), Some(key), None).await;
        assert!(waits(&m) <= 2, "{m}");
        if waits(&m) == 2 || m["status"] != "queued" {
            probed.push(m);
        }
    }
    assert!(probed.len() <= 1, "only a probe goes to a connector that is down: {probed:?}");
    // A route that takes them now, first in the order: they go at once, through it.
    let spare =
        json!({"name": "spare", "position": -1, "match": {"sender": "Outage"}, "connectors": [{"name": "spare"}]});
    assert_eq!(s.call("POST", "/v1/routes", admin, Some(spare)).await.0, StatusCode::CREATED);
    for id in &first {
        let m = s.until(key, id, "delivered").await;
        assert_eq!((&m["connector"], &m["attempts"]), (&json!("spare"), &json!(1)), "{m}");
    }
    // Without it, and with the carrier back: the next ten wait until the connector's probe finds it up.
    assert_eq!(s.call("DELETE", "/v1/routes/spare", admin, None).await.0, StatusCode::NO_CONTENT);
    let second = send(10).await;
    let (st, _) = s.call("PATCH", "/v1/connectors/flaky", admin, Some(json!({"mode": "healthy"}))).await;
    assert_eq!(st, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    for id in &second {
        loop {
            let (_, m) = s.call("GET", &format!("/v1/messages/{id}"), Some(key), None).await;
            if m["status"] == "delivered" {
                assert_eq!(m["connector"], "flaky", "{m}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the connector never came back: {m}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a webhook receiver got: the signature header and the body of each POST, by path.
#[derive(Default)]
struct Received {
    /// Path, signature, body, and whether it was answered 200.
    posts: Vec<(String, String, String, bool)>,
    failing: bool,
}

/// A real HTTP receiver on a loopback port: answers 503 while `failing`, else 200, and keeps every POST.
async fn receiver() -> (String, Arc<std::sync::Mutex<Received>>, CancellationToken) {
    let got = Arc::new(std::sync::Mutex::new(Received { failing: true, ..Received::default() }));
    let state = got.clone();
    let app = axum::Router::new().route(
        "/{kind}",
        axum::routing::post(
            move |axum::extract::Path(kind): axum::extract::Path<String>,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let state = state.clone();
                async move {
                    let sig = headers.get("smsgate-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let mut s = state.lock().unwrap();
                    let ok = !s.failing;
                    s.posts.push((kind, sig, body, ok));
                    if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { until.cancelled().await }).await.unwrap();
    });
    (base, got, stop)
}

/// Checks a `Smsgate-Signature` header the way docs/webhooks.md tells receivers to: any of its `v1` signatures
/// made with `secret`.
fn verify(secret: &str, header: &str, body: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let mut parts = header.split(',');
    let Some(t) = parts.next().and_then(|p| p.strip_prefix("t=")) else { return false };
    parts.filter_map(|p| p.strip_prefix("v1=")).any(|v1| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        hex::decode(v1).is_ok_and(|sig| mac.verify_slice(&sig).is_ok())
    })
}

async fn webhooks_signed_in_order_and_retried(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (hooks, got, stop_receiver) = receiver().await;
    // Every account has its signing secret from its creation, before any URL is set.
    let (st, w) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    assert_eq!((st, &w["status_url"], &w["previous_secret_valid_until"]), (StatusCode::OK, &Value::Null, &Value::Null));
    let first_secret = w["secret"].as_str().unwrap().to_string();
    assert!(first_secret.starts_with("whsec_") && first_secret.len() > 40, "{w}");
    let (st, e) = s.call("PUT", "/v1/webhooks", Some(&key), Some(json!({"status_url": "ftp://x"}))).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_url")));
    let body = json!({"status_url": format!("{hooks}/status"), "inbound_url": format!("{hooks}/inbound")});
    let (st, w) = s.call("PUT", "/v1/webhooks", Some(&key), Some(body)).await;
    assert_eq!((st, w["secret"].as_str()), (StatusCode::OK, Some(first_secret.as_str())), "{w}");
    // Rotated: the old secret still signs for a day beside the new one.
    let (_, w) = s.call("POST", "/v1/webhooks/rotate-secret", Some(&key), None).await;
    let secret = w["secret"].as_str().unwrap().to_string();
    assert_ne!(secret, first_secret);
    let until = w["previous_secret_valid_until"].as_str().expect("a grace period");
    let until = chrono::DateTime::parse_from_rfc3339(until).unwrap().timestamp();
    assert!((until - chrono::Utc::now().timestamp() - 86_400).abs() < 60, "{w}");

    // Three messages while the receiver fails: one delivered, one undelivered (0002), one failed (0001).
    let mut ids = Vec::new();
    for to in ["+447700900125", "+447700900002", "+447700900001"] {
        let (_, m) =
            s.call("POST", "/v1/messages", Some(&key), Some(json!({"to": to, "from": "Acme", "body": "hi"}))).await;
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    for (id, end) in ids.iter().zip(["delivered", "undelivered", "failed"]) {
        s.until(&key, id, end).await;
    }
    // The receiver said 503 to the first of each message's callbacks; the rest wait behind it, in order.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().posts.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no callback tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The deliverer records a result after its POST has come back: wait for the record.
    let cb = loop {
        let (_, cb) = s.call("GET", &format!("/v1/messages/{}/callbacks", ids[0]), Some(&key), None).await;
        if cb["data"][0]["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            break cb;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt recorded: {cb}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(cb["data"][0]["status"], "sending", "{cb}");
    assert_eq!(cb["data"][0]["attempts"][0]["result"], "http_5xx", "{cb}");
    assert_eq!(cb["data"][0]["state"], "pending", "{cb}");
    // The account's recent deliveries, newest first, name their messages; another account sees none of them.
    let (st, recent) = s.call("GET", "/v1/webhooks/deliveries?limit=200", Some(&key), None).await;
    assert_eq!(st, StatusCode::OK);
    let recent = recent["data"].as_array().unwrap();
    assert!(recent.len() >= 3, "{recent:?}");
    assert!(recent.iter().all(|c| ids.contains(&c["message_id"].as_str().unwrap().to_string())), "{recent:?}");
    let newest_first = recent.windows(2).all(|w| w[0]["id"].as_str() >= w[1]["id"].as_str());
    assert!(newest_first, "{recent:?}");
    let (_, other) = s.tenant("globex").await;
    let (_, theirs) = s.call("GET", "/v1/webhooks/deliveries", Some(&other), None).await;
    assert_eq!(theirs["data"].as_array().map(Vec::len), Some(0));
    let (st, e) = s.call("GET", "/v1/webhooks/deliveries?limit=0", Some(&key), None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_limit")));
    // A restart of the deliverer between the failure and the recovery loses nothing.
    s.restart_deliverer().await;
    got.lock().unwrap().failing = false;
    // A reply from a handset: an inbound callback.
    let (st, _) = s
        .call(
            "POST",
            "/v1/sim/handsets/+447700900125/reply",
            Some(&s.admin_key),
            Some(json!({"to": "Acme", "body": "thanks"})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    // Wait until every callback is recorded delivered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'waiting: loop {
        assert!(tokio::time::Instant::now() < deadline, "callbacks missing: {:?}", got.lock().unwrap().posts);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for id in &ids {
            let (_, cb) = s.call("GET", &format!("/v1/messages/{id}/callbacks"), Some(&key), None).await;
            if cb["data"].as_array().unwrap().iter().any(|c| c["state"] != "delivered") {
                continue 'waiting;
            }
        }
        if got.lock().unwrap().posts.iter().any(|p| p.0 == "inbound" && p.3) {
            break;
        }
    }
    stop_receiver.cancel();
    let posts = std::mem::take(&mut got.lock().unwrap().posts);
    // Every POST is signed with the new secret and, within the grace period, with the old one; never with an
    // empty one.
    for (_, sig, body, _) in &posts {
        assert!(verify(&secret, sig, body), "bad signature {sig} on {body}");
        assert!(verify(&first_secret, sig, body), "no signature with the previous secret: {sig}");
        assert!(!verify("", sig, body), "signed with an empty secret: {sig}");
        assert!(!verify("whsec_other", sig, body));
    }
    // Each message's callbacks were taken once each, in order.
    let bodies: Vec<Value> =
        posts.iter().filter(|p| p.3).map(|(_, _, b, _)| serde_json::from_str(b).unwrap()).collect();
    for (id, journey) in ids.iter().zip([
        vec!["sending", "sent", "delivered"],
        vec!["sending", "sent", "undelivered"],
        vec!["sending", "failed"],
    ]) {
        let seen: Vec<&str> =
            bodies.iter().filter(|b| b["message_id"] == id.as_str()).map(|b| b["status"].as_str().unwrap()).collect();
        assert_eq!(seen, journey, "{id}");
    }
    let failed = bodies.iter().find(|b| b["status"] == "failed").unwrap();
    assert_eq!(
        (failed["type"].as_str(), failed["error_code"].as_str()),
        (Some("message.status"), Some("invalid_destination"))
    );
    assert_eq!(failed["message"]["to"], "+447700900001");
    let inbound = bodies.iter().find(|b| b["type"] == "message.inbound").unwrap();
    assert_eq!((inbound["status"].as_str(), inbound["message"]["body"].as_str()), (Some("received"), Some("thanks")));
    assert!(posts.iter().any(|(kind, _, b, _)| kind == "inbound" && b.contains("message.inbound")));
    let (_, cb) = s.call("GET", &format!("/v1/messages/{}/callbacks", ids[0]), Some(&key), None).await;
    let states: Vec<&str> = cb["data"].as_array().unwrap().iter().map(|c| c["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["delivered", "delivered", "delivered"], "{cb}");
    let first = &cb["data"][0]["attempts"];
    assert_eq!(
        (first[0]["result"].as_str(), first.as_array().unwrap().last().unwrap()["result"].as_str()),
        (Some("http_5xx"), Some("http_2xx"))
    );
}

async fn concatenated_messages_by_parts(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let long = "part ".repeat(80);
    let send = |to: &'static str| {
        let (body, key) = (json!({"to": to, "from": "Acme", "body": long.clone()}), key.clone());
        async move { s.call("POST", "/v1/messages", Some(&key), Some(body)).await.1["id"].as_str().unwrap().to_string() }
    };
    // Three parts, each with the carrier's id and receipt: delivered once all three are.
    let id = send("+447700900125").await;
    let done = s.until(&key, &id, "delivered").await;
    assert_eq!(done["segments"], 3);
    let details: Vec<&str> = done["events"].as_array().unwrap().iter().map(|e| e["detail"].as_str().unwrap()).collect();
    assert!(details.iter().any(|d| d.starts_with("sim accepted its 3 parts: carrier ids ")), "{details:?}");
    assert!(details.last().unwrap().contains(" of 3: "), "{details:?}");
    // One part undelivered (the simulator's 0002): the message is undelivered.
    let id = send("+447700900002").await;
    let done = s.until(&key, &id, "undelivered").await;
    assert!(
        done["events"].as_array().unwrap().last().unwrap()["detail"].as_str().unwrap().starts_with("part 3 of 3: "),
        "{done}"
    );
}

async fn smpp_credentials(s: &Server) {
    let (acme_id, acme) = s.tenant("acme").await;
    let (_, other) = s.tenant("other").await;
    let body = json!({"system_id": "acme_app", "password": "s3cret!", "allowed_ips": ["10.0.0.0/8", "127.0.0.1"],
                      "max_binds": 2, "throughput": 50});
    let (st, c) = s.call("POST", "/v1/smpp/credentials", Some(&acme), Some(body.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    assert_eq!((c["system_id"].as_str(), c["max_binds"].as_u64()), (Some("acme_app"), Some(2)));
    assert!(c.get("password").is_none() && c.get("password_hash").is_none(), "never shown: {c}");
    // Kept as a slow hash that the password verifies against.
    let stored = s.store.smpp_credential("acme_app").await.unwrap().unwrap();
    assert_eq!(stored.account_id.to_string(), acme_id);
    assert!(stored.password_hash.starts_with("$argon2id$"));
    assert!(smsgate_core::access::verify_password("s3cret!", &stored.password_hash));
    // A system_id is unique on the server.
    let (st, e) = s.call("POST", "/v1/smpp/credentials", Some(&other), Some(body)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("system_id_taken")));
    for (bad, code) in [
        (json!({"system_id": "x", "password": "ninechars"}), "invalid_password"),
        (json!({"system_id": "x", "password": ""}), "invalid_password"),
        (json!({"system_id": "has space", "password": "p"}), "invalid_system_id"),
        (json!({"system_id": "sixteen_chars_id", "password": "p"}), "invalid_system_id"),
        (json!({"system_id": "x", "password": "five5"}), "invalid_password"),
        (json!({"system_id": "x", "password": "secret", "allowed_ips": ["10.0.0.0/99"]}), "invalid_allowed_ips"),
        (json!({"system_id": "x", "password": "secret", "max_binds": 0}), "invalid_max_binds"),
        (json!({"system_id": "x", "password": "secret", "throughput": -1}), "invalid_throughput"),
    ] {
        let (st, e) = s.call("POST", "/v1/smpp/credentials", Some(&acme), Some(bad.clone())).await;
        assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{bad}");
    }
    // Each account sees and removes only its own.
    let (_, list) = s.call("GET", "/v1/smpp/credentials", Some(&acme), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    let (_, list) = s.call("GET", "/v1/smpp/credentials", Some(&other), None).await;
    assert_eq!(list["data"], json!([]));
    let (st, _) = s.call("GET", "/v1/smpp/credentials/acme_app", Some(&other), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.call("DELETE", "/v1/smpp/credentials/acme_app", Some(&other), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, c) = s.call("GET", "/v1/smpp/credentials/acme_app", Some(&acme), None).await;
    assert_eq!((st, c["allowed_ips"].clone()), (StatusCode::OK, json!(["10.0.0.0/8", "127.0.0.1"])));
    let (st, _) = s.call("DELETE", "/v1/smpp/credentials/acme_app", Some(&acme), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.call("GET", "/v1/smpp/credentials/acme_app", Some(&acme), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

impl Server {
    /// The inbound messages an account has, by body, waiting (bounded) until `n` arrived.
    async fn inbound(&self, key: &str, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, inbound) = self.call("GET", "/v1/inbound", Some(key), None).await;
            let bodies: Vec<String> =
                inbound["data"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
            if bodies.len() >= n {
                return bodies;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} inbound, waiting for {n}", bodies.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reply(&self, handset: &str, to: &str, body: &str) {
        let path = format!("/v1/sim/handsets/{handset}/reply");
        let (st, v) = self.call("POST", &path, Some(&self.admin_key), Some(json!({"to": to, "body": body}))).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    }
}

/// Numbers and sender IDs are owned: an account sends only from its own (or, when the operator lets it, from what
/// nobody owns), and what is sent to an owned number is its owner's, whoever wrote last from it.
async fn senders_are_owned_and_inbound_follows_them(s: &Server) {
    let (acme_id, acme) = s.owned_tenant("acme").await;
    // Globex may send from anything nobody owns; it tries Acme's doors.
    let (globex_id, globex) = s.tenant("globex").await;
    let send = |key: String, from: &'static str, to: &'static str| async move {
        s.call("POST", "/v1/messages", Some(&key), Some(json!({"to": to, "from": from, "body": "hi"}))).await
    };
    let (st, e) = send(acme.clone(), "AcmeBank", "+447700900135").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("sender_not_owned")), "{e}");

    // Acme asks for its sender ID; it waits for the operator, whom only the admin key is.
    let (st, asked) = s.call("POST", "/v1/sender-ids", Some(&acme), Some(json!({"sender_id": "AcmeBank"}))).await;
    assert_eq!((st, asked["status"].as_str()), (StatusCode::CREATED, Some("pending")), "{asked}");
    let sender_path = format!("/v1/sender-ids/{}", asked["id"].as_str().unwrap());
    let (st, _) = s.call("POST", &format!("{sender_path}/approve"), Some(&acme), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    for (method, path) in [("GET", sender_path.clone()), ("DELETE", sender_path.clone())] {
        let (st, _) = s.call(method, &path, Some(&globex), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path} with another account's key");
    }
    let (st, taken) = s.call("POST", "/v1/sender-ids", Some(&globex), Some(json!({"sender_id": "acmebank"}))).await;
    assert_eq!((st, taken["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("sender_id_taken")));
    let (st, mine) = s.call("GET", "/v1/sender-ids", Some(&globex), None).await;
    assert_eq!((st, mine["data"].as_array().unwrap().len()), (StatusCode::OK, 0), "{mine}");
    let (st, approved) = s.call("POST", &format!("{sender_path}/approve"), Some(&s.admin_key), None).await;
    assert_eq!((st, approved["status"].as_str()), (StatusCode::OK, Some("active")), "{approved}");

    // The operator assigns Acme a number, on the connector its replies arrive on.
    let number = json!({"number": "+447700900777", "account_id": acme_id, "connector": "sim"});
    let (st, _) = s.call("POST", "/v1/numbers", Some(&acme), Some(number.clone())).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an account does not assign itself numbers");
    let (st, n) = s.call("POST", "/v1/numbers", Some(&s.admin_key), Some(number)).await;
    assert_eq!(
        (st, n["kind"].as_str(), n["connector"].as_str()),
        (StatusCode::CREATED, Some("long_code"), Some("sim"))
    );
    let number_path = format!("/v1/numbers/{}", n["id"].as_str().unwrap());
    let again = json!({"number": "447700900777", "account_id": globex_id});
    let (st, e) = s.call("POST", "/v1/numbers", Some(&s.admin_key), Some(again)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("number_taken")));
    let bad = json!({"number": "Acme", "account_id": acme_id});
    let (st, e) = s.call("POST", "/v1/numbers", Some(&s.admin_key), Some(bad)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_number")));
    let (_, listed) = s.call("GET", "/v1/numbers", Some(&globex), None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0, "{listed}");
    let (_, listed) = s.call("GET", "/v1/numbers", Some(&acme), None).await;
    assert_eq!(listed["data"][0]["number"], "+447700900777", "{listed}");
    let (st, _) = s.call("GET", &number_path, Some(&globex), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.call("DELETE", &number_path, Some(&acme), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "only the operator takes a number back");

    // Acme sends from both; Globex can send from neither, only from what nobody owns.
    let mut sent = Vec::new();
    for from in ["AcmeBank", "+447700900777"] {
        let (st, m) = send(acme.clone(), from, "+447700900135").await;
        assert_eq!(st, StatusCode::CREATED, "{m}");
        sent.push(m["id"].as_str().unwrap().to_string());
        let (st, e) = send(globex.clone(), from, "+447700900135").await;
        assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("sender_not_owned")), "{from}");
    }
    let (st, e) = send(globex.clone(), "ACMEBANK", "+447700900135").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("sender_not_owned")));
    let (st, m) = send(globex.clone(), "Globex", "+447700900135").await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    s.until(&globex, m["id"].as_str().unwrap(), "delivered").await;
    for id in &sent {
        s.until(&acme, id, "delivered").await;
    }

    // The customer replies to each sender: Acme's are Acme's, though Globex wrote to the handset last.
    s.reply("+447700900135", "AcmeBank", "to the brand").await;
    s.reply("+447700900135", "+447700900777", "to the number").await;
    s.reply("+447700900135", "Globex", "to globex").await;
    let mut got = s.inbound(&acme, 2).await;
    got.sort();
    assert_eq!(got, ["to the brand", "to the number"]);
    assert_eq!(s.inbound(&globex, 1).await, ["to globex"]);

    // A policy change: Globex sends only from what it owns now; routes stay as they were.
    let path = format!("/v1/accounts/{globex_id}");
    let (st, a) = s.call("PATCH", &path, Some(&s.admin_key), Some(json!({"sender_policy": "owned"}))).await;
    assert_eq!((st, a["sender_policy"].as_str(), &a["routes"]), (StatusCode::OK, Some("owned"), &Value::Null), "{a}");
    let (st, e) = send(globex.clone(), "Globex", "+447700900135").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("sender_not_owned")));
    let (st, e) = s.call("PATCH", &path, Some(&s.admin_key), Some(json!({"sender_policy": "all"}))).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_sender_policy")));
    let (st, _) = s.call("PATCH", &path, Some(&globex), Some(json!({"sender_policy": "any"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // The number taken back: what is sent to it now is the operator's, not Acme's.
    let (st, _) = s.call("DELETE", &number_path, Some(&s.admin_key), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, e) = send(acme.clone(), "+447700900777", "+447700900135").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("sender_not_owned")));
}

/// The simulated network's handsets hold every tenant's texts, and a reply is forged inbound: the admin key's
/// only.
async fn the_simulated_network_is_the_operators(s: &Server) {
    let (_, acme) = s.tenant("acme").await;
    let (st, m) = s
        .call("POST", "/v1/messages", Some(&acme), Some(json!({"to": "+447700900145", "from": "Acme", "body": "x"})))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    s.until(&acme, m["id"].as_str().unwrap(), "delivered").await;
    let (st, e) = s.call("GET", "/v1/sim/handsets/+447700900145/messages", Some(&acme), None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{e}");
    let reply = json!({"to": "Acme", "body": "forged"});
    let (st, _) = s.call("POST", "/v1/sim/handsets/+447700900145/reply", Some(&acme), Some(reply)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, inbox) = s.call("GET", "/v1/sim/handsets/+447700900145/messages", Some(&s.admin_key), None).await;
    assert_eq!((st, inbox["data"][0]["body"].as_str()), (StatusCode::OK, Some("x")));
    // With no connector of kind sim in force, the handsets are not served at all.
    let carrier = json!({"name": "carrier", "kind": "smpp", "host": "127.0.0.1", "port": 9, "system_id": "x",
                         "password": "y"});
    let (st, v) = s.call("POST", "/v1/connectors", Some(&s.admin_key), Some(carrier)).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = s
        .call("PATCH", "/v1/routes/default", Some(&s.admin_key), Some(json!({"connectors": [{"name": "carrier"}]})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = s.call("DELETE", "/v1/connectors/sim", Some(&s.admin_key), None).await;
    assert!(st.is_success(), "{st} {v}");
    let (st, e) = s.call("GET", "/v1/sim/handsets/+447700900145/messages", Some(&s.admin_key), None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("sim_disabled")), "{e}");
}

/// The batch endpoint reads its body with its own limit (32 MiB), not the 1 MiB of the others.
async fn a_batch_may_use_its_own_limit(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let body = "x".repeat(600);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let item = json!({"to": "+447700900155", "from": "Acme", "body": body, "send_at": later});
    let messages = vec![item; 2000];
    let payload = json!({"messages": messages});
    assert!(payload.to_string().len() > 1024 * 1024);
    let (st, v) = s.call("POST", "/v1/messages/batch", Some(&key), Some(payload)).await;
    assert_eq!(st, StatusCode::OK, "{}", v.to_string().chars().take(300).collect::<String>());
    assert_eq!(v["data"].as_array().unwrap().len(), 2000);
    assert!(v["data"].as_array().unwrap().iter().all(|m| m["status"] == "scheduled"));
    // The one-message endpoint keeps 1 MiB.
    let big = json!({"to": "+447700900155", "from": "Acme", "body": "x".repeat(1024 * 1024)});
    let (st, e) = s.call("POST", "/v1/messages", Some(&key), Some(big)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));
}

/// Webhooks go to public addresses and the ranges the operator allowed (here 127.0.0.1 only): a private address in
/// a URL is refused when it is given, and one stored anyway is never connected to.
async fn webhooks_reach_no_private_address(s: &Server) {
    let (account, key) = s.tenant("acme").await;
    for url in [
        "http://127.0.0.2:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://10.0.0.1/hook",
        "http://[::ffff:192.168.1.1]/hook",
        "http://0x7f.0.0.2/hook",
    ] {
        let body = json!({"to": "+447700900165", "from": "Acme", "body": "x", "callback_url": url});
        let (st, e) = s.call("POST", "/v1/messages", Some(&key), Some(body)).await;
        assert_eq!(
            (st, e["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_callback_url")),
            "{url}"
        );
        let (st, e) = s.call("PUT", "/v1/webhooks", Some(&key), Some(json!({"status_url": url}))).await;
        assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_url")), "{url}");
    }
    // A receiver on a private address the operator did not allow, with a URL stored before the rule: no request
    // reaches it, and the tenant sees `blocked`, nothing of what is there.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let account = smsgate_core::AccountId::parse(&account).unwrap();
    s.store.put_webhooks(account, Some(&url), None, "whsec_test", smsgate_core::Timestamp::now()).await.unwrap();
    let (st, m) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+447700900165", "from": "Acme", "body": "x"})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let id = m["id"].as_str().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, cb) = s.call("GET", &format!("/v1/messages/{id}/callbacks"), Some(&key), None).await;
        let all = cb["data"].as_array().unwrap();
        // sending, sent, delivered: each given up at its first attempt.
        if all.len() == 3 && all.iter().all(|c| c["state"] == "failed") {
            for c in all {
                assert_eq!(c["attempts"][0]["result"], "blocked", "{cb}");
            }
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "callbacks still pending: {cb}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "something connected to the private receiver");
}

/// API keys over HTTP: scoped keys do what their scopes say and no more, an account manages its own keys and no
/// other's, listing shows nothing of a key, and a revoked key is refused at once.
async fn keys_are_listed_scoped_and_revoked(s: &Server) {
    let (acme_id, acme) = s.tenant("acme").await;
    let (globex_id, globex) = s.tenant("globex").await;
    let keys = format!("/v1/accounts/{acme_id}/keys");
    let make = |key: String, body: Value| {
        let keys = keys.clone();
        async move { s.call("POST", &keys, Some(&key), Some(body)).await }
    };
    let (st, sender) = make(acme.clone(), json!({"name": "shop", "scopes": ["send"]})).await;
    assert_eq!((st, &sender["scopes"]), (StatusCode::CREATED, &json!(["send"])), "{sender}");
    let sender_key = sender["key"].as_str().unwrap().to_string();
    assert!(sender_key.starts_with(&format!("{}_", sender["prefix"].as_str().unwrap())));
    let (_, reader) = make(acme.clone(), json!({"scopes": ["read"]})).await;
    let reader_key = reader["key"].as_str().unwrap().to_string();
    for (body, code) in [
        (json!({"scopes": ["admin"]}), "invalid_scopes"),
        (json!({"scopes": ["write"]}), "invalid_scopes"),
        (json!({"scopes": []}), "invalid_scopes"),
        (json!({"name": ""}), "invalid_name"),
    ] {
        let (st, e) = make(acme.clone(), body.clone()).await;
        assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{body}");
    }
    // What each scope allows.
    let msg = json!({"to": "+447700900175", "from": "Acme", "body": "x"});
    let (st, m) = s.call("POST", "/v1/messages", Some(&sender_key), Some(msg.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let scope_error = |st: StatusCode, e: &Value| (st, e["error"]["code"].as_str().map(String::from));
    let insufficient = (StatusCode::FORBIDDEN, Some("insufficient_scope".to_string()));
    let (st, e) = s.call("GET", "/v1/messages", Some(&sender_key), None).await;
    assert_eq!(scope_error(st, &e), insufficient);
    let (st, e) = s.call("PUT", "/v1/webhooks", Some(&sender_key), Some(json!({"status_url": null}))).await;
    assert_eq!(scope_error(st, &e), insufficient);
    let (st, e) = make(sender_key.clone(), json!({})).await;
    assert_eq!(scope_error(st, &e), insufficient, "a send key makes no keys");
    let (st, e) = s.call("POST", "/v1/messages", Some(&reader_key), Some(msg)).await;
    assert_eq!(scope_error(st, &e), insufficient);
    let (st, _) = s.call("GET", &format!("/v1/messages/{}", m["id"].as_str().unwrap()), Some(&reader_key), None).await;
    assert_eq!(st, StatusCode::OK);
    // An account's keys are its own: another account sees and revokes none of them.
    let sender_path = format!("{keys}/{}", sender["id"].as_str().unwrap());
    for (method, path) in [("GET", keys.clone()), ("POST", keys.clone()), ("DELETE", sender_path.clone())] {
        let (st, _) = s.call(method, &path, Some(&globex), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path} with another account's key");
    }
    let (st, list) = s.call("GET", &keys, Some(&acme), None).await;
    assert_eq!(st, StatusCode::OK);
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{list}");
    assert!(listed.iter().all(|k| k.get("key").is_none()), "never the key itself: {list}");
    let shop = listed.iter().find(|k| k["name"] == "shop").unwrap();
    assert!(shop["last_used_at"].is_string() && shop["revoked_at"].is_null(), "{shop}");
    // The operator lists any account's; revoked, a key is refused at once.
    let (st, _) = s.call("GET", &format!("/v1/accounts/{globex_id}/keys"), Some(&s.admin_key), None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, r) = s.call("DELETE", &sender_path, Some(&acme), None).await;
    assert_eq!((st, r["revoked_at"].is_string()), (StatusCode::OK, true), "{r}");
    let (st, e) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&sender_key),
            Some(json!({"to": "+447700900175", "from": "Acme", "body": "x"})),
        )
        .await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let (st, _) = s.call("DELETE", &sender_path, Some(&acme), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "revoked already");
    // A key of the admin account without the admin scope does not reach the operator's routes.
    let (st, limited) = s
        .call(
            "POST",
            &format!("/v1/accounts/{}/keys", admin_id(s).await),
            Some(&s.admin_key),
            Some(json!({"scopes": ["read", "send"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{limited}");
    let (st, e) =
        s.call("POST", "/v1/accounts", Some(limited["key"].as_str().unwrap()), Some(json!({"name": "x"}))).await;
    assert_eq!(scope_error(st, &e), insufficient);
}

/// The admin account's id.
async fn admin_id(s: &Server) -> String {
    let admin = s.store.admin_account().await.unwrap().unwrap();
    admin.id.to_string()
}

/// The operator's rate limits: requests a second per key and messages a second per account, each answered 429
/// `rate_limited` with `Retry-After`; another account is not slowed.
async fn rate_limits_answer_429_with_retry_after(s: &Server) {
    let (acme_id, acme) = s.tenant("acme").await;
    let (_, globex) = s.tenant("globex").await;
    let path = format!("/v1/accounts/{acme_id}");
    let (st, a) = s.call("PATCH", &path, Some(&s.admin_key), Some(json!({"requests_per_second": 2}))).await;
    assert_eq!((st, &a["requests_per_second"], &a["messages_per_second"]), (StatusCode::OK, &json!(2), &Value::Null));
    let get = |key: String| {
        let client = s.client.clone();
        let url = format!("{}/v1/messages", s.base);
        async move { client.get(url).bearer_auth(key).send().await.unwrap() }
    };
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..4 {
        let r = get(acme.clone()).await;
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
        }
    }
    assert_eq!(statuses[0], StatusCode::OK, "{statuses:?}");
    let limited = limited.expect("over two a second: refused");
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    for _ in 0..4 {
        assert_eq!(get(globex.clone()).await.status(), StatusCode::OK, "another account is not slowed");
    }
    let (st, _) = s.call("PATCH", &path, Some(&globex), Some(json!({"requests_per_second": null}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, e) = s.call("PATCH", &path, Some(&s.admin_key), Some(json!({"messages_per_second": 0}))).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_rate")));
    // Messages a second: a batch goes whole when the bucket is full, and what follows waits for it.
    let body = json!({"requests_per_second": null, "messages_per_second": 3});
    let (st, a) = s.call("PATCH", &path, Some(&s.admin_key), Some(body)).await;
    assert_eq!((st, &a["requests_per_second"], &a["messages_per_second"]), (StatusCode::OK, &Value::Null, &json!(3)));
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let item = json!({"to": "+447700900185", "from": "Acme", "body": "x", "send_at": later});
    let (st, v) =
        s.call("POST", "/v1/messages/batch", Some(&acme), Some(json!({"messages": vec![item.clone(); 10]}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = s.client.post(format!("{}/v1/messages", s.base)).bearer_auth(&acme).json(&item).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((2..=3).contains(&retry), "eight messages of debt at three a second: {retry}");
    let (st, m) = s.call("POST", "/v1/messages", Some(&globex), Some(item)).await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
}

/// Every change made over the API is kept with who made it, secrets replaced; only the operator reads the log.
async fn changes_are_audited(s: &Server) {
    let (acme_id, acme) = s.tenant("acme").await;
    let (globex_id, globex) = s.tenant("globex").await;
    let creds = json!({"system_id": format!("a{}", &acme_id[..8]), "password": "s3cret!"});
    assert_eq!(s.call("POST", "/v1/smpp/credentials", Some(&acme), Some(creds)).await.0, StatusCode::CREATED);
    let hooks = json!({"status_url": "https://acme.example/hook"});
    assert_eq!(s.call("PUT", "/v1/webhooks", Some(&acme), Some(hooks)).await.0, StatusCode::OK);
    // Refused changes and messages are not changes of settings: not kept.
    let bad = json!({"system_id": "x", "password": "1"});
    assert_eq!(
        s.call("POST", "/v1/smpp/credentials", Some(&acme), Some(bad)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let msg = json!({"to": "+447700900195", "from": "Acme", "body": "x"});
    assert_eq!(s.call("POST", "/v1/messages", Some(&acme), Some(msg)).await.0, StatusCode::CREATED);
    assert_eq!(s.call("POST", "/v1/webhooks/rotate-secret", Some(&globex), None).await.0, StatusCode::OK);

    let (st, e) = s.call("GET", "/v1/audit", Some(&acme), None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (st, log) = s.call("GET", &format!("/v1/audit?account_id={acme_id}"), Some(&s.admin_key), None).await;
    assert_eq!(st, StatusCode::OK, "{log}");
    let entries = log["data"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["PUT /v1/webhooks", "POST /v1/smpp/credentials"], "newest first, nothing else: {log}");
    let creds = &entries[1];
    assert_eq!((creds["account_id"].as_str(), creds["status"].as_u64()), (Some(acme_id.as_str()), Some(201)));
    assert!(creds["key_id"].is_string(), "{creds}");
    assert_eq!(creds["detail"]["password"], "********", "never the password: {creds}");
    assert!(!creds.to_string().contains("s3cret!"));
    // The whole log holds the operator's own changes too (making the accounts), and pages by cursor.
    let (_, first) = s.call("GET", "/v1/audit?limit=1", Some(&s.admin_key), None).await;
    assert_eq!(first["data"][0]["account_id"].as_str(), Some(globex_id.as_str()));
    assert_eq!(first["data"][0]["action"], "POST /v1/webhooks/rotate-secret");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, next) = s.call("GET", &format!("/v1/audit?limit=1&cursor={cursor}"), Some(&s.admin_key), None).await;
    assert_eq!(next["data"][0]["action"], "PUT /v1/webhooks");
    let (_, all) = s.call("GET", "/v1/audit", Some(&s.admin_key), None).await;
    assert!(all["data"].as_array().unwrap().iter().any(|e| e["action"] == "POST /v1/accounts"), "{all}");
}

/// One account's receiver never answers and its backlog is larger than every slot the deliverer has: another
/// account's callbacks still go out at once, not after the first's time out.
async fn one_accounts_stuck_webhooks_do_not_hold_anothers(s: &Server) {
    let (_, stuck) = s.tenant("stuck").await;
    let (_, fine) = s.tenant("fine").await;
    // A receiver that takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = {
        let held = held.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = silent.accept().await {
                held.lock().unwrap().push(stream);
            }
        })
    };
    let (st, _) = s.call("PUT", "/v1/webhooks", Some(&stuck), Some(json!({"status_url": silent_url}))).await;
    assert_eq!(st, StatusCode::OK);
    let item = json!({"to": "+447700900215", "from": "Stuck", "body": "x", "callback_statuses": ["sending"]});
    let (st, _) = s.call("POST", "/v1/messages/batch", Some(&stuck), Some(json!({"messages": vec![item; 300]}))).await;
    assert_eq!(st, StatusCode::OK);
    // The stuck account's callbacks take what slots they may.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while held.lock().unwrap().len() < 16 {
        assert!(tokio::time::Instant::now() < deadline, "the stuck receiver got no callbacks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (hooks, got, stop_receiver) = receiver().await;
    got.lock().unwrap().failing = false;
    let (st, _) =
        s.call("PUT", "/v1/webhooks", Some(&fine), Some(json!({"status_url": format!("{hooks}/status")}))).await;
    assert_eq!(st, StatusCode::OK);
    let started = tokio::time::Instant::now();
    let body = json!({"to": "+447700900216", "from": "Fine", "body": "x", "callback_statuses": ["sending"]});
    let (st, _) = s.call("POST", "/v1/messages", Some(&fine), Some(body)).await;
    assert_eq!(st, StatusCode::CREATED);
    while got.lock().unwrap().posts.is_empty() {
        // A stuck receiver holds its requests for 10 s: well before that, the other account's callback is in.
        assert!(started.elapsed() < Duration::from_secs(5), "held behind the stuck account's callbacks");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(held.lock().unwrap().len() <= 2 * smsgate_api::webhooks::PER_ACCOUNT as usize, "a share of the slots");
    stop_receiver.cancel();
    holder.abort();
    held.lock().unwrap().clear();
}

/// The texts a simulated handset received, oldest first.
async fn handset_texts(s: &Server, handset: &str) -> Vec<String> {
    let (st, inbox) = s.call("GET", &format!("/v1/sim/handsets/{handset}/messages"), Some(&s.admin_key), None).await;
    assert_eq!(st, StatusCode::OK, "{inbox}");
    let list = inbox.as_array().or_else(|| inbox["data"].as_array()).cloned().unwrap_or_default();
    list.iter().filter_map(|m| m["body"].as_str().map(String::from)).collect()
}

/// Waits until `key`'s account sees `phone` opted out (or in).
async fn until_opted(s: &Server, key: &str, phone: &str, out: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let path = format!("/v1/opt-outs?phone={}", phone.replace('+', "%2B"));
    loop {
        let (st, v) = s.call("GET", &path, Some(key), None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["data"].as_array().unwrap().is_empty() != out {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{phone} never opted {}", if out { "out" } else { "in" });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `send`'s answer once admission has the opt-in the store already shows: it reads the number's consent back from
/// the store just after the opt-in's write, a moment after another reader may see it (an opt-out, which holds
/// from before it is written, needs no wait).
async fn once_opted_in<F, Fut>(mut send: F) -> (StatusCode, Value)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (st, v) = send().await;
        if v["error"]["code"] != "recipient_opted_out" || tokio::time::Instant::now() >= deadline {
            return (st, v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// STOP from a handset opts it out of the account that owns the number it wrote to, on every send path; the
/// confirmation reaches the handset once; START lets texts through again; HELP gets the help text; another account
/// is not affected; every keyword form works.
async fn stop_is_enforced_on_every_path(s: &Server) {
    let (acme, key) = s.tenant("Acme Dental").await;
    let (_, other) = s.tenant("Globex").await;
    let (st, v) = s
        .call("POST", "/v1/numbers", Some(&s.admin_key), Some(json!({"number": "+447700900900", "account_id": acme})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let handset = "+447700900131";
    s.reply(handset, "+447700900900", "  Stop.  ").await;
    until_opted(s, &key, handset, true).await;
    let send = |key: String, category: &'static str| async move {
        let body = json!({"to": handset, "from": "+447700900900", "body": "20% off", "category": category});
        s.call("POST", "/v1/messages", Some(&key), Some(body)).await
    };
    for category in ["transactional", "marketing"] {
        let (st, v) = send(key.clone(), category).await;
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("recipient_opted_out")));
    }
    let batch = json!({"messages": [
        {"to": handset, "from": "+447700900900", "body": "a"},
        {"to": "+447700900132", "from": "+447700900900", "body": "b"},
    ]});
    let (st, v) = s.call("POST", "/v1/messages/batch", Some(&key), Some(batch)).await;
    assert!(v.to_string().contains("recipient_opted_out"), "{st} {v}");
    // Another account's texts still go (the opt-out is Acme's).
    let (st, _) = s
        .call("POST", "/v1/messages", Some(&other), Some(json!({"to": handset, "from": "Globex", "body": "hi"})))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, mine) = s.call("GET", "/v1/opt-outs", Some(&other), None).await;
    assert!(mine["data"].as_array().unwrap().is_empty(), "{mine}");
    // The confirmation came once, from the number the STOP went to, naming the business; a second STOP gets none.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handset_texts(s, handset).await.iter().any(|t| t.contains("unsubscribed")) {
        assert!(tokio::time::Instant::now() < deadline, "no confirmation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.reply(handset, "+447700900900", "STOP").await;
    s.reply(handset, "+447700900900", "help").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let texts = handset_texts(s, handset).await;
        if texts.iter().any(|t| t.contains("for help")) {
            assert_eq!(texts.iter().filter(|t| t.contains("unsubscribed")).count(), 1, "{texts:?}");
            assert!(texts.iter().any(|t| t.starts_with("Acme Dental:")), "{texts:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no help reply: {texts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.reply(handset, "+447700900900", "start").await;
    until_opted(s, &key, handset, false).await;
    let (st, v) = once_opted_in(|| send(key.clone(), "transactional")).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // Every default keyword, in the forms people write them.
    for word in
        ["STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT", "OPT-OUT"]
    {
        s.reply(handset, "+447700900900", &format!(" {}! ", word.to_lowercase())).await;
        until_opted(s, &key, handset, true).await;
        let again = ["START", "UNSTOP", "YES"][word.len() % 3];
        s.reply(handset, "+447700900900", again).await;
        until_opted(s, &key, handset, false).await;
    }
    // "STOP PLEASE" is not a keyword.
    s.reply(handset, "+447700900900", "stop please").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, v) = s.call("GET", &format!("/v1/opt-outs?phone={}", handset.replace('+', "%2B")), Some(&key), None).await;
    assert!(v["data"].as_array().unwrap().is_empty(), "{v}");
    // An operator's opt-out, recorded as such, and the settings an account keeps.
    let (st, v) = s.call("POST", "/v1/opt-outs", Some(&key), Some(json!({"phone": "+447700900133"}))).await;
    assert_eq!((st, v["changed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (st, v) = send(key.clone(), "transactional").await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"to": "+447700900133", "from": "+447700900900", "body": "x"})),
        )
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("recipient_opted_out")));
    let (st, v) =
        s.call("PUT", "/v1/settings/compliance", Some(&key), Some(json!({"transactional_after_opt_out": true}))).await;
    assert_eq!((st, v["transactional_after_opt_out"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (st, _) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"to": "+447700900133", "from": "+447700900900", "body": "x"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "transactional texts go when the account allows them");
    let (st, v) = s
        .call(
            "PUT",
            "/v1/settings/compliance",
            Some(&key),
            Some(json!({"keywords": {"opt_out": [], "opt_in": [], "help": []}})),
        )
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_settings")));
    let (st, v) = s.call("DELETE", "/v1/opt-outs/%2B447700900133", Some(&key), None).await;
    assert_eq!((st, v["changed"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
}

/// Contacts are per account: the time zone derived from the number, 409 on a second create, upsert, lists,
/// segments; another account can neither see nor change them.
async fn contacts_lists_and_segments(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    let body =
        json!({"phone": "+1 305 555 0100", "name": "Ann", "fields": {"plan": "gold", "visits": 3}, "tags": ["vip"]});
    let (st, ann) = s.call("POST", "/v1/contacts", Some(&key), Some(body.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{ann}");
    assert_eq!(ann["phone"], "+13055550100");
    assert_eq!(
        (ann["time_zone"].as_str(), ann["time_zone_source"].as_str()),
        (Some("America/New_York"), Some("number"))
    );
    assert_eq!(ann["place"], "US-FL");
    let (st, v) = s.call("POST", "/v1/contacts", Some(&key), Some(body)).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("contact_exists")));
    let (st, v) = s
        .call(
            "POST",
            "/v1/contacts?upsert=true",
            Some(&key),
            Some(json!({"phone": "+13055550100", "email": "ann@example.com"})),
        )
        .await;
    assert_eq!((st, v["email"].as_str(), v["name"].as_str()), (StatusCode::OK, Some("ann@example.com"), Some("Ann")));
    let id = ann["id"].as_str().unwrap();
    for (method, body) in [("GET", None), ("PATCH", Some(json!({"name": "Eve"}))), ("DELETE", None)] {
        let (st, _) = s.call(method, &format!("/v1/contacts/{id}"), Some(&other), body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} another account's contact");
    }
    let (_, theirs) = s.call("GET", "/v1/contacts", Some(&other), None).await;
    assert!(theirs["data"].as_array().unwrap().is_empty());
    let (st, v) = s
        .call(
            "PATCH",
            &format!("/v1/contacts/{id}"),
            Some(&key),
            Some(json!({"time_zone": "Europe/Paris", "fields": {"visits": 4}})),
        )
        .await;
    assert_eq!(
        (st, v["time_zone_source"].as_str(), &v["fields"]["visits"]),
        (StatusCode::OK, Some("contact"), &json!(4))
    );
    let (st, v) =
        s.call("PATCH", &format!("/v1/contacts/{id}"), Some(&key), Some(json!({"time_zone": "Mars/Olympus"}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_time_zone")));
    let (st, v) = s.call("POST", "/v1/contacts", Some(&key), Some(json!({"phone": "12"}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_phone")));
    let (st, list) = s.call("POST", "/v1/lists", Some(&key), Some(json!({"name": "Patients"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{list}");
    let list_id = list["id"].as_str().unwrap();
    let (st, v) = s
        .call(
            "POST",
            &format!("/v1/lists/{list_id}/members"),
            Some(&key),
            Some(json!({"contacts": [id], "phones": ["+447700900140"]})),
        )
        .await;
    assert_eq!((st, v["added"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    let (st, _) =
        s.call("POST", &format!("/v1/lists/{list_id}/members"), Some(&other), Some(json!({"contacts": [id]}))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another account's list");
    let (_, members) = s.call("GET", &format!("/v1/contacts?list={list_id}"), Some(&key), None).await;
    assert_eq!(members["data"].as_array().unwrap().len(), 2);
    let (_, vip) = s.call("GET", "/v1/contacts?tag=vip&q=ann", Some(&key), None).await;
    assert_eq!(vip["data"].as_array().unwrap().len(), 1, "{vip}");
    let filter = json!({"lists": [list_id], "fields": [{"field": "plan", "op": "eq", "value": "gold"}]});
    let (st, seg) =
        s.call("POST", "/v1/segments", Some(&key), Some(json!({"name": "Gold patients", "filter": filter}))).await;
    assert_eq!(st, StatusCode::CREATED, "{seg}");
    let seg_id = seg["id"].as_str().unwrap();
    let (_, inside) = s.call("GET", &format!("/v1/segments/{seg_id}/contacts"), Some(&key), None).await;
    assert_eq!((inside["count"].as_u64(), inside["data"][0]["id"].as_str()), (Some(1), Some(id)), "{inside}");
    let (st, _) = s.call("GET", &format!("/v1/segments/{seg_id}/contacts"), Some(&other), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, v) = s
        .call(
            "POST",
            "/v1/segments",
            Some(&key),
            Some(json!({"name": "x", "filter": {"fields": [{"field": "a", "op": "like"}]}})),
        )
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_filter")));
    let (st, _) = s.call("DELETE", &format!("/v1/lists/{list_id}/members/{id}"), Some(&key), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

/// A marketing text outside the recipient's allowed hours is held (scheduled for the next opening, the journey
/// saying why); a transactional one goes.
async fn quiet_hours_hold_marketing(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    // Hours that are closed now in London, within the law's 08:00 to 21:00.
    let london: chrono_tz::Tz = "Europe/London".parse().unwrap();
    let now = chrono::Utc::now().with_timezone(&london);
    use chrono::Timelike;
    let (from, to) = if (9..21).contains(&now.hour()) { (8, 9) } else { (19, 20) };
    let hours = json!([{"days": "Mon-Sun", "from": format!("{from:02}:00"), "to": format!("{to:02}:00")}]);
    let (st, v) = s.call("PUT", "/v1/settings/compliance", Some(&key), Some(json!({"quiet_hours": hours}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let send = |category: &'static str| {
        let body = json!({"to": "+447700900150", "from": "Acme", "body": "Sale", "category": category});
        s.call("POST", "/v1/messages", Some(&key), Some(body))
    };
    let (st, held) = send("marketing").await;
    assert_eq!((st, held["status"].as_str()), (StatusCode::CREATED, Some("scheduled")), "{held}");
    let at = chrono::DateTime::parse_from_rfc3339(held["send_at"].as_str().unwrap()).unwrap().with_timezone(&london);
    assert_eq!((at.hour(), at.minute()), (from, 0), "{held}");
    let (_, m) = s.call("GET", &format!("/v1/messages/{}", held["id"].as_str().unwrap()), Some(&key), None).await;
    assert!(m["events"][0]["detail"].as_str().unwrap().contains("allowed hours (GB in Europe/London)"), "{m}");
    let (st, v) = send("transactional").await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::CREATED, Some("sending")), "{v}");
    let (st, v) = send("promotional").await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_category")));
}

/// A CSV import as a job (invalid and repeated rows reported by row), the export, and erasure: the number's
/// messages anonymized, the opt-out still enforced.
async fn import_export_and_erase(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    let csv = "phone,name,Plan,tags,Next visit\n+447700900160,Ann,gold,vip;new,2026-12-09\nnot a number,Bob,,,\n+447700900161,Cy,silver,,\n+447700900160,Ann again,,,\n";
    let resp = s
        .client
        .post(format!("{}/v1/contacts/import?list=Imported&consent_source=signup%20form", s.base))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Value = resp.json().await.unwrap();
    let path = format!("/v1/jobs/{}", job["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        let (_, j) = s.call("GET", &path, Some(&key), None).await;
        if j["state"] != "running" {
            break j;
        }
        assert!(tokio::time::Instant::now() < deadline, "import stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (job["state"].as_str(), job["rows"].as_u64(), job["created"].as_u64(), job["skipped"].as_u64()),
        (Some("completed"), Some(4), Some(2), Some(2)),
        "{job}"
    );
    let codes: Vec<(u64, &str)> = job["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(codes, [(3, "invalid_phone"), (5, "duplicate_in_file")]);
    let (st, _) = s.call("GET", &path, Some(&other), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another account's job");
    // A row that is not UTF-8 is refused alone.
    let bytes: &[u8] = b"phone\n\xff\xfe\n+447700900162\n";
    let resp = s
        .client
        .post(format!("{}/v1/contacts/import", s.base))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let latin: Value = resp.json().await.unwrap();
    let latin_path = format!("/v1/jobs/{}", latin["id"].as_str().unwrap());
    let latin = loop {
        let (_, j) = s.call("GET", &latin_path, Some(&key), None).await;
        if j["state"] != "running" {
            break j;
        }
        assert!(tokio::time::Instant::now() < deadline, "import stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((latin["state"].as_str(), latin["created"].as_u64()), (Some("completed"), Some(1)), "{latin}");
    assert_eq!(
        (latin["errors"][0]["row"].as_u64(), latin["errors"][0]["code"].as_str()),
        (Some(2), Some("invalid_encoding"))
    );
    let (_, page) = s.call("GET", "/v1/contacts?q=Ann", Some(&key), None).await;
    let ann = page["data"][0].clone();
    assert_eq!((&ann["fields"]["Plan"], &ann["tags"]), (&json!("gold"), &json!(["vip", "new"])), "{ann}");
    assert_eq!(ann["fields"]["Next_visit"], "2026-12-09", "a header becomes a merge field's name: {ann}");
    let id = ann["id"].as_str().unwrap();
    let (_, consent) = s.call("GET", &format!("/v1/contacts/{id}/consent"), Some(&key), None).await;
    assert_eq!(
        (consent["data"][0]["change"].as_str(), consent["data"][0]["source"].as_str()),
        (Some("opt_in"), Some("import")),
        "{consent}"
    );
    let export = s.client.get(format!("{}/v1/contacts/export", s.base)).bearer_auth(&key).send().await.unwrap();
    let text = export.text().await.unwrap();
    assert!(text.starts_with("phone,name,email,time_zone,tags,opted_out,created_at"), "{text}");
    assert!(text.contains("+447700900161,Cy"), "{text}");
    // A text, a STOP, then erasure.
    let (st, m) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"to": "+447700900160", "from": "Acme", "body": "Hello Ann"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (_, v) = s.call("POST", "/v1/opt-outs", Some(&key), Some(json!({"phone": "+447700900160"}))).await;
    assert_eq!(v["changed"], true);
    let (st, dump) = s.call("GET", &format!("/v1/contacts/{id}/export"), Some(&key), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(dump["messages"][0]["body"], "Hello Ann", "{dump}");
    assert_eq!(dump["consent"].as_array().unwrap().len(), 2);
    let (st, _) = s.call("POST", &format!("/v1/contacts/{id}/erase"), Some(&other), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another account's contact");
    let (st, v) = s.call("POST", &format!("/v1/contacts/{id}/erase"), Some(&key), None).await;
    assert_eq!((st, v["messages"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let (_, gone) = s.call("GET", &format!("/v1/messages/{}", m["id"].as_str().unwrap()), Some(&key), None).await;
    assert_eq!(gone["body"], "");
    assert!(gone["to"].as_str().unwrap().starts_with("erased:"), "{gone}");
    assert!(!gone.to_string().contains("+447700900160"), "{gone}");
    let (st, v) = s
        .call("POST", "/v1/messages", Some(&key), Some(json!({"to": "+447700900160", "from": "Acme", "body": "again"})))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("recipient_opted_out")),
        "an erased person's STOP holds"
    );
    let (_, outs) = s.call("GET", "/v1/opt-outs", Some(&key), None).await;
    assert_eq!(outs["data"][0]["phone"], Value::Null, "{outs}");
}

/// With `opt_out_scope: "number"`, a STOP holds for the number it was sent to alone: the account's other numbers
/// may still text the person; START to that number lifts it.
async fn an_opt_out_may_hold_for_one_number(s: &Server) {
    let (acme, key) = s.tenant("Acme").await;
    for number in ["+447700900910", "+447700900911"] {
        let body = json!({"number": number, "account_id": acme});
        assert_eq!(s.call("POST", "/v1/numbers", Some(&s.admin_key), Some(body)).await.0, StatusCode::CREATED);
    }
    let (st, v) = s.call("PUT", "/v1/settings/compliance", Some(&key), Some(json!({"opt_out_scope": "number"}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let handset = "+447700900171";
    s.reply(handset, "+447700900910", "STOP").await;
    until_opted(s, &key, handset, true).await;
    let send = |from: &'static str| {
        s.call("POST", "/v1/messages", Some(&key), Some(json!({"to": handset, "from": from, "body": "hi"})))
    };
    let (st, v) = send("+447700900910").await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("recipient_opted_out")));
    let (st, v) = send("+447700900911").await;
    assert_eq!(st, StatusCode::CREATED, "another number of the account: {v}");
    let (_, outs) = s.call("GET", "/v1/opt-outs", Some(&key), None).await;
    assert_eq!(outs["data"][0]["scope"], "447700900910", "{outs}");
    s.reply(handset, "+447700900910", "UNSTOP").await;
    until_opted(s, &key, handset, false).await;
    let (st, v) = once_opted_in(|| send("+447700900910")).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

/// Templates: a body that does not parse is refused with where; a preview renders for a contact of the account (or
/// one given), with its encoding, segments, cost and missing fields, and the text reaches a handset as previewed;
/// another account sees none of it.
async fn templates_render_as_previewed(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    let (st, v) =
        s.call("POST", "/v1/templates", Some(&key), Some(json!({"name": "bad", "body": "Hi\n{{ name }"}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_template")));
    assert!(v["error"]["message"].as_str().unwrap().starts_with("line 2, column"), "{v}");
    let body = "Hi {{ name | default(\"there\") }}, see you {{ fields.appointment_at | date(\"%a %H:%M\") }} ({{ data.room }}).";
    let (st, t) = s.call("POST", "/v1/templates", Some(&key), Some(json!({"name": "reminder", "body": body}))).await;
    assert_eq!((st, t["category"].as_str()), (StatusCode::CREATED, Some("transactional")), "{t}");
    let id = t["id"].as_str().unwrap();
    let (st, v) = s.call("POST", "/v1/templates", Some(&key), Some(json!({"name": "reminder", "body": "x"}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("template_exists")));
    let contact =
        json!({"phone": "+447700900180", "name": "Ann", "fields": {"appointment_at": "2026-12-09T15:00:00Z"}});
    let (_, ann) = s.call("POST", "/v1/contacts", Some(&key), Some(contact)).await;
    let preview = format!("/v1/templates/{id}/preview");
    let (st, p) =
        s.call("POST", &preview, Some(&key), Some(json!({"contact_id": ann["id"], "data": {"room": "2B"}}))).await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["text"], "Hi Ann, see you Wed 15:00 (2B).", "London time: {p}");
    assert_eq!((p["encoding"].as_str(), p["segments"].as_u64()), (Some("gsm7"), Some(1)));
    assert_eq!(p["missing_fields"], json!([]));
    assert_eq!(p["cost"], Value::Null, "the default route names no price");
    // A body being written previews the same, before it is saved; one that does not parse says where.
    let unsaved = json!({"body": body, "contact_id": ann["id"], "data": {"room": "2B"}});
    let (st, q) = s.call("POST", "/v1/templates/preview", Some(&key), Some(unsaved)).await;
    assert_eq!((st, &q["text"]), (StatusCode::OK, &p["text"]), "{q}");
    let (st, q) = s.call("POST", "/v1/templates/preview", Some(&key), Some(json!({"body": "Hi\n{{ name }"}))).await;
    assert_eq!((st, q["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_template")));
    assert!(q["error"]["message"].as_str().unwrap().starts_with("line 2, column"), "{q}");
    let theirs = json!({"body": "Hi {{ name }}", "contact_id": ann["id"]});
    assert_eq!(s.call("POST", "/v1/templates/preview", Some(&other), Some(theirs)).await.0, StatusCode::NOT_FOUND);
    // Priced by the route the contact's number would take: 0.02 a segment, two segments of UCS-2.
    let admin = Some(s.admin_key.as_str());
    let route =
        json!({"name": "priced", "match": {"prefix": "+447700900180"}, "connectors": [{"name": "sim", "price": 0.02}]});
    assert_eq!(s.call("POST", "/v1/routes", admin, Some(route)).await.0, StatusCode::CREATED);
    let (_, long) = s
        .call(
            "POST",
            "/v1/templates",
            Some(&key),
            Some(json!({"name": "long", "body": "Привет {{ name }}! ".repeat(8)})),
        )
        .await;
    let long_preview = format!("/v1/templates/{}/preview", long["id"].as_str().unwrap());
    let (_, p3) = s.call("POST", &long_preview, Some(&key), Some(json!({"contact_id": ann["id"]}))).await;
    assert_eq!(
        (p3["encoding"].as_str(), p3["segments"].as_u64(), p3["cost"].as_f64()),
        (Some("ucs2"), Some(2), Some(0.04)),
        "{p3}"
    );
    let (_, p2) = s.call("POST", &preview, Some(&key), Some(json!({"contact": {"phone": "+13055550100"}}))).await;
    assert_eq!(p2["text"], "Hi there, see you  ().", "{p2}");
    assert_eq!(p2["missing_fields"], json!(["data.room", "fields.appointment_at", "name"]));
    // The text as previewed reaches the handset.
    let (st, m) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"to": "+447700900180", "from": "Acme", "body": p["text"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    s.until(&key, m["id"].as_str().unwrap(), "delivered").await;
    assert!(handset_texts(s, "+447700900180").await.contains(&"Hi Ann, see you Wed 15:00 (2B).".to_string()));
    // Another account's.
    for (method, path) in
        [("GET", format!("/v1/templates/{id}")), ("DELETE", format!("/v1/templates/{id}")), ("POST", preview.clone())]
    {
        let (st, _) = s.call(method, &path, Some(&other), Some(json!({}))).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (st, v) = s.call("POST", &preview, Some(&key), Some(json!({"contact_id": "nope"}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("contact_not_found")));
    let (st, v) = s
        .call(
            "PATCH",
            &format!("/v1/templates/{id}"),
            Some(&key),
            Some(json!({"category": "marketing", "body": "{{ name }}!"})),
        )
        .await;
    assert_eq!(
        (st, v["category"].as_str(), v["body"].as_str()),
        (StatusCode::OK, Some("marketing"), Some("{{ name }}!")),
        "{v}"
    );
    let (_, list) = s.call("GET", "/v1/templates", Some(&key), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(s.call("DELETE", &format!("/v1/templates/{id}"), Some(&key), None).await.0, StatusCode::NO_CONTENT);
}

/// Waits until a campaign is in `state`; the campaign then.
async fn until_campaign(s: &Server, key: &str, id: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (st, c) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(key), None).await;
        assert_eq!(st, StatusCode::OK, "{c}");
        if c["state"] == state {
            return c;
        }
        assert!(tokio::time::Instant::now() < deadline, "campaign stuck at {}, waiting for {state}: {c}", c["state"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes contacts (phone, name, plan, tags) in a new list of `key`'s account; the list's id and the contacts' ids.
async fn contacts_in_list(
    s: &Server,
    key: &str,
    list: &str,
    people: &[(&str, &str, Option<&str>, &[&str])],
) -> (String, Vec<String>) {
    let (st, l) = s.call("POST", "/v1/lists", Some(key), Some(json!({"name": list}))).await;
    assert_eq!(st, StatusCode::CREATED, "{l}");
    let list_id = l["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for (phone, name, plan, tags) in people {
        let fields = plan.map_or_else(|| json!({}), |p| json!({"plan": p}));
        let body = json!({"phone": phone, "name": name, "fields": fields, "tags": tags});
        let (st, c) = s.call("POST", "/v1/contacts", Some(key), Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{c}");
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    let (st, v) =
        s.call("POST", &format!("/v1/lists/{list_id}/members"), Some(key), Some(json!({"contacts": ids}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    (list_id, ids)
}

/// A campaign to a list and a segment that overlap, less an excluded list: each contact texted once as rendered,
/// the opted-out and the one lacking a merge field skipped and counted, the numbers live; another account can
/// neither see nor drive it.
async fn campaigns_send_each_contact_once(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    let people: [(&str, &str, Option<&str>, &[&str]); 5] = [
        ("+447700900210", "Ann", Some("gold"), &["vip"]),
        ("+447700900211", "Bob", Some("silver"), &[]),
        ("+447700900212", "Cy", Some("gold"), &[]),
        ("+447700900213", "Di", None, &[]),
        ("+447700900214", "Ed", Some("gold"), &[]),
    ];
    let (list, ids) = contacts_in_list(s, &key, "Customers", &people).await;
    let (_, vip) =
        s.call("POST", "/v1/segments", Some(&key), Some(json!({"name": "VIP", "filter": {"tags": ["vip"]}}))).await;
    let (_, skip) = s.call("POST", "/v1/lists", Some(&key), Some(json!({"name": "Do not text"}))).await;
    let members = json!({"contacts": [ids[4]]});
    s.call("POST", &format!("/v1/lists/{}/members", skip["id"].as_str().unwrap()), Some(&key), Some(members)).await;
    let (st, _) = s.call("POST", "/v1/opt-outs", Some(&key), Some(json!({"phone": "+447700900212"}))).await;
    assert!(st.is_success());
    until_opted(s, &key, "+447700900212", true).await;
    let spec = json!({
        "name": "December",
        "audience": {"lists": ["Customers"], "segments": [vip["id"]], "exclude": {"lists": [skip["id"]]}},
        "body": "Hi {{ name }}, your {{ fields.plan }} plan: {{ data.offer }}",
        "data": {"offer": "2 for 1"},
        "from": "Acme",
        "category": "transactional",
        "on_missing_field": "skip"
    });
    // Another account cannot name this account's list.
    let (st, v) = s.call("POST", "/v1/campaigns", Some(&other), Some(spec.clone())).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_audience")), "{v}");
    for (bad, code) in [
        (json!({"body": null, "template_id": null}), "invalid_body"),
        (json!({"body": "Hi {{ name }"}), "invalid_template"),
        (json!({"category": "promotional"}), "invalid_category"),
        (json!({"audience": {}}), "invalid_audience"),
        (json!({"schedule": {"cron": "every day"}}), "invalid_schedule"),
        (json!({"throughput": 0}), "invalid_throughput"),
        (json!({"from": "this sender is far too long"}), "invalid_sender"),
    ] {
        let mut body = spec.clone();
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (st, v) = s.call("POST", "/v1/campaigns", Some(&key), Some(body)).await;
        assert_eq!((st.is_client_error(), v["error"]["code"].as_str()), (true, Some(code)), "{v}");
    }
    let (st, c) = s.call("POST", "/v1/campaigns", Some(&key), Some(spec)).await;
    assert_eq!((st, c["state"].as_str()), (StatusCode::CREATED, Some("draft")), "{c}");
    assert_eq!(c["audience"]["lists"], json!([list]), "lists named by name are kept by id");
    let id = c["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/v1/campaigns/{id}")),
        ("POST", format!("/v1/campaigns/{id}/start")),
        ("POST", format!("/v1/campaigns/{id}/pause")),
        ("POST", format!("/v1/campaigns/{id}/cancel")),
        ("GET", format!("/v1/campaigns/{id}/runs")),
        ("DELETE", format!("/v1/campaigns/{id}")),
    ] {
        let (st, _) = s.call(method, &path, Some(&other), None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (_, theirs) = s.call("GET", "/v1/campaigns", Some(&other), None).await;
    assert_eq!(theirs["data"], json!([]));
    let (st, v) = s.call("POST", &format!("/v1/campaigns/{id}/pause"), Some(&key), None).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_state")));
    let (st, c) = s.call("POST", &format!("/v1/campaigns/{id}/start"), Some(&key), None).await;
    assert_eq!(st, StatusCode::OK, "{c}");
    let done = until_campaign(s, &key, id, "completed").await;
    let stats = &done["stats"];
    assert_eq!(stats["audience"], 4, "Ann, Bob, Cy, Di (Ed excluded; Ann named twice): {done}");
    assert_eq!(stats["skipped"], json!({"opted_out": 1, "missing_field": 1, "duplicate": 1}), "{done}");
    assert_eq!((stats["queued"].as_u64(), stats["pending"].as_u64()), (Some(2), Some(0)), "{done}");
    // Delivered by the built-in network, each text as rendered, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, c) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
        if c["stats"]["delivered"] == 2 {
            assert_eq!((c["stats"]["sent"].as_u64(), c["stats"]["waiting"].as_u64()), (Some(2), Some(0)), "{c}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handset_texts(s, "+447700900210").await, vec!["Hi Ann, your gold plan: 2 for 1".to_string()]);
    assert_eq!(handset_texts(s, "+447700900211").await, vec!["Hi Bob, your silver plan: 2 for 1".to_string()]);
    for none in ["+447700900212", "+447700900213", "+447700900214"] {
        assert!(handset_texts(s, none).await.is_empty(), "{none}");
    }
    // Bob answers, then says STOP: two replies to the campaign, one opt-out attributed to it.
    for text in ["Thanks!", "STOP"] {
        let (st, v) = s
            .call(
                "POST",
                "/v1/sim/handsets/+447700900211/reply",
                Some(&s.admin_key),
                Some(json!({"to": "Acme", "body": text})),
            )
            .await;
        assert!(st.is_success(), "{v}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, c) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
        if c["stats"]["replies"] == 2 && c["stats"]["opt_outs"] == 1 {
            assert_eq!(c["stats"]["texts"], 2, "replies are not texts of the campaign: {c}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "replies not attributed: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A test send reaches one number and is not counted.
    let (st, m) =
        s.call("POST", &format!("/v1/campaigns/{id}/test"), Some(&key), Some(json!({"to": "+447700900214"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    s.until(&key, m["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(handset_texts(s, "+447700900214").await, vec!["Hi Ed, your gold plan: 2 for 1".to_string()]);
    let (_, after) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
    assert_eq!(after["stats"]["delivered"], 2, "{after}");
    // Run again: a second run, with the audience as it is now (Bob opted out); each run reaches each contact once.
    let (st, _) = s.call("POST", &format!("/v1/campaigns/{id}/start"), Some(&key), None).await;
    assert_eq!(st, StatusCode::OK);
    until_campaign(s, &key, id, "completed").await;
    let (_, runs) = s.call("GET", &format!("/v1/campaigns/{id}/runs"), Some(&key), None).await;
    let runs = runs["data"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let queued: Vec<_> = runs.iter().map(|r| (r["state"].clone(), r["stats"]["queued"].clone())).collect();
    assert_eq!(queued, vec![(json!("completed"), json!(2)), (json!("completed"), json!(1))], "{runs:?}");
    assert_eq!(runs[1]["stats"]["skipped"]["opted_out"], 2, "Cy and now Bob: {runs:?}");
    // The report: a line a recipient of each run.
    let report = s
        .client
        .get(format!("{}/v1/campaigns/{id}/report.csv", s.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines[0].starts_with("run_id,contact_id,phone,name,state,reason,sender,message_id,status"), "{report}");
    assert_eq!(lines.len(), 1 + 4 + 4, "{report}");
    assert!(
        lines.iter().any(|l| l.contains("+447700900210,Ann,queued,,Acme,") && l.contains(",delivered,")),
        "{report}"
    );
    assert!(lines.iter().any(|l| l.contains("+447700900212,Cy,skipped,opted_out,")), "{report}");
    let (st, _) = s.call("GET", &format!("/v1/campaigns/{id}/report.csv"), Some(&other), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, mine) = s.call("GET", "/v1/campaigns", Some(&key), None).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    assert_eq!(s.call("DELETE", &format!("/v1/campaigns/{id}"), Some(&key), None).await.0, StatusCode::NO_CONTENT);
}

/// A slow campaign paused (nothing more is sent), resumed (the rest, once each) and another canceled (what was
/// not sent is marked canceled).
async fn campaigns_pause_resume_and_cancel(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let people: Vec<(String, String)> = (0..8).map(|i| (format!("+4477009003{i:02}"), format!("P{i}"))).collect();
    let refs: Vec<(&str, &str, Option<&str>, &[&str])> =
        people.iter().map(|(p, n)| (p.as_str(), n.as_str(), Some("x"), &[][..])).collect();
    let (list, _) = contacts_in_list(s, &key, "Slow", &refs).await;
    let spec = |name: &str| {
        json!({"name": name, "audience": {"lists": [list]}, "body": "Hello {{ name }}",
                                   "from": "Acme", "category": "transactional", "throughput": 2})
    };
    let (_, c) = s.call("POST", "/v1/campaigns", Some(&key), Some(spec("slow"))).await;
    let id = c["id"].as_str().unwrap();
    s.call("POST", &format!("/v1/campaigns/{id}/start"), Some(&key), None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, c) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
        if c["stats"]["queued"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, p) = s.call("POST", &format!("/v1/campaigns/{id}/pause"), Some(&key), None).await;
    assert_eq!((st, p["state"].as_str()), (StatusCode::OK, Some("paused")), "{p}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, paused) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, later) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
    assert_eq!(paused["stats"]["queued"], later["stats"]["queued"], "nothing sent while paused: {later}");
    assert!(later["stats"]["pending"].as_u64().unwrap() > 0, "{later}");
    let (st, r) = s.call("POST", &format!("/v1/campaigns/{id}/resume"), Some(&key), None).await;
    assert_eq!((st, r["state"].as_str()), (StatusCode::OK, Some("running")), "{r}");
    let done = until_campaign(s, &key, id, "completed").await;
    assert_eq!((done["stats"]["audience"].as_u64(), done["stats"]["queued"].as_u64()), (Some(8), Some(8)), "{done}");
    for (phone, name) in &people {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let texts = handset_texts(s, phone).await;
            if !texts.is_empty() {
                assert_eq!(texts, vec![format!("Hello {name}")], "{phone}: once");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{phone} got nothing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Canceled after a start: the rest is marked canceled, and nothing more goes.
    let (_, c) = s.call("POST", "/v1/campaigns", Some(&key), Some(spec("canceled"))).await;
    let id = c["id"].as_str().unwrap();
    s.call("POST", &format!("/v1/campaigns/{id}/start"), Some(&key), None).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (st, v) = s.call("POST", &format!("/v1/campaigns/{id}/cancel"), Some(&key), None).await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("canceled")), "{v}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let last = loop {
        let (_, runs) = s.call("GET", &format!("/v1/campaigns/{id}/runs"), Some(&key), None).await;
        if runs["data"][0]["state"] == "canceled" {
            break runs["data"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{runs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (queued, canceled) = (last["stats"]["queued"].as_u64().unwrap(), last["stats"]["canceled"].as_u64().unwrap());
    assert!(canceled > 0 && queued + canceled == 8, "{last}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, after) = s.call("GET", &format!("/v1/campaigns/{id}/runs"), Some(&key), None).await;
    assert_eq!(after["data"][0]["stats"]["queued"].as_u64(), Some(queued), "nothing more after the cancel");
    let (st, v) = s.call("POST", &format!("/v1/campaigns/{id}/resume"), Some(&key), None).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_state")));
}

/// `{{ link(url) }}` in a campaign: each text gets its own short link on the account's base; a visit redirects and
/// counts once (a link preview is kept but not counted), attributed to the campaign; codes say nothing of the
/// contact and unknown ones are 404.
async fn short_links_count_each_visit(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    let (_, v) = s.call("GET", "/v1/settings/links", Some(&key), None).await;
    assert_eq!((v["base_url"].clone(), v["effective_base_url"].as_str()), (Value::Null, Some("https://go.example")));
    let (st, v) = s.call("PUT", "/v1/settings/links", Some(&key), Some(json!({"base_url": "ftp://x"}))).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_base_url")));
    let (st, v) =
        s.call("PUT", "/v1/settings/links", Some(&key), Some(json!({"base_url": "https://acme.example/"}))).await;
    assert_eq!((st, v["effective_base_url"].as_str()), (StatusCode::OK, Some("https://acme.example")), "{v}");
    let (_, theirs) = s.call("GET", "/v1/settings/links", Some(&other), None).await;
    assert_eq!(theirs["effective_base_url"], "https://go.example", "per account");
    let people: [(&str, &str, Option<&str>, &[&str]); 2] =
        [("+447700900220", "Ann", Some("gold"), &[]), ("+447700900221", "Bob", Some("gold"), &[])];
    let (list, _) = contacts_in_list(s, &key, "Linked", &people).await;
    let body = "Hi {{ name }}, see {{ link(\"https://shop.example/offer?c=1\") }} today";
    let (st, t) = s.call("POST", "/v1/templates", Some(&key), Some(json!({"name": "offer", "body": body}))).await;
    assert_eq!(st, StatusCode::CREATED, "{t}");
    let (_, p) = s
        .call("POST", &format!("/v1/templates/{}/preview", t["id"].as_str().unwrap()), Some(&key), Some(json!({})))
        .await;
    assert_eq!(p["text"], "Hi , see https://acme.example/l/xxxxxxxxxx today", "{p}");
    let (st, bad) = s
        .call("POST", "/v1/templates", Some(&key), Some(json!({"name": "bad", "body": "{{ link('javascript:x') }}"})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "it parses: {bad}");
    let (st, v) = s
        .call("POST", &format!("/v1/templates/{}/preview", bad["id"].as_str().unwrap()), Some(&key), Some(json!({})))
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_template")), "{v}");
    let spec = json!({"name": "linked", "audience": {"lists": [list]}, "template_id": t["id"], "from": "Acme",
                      "category": "transactional"});
    let (_, c) = s.call("POST", "/v1/campaigns", Some(&key), Some(spec)).await;
    let id = c["id"].as_str().unwrap();
    s.call("POST", &format!("/v1/campaigns/{id}/start"), Some(&key), None).await;
    until_campaign(s, &key, id, "completed").await;
    let mut codes = Vec::new();
    for (phone, name, _, _) in people {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            if let Some(t) = handset_texts(s, phone).await.pop() {
                break t;
            }
            assert!(tokio::time::Instant::now() < deadline, "{phone} got nothing");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let prefix = format!("Hi {name}, see https://acme.example/l/");
        assert!(text.starts_with(&prefix) && text.ends_with(" today"), "{text}");
        let code = text[prefix.len()..text.len() - " today".len()].to_string();
        assert!(code.len() == 10 && code.chars().all(|c| c.is_ascii_alphanumeric()), "{code}");
        assert!(!code.contains("0220") && !code.contains("0221"), "{code}");
        codes.push(code);
    }
    assert_ne!(codes[0], codes[1], "a link per text");
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let visit = |code: String, agent: &'static str| {
        let req = browser.get(format!("{}/l/{code}", s.base)).header("user-agent", agent);
        async move { req.send().await.unwrap() }
    };
    let phone_ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148";
    for _ in 0..2 {
        let r = visit(codes[0].clone(), phone_ua).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()["location"], "https://shop.example/offer?c=1");
    }
    let r = visit(codes[1].clone(), "WhatsApp/2.23.20.0").await;
    assert_eq!(r.status(), StatusCode::FOUND, "a preview is redirected too");
    for unknown in ["ZZZZZZZZZZ", "short", "..%2F..%2Fx"] {
        assert_eq!(visit(unknown.to_string(), phone_ua).await.status(), StatusCode::NOT_FOUND, "{unknown}");
    }
    let (_, c) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
    assert_eq!((c["stats"]["clicks"].as_u64(), c["stats"]["clicked"].as_u64()), (Some(2), Some(1)), "{c}");
    // Erasing Ann forgets her links and their clicks.
    let (_, ann) = s.call("GET", "/v1/contacts?q=Ann", Some(&key), None).await;
    let ann_id = ann["data"][0]["id"].as_str().unwrap();
    let (st, v) = s.call("POST", &format!("/v1/contacts/{ann_id}/erase"), Some(&key), None).await;
    assert!(st.is_success(), "{v}");
    assert_eq!(visit(codes[0].clone(), phone_ua).await.status(), StatusCode::NOT_FOUND);
    let (_, c) = s.call("GET", &format!("/v1/campaigns/{id}"), Some(&key), None).await;
    assert_eq!(c["stats"]["clicks"], 0, "{c}");
}

async fn automations_answer_events_for_their_account_only(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    let (hooks, got, stop_receiver) = receiver().await;
    got.lock().unwrap().failing = false;
    let (_, w) = s.call("GET", "/v1/webhooks", Some(&key), None).await;
    let secret = w["secret"].as_str().unwrap().to_string();
    let shipped = json!({
        "name": "Shipped",
        "trigger": {"type": "event", "event": "order.shipped"},
        "steps": [
            {"type": "send", "from": "Shop", "body": "Order {{ data.order_id }} is on its way, {{ name }}"},
            {"type": "tag", "tag": "shipped"},
            {"type": "webhook", "url": format!("{hooks}/automation")}
        ]
    });
    let (st, a) = s.call("POST", "/v1/automations", Some(&key), Some(shipped.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    assert_eq!((a["enabled"].as_bool(), a["trigger"]["type"].as_str()), (Some(true), Some("event")));
    let id = a["id"].as_str().unwrap().to_string();

    // What a definition gets wrong is said, with a code.
    for (bad, code) in [
        (
            json!({"name": "x", "trigger": {"type": "event", "event": "a b"}, "steps": [{"type": "tag", "tag": "t"}]}),
            "invalid_event",
        ),
        (
            json!({"name": "x", "trigger": {"type": "keyword", "keyword": "STOP"}, "steps": [{"type": "tag", "tag": "t"}]}),
            "invalid_trigger",
        ),
        (json!({"name": "x", "trigger": {"type": "event", "event": "e"}, "steps": []}), "invalid_steps"),
        (
            json!({"name": "x", "trigger": {"type": "event", "event": "e"}, "steps": [{"type": "wait", "duration": "soon"}]}),
            "invalid_steps",
        ),
        (
            json!({"name": "x", "trigger": {"type": "event", "event": "e"}, "steps": [{"type": "send", "body": "hi"}]}),
            "invalid_sender",
        ),
        (
            json!({"name": "x", "trigger": {"type": "event", "event": "e"},
            "steps": [{"type": "send", "from": "Shop", "body": "{{ oops"}]}),
            "invalid_template",
        ),
        (
            json!({"name": "x", "trigger": {"type": "date_field", "field": "data.at"}, "steps": [{"type": "tag", "tag": "t"}]}),
            "invalid_trigger",
        ),
        (
            json!({"name": "x", "trigger": {"type": "event", "event": "e"}, "steps": [{"type": "teleport"}]}),
            "invalid_field",
        ),
    ] {
        let (st, v) = s.call("POST", "/v1/automations", Some(&key), Some(bad.clone())).await;
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{bad}: {v}");
    }

    // The event: a run, once per idempotency key.
    let event = json!({"name": "order.shipped", "contact": {"phone": "+447700900301", "name": "Ann"},
        "data": {"order_id": "A-17"}, "idempotency_key": "ship-A-17"});
    let (st, e) = s.call("POST", "/v1/events", Some(&key), Some(event.clone())).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{e}");
    assert_eq!((e["duplicate"].as_bool(), e["started"].as_array().map(Vec::len)), (Some(false), Some(1)), "{e}");
    let (st, again) = s.call("POST", "/v1/events", Some(&key), Some(event)).await;
    assert_eq!((st, again["duplicate"].as_bool()), (StatusCode::OK, Some(true)), "{again}");
    assert_eq!((again["id"].clone(), again["started"].clone()), (e["id"].clone(), e["started"].clone()));
    let contact = e["contact_id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !handset_texts(s, "+447700900301").await.contains(&"Order A-17 is on its way, Ann".to_string()) {
        assert!(tokio::time::Instant::now() < deadline, "the text reached the handset");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs_path = format!("/v1/automations/{id}/runs?contact_id={contact}");
    let run = loop {
        let (st, runs) = s.call("GET", &runs_path, Some(&key), None).await;
        assert_eq!(st, StatusCode::OK, "{runs}");
        assert_eq!(runs["data"].as_array().map(Vec::len), Some(1), "one run for the repeated event: {runs}");
        if runs["data"][0]["state"] == "completed" {
            break runs["data"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the run completes: {runs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let steps: Vec<(&str, &str)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["type"].as_str().unwrap(), x["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("send", "sent"), ("tag", "done"), ("webhook", "queued")], "{run}");
    let message = run["steps"][0]["message_id"].as_str().unwrap();
    let (st, m) = s.call("GET", &format!("/v1/messages/{message}"), Some(&key), None).await;
    assert_eq!((st, m["to"].as_str()), (StatusCode::OK, Some("+447700900301")));
    let (_, c) = s.call("GET", &format!("/v1/contacts/{contact}"), Some(&key), None).await;
    assert_eq!(c["tags"], json!(["shipped"]), "{c}");
    // The webhook step's POST, signed with the account's secret.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (sig, body) = loop {
        if let Some((_, sig, body, _)) = got.lock().unwrap().posts.iter().find(|p| p.0 == "automation").cloned() {
            break (sig, body);
        }
        assert!(tokio::time::Instant::now() < deadline, "the webhook step's POST");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(verify(&secret, &sig, &body), "signed: {sig}");
    let posted: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (posted["type"].as_str(), posted["automation_id"].as_str()),
        (Some("automation.step"), Some(id.as_str()))
    );
    assert_eq!(
        (posted["data"]["order_id"].as_str(), posted["contact"]["id"].as_str()),
        (Some("A-17"), Some(contact.as_str()))
    );
    let (_, a) = s.call("GET", &format!("/v1/automations/{id}"), Some(&key), None).await;
    assert_eq!((a["stats"]["runs"].as_u64(), a["stats"]["completed"].as_u64()), (Some(1), Some(1)), "{a}");

    // Another account sees none of it, and its events reach none of it.
    for (method, path) in [
        ("GET", format!("/v1/automations/{id}")),
        ("GET", format!("/v1/automations/{id}/runs")),
        ("POST", format!("/v1/automations/{id}/disable")),
        ("DELETE", format!("/v1/automations/{id}")),
    ] {
        let (st, v) = s.call(method, &path, Some(&other), None).await;
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{method} {path}");
    }
    let (_, list) = s.call("GET", "/v1/automations", Some(&other), None).await;
    assert_eq!(list["data"], json!([]));
    let theirs = json!({"name": "order.shipped", "contact_id": contact, "data": {"order_id": "B-1"}});
    let (st, v) = s.call("POST", "/v1/events", Some(&other), Some(theirs)).await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("contact_not_found")), "{v}");
    let own = json!({"name": "order.shipped", "contact": {"phone": "+447700900301"}, "data": {"order_id": "B-1"}});
    let (st, v) = s.call("POST", "/v1/events", Some(&other), Some(own)).await;
    assert_eq!((st, v["started"].clone()), (StatusCode::ACCEPTED, json!([])), "{v}");

    // Disabled, an event starts nothing; enabled again, it does.
    let (st, a) = s.call("POST", &format!("/v1/automations/{id}/disable"), Some(&key), None).await;
    assert_eq!((st, a["enabled"].as_bool()), (StatusCode::OK, Some(false)));
    let next = json!({"name": "order.shipped", "contact_id": contact, "data": {"order_id": "A-18"}});
    let (_, v) = s.call("POST", "/v1/events", Some(&key), Some(next.clone())).await;
    assert_eq!(v["started"], json!([]), "{v}");
    s.call("POST", &format!("/v1/automations/{id}/enable"), Some(&key), None).await;
    let (_, v) = s.call("POST", "/v1/events", Some(&key), Some(next)).await;
    assert_eq!(v["started"].as_array().map(Vec::len), Some(1), "{v}");
    for bad in [
        json!({"name": "no spaces allowed", "contact_id": contact}),
        json!({"name": "x"}),
        json!({"name": "x", "contact_id": contact, "data": [1]}),
    ] {
        let (st, v) = s.call("POST", "/v1/events", Some(&key), Some(bad.clone())).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    let (st, _) = s.call("DELETE", &format!("/v1/automations/{id}"), Some(&key), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.call("GET", &format!("/v1/automations/{id}"), Some(&key), None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    stop_receiver.cancel();
}

/// Polls `GET path` with `key` until `done` holds of the answer.
async fn until_json(s: &Server, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = s.call("GET", path, Some(key), None).await;
        assert_eq!(st, StatusCode::OK, "{path}: {v}");
        if done(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn conversations_thread_both_ways_for_their_account_only(s: &Server) {
    let (acme_id, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    let number = json!({"number": "+447700900950", "account_id": acme_id});
    let (st, _) = s.call("POST", "/v1/numbers", Some(&s.admin_key), Some(number)).await;
    assert_eq!(st, StatusCode::CREATED);
    let handset = "+447700900401";
    s.call("POST", "/v1/contacts", Some(&key), Some(json!({"phone": handset, "name": "Ann"}))).await;

    // The handset writes first: a conversation, one unread.
    s.reply(handset, "+447700900950", "Is the shop open today?").await;
    let list = until_json(s, &key, "/v1/conversations", |v| v["data"].as_array().is_some_and(|d| d.len() == 1)).await;
    let c = &list["data"][0];
    assert_eq!(
        (c["phone"].as_str(), c["number"].as_str(), c["name"].as_str()),
        (Some(handset), Some("+447700900950"), Some("Ann"))
    );
    assert_eq!((c["unread"].as_u64(), c["last_message"]["direction"].as_str()), (Some(1), Some("inbound")), "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    // A text sent the usual way between the two belongs to it; a reply through it marks what it answers read.
    let (st, _) = s
        .call(
            "POST",
            "/v1/messages",
            Some(&key),
            Some(json!({"to": handset, "from": "+447700900950", "body": "We open at 9"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let path = format!("/v1/conversations/{id}/messages");
    let (st, m) = s.call("POST", &path, Some(&key), Some(json!({"body": "See you then"}))).await;
    assert_eq!(
        (st, m["from"].as_str(), m["to"].as_str()),
        (StatusCode::CREATED, Some("+447700900950"), Some(handset)),
        "{m}"
    );
    let (_, thread) = s.call("GET", &path, Some(&key), None).await;
    let bodies: Vec<&str> = thread["data"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["Is the shop open today?", "We open at 9", "See you then"], "{thread}");
    assert_eq!(thread["earlier"], Value::Null);
    let (_, c) = s.call("GET", &format!("/v1/conversations/{id}"), Some(&key), None).await;
    assert_eq!((c["unread"].as_u64(), c["last_message"]["body"].as_str()), (Some(0), Some("See you then")), "{c}");
    // Pages: the newest two, then the one before them.
    let (_, newest) = s.call("GET", &format!("{path}?limit=2"), Some(&key), None).await;
    assert_eq!(newest["data"].as_array().map(Vec::len), Some(2));
    let earlier = newest["earlier"].as_str().unwrap();
    let (_, older) = s.call("GET", &format!("{path}?limit=2&before={earlier}"), Some(&key), None).await;
    assert_eq!(older["data"][0]["body"], "Is the shop open today?", "{older}");
    let first = older["data"][0]["id"].as_str().unwrap();
    let (_, after) = s.call("GET", &format!("{path}?after={first}"), Some(&key), None).await;
    assert_eq!(after["data"].as_array().map(Vec::len), Some(2));

    // An automation's text, and the reply to it, say which automation they belong to.
    let spec = json!({"name": "Ask", "trigger": {"type": "event", "event": "visit.done"},
        "steps": [{"type": "send", "from": "+447700900950", "body": "How was your visit?"}]});
    let (_, a) = s.call("POST", "/v1/automations", Some(&key), Some(spec)).await;
    let automation = a["id"].as_str().unwrap().to_string();
    s.call("POST", "/v1/events", Some(&key), Some(json!({"name": "visit.done", "contact": {"phone": handset}}))).await;
    until_json(s, &key, &path, |v| v["data"].as_array().is_some_and(|d| d.len() == 4)).await;
    s.reply(handset, "+447700900950", "Lovely, thanks").await;
    let thread = until_json(s, &key, &path, |v| v["data"].as_array().is_some_and(|d| d.len() == 5)).await;
    for m in &thread["data"].as_array().unwrap()[3..] {
        assert_eq!(m["automation_id"].as_str(), Some(automation.as_str()), "{m}");
    }
    let (_, c) = s.call("GET", &format!("/v1/conversations/{id}"), Some(&key), None).await;
    assert_eq!(c["unread"].as_u64(), Some(1));
    let (st, c) = s.call("POST", &format!("/v1/conversations/{id}/read"), Some(&key), None).await;
    assert_eq!((st, c["unread"].as_u64()), (StatusCode::OK, Some(0)), "{c}");

    // The account begins one; it comes first, the newest.
    let (st, started) = s
        .call(
            "POST",
            "/v1/conversations",
            Some(&key),
            Some(json!({"to": "+447700900402", "from": "+447700900950", "body": "Your order is ready"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{started}");
    let (_, list) = s.call("GET", "/v1/conversations", Some(&key), None).await;
    assert_eq!(list["data"][0]["id"], started["conversation"]["id"], "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2));
    let (_, one) = s.call("GET", "/v1/conversations?limit=1", Some(&key), None).await;
    let cursor = one["next_cursor"].as_str().unwrap();
    let (_, rest) = s.call("GET", &format!("/v1/conversations?limit=1&cursor={cursor}"), Some(&key), None).await;
    assert_eq!(rest["data"][0]["id"].as_str(), Some(id.as_str()), "{rest}");

    // Another account sees none of it; a STOP is kept on this path too; bad pages are said.
    let (_, theirs) = s.call("GET", "/v1/conversations", Some(&other), None).await;
    assert_eq!(theirs["data"], json!([]));
    for (method, p, body) in [
        ("GET", format!("/v1/conversations/{id}"), None),
        ("GET", path.clone(), None),
        ("POST", path.clone(), Some(json!({"body": "hi"}))),
        ("POST", format!("/v1/conversations/{id}/read"), None),
    ] {
        let (st, v) = s.call(method, &p, Some(&other), body).await;
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{method} {p}");
    }
    let (st, v) = s
        .call(
            "POST",
            "/v1/conversations",
            Some(&other),
            Some(json!({"to": handset, "from": "+447700900950", "body": "hi"})),
        )
        .await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("sender_not_owned")), "{v}");
    s.reply(handset, "+447700900950", "STOP").await;
    until_opted(s, &key, handset, true).await;
    let (st, v) = s.call("POST", &path, Some(&key), Some(json!({"body": "Sale!", "category": "marketing"}))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("recipient_opted_out")),
        "{v}"
    );
    let (st, _) = s.call("GET", "/v1/conversations?cursor=nonsense", Some(&key), None).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = s.call("GET", &format!("{path}?before={first}&after={first}"), Some(&key), None).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
}

/// Sums a metric over every point of every series.
fn total(v: &Value, metric: &str) -> f64 {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["points"].as_array().unwrap().iter())
        .map(|p| p[metric].as_f64().unwrap_or(0.0))
        .sum()
}

/// Analytics: the rollups say what a count over the messages says — sent, delivered, undelivered, failed, cost,
/// replies, opt-outs, clicks — in all, by country and by campaign; another account's are its own.
async fn analytics_equal_a_count_over_the_messages(s: &Server) {
    let (_, key) = s.tenant("acme").await;
    let (_, other) = s.tenant("globex").await;
    // Texts to Britain and to the US, one refused (0001), one undelivered (0002); a campaign with a link.
    let mut ids = Vec::new();
    for to in ["+447700900501", "+447700900502", "+447700900001", "+447700900002", "+12125550501", "+12125550502"] {
        let (st, m) =
            s.call("POST", "/v1/messages", Some(&key), Some(json!({"to": to, "from": "Acme", "body": "hi"}))).await;
        assert_eq!(st, StatusCode::CREATED, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let people: [(&str, &str, Option<&str>, &[&str]); 2] =
        [("+447700900601", "Ann", None, &[]), ("+447700900602", "Bob", None, &[])];
    let (list, _) = contacts_in_list(s, &key, "Counted", &people).await;
    let spec = json!({"name": "counted", "audience": {"lists": [list]}, "from": "Acme", "category": "transactional",
        "body": "Hi {{ name }}: {{ link(\"https://shop.example/x\") }}"});
    let (_, c) = s.call("POST", "/v1/campaigns", Some(&key), Some(spec)).await;
    let campaign = c["id"].as_str().unwrap().to_string();
    s.call("POST", &format!("/v1/campaigns/{campaign}/start"), Some(&key), None).await;
    until_campaign(s, &key, &campaign, "completed").await;
    // A reply, a STOP (a reply and an opt-out, with its confirmation), a click.
    s.reply("+447700900501", "Acme", "thanks").await;
    s.reply("+447700900502", "Acme", "STOP").await;
    until_opted(s, &key, "+447700900502", true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        if let Some(t) = handset_texts(s, "+447700900601").await.pop() {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "the campaign's text");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let code = text.rsplit("/l/").next().unwrap().to_string();
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser.get(format!("{}/l/{code}", s.base)).header("user-agent", "Mozilla/5.0 (iPhone)").send().await;
    assert_eq!(r.unwrap().status(), StatusCode::FOUND);

    // Every outbound text final; then the count over the messages.
    let final_ = ["delivered", "undelivered", "failed", "expired", "canceled"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (outbound, inbound) = loop {
        let (_, out) = s.call("GET", "/v1/messages?limit=100", Some(&key), None).await;
        let (_, inb) = s.call("GET", "/v1/inbound?limit=100", Some(&key), None).await;
        let out = out["data"].as_array().unwrap().clone();
        if out.len() >= 9 && out.iter().all(|m| final_.contains(&m["status"].as_str().unwrap())) {
            break (out, inb["data"].as_array().unwrap().clone());
        }
        assert!(tokio::time::Instant::now() < deadline, "texts still on their way: {out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = |status: &[&str], country: Option<&str>| {
        outbound
            .iter()
            .filter(|m| status.contains(&m["status"].as_str().unwrap()))
            .filter(|m| country.is_none_or(|c| m["to"].as_str().unwrap().starts_with(c)))
            .count() as f64
    };
    let sent = count(&["sent", "delivered", "undelivered"], None);
    let cost: f64 =
        outbound.iter().filter(|m| m["status"] != "failed").map(|m| m["price"].as_f64().unwrap_or(0.0)).sum();
    let path = "/v1/analytics?by=hour";
    let all = until_json(s, &key, path, |v| total(v, "opt_outs") >= 1.0 && total(v, "clicks") >= 1.0).await;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(all["data"][0]["group"], "all");
    assert_eq!(all["data"][0]["points"].as_array().map(Vec::len), Some(24 * 7 + 1), "an hour a point, zeros too");
    assert!(sent >= 7.0, "{outbound:?}");
    for (metric, expected) in [
        ("sent", sent),
        ("delivered", count(&["delivered"], None)),
        ("undelivered", count(&["undelivered"], None)),
        ("failed", count(&["failed"], None)),
        ("replies", inbound.len() as f64),
        ("opt_outs", 1.0),
        ("clicks", 1.0),
    ] {
        assert_eq!(total(&all, metric), expected, "{metric}: {all}");
    }
    assert!((total(&all, "cost") - cost).abs() < 1e-9, "cost {cost}: {all}");
    let point = all["data"][0]["points"].as_array().unwrap().iter().find(|p| p["sent"].as_f64() > Some(0.0)).unwrap();
    assert!(point["delivery_rate"].as_f64().unwrap() > 0.5 && point["latency_p50"].as_u64().is_some(), "{point}");

    // By country, by campaign; only the metrics asked.
    let (_, by_country) =
        s.call("GET", "/v1/analytics?by=day&group=country&metric=sent,delivered", Some(&key), None).await;
    let series = |v: &Value, g: &str| {
        v["data"].as_array().unwrap().iter().find(|x| x["group"] == g).cloned().unwrap_or(Value::Null)
    };
    let gb = json!({"data": [series(&by_country, "GB")]});
    let us = json!({"data": [series(&by_country, "US")]});
    assert_eq!(total(&gb, "sent"), count(&["sent", "delivered", "undelivered"], Some("+44")), "{by_country}");
    assert_eq!(total(&us, "delivered"), count(&["delivered"], Some("+1")), "{by_country}");
    let mut keys: Vec<&String> = by_country["data"][0]["points"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["delivered", "sent", "t"], "only what was asked");
    let (_, by_campaign) = s.call("GET", "/v1/analytics?group=campaign", Some(&key), None).await;
    let theirs = json!({"data": [series(&by_campaign, &campaign)]});
    assert_eq!((total(&theirs, "sent"), total(&theirs, "clicks")), (2.0, 1.0), "{by_campaign}");

    // Another account's are its own; what is asked wrong is said.
    let (_, none) = s.call("GET", path, Some(&other), None).await;
    assert_eq!((total(&none, "sent"), total(&none, "replies")), (0.0, 0.0), "{none}");
    for (bad, code) in [
        ("metric=sent,smiles", "invalid_metric"),
        ("by=week", "invalid_by"),
        ("group=planet", "invalid_group"),
        ("by=hour&from=2020-01-01T00:00:00Z", "invalid_range"),
        ("from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z", "invalid_range"),
        ("from=yesterday", "invalid_time"),
    ] {
        let (st, v) = s.call("GET", &format!("/v1/analytics?{bad}"), Some(&key), None).await;
        assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{bad}: {v}");
    }
}

/// A request with the given headers (a session's cookie, its CSRF token, an Origin); the status, the JSON and the
/// `Set-Cookie` header.
async fn call_as(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = s.client.request(method.parse().unwrap(), format!("{}{path}", s.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let cookie = resp.headers().get("set-cookie").map(|c| c.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let json = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, json, cookie)
}

/// A signed-in session: its cookie header and CSRF token.
struct Signed {
    cookie: String,
    csrf: String,
}

impl Signed {
    fn read(&self) -> Vec<(&str, &str)> {
        vec![("cookie", self.cookie.as_str())]
    }
    fn write(&self) -> Vec<(&str, &str)> {
        vec![("cookie", self.cookie.as_str()), ("x-csrf-token", self.csrf.as_str())]
    }
}

async fn sign_in(s: &Server, email: &str, password: &str) -> Signed {
    let (st, body, cookie) =
        call_as(s, "POST", "/v1/session", &[], Some(json!({"email": email, "password": password}))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "not over plain HTTP");
    let pair = cookie.split(';').next().unwrap().to_string();
    Signed { cookie: pair, csrf: body["csrf_token"].as_str().unwrap().to_string() }
}

async fn users_sign_in_with_their_roles_and_csrf(s: &Server) {
    let (acme, ka) = s.tenant("acme").await;
    let (globex, kb) = s.tenant("globex").await;
    let owner = json!({"email": "Owner@Acme.example", "password": "correct horse 1", "role": "owner"});
    let (st, u) = s.call("POST", "/v1/users", Some(&ka), Some(owner.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{u}");
    assert_eq!((u["email"].as_str(), u["account_id"].as_str()), (Some("owner@acme.example"), Some(acme.as_str())));
    assert!(u.get("password").is_none() && u.get("password_hash").is_none(), "{u}");
    // One user an email, across accounts; another account cannot add users to acme; the operator can.
    let (st, e) = s.call("POST", "/v1/users", Some(&kb), Some(owner.clone())).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("email_taken")));
    let into_acme =
        json!({"email": "x@globex.example", "password": "correct horse 2", "role": "owner", "account_id": acme});
    let (st, _) = s.call("POST", "/v1/users", Some(&kb), Some(into_acme)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let globex_owner =
        json!({"email": "boss@globex.example", "password": "correct horse 3", "role": "owner", "account_id": globex});
    assert_eq!(s.call("POST", "/v1/users", Some(&s.admin_key), Some(globex_owner)).await.0, StatusCode::CREATED);
    for (body, code) in [
        (json!({"email": "nope", "password": "correct horse 1", "role": "member"}), "invalid_email"),
        (json!({"email": "a@acme.example", "password": "short", "role": "member"}), "invalid_password"),
        (json!({"email": "a@acme.example", "password": "correct horse 1", "role": "root"}), "invalid_role"),
        (
            json!({"email": "a@acme.example", "password": "correct horse 1", "role": "member", "extra": 1}),
            "invalid_field",
        ),
    ] {
        let (st, e) = s.call("POST", "/v1/users", Some(&ka), Some(body)).await;
        assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{e}");
    }

    // Sign-in: a wrong password and an unknown email are told apart by nothing.
    for (email, password) in [("owner@acme.example", "wrong password"), ("who@acme.example", "correct horse 1")] {
        let (st, e, cookie) =
            call_as(s, "POST", "/v1/session", &[], Some(json!({"email": email, "password": password}))).await;
        assert_eq!(
            (st, e["error"]["code"].as_str(), cookie),
            (StatusCode::UNAUTHORIZED, Some("invalid_credentials"), None)
        );
    }
    let from_elsewhere = call_as(
        s,
        "POST",
        "/v1/session",
        &[("origin", "https://evil.example")],
        Some(json!({"email": "owner@acme.example", "password": "correct horse 1"})),
    );
    assert_eq!(from_elsewhere.await.0, StatusCode::FORBIDDEN);
    let ann = sign_in(s, "OWNER@acme.example", "correct horse 1").await;
    let (st, me, _) = call_as(s, "GET", "/v1/session", &ann.read(), None).await;
    assert_eq!((st, me["signed_in"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!((me["user"]["role"].as_str(), me["account"]["id"].as_str()), (Some("owner"), Some(acme.as_str())));
    assert_eq!(me["csrf_token"].as_str(), Some(ann.csrf.as_str()));

    // The cookie works wherever a key does, for its account only; a change needs the CSRF token, from this site.
    let text = json!({"to": "+447700900201", "from": "Acme", "body": "hello"});
    let (st, e, _) = call_as(s, "POST", "/v1/messages", &ann.read(), Some(text.clone())).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf_failed")));
    let wrong = [("cookie", ann.cookie.as_str()), ("x-csrf-token", "0000")];
    assert_eq!(call_as(s, "POST", "/v1/messages", &wrong, Some(text.clone())).await.0, StatusCode::FORBIDDEN);
    let mut elsewhere = ann.write();
    elsewhere.push(("origin", "https://evil.example"));
    assert_eq!(call_as(s, "POST", "/v1/messages", &elsewhere, Some(text.clone())).await.0, StatusCode::FORBIDDEN);
    let (st, m, _) = call_as(s, "POST", "/v1/messages", &ann.write(), Some(text.clone())).await;
    assert_eq!(st, StatusCode::CREATED, "{m}");
    let (_, theirs) =
        s.call("POST", "/v1/messages", Some(&kb), Some(json!({"to": "+447700900202", "from": "G", "body": "x"}))).await;
    let theirs = theirs["id"].as_str().unwrap();
    assert_eq!(call_as(s, "GET", &format!("/v1/messages/{theirs}"), &ann.read(), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        call_as(s, "DELETE", &format!("/v1/messages/{theirs}"), &ann.write(), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, mine, _) = call_as(s, "GET", "/v1/messages", &ann.read(), None).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");
    let (_, listed, _) = call_as(s, "GET", "/v1/users", &ann.read(), None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "globex's owner is not listed in acme: {listed}");
    let globex_user =
        s.call("GET", "/v1/users", Some(&kb), None).await.1["data"][0]["id"].as_str().unwrap().to_string();
    for method in ["GET", "PATCH", "DELETE"] {
        let (st, _, _) =
            call_as(s, method, &format!("/v1/users/{globex_user}"), &ann.write(), Some(json!({"role": "viewer"})))
                .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method} another account's user");
    }
    // Operator routes stay the operator's.
    assert_eq!(call_as(s, "GET", "/v1/connectors", &ann.read(), None).await.0, StatusCode::FORBIDDEN);

    // Roles: the owner adds a viewer, a member and an admin.
    for (email, role) in [("vic@acme.example", "viewer"), ("meg@acme.example", "member"), ("ada@acme.example", "admin")]
    {
        let body = json!({"email": email, "password": "correct horse 9", "role": role});
        let (st, u, _) = call_as(s, "POST", "/v1/users", &ann.write(), Some(body)).await;
        assert_eq!(st, StatusCode::CREATED, "{u}");
    }
    let vic = sign_in(s, "vic@acme.example", "correct horse 9").await;
    assert_eq!(call_as(s, "GET", "/v1/messages", &vic.read(), None).await.0, StatusCode::OK);
    let (st, e, _) = call_as(s, "POST", "/v1/messages", &vic.write(), Some(text.clone())).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")));
    assert_eq!(
        call_as(s, "GET", "/v1/users", &vic.read(), None).await.0,
        StatusCode::FORBIDDEN,
        "a viewer sees no settings"
    );
    let plan = json!({"body": "hello"});
    assert_eq!(
        call_as(s, "POST", "/v1/messages/plan", &vic.write(), Some(plan)).await.0,
        StatusCode::OK,
        "planning reads"
    );
    let meg = sign_in(s, "meg@acme.example", "correct horse 9").await;
    let template = json!({"name": "hi", "body": "Hi {{ name }}"});
    assert_eq!(call_as(s, "POST", "/v1/templates", &meg.write(), Some(template)).await.0, StatusCode::CREATED);
    assert_eq!(call_as(s, "POST", "/v1/messages", &meg.write(), Some(text.clone())).await.0, StatusCode::CREATED);
    for (method, path) in
        [("GET", "/v1/webhooks"), ("GET", "/v1/smpp/credentials"), ("GET", "/v1/users"), ("POST", "/v1/sender-ids")]
    {
        let (st, _, _) = call_as(s, method, path, &meg.write(), Some(json!({"sender_id": "Acme"}))).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "a member: {method} {path}");
    }
    let keys = format!("/v1/accounts/{acme}/keys");
    assert_eq!(call_as(s, "POST", &keys, &meg.write(), None).await.0, StatusCode::FORBIDDEN, "a member makes no keys");
    let ada = sign_in(s, "ada@acme.example", "correct horse 9").await;
    assert_eq!(call_as(s, "GET", "/v1/webhooks", &ada.read(), None).await.0, StatusCode::OK, "an admin sees settings");
    assert_eq!(call_as(s, "POST", &keys, &ada.write(), None).await.0, StatusCode::CREATED, "and makes keys");
    let another_owner = json!({"email": "own2@acme.example", "password": "correct horse 9", "role": "owner"});
    let (st, _, _) = call_as(s, "POST", "/v1/users", &ada.write(), Some(another_owner)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an admin makes no owners");
    let ann_id = me["user"]["id"].as_str().unwrap();
    let (st, _, _) =
        call_as(s, "PATCH", &format!("/v1/users/{ann_id}"), &ada.write(), Some(json!({"role": "viewer"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "an admin does not demote an owner");
    let (st, _, _) =
        call_as(s, "PATCH", &format!("/v1/users/{ann_id}"), &ann.write(), Some(json!({"role": "admin"}))).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "nobody changes their own role");
    let (st, e, _) = call_as(s, "DELETE", &format!("/v1/users/{ann_id}"), &ann.write(), None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("last_owner")));
    let vic_id = vic_id(s, &ka).await;
    let (st, u, _) =
        call_as(s, "PATCH", &format!("/v1/users/{vic_id}"), &ada.write(), Some(json!({"role": "member"}))).await;
    assert_eq!((st, u["role"].as_str()), (StatusCode::OK, Some("member")));
    let template = json!({"name": "vic's", "body": "Hi"});
    let (st, _, _) = call_as(s, "POST", "/v1/templates", &vic.write(), Some(template)).await;
    assert_eq!(st, StatusCode::CREATED, "a new role holds at the next request of a session");

    // A user changes their own password, given the current one; a key cannot.
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (st, e, _) =
        call_as(s, "POST", "/v1/session/password", &vic.write(), Some(change("wrong one!!", "vic's new password")))
            .await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("wrong_password")));
    let (st, e, _) =
        call_as(s, "POST", "/v1/session/password", &vic.write(), Some(change("correct horse 9", "short"))).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_password")));
    assert_eq!(
        call_as(s, "POST", "/v1/session/password", &vic.read(), Some(change("correct horse 9", "vic's new password")))
            .await
            .0,
        StatusCode::FORBIDDEN,
        "CSRF"
    );
    let (st, _, _) =
        call_as(s, "POST", "/v1/session/password", &vic.write(), Some(change("correct horse 9", "vic's new password")))
            .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    sign_in(s, "vic@acme.example", "vic's new password").await;
    let (st, e) = s.call("POST", "/v1/session/password", Some(&ka), Some(change("a", "bbbbbbbbbbbb"))).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_a_session")));

    // A new password ends the user's other sessions, and keeps the one that set it.
    let ann2 = sign_in(s, "owner@acme.example", "correct horse 1").await;
    let new = json!({"password": "battery staple 22"});
    assert_eq!(call_as(s, "PATCH", &format!("/v1/users/{ann_id}"), &ann.write(), Some(new)).await.0, StatusCode::OK);
    assert_eq!(call_as(s, "GET", "/v1/messages", &ann.read(), None).await.0, StatusCode::OK);
    let (st, e, _) = call_as(s, "GET", "/v1/messages", &ann2.read(), None).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));

    // Sign-out needs the CSRF token; then the cookie is worth nothing.
    assert_eq!(call_as(s, "DELETE", "/v1/session", &ann.read(), None).await.0, StatusCode::FORBIDDEN);
    let (st, _, cleared) = call_as(s, "DELETE", "/v1/session", &ann.write(), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert!(cleared.unwrap().contains("Max-Age=0"));
    assert_eq!(call_as(s, "GET", "/v1/messages", &ann.read(), None).await.0, StatusCode::UNAUTHORIZED);
    let (st, state, _) = call_as(s, "GET", "/v1/session", &ann.read(), None).await;
    assert_eq!((st, state), (StatusCode::OK, json!({"signed_in": false})));

    // A removed user's sessions end at once.
    assert_eq!(
        call_as(s, "DELETE", &format!("/v1/users/{vic_id}"), &ada.write(), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(call_as(s, "GET", "/v1/messages", &vic.read(), None).await.0, StatusCode::UNAUTHORIZED);

    // Five wrong passwords in a row, and sign-in waits, even with the right one.
    for _ in 0..5 {
        let wrong = json!({"email": "meg@acme.example", "password": "not the one"});
        assert_eq!(call_as(s, "POST", "/v1/session", &[], Some(wrong)).await.0, StatusCode::UNAUTHORIZED);
    }
    let right = json!({"email": "meg@acme.example", "password": "correct horse 9"});
    let (st, e, _) = call_as(s, "POST", "/v1/session", &[], Some(right)).await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts")));
    // Sign-ins are not written to the audit log (their bodies hold passwords); user changes are, passwords hidden.
    let (_, audit) = s.call("GET", "/v1/audit?limit=1000", Some(&s.admin_key), None).await;
    let text = audit.to_string();
    assert!(!text.contains("correct horse") && !text.contains("/v1/session"), "{text}");
    assert!(text.contains("POST /v1/users"), "{text}");
}

async fn vic_id(s: &Server, key: &str) -> String {
    let (_, users) = s.call("GET", "/v1/users", Some(key), None).await;
    let users = users["data"].as_array().unwrap();
    users.iter().find(|u| u["email"] == "vic@acme.example").unwrap()["id"].as_str().unwrap().to_string()
}

async fn the_dashboard_is_served_from_the_binary(s: &Server) {
    let resp = s.client.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = resp.text().await.unwrap();
    assert!(page.contains("/assets/app.js"), "{page}");
    let js = s.client.get(format!("{}/assets/app.js", s.base)).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let tag = js.headers()["etag"].clone();
    let again = s.client.get(format!("{}/assets/app.js", s.base)).header("if-none-match", tag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    for missing in ["/assets/nope.js", "/assets/../Cargo.toml"] {
        let resp = s.client.get(format!("{}{missing}", s.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{missing}");
    }
    // The send form's counter: encoding, parts and characters, as admission plans them.
    let (st, p) = s.call("POST", "/v1/messages/plan", Some(&s.admin_key), Some(json!({"body": "héllo wörld"}))).await;
    assert_eq!(
        (st, p["encoding"].as_str(), p["segments"].as_u64(), p["characters"].as_u64()),
        (StatusCode::OK, Some("gsm7"), Some(1), Some(11))
    );
    let long = "ж".repeat(71);
    let (_, p) = s.call("POST", "/v1/messages/plan", Some(&s.admin_key), Some(json!({"body": long}))).await;
    assert_eq!((p["encoding"].as_str(), p["segments"].as_u64()), (Some("ucs2"), Some(2)));
    let (st, e) = s.call("POST", "/v1/messages/plan", Some(&s.admin_key), Some(json!({"body": "x", "to": "12"}))).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_destination")),
        "{e}"
    );
    assert_eq!(s.call("POST", "/v1/messages/plan", None, Some(json!({"body": "x"}))).await.0, StatusCode::UNAUTHORIZED);

    // The operator's list of accounts, for the operator alone.
    let (acme, key) = s.tenant("acme").await;
    let (st, all) = s.call("GET", "/v1/accounts", Some(&s.admin_key), None).await;
    assert_eq!(st, StatusCode::OK);
    let names: Vec<&str> = all["data"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "acme"], "oldest first");
    assert_eq!(all["data"][1]["id"].as_str(), Some(acme.as_str()));
    assert_eq!(s.call("GET", "/v1/accounts", Some(&key), None).await.0, StatusCode::FORBIDDEN);
}
