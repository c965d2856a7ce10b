#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! Quiet hours, opt-outs and retention through the services, on SQLite and on PostgreSQL, with a clock the tests
//! set: a Florida number at 20:30 its time is held until 08:00, a Texas number on a Sunday morning until noon; an
//! opt-out cancels what was held; transactional texts pass when the account says so; history past its retention
//! loses its bodies and numbers.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::json;
use smsgate_connectors::Kit;
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::admission::Request;
use smsgate_core::clock::{Clock, ManualClock};
use smsgate_core::consent::{Category, Compliance, Source};
use smsgate_core::{AccountId, Status, Timestamp};
use smsgate_engine::ingress::Ingress;
use smsgate_engine::{Config, Engine, Registry};
use smsgate_services::{Admin, Contacts, Messages, ServiceError};
use smsgate_store::Store;
use tokio_util::sync::CancellationToken;

fn postgres_url() -> String {
    std::env::var("SMSGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn on_server(sql: String) {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.expect("PostgreSQL is up");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("statement");
    pool.close().await;
}

struct Setup {
    messages: Messages,
    contacts: Contacts,
    engine: Engine,
    clock: ManualClock,
    acme: AccountId,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    backend: &'static str,
    name: String,
}

/// 20:30 on Tuesday 1 December 2026 in Miami.
fn miami_evening() -> Timestamp {
    let t = chrono_tz::America::New_York.with_ymd_and_hms(2026, 12, 1, 20, 30, 0).single().unwrap();
    Timestamp(t.timestamp_millis())
}

async fn setup(backend: &'static str) -> Setup {
    let name = format!("test_{}", uuid::Uuid::now_v7().simple());
    let url = match backend {
        "sqlite" => format!("sqlite://{}", std::env::temp_dir().join(format!("smsgate-{name}.db")).display()),
        _ => {
            on_server(format!("CREATE SCHEMA {name}")).await;
            format!("{}?options=-c%20search_path%3D{name}", postgres_url())
        }
    };
    let store = smsgate_store::open(&url, 4).await.unwrap();
    let clock = ManualClock::new(miami_evening());
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let sim = Arc::new(SimNetwork::new(Vec::new(), tx));
    let config =
        Config { clock: Arc::new(clock.clone()), poll_interval: Duration::from_millis(20), ..Config::default() };
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(Kit::new(sim))), config);
    let stop = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(rx, stop.clone()));
    let ingress = Ingress::spawn(engine.clone(), store.clone(), Arc::default());
    let messages = Messages::new(ingress, store.clone());
    let admin = Admin::new(store.clone(), engine.clone());
    let acme = admin.create_account("Acme").await.unwrap().id;
    let operator = admin.admin_account().await.unwrap();
    admin.set_sender_policy(&operator, acme, smsgate_core::senders::SenderPolicy::Any).await.unwrap();
    let contacts = Contacts::new(messages.clone(), store.clone());
    Setup { messages, contacts, engine, clock, acme, stop, running, store, backend, name }
}

impl Setup {
    async fn finish(self) {
        self.stop.cancel();
        self.running.await.unwrap();
        self.store.close().await;
        match self.backend {
            "sqlite" => {
                for suffix in ["", "-wal", "-shm"] {
                    let path = std::env::temp_dir().join(format!("smsgate-{}.db{suffix}", self.name));
                    let _ = std::fs::remove_file(path);
                }
            }
            _ => on_server(format!("DROP SCHEMA {} CASCADE", self.name)).await,
        }
    }

    async fn send(&self, to: &str, category: Category) -> Result<smsgate_core::Message, ServiceError> {
        let request =
            Request { to: to.into(), from: "+13055550000".into(), body: "Sale".into(), category, ..Request::default() };
        self.messages.submit(self.acme, &request, None).await.map(|s| s.message().clone())
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let s = super::setup("sqlite").await; super::$name(&s).await; s.finish().await; }
        )* }
        mod on_postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let s = super::setup("postgres").await; super::$name(&s).await; s.finish().await; }
        )* }
    };
}

on_both!(
    a_campaign_keeps_each_recipients_hours,
    marketing_waits_for_the_recipients_hours,
    an_opt_out_cancels_what_was_held,
    history_past_its_retention_is_purged
);

