#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! The engine on a real SQLite store and the simulated network: messages travel their whole journey, each magic
//! number produces its fault, scheduled messages wait, replies come back, committed changes are told to
//! subscribers, and shutdown is clean. Waits are bounded polls of the store (10 s at most), never fixed sleeps;
//! what depends on the time runs on a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use smsgate_connectors::ConnectorEvent;
use smsgate_connectors::Kit;
use smsgate_connectors::sim::{SimNetwork, VirtualCarrier};
use smsgate_core::clock::{Clock, ManualClock};
use smsgate_core::{AccountId, Direction, Message, MessageId, Status, Timestamp};
use smsgate_engine::{Config, DomainEvent, Engine, Registry};
use smsgate_store::{ListFilter, NewMessage, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Harness {
    store: Arc<dyn Store>,
    sim: Arc<SimNetwork>,
    engine: Engine,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
    account: AccountId,
    path: std::path::PathBuf,
    clock: Arc<dyn Clock>,
}

async fn start() -> Harness {
    start_with(smsgate_core::clock::system()).await
}

/// A harness whose engine decides by `clock`.
async fn start_with(clock: Arc<dyn Clock>) -> Harness {
    let path = std::env::temp_dir().join(format!("smsgate-engine-{}.db", uuid::Uuid::now_v7().simple()));
    let store = smsgate_store::open(&format!("sqlite://{}", path.display()), 4).await.expect("store");
    let account = store.create_account("acme", false, Timestamp::now()).await.expect("account").id;
    let (tx, rx) = mpsc::channel::<ConnectorEvent>(1024);
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
        lease: Duration::from_secs(5),
        clock: clock.clone(),
        ..Config::default()
    };
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(Kit::new(sim.clone()))), config);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(rx, shutdown.clone()));
    Harness { store, sim, engine, shutdown, running, account, path, clock }
}

impl Harness {
    async fn send(&self, to: &str, send_at: Option<Timestamp>, validity_ms: i64) -> MessageId {
        let at = self.clock.now();
        let mut m = message(self.account, to, at);
        if send_at.is_some() {
            m.status = Status::Scheduled;
        }
        m.send_at = send_at;
        m.expires_at = Some(send_at.unwrap_or(at).plus_millis(validity_ms));
        let id = m.id;
        self.store.insert_messages(&[NewMessage::new(m, "accepted")]).await.expect("insert");
        self.engine.wake();
        id
    }

    /// Waits until the message reaches `want`, and returns its journey.
    async fn until(&self, id: MessageId, want: Status) -> Vec<Status> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.store.message_status(id).await.expect("status");
            if status == Some(want) {
                return self.store.events(id).await.expect("events").into_iter().map(|e| e.status).collect();
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} stuck at {status:?}, waiting for {want}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running).await.expect("engine stops").expect("no panic");
        self.store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// A queued outbound message of `account` to `to`, made at `at`.
fn message(account: AccountId, to: &str, at: Timestamp) -> Message {
    Message {
        id: MessageId::generate(),
        account_id: account,
        direction: Direction::Outbound,
        to: to.into(),
        from: "Acme".into(),
        body: "Your table is ready".into(),
        encoding: "gsm7".into(),
        segments: 1,
        price_micros: None,
        connector: None,
        carrier_id: None,
        status: Status::Queued,
        error_code: None,
        reference: None,
        callback_url: None,
        callback_statuses: None,
        send_at: None,
        expires_at: None,
        attempts: 0,
        category: Default::default(),
        created_at: at,
        updated_at: at,
    }
}

