#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions; a failure is a test failure.
//! The store conformance suite: every test runs against SQLite (a fresh file) and against the real PostgreSQL
//! (a fresh schema, dropped afterwards). `SMSGATE_TEST_POSTGRES` overrides the server URL (default
//! `postgres://postgres@127.0.0.1:5432/test`).

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use common::message;

use smsgate_core::routing::{Route, RouteMatch, RouteTarget};
use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};
use smsgate_store::{
    CallbackAttempt, CallbackNext, CallbackResult, Changes, Claim, ConnectorRecord, Inserted, ListFilter, NewMessage,
    PgStore, ReceiptUpdate, SqliteStore, Store, Transition, WaitingAt,
};

const NOW: Timestamp = Timestamp(1_780_000_000_000);

enum Cleanup {
    File(PathBuf),
    Schema(String),
}

struct Db {
    store: Arc<dyn Store>,
    cleanup: Cleanup,
}

fn postgres_url() -> String {
    std::env::var("SMSGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn sqlite() -> Db {
    let path = std::env::temp_dir().join(format!("smsgate-store-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteStore::open(&format!("sqlite://{}", path.display())).await.expect("open sqlite");
    Db { store: Arc::new(store), cleanup: Cleanup::File(path) }
}

/// Runs one statement on the PostgreSQL server outside any test schema.
async fn on_server(sql: String) {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.expect("PostgreSQL at SMSGATE_TEST_POSTGRES is up");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("statement");
    pool.close().await;
}

async fn postgres() -> Db {
    let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
    on_server(format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    let store = PgStore::open(&url, 4).await.expect("open postgres");
    Db { store: Arc::new(store), cleanup: Cleanup::Schema(schema) }
}

impl Db {
    async fn drop(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Schema(schema) => on_server(format!("DROP SCHEMA {schema} CASCADE")).await,
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::sqlite().await;
                    super::$name(&db.store).await;
                    db.drop().await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::postgres().await;
                    super::$name(&db.store).await;
                    db.drop().await;
                }
            )*
        }
    };
}

conformance!(
    accounts_and_keys,
    messages_and_their_journey,
    tenants_see_only_their_own,
    idempotency_keys,
    listing_pages_and_filters,
    claims_leases_and_takeover,
    a_claim_takes_at_most_its_limit,
    scheduled_messages_wait,
    transitions_follow_the_state_machine,
    retries_wait_for_their_time,
    expiry,
    carrier_ids_and_counts,
    concurrent_claimers_never_share_a_message,
    many_transitions_in_one_commit,
    receipts_find_messages_by_carrier_id,
    large_batches_in_one_commit,
    a_failed_write_leaves_the_others,
    inserted_already_claimed,
    connectors_routes_and_one_time_steps,
    callbacks_in_order,
    parts_decide_their_message,
    a_message_url_and_webhooks_set_later,
    smpp_credentials,
    smpp_deliveries,
    smpp_feed,
    replacing_a_waiting_message,
    messages_wait_for_their_route,
    senders_have_one_owner,
    callbacks_are_shared_out_between_accounts,
    secrets_are_sealed_at_rest,
    contacts_tags_lists_and_segments,
    consent_is_a_ledger_and_a_state,
    imports_commit_with_their_progress,
    erasure_and_retention_keep_counts,
    templates_per_account,
    campaign_runs_and_recipients,
    automation_runs_once_per_trigger,
    conversations_thread_both_ways,
    rollups_count_what_the_messages_did,
    history_is_deleted_whole,
    messages_to_a_number_are_chained,
    users_and_their_sessions,
);

fn new(m: Message) -> NewMessage {
    NewMessage::new(m, "accepted")
}

async fn account(store: &Arc<dyn Store>) -> AccountId {
    store.create_account("acme", false, NOW).await.expect("account").id
}

async fn insert(store: &Arc<dyn Store>, m: Message) -> MessageId {
    let id = m.id;
    assert_eq!(store.insert_messages(&[new(m)]).await.expect("insert"), vec![Inserted::New]);
    id
}

async fn statuses(store: &Arc<dyn Store>, id: MessageId) -> Vec<Status> {
    store.events(id).await.expect("events").into_iter().map(|e| e.status).collect()
}

async fn accounts_and_keys(store: &Arc<dyn Store>) {
    assert_eq!(store.admin_account().await.unwrap(), None);
    let admin = store.create_account("admin", true, NOW).await.unwrap();
    let acme = store.create_account("acme", false, NOW).await.unwrap();
    assert_eq!(store.admin_account().await.unwrap(), Some(admin.clone()));
    assert_eq!(store.account(acme.id).await.unwrap(), Some(acme.clone()));
    assert_eq!(store.account(AccountId::generate()).await.unwrap(), None);
    assert_eq!(store.key_count(acme.id).await.unwrap(), 0);
    let key = store.create_api_key(acme.id, "hash-1", "sk_abcd", NOW).await.unwrap();
    assert_eq!(store.key_count(acme.id).await.unwrap(), 1);
    assert_eq!(key.account_id, acme.id);
    assert_eq!(store.account_by_key_hash("hash-1").await.unwrap(), Some(acme));
    assert_eq!(store.account_by_key_hash("hash-2").await.unwrap(), None);
    // A key hash is unique.
    assert!(store.create_api_key(admin.id, "hash-1", "sk_x", NOW).await.is_err());
}

async fn messages_and_their_journey(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let mut m = message(acme, "+447700900123", Status::Queued, NOW);
    m.body = "Grüße, 😀 ' \" ; DROP TABLE messages; --".into();
    m.price_micros = Some(12_345);
    let id = insert(store, m.clone()).await;
    assert_eq!(store.message(acme, id).await.unwrap(), Some(m));
    let events = store.events(id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].status, events[0].at, events[0].detail.as_str()), (Status::Queued, NOW, "accepted"));
    assert_eq!(store.message(acme, MessageId::generate()).await.unwrap(), None);
}

async fn tenants_see_only_their_own(store: &Arc<dyn Store>) {
    let a = account(store).await;
    let b = account(store).await;
    let id = insert(store, message(a, "+447700900123", Status::Queued, NOW)).await;
    assert_eq!(store.message(b, id).await.unwrap(), None);
    assert!(store.list_messages(b, &ListFilter::default(), None, 10).await.unwrap().is_empty());
    assert_eq!(store.list_messages(a, &ListFilter::default(), None, 10).await.unwrap().len(), 1);
}

async fn idempotency_keys(store: &Arc<dyn Store>) {
    let a = account(store).await;
    let b = account(store).await;
    let with_key = |acc, hash: &str| NewMessage {
        idempotency: Some(("key-1".into(), hash.into())),
        ..NewMessage::new(message(acc, "+447700900123", Status::Queued, NOW), "accepted")
    };
    let first = with_key(a, "h1");
    let first_id = first.message.id;
    assert_eq!(store.insert_messages(&[first]).await.unwrap(), vec![Inserted::New]);
    let got = store.insert_messages(&[with_key(a, "h1"), with_key(a, "h2"), with_key(b, "h1")]).await.unwrap();
    assert_eq!(
        got,
        vec![
            Inserted::Duplicate { id: first_id, same_request: true },
            Inserted::Duplicate { id: first_id, same_request: false },
            Inserted::New,
        ]
    );
    assert_eq!(store.list_messages(a, &ListFilter::default(), None, 10).await.unwrap().len(), 1);
}

async fn listing_pages_and_filters(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let mut all = Vec::new();
    for i in 0..25 {
        let to = if i % 5 == 0 { "+447700900001" } else { "+447700900002" };
        let m = message(acme, to, if i % 2 == 0 { Status::Queued } else { Status::Scheduled }, NOW.plus_secs(i));
        all.push(new(m));
    }
    let ids: Vec<MessageId> = all.iter().map(|n| n.message.id).collect();
    assert!(store.insert_messages(&all).await.unwrap().iter().all(|r| *r == Inserted::New));
    // Newest first, in pages of 10, by cursor.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_messages(acme, &ListFilter::default(), cursor, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        cursor = page.last().map(|m| m.id);
        seen.extend(page.into_iter().map(|m| m.id));
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let only = |f: ListFilter| async move { store.list_messages(acme, &f, None, 100).await.unwrap() };
    assert_eq!(only(ListFilter { to: Some("+447700900001".into()), ..Default::default() }).await.len(), 5);
    assert_eq!(only(ListFilter { status: Some(Status::Scheduled), ..Default::default() }).await.len(), 12);
    assert_eq!(only(ListFilter { since: Some(NOW.plus_secs(20)), ..Default::default() }).await.len(), 5);
    assert_eq!(only(ListFilter { until: Some(NOW.plus_secs(20)), ..Default::default() }).await.len(), 20);
    assert_eq!(only(ListFilter { direction: Some(Direction::Inbound), ..Default::default() }).await.len(), 0);
    let both = ListFilter {
        status: Some(Status::Queued),
        to: Some("+447700900001".into()),
        since: Some(NOW),
        until: Some(NOW.plus_secs(100)),
        ..Default::default()
    };
    assert_eq!(only(both).await.len(), 3);
}

async fn claims_leases_and_takeover(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await);
    }
    let claimed = store.claim_due("node-a", NOW, 30_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert!(claimed.iter().all(|m| m.status == Status::Sending && m.attempts == 1));
    assert_eq!(statuses(store, ids[0]).await, vec![Status::Queued, Status::Sending]);
    // Held: nobody else gets them.
    assert!(store.claim_due("node-b", NOW.plus_millis(29_999), 30_000, 10).await.unwrap().is_empty());
    // The lease runs out: node-b takes them over; the attempt count does not grow.
    let taken = store.claim_due("node-b", NOW.plus_millis(30_001), 30_000, 10).await.unwrap();
    assert_eq!(taken.len(), 3);
    assert!(taken.iter().all(|m| m.attempts == 1));
    let events = store.events(ids[0]).await.unwrap();
    assert!(events.last().unwrap().detail.contains("lease ran out"), "{events:?}");
    // node-a's late result is fenced off; node-b's counts.
    let fenced = Changes { lease_owner: Some("node-a".into()), carrier_id: Some("c-1".into()), ..Default::default() };
    assert!(!store.transition(ids[0], Status::Sent, NOW.plus_secs(31), "submitted", &fenced).await.unwrap());
    let ok = Changes { lease_owner: Some("node-b".into()), carrier_id: Some("c-2".into()), ..Default::default() };
    assert!(store.transition(ids[0], Status::Sent, NOW.plus_secs(31), "submitted", &ok).await.unwrap());
    let m = store.message(acme, ids[0]).await.unwrap().unwrap();
    assert_eq!((m.status, m.carrier_id.as_deref()), (Status::Sent, Some("c-2")));
    // Sent messages are never claimed again, even after the old lease time.
    let again = store.claim_due("node-c", NOW.plus_secs(120), 30_000, 10).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(!again.iter().any(|m| m.id == ids[0]));
}

async fn a_claim_takes_at_most_its_limit(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await);
    }
    let first: Vec<MessageId> = store.claim_due("a", NOW, 1000, 7).await.unwrap().iter().map(|m| m.id).collect();
    assert_eq!(first.len(), 7);
    // Taken-over leases come first and count against the limit with what is due.
    let second = store.claim_due("b", NOW.plus_secs(2), 1000, 10).await.unwrap();
    assert_eq!(second.len(), 10);
    assert!(first.iter().all(|id| second.iter().any(|m| m.id == *id)), "the lapsed leases are taken over first");
    let rest = store.claim_due("c", NOW.plus_secs(2), 1000, 100).await.unwrap();
    assert_eq!(rest.len(), 20);
    let mut all: Vec<MessageId> = second.iter().chain(&rest).map(|m| m.id).collect();
    all.sort();
    assert_eq!(all, ids);
    assert!(store.claim_due("d", NOW.plus_secs(2), 1000, 100).await.unwrap().is_empty());
}

async fn scheduled_messages_wait(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let mut m = message(acme, "+447700900123", Status::Scheduled, NOW);
    m.send_at = Some(NOW.plus_secs(60));
    let id = insert(store, m).await;
    assert!(store.claim_due("n", NOW.plus_secs(59), 1000, 10).await.unwrap().is_empty());
    let claimed = store.claim_due("n", NOW.plus_secs(60), 1000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(statuses(store, id).await, vec![Status::Scheduled, Status::Queued, Status::Sending]);
}

async fn transitions_follow_the_state_machine(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let id = insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await;
    let none = Changes::default();
    // Not yet sending: a receipt cannot deliver it.
    assert!(!store.transition(id, Status::Delivered, NOW, "early receipt", &none).await.unwrap());
    store.claim_due("n", NOW, 1000, 10).await.unwrap();
    let sent = Changes { connector: Some("sim".into()), carrier_id: Some("C1".into()), ..Default::default() };
    assert!(store.transition(id, Status::Sent, NOW.plus_secs(1), "carrier id C1", &sent).await.unwrap());
    assert!(store.transition(id, Status::Delivered, NOW.plus_secs(2), "stat:DELIVRD", &none).await.unwrap());
    // Final: late and duplicate receipts change nothing.
    assert!(!store.transition(id, Status::Delivered, NOW.plus_secs(3), "duplicate", &none).await.unwrap());
    let late = Changes { error_code: Some("late".into()), ..Default::default() };
    assert!(!store.transition(id, Status::Undelivered, NOW.plus_secs(4), "stat:UNDELIV", &late).await.unwrap());
    let m = store.message(acme, id).await.unwrap().unwrap();
    assert_eq!((m.status, m.error_code, m.connector.as_deref()), (Status::Delivered, None, Some("sim")));
    assert_eq!(statuses(store, id).await, vec![Status::Queued, Status::Sending, Status::Sent, Status::Delivered]);
    // Cancel works only before sending.
    let id = insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await;
    assert!(store.transition(id, Status::Canceled, NOW, "canceled by the sender", &none).await.unwrap());
    assert!(store.claim_due("n", NOW.plus_secs(10), 1000, 10).await.unwrap().is_empty());
}

async fn retries_wait_for_their_time(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let id = insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await;
    store.claim_due("n", NOW, 1000, 10).await.unwrap();
    let retry = Changes {
        retry_at: Some(NOW.plus_secs(30)),
        error_code: Some("throttled".into()),
        lease_owner: Some("n".into()),
        ..Default::default()
    };
    assert!(store.transition(id, Status::Queued, NOW, "carrier throttled; retry in 30 s", &retry).await.unwrap());
    assert!(store.claim_due("n", NOW.plus_secs(29), 1000, 10).await.unwrap().is_empty());
    let again = store.claim_due("n", NOW.plus_secs(30), 1000, 10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 2));
}

async fn expiry(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let queued = insert(store, message(acme, "+447700900001", Status::Queued, NOW)).await;
    let later = insert(store, message(acme, "+447700900002", Status::Queued, NOW.plus_secs(100))).await;
    let sent = insert(store, message(acme, "+447700900003", Status::Queued, NOW)).await;
    let none = Changes::default();
    // Claim everything, send one; put the other two back.
    for m in store.claim_due("n", NOW.plus_secs(100), 1_000_000, 10).await.unwrap() {
        let to = if m.id == sent { Status::Sent } else { Status::Queued };
        assert!(store.transition(m.id, to, NOW.plus_secs(100), "x", &none).await.unwrap());
    }
    let expired = store.expire_due(NOW.plus_secs(3600), 100).await.unwrap();
    let mut want = vec![queued, sent];
    want.sort();
    assert_eq!(expired, want);
    assert_eq!(store.message(acme, sent).await.unwrap().unwrap().status, Status::Expired);
    assert_eq!(store.message(acme, later).await.unwrap().unwrap().status, Status::Queued);
    assert!(store.events(sent).await.unwrap().last().unwrap().detail.contains("while sent"));
    assert!(store.expire_due(NOW.plus_secs(3600), 100).await.unwrap().is_empty());
}

async fn carrier_ids_and_counts(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let id = insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await;
    insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await;
    store.claim_due("n", NOW, 1000, 1).await.unwrap();
    let changes = Changes { connector: Some("sim".into()), carrier_id: Some("AbC123".into()), ..Default::default() };
    assert!(store.transition(id, Status::Sent, NOW, "sent", &changes).await.unwrap());
    assert_eq!(store.message_by_carrier_id("sim", "AbC123").await.unwrap(), Some(id));
    assert_eq!(store.message_by_carrier_id("other", "AbC123").await.unwrap(), None);
    assert_eq!(store.message_status(id).await.unwrap(), Some(Status::Sent));
    assert_eq!(store.message_status(MessageId::generate()).await.unwrap(), None);
    assert_eq!(store.account_for_reply("+447700900123", "Acme").await.unwrap(), Some(acme));
    assert_eq!(store.account_for_reply("+447700900123", "Other").await.unwrap(), None);
    let counts = store.count_pending().await.unwrap();
    assert!(counts.contains(&(Status::Sent, 1)) && counts.contains(&(Status::Queued, 1)), "{counts:?}");
}

