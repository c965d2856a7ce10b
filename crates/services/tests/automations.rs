#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! Automations through the services, on SQLite and on PostgreSQL, with a clock the tests set: appointment
//! reminders at each patient's local time, moved by a changed date and dropped by a cancel event; a JOIN keyword
//! flow that branches on the reply (yes, something else, no reply at all); a schedule that texts a list once each
//! time its cron fires; a reminder on a contact's own date field, set, moved and dropped as the contact changes.

use std::time::Duration;

use chrono::TimeZone;
use serde_json::{Value, json};
use smsgate_core::clock::Clock;
use smsgate_core::{Direction, Message, Timestamp};
use smsgate_services::automations::EventSpec;
use smsgate_services::{AutomationSpec, Automations, ContactSpec};
use smsgate_store::ListFilter;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Setup, on_both};

/// 20:30 on Tuesday 1 December 2026 in New York.
fn evening() -> Timestamp {
    new_york(2026, 12, 1, 20, 30)
}

fn new_york(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    let t = chrono_tz::America::New_York.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap();
    Timestamp(t.timestamp_millis())
}

async fn setup(backend: &'static str) -> Setup {
    common::setup_at(backend, evening()).await
}

on_both!(
    appointment_reminders_keep_local_time_and_follow_events,
    a_join_keyword_branches_on_the_reply,
    a_schedule_texts_its_audience_once_a_firing,
    a_contact_date_field_sets_moves_and_drops_its_reminder
);

fn automations(s: &Setup) -> Automations {
    let links = smsgate_services::links::Links::new(s.store.clone(), "https://go.example");
    Automations::new(s.contacts.clone(), links, s.store.clone(), "test")
}

/// The texts the account sent a number, oldest first.
async fn texts_to(s: &Setup, phone: &str) -> Vec<Message> {
    let filter = ListFilter { to: Some(phone.to_string()), direction: Some(Direction::Outbound), ..Default::default() };
    let mut sent = s.messages.list(s.acme, &filter, None, 50).await.unwrap();
    sent.reverse();
    sent
}