use Status::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_all_the_way() {
    let h = start().await;
    let id = h.send("+447700900123", None, 60_000).await;
    assert_eq!(h.until(id, Delivered).await, vec![Queued, Sending, Sent, Delivered]);
    let m = h.store.message(h.account, id).await.unwrap().unwrap();
    assert_eq!(m.connector.as_deref(), Some("sim"));
    assert!(m.carrier_id.is_some());
    assert_eq!(h.sim.inbox("+447700900123")[0].body, "Your table is ready");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magic_numbers_produce_their_faults() {
    let h = start().await;
    let rejected = h.send("+447700900001", None, 60_000).await;
    let undelivered = h.send("+447700900002", None, 60_000).await;
    let silent = h.send("+447700900003", None, 1_000).await;
    let throttled = h.send("+447700900004", None, 60_000).await;
    assert_eq!(h.until(rejected, Failed).await, vec![Queued, Sending, Failed]);
    assert_eq!(h.until(undelivered, Undelivered).await, vec![Queued, Sending, Sent, Undelivered]);
    assert_eq!(h.until(silent, Expired).await, vec![Queued, Sending, Sent, Expired]);
    assert_eq!(
        h.until(throttled, Delivered).await,
        vec![Queued, Sending, Queued, Sending, Queued, Sending, Sent, Delivered]
    );
    let m = h.store.message(h.account, rejected).await.unwrap().unwrap();
    assert_eq!(m.error_code.as_deref(), Some("invalid_destination"));
    // Throttling spends no attempt: the carrier answered.
    let m = h.store.message(h.account, throttled).await.unwrap().unwrap();
    assert_eq!(m.attempts, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_wait_for_their_time() {
    let clock = ManualClock::new(Timestamp::now());
    let h = start_with(Arc::new(clock.clone())).await;
    let id = h.send("+447700900123", Some(clock.now().plus_secs(3600)), 60_000).await;
    // A message sent after it goes all the way while it waits: the dispatcher has looked, and left it.
    let other = h.send("+447700900133", None, 60_000).await;
    h.until(other, Delivered).await;
    assert_eq!(h.store.message_status(id).await.unwrap(), Some(Scheduled));
    clock.advance(Duration::from_secs(3600));
    h.engine.wake();
    assert_eq!(h.until(id, Delivered).await, vec![Scheduled, Queued, Sending, Sent, Delivered]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_its_validity_is_not_sent() {
    let clock = ManualClock::new(Timestamp::now());
    let h = start_with(Arc::new(clock.clone())).await;
    let id = h.send("+447700900123", Some(clock.now().plus_secs(60)), 1).await;
    // Its time comes after its validity ended: the sweep ends it, and nothing is sent.
    clock.advance(Duration::from_secs(61));
    assert_eq!(h.until(id, Expired).await.last(), Some(&Expired));
    assert!(h.sim.inbox("+447700900123").is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_are_told_to_subscribers() {
    let h = start().await;
    let mut events = h.engine.subscribe();
    let id = h.send("+447700900123", None, 60_000).await;
    h.until(id, Delivered).await;
    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !heard.contains(&("receipt", Delivered)) {
        let event = tokio::time::timeout_at(deadline, events.recv()).await.expect("events in time").expect("no lag");
        match event {
            DomainEvent::StatusChanged { id: of, status, .. } if of == id => heard.push(("status", status)),
            DomainEvent::ReceiptRecorded { id: of, status, .. } if of == id => heard.push(("receipt", status)),
            _ => {}
        }
    }
    assert_eq!(heard, [("status", Sending), ("status", Sent), ("receipt", Delivered)]);
    // An inbound message is told whole, with the account it belongs to.
    h.sim.reply("+447700900123", "Acme", "Thanks!").await.unwrap();
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv()).await.expect("inbound in time").expect("no lag");
        if let DomainEvent::Received(m) = event {
            assert_eq!((m.account_id, m.body.as_str(), m.status), (h.account, "Thanks!", Received));
            break;
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_arrive_for_the_account_that_wrote() {
    let h = start().await;
    let id = h.send("+447700900123", None, 60_000).await;
    h.until(id, Delivered).await;
    h.sim.reply("+447700900123", "Acme", "Thanks!").await.unwrap();
    let filter = ListFilter { direction: Some(Direction::Inbound), ..ListFilter::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let inbound = loop {
        let got = h.store.list_messages(h.account, &filter, None, 10).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(tokio::time::Instant::now() < deadline, "no inbound message");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((inbound[0].from.as_str(), inbound[0].to.as_str()), ("+447700900123", "Acme"));
    assert_eq!((inbound[0].body.as_str(), inbound[0].status), ("Thanks!", Received));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_each_sent_once() {
    let h = start().await;
    let mut ids = Vec::new();
    // Numbers ending in 5, clear of the magic endings.
    let number = |i: i32| format!("+447700{:06}", 100_000 + i * 10 + 5);
    for i in 0..200 {
        ids.push(h.send(&number(i), None, 60_000).await);
    }
    for id in &ids {
        h.until(*id, Delivered).await;
    }
    for i in 0..200 {
        assert_eq!(h.sim.inbox(&number(i)).len(), 1);
    }
    h.stop().await;
}

/// A connector paced to 100 a second with a backlog of 150: the dispatcher claims only what the pace has turns for,
/// so the backlog is not claimed only to be put back (a write to take each message and one to give it back); each
/// message still goes once, at the pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_connector_is_claimed_for_as_it_has_turns() {
    let h = start().await;
    // The built-in connector is made when the engine starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.engine.registry().runtime("sim").is_none() {
        assert!(std::time::Instant::now() < deadline, "the engine made no connector");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sim = h.store.connectors().await.unwrap().into_iter().find(|c| c.name == "sim").expect("the sim connector");
    let mut settings: serde_json::Value = serde_json::from_str(&sim.settings).unwrap();
    settings["throughput"] = serde_json::json!(100);
    sim.settings = settings.to_string();
    assert!(h.store.update_connector(&sim).await.unwrap());
    // Put in force once the engine's own first reload (which may have read the record before the change) is over.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.engine.registry().reload(h.store.as_ref()).await.unwrap();
    let runtime = h.engine.registry().runtime("sim").unwrap();
    assert_eq!(runtime.limits().throughput, Some(100.0));
    // Numbers ending in 5, clear of the magic endings; all stored at once, then the dispatcher woken.
    let number = |i: i32| format!("+447700{:06}", 300_000 + i * 10 + 5);
    let now = h.clock.now();
    let batch: Vec<NewMessage> = (0..150)
        .map(|i| {
            let mut m = message(h.account, &number(i), now);
            m.expires_at = Some(now.plus_millis(60_000));
            NewMessage::new(m, "accepted")
        })
        .collect();
    let ids: Vec<MessageId> = batch.iter().map(|n| n.message.id).collect();
    let started = std::time::Instant::now();
    h.store.insert_messages(&batch).await.unwrap();
    h.engine.wake();
    for id in &ids {
        h.until(*id, Delivered).await;
    }
    // 150 at 100 a second (less a margin): not under 1.4 s.
    assert!(started.elapsed() >= Duration::from_millis(1400), "{:?}", started.elapsed());
    for i in 0..150 {
        assert_eq!(h.sim.inbox(&number(i)).len(), 1);
    }
    let put_back = runtime.counters.put_back.load(std::sync::atomic::Ordering::Relaxed);
    assert!(put_back <= 10, "{put_back} of 150 claimed only to be put back");
    h.stop().await;
}