async fn concurrent_claimers_never_share_a_message(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let batch: Vec<NewMessage> = (0..400).map(|_| new(message(acme, "+447700900123", Status::Queued, NOW))).collect();
    store.insert_messages(&batch).await.unwrap();
    let store = store.clone();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_due(&format!("w{worker}"), NOW, 60_000, 25).await.expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(total, 400);
}

async fn many_transitions_in_one_commit(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let a = insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await;
    let b = insert(store, message(acme, "+447700900124", Status::Queued, NOW)).await;
    store.claim_due("n", NOW, 1000, 10).await.unwrap();
    let t = |id, to, detail: &str| Transition {
        id,
        to,
        at: NOW.plus_secs(1),
        detail: detail.into(),
        changes: Changes { carrier_id: Some(format!("c-{id}")), connector: Some("sim".into()), ..Default::default() },
    };
    let moved = store
        .transition_many(&[
            t(a, Status::Sent, "sent"),
            t(b, Status::Sent, "sent"),
            t(a, Status::Delivered, "ok"),
            t(b, Status::Queued, "no: sent"),
        ])
        .await
        .unwrap();
    // Each applies in order, seeing the ones before it: `b` cannot go back to queued once sent.
    assert_eq!(moved, vec![true, true, true, false]);
    assert_eq!(statuses(store, a).await, vec![Status::Queued, Status::Sending, Status::Sent, Status::Delivered]);
    assert_eq!(store.message_status(b).await.unwrap(), Some(Status::Sent));
    assert!(store.transition_many(&[]).await.unwrap().is_empty());
}

fn receipt(carrier_id: &str, to: Status, detail: &str) -> ReceiptUpdate {
    ReceiptUpdate {
        connector: "sim".into(),
        carrier_id: carrier_id.into(),
        to,
        at: NOW.plus_secs(5),
        detail: detail.into(),
        error_code: (to != Status::Delivered).then(|| "sim:001".into()),
    }
}

