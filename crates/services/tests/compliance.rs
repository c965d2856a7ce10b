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
use smsgate_core::clock::Clock;
use smsgate_core::consent::{Category, Compliance, Source};
use smsgate_core::{Status, Timestamp};
use smsgate_engine::{Config, Engine, Registry};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Setup, on_both};

/// 20:30 on Tuesday 1 December 2026 in Miami.
fn miami_evening() -> Timestamp {
    let t = chrono_tz::America::New_York.with_ymd_and_hms(2026, 12, 1, 20, 30, 0).single().unwrap();
    Timestamp(t.timestamp_millis())
}

async fn setup(backend: &'static str) -> Setup {
    common::setup_at(backend, miami_evening()).await
}

on_both!(
    a_campaign_keeps_each_recipients_hours,
    marketing_waits_for_the_recipients_hours,
    an_opt_out_cancels_what_was_held,
    history_past_its_retention_is_purged,
    history_past_the_servers_span_is_deleted
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

/// A text sent and delivered, then three days later another one: the old and the fresh one. Message ids are made by
/// the system's clock: the engine's starts from it here, as it does in `serve`.
async fn three_days_apart(s: &Setup) -> (smsgate_core::Message, smsgate_core::Message) {
    s.clock.set(Timestamp::now());
    let old = s.send("+12125550100", Category::Transactional).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !s.messages.get(s.acme, old.id).await.unwrap().status.is_final() {
        assert!(tokio::time::Instant::now() < deadline, "not final");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.clock.advance(Duration::from_secs(3 * 86_400));
    (old, s.send("+12125550101", Category::Transactional).await.unwrap())
}

async fn history_past_its_retention_is_purged(s: &Setup) {
    let (old, fresh) = three_days_apart(s).await;
    let settings = Compliance { retention_days: Some(2), ..Compliance::default() };
    s.contacts.set_compliance(s.acme, &settings).await.unwrap();
    assert_eq!(s.engine.purge_history(&CancellationToken::new()).await.unwrap(), 1);
    let purged = s.messages.get(s.acme, old.id).await.unwrap();
    assert_eq!((purged.body.as_str(), purged.to.as_str(), purged.segments), ("", "purged", 1));
    assert_eq!(s.messages.get(s.acme, fresh.id).await.unwrap().body, "Sale");
    assert_eq!(s.engine.purge_history(&CancellationToken::new()).await.unwrap(), 0, "once");
}

async fn history_past_the_servers_span_is_deleted(s: &Setup) {
    let (old, fresh) = three_days_apart(s).await;
    // A node that keeps two days of history.
    let config = Config {
        clock: Arc::new(s.clock.clone()),
        history: Some(Duration::from_secs(2 * 86_400)),
        ..Config::default()
    };
    let kit = Kit::new(Arc::new(SimNetwork::new(Vec::new(), tokio::sync::mpsc::channel(1).0)));
    let keeper = Engine::new(s.store.clone(), Arc::new(Registry::new(kit)), config);
    let deleted = keeper.delete_history(&CancellationToken::new()).await.unwrap();
    assert_eq!(deleted.messages, 1);
    assert_eq!(s.messages.get(s.acme, old.id).await.unwrap_err().code(), "not_found");
    assert_eq!(s.messages.get(s.acme, fresh.id).await.unwrap().body, "Sale");
    assert_eq!(keeper.delete_history(&CancellationToken::new()).await.unwrap().messages, 0, "once");
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