async fn marketing_waits_for_the_recipients_hours(s: &Setup) {
    let ny = chrono_tz::America::New_York;
    // Florida at 20:30: held until 08:00 the next morning, its journey saying why; its validity counts from then.
    let held = s.send("+13055550100", Category::Marketing).await.unwrap();
    let eight = Timestamp(ny.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).single().unwrap().timestamp_millis());
    assert_eq!((held.status, held.send_at), (Status::Scheduled, Some(eight)));
    assert_eq!(held.expires_at, Some(eight.plus_secs(48 * 3600)));
    let (_, journey) = s.messages.journey(s.acme, held.id).await.unwrap();
    assert_eq!(
        journey[0].detail,
        "accepted; held for the recipient's allowed hours (US-FL in America/New_York) until 2026-12-02T13:00:00Z"
    );
    // New York allows until 21:00: it goes now. A transactional text to Florida goes now too.
    assert_ne!(s.send("+12125550100", Category::Marketing).await.unwrap().status, Status::Scheduled);
    assert_ne!(s.send("+13055550101", Category::Transactional).await.unwrap().status, Status::Scheduled);
    // Unless the account holds transactional texts too.
    let settings = Compliance { quiet_hours_transactional: true, ..Compliance::default() };
    s.contacts.set_compliance(s.acme, &settings).await.unwrap();
    assert_eq!(s.send("+13055550102", Category::Transactional).await.unwrap().status, Status::Scheduled);
    // A contact's own zone wins over the number's: a Florida number whose contact lives in Los Angeles (17:30).
    let spec = smsgate_services::ContactSpec {
        phone: "+13055550103".into(),
        time_zone: Some("America/Los_Angeles".into()),
        ..Default::default()
    };
    s.contacts.create(s.acme, spec, false).await.unwrap();
    assert_ne!(s.send("+13055550103", Category::Marketing).await.unwrap().status, Status::Scheduled);
    // Texas on Sunday 6 December at 10:00: noon.
    let chicago = chrono_tz::America::Chicago;
    s.clock.set(Timestamp(chicago.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).single().unwrap().timestamp_millis()));
    let sunday = s.send("+12145550100", Category::Marketing).await.unwrap();
    let noon = Timestamp(chicago.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).single().unwrap().timestamp_millis());
    assert_eq!(sunday.send_at, Some(noon));
    // The account's own hours that never meet the law's: refused.
    let night: smsgate_core::quiet::Hours =
        serde_json::from_value(json!([{"days": "Mon-Sun", "from": "22:00", "to": "23:00"}])).unwrap();
    let settings = Compliance { quiet_hours: Some(night), ..Compliance::default() };
    s.contacts.set_compliance(s.acme, &settings).await.unwrap();
    let refused = s.send("+12145550100", Category::Marketing).await.unwrap_err();
    assert_eq!(refused.code(), "no_allowed_hours");
}

async fn an_opt_out_cancels_what_was_held(s: &Setup) {
    let held = s.send("+13055550100", Category::Marketing).await.unwrap();
    assert_eq!(held.status, Status::Scheduled);
    // smsgate's own automatic reply (to a HELP that came with the STOP), waiting too: it stays.
    let mut reply = held.clone();
    (reply.id, reply.category, reply.send_at) =
        (smsgate_core::MessageId::generate(), Category::Reply, Some(s.clock.now().plus_secs(600)));
    s.store
        .insert_messages(&[smsgate_store::NewMessage::new(reply.clone(), "accepted; automatic reply")])
        .await
        .unwrap();
    assert_eq!(
        s.send("+13055550100", Category::Reply).await.unwrap_err().code(),
        "invalid_category",
        "no request asks for it"
    );
    let receipt = s.send("+13055550100", Category::Transactional).await.unwrap();
    assert!(s.contacts.opt_out(s.acme, "+13055550100", Source::Api, json!({})).await.unwrap());
    assert_eq!(s.messages.get(s.acme, held.id).await.unwrap().status, Status::Canceled);
    let (_, journey) = s.messages.journey(s.acme, held.id).await.unwrap();
    assert_eq!(journey.last().unwrap().detail, "recipient opted out");
    assert_eq!(s.messages.get(s.acme, reply.id).await.unwrap().status, Status::Scheduled, "the reply stays");
    assert_ne!(s.messages.get(s.acme, receipt.id).await.unwrap().status, Status::Canceled, "it had gone already");
    for category in [Category::Marketing, Category::Transactional] {
        assert_eq!(s.send("+13055550100", category).await.unwrap_err().code(), "recipient_opted_out");
    }
    // Transactional texts pass when the account lets them; marketing never.
    let settings = Compliance { transactional_after_opt_out: true, ..Compliance::default() };
    s.contacts.set_compliance(s.acme, &settings).await.unwrap();
    s.send("+13055550100", Category::Transactional).await.unwrap();
    assert_eq!(s.send("+13055550100", Category::Marketing).await.unwrap_err().code(), "recipient_opted_out");
    // Another node's copy learns of it from the ledger.
    let other = Engine::new(
        s.store.clone(),
        Arc::new(Registry::new(Kit::new(Arc::new(SimNetwork::new(Vec::new(), tokio::sync::mpsc::channel(1).0))))),
        Config::default(),
    );
    assert!(other.consent().opted_out(s.store.as_ref(), s.acme, "+13055550100", "x", s.clock.now()).await.unwrap());
    assert!(s.contacts.opt_in(s.acme, "+13055550100", Source::Api, json!({})).await.unwrap());
    other.consent().refresh(s.store.as_ref(), s.clock.now()).await.unwrap();
    assert!(!other.consent().opted_out(s.store.as_ref(), s.acme, "+13055550100", "x", s.clock.now()).await.unwrap());
}