async fn receipts_find_messages_by_carrier_id(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let a = insert(store, message(acme, "+447700900123", Status::Queued, NOW)).await;
    let b = insert(store, message(acme, "+447700900124", Status::Queued, NOW)).await;
    let c = insert(store, message(acme, "+447700900125", Status::Queued, NOW)).await;
    store.claim_due("n", NOW, 1000, 10).await.unwrap();
    let sent = |id, carrier_id: &str| Transition {
        id,
        to: Status::Sent,
        at: NOW.plus_secs(1),
        detail: "sent".into(),
        changes: Changes { carrier_id: Some(carrier_id.into()), connector: Some("sim".into()), ..Default::default() },
    };
    // `c`'s receipt comes before its `sent` is recorded: it matches nothing (the engine tries it again later).
    let (moved, matched) = store
        .record(
            &[sent(a, "A1"), sent(b, "B1")],
            &[
                receipt("A1", Status::Delivered, "stat:DELIVRD"),
                receipt("B1", Status::Undelivered, "stat:UNDELIV"),
                receipt("A1", Status::Undelivered, "duplicate, too late"),
                receipt("C1", Status::Delivered, "early"),
                receipt("NOPE", Status::Delivered, "unknown id"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(moved, vec![true, true]);
    assert_eq!(matched, vec![Some(a), Some(b), None, None, None]);
    assert_eq!(statuses(store, a).await, vec![Status::Queued, Status::Sending, Status::Sent, Status::Delivered]);
    let m = store.message(acme, b).await.unwrap().unwrap();
    assert_eq!((m.status, m.error_code.as_deref()), (Status::Undelivered, Some("sim:001")));
    assert_eq!(store.events(b).await.unwrap().last().unwrap().detail, "stat:UNDELIV");
    // Once `c` is sent, its receipt applies; a receipt of another connector with the same id does not.
    assert!(store.transition_many(&[sent(c, "C1")]).await.unwrap()[0]);
    let mut other = receipt("C1", Status::Undelivered, "other connector");
    other.connector = "smpp-1".into();
    let (_, matched) = store.record(&[], &[other, receipt("C1", Status::Delivered, "late")]).await.unwrap();
    assert_eq!(matched, vec![None, Some(c)]);
    assert_eq!(store.message_status(c).await.unwrap(), Some(Status::Delivered));
    assert_eq!(store.record(&[], &[]).await.unwrap(), (vec![], vec![]));
}

/// Batches larger than one statement carries, with repeated idempotency keys inside one batch: every message and
/// event lands once, in order, numbered from 1.
async fn large_batches_in_one_commit(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let batch: Vec<NewMessage> = (0..1234)
        .map(|i| {
            let mut n = new(message(acme, &format!("+4477009{i:05}"), Status::Queued, NOW));
            if i % 100 == 7 {
                n.idempotency = Some((format!("key-{}", i % 200), "h".into()));
            }
            n
        })
        .collect();
    let got = store.insert_messages(&batch).await.unwrap();
    let new_count = got.iter().filter(|r| **r == Inserted::New).count();
    // Keys repeat every 200 messages: 13 messages carry keys key-7 and key-107 (7 of one, 6 of the other).
    assert_eq!(new_count, 1234 - 11);
    assert_eq!(got[207], Inserted::Duplicate { id: batch[7].message.id, same_request: true });
    let claimed = store.claim_due("n", NOW, 60_000, 2000).await.unwrap();
    assert_eq!(claimed.len(), new_count);
    let transitions: Vec<Transition> = claimed
        .iter()
        .map(|m| Transition {
            id: m.id,
            to: Status::Sent,
            at: NOW.plus_secs(1),
            detail: "sent".into(),
            changes: Changes {
                carrier_id: Some(format!("c{}", m.to)),
                connector: Some("sim".into()),
                lease_owner: Some("n".into()),
                ..Default::default()
            },
        })
        .collect();
    assert!(store.transition_many(&transitions).await.unwrap().iter().all(|&m| m));
    let receipts: Vec<ReceiptUpdate> =
        claimed.iter().map(|m| receipt(&format!("c{}", m.to), Status::Delivered, "ok")).collect();
    let (_, matched) = store.record(&[], &receipts).await.unwrap();
    assert_eq!(matched, claimed.iter().map(|m| Some(m.id)).collect::<Vec<_>>());
    assert_eq!(store.count_pending().await.unwrap(), vec![]);
    let delivered = ListFilter { status: Some(Status::Delivered), ..Default::default() };
    assert_eq!(store.list_messages(acme, &delivered, None, 2000).await.unwrap().len(), new_count);
    for m in [&claimed[0], &claimed[600], &claimed[new_count - 1]] {
        let events = store.events(m.id).await.unwrap();
        let seen: Vec<Status> = events.iter().map(|e| e.status).collect();
        assert_eq!(seen, vec![Status::Queued, Status::Sending, Status::Sent, Status::Delivered]);
    }
}

/// Writes that arrive together share a commit on SQLite; one that fails (a duplicate key hash) fails alone.
async fn a_failed_write_leaves_the_others(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    store.create_api_key(acme, "hash-taken", "sk_a", NOW).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.spawn(async move {
            if i == 25 {
                return store.create_api_key(acme, "hash-taken", "sk_b", NOW).await.is_ok();
            }
            let m = message(acme, "+447700900123", Status::Queued, NOW);
            store.insert_messages(&[new(m)]).await.unwrap() == vec![Inserted::New]
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += usize::from(done.unwrap());
    }
    assert_eq!(ok, 49, "every insert landed; the duplicate key failed");
    assert_eq!(store.list_messages(acme, &ListFilter::default(), None, 100).await.unwrap().len(), 49);
    assert_eq!(store.key_count(acme).await.unwrap(), 1);
}

/// A message the accepting node sends at once is stored `sending` under its lease, with both first steps of its
/// journey; no other claim takes it until the lease runs out.
async fn inserted_already_claimed(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let m = message(acme, "+447700900123", Status::Queued, NOW);
    let claim = Claim { owner: "node-1".into(), until: NOW.plus_secs(60) };
    let got = store.insert_messages(&[NewMessage { claim: Some(claim), ..new(m.clone()) }]).await.unwrap();
    assert_eq!(got, vec![Inserted::New]);
    let stored = store.message(acme, m.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.attempts), (Status::Sending, 1));
    let events = store.events(m.id).await.unwrap();
    let steps: Vec<(Status, &str)> = events.iter().map(|e| (e.status, e.detail.as_str())).collect();
    assert_eq!(steps, vec![(Status::Queued, "accepted"), (Status::Sending, "claimed by node-1")]);
    assert!(store.claim_due("node-2", NOW.plus_secs(59), 1000, 10).await.unwrap().is_empty());
    // Fenced: only the holder records the outcome.
    let sent = |owner: &str| Changes { lease_owner: Some(owner.into()), ..Changes::default() };
    assert!(!store.transition(m.id, Status::Sent, NOW, "sent", &sent("node-2")).await.unwrap());
    assert!(store.transition(m.id, Status::Sent, NOW, "sent", &sent("node-1")).await.unwrap());
    assert_eq!(statuses(store, m.id).await, vec![Status::Queued, Status::Sending, Status::Sent]);
    // A node that starts again takes back its own claims at once, and only its own.
    let mine = message(acme, "+447700900125", Status::Queued, NOW);
    let theirs = message(acme, "+447700900126", Status::Queued, NOW);
    let claim = |owner: &str| Some(Claim { owner: owner.into(), until: NOW.plus_secs(60) });
    store.insert_messages(&[NewMessage { claim: claim("node-1"), ..new(mine.clone()) }]).await.unwrap();
    store.insert_messages(&[NewMessage { claim: claim("node-3"), ..new(theirs.clone()) }]).await.unwrap();
    assert_eq!(store.release_leases("node-1").await.unwrap(), 1);
    let taken = store.claim_due("node-1", NOW.plus_secs(1), 600_000, 10).await.unwrap();
    assert_eq!(taken.iter().map(|m| m.id).collect::<Vec<_>>(), vec![mine.id]);
    assert_eq!(
        store.events(mine.id).await.unwrap().last().unwrap().detail,
        "previous lease ran out; claimed by node-1"
    );
    // A lost node's claim runs out like any other.
    let other = message(acme, "+447700900124", Status::Queued, NOW);
    let claim = Claim { owner: "node-1".into(), until: NOW.plus_secs(60) };
    store.insert_messages(&[NewMessage { claim: Some(claim), ..new(other.clone()) }]).await.unwrap();
    let taken = store.claim_due("node-2", NOW.plus_secs(61), 1000, 10).await.unwrap();
    let mut ids: Vec<MessageId> = taken.iter().map(|m| m.id).collect();
    ids.sort();
    let mut want = vec![other.id, theirs.id];
    want.sort();
    assert_eq!(ids, want);
}

/// A database written by schema version 1 (no `event_count`) is upgraded at open, its journeys counted, and
/// the next events numbered after the old ones.
async fn connectors_routes_and_one_time_steps(store: &Arc<dyn Store>) {
    let sim = ConnectorRecord {
        name: "sim-a".into(),
        kind: "sim".into(),
        settings: r#"{"mode":"healthy"}"#.into(),
        created_at: NOW,
        updated_at: NOW,
    };
    assert!(store.insert_connector(&sim).await.unwrap());
    assert!(!store.insert_connector(&sim).await.unwrap(), "a name is taken once");
    let changed =
        ConnectorRecord { settings: r#"{"mode":"reject_all"}"#.into(), updated_at: NOW.plus_secs(1), ..sim.clone() };
    assert!(store.update_connector(&changed).await.unwrap());
    let ghost = ConnectorRecord { name: "ghost".into(), ..sim.clone() };
    assert!(!store.update_connector(&ghost).await.unwrap());
    assert_eq!(store.connectors().await.unwrap(), vec![changed]);
    assert!(store.delete_connector("sim-a").await.unwrap());
    assert!(!store.delete_connector("sim-a").await.unwrap());
    assert!(store.connectors().await.unwrap().is_empty());

    let vip = store.create_account("vip", false, NOW).await.unwrap();
    let uk = Route {
        name: "uk".into(),
        position: 2,
        matches: RouteMatch { prefix: Some("+44".into()), account: Some(vip.id), ..Default::default() },
        connectors: vec![
            RouteTarget { name: "a".into(), priority: 0, weight: 3, price_micros: Some(7_500) },
            RouteTarget { name: "b".into(), priority: 1, weight: 1, price_micros: None },
        ],
    };
    assert!(store.insert_route(&uk, NOW).await.unwrap());
    assert!(!store.insert_route(&uk, NOW).await.unwrap());
    let moved = Route { position: -1, ..uk.clone() };
    assert!(store.update_route(&moved, NOW).await.unwrap());
    assert!(!store.update_route(&Route { name: "nope".into(), ..uk.clone() }, NOW).await.unwrap());
    assert_eq!(store.routes().await.unwrap(), vec![moved]);
    assert!(store.delete_route("uk").await.unwrap());
    assert!(!store.delete_route("uk").await.unwrap());

    assert!(store.do_once("seed default route", NOW).await.unwrap());
    assert!(!store.do_once("seed default route", NOW).await.unwrap());

    assert_eq!(store.account(vip.id).await.unwrap().unwrap().routes, None);
    let only = ["uk".to_string(), "backup".to_string()];
    assert!(store.set_account_routes(vip.id, Some(&only)).await.unwrap());
    assert_eq!(store.account(vip.id).await.unwrap().unwrap().routes, Some(only.to_vec()));
    assert_eq!(store.route_limits().await.unwrap(), vec![(vip.id, only.to_vec())]);
    assert!(store.set_account_routes(vip.id, None).await.unwrap());
    assert_eq!(store.account(vip.id).await.unwrap().unwrap().routes, None);
    assert!(!store.set_account_routes(AccountId::generate(), None).await.unwrap());
}

async fn callbacks_in_order(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let quiet = account(store).await;
    assert_eq!(store.webhooks(acme).await.unwrap(), None);
    let hooks = store.put_webhooks(acme, Some("http://127.0.0.1:1/status"), None, "s1", NOW).await.unwrap();
    assert_eq!(
        (hooks.status_url.as_deref(), hooks.inbound_url.as_deref(), hooks.secret.as_str()),
        (Some("http://127.0.0.1:1/status"), None, "s1")
    );
    // Setting the URLs again keeps the secret; rotating replaces it.
    let hooks =
        store.put_webhooks(acme, Some("http://127.0.0.1:1/s"), Some("http://127.0.0.1:1/in"), "s2", NOW).await.unwrap();
    assert_eq!((hooks.secret.as_str(), hooks.inbound_url.as_deref()), ("s1", Some("http://127.0.0.1:1/in")));
    // The old secret keeps signing until the grace period ends (three seconds here).
    assert!(store.rotate_webhook_secret(acme, "s3", NOW, NOW.plus_secs(3)).await.unwrap());
    assert!(!store.rotate_webhook_secret(quiet, "s3", NOW, NOW.plus_secs(3)).await.unwrap());
    let hooks = store.webhooks(acme).await.unwrap().unwrap();
    assert_eq!((hooks.secret.as_str(), hooks.previous_secret), ("s3", Some(("s1".into(), NOW.plus_secs(3)))));

    // A message of an account with webhooks: sending, sent, delivered each make a callback; one without, none.
    let m = message(acme, "+447700900123", Status::Queued, NOW);
    let claim = Some(Claim { owner: "n".into(), until: NOW.plus_secs(60) });
    store.insert_messages(&[NewMessage { claim: claim.clone(), ..new(m.clone()) }]).await.unwrap();
    let silent = message(quiet, "+447700900124", Status::Queued, NOW);
    store.insert_messages(&[NewMessage { claim, ..new(silent.clone()) }]).await.unwrap();
    let sent = Changes { carrier_id: Some("c1".into()), connector: Some("sim".into()), ..Changes::default() };
    assert!(store.transition(m.id, Status::Sent, NOW.plus_millis(1), "sent", &sent).await.unwrap());
    let receipt = ReceiptUpdate {
        connector: "sim".into(),
        carrier_id: "c1".into(),
        to: Status::Delivered,
        at: NOW.plus_millis(2),
        detail: "DELIVRD".into(),
        error_code: None,
    };
    assert_eq!(store.record(&[], &[receipt]).await.unwrap().1, vec![Some(m.id)]);
    assert_eq!(store.count_pending_callbacks().await.unwrap(), 3);
    assert!(store.callbacks(quiet, silent.id).await.unwrap().is_empty());
    let listed = store.callbacks(acme, m.id).await.unwrap();
    let steps: Vec<Status> = listed.iter().map(|c| c.status).collect();
    assert_eq!(steps, vec![Status::Sending, Status::Sent, Status::Delivered]);
    assert!(listed.iter().all(|c| c.kind == "status" && c.url == "http://127.0.0.1:1/s" && c.state == "pending"));
    // Tenants see only their own.
    assert!(store.callbacks(quiet, m.id).await.unwrap().is_empty());

    // One at a time per message, in order: the next only once the one before is done.
    let attempt = |result: &str| CallbackAttempt { at: NOW, result: result.into(), ms: 3 };
    let due = store.claim_callbacks("n", NOW.plus_secs(1), 10_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|c| (c.status, c.secret.as_str())).collect::<Vec<_>>(), vec![(Status::Sending, "s3")]);
    assert_eq!(due[0].previous_secret.as_deref(), Some("s1"), "within the grace period");
    assert_eq!(due[0].message.as_ref().map(|d| (d.id, d.status)), Some((m.id, Status::Delivered)), "as it is now");
    assert!(store.claim_callbacks("n", NOW.plus_secs(1), 10_000, 10).await.unwrap().is_empty(), "leased");
    let retry = CallbackResult {
        id: due[0].id.clone(),
        attempt: attempt("500"),
        next: CallbackNext::RetryAt(NOW.plus_secs(5)),
    };
    store.finish_callbacks(&[retry]).await.unwrap();
    assert!(store.claim_callbacks("n", NOW.plus_secs(2), 10_000, 10).await.unwrap().is_empty(), "not yet due");
    let again = store.claim_callbacks("n", NOW.plus_secs(5), 10_000, 10).await.unwrap();
    assert_eq!((again[0].id.as_str(), again[0].attempts), (due[0].id.as_str(), 1));
    assert_eq!(again[0].previous_secret, None, "the grace period is over");
    let done = CallbackResult { id: again[0].id.clone(), attempt: attempt("200"), next: CallbackNext::Delivered };
    store.finish_callbacks(&[done]).await.unwrap();
    let next = store.claim_callbacks("n", NOW.plus_secs(5), 10_000, 10).await.unwrap();
    assert_eq!(next.iter().map(|c| c.status).collect::<Vec<_>>(), vec![Status::Sent]);
    let gave_up = CallbackResult { id: next[0].id.clone(), attempt: attempt("timeout"), next: CallbackNext::GiveUp };
    store.finish_callbacks(&[gave_up]).await.unwrap();
    assert_eq!(store.claim_callbacks("n", NOW.plus_secs(5), 10_000, 10).await.unwrap()[0].status, Status::Delivered);
    let listed = store.callbacks(acme, m.id).await.unwrap();
    assert_eq!(listed[0].attempts.iter().map(|a| a.result.as_str()).collect::<Vec<_>>(), ["500", "200"]);
    assert_eq!((listed[0].state.as_str(), listed[1].state.as_str()), ("delivered", "failed"));
    assert_eq!(store.count_pending_callbacks().await.unwrap(), 1);
    // Every account gets a secret of its own, once: asking again gives the one it has.
    assert!(store.accounts_without_webhook_secret().await.unwrap().contains(&quiet));
    assert!(!store.accounts_without_webhook_secret().await.unwrap().contains(&acme));
    assert_eq!(store.ensure_webhook_secret(quiet, "q1", NOW).await.unwrap(), "q1");
    assert_eq!(store.ensure_webhook_secret(quiet, "q2", NOW).await.unwrap(), "q1");
    assert_eq!(store.ensure_webhook_secret(acme, "q3", NOW).await.unwrap(), "s3");
    assert!(!store.accounts_without_webhook_secret().await.unwrap().contains(&quiet));
    let quiet_hooks = store.webhooks(quiet).await.unwrap().unwrap();
    assert_eq!((quiet_hooks.status_url, quiet_hooks.inbound_url), (None, None));
}

async fn parts_decide_their_message(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let sent_in_parts = |ids: &[&str]| Changes {
        connector: Some("sim".into()),
        carrier_id: Some(ids[0].into()),
        parts: ids.iter().map(|s| s.to_string()).collect(),
        ..Changes::default()
    };
    let receipt = |cid: &str, to: Status| ReceiptUpdate {
        connector: "sim".into(),
        carrier_id: cid.into(),
        to,
        at: NOW,
        detail: format!("id:{cid}"),
        error_code: None,
    };
    let three = Message { segments: 3, ..message(acme, "+447700900123", Status::Sending, NOW) };
    insert(store, three.clone()).await;
    assert!(store.transition(three.id, Status::Sent, NOW, "sent", &sent_in_parts(&["p1", "p2", "p3"])).await.unwrap());
    // Each part's receipt is its message's, but the message waits for all of them.
    for cid in ["p1", "p3"] {
        assert_eq!(store.record(&[], &[receipt(cid, Status::Delivered)]).await.unwrap().1, vec![Some(three.id)]);
        assert_eq!(store.message(acme, three.id).await.unwrap().unwrap().status, Status::Sent);
    }
    // A second receipt for a part that has one changes nothing, and does not deliver the whole message.
    assert_eq!(store.record(&[], &[receipt("p1", Status::Delivered)]).await.unwrap().1, vec![None]);
    assert_eq!(store.record(&[], &[receipt("p2", Status::Delivered)]).await.unwrap().1, vec![Some(three.id)]);
    assert_eq!(store.message(acme, three.id).await.unwrap().unwrap().status, Status::Delivered);
    assert_eq!(store.events(three.id).await.unwrap().last().unwrap().detail, "part 2 of 3: id:p2");

    // One part undelivered: the message is undelivered at once, whatever the others say later.
    let two = Message { segments: 2, ..message(acme, "+447700900124", Status::Sending, NOW) };
    insert(store, two.clone()).await;
    assert!(store.transition(two.id, Status::Sent, NOW, "sent", &sent_in_parts(&["q1", "q2"])).await.unwrap());
    assert_eq!(store.record(&[], &[receipt("q2", Status::Undelivered)]).await.unwrap().1, vec![Some(two.id)]);
    assert_eq!(store.message(acme, two.id).await.unwrap().unwrap().status, Status::Undelivered);
    assert_eq!(store.record(&[], &[receipt("q1", Status::Delivered)]).await.unwrap().1, vec![Some(two.id)]);
    assert_eq!(store.message(acme, two.id).await.unwrap().unwrap().status, Status::Undelivered);
    // Several parts in one group: the message moves once.
    let pair = Message { segments: 2, ..message(acme, "+447700900125", Status::Sending, NOW) };
    insert(store, pair.clone()).await;
    assert!(store.transition(pair.id, Status::Sent, NOW, "sent", &sent_in_parts(&["r1", "r2"])).await.unwrap());
    let both = [receipt("r1", Status::Delivered), receipt("r2", Status::Delivered)];
    assert_eq!(store.record(&[], &both).await.unwrap().1, vec![Some(pair.id), Some(pair.id)]);
    assert_eq!(statuses(store, pair.id).await.last(), Some(&Status::Delivered));
    assert_eq!(statuses(store, pair.id).await.iter().filter(|s| **s == Status::Delivered).count(), 1);
}

async fn a_message_url_and_webhooks_set_later(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    let with_url = Message {
        callback_url: Some("http://127.0.0.1:1/own".into()),
        ..message(acme, "+447700900123", Status::Sending, NOW)
    };
    let plain = message(acme, "+447700900124", Status::Sending, NOW);
    insert(store, with_url.clone()).await;
    insert(store, plain.clone()).await;
    let sent =
        |cid: &str| Changes { carrier_id: Some(cid.into()), connector: Some("sim".into()), ..Changes::default() };
    // No account has webhooks: only the message with its own URL makes callbacks.
    assert!(store.transition(with_url.id, Status::Sent, NOW, "sent", &sent("a")).await.unwrap());
    assert!(store.transition(plain.id, Status::Sent, NOW, "sent", &sent("b")).await.unwrap());
    let own = store.callbacks(acme, with_url.id).await.unwrap();
    assert_eq!(
        own.iter().map(|c| (c.status, c.url.as_str())).collect::<Vec<_>>(),
        vec![(Status::Sending, "http://127.0.0.1:1/own"), (Status::Sent, "http://127.0.0.1:1/own")]
    );
    assert!(store.callbacks(acme, plain.id).await.unwrap().is_empty());
    // Webhooks set now: the next change of the plain message reports to them.
    store.put_webhooks(acme, Some("http://127.0.0.1:1/hooks"), None, "s", NOW).await.unwrap();
    let receipt = ReceiptUpdate {
        connector: "sim".into(),
        carrier_id: "b".into(),
        to: Status::Delivered,
        at: NOW,
        detail: "d".into(),
        error_code: None,
    };
    assert_eq!(store.record(&[], &[receipt]).await.unwrap().1, vec![Some(plain.id)]);
    let later = store.callbacks(acme, plain.id).await.unwrap();
    assert_eq!(
        later.iter().map(|c| (c.status, c.url.as_str())).collect::<Vec<_>>(),
        vec![(Status::Delivered, "http://127.0.0.1:1/hooks")]
    );

    // callback_statuses: only the changes asked for call back, to the message's URL or the account's; the
    // message reads them back.
    let finals = Some(smsgate_core::StatusMask::of(&[Status::Delivered, Status::Undelivered]));
    let picky = Message {
        callback_url: Some("http://127.0.0.1:1/own".into()),
        callback_statuses: finals,
        ..message(acme, "+447700900125", Status::Sending, NOW)
    };
    let picky_account = Message { callback_statuses: finals, ..message(acme, "+447700900126", Status::Sending, NOW) };
    for m in [&picky, &picky_account] {
        insert(store, m.clone()).await;
        assert_eq!(store.message(acme, m.id).await.unwrap().unwrap().callback_statuses, finals);
    }
    assert!(store.transition(picky.id, Status::Sent, NOW, "sent", &sent("c")).await.unwrap());
    assert!(store.transition(picky_account.id, Status::Sent, NOW, "sent", &sent("d")).await.unwrap());
    let receipts: Vec<_> = [("c", Status::Delivered), ("d", Status::Undelivered)]
        .into_iter()
        .map(|(cid, to)| ReceiptUpdate {
            connector: "sim".into(),
            carrier_id: cid.into(),
            to,
            at: NOW,
            detail: "d".into(),
            error_code: None,
        })
        .collect();
    assert_eq!(store.record(&[], &receipts).await.unwrap().1, vec![Some(picky.id), Some(picky_account.id)]);
    let heard =
        |calls: Vec<smsgate_store::CallbackRecord>| calls.into_iter().map(|c| (c.status, c.url)).collect::<Vec<_>>();
    assert_eq!(
        heard(store.callbacks(acme, picky.id).await.unwrap()),
        vec![(Status::Delivered, "http://127.0.0.1:1/own".to_string())]
    );
    assert_eq!(
        heard(store.callbacks(acme, picky_account.id).await.unwrap()),
        vec![(Status::Undelivered, "http://127.0.0.1:1/hooks".to_string())]
    );
}

async fn upgrade_from_version_1(url: &str) {
    // A database as smsgate's first schema left it: a message being sent, its journey in the event table, one
    // detail with characters JSON must escape.
    let (account, id) = (AccountId::generate(), MessageId::generate());
    let statements = [
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)".to_string(),
        include_str!("../migrations/0001_init.sql").to_string(),
        "INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0)".to_string(),
        format!("INSERT INTO accounts (id, name, is_admin, created_at) VALUES ('{account}', 'old', 0, {})", NOW.0),
        format!(
            "INSERT INTO messages (id, account_id, direction, to_addr, from_addr, body, encoding, segments, status, \
             attempts, next_attempt_at, lease_owner, lease_until, expires_at, created_at, updated_at) \
             VALUES ('{id}', '{account}', 'outbound', '+447700900123', 'Acme', 'Hi', 'gsm7', 1, 'sending', 1, {now}, \
             'n', {until}, {until}, {now}, {now})",
            now = NOW.0,
            until = NOW.0 + 60_000
        ),
        format!(
            "INSERT INTO message_events (message_id, seq, status, at, detail) VALUES \
             ('{id}', 2, 'sending', {}, 'claimed by \"n\" \\ again'), ('{id}', 1, 'queued', {}, 'accepted')",
            NOW.0 + 1,
            NOW.0
        ),
    ];
    match url.strip_prefix("sqlite://") {
        Some(path) => {
            let conn = rusqlite::Connection::open(path.split('?').next().unwrap()).unwrap();
            for sql in &statements {
                conn.execute_batch(sql).unwrap();
            }
        }
        None => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            for sql in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
    let store = smsgate_store::open(url, 2).await.unwrap();
    let journey = store.events(id).await.unwrap();
    let expected =
        [(Status::Queued, NOW, "accepted"), (Status::Sending, Timestamp(NOW.0 + 1), "claimed by \"n\" \\ again")];
    assert_eq!(journey.iter().map(|e| (e.status, e.at, e.detail.as_str())).collect::<Vec<_>>(), expected);
    assert_eq!(store.message(account, id).await.unwrap().unwrap().status, Status::Sending);
    // An account made before senders were owned keeps sending as it did.
    let old = store.account(account).await.unwrap().unwrap();
    assert_eq!(old.sender_policy, smsgate_core::senders::SenderPolicy::Any);
    assert!(store.transition(id, Status::Sent, NOW, "sent", &Changes::default()).await.unwrap());
    assert_eq!(statuses(&store, id).await, vec![Status::Queued, Status::Sending, Status::Sent]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_version_1_on_sqlite() {
    let path = std::env::temp_dir().join(format!("smsgate-upgrade-{}.db", uuid::Uuid::now_v7().simple()));
    upgrade_from_version_1(&format!("sqlite://{}?mode=rwc", path.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_version_1_on_postgres() {
    let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
    on_server(format!("CREATE SCHEMA {schema}")).await;
    upgrade_from_version_1(&format!("{}?options=-c%20search_path%3D{schema}", postgres_url())).await;
    on_server(format!("DROP SCHEMA {schema} CASCADE")).await;
}

async fn smpp_credentials(store: &Arc<dyn Store>) {
    let (acme, other) = (account(store).await, account(store).await);
    let c = smsgate_store::SmppCredential {
        system_id: "acme1".into(),
        account_id: acme,
        password_hash: "$argon2id$x".into(),
        allowed_ips: Some(vec!["10.0.0.0/8".into(), "192.0.2.7".into()]),
        max_binds: Some(3),
        throughput: Some(12.5),
        created_at: NOW,
    };
    assert!(store.create_smpp_credential(&c).await.unwrap());
    // A system_id is unique across accounts: binds name no account.
    let taken = smsgate_store::SmppCredential { account_id: other, ..c.clone() };
    assert!(!store.create_smpp_credential(&taken).await.unwrap());
    let bare = smpp_bare("acme0", acme);
    assert!(store.create_smpp_credential(&bare).await.unwrap());
    assert_eq!(store.smpp_credentials(acme).await.unwrap(), vec![bare.clone(), c.clone()]);
    assert_eq!(store.smpp_credentials(other).await.unwrap(), vec![]);
    assert_eq!(store.smpp_credential("acme1").await.unwrap(), Some(c.clone()));
    assert_eq!(store.smpp_credential("nobody").await.unwrap(), None);
    // Only its own account removes it.
    assert!(!store.delete_smpp_credential(other, "acme1").await.unwrap());
    assert!(store.delete_smpp_credential(acme, "acme1").await.unwrap());
    assert_eq!(store.smpp_credential("acme1").await.unwrap(), None);
    assert!(!store.delete_smpp_credential(acme, "acme1").await.unwrap());
}

fn smpp_bare(system_id: &str, account: AccountId) -> smsgate_store::SmppCredential {
    smsgate_store::SmppCredential {
        system_id: system_id.into(),
        account_id: account,
        password_hash: "h".into(),
        allowed_ips: None,
        max_binds: None,
        throughput: None,
        created_at: NOW,
    }
}

/// What the SMPP outbox holds for a message: (kind, part, status) in order.
async fn smpp_due(store: &Arc<dyn Store>, account: AccountId, at: Timestamp) -> Vec<(String, u32, Status)> {
    let due = store.claim_smpp_deliveries("node", &[account], at, 1000, 100).await.unwrap();
    let mut out: Vec<_> = due.iter().map(|d| (d.kind.clone(), d.part, d.status)).collect();
    out.sort_by_key(|(_, part, _)| *part);
    let done: Vec<_> = due.iter().map(|d| (d.id.clone(), smsgate_store::DeliveryNext::Delivered)).collect();
    store.finish_smpp_deliveries(&done).await.unwrap();
    out
}

async fn smpp_deliveries(store: &Arc<dyn Store>) {
    use smsgate_store::{DeliveryNext, SmppReceipts};
    let (acme, other) = (account(store).await, account(store).await);
    let none = Changes::default();
    let submitted = |registered_delivery, ids| NewMessage {
        smpp: Some(SmppReceipts { registered_delivery, ids }),
        ..new(message(acme, "+447700900001", Status::Queued, NOW))
    };
    // A final receipt only: nothing for `sent`, one for `delivered`, with the message.
    let final_only = submitted(1, 1);
    let id = final_only.message.id;
    store.insert_messages(&[final_only]).await.unwrap();
    for to in [Status::Sending, Status::Sent] {
        assert!(store.transition(id, to, NOW, "x", &none).await.unwrap());
    }
    assert_eq!(smpp_due(store, acme, NOW).await, vec![]);
    assert!(store.transition(id, Status::Delivered, NOW.plus_secs(5), "x", &none).await.unwrap());
    let due = store.claim_smpp_deliveries("node", &[acme], NOW.plus_secs(5), 1000, 100).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].kind.as_str(), due[0].part, due[0].status), ("receipt", 0, Status::Delivered));
    assert_eq!(due[0].message.as_ref().map(|m| m.id), Some(id));
    assert_eq!(due[0].expires_at, NOW.plus_secs(5).plus_millis(smsgate_store::SMPP_DELIVERY_TTL_MS));
    // Claimed: not due again until its lease ends; retried at the time asked.
    assert!(store.claim_smpp_deliveries("node", &[acme], NOW.plus_secs(5), 1000, 100).await.unwrap().is_empty());
    store.finish_smpp_deliveries(&[(due[0].id.clone(), DeliveryNext::RetryAt(NOW.plus_secs(60)))]).await.unwrap();
    assert_eq!(store.count_pending_smpp_deliveries().await.unwrap(), 1);
    assert!(store.claim_smpp_deliveries("node", &[acme], NOW.plus_secs(59), 1000, 100).await.unwrap().is_empty());
    // Only for the account bound here.
    assert!(store.claim_smpp_deliveries("node", &[other], NOW.plus_secs(60), 1000, 100).await.unwrap().is_empty());
    assert_eq!(smpp_due(store, acme, NOW.plus_secs(60)).await, vec![("receipt".into(), 0, Status::Delivered)]);
    assert_eq!(store.count_pending_smpp_deliveries().await.unwrap(), 0);

    // Failures only: nothing for delivered; one for an expiry.
    let failures = submitted(2, 1);
    let (f, delivered) = (failures.message.id, submitted(2, 1));
    let d = delivered.message.id;
    store.insert_messages(&[failures, delivered]).await.unwrap();
    for to in [Status::Sending, Status::Sent, Status::Delivered] {
        store.transition(d, to, NOW, "x", &none).await.unwrap();
    }
    assert_eq!(store.expire_due(NOW.plus_secs(3600), 10).await.unwrap(), vec![f]);
    assert_eq!(smpp_due(store, acme, NOW.plus_secs(3600)).await, vec![("receipt".into(), 0, Status::Expired)]);

    // A receipt per part, and the intermediate `sent`: three ids, each hears `sent` then `undelivered`, in order.
    let parts = submitted(0x11, 3);
    let p = parts.message.id;
    store.insert_messages(&[parts]).await.unwrap();
    for to in [Status::Sending, Status::Sent, Status::Undelivered] {
        assert!(store.transition(p, to, NOW, "x", &none).await.unwrap());
    }
    let sent: Vec<_> = (1..=3).map(|i| ("receipt".to_string(), i, Status::Sent)).collect();
    // Claims under way side by side (the deliverer keeps several): while the `sent` ones are out, leased, a second
    // claim takes none of the `undelivered` behind them.
    let out = store.claim_smpp_deliveries("node", &[acme], NOW, 1000, 100).await.unwrap();
    assert_eq!(out.len(), 3);
    assert!(store.claim_smpp_deliveries("node", &[acme], NOW, 1000, 100).await.unwrap().is_empty());
    let back: Vec<_> = out.iter().map(|d| (d.id.clone(), DeliveryNext::RetryAt(NOW))).collect();
    store.finish_smpp_deliveries(&back).await.unwrap();
    assert_eq!(smpp_due(store, acme, NOW).await, sent);
    let undelivered: Vec<_> = (1..=3).map(|i| ("receipt".to_string(), i, Status::Undelivered)).collect();
    assert_eq!(smpp_due(store, acme, NOW).await, undelivered);

    // Inbound messages of an account with SMPP credentials; none for one without.
    let inbound = |account| Message {
        direction: Direction::Inbound,
        status: Status::Received,
        ..message(account, "+15550001", Status::Received, NOW)
    };
    insert(store, inbound(other)).await;
    assert!(store.create_smpp_credential(&smpp_bare("acme", acme)).await.unwrap());
    let reply = insert(store, inbound(acme)).await;
    let due = store.claim_smpp_deliveries("node", &[acme, other], NOW, 1000, 100).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].kind.as_str(), due[0].message_id, due[0].status), ("inbound", reply, Status::Received));
    // Nobody took it in time: expired.
    assert_eq!(store.expire_smpp_deliveries(NOW.plus_millis(smsgate_store::SMPP_DELIVERY_TTL_MS)).await.unwrap(), 1);
    assert_eq!(store.count_pending_smpp_deliveries().await.unwrap(), 0);
}

/// Deliver_sm for an account bound on this node go straight to the feed, leased; the claim takes them only when
/// their lease ends, and takes at once what is not fed (another account, a message with intermediate receipts, a
/// full channel). A store that cannot feed leaves everything to the claim.
async fn smpp_feed(store: &Arc<dyn Store>) {
    use smsgate_store::{SmppFeed, SmppReceipts};
    let (acme, other) = (account(store).await, account(store).await);
    let (tx, mut fed) = tokio::sync::mpsc::channel(1);
    let feed = SmppFeed { node: "node".into(), lease_ms: 1000, bound: Arc::new(move |a| a == acme), tx };
    let feeds = store.feed_smpp_deliveries(feed.clone()).await.unwrap();
    let submitted = |account, to: &str, registered_delivery| NewMessage {
        smpp: Some(SmppReceipts { registered_delivery, ids: 1 }),
        ..new(Message { body: format!("hello {to}"), ..message(account, to, Status::Queued, NOW) })
    };
    let news = [
        submitted(acme, "+447700900001", 1),
        submitted(other, "+447700900002", 1),
        submitted(acme, "+447700900003", 0x11),
        submitted(acme, "+447700900004", 1),
    ];
    let ids: Vec<MessageId> = news.iter().map(|n| n.message.id).collect();
    store.insert_messages(&news).await.unwrap();
    let none = Changes::default();
    for id in &ids {
        for (to, at) in [(Status::Sending, NOW), (Status::Sent, NOW), (Status::Delivered, NOW.plus_secs(5))] {
            assert!(store.transition(*id, to, at, "x", &none).await.unwrap());
        }
    }
    let claim = |at: Timestamp| async move {
        let due = store.claim_smpp_deliveries("node", &[acme, other], at, 1000, 100).await.unwrap();
        let mut got: Vec<(MessageId, Status)> = due.iter().map(|d| (d.message_id, d.status)).collect();
        got.sort_by_key(|(id, s)| (*id, s.as_str()));
        let done: Vec<_> = due.iter().map(|d| (d.id.clone(), smsgate_store::DeliveryNext::Delivered)).collect();
        store.finish_smpp_deliveries(&done).await.unwrap();
        got
    };
    let sorted = |mut v: Vec<(MessageId, Status)>| {
        v.sort_by_key(|(id, s)| (*id, s.as_str()));
        v
    };
    if !feeds {
        let all = vec![(ids[0], Status::Delivered), (ids[1], Status::Delivered), (ids[2], Status::Sent)];
        assert_eq!(claim(NOW.plus_secs(5)).await, sorted([all, vec![(ids[3], Status::Delivered)]].concat()));
        assert!(fed.try_recv().is_err());
        return;
    }
    // The first final receipt of acme is fed, with what its deliver_sm says; the channel is full for the second.
    let d = fed.try_recv().unwrap();
    assert_eq!((d.message_id, d.status, d.kind.as_str(), d.part), (ids[0], Status::Delivered, "receipt", 0));
    let m = d.message.as_ref().unwrap();
    assert_eq!(
        (m.id, m.to.as_str(), m.from.as_str(), m.body.as_str()),
        (ids[0], "+447700900001", "Acme", "hello +447700900001")
    );
    assert_eq!(m.created_at, NOW);
    assert!(fed.try_recv().is_err());
    // The claim takes the rest at once (for the message with intermediate receipts, `sent` first), the fed one
    // only when its lease ends.
    let rest = vec![(ids[1], Status::Delivered), (ids[2], Status::Sent), (ids[3], Status::Delivered)];
    assert_eq!(claim(NOW.plus_secs(5)).await, sorted(rest));
    assert_eq!(claim(NOW.plus_secs(5)).await, vec![(ids[2], Status::Delivered)]);
    assert_eq!(store.count_pending_smpp_deliveries().await.unwrap(), 1);
    assert_eq!(claim(NOW.plus_millis(5999)).await, vec![]);
    // A node feeding again (started again) releases its earlier leases.
    assert!(store.feed_smpp_deliveries(feed).await.unwrap());
    assert_eq!(claim(NOW.plus_secs(5)).await, vec![(ids[0], Status::Delivered)]);
    assert_eq!(store.count_pending_smpp_deliveries().await.unwrap(), 0);
}

async fn replacing_a_waiting_message(store: &Arc<dyn Store>) {
    let (acme, other) = (account(store).await, account(store).await);
    let id = insert(store, message(acme, "+447700900001", Status::Queued, NOW)).await;
    let later = NOW.plus_secs(600);
    let replacement = Message {
        body: "Replaced".into(),
        segments: 1,
        send_at: Some(later),
        expires_at: Some(later.plus_secs(60)),
        ..message(acme, "+447700900001", Status::Queued, NOW)
    };
    // Not another account's; replaced while it waits.
    assert!(!store.replace_message(other, id, &replacement, NOW, "replaced").await.unwrap());
    assert!(store.replace_message(acme, id, &replacement, NOW, "replaced by the sender").await.unwrap());
    let m = store.message(acme, id).await.unwrap().unwrap();
    assert_eq!(
        (m.body.as_str(), m.send_at, m.expires_at, m.status),
        ("Replaced", Some(later), Some(later.plus_secs(60)), Status::Queued)
    );
    assert_eq!(store.events(id).await.unwrap().last().unwrap().detail, "replaced by the sender");
    // It waits for its new time.
    assert!(store.claim_due("n", NOW.plus_secs(599), 1000, 10).await.unwrap().is_empty());
    assert_eq!(store.claim_due("n", later, 1000, 10).await.unwrap().len(), 1);
    // Being sent: too late.
    assert!(!store.replace_message(acme, id, &replacement, later, "again").await.unwrap());
}

async fn messages_wait_for_their_route(store: &Arc<dyn Store>) {
    let acme = account(store).await;
    // The wall clock's time: which messages go back depends on when they were accepted, by their ids.
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let now = Timestamp(i64::try_from(since_epoch.as_millis()).unwrap());
    for i in 1..=5 {
        insert(store, message(acme, &format!("+44770090000{i}"), Status::Queued, now)).await;
    }
    // All five claimed; then four wait for route "uk" and one for "us", spending no attempt.
    let claimed = store.claim_due("n", now, 1000, 10).await.unwrap();
    let ids: Vec<MessageId> = claimed.iter().map(|m| m.id).collect();
    for (id, route) in ids.iter().zip(["uk", "uk", "uk", "uk", "us"]) {
        let wait = Changes {
            wait_for_route: Some(route.into()),
            retry_at: Some(now.plus_secs(1)),
            attempt_undone: true,
            lease_owner: Some("n".into()),
            ..Default::default()
        };
        assert!(store.transition(*id, Status::Queued, now, "no connector of route is up", &wait).await.unwrap());
    }
    // Off the queue: not due a year later, whatever the `retry_at`.
    assert!(store.claim_due("n", now.plus_secs(400 * 86_400), 1000, 10).await.unwrap().is_empty());
    // Still queued, as far as anyone asking can tell.
    assert_eq!(store.count_pending().await.unwrap(), vec![(Status::Queued, 5)]);
    // Put back by route, oldest first, as many as asked, due at the time given.
    let unpark = |route: Option<&'static str>, after: Option<WaitingAt>, at: Timestamp, limit: u32| {
        let store = store.clone();
        async move { store.unpark(route, after.as_ref(), at, limit).await.unwrap() }
    };
    assert_eq!(unpark(Some("fr"), None, now.plus_secs(5), 10).await, None);
    assert_eq!(unpark(Some("uk"), None, now, 10).await, None, "accepted after the time given");
    let first = unpark(Some("uk"), None, now.plus_secs(5), 1).await;
    assert_eq!(first, Some(WaitingAt { route: "uk".into(), id: ids[0] }));
    assert!(store.claim_due("n", now.plus_secs(4), 1000, 10).await.unwrap().is_empty());
    let again = store.claim_due("n", now.plus_secs(5), 3_600_000, 10).await.unwrap();
    assert_eq!((again.len(), again[0].id, again[0].attempts), (1, ids[0], 1));
    // Set waiting again, it stays while the put-back goes on from where it stopped.
    let wait = Changes { wait_for_route: Some("uk".into()), lease_owner: Some("n".into()), ..Default::default() };
    assert!(store.transition(ids[0], Status::Queued, now, "no connector of route is up", &wait).await.unwrap());
    // A waiting message that moves any other way waits no more: canceled, or given a new time to be sent.
    assert!(
        store.transition(ids[1], Status::Canceled, now, "canceled by the sender", &Changes::default()).await.unwrap()
    );
    let later = now.plus_secs(600);
    let replacement = Message { send_at: Some(later), ..message(acme, "+447700900003", Status::Queued, now) };
    assert!(store.replace_message(acme, ids[2], &replacement, now, "replaced by the sender").await.unwrap());
    let fourth = unpark(Some("uk"), first, now.plus_secs(6), 10).await;
    assert_eq!(fourth, Some(WaitingAt { route: "uk".into(), id: ids[3] }), "only the fourth still waits after it");
    assert_eq!(unpark(Some("uk"), fourth, now.plus_secs(6), 10).await, None);
    // Any route: the rest, in the order of their routes.
    let oldest = unpark(None, None, now.plus_secs(6), 1).await;
    assert_eq!(oldest, Some(WaitingAt { route: "uk".into(), id: ids[0] }));
    assert_eq!(unpark(None, oldest, now.plus_secs(6), 10).await, Some(WaitingAt { route: "us".into(), id: ids[4] }));
    assert_eq!(unpark(None, None, now.plus_secs(6), 10).await, None);
    let due: Vec<MessageId> =
        store.claim_due("n", now.plus_secs(6), 3_600_000, 10).await.unwrap().iter().map(|m| m.id).collect();
    assert_eq!(due, vec![ids[0], ids[3], ids[4]]);
    assert_eq!(store.claim_due("n", later, 1000, 10).await.unwrap()[0].id, ids[2]);
    assert_eq!(statuses(store, ids[3]).await, vec![Status::Queued, Status::Sending, Status::Queued, Status::Sending]);
}

async fn senders_have_one_owner(store: &Arc<dyn Store>) {
    use smsgate_core::senders::{AddressKind, SenderPolicy, SenderStatus};
    use smsgate_store::{Sender, SenderFilter};
    let (acme, globex) = (account(store).await, account(store).await);
    assert_eq!(store.account(acme).await.unwrap().unwrap().sender_policy, SenderPolicy::Owned);
    let admin = store.create_account("admin", true, NOW).await.unwrap();
    assert_eq!(admin.sender_policy, SenderPolicy::Any);
    let sender = |account, kind, address: &str, status| Sender {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: account,
        kind,
        address: address.into(),
        connector: None,
        status,
        created_at: NOW,
        updated_at: NOW,
    };
    let number = Sender {
        connector: Some("sim".into()),
        ..sender(acme, AddressKind::LongCode, "+447700900001", SenderStatus::Active)
    };
    assert!(store.insert_sender(&number).await.unwrap());
    let brand = sender(acme, AddressKind::Alphanumeric, "AcmeBank", SenderStatus::Pending);
    assert!(store.insert_sender(&brand).await.unwrap());
    // One owner per address, compared without '+' and case, whatever the status.
    assert!(
        !store
            .insert_sender(&sender(globex, AddressKind::LongCode, "447700900001", SenderStatus::Active))
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_sender(&sender(globex, AddressKind::Alphanumeric, "ACMEBANK", SenderStatus::Active))
            .await
            .unwrap()
    );
    assert_eq!(store.sender(&number.id).await.unwrap(), Some(number.clone()));
    assert_eq!(store.sender_by_address("447700900001").await.unwrap(), Some(number.clone()));
    assert_eq!(store.sender_by_address("acmebank").await.unwrap().map(|s| s.id), Some(brand.id.clone()));
    assert_eq!(store.sender_by_address("+447700900002").await.unwrap(), None);
    let of = |account, numbers| SenderFilter { account, numbers };
    assert_eq!(store.senders(&of(Some(acme), None)).await.unwrap().len(), 2);
    assert_eq!(store.senders(&of(Some(acme), Some(true))).await.unwrap(), std::slice::from_ref(&number));
    assert_eq!(store.senders(&of(Some(acme), Some(false))).await.unwrap().len(), 1);
    assert!(store.senders(&of(Some(globex), None)).await.unwrap().is_empty());
    assert!(store.set_sender_status(&brand.id, SenderStatus::Active, Timestamp(NOW.0 + 5)).await.unwrap());
    let approved = store.sender(&brand.id).await.unwrap().unwrap();
    assert_eq!((approved.status, approved.updated_at), (SenderStatus::Active, Timestamp(NOW.0 + 5)));
    assert!(!store.set_sender_status("nope", SenderStatus::Active, NOW).await.unwrap());
    // Deleted, the address is free for another account.
    assert!(store.delete_sender(&brand.id).await.unwrap());
    assert!(!store.delete_sender(&brand.id).await.unwrap());
    assert!(
        store
            .insert_sender(&sender(globex, AddressKind::Alphanumeric, "acmebank", SenderStatus::Active))
            .await
            .unwrap()
    );
    assert!(store.set_sender_policy(acme, SenderPolicy::Any).await.unwrap());
    assert_eq!(store.account(acme).await.unwrap().unwrap().sender_policy, SenderPolicy::Any);
    assert!(!store.set_sender_policy(AccountId::generate(), SenderPolicy::Any).await.unwrap());
}

async fn callbacks_are_shared_out_between_accounts(store: &Arc<dyn Store>) {
    use smsgate_store::Share;
    let (acme, globex) = (account(store).await, account(store).await);
    for a in [acme, globex] {
        store.put_webhooks(a, Some("http://127.0.0.1:1/s"), None, "s", NOW).await.unwrap();
    }
    // Three of Acme's, then one of Globex's: each message's first callback (sending) is due.
    let claim = Some(Claim { owner: "n".into(), until: NOW.plus_secs(60) });
    for (a, n) in [(acme, 3), (globex, 1)] {
        for _ in 0..n {
            let m = message(a, "+447700900123", Status::Queued, NOW);
            store.insert_messages(&[NewMessage { claim: claim.clone(), ..new(m) }]).await.unwrap();
        }
    }
    let owners = |due: &[smsgate_store::DueCallback]| due.iter().map(|c| c.account_id).collect::<Vec<_>>();
    // Turn by turn among the oldest, at most two of an account's: Globex's is not behind Acme's.
    let share = Share { per_account: 2, skip: Vec::new() };
    let due = store.claim_callbacks_fairly("n", NOW.plus_secs(1), 10_000, 4, &share).await.unwrap();
    let mut got = owners(&due);
    got.sort();
    let mut want = vec![acme, acme, globex];
    want.sort();
    assert_eq!(got, want);
    // An account with enough under way is left out; the others' are taken.
    let share = Share { per_account: 8, skip: vec![acme] };
    assert!(store.claim_callbacks_fairly("n", NOW.plus_secs(1), 10_000, 8, &share).await.unwrap().is_empty());
    let share = Share { per_account: 8, skip: Vec::new() };
    assert_eq!(
        owners(&store.claim_callbacks_fairly("n", NOW.plus_secs(1), 10_000, 16, &share).await.unwrap()),
        vec![acme]
    );
}

/// PostgreSQL over TLS: `sslmode=require` in the URL encrypts the connection; `verify-ca` checks the server's
/// certificate against a CA file; `verify-full` also checks its name, so a name the certificate does not carry is
/// refused. (The test server is Debian's, with its self-signed "snakeoil" certificate.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls() {
    let schema = format!("test_{}", uuid::Uuid::now_v7().simple());
    on_server(format!("CREATE SCHEMA {schema}")).await;
    let base = postgres_url();
    let join = if base.contains('?') { '&' } else { '?' };
    let cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    for mode in ["sslmode=require".to_string(), format!("sslmode=verify-ca&sslrootcert={cert}")] {
        let url = format!("{base}{join}{mode}&options=-c%20search_path%3D{schema}");
        let store = PgStore::open(&url, 2).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        let sql = "SELECT CASE WHEN ssl THEN 1 ELSE 0 END AS ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        let row = smsgate_store::sql::Database::query_one(&store, sql, Vec::new()).await.unwrap().expect("a row");
        assert_eq!(row.get::<i64>("ssl").unwrap(), 1, "{mode}: the connection is encrypted");
        store.close().await;
    }
    let wrong_name = format!("{base}{join}sslmode=verify-full&sslrootcert={cert}");
    assert!(PgStore::open(&wrong_name, 1).await.is_err(), "127.0.0.1 is not the certificate's name");
    on_server(format!("DROP SCHEMA {schema} CASCADE")).await;
}

