#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! The services on a real SQLite store and a running engine, with a clock the tests hold still: two accounts
//! that cannot read, cancel, replace or list each other's messages or credentials; idempotency per account;
//! admission's codes; and the admin's checks, each with its code.

use std::sync::Arc;
use std::time::Duration;

use smsgate_connectors::Kit;
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::access::{Scope, Scopes};
use smsgate_core::admission::Request;
use smsgate_core::clock::{Clock, ManualClock};
use smsgate_core::senders::{SenderPolicy, SenderStatus};
use smsgate_core::{AccountId, Status, Timestamp};
use smsgate_engine::ingress::Ingress;
use smsgate_engine::{Config, Engine, Registry};
use smsgate_services::{
    Admin, CredentialSpec, KeySpec, Messages, NumberSpec, RouteSpec, SenderClass, ServiceError, Submitted, TargetSpec,
};
use smsgate_store::{ListFilter, Store};
use tokio_util::sync::CancellationToken;

struct Setup {
    messages: Messages,
    admin: Admin,
    clock: ManualClock,
    acme: AccountId,
    globex: AccountId,
    stop: CancellationToken,
    engine: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    path: std::path::PathBuf,
}

async fn setup() -> Setup {
    let path = std::env::temp_dir().join(format!("smsgate-services-{}.db", uuid::Uuid::now_v7().simple()));
    let store = smsgate_store::open(&format!("sqlite://{}", path.display()), 4).await.unwrap();
    let clock = ManualClock::new(Timestamp::now());
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let sim = Arc::new(SimNetwork::new(Vec::new(), tx));
    let config =
        Config { clock: Arc::new(clock.clone()), poll_interval: Duration::from_millis(20), ..Config::default() };
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(Kit::new(sim))), config);
    let stop = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(rx, stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.is_running() {
        assert!(tokio::time::Instant::now() < deadline, "the engine did not start");
        tokio::task::yield_now().await;
    }
    let ingress = Ingress::spawn(engine.clone(), store.clone(), Arc::default());
    let messages = Messages::new(ingress, store.clone());
    let admin = Admin::new(store.clone(), engine);
    let acme = admin.create_account("Acme").await.unwrap().id;
    let globex = admin.create_account("Globex").await.unwrap().id;
    // Acme sends from its own sender ID; Globex, whom the operator lets send from anything, tries Acme's doors.
    let operator = admin.admin_account().await.unwrap();
    admin.register_sender_id(&operator, "Acme", Some(acme)).await.unwrap();
    admin.set_sender_policy(&operator, globex, SenderPolicy::Any).await.unwrap();
    Setup { messages, admin, clock, acme, globex, stop, engine: running, store, path }
}

impl Setup {
    async fn finish(self) {
        self.stop.cancel();
        self.engine.await.unwrap();
        self.store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }

    /// A request to send `body` to `to` an hour from the clock's now: it waits, so it can be canceled.
    fn later(&self, to: &str, body: &str) -> Request {
        Request {
            to: to.into(),
            from: "Acme".into(),
            body: body.into(),
            send_at: Some(self.clock.now().plus_secs(3600)),
            ..Request::default()
        }
    }
}