async fn history_past_its_retention_is_purged(s: &Setup) {
    // Message ids are made by the system's clock: the engine's starts from it here, as it does in `serve`.
    s.clock.set(Timestamp::now());
    let old = s.send("+12125550100", Category::Transactional).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !s.messages.get(s.acme, old.id).await.unwrap().status.is_final() {
        assert!(tokio::time::Instant::now() < deadline, "not final");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.clock.advance(Duration::from_secs(3 * 86_400));
    let fresh = s.send("+12125550101", Category::Transactional).await.unwrap();
    let settings = Compliance { retention_days: Some(2), ..Compliance::default() };
    s.contacts.set_compliance(s.acme, &settings).await.unwrap();
    assert_eq!(s.engine.purge_history(&CancellationToken::new()).await.unwrap(), 1);
    let purged = s.messages.get(s.acme, old.id).await.unwrap();
    assert_eq!((purged.body.as_str(), purged.to.as_str(), purged.segments), ("", "purged", 1));
    assert_eq!(s.messages.get(s.acme, fresh.id).await.unwrap().body, "Sale");
    assert_eq!(s.engine.purge_history(&CancellationToken::new()).await.unwrap(), 0, "once");
}

/// A marketing campaign started at 20:30 in Miami: its Californian (17:30) and New Yorker (21:00 is the limit) are
/// texted at once, its Floridian waits for 08:00 their time; the campaign is complete once every text is stored.
async fn a_campaign_keeps_each_recipients_hours(s: &Setup) {
    let links = smsgate_services::links::Links::new(s.store.clone(), "https://go.example");
    let campaigns = smsgate_services::Campaigns::new(s.contacts.clone(), links, s.store.clone(), "test");
    let list = s.contacts.create_list(s.acme, "Everyone").await.unwrap();
    let phones = ["+13055550110", "+12135550110", "+12125550110"];
    for (i, phone) in phones.iter().enumerate() {
        let spec = smsgate_services::ContactSpec {
            phone: phone.to_string(),
            name: Some(format!("P{i}")),
            ..Default::default()
        };
        s.contacts.create(s.acme, spec, false).await.unwrap();
    }
    let all: Vec<String> = phones.iter().map(|p| p.to_string()).collect();
    s.contacts.add_members(s.acme, &list.id, &[], &all).await.unwrap();
    let spec: smsgate_services::CampaignSpec = serde_json::from_value(json!({
        "name": "Evening sale", "audience": {"lists": ["Everyone"]}, "body": "Sale, {{ name }}",
        "from": "+13055550000", "category": "marketing"
    }))
    .unwrap();
    let c = campaigns.create(s.acme, spec).await.unwrap();
    campaigns.start(s.acme, &c.campaign.id).await.unwrap();
    let stop = CancellationToken::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while campaigns.get(s.acme, &c.campaign.id).await.unwrap().campaign.state != "completed" {
        campaigns.tick(&stop).await.unwrap();
        assert!(std::time::Instant::now() < deadline, "the campaign did not complete");
    }
    let view = campaigns.get(s.acme, &c.campaign.id).await.unwrap();
    assert_eq!((view.stats.audience, view.stats.queued), (3, 3), "{:?}", view.stats);
    let eight = Timestamp(
        chrono_tz::America::New_York.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).single().unwrap().timestamp_millis(),
    );
    for phone in phones {
        let filter = smsgate_store::ListFilter { to: Some(phone.to_string()), ..Default::default() };
        let sent = s.messages.list(s.acme, &filter, None, 10).await.unwrap();
        assert_eq!(sent.len(), 1, "{phone}: one text");
        let m = &sent[0];
        assert!(m.body.starts_with("Sale, P"), "{}", m.body);
        if phone == "+13055550110" {
            assert_eq!((m.status, m.send_at), (Status::Scheduled, Some(eight)), "Miami waits for its morning");
        } else {
            assert_ne!(m.status, Status::Scheduled, "{phone} goes now");
        }
    }
    assert!(view.stats.waiting >= 1, "{:?}", view.stats);
}