async fn secrets_are_sealed_at_rest(store: &Arc<dyn Store>) {
    use smsgate_store::seal;
    use smsgate_store::sql::Value;
    // The process's key (the same for every test here that installs one).
    seal::install(&[9; 32]);
    let acme = account(store).await;
    let raw = |sql: &'static str, param: Value| {
        let store = store.clone();
        async move { store.query_one(sql, vec![param]).await.unwrap().unwrap() }
    };
    let hooks = store.put_webhooks(acme, Some("https://acme.example/h"), None, "whsec_plain_one", NOW).await.unwrap();
    assert_eq!(hooks.secret, "whsec_plain_one");
    let kept: String =
        raw("SELECT secret FROM webhooks WHERE account_id = ?", acme.into()).await.get("secret").unwrap();
    assert!(seal::is_sealed(&kept) && !kept.contains("whsec_plain_one"), "{kept}");
    assert!(store.rotate_webhook_secret(acme, "whsec_plain_two", NOW, NOW.plus_secs(60)).await.unwrap());
    let hooks = store.webhooks(acme).await.unwrap().unwrap();
    assert_eq!(
        (hooks.secret.as_str(), hooks.previous_secret.map(|p| p.0)),
        ("whsec_plain_two", Some("whsec_plain_one".into()))
    );
    // A connector's password is sealed inside its settings; the rest stays readable.
    let name = format!("c{}", uuid::Uuid::now_v7().simple());
    let record = ConnectorRecord {
        name: name.clone(),
        kind: "smpp".into(),
        settings: r#"{"host":"smsc.example","password":"hunter22"}"#.into(),
        created_at: NOW,
        updated_at: NOW,
    };
    assert!(store.insert_connector(&record).await.unwrap());
    let kept: String =
        raw("SELECT settings FROM connectors WHERE name = ?", name.as_str().into()).await.get("settings").unwrap();
    assert!(kept.contains("smsc.example") && !kept.contains("hunter22") && kept.contains("sealed:v1:"), "{kept}");
    let read = store.connectors().await.unwrap().into_iter().find(|c| c.name == name).unwrap();
    assert!(read.settings.contains("hunter22"), "{}", read.settings);
    // Values from before sealing are read as they are, and sealed by reseal_secrets.
    let legacy = r#"{"host":"smsc.example","password":"legacy1"}"#;
    store
        .execute("UPDATE connectors SET settings = ? WHERE name = ?", vec![legacy.into(), name.as_str().into()])
        .await
        .unwrap();
    store.execute("UPDATE webhooks SET secret = 'whsec_legacy' WHERE account_id = ?", vec![acme.into()]).await.unwrap();
    assert_eq!(store.webhooks(acme).await.unwrap().unwrap().secret, "whsec_legacy");
    assert!(store.reseal_secrets().await.unwrap() >= 2);
    let kept: String =
        raw("SELECT secret FROM webhooks WHERE account_id = ?", acme.into()).await.get("secret").unwrap();
    assert!(seal::is_sealed(&kept));
    assert_eq!(store.webhooks(acme).await.unwrap().unwrap().secret, "whsec_legacy");
    let kept: String =
        raw("SELECT settings FROM connectors WHERE name = ?", name.as_str().into()).await.get("settings").unwrap();
    assert!(!kept.contains("legacy1"), "{kept}");
    assert!(store.delete_connector(&name).await.unwrap());
    // Altered, a sealed value does not open.
    let bogus = "sealed:v1:00112233445566778899aabbccddeeff00112233";
    assert!(seal::open(bogus).is_err());
    // A secret that does not open (sealed under a server secret since lost) stops nobody's callbacks: the claim
    // hands it over empty, and the account is given a new secret.
    let claim = Some(Claim { owner: "n".into(), until: NOW.plus_secs(60) });
    let m = message(acme, "+447700900123", Status::Queued, NOW);
    store.insert_messages(&[NewMessage { claim, ..new(m) }]).await.unwrap();
    store
        .execute("UPDATE webhooks SET secret = ? WHERE account_id = ?", vec![bogus.into(), acme.into()])
        .await
        .unwrap();
    let due = store.claim_callbacks("n", NOW.plus_secs(1), 10_000, 64).await.unwrap();
    let mine: Vec<_> = due.iter().filter(|c| c.account_id == acme).collect();
    assert!(!mine.is_empty() && mine.iter().all(|c| c.secret.is_empty()), "{mine:?}");
    assert_eq!(store.ensure_webhook_secret(acme, "whsec_again", NOW).await.unwrap(), "whsec_again");
    assert_eq!(store.webhooks(acme).await.unwrap().unwrap().secret, "whsec_again");
}