fn code(r: Result<impl std::fmt::Debug, ServiceError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_cannot_touch_each_others_messages() {
    let s = setup().await;
    let (m, acme, globex) = (&s.messages, s.acme, s.globex);
    let sent = m.submit(acme, &s.later("+447700900123", "hello"), None).await.unwrap();
    let id = sent.message().id;
    assert_eq!(sent.message().status, Status::Scheduled);
    // Globex sees nothing of it, and can change nothing.
    assert_eq!(code(m.get(globex, id).await), "not_found");
    assert_eq!(code(m.journey(globex, id).await), "not_found");
    assert_eq!(code(m.callbacks(globex, id).await), "not_found");
    assert_eq!(code(m.cancel(globex, id, "no").await), "not_found");
    let hijack = Request { from: "Globex".into(), ..s.later("+447700900123", "hijacked") };
    let replacement = m.prepare(globex, &hijack, s.clock.now()).await.unwrap();
    assert!(!m.replace(globex, id, &replacement, "no").await.unwrap());
    assert!(m.list(globex, &ListFilter::default(), None, 50).await.unwrap().is_empty());
    assert_eq!(m.cancel_waiting(globex, "+447700900123", "Acme", "no").await.unwrap(), 0);
    assert_eq!(m.get(acme, id).await.unwrap().body, "hello");
    // Acme replaces and cancels its own, through the engine's writer; a second cancel is refused.
    let replacement = m.prepare(acme, &s.later("+447700900123", "hello again"), s.clock.now()).await.unwrap();
    assert!(m.replace(acme, id, &replacement, "replaced").await.unwrap());
    let canceled = m.cancel(acme, id, "canceled by the sender").await.unwrap();
    assert_eq!((canceled.status, canceled.body.as_str()), (Status::Canceled, "hello again"));
    assert_eq!(code(m.cancel(acme, id, "again").await), "not_cancelable");
    let (_, journey) = m.journey(acme, id).await.unwrap();
    assert_eq!(journey.last().map(|e| e.detail.as_str()), Some("canceled by the sender"));
    // By addresses: only the account's own waiting messages.
    for _ in 0..3 {
        m.submit(acme, &s.later("+447700900124", "x"), None).await.unwrap();
    }
    m.submit(globex, &Request { from: "Globex".into(), ..s.later("+447700900124", "y") }, None).await.unwrap();
    assert_eq!(m.cancel_waiting(acme, "+447700900124", "Acme", "bulk").await.unwrap(), 3);
    let left = m.list(globex, &ListFilter::default(), None, 50).await.unwrap();
    assert_eq!(left.iter().map(|m| m.status).collect::<Vec<_>>(), [Status::Scheduled]);
    assert_eq!(code(m.list(acme, &ListFilter::default(), None, 0).await), "invalid_limit");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_per_account_and_admission_has_codes() {
    let s = setup().await;
    let (m, acme, globex) = (&s.messages, s.acme, s.globex);
    let key = || Some(("order-1".to_string(), "hash-a".to_string()));
    let first = m.submit(acme, &s.later("+447700900123", "a"), key()).await.unwrap();
    let again = m.submit(acme, &s.later("+447700900123", "a"), key()).await.unwrap();
    assert!(matches!(again, Submitted::Repeated(ref r) if r.id == first.message().id));
    let other = Some(("order-1".to_string(), "hash-b".to_string()));
    assert_eq!(code(m.submit(acme, &s.later("+447700900123", "b"), other).await), "idempotency_key_reused");
    // The same key is another account's own.
    let theirs =
        m.submit(globex, &Request { from: "Globex".into(), ..s.later("+447700900123", "a") }, key()).await.unwrap();
    assert!(matches!(theirs, Submitted::New(ref t) if t.id != first.message().id));
    // Admission's refusals keep their codes.
    assert_eq!(code(m.submit(acme, &s.later("12", "a"), None).await), "invalid_destination");
    assert_eq!(code(m.submit(acme, &s.later("+447700900123", ""), None).await), "empty_body");
    let past = Request { send_at: Some(s.clock.now().plus_secs(-3600)), ..s.later("+447700900123", "a") };
    assert!(m.submit(acme, &past, None).await.is_ok(), "a past send_at is now");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_checks_what_it_is_given() {
    let s = setup().await;
    let a = &s.admin;
    let settings = |v: serde_json::Value| v.as_object().cloned().unwrap();
    assert_eq!(code(a.create_account("  ").await), "invalid_name");
    assert_eq!(
        code(a.create_connector(settings(serde_json::json!({"name": "bad name", "kind": "sim"}))).await),
        "invalid_connector"
    );
    assert_eq!(
        code(a.create_connector(settings(serde_json::json!({"name": "x", "kind": "smtp"}))).await),
        "invalid_connector"
    );
    a.create_connector(settings(serde_json::json!({"name": "eu", "kind": "sim"}))).await.unwrap();
    assert_eq!(
        code(a.create_connector(settings(serde_json::json!({"name": "eu", "kind": "sim"}))).await),
        "connector_exists"
    );
    assert_eq!(
        code(a.update_connector("eu", settings(serde_json::json!({"kind": "smpp"}))).await),
        "invalid_connector"
    );
    let route = |name: &str, connector: &str| RouteSpec {
        name: Some(name.into()),
        connectors: Some(vec![TargetSpec { name: connector.into(), priority: None, weight: None, price: Some(0.01) }]),
        ..RouteSpec::default()
    };
    assert_eq!(code(a.create_route(route("uk", "nowhere")).await), "unknown_connector");
    let made = a.create_route(route("uk", "eu")).await.unwrap();
    assert_eq!(made.connectors[0].price_micros, Some(10_000));
    assert_eq!(code(a.create_route(route("uk", "eu")).await), "route_exists");
    assert_eq!(code(a.delete_connector("eu").await), "connector_in_use");
    assert_eq!(code(a.set_account_routes(s.acme, Some(&["nope".to_string()])).await), "unknown_route");
    assert_eq!(a.set_account_routes(s.acme, Some(&["uk".to_string()])).await.unwrap().routes, Some(vec!["uk".into()]));
    a.delete_route("uk").await.unwrap();
    a.delete_connector("eu").await.unwrap();
    assert_eq!(code(a.route("uk").await), "not_found");
    // Credentials are their account's: another sees and removes none of them.
    let spec = |id: &str| CredentialSpec {
        system_id: id.into(),
        password: "secret".into(),
        allowed_ips: Some(vec!["10.0.0.0/8".into()]),
        max_binds: Some(2),
        throughput: None,
    };
    a.create_credential(s.acme, spec("acme")).await.unwrap();
    assert_eq!(code(a.create_credential(s.globex, spec("acme")).await), "system_id_taken");
    assert_eq!(code(a.credential(s.globex, "acme").await), "not_found");
    assert_eq!(code(a.delete_credential(s.globex, "acme").await), "not_found");
    assert!(a.credentials(s.globex).await.unwrap().is_empty());
    let bad_ips = CredentialSpec { allowed_ips: Some(vec!["10.0.0.0/33".into()]), ..spec("other") };
    assert_eq!(code(a.create_credential(s.acme, bad_ips).await), "invalid_allowed_ips");
    assert_eq!(
        code(a.create_credential(s.acme, CredentialSpec { password: "123456789".into(), ..spec("o") }).await),
        "invalid_password"
    );
    // Webhooks: URLs checked, private addresses among them; every account has its secret from the start, and a
    // rotated one keeps signing for a grace period.
    assert_eq!(code(a.put_webhooks(s.acme, Some("ftp://x".into()), None).await), "invalid_url");
    assert_eq!(code(a.put_webhooks(s.acme, Some("http://169.254.169.254/".into()), None).await), "invalid_url");
    let before = a.webhooks(s.acme).await.unwrap();
    assert!(before.secret.starts_with("whsec_") && before.status_url.is_none());
    let w = a.put_webhooks(s.acme, Some("https://acme.example/hook".into()), None).await.unwrap();
    assert_eq!(w.secret, before.secret);
    let rotated = a.rotate_webhook_secret(s.acme).await.unwrap();
    assert_ne!(w.secret, rotated.secret);
    let (previous, until) = rotated.previous_secret.clone().expect("the old secret in its grace period");
    assert_eq!((previous, until), (w.secret.clone(), s.clock.now().plus_secs(86_400)));
    let globex = a.webhooks(s.globex).await.unwrap();
    assert!(globex.secret.starts_with("whsec_") && globex.secret != rotated.secret);
    // The admin's first key once, then none; a known key that is another account's is refused.
    assert!(a.bootstrap(None).await.unwrap().is_some());
    assert!(a.bootstrap(None).await.unwrap().is_none());
    let operator = a.admin_account().await.unwrap();
    let theirs = a.create_key(&operator, Scopes::all_for(true), s.acme, KeySpec::default()).await.unwrap();
    assert_eq!(code(a.bootstrap(Some(&theirs.key)).await), "key_taken");
    assert_eq!(a.authenticate(&theirs.key).await.unwrap().map(|x| x.account.id), Some(s.acme));
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_revoked_scoped_and_stored_keyed() {
    let s = setup().await;
    let a = &s.admin;
    let operator = a.admin_account().await.unwrap();
    let all = Scopes::all_for(true);
    let acme = a.account(s.acme).await.unwrap();
    let globex = a.account(s.globex).await.unwrap();
    // The operator makes Acme a full key and a send-only one.
    let full = a.create_key(&operator, all, acme.id, KeySpec { name: Some("app".into()), scopes: None }).await.unwrap();
    let send_only = Scopes::of(&[Scope::Send]);
    let sender = a.create_key(&operator, all, acme.id, KeySpec { name: None, scopes: Some(send_only) }).await.unwrap();
    // Keys carry a public part, kept as the prefix; nothing of the secret part is stored.
    assert!(full.key.starts_with(&format!("{}_", full.record.prefix)) && full.record.prefix.starts_with("sk_"));
    assert!(full.key.len() > full.record.prefix.len() + 60);
    let authed = a.authenticate(&sender.key).await.unwrap().unwrap();
    assert_eq!((authed.account.id, authed.scopes()), (acme.id, send_only));
    assert!(authed.key.last_used_at.is_some(), "used now");
    assert_eq!(a.authenticate(&full.key).await.unwrap().unwrap().scopes(), Scopes::all_for(false));
    assert!(a.authenticate("sk_nothing_of_the_kind").await.unwrap().is_none());
    // Only the admin account's keys may have the admin scope.
    let admin_scope = KeySpec { name: None, scopes: Some(Scopes::of(&[Scope::Admin])) };
    assert_eq!(code(a.create_key(&operator, all, acme.id, admin_scope).await), "invalid_scopes");
    // An account manages its own keys with the manage scope, no more than its key's scopes; never another's.
    let acme_all = Scopes::all_for(false);
    let own = a.create_key(&acme, acme_all, acme.id, KeySpec::default()).await.unwrap();
    assert_eq!(code(a.create_key(&acme, send_only, acme.id, KeySpec::default()).await), "insufficient_scope");
    let wider = KeySpec { name: None, scopes: Some(acme_all) };
    assert_eq!(code(a.create_key(&acme, Scopes::of(&[Scope::Manage]), acme.id, wider).await), "insufficient_scope");
    assert_eq!(code(a.create_key(&acme, acme_all, globex.id, KeySpec::default()).await), "not_found");
    assert_eq!(code(a.keys(&acme, acme_all, globex.id).await), "not_found");
    assert_eq!(code(a.revoke_key(&acme, acme_all, globex.id, &full.record.id).await), "not_found");
    assert_eq!(code(a.revoke_key(&globex, acme_all, globex.id, &full.record.id).await), "not_found");
    let listed = a.keys(&acme, acme_all, acme.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        [&full.record.id, &sender.record.id, &own.record.id]
    );
    assert_eq!(listed[0].name.as_deref(), Some("app"));
    // Revoked: refused from then on, and listed as revoked.
    let revoked = a.revoke_key(&acme, acme_all, acme.id, &sender.record.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(a.authenticate(&sender.key).await.unwrap().is_none());
    assert_eq!(code(a.revoke_key(&acme, acme_all, acme.id, &sender.record.id).await), "not_found");
    // A key of an earlier version (a plain hash in the store) still works, and is re-hashed when used.
    let (old_key, old_hash) = smsgate_services::keys::generate_key();
    s.store.create_api_key(globex.id, &old_hash, "", Timestamp::now()).await.unwrap();
    assert_eq!(a.authenticate(&old_key).await.unwrap().map(|x| x.account.id), Some(globex.id));
    assert!(s.store.api_key_by_hash(&old_hash).await.unwrap().is_none(), "no longer stored by its plain hash");
    assert!(s.store.api_key_by_hash(&a.key_hash(&old_key)).await.unwrap().is_some());
    assert_eq!(a.authenticate(&old_key).await.unwrap().map(|x| x.account.id), Some(globex.id));
    // Another server secret knows none of these keys.
    let other = a.clone().key_secret(&[7; 32]);
    assert!(other.authenticate(&full.key).await.unwrap().is_none());
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_admin_key_replaces_the_old_one() {
    let s = setup().await;
    let a = &s.admin;
    let first = "sk_first_operator_key_0123456789";
    let second = "sk_second_operator_key_987654321";
    a.bootstrap(Some(first)).await.unwrap();
    a.bootstrap(Some(first)).await.unwrap();
    assert!(a.authenticate(first).await.unwrap().is_some_and(|x| x.account.is_admin));
    let operator = a.admin_account().await.unwrap();
    let made = a.create_key(&operator, Scopes::all_for(true), operator.id, KeySpec::default()).await.unwrap();
    a.bootstrap(Some(second)).await.unwrap();
    assert!(a.authenticate(first).await.unwrap().is_none(), "the old environment key is revoked");
    assert!(a.authenticate(second).await.unwrap().is_some());
    assert!(a.authenticate(&made.key).await.unwrap().is_some(), "keys made over the API stay");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_send_only_from_what_they_own() {
    let s = setup().await;
    let (m, a) = (&s.messages, &s.admin);
    let operator = a.admin_account().await.unwrap();
    let acme = a.account(s.acme).await.unwrap();
    let initech = a.create_account("Initech").await.unwrap();
    assert_eq!(initech.sender_policy, SenderPolicy::Owned, "new accounts send from their own senders only");
    assert_eq!(operator.sender_policy, SenderPolicy::Any, "the zero-config admin sends from anything");
    let from = |from: &str| Request { from: from.into(), ..s.later("+447700900123", "hi") };
    // Nothing owned: nothing sent, not even from a number.
    assert_eq!(code(m.submit(initech.id, &from("Initech"), None).await), "sender_not_owned");
    assert_eq!(code(m.submit(initech.id, &from("+447700900001"), None).await), "sender_not_owned");
    // Another account's sender ID, in any case: refused, even to an account that may send from anything else.
    assert_eq!(code(m.submit(initech.id, &from("ACME"), None).await), "sender_not_owned");
    assert_eq!(code(m.submit(s.globex, &from("Acme"), None).await), "sender_not_owned");
    m.submit(s.globex, &from("Globex"), None).await.unwrap();

    // A sender ID an account asks for waits for the operator; the name is then taken for everyone.
    let asked = a.register_sender_id(&initech, "Initech", None).await.unwrap();
    assert_eq!(asked.status, SenderStatus::Pending);
    assert_eq!(code(m.submit(initech.id, &from("Initech"), None).await), "sender_not_owned");
    assert_eq!(code(a.register_sender_id(&acme, "INITECH", None).await), "sender_id_taken");
    assert_eq!(code(a.register_sender_id(&initech, "Acme", None).await), "sender_id_taken");
    assert_eq!(code(a.register_sender_id(&initech, "x", Some(s.acme)).await), "forbidden");
    assert_eq!(code(a.register_sender_id(&initech, "12345", None).await), "invalid_sender_id");
    assert_eq!(code(a.register_sender_id(&initech, "Twelve chars", None).await), "invalid_sender_id");
    // Only the operator approves; another account cannot even see it.
    assert_eq!(code(a.decide_sender_id(&initech, &asked.id, true).await), "forbidden");
    assert_eq!(code(a.sender(&acme, SenderClass::SenderId, &asked.id).await), "not_found");
    assert_eq!(code(a.remove_sender(&acme, SenderClass::SenderId, &asked.id).await), "not_found");
    let approved = a.decide_sender_id(&operator, &asked.id, true).await.unwrap();
    assert_eq!(approved.status, SenderStatus::Active);
    m.submit(initech.id, &from("Initech"), None).await.unwrap();

    // Numbers: the operator assigns them, with checks; an account lists its own.
    let number = |n: &str, account| NumberSpec { number: n.into(), account, connector: None };
    assert_eq!(code(a.assign_number(&initech, number("+447700900001", initech.id)).await), "forbidden");
    assert_eq!(code(a.assign_number(&operator, number("Initech", initech.id)).await), "invalid_number");
    assert_eq!(code(a.assign_number(&operator, number("+1", initech.id)).await), "invalid_number");
    let unknown = NumberSpec { connector: Some("nowhere".into()), ..number("+447700900001", initech.id) };
    assert_eq!(code(a.assign_number(&operator, unknown).await), "unknown_connector");
    let long = a.assign_number(&operator, number("447700900001", initech.id)).await.unwrap();
    assert_eq!(long.address, "+447700900001");
    let short = a.assign_number(&operator, number("60123", initech.id)).await.unwrap();
    assert_eq!(code(a.assign_number(&operator, number("+447700900001", s.acme)).await), "number_taken");
    m.submit(initech.id, &from("+447700900001"), None).await.unwrap();
    m.submit(initech.id, &from("60123"), None).await.unwrap();
    let mine = a.senders(&initech, SenderClass::Number, None).await.unwrap();
    assert_eq!(mine.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [long.id.as_str(), short.id.as_str()]);
    assert!(a.senders(&acme, SenderClass::Number, Some(initech.id)).await.unwrap().is_empty());
    assert_eq!(a.senders(&operator, SenderClass::Number, Some(initech.id)).await.unwrap().len(), 2);
    assert_eq!(code(a.sender(&acme, SenderClass::Number, &long.id).await), "not_found");
    // A number is not a sender ID, whoever asks.
    assert_eq!(code(a.sender(&operator, SenderClass::SenderId, &long.id).await), "not_found");
    assert_eq!(code(a.remove_sender(&initech, SenderClass::Number, &long.id).await), "forbidden");
    // Taken back: no longer sent from, at once on this node.
    a.remove_sender(&operator, SenderClass::Number, &long.id).await.unwrap();
    assert_eq!(code(m.submit(initech.id, &from("+447700900001"), None).await), "sender_not_owned");
    // The operator lets the account send from anything, and takes it back.
    assert_eq!(code(a.set_sender_policy(&initech, initech.id, SenderPolicy::Any).await), "forbidden");
    a.set_sender_policy(&operator, initech.id, SenderPolicy::Any).await.unwrap();
    m.submit(initech.id, &from("Whatever"), None).await.unwrap();
    a.set_sender_policy(&operator, initech.id, SenderPolicy::Owned).await.unwrap();
    assert_eq!(code(m.submit(initech.id, &from("Whatever"), None).await), "sender_not_owned");
    // Messages a second, on every way in (REST and SMPP submit through here): two go, the third waits.
    assert_eq!(code(a.set_account_rates(&initech, initech.id, None, Some(2)).await), "forbidden");
    a.set_account_rates(&operator, initech.id, None, Some(2)).await.unwrap();
    m.submit(initech.id, &from("Initech"), None).await.unwrap();
    m.submit(initech.id, &from("Initech"), None).await.unwrap();
    assert_eq!(code(m.submit(initech.id, &from("Initech"), None).await), "rate_limited");
    m.submit(s.acme, &from("Acme"), None).await.unwrap();
    s.finish().await;
}