/// Ticks the worker until `done` says so (within ten seconds).
macro_rules! tick_until {
    ($a:expr, $done:expr, $what:expr) => {{
        let stop = CancellationToken::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            $a.tick(&stop).await.unwrap();
            if $done {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

async fn event(a: &Automations, s: &Setup, name: &str, phone: &str, data: Value, key: Option<&str>) -> Value {
    let contact = ContactSpec { phone: phone.into(), ..ContactSpec::default() };
    let spec = EventSpec {
        name: name.into(),
        contact: Some(contact),
        data: Some(data),
        idempotency_key: key.map(String::from),
        ..EventSpec::default()
    };
    let out = a.event(s.acme, spec).await.unwrap();
    json!({"duplicate": out.duplicate, "outcome": out.outcome})
}

async fn appointment_reminders_keep_local_time_and_follow_events(s: &Setup) {
    let a = automations(s);
    for (phone, name) in [("+12125550101", "Ana"), ("+12135550102", "Bo"), ("+12125550103", "Cy")] {
        let spec = ContactSpec { phone: phone.into(), name: Some(name.into()), ..ContactSpec::default() };
        s.contacts.create(s.acme, spec, false).await.unwrap();
    }
    let spec: AutomationSpec = serde_json::from_value(json!({
        "name": "Reminder",
        "trigger": {"type": "date_field", "field": "data.appointment_at", "offset": "-24h",
            "events": ["appointment.booked", "appointment.moved"], "cancel_events": ["appointment.canceled"],
            "key": "data.appointment_id"},
        "steps": [{"type": "send", "from": "+12125550000",
            "body": "Hi {{ name }}, see you {{ data.appointment_at | date(\"%a %d %b %H:%M\") }}"}]
    }))
    .unwrap();
    let reminder = a.create(s.acme, spec).await.unwrap().automation;

    // A local time is the patient's own: 15:00 in New York and 15:00 in Los Angeles are three hours apart.
    let ana = event(
        &a,
        s,
        "appointment.booked",
        "+12125550101",
        json!({"appointment_id": "A1",
        "appointment_at": "2026-12-03 15:00"}),
        None,
    )
    .await;
    let bo = event(
        &a,
        s,
        "appointment.booked",
        "+12135550102",
        json!({"appointment_id": "B1",
        "appointment_at": "2026-12-03 15:00"}),
        None,
    )
    .await;
    let cy = json!({"appointment_id": "C1", "appointment_at": "2026-12-03T09:00:00-05:00"});
    let first = event(&a, s, "appointment.booked", "+12125550103", cy.clone(), Some("cy-booked")).await;
    let again = event(&a, s, "appointment.booked", "+12125550103", cy, Some("cy-booked")).await;
    assert_eq!((first["duplicate"].clone(), again["duplicate"].clone()), (json!(false), json!(true)));
    assert_eq!(first["outcome"], again["outcome"], "a repeated key answers what the first did");
    let run_of = |v: &Value| v["outcome"]["started"][0].as_str().unwrap().to_string();
    let (ana_run, bo_run, cy_run) = (run_of(&ana), run_of(&bo), run_of(&first));
    let due = |id: String| {
        let store = s.store.clone();
        async move { store.automation_run(&id).await.unwrap().unwrap().due_at }
    };
    assert_eq!(due(ana_run.clone()).await, Some(new_york(2026, 12, 2, 15, 0)));
    assert_eq!(due(bo_run.clone()).await, Some(new_york(2026, 12, 2, 18, 0)), "15:00 in Los Angeles");
    assert_eq!(a.get(s.acme, &reminder.id).await.unwrap().stats.active, 3);

    // Cy cancels; Ana's appointment moves to Friday 10:00.
    let canceled = event(&a, s, "appointment.canceled", "+12125550103", json!({"appointment_id": "C1"}), None).await;
    assert_eq!(canceled["outcome"]["canceled"], json!([cy_run]));
    let moved = event(
        &a,
        s,
        "appointment.moved",
        "+12125550101",
        json!({"appointment_id": "A1",
        "appointment_at": "2026-12-04T10:00"}),
        None,
    )
    .await;
    assert_eq!(moved["outcome"]["canceled"], json!([ana_run]));
    let ana_moved = moved["outcome"]["moved"][0].as_str().unwrap().to_string();
    assert_eq!(due(ana_moved.clone()).await, Some(new_york(2026, 12, 3, 10, 0)));

    // Wednesday 15:00 in New York: Ana's old time, Cy's canceled one passed: nothing; Bo's is at 18:00 here.
    s.clock.set(new_york(2026, 12, 2, 15, 1));
    tick_until!(a, true, "");
    for phone in ["+12125550101", "+12135550102", "+12125550103"] {
        assert!(texts_to(s, phone).await.is_empty(), "{phone}: nothing yet");
    }
    s.clock.set(new_york(2026, 12, 2, 18, 1));
    tick_until!(a, texts_to(s, "+12135550102").await.len() == 1, "Bo's reminder at 15:00 his time");
    assert_eq!(texts_to(s, "+12135550102").await[0].body, "Hi Bo, see you Thu 03 Dec 15:00");
    assert!(texts_to(s, "+12125550101").await.is_empty());
    s.clock.set(new_york(2026, 12, 3, 10, 1));
    tick_until!(a, texts_to(s, "+12125550101").await.len() == 1, "Ana's reminder at the moved time");
    assert_eq!(texts_to(s, "+12125550101").await[0].body, "Hi Ana, see you Fri 04 Dec 10:00");
    s.clock.advance(Duration::from_secs(3600));
    tick_until!(a, true, "");
    assert_eq!(texts_to(s, "+12125550101").await.len(), 1, "once");
    assert!(texts_to(s, "+12125550103").await.is_empty(), "Cy canceled");

    // Each run's steps are recorded.
    let ana_contact = s.store.contact_by_phone(s.acme, "+12125550101").await.unwrap().unwrap();
    let runs = a.runs(s.acme, &reminder.id, Some(&ana_contact.id), None, 10).await.unwrap();
    let states: Vec<(&str, &str)> = runs.iter().map(|r| (r.id.as_str(), r.state.as_str())).collect();
    assert_eq!(states, vec![(ana_run.as_str(), "canceled"), (ana_moved.as_str(), "completed")]);
    let log: Value = serde_json::from_str(&runs[1].log).unwrap();
    assert_eq!((log[0]["type"].as_str(), log[0]["outcome"].as_str()), (Some("send"), Some("sent")), "{log}");
    let stats = a.get(s.acme, &reminder.id).await.unwrap().stats;
    assert_eq!((stats.runs, stats.completed, stats.canceled, stats.active), (4, 2, 2, 0), "{stats:?}");
    assert!(s.clock.now() > new_york(2026, 12, 3, 10, 0));
}

async fn a_join_keyword_branches_on_the_reply(s: &Setup) {
    let operator = s.admin.admin_account().await.unwrap();
    let number = smsgate_services::NumberSpec { number: "+12125550000".into(), account: s.acme, connector: None };
    s.admin.assign_number(&operator, number).await.unwrap();
    s.contacts.create_list(s.acme, "Members").await.unwrap();
    let a = automations(s);
    let spec: AutomationSpec = serde_json::from_value(json!({
        "name": "Join",
        "trigger": {"type": "keyword", "keyword": "join", "numbers": ["+12125550000"]},
        "steps": [
            {"type": "send", "body": "Reply YES to get our news"},
            {"type": "wait", "until": "reply", "timeout": "1h"},
            {"type": "branch",
             "cases": [{"match": ["YES", "Y"], "steps": [
                 {"type": "add_to_list", "list_id": "Members"},
                 {"type": "tag", "tag": "member"},
                 {"type": "send", "body": "Welcome, {{ data.message.body }} got you in"}]}],
             "default": [{"type": "send", "body": "No problem"}]}
        ]
    }))
    .unwrap();
    let join = a.create(s.acme, spec).await.unwrap().automation;
    let bodies =
        |phone: &'static str| async move { texts_to(s, phone).await.into_iter().map(|m| m.body).collect::<Vec<_>>() };

    // A sender no contact can have texts JOIN first: it starts nothing and holds nothing up.
    s.sim.reply("Promo", "+12125550000", "JOIN").await.unwrap();
    // Three people text JOIN (the first word, any case); "joined" is not the keyword.
    for (handset, text) in
        [("+14155550111", "Join"), ("+14155550112", "JOIN now"), ("+14155550113", "join"), ("+14155550114", "joined")]
    {
        s.sim.reply(handset, "+12125550000", text).await.unwrap();
    }
    tick_until!(
        a,
        bodies("+14155550111").await.len() == 1
            && bodies("+14155550112").await.len() == 1
            && bodies("+14155550113").await.len() == 1,
        "each JOIN answered"
    );
    assert_eq!(bodies("+14155550111").await, ["Reply YES to get our news"]);
    assert!(bodies("+14155550114").await.is_empty(), "joined is not JOIN");

    // A yes, a no, and (an hour later) no reply at all.
    s.sim.reply("+14155550111", "+12125550000", "yes!").await.unwrap();
    s.sim.reply("+14155550112", "+12125550000", "nope").await.unwrap();
    tick_until!(
        a,
        bodies("+14155550111").await.len() == 2 && bodies("+14155550112").await.len() == 2,
        format!("the replies answered: {:?} {:?}", bodies("+14155550111").await, bodies("+14155550112").await)
    );
    assert_eq!(bodies("+14155550111").await[1], "Welcome, Join got you in");
    assert_eq!(bodies("+14155550112").await[1], "No problem");
    let member = s.store.contact_by_phone(s.acme, "+14155550111").await.unwrap().unwrap();
    assert_eq!(member.tags, ["member"]);
    let info = s.contacts.get(s.acme, &member.id).await.unwrap();
    let members = s.contacts.list_by_id_or_name(s.acme, "Members").await.unwrap().unwrap();
    assert_eq!(info.lists, [members.id]);
    let other = s.store.contact_by_phone(s.acme, "+14155550112").await.unwrap().unwrap();
    assert!(other.tags.is_empty() && s.contacts.get(s.acme, &other.id).await.unwrap().lists.is_empty());

    assert_eq!(bodies("+14155550113").await.len(), 1, "still waiting");
    s.clock.advance(Duration::from_secs(2 * 3600));
    tick_until!(a, bodies("+14155550113").await.len() == 2, "no reply: the default");
    assert_eq!(bodies("+14155550113").await[1], "No problem");

    // A reply after the flow ended starts nothing; the runs are recorded step by step.
    s.sim.reply("+14155550111", "+12125550000", "yes").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tick_until!(a, true, "");
    assert_eq!(bodies("+14155550111").await.len(), 2);
    let runs = a.runs(s.acme, &join.id, Some(&member.id), None, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, "completed");
    let log: Value = serde_json::from_str(&runs[0].log).unwrap();
    let steps: Vec<(String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap_or("").into(), e["outcome"].as_str().unwrap_or("").into()))
        .collect();
    let expected = [
        ("send", "sent"),
        ("wait", "waiting_for_reply"),
        ("reply", ""),
        ("branch", "case 0"),
        ("add_to_list", "done"),
        ("tag", "done"),
        ("send", "sent"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(steps, expected);
    let stats = a.get(s.acme, &join.id).await.unwrap().stats;
    assert_eq!((stats.runs, stats.completed), (3, 3), "{stats:?}");
}

async fn a_schedule_texts_its_audience_once_a_firing(s: &Setup) {
    let a = automations(s);
    let list = s.contacts.create_list(s.acme, "Members").await.unwrap();
    let mut phones = vec!["+12125550301".to_string(), "+12125550302".to_string()];
    for (i, phone) in phones.iter().enumerate() {
        let spec = ContactSpec { phone: phone.clone(), name: Some(format!("M{i}")), ..ContactSpec::default() };
        s.contacts.create(s.acme, spec, false).await.unwrap();
    }
    s.contacts.add_members(s.acme, &list.id, &[], &phones).await.unwrap();
    let spec: AutomationSpec = serde_json::from_value(json!({
        "name": "Morning balance",
        "trigger": {"type": "schedule", "cron": "0 9 * * *", "time_zone": "America/New_York",
                    "audience": {"lists": ["Members"]}},
        "steps": [{"type": "send", "from": "+12125550000", "body": "Good morning {{ name }}"}]
    }))
    .unwrap();
    let view = a.create(s.acme, spec).await.unwrap();
    assert_eq!(view.automation.next_run_at, Some(new_york(2026, 12, 2, 9, 0)));
    tick_until!(a, true, "");
    assert!(texts_to(s, &phones[0]).await.is_empty(), "not before 09:00");

    s.clock.set(new_york(2026, 12, 2, 9, 0).plus_secs(30));
    tick_until!(
        a,
        texts_to(s, &phones[0]).await.len() == 1 && texts_to(s, &phones[1]).await.len() == 1,
        format!("09:00: {:?}", a.runs(s.acme, &view.automation.id, None, None, 10).await)
    );
    assert_eq!(texts_to(s, &phones[1]).await[0].body, "Good morning M1");
    tick_until!(a, true, "");
    assert_eq!(texts_to(s, &phones[0]).await.len(), 1, "once a firing");
    let next = a.get(s.acme, &view.automation.id).await.unwrap().automation.next_run_at;
    assert_eq!(next, Some(new_york(2026, 12, 3, 9, 0)));

    // The audience as it is at the next firing: a new member too.
    let late = "+12125550303".to_string();
    s.contacts.create(s.acme, ContactSpec { phone: late.clone(), ..ContactSpec::default() }, false).await.unwrap();
    s.contacts.add_members(s.acme, &list.id, &[], std::slice::from_ref(&late)).await.unwrap();
    phones.push(late);
    s.clock.set(new_york(2026, 12, 3, 9, 1));
    tick_until!(a, texts_to(s, &phones[2]).await.len() == 1, "the next morning");
    assert_eq!(texts_to(s, &phones[0]).await.len(), 2);
    assert_eq!(a.get(s.acme, &view.automation.id).await.unwrap().stats.completed, 5);
}

async fn a_contact_date_field_sets_moves_and_drops_its_reminder(s: &Setup) {
    let a = automations(s);
    let spec: AutomationSpec = serde_json::from_value(json!({
        "name": "Visit reminder",
        "trigger": {"type": "date_field", "field": "fields.visit_at", "offset": "-1h"},
        "steps": [{"type": "send", "from": "+12125550000",
                   "body": "See you at {{ fields.visit_at | date(\"%H:%M\") }}"}]
    }))
    .unwrap();
    let reminder = a.create(s.acme, spec).await.unwrap().automation;
    let phone = "+12125550401";
    let fields = |v: Value| serde_json::from_value::<serde_json::Map<String, Value>>(v).unwrap();
    let spec = ContactSpec {
        phone: phone.into(),
        fields: fields(json!({"visit_at": "2026-12-02 10:00"})),
        ..ContactSpec::default()
    };
    let contact = s.contacts.create(s.acme, spec.clone(), false).await.unwrap().1.contact;
    // Another contact with the same time has a reminder of its own.
    let other = "+12125550402";
    s.contacts.create(s.acme, ContactSpec { phone: other.into(), ..spec }, false).await.unwrap();
    let open = |a: &Automations| {
        let (a, id, contact) = (a.clone(), reminder.id.clone(), contact.id.clone());
        let acme = s.acme;
        async move {
            let runs = a.runs(acme, &id, Some(&contact), None, 10).await.unwrap();
            runs.into_iter().filter(|r| r.state == "active").map(|r| r.due_at).collect::<Vec<_>>()
        }
    };
    // A change is read once it is a few seconds old.
    s.clock.advance(Duration::from_secs(10));
    tick_until!(a, open(&a).await.len() == 1, "the reminder set");
    assert_eq!(open(&a).await, [Some(new_york(2026, 12, 2, 9, 0))]);
    // Moved to noon: the reminder at 11:00.
    let patch = smsgate_services::ContactPatch {
        fields: Some(fields(json!({"visit_at": "2026-12-02 12:00"}))),
        ..Default::default()
    };
    s.contacts.update(s.acme, &contact.id, patch).await.unwrap();
    s.clock.advance(Duration::from_secs(10));
    tick_until!(a, open(&a).await == [Some(new_york(2026, 12, 2, 11, 0))], "the reminder moved");
    // The field removed: nothing waits; set again: it waits again.
    let patch =
        smsgate_services::ContactPatch { fields: Some(fields(json!({"visit_at": null}))), ..Default::default() };
    s.contacts.update(s.acme, &contact.id, patch).await.unwrap();
    s.clock.advance(Duration::from_secs(10));
    tick_until!(a, open(&a).await.is_empty(), "the reminder dropped");
    let patch = smsgate_services::ContactPatch {
        fields: Some(fields(json!({"visit_at": "2026-12-02 12:00"}))),
        ..Default::default()
    };
    s.contacts.update(s.acme, &contact.id, patch).await.unwrap();
    s.clock.advance(Duration::from_secs(10));
    tick_until!(a, open(&a).await.len() == 1, "set again");
    s.clock.set(new_york(2026, 12, 2, 11, 0).plus_secs(5));
    tick_until!(a, texts_to(s, phone).await.len() == 1, "the reminder sent");
    assert_eq!(texts_to(s, phone).await[0].body, "See you at 12:00");
    tick_until!(a, texts_to(s, other).await.len() == 1, "the other contact's, at its own 09:00");
    assert_eq!(texts_to(s, other).await[0].body, "See you at 10:00");
}