fn contact(account: AccountId, phone: &str, tags: &[&str]) -> smsgate_store::Contact {
    smsgate_store::Contact {
        id: MessageId::generate().to_string(),
        account_id: account,
        phone: phone.into(),
        phone_hash: format!("hash-{phone}"),
        name: Some(format!("name {phone}")),
        email: None,
        time_zone: None,
        fields: serde_json::from_value(serde_json::json!({"plan": "gold"})).unwrap(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        created_at: NOW,
        updated_at: NOW,
        last_activity_at: None,
    }
}

async fn contacts_tags_lists_and_segments(store: &Arc<dyn Store>) {
    use smsgate_store::{ContactList, ContactQuery};
    let (acme, globex) = (account(store).await, account(store).await);
    let ann = contact(acme, "+15550000001", &["vip", "new"]);
    assert!(store.insert_contact(&ann).await.unwrap());
    assert!(!store.insert_contact(&contact(acme, "+15550000001", &[])).await.unwrap(), "one per number");
    assert!(store.insert_contact(&contact(globex, "+15550000001", &[])).await.unwrap(), "per account");
    let bob = contact(acme, "+15550000002", &["vip"]);
    assert!(store.insert_contact(&bob).await.unwrap());
    let got = store.contact(acme, &ann.id).await.unwrap().unwrap();
    assert_eq!((got.tags, got.fields["plan"].as_str()), (vec!["vip".to_string(), "new".to_string()], Some("gold")));
    assert!(store.contact(globex, &ann.id).await.unwrap().is_none(), "another account's contact");
    let vip = ContactQuery { tags: vec!["vip".into()], ..ContactQuery::default() };
    assert_eq!(store.count_contacts(acme, &vip).await.unwrap(), 2);
    let new_ones = ContactQuery { tags: vec!["vip".into(), "new".into()], ..ContactQuery::default() };
    assert_eq!(store.contacts(acme, &new_ones, None, 10).await.unwrap().len(), 1);
    let by_text = ContactQuery { q: Some("0002".into()), ..ContactQuery::default() };
    assert_eq!(store.contacts(acme, &by_text, None, 10).await.unwrap()[0].id, bob.id);
    let wild = ContactQuery { q: Some("%".into()), ..ContactQuery::default() };
    assert!(store.contacts(acme, &wild, None, 10).await.unwrap().is_empty(), "% is a character, not a wildcard");
    // Pages by id.
    let first = store.contacts(acme, &ContactQuery::default(), None, 1).await.unwrap();
    let second = store.contacts(acme, &ContactQuery::default(), Some(&first[0].id), 1).await.unwrap();
    assert_ne!(first[0].id, second[0].id);
    // Tags replaced by an update.
    let mut changed = got_again(store, acme, &ann.id).await;
    changed.tags = vec!["gone".into()];
    assert!(store.update_contact(&changed).await.unwrap());
    assert_eq!(store.count_contacts(acme, &vip).await.unwrap(), 1);
    // Lists.
    let list = ContactList { id: "l1".into(), account_id: acme, name: "Patients".into(), created_at: NOW, members: 0 };
    assert!(store.insert_list(&list).await.unwrap());
    assert!(!store.insert_list(&ContactList { id: "l2".into(), ..list.clone() }).await.unwrap(), "one name");
    assert_eq!(store.add_members("l1", &[ann.id.clone(), bob.id.clone()], NOW).await.unwrap(), 2);
    assert_eq!(store.add_members("l1", std::slice::from_ref(&ann.id), NOW).await.unwrap(), 0, "a member once");
    assert_eq!(store.list(acme, "l1").await.unwrap().unwrap().members, 2);
    assert!(store.list(globex, "l1").await.unwrap().is_none());
    store.record_consent(&consent_event(acme, &bob.phone_hash, "", true, 1)).await.unwrap();
    store.record_consent(&consent_event(globex, &ann.phone_hash, "", true, 1)).await.unwrap();
    let (mut members, opted) = store.memberships_and_opt_outs(acme, &[ann.clone(), bob.clone()]).await.unwrap();
    members.sort();
    let mut expected = vec![(ann.id.clone(), "l1".to_string()), (bob.id.clone(), "l1".to_string())];
    expected.sort();
    assert_eq!(members, expected);
    assert!(opted.len() == 1 && opted.contains(&bob.phone_hash), "this account's opt-outs only: {opted:?}");
    let members = ContactQuery { lists: vec!["l1".into()], ..ContactQuery::default() };
    assert_eq!(store.count_contacts(acme, &members).await.unwrap(), 2);
    let outside = ContactQuery { not_lists: vec!["l1".into()], ..ContactQuery::default() };
    assert_eq!(store.count_contacts(acme, &outside).await.unwrap(), 0);
    assert!(store.remove_member("l1", &bob.id).await.unwrap());
    assert!(!store.remove_member("l1", &bob.id).await.unwrap());
    assert_eq!(store.list(acme, "l1").await.unwrap().unwrap().members, 1, "the count is kept as members leave");
    assert_eq!(store.lists(acme).await.unwrap()[0].members, 1);
    assert_eq!(store.lists_of(&ann.id).await.unwrap(), ["l1"]);
    // Activity.
    store.touch_contact(acme, &ann.phone, Timestamp(5_000)).await.unwrap();
    let active = ContactQuery { active_since: Some(Timestamp(4_000)), ..ContactQuery::default() };
    assert_eq!(store.contacts(acme, &active, None, 10).await.unwrap()[0].id, ann.id);
    let quiet = ContactQuery { inactive_since: Some(Timestamp(4_000)), ..ContactQuery::default() };
    assert_eq!(store.contacts(acme, &quiet, None, 10).await.unwrap()[0].id, bob.id);
    // Deleting a contact takes its memberships and tags with it; a list's deletion leaves its contacts.
    assert!(store.delete_contact(acme, &ann.id).await.unwrap());
    assert!(!store.delete_contact(globex, &bob.id).await.unwrap(), "another account's");
    assert_eq!(store.list(acme, "l1").await.unwrap().unwrap().members, 0);
    assert!(store.delete_list(acme, "l1").await.unwrap());
    assert!(store.contact(acme, &bob.id).await.unwrap().is_some());
    // Segments.
    let seg = smsgate_store::Segment {
        id: "s1".into(),
        account_id: acme,
        name: "VIP".into(),
        filter: "{}".into(),
        created_at: NOW,
        updated_at: NOW,
    };
    store.insert_segment(&seg).await.unwrap();
    assert_eq!(store.segments(acme).await.unwrap().len(), 1);
    assert!(store.segment(globex, "s1").await.unwrap().is_none());
    assert!(!store.delete_segment(globex, "s1").await.unwrap());
    assert!(store.delete_segment(acme, "s1").await.unwrap());
}

async fn got_again(store: &Arc<dyn Store>, account: AccountId, id: &str) -> smsgate_store::Contact {
    store.contact(account, id).await.unwrap().unwrap()
}

fn consent_event(account: AccountId, hash: &str, scope: &str, out: bool, at: i64) -> smsgate_store::ConsentEvent {
    smsgate_store::ConsentEvent {
        id: MessageId::generate().to_string(),
        account_id: account,
        phone_hash: hash.into(),
        phone: Some("+15550000009".into()),
        scope: scope.into(),
        opted_out: out,
        source: smsgate_core::consent::Source::Keyword,
        evidence: "{\"text\": \"STOP\"}".into(),
        at: Timestamp(at),
    }
}

async fn consent_is_a_ledger_and_a_state(store: &Arc<dyn Store>) {
    let (acme, globex) = (account(store).await, account(store).await);
    assert!(store.record_consent(&consent_event(acme, "h9", "", true, 1_000)).await.unwrap(), "opted out");
    assert!(!store.record_consent(&consent_event(acme, "h9", "", true, 2_000)).await.unwrap(), "already");
    assert!(store.record_consent(&consent_event(acme, "h9", "447700900900", true, 3_000)).await.unwrap());
    let mut scopes = store.opt_out_scopes(acme, "h9").await.unwrap();
    scopes.sort();
    assert_eq!(scopes, ["", "447700900900"]);
    assert!(store.opt_out_scopes(globex, "h9").await.unwrap().is_empty(), "another account's");
    assert_eq!(store.consent_events(acme, "h9").await.unwrap().len(), 3, "every request is in the ledger");
    assert!(!store.record_consent(&consent_event(acme, "h9", "*", false, 500)).await.unwrap(), "an older opt-in");
    assert_eq!(store.opt_out_scopes(acme, "h9").await.unwrap().len(), 2);
    let mut changed = store.consent_changed_since(Timestamp(2_500)).await.unwrap();
    changed[0].2.sort();
    assert_eq!(changed, [(acme, "h9".to_string(), vec![String::new(), "447700900900".to_string()])]);
    // An opt-in in one scope, then in all.
    assert!(store.record_consent(&consent_event(acme, "h9", "", false, 4_000)).await.unwrap());
    assert_eq!(store.opt_out_scopes(acme, "h9").await.unwrap(), ["447700900900"]);
    assert!(store.record_consent(&consent_event(acme, "h9", "*", false, 5_000)).await.unwrap());
    assert!(store.opt_out_scopes(acme, "h9").await.unwrap().is_empty());
    // A change made before the latest (answered late) is kept in the ledger and changes nothing.
    assert!(!store.record_consent(&consent_event(acme, "h9", "", true, 4_900)).await.unwrap());
    assert!(store.opt_out_scopes(acme, "h9").await.unwrap().is_empty());
    assert_eq!(store.consent_changed_since(Timestamp(4_500)).await.unwrap(), [(acme, "h9".to_string(), Vec::new())]);
    // Listed newest first, in pages; forgotten numbers stay as hashes.
    for (i, hash) in ["a", "b", "c"].into_iter().enumerate() {
        store.record_consent(&consent_event(acme, hash, "", true, 10_000 + i as i64)).await.unwrap();
    }
    let page = store.opt_outs(acme, None, 2).await.unwrap();
    assert_eq!(page.iter().map(|o| o.phone_hash.as_str()).collect::<Vec<_>>(), ["c", "b"]);
    let last = page.last().unwrap();
    let rest = store.opt_outs(acme, Some((last.at, last.phone_hash.clone())), 2).await.unwrap();
    assert_eq!(rest.iter().map(|o| o.phone_hash.as_str()).collect::<Vec<_>>(), ["a"]);
    store.forget_phone(acme, "a").await.unwrap();
    assert_eq!(store.opt_outs(acme, None, 10).await.unwrap()[2].phone, None);
    assert!(store.consent_events(acme, "a").await.unwrap().iter().all(|e| e.phone.is_none()));
    assert_eq!(store.opt_out_scopes(acme, "a").await.unwrap(), [""], "the opt-out holds by its hash");
    assert_eq!(store.all_opt_outs().await.unwrap().len(), 3);
    // Settings.
    assert_eq!(store.compliance(acme).await.unwrap(), None);
    assert!(store.set_compliance(acme, "{\"retention_days\": 30}").await.unwrap());
    assert_eq!(store.all_compliance().await.unwrap(), [(acme, "{\"retention_days\": 30}".to_string())]);
}

async fn imports_commit_with_their_progress(store: &Arc<dyn Store>) {
    use smsgate_store::{ImportBatch, Job};
    let (acme, globex) = (account(store).await, account(store).await);
    let job = Job {
        id: "job-1".into(),
        account_id: acme,
        kind: "import".into(),
        state: "running".into(),
        spec: "{}".into(),
        rows: 0,
        created: 0,
        updated: 0,
        skipped: 0,
        next_offset: 10,
        errors: "[]".into(),
        created_at: NOW,
        updated_at: NOW,
    };
    store.insert_job(&job).await.unwrap();
    assert!(store.job(globex, "job-1").await.unwrap().is_none(), "another account's job");
    let list = smsgate_store::ContactList {
        id: "l1".into(),
        account_id: acme,
        name: "Imported".into(),
        created_at: NOW,
        members: 0,
    };
    store.insert_list(&list).await.unwrap();
    assert!(store.insert_contact(&contact(acme, "+15550000001", &[])).await.unwrap());
    let batch = ImportBatch {
        contacts: vec![contact(acme, "+15550000001", &["x"]), contact(acme, "+15550000002", &["x"])],
        update: true,
        list: Some("l1".into()),
        consent: vec![consent_event(acme, "h1", "*", false, 1)],
    };
    let progress = Job { rows: 2, next_offset: 99, ..job.clone() };
    let saved = store.import_batch(&progress, &batch).await.unwrap();
    assert_eq!((saved.created, saved.updated, saved.skipped), (1, 1, 0));
    let read = store.job(acme, "job-1").await.unwrap().unwrap();
    assert_eq!((read.rows, read.created, read.updated, read.next_offset), (2, 1, 1, 99));
    assert_eq!(store.list(acme, "l1").await.unwrap().unwrap().members, 2);
    assert_eq!(store.consent_events(acme, "h1").await.unwrap().len(), 1);
    // An import's consent never lifts an opt-out, and the ledger keeps none for that number.
    store.record_consent(&consent_event(acme, "h2", "", true, 1)).await.unwrap();
    let read = store
        .import_batch(
            &read,
            &ImportBatch { consent: vec![consent_event(acme, "h2", "*", false, 2)], ..ImportBatch::default() },
        )
        .await
        .unwrap();
    assert_eq!(store.opt_out_scopes(acme, "h2").await.unwrap(), [""]);
    assert_eq!(store.consent_events(acme, "h2").await.unwrap().len(), 1, "the opt-out alone");
    // An update keeps the fields and tags the row does not name.
    let mut row = contact(acme, "+15550000001", &["y"]);
    row.fields = serde_json::from_value(serde_json::json!({"visits": 2})).unwrap();
    row.name = None;
    let more = ImportBatch { contacts: vec![row], update: true, list: None, consent: Vec::new() };
    let read = store.import_batch(&read, &more).await.unwrap();
    let merged = store.contact_by_phone(acme, "+15550000001").await.unwrap().unwrap();
    assert_eq!(merged.tags, ["x", "y"]);
    assert_eq!((merged.fields["plan"].as_str(), merged.fields["visits"].as_i64()), (Some("gold"), Some(2)));
    assert_eq!(merged.name.as_deref(), Some("name +15550000001"));
    let tagged = smsgate_store::ContactQuery { tags: vec!["y".into()], ..Default::default() };
    assert_eq!(store.count_contacts(acme, &tagged).await.unwrap(), 1);
    // Left alone when not updating: counted as skipped.
    let again = ImportBatch { update: false, list: None, consent: Vec::new(), ..batch };
    let saved = store.import_batch(&read, &again).await.unwrap();
    assert_eq!((saved.created, saved.updated, saved.skipped), (1, 2, 2));
    assert_eq!(store.running_jobs().await.unwrap().len(), 1);
    store.save_job(&Job { state: "completed".into(), ..saved }).await.unwrap();
    assert!(store.running_jobs().await.unwrap().is_empty());
}

async fn erasure_and_retention_keep_counts(store: &Arc<dyn Store>) {
    let (acme, globex) = (account(store).await, account(store).await);
    // Ids made at the times the messages say, as the engine makes them.
    let at = |account, to: &str, status, ms| {
        let mut m = message(account, to, status, Timestamp(ms));
        m.id = MessageId::first_at(Timestamp(ms));
        m
    };
    let out = insert(store, at(acme, "+15550000001", Status::Delivered, 1_000)).await;
    let mut reply = at(acme, "+15550000099", Status::Received, 2_000);
    (reply.direction, reply.from, reply.body) = (Direction::Inbound, "+15550000001".into(), "STOP".into());
    let reply = insert(store, reply).await;
    let theirs = insert(store, at(globex, "+15550000001", Status::Delivered, 1_500)).await;
    assert_eq!(store.anonymize_messages(acme, "+15550000001", "erased:abc").await.unwrap(), 2);
    let m = store.message(acme, out).await.unwrap().unwrap();
    assert_eq!((m.to.as_str(), m.body.as_str(), m.segments, m.status), ("erased:abc", "", 1, Status::Delivered));
    let r = store.message(acme, reply).await.unwrap().unwrap();
    assert_eq!((r.from.as_str(), r.body.as_str()), ("erased:abc", ""));
    assert_eq!(store.message(globex, theirs).await.unwrap().unwrap().body, "Hello", "another account's");
    // Retention: final messages older than the cut lose body and number, walked a window at a time by id; waiting
    // ones stay, and a window goes on after the last.
    for i in 0..5 {
        insert(store, at(acme, &format!("+1555000010{i}"), Status::Delivered, 3_000 + i)).await;
    }
    let waiting = insert(store, at(acme, "+15550000200", Status::Queued, 3_100)).await;
    let fresh = insert(store, at(acme, "+15550000201", Status::Delivered, 90_000)).await;
    let cut = Timestamp(50_000);
    let (mut total, mut after, mut windows) = (0, None, 0);
    loop {
        let (n, last) = store.purge_messages(acme, Direction::Outbound, cut, after, 3).await.unwrap();
        let Some(last) = last else { break };
        (total, after, windows) = (total + n, Some(last), windows + 1);
    }
    // The erased one (already anonymized, not purged yet) and the five; not the waiting or the fresh one.
    assert_eq!((total, windows), (6, 3));
    let (n, last) = store.purge_messages(acme, Direction::Outbound, cut, None, 100).await.unwrap();
    assert_eq!((n, last.is_some()), (0, true), "purged once");
    let (n, _) = store.purge_messages(acme, Direction::Inbound, cut, None, 100).await.unwrap();
    assert_eq!(n, 1, "the inbound reply");
    assert_eq!(store.message(acme, waiting).await.unwrap().unwrap().body, "Hello");
    assert_eq!(store.message(acme, fresh).await.unwrap().unwrap().body, "Hello");
    let page = store.list_messages(acme, &ListFilter::default(), None, 100).await.unwrap();
    assert_eq!(page.len(), 9, "counts are kept");
    assert!(
        page.iter()
            .filter(|m| m.body.is_empty())
            .all(|m| m.to == "purged" || m.from == "purged" || m.to.starts_with("erased:"))
    );
}

async fn templates_per_account(store: &Arc<dyn Store>) {
    use smsgate_store::Template;
    let (acme, globex) = (account(store).await, account(store).await);
    let t = Template {
        id: "t1".into(),
        account_id: acme,
        name: "reminder".into(),
        body: "Hi {{ name }}".into(),
        category: smsgate_core::consent::Category::Marketing,
        created_at: NOW,
        updated_at: NOW,
    };
    assert!(store.insert_template(&t).await.unwrap());
    assert!(!store.insert_template(&Template { id: "t2".into(), ..t.clone() }).await.unwrap(), "one name");
    assert!(store.insert_template(&Template { id: "t3".into(), account_id: globex, ..t.clone() }).await.unwrap());
    assert_eq!(store.template(acme, "t1").await.unwrap(), Some(t.clone()));
    assert!(store.template(globex, "t1").await.unwrap().is_none(), "another account's");
    let other = Template { id: "t4".into(), name: "other".into(), ..t.clone() };
    assert!(store.insert_template(&other).await.unwrap());
    assert_eq!(
        store.update_template(&Template { name: "reminder".into(), ..other.clone() }).await.unwrap(),
        Some(false)
    );
    assert_eq!(store.update_template(&Template { body: "Bye".into(), ..t.clone() }).await.unwrap(), Some(true));
    assert_eq!(
        store
            .update_template(&Template { account_id: globex, id: "t1".into(), name: "x".into(), ..t.clone() })
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.templates(acme).await.unwrap().iter().map(|t| t.body.as_str()).collect::<Vec<_>>(),
        ["Hi {{ name }}", "Bye"]
    );
    assert!(!store.delete_template(globex, "t1").await.unwrap());
    assert!(store.delete_template(acme, "t1").await.unwrap());
}

async fn campaign_runs_and_recipients(store: &Arc<dyn Store>) {
    use smsgate_store::{Campaign, Recipient, Run};
    let (acme, globex) = (account(store).await, account(store).await);
    let c = Campaign {
        id: "c1".into(),
        account_id: acme,
        name: "December".into(),
        spec: "{}".into(),
        state: "draft".into(),
        next_run_at: None,
        error: None,
        current_run: None,
        created_at: NOW,
        updated_at: NOW,
    };
    store.insert_campaign(&c).await.unwrap();
    assert!(store.campaign(globex, "c1").await.unwrap().is_none(), "another account's");
    assert_eq!(store.campaigns(acme, None, 10).await.unwrap(), vec![c.clone()]);
    assert!(store.campaigns(globex, None, 10).await.unwrap().is_empty());
    let run = |id: &str| Run::new(id.to_string(), &c, NOW);
    // Two starts of one draft: one run.
    let running = Campaign { state: "running".into(), ..c.clone() };
    let (r1, r2) = (run("r1"), run("r2"));
    let (a, b) = tokio::join!(store.start_run(&running, "draft", &r1), store.start_run(&running, "draft", &r2));
    assert!(a.unwrap() ^ b.unwrap(), "exactly one start wins");
    let runs = store.runs("c1").await.unwrap();
    assert_eq!(runs.len(), 1);
    let r = runs[0].clone();
    let got = store.campaign(acme, "c1").await.unwrap().unwrap();
    assert_eq!((got.state.as_str(), got.current_run.as_deref()), ("running", Some(r.id.as_str())));
    assert_eq!(store.active_runs().await.unwrap().len(), 1);
    // Leases: one node at a time, another once it runs out.
    assert!(store.lease_run(&r.id, "n1", NOW, Timestamp(NOW.0 + 1000)).await.unwrap());
    assert!(!store.lease_run(&r.id, "n2", NOW, Timestamp(NOW.0 + 1000)).await.unwrap());
    assert!(store.lease_run(&r.id, "n1", NOW, Timestamp(NOW.0 + 2000)).await.unwrap(), "renewed");
    assert!(store.lease_run(&r.id, "n2", Timestamp(NOW.0 + 2001), Timestamp(NOW.0 + 5000)).await.unwrap());
    // Recipients: a contact named twice is one recipient and one duplicate, with the progress saved.
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let r = store
        .add_recipients(&Run { source: 1, source_cursor: Some("b".into()), ..r }, &ids(&["a", "b"]))
        .await
        .unwrap();
    let r = store.add_recipients(&Run { materialized: true, ..r }, &ids(&["b", "c"])).await.unwrap();
    assert_eq!((r.next_seq, r.duplicates, r.materialized, r.source), (4, 1, true, 1), "{r:?}");
    let pending = store.recipients(&r.id, &["pending"], -1, 10).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.contact_id.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c"]);
    let settled = vec![
        Recipient {
            state: "queued".into(),
            message_id: Some("m1".into()),
            sender: Some("+1".into()),
            ..pending[0].clone()
        },
        Recipient { state: "skipped".into(), reason: Some("opted_out".into()), ..pending[1].clone() },
    ];
    store.settle_recipients(&r.id, &settled).await.unwrap();
    let left = store.recipients(&r.id, &["pending"], -1, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    let queued = store.recipients(&r.id, &["queued"], -1, 10).await.unwrap();
    assert_eq!((queued[0].message_id.as_deref(), queued[0].sender.as_deref()), (Some("m1"), Some("+1")));
    assert_eq!(store.move_recipients(&r.id, "pending", "canceled", Some("campaign_canceled")).await.unwrap(), 1);
    let counts = store.recipient_counts("c1", None).await.unwrap();
    let flat: Vec<(String, Option<String>, u64)> = counts.into_iter().map(|c| (c.state, c.reason, c.count)).collect();
    assert_eq!(
        flat,
        vec![
            ("canceled".into(), Some("campaign_canceled".into()), 1),
            ("queued".into(), None, 1),
            ("skipped".into(), Some("opted_out".into()), 1)
        ]
    );
    assert_eq!(store.recipient_counts("c1", Some(&r.id)).await.unwrap().len(), 3);
    // Messages made for the campaign are counted by status, with their cost.
    let mut m = message(acme, "+447700900123", Status::Queued, NOW);
    m.price_micros = Some(20_000);
    let new = smsgate_store::NewMessage {
        origin: smsgate_store::Origin { campaign: Some("c1".into()), automation: None },
        ..smsgate_store::NewMessage::new(m, "accepted")
    };
    store.insert_messages(&[new]).await.unwrap();
    insert(store, message(acme, "+447700900124", Status::Queued, NOW)).await;
    let counts = store.campaign_messages("c1").await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].status, counts[0].count, counts[0].price_micros), (Status::Queued, 1, 20_000));
    // Saved with its campaign; finished runs are not active; a scheduled campaign is due at its time.
    let done = Run { state: "completed".into(), finished_at: Some(NOW), ..r };
    let scheduled = Campaign { state: "scheduled".into(), next_run_at: Some(Timestamp(NOW.0 + 60_000)), ..got };
    store.save_run(&done, Some(&scheduled)).await.unwrap();
    assert!(store.active_runs().await.unwrap().is_empty());
    assert!(store.due_campaigns(NOW, 10).await.unwrap().is_empty());
    assert_eq!(store.due_campaigns(Timestamp(NOW.0 + 60_000), 10).await.unwrap().len(), 1);
    assert!(!store.save_campaign(&scheduled, "draft").await.unwrap(), "not in the state expected");
    assert!(!store.delete_campaign(globex, "c1").await.unwrap());
    assert!(store.delete_campaign(acme, "c1").await.unwrap());
    assert!(store.runs("c1").await.unwrap().is_empty());
}

async fn automation_runs_once_per_trigger(store: &Arc<dyn Store>) {
    use smsgate_store::{Automation, AutomationRun, EventRecord, PayloadCallback, Share};
    let (acme, globex) = (account(store).await, account(store).await);
    let a = Automation {
        id: "a1".into(),
        account_id: acme,
        name: "Reminder".into(),
        spec: "{}".into(),
        trigger_type: "date_field".into(),
        enabled: true,
        next_run_at: None,
        cursor: None,
        created_at: NOW,
        updated_at: NOW,
    };
    store.insert_automation(&a).await.unwrap();
    assert!(store.automation(globex, "a1").await.unwrap().is_none(), "another account's");
    assert_eq!(store.enabled_automations(acme).await.unwrap(), vec![a.clone()]);
    assert_eq!(store.enabled_automations_of("date_field").await.unwrap().len(), 1);
    assert!(store.enabled_automations_of("keyword").await.unwrap().is_empty());
    // A schedule's firing moves on once: the second caller finds it moved.
    let scheduled = Automation { next_run_at: Some(NOW), ..a.clone() };
    assert!(store.save_automation(&scheduled).await.unwrap());
    assert_eq!(store.due_automations(NOW, 10).await.unwrap().len(), 1);
    assert!(store.advance_automation("a1", NOW, Some(NOW.plus_secs(60))).await.unwrap());
    assert!(!store.advance_automation("a1", NOW, Some(NOW.plus_secs(60))).await.unwrap());
    assert!(store.due_automations(NOW, 10).await.unwrap().is_empty());

    let run = |id: &str, key: &str, due: i64| AutomationRun {
        id: id.into(),
        automation_id: "a1".into(),
        account_id: acme,
        contact_id: "c1".into(),
        trigger_key: key.into(),
        subject: "A1".into(),
        state: "active".into(),
        position: "0".into(),
        due_at: Some(NOW.plus_secs(due)),
        reply_from: None,
        reply_to: None,
        data: "{}".into(),
        reply: None,
        log: "[]".into(),
        error: None,
        lease_owner: None,
        lease_until: None,
        created_at: NOW,
        updated_at: NOW,
    };
    // One run per trigger key, however often it comes.
    let new = store.insert_automation_runs(&[run("r1", "event:k1", 0), run("r2", "event:k1", 0)]).await.unwrap();
    assert_eq!(new, vec![true, false]);
    assert_eq!(store.insert_automation_runs(&[run("r3", "event:k2", 60)]).await.unwrap(), vec![true]);
    assert_eq!(store.open_runs("a1", "c1", "A1").await.unwrap().len(), 2);
    let due = store.due_automation_runs(NOW, 10).await.unwrap();
    assert_eq!(due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r1"]);
    // Leases: one node at a time; a leased run is not due to another.
    assert!(store.lease_automation_run("r1", "n1", NOW, NOW.plus_secs(30)).await.unwrap());
    assert!(!store.lease_automation_run("r1", "n2", NOW, NOW.plus_secs(30)).await.unwrap());
    assert!(store.due_automation_runs(NOW, 10).await.unwrap().is_empty());
    // Saved only from the state it was read in: a run canceled meanwhile stays canceled.
    let mut r1 = store.automation_run("r1").await.unwrap().unwrap();
    r1.state = "waiting".into();
    r1.reply_from = Some("+15550000001".into());
    r1.due_at = Some(NOW.plus_secs(3600));
    assert!(store.save_automation_run(&r1, "active").await.unwrap());
    assert!(!store.save_automation_run(&r1, "active").await.unwrap(), "no longer active");
    let got = store.automation_run("r1").await.unwrap().unwrap();
    assert_eq!((got.state.as_str(), got.lease_owner.as_deref()), ("waiting", None), "the lease freed");
    assert_eq!(store.runs_awaiting_reply(acme, "+15550000001").await.unwrap().len(), 1);
    assert!(store.runs_awaiting_reply(globex, "+15550000001").await.unwrap().is_empty());
    let mut counts = store.automation_run_counts("a1").await.unwrap();
    counts.sort();
    assert_eq!(counts, vec![("active".to_string(), 1), ("waiting".to_string(), 1)]);
    assert_eq!(store.automation_runs("a1", Some("c1"), None, 10).await.unwrap().len(), 2);
    assert_eq!(store.automation_runs("a1", Some("c2"), None, 10).await.unwrap().len(), 0);

    // Events: one per idempotency key and account.
    let event = |id: &str, account| EventRecord {
        id: id.into(),
        account_id: account,
        name: "appointment.booked".into(),
        contact_id: "c1".into(),
        data: "{}".into(),
        idempotency_key: "k1".into(),
        outcome: "{}".into(),
        created_at: NOW,
    };
    assert_eq!(store.insert_event(&event("e1", acme)).await.unwrap().id, "e1");
    assert_eq!(store.insert_event(&event("e2", acme)).await.unwrap().id, "e1", "the first with the key");
    assert_eq!(store.insert_event(&event("e3", globex)).await.unwrap().id, "e3", "keys are per account");
    store.set_event_outcome("e1", "{\"started\":[\"r1\"]}").await.unwrap();
    assert_eq!(store.insert_event(&event("e4", acme)).await.unwrap().outcome, "{\"started\":[\"r1\"]}");

    // Inbound messages are read once; outbound ones never.
    let mut inbound = message(acme, "+15550000099", Status::Received, NOW);
    (inbound.direction, inbound.from, inbound.body) = (Direction::Inbound, "+15550000001".into(), "JOIN".into());
    let inbound = insert(store, inbound).await;
    insert(store, message(acme, "+15550000001", Status::Queued, NOW)).await;
    let unread = store.unautomated_inbound(10).await.unwrap();
    assert_eq!(unread.iter().map(|t| (t.id, t.body.as_str())).collect::<Vec<_>>(), [(inbound, "JOIN")]);
    store.mark_automated(&[inbound], NOW).await.unwrap();
    assert!(store.unautomated_inbound(10).await.unwrap().is_empty());

    // Contacts by when they changed, from a cursor, up to a time.
    let mut older = contact(acme, "+15550000001", &[]);
    older.updated_at = NOW.plus_secs(1);
    let mut newer = contact(acme, "+15550000002", &[]);
    newer.updated_at = NOW.plus_secs(2);
    let mut theirs = contact(globex, "+15550000003", &[]);
    theirs.updated_at = NOW.plus_secs(1);
    for c in [&older, &newer, &theirs] {
        store.insert_contact(c).await.unwrap();
    }
    let changed = |after, until| async move {
        let got = store.changed_contacts(acme, after, until, 10).await.unwrap();
        got.into_iter().map(|c| c.phone).collect::<Vec<_>>()
    };
    assert_eq!(changed((NOW, ""), NOW.plus_secs(5)).await, ["+15550000001", "+15550000002"]);
    assert_eq!(changed((older.updated_at, older.id.as_str()), NOW.plus_secs(5)).await, ["+15550000002"]);
    assert_eq!(changed((NOW, ""), NOW.plus_secs(1)).await, ["+15550000001"], "not past until");

    // A webhook step's callback carries its own body, queued once per id.
    let callback = PayloadCallback {
        id: "r1:2".into(),
        account_id: acme,
        key: MessageId::generate(),
        seq: 2,
        url: "http://127.0.0.1:9/hook".into(),
        payload: "{\"type\":\"automation.step\"}".into(),
    };
    store.enqueue_payload(&callback, NOW).await.unwrap();
    store.enqueue_payload(&callback, NOW).await.unwrap();
    let share = Share { per_account: 8, skip: Vec::new() };
    let due = store.claim_callbacks_fairly("n", NOW.plus_secs(1), 10_000, 8, &share).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!((due[0].payload.as_deref(), due[0].message.is_none()), (Some(callback.payload.as_str()), true));

    assert!(!store.delete_automation(globex, "a1").await.unwrap(), "another account's");
    assert!(store.delete_automation(acme, "a1").await.unwrap());
    assert!(store.automation_run("r1").await.unwrap().is_none(), "its runs with it");
}

async fn conversations_thread_both_ways(store: &Arc<dyn Store>) {
    use smsgate_store::{Conversation, Span};
    let (acme, globex) = (account(store).await, account(store).await);
    let (handset, ours) = ("+15550000001", "+15550000099");
    let at = |ms: i64| NOW.plus_millis(ms);
    // Messages both ways, each with an id of its time; one to another handset, one of another account.
    let mut ids = Vec::new();
    for (i, inbound) in [true, false, true, false].into_iter().enumerate() {
        let ms = i64::try_from(i).unwrap() * 1000;
        let mut m = message(acme, handset, if inbound { Status::Received } else { Status::Queued }, at(ms));
        m.id = MessageId::first_at(at(ms));
        m.from = ours.into();
        if inbound {
            (m.direction, m.from, m.to) = (Direction::Inbound, handset.into(), ours.into());
        }
        ids.push(insert(store, m).await);
    }
    let mut elsewhere = message(acme, "+15550000002", Status::Queued, at(500));
    elsewhere.from = ours.into();
    insert(store, elsewhere).await;
    let mut theirs = message(globex, handset, Status::Queued, at(600));
    theirs.from = ours.into();
    insert(store, theirs).await;

    let c = Conversation {
        id: "k1".into(),
        account_id: acme,
        handset: handset.into(),
        address: ours.into(),
        last_activity_at: at(3000),
        read_through: None,
        created_at: at(0),
    };
    let filed = store.file_conversation(&c).await.unwrap();
    assert_eq!(filed, c);
    // Filed again (an older message read late) it keeps its id and its later activity.
    let again = store.file_conversation(&Conversation { id: "k2".into(), last_activity_at: at(1), ..c.clone() }).await;
    assert_eq!(again.unwrap(), c);
    assert!(store.touch_conversation(acme, handset, ours, at(5000)).await.unwrap());
    assert!(!store.touch_conversation(globex, handset, ours, at(5000)).await.unwrap(), "none of Globex's");
    let c = store.conversation(acme, "k1").await.unwrap().unwrap();
    assert_eq!(c.last_activity_at, at(5000));
    assert!(store.conversation(globex, "k1").await.unwrap().is_none());

    let c_ref = &c;
    let page = |span, n| async move {
        let got = store.conversation_messages(c_ref, span, n).await.unwrap();
        got.into_iter().map(|m| m.message.id).collect::<Vec<_>>()
    };
    assert_eq!(page(Span::Latest, 10).await, ids, "both ways, in order, none of another handset or account");
    assert_eq!(page(Span::Latest, 2).await, ids[2..]);
    assert_eq!(page(Span::Before(ids[2]), 10).await, ids[..2]);
    assert_eq!(page(Span::After(ids[0]), 2).await, ids[1..3]);
    assert_eq!(store.unread(&c, 100).await.unwrap(), 2);
    assert_eq!(store.unread(&c, 1).await.unwrap(), 1, "counted to the cap");
    store.mark_read(&c, ids[2]).await.unwrap();
    let read = store.conversation(acme, "k1").await.unwrap().unwrap();
    assert_eq!((read.read_through, store.unread(&read, 100).await.unwrap()), (Some(ids[2]), 0));
    store.mark_read(&c, ids[0]).await.unwrap();
    assert_eq!(store.conversation(acme, "k1").await.unwrap().unwrap().read_through, Some(ids[2]), "never back");

    // Newest activity first, by pages.
    let other =
        Conversation { id: "k3".into(), handset: "+15550000002".into(), last_activity_at: at(4000), ..c.clone() };
    store.file_conversation(&other).await.unwrap();
    let list = store.conversations(acme, None, 10).await.unwrap();
    assert_eq!(list.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["k1", "k3"]);
    let next = store.conversations(acme, Some((at(5000), "k1")), 10).await.unwrap();
    assert_eq!(next.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["k3"]);
    assert!(store.conversations(globex, None, 10).await.unwrap().is_empty());

    assert_eq!(store.purge_conversations(acme, at(4500)).await.unwrap(), 1, "quiet since");
    assert_eq!(store.forget_conversations(acme, handset).await.unwrap(), 1);
    assert!(store.conversations(acme, None, 10).await.unwrap().is_empty());
}

async fn rollups_count_what_the_messages_did(store: &Arc<dyn Store>) {
    use smsgate_store::{Grouping, Rollups};
    let (acme, globex) = (account(store).await, account(store).await);
    let none = Changes::default();
    // Two texts sent (priced) and delivered, one failed, one of Globex's; a reply.
    let mut ids = Vec::new();
    for (account, to) in
        [(acme, "+447700900123"), (acme, "+12125550123"), (acme, "+447700900124"), (globex, "+447700900125")]
    {
        ids.push(insert(store, message(account, to, Status::Queued, NOW)).await);
    }
    store.claim_due("n", NOW, 60_000, 10).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        if i == 2 {
            assert!(store.transition(*id, Status::Failed, NOW.plus_secs(1), "refused", &none).await.unwrap());
            continue;
        }
        let sent = Changes {
            connector: Some("sim".into()),
            carrier_id: Some(format!("R{i}")),
            price_micros: Some(20_000),
            ..Default::default()
        };
        assert!(store.transition(*id, Status::Sent, NOW.plus_secs(1), "sent", &sent).await.unwrap());
        assert!(store.transition(*id, Status::Delivered, NOW.plus_secs(4), "delivered", &none).await.unwrap());
    }
    let mut reply = message(acme, "+15550000099", Status::Received, NOW.plus_secs(5));
    (reply.direction, reply.from, reply.to) = (Direction::Inbound, "+447700900123".into(), "Acme".into());
    insert(store, reply).await;
    // A count from outside the message paths.
    let account_id = acme.to_string();
    let clicked = smsgate_store::rollups::Counted {
        account_id: &account_id,
        inbound: false,
        handset: "+447700900123",
        address: "Acme",
        campaign: None,
        connector: None,
        price_micros: None,
        created_at: NOW,
    };
    let click = smsgate_store::Counters { clicks: 1, ..Default::default() };
    store.add_rollups(&Rollups::of(&clicked, NOW, click)).await.unwrap();

    let sum = |points: &[smsgate_store::Point]| {
        let mut c = smsgate_store::Counters::default();
        for p in points {
            c.add(&p.counts);
        }
        c
    };
    let day = 24 * 3_600_000;
    let read = |group| async move {
        store.rollup_points(acme, NOW.plus_secs(-3600), NOW.plus_secs(3600), day, group).await.unwrap()
    };
    let all = read(Grouping::All).await;
    let c = sum(&all);
    assert_eq!((c.sent, c.delivered, c.failed, c.replies, c.clicks, c.cost_micros), (2, 2, 1, 1, 1, 40_000), "{all:?}");
    assert_eq!(c.latency[2], 2, "delivered 4 s after they were accepted: up to 5 s");
    // Folded, they say the same.
    store.compact_rollups(1000).await.unwrap();
    assert_eq!(sum(&read(Grouping::All).await), c);
    let by_country = read(Grouping::Country).await;
    let of = |g: &str| sum(&by_country.iter().filter(|p| p.group == g).cloned().collect::<Vec<_>>());
    assert_eq!((of("GB").sent, of("US").sent, of("GB").failed, of("GB").clicks), (1, 1, 1, 1), "{by_country:?}");
    let theirs = store.rollup_points(globex, NOW.plus_secs(-3600), NOW.plus_secs(3600), day, Grouping::All).await;
    assert_eq!(sum(&theirs.unwrap()).sent, 1, "Globex's own");
}

async fn history_is_deleted_whole(store: &Arc<dyn Store>) {
    use smsgate_store::Origin;
    let (acme, globex) = (account(store).await, account(store).await);
    store.put_webhooks(acme, Some("http://127.0.0.1:1/status"), None, "s1", NOW).await.unwrap();
    // Ids made at the times the messages say, as the engine makes them.
    let at = |account, to: &str, status, ms: i64| {
        let mut m = message(account, to, status, Timestamp(ms));
        m.id = MessageId::first_at(Timestamp(ms));
        m.price_micros = Some(2_500);
        m
    };
    let for_campaign = |m: Message| NewMessage {
        origin: Origin { campaign: Some("camp-1".into()), automation: None },
        claim: Some(Claim { owner: "n".into(), until: Timestamp(i64::MAX / 2) }),
        ..new(m)
    };
    // An old text of a campaign, delivered: three callbacks (sending, sent, delivered) and a journey.
    let old = at(acme, "+15550000001", Status::Queued, 1_000);
    store.insert_messages(&[for_campaign(old.clone())]).await.unwrap();
    let sent = Changes { carrier_id: Some("h1".into()), connector: Some("sim".into()), ..Changes::default() };
    assert!(store.transition(old.id, Status::Sent, Timestamp(1_001), "sent", &sent).await.unwrap());
    let receipt = ReceiptUpdate {
        connector: "sim".into(),
        carrier_id: "h1".into(),
        to: Status::Delivered,
        at: Timestamp(1_002),
        detail: "DELIVRD".into(),
        error_code: None,
    };
    assert_eq!(store.record(&[], &[receipt]).await.unwrap().1, vec![Some(old.id)]);
    assert_eq!(store.callbacks(acme, old.id).await.unwrap().len(), 3);
    // More old ones: another account's, failed; one still waiting; and one of the campaign's that is recent.
    let failed = insert(store, at(globex, "+15550000002", Status::Failed, 2_000)).await;
    let waiting = insert(store, at(acme, "+15550000003", Status::Queued, 3_000)).await;
    let recent = at(acme, "+15550000004", Status::Delivered, 90_000);
    store.insert_messages(&[NewMessage { claim: None, ..for_campaign(recent.clone()) }]).await.unwrap();
    let before = store.campaign_messages("camp-1").await.unwrap();
    assert_eq!(
        before.iter().map(|c| (c.status, c.count, c.price_micros)).collect::<Vec<_>>(),
        [(Status::Delivered, 2, 5_000)]
    );

    let cut = Timestamp(50_000);
    let (mut total, mut after, mut batches) = (0, None, 0);
    loop {
        let (n, last) = store.delete_history(cut, after, 2).await.unwrap();
        let Some(last) = last else { break };
        (total, after, batches) = (total + n, Some(last), batches + 1);
    }
    assert_eq!((total, batches), (2, 2), "the delivered and the failed, walked two at a time");
    assert_eq!(store.message(acme, old.id).await.unwrap(), None);
    assert_eq!(store.message(globex, failed).await.unwrap(), None);
    assert!(store.callbacks(acme, old.id).await.unwrap().is_empty(), "its callbacks went with it");
    assert_eq!(store.message(acme, waiting).await.unwrap().map(|m| m.status), Some(Status::Queued));
    assert_eq!(store.message(acme, recent.id).await.unwrap().map(|m| m.status), Some(Status::Delivered));
    // The campaign's stats still count the text deleted, and deleting again finds nothing to count twice.
    assert_eq!(store.campaign_messages("camp-1").await.unwrap(), before);
    assert_eq!(store.delete_history(cut, None, 10).await.unwrap().0, 0);
    assert_eq!(store.campaign_messages("camp-1").await.unwrap(), before);

    // Callbacks done are deleted after their span; those still pending stay whatever their age.
    let fresh = at(acme, "+15550000005", Status::Queued, 100_000);
    store
        .insert_messages(&[NewMessage {
            claim: Some(Claim { owner: "n".into(), until: Timestamp(i64::MAX / 2) }),
            ..new(fresh.clone())
        }])
        .await
        .unwrap();
    assert!(store.transition(fresh.id, Status::Sent, Timestamp(100_001), "sent", &Changes::default()).await.unwrap());
    let due: Vec<_> = store
        .claim_callbacks("n", Timestamp(200_000), 10_000, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.message_id == fresh.id)
        .collect();
    assert_eq!(due.len(), 1, "one at a time for a message");
    let attempt = CallbackAttempt { at: Timestamp(200_000), result: "200".into(), ms: 3 };
    store
        .finish_callbacks(&[CallbackResult { id: due[0].id.clone(), attempt, next: CallbackNext::Delivered }])
        .await
        .unwrap();
    // Callback ids are made by the system's clock.
    let later = Timestamp(
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
            + 60_000,
    );
    assert_eq!(store.delete_done_callbacks(Timestamp(100_000), 10).await.unwrap(), 0, "made after the cut");
    assert_eq!(store.delete_done_callbacks(later, 10).await.unwrap(), 1);
    let left = store.callbacks(acme, fresh.id).await.unwrap();
    assert_eq!(left.iter().map(|c| (c.status, c.state.as_str())).collect::<Vec<_>>(), [(Status::Sent, "pending")]);
}

async fn messages_to_a_number_are_chained(store: &Arc<dyn Store>) {
    use smsgate_store::{ListFilter, Origin};
    let (acme, globex) = (account(store).await, account(store).await);
    let (handset, a, b) = ("+15550000001", "+15550000091", "+15550000092");
    let at = |account, from: &str, ms: i64| {
        let mut m = message(account, handset, Status::Delivered, Timestamp(ms));
        (m.id, m.from) = (MessageId::first_at(Timestamp(ms)), from.into());
        m
    };
    // Acme: three from A one at a time, then two more from A and one from B in one batch, one with a key sent twice;
    // Globex: one from A, later than all of Acme's; Acme: one to another handset.
    let mut acme_a = Vec::new();
    for ms in [1_000, 2_000, 3_000] {
        acme_a.push(insert(store, at(acme, a, ms)).await);
    }
    let keyed = |m| NewMessage { idempotency: Some(("k".into(), "h".into())), ..new(m) };
    let batch =
        [keyed(at(acme, a, 4_000)), new(at(acme, b, 4_500)), keyed(at(acme, a, 4_600)), new(at(acme, a, 5_000))];
    let ids: Vec<MessageId> = batch.iter().map(|n| n.message.id).collect();
    let got = store.insert_messages(&batch).await.unwrap();
    assert_eq!(got[2], Inserted::Duplicate { id: ids[0], same_request: true }, "{got:?}");
    acme_a.extend([ids[0], ids[3]]);
    let campaign =
        NewMessage { origin: Origin { campaign: Some("camp-1".into()), automation: None }, ..new(at(acme, b, 6_000)) };
    let acme_b = [ids[1], campaign.message.id];
    store.insert_messages(&[campaign]).await.unwrap();
    let theirs = insert(store, at(globex, a, 9_000)).await;
    let mut elsewhere = at(acme, a, 7_000);
    elsewhere.to = "+15550000002".into();
    insert(store, elsewhere).await;

    let listed = |account, from: Option<&str>, cursor, limit| {
        let filter = ListFilter { to: Some(handset.into()), from: from.map(Into::into), ..Default::default() };
        async move {
            let got = store.list_messages(account, &filter, cursor, limit).await.unwrap();
            got.into_iter().map(|m| m.id).collect::<Vec<_>>()
        }
    };
    let mut newest_first: Vec<MessageId> = acme_a.iter().chain(&acme_b).copied().collect();
    newest_first.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(listed(acme, None, None, 50).await, newest_first, "every one to the number, none of Globex's");
    assert_eq!(listed(acme, None, None, 3).await, newest_first[..3]);
    assert_eq!(listed(acme, None, Some(newest_first[2]), 3).await, newest_first[3..6], "paged by id");
    let mut from_a = acme_a.clone();
    from_a.reverse();
    assert_eq!(listed(acme, Some(a), None, 50).await, from_a);
    assert_eq!(listed(globex, None, None, 50).await, [theirs]);

    // What a reply answers, and whose it is: the newest text from that number to the handset.
    let origin = store.replied_to(acme, handset, b, Timestamp(0)).await.unwrap();
    assert_eq!(origin.campaign.as_deref(), Some("camp-1"));
    assert_eq!(store.replied_to(acme, handset, b, Timestamp(6_001)).await.unwrap(), Origin::default(), "too old");
    assert_eq!(store.replied_to(acme, handset, a, Timestamp(0)).await.unwrap(), Origin::default());
    assert_eq!(store.account_for_reply(handset, a).await.unwrap(), Some(globex), "the last to send from it");
    assert_eq!(store.account_for_reply(handset, b).await.unwrap(), Some(acme));
    assert_eq!(store.account_for_reply("+15550000003", a).await.unwrap(), None);
    // A message that did not go in (its key seen before) starts no chain.
    let again = store.insert_messages(&[keyed(at(acme, "+15550000077", 6_500))]).await.unwrap();
    assert!(matches!(again[..], [Inserted::Duplicate { .. }]), "{again:?}");
    assert_eq!(store.account_for_reply(handset, "+15550000077").await.unwrap(), None);

    // Writers at once on one chain (several nodes on PostgreSQL): each chains after the other, none is lost.
    let writers = (0..4).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let mut shared = message(globex, "+15550000005", Status::Queued, NOW);
                shared.from = a.into();
                let own = message(globex, &format!("+1555000010{w}"), Status::Queued, NOW);
                store.insert_messages(&[new(own), new(shared)]).await.unwrap();
            }
        })
    });
    for w in writers.collect::<Vec<_>>() {
        w.await.unwrap();
    }
    let all = ListFilter { to: Some("+15550000005".into()), ..Default::default() };
    assert_eq!(store.list_messages(globex, &all, None, 100).await.unwrap().len(), 40);

    // History: the oldest go, the chains keep the rest; a chain whose newest went is forgotten.
    let mut after = None;
    while let (_, Some(last)) = store.delete_history(Timestamp(4_800), after, 2).await.unwrap() {
        after = Some(last);
    }
    assert_eq!(listed(acme, None, None, 50).await, [acme_b[1], ids[3]], "those made at 6,000 and 5,000 ms");
    store.delete_history(Timestamp(9_500), None, 50).await.unwrap();
    assert!(listed(acme, None, None, 50).await.is_empty());
    assert_eq!(store.account_for_reply(handset, a).await.unwrap(), None, "gone with its last message");
    assert_eq!(store.replied_to(acme, handset, b, Timestamp(0)).await.unwrap(), Origin::default());
}

async fn users_and_their_sessions(store: &Arc<dyn Store>) {
    use smsgate_core::access::Role;
    use smsgate_store::{Session, User};
    let (acme, globex) = (account(store).await, account(store).await);
    assert_eq!(store.user_count().await.unwrap(), 0);
    let ann = User {
        id: "u1".into(),
        account_id: acme,
        email: "ann@acme.example".into(),
        password_hash: "$argon2id$x".into(),
        role: Role::Owner,
        created_at: NOW,
        updated_at: NOW,
        last_sign_in_at: None,
        failed_sign_ins: 0,
        locked_until: None,
    };
    assert!(store.insert_user(&ann).await.unwrap());
    let taken = User { id: "u2".into(), account_id: globex, ..ann.clone() };
    assert!(!store.insert_user(&taken).await.unwrap(), "one user an email, across accounts");
    let bob = User { id: "u3".into(), account_id: globex, email: "bob@globex.example".into(), ..ann.clone() };
    assert!(store.insert_user(&bob).await.unwrap());
    assert_eq!(store.user_count().await.unwrap(), 2);
    assert_eq!(store.user(acme, "u1").await.unwrap(), Some(ann.clone()));
    assert!(store.user(globex, "u1").await.unwrap().is_none(), "another account's user");
    assert_eq!(store.user_by_email("bob@globex.example").await.unwrap().map(|u| u.id), Some("u3".into()));
    assert_eq!(store.users(acme).await.unwrap(), std::slice::from_ref(&ann));

    let viewer = User {
        role: Role::Viewer,
        password_hash: "$argon2id$y".into(),
        updated_at: Timestamp(NOW.0 + 1),
        ..ann.clone()
    };
    assert!(store.update_user(&viewer).await.unwrap());
    assert!(!store.update_user(&User { account_id: globex, ..viewer.clone() }).await.unwrap(), "not across accounts");
    assert_eq!(
        store.user(acme, "u1").await.unwrap().map(|u| (u.role, u.password_hash)),
        Some((Role::Viewer, "$argon2id$y".into()))
    );

    let until = Timestamp(NOW.0 + 60_000);
    store.record_sign_in("u1", false, None, NOW).await.unwrap();
    store.record_sign_in("u1", false, Some(until), NOW).await.unwrap();
    let u = store.user(acme, "u1").await.unwrap().unwrap();
    assert_eq!((u.failed_sign_ins, u.locked_until, u.last_sign_in_at), (2, Some(until), None));
    store.record_sign_in("u1", true, None, NOW).await.unwrap();
    let u = store.user(acme, "u1").await.unwrap().unwrap();
    assert_eq!((u.failed_sign_ins, u.locked_until, u.last_sign_in_at), (0, None, Some(NOW)));

    let session = |hash: &str, user: &str, expires: i64| Session {
        token_hash: hash.into(),
        user_id: user.into(),
        csrf_token: format!("csrf-{hash}"),
        created_at: NOW,
        seen_at: NOW,
        expires_at: Timestamp(expires),
    };
    store.insert_session(&session("s1", "u1", NOW.0 + 1000)).await.unwrap();
    store.insert_session(&session("s2", "u1", NOW.0 + 1000)).await.unwrap();
    store.insert_session(&session("s3", "u3", NOW.0 + 10)).await.unwrap();
    let found = store.signed_in("s1", NOW).await.unwrap().unwrap();
    assert_eq!((found.user.id.as_str(), found.account.id, found.session.csrf_token.as_str()), ("u1", acme, "csrf-s1"));
    assert!(store.signed_in("s3", Timestamp(NOW.0 + 10)).await.unwrap().is_none(), "expired");
    assert!(store.signed_in("nope", NOW).await.unwrap().is_none());
    store.touch_session("s3", Timestamp(NOW.0 + 5), Timestamp(NOW.0 + 500)).await.unwrap();
    assert_eq!(
        store.signed_in("s3", Timestamp(NOW.0 + 10)).await.unwrap().map(|s| s.session.seen_at),
        Some(Timestamp(NOW.0 + 5))
    );
    assert_eq!(store.delete_user_sessions("u1", Some("s1")).await.unwrap(), 1, "all but the one kept");
    assert!(store.signed_in("s2", NOW).await.unwrap().is_none());
    assert_eq!(store.delete_expired_sessions(Timestamp(NOW.0 + 600)).await.unwrap(), 1, "s3 ran out");
    assert!(store.delete_session("s1").await.unwrap());
    assert!(!store.delete_session("s1").await.unwrap());

    store.insert_session(&session("s4", "u3", NOW.0 + 1000)).await.unwrap();
    assert!(!store.delete_user(acme, "u3").await.unwrap(), "not another account's");
    assert!(store.signed_in("s4", NOW).await.unwrap().is_some());
    assert!(store.delete_user(globex, "u3").await.unwrap());
    assert!(store.signed_in("s4", NOW).await.unwrap().is_none(), "a removed user's sessions end");
    assert_eq!(store.user_count().await.unwrap(), 1);
}
