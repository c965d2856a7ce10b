#![allow(clippy::unwrap_used)] // Test helpers; a failure is a test failure.
//! The `smpp` connector under the engine, on a real SQLite store, against an SMSC that misbehaves on purpose (our
//! own SMPP session layer with a scripted handler, over loopback). By the destination's last two digits it drops
//! the connection instead of answering (11), answers ESME_RTHROTTLED twice (22), never answers the first submit
//! (33), sends the receipt before the submit_sm_resp (44), writes ids in another base in receipts than in answers
//! (66, 77), drops the connection every time it is sent one (88: a message the SMSC falls over on); on every bind
//! it sends a receipt for an id it never gave.
//! Every message must end delivered; the SMSC must take each message once, except the one whose answer never came
//! (SMPP cannot tell a lost answer from a lost submit: the one duplicate it allows).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use smpp::pdu::{Bind, SubmitSm, SubmitSmResp};
use smpp::{Body, CommandStatus, Pdu, ShortMessage, Tlv, Tlvs};
use smpp_session::{BindKind, Binder, Handler, Session};
use smsgate_connectors::sim::SimNetwork;
use smsgate_connectors::{ConnectorEvent, Kit};
use smsgate_core::routing::{Route, RouteMatch, RouteTarget};
use smsgate_core::{Message, MessageId, Status, Timestamp};
use smsgate_engine::{Config, Engine, Registry};
use smsgate_store::{ConnectorRecord, NewMessage};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the SMSC saw and holds.
#[derive(Default)]
struct Smsc {
    /// Submits taken (answered OK or never answered), by destination.
    taken: Mutex<HashMap<String, u32>>,
    /// Submits seen, by destination, whatever became of them.
    seen: Mutex<HashMap<String, u32>>,
    sessions: Mutex<Vec<Session>>,
    next_id: AtomicU32,
}

impl Smsc {
    fn session(&self) -> Option<Session> {
        self.sessions.lock().unwrap().iter().rev().find(|s| !s.is_closed()).cloned()
    }

    /// Sends a deliver_sm until a session takes it: a receipt waits for the client to bind again, as SMSCs keep
    /// them.
    async fn deliver(self: Arc<Self>, body: Body) {
        for _ in 0..500 {
            if let Some(session) = self.session()
                && session.request(body.clone()).await.is_ok_and(|r| r.command_status == CommandStatus::ESME_ROK)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn receipt(id: &str, s: &SubmitSm) -> Body {
        let text =
            format!("id:{id} sub:001 dlvrd:001 submit date:2601011200 done date:2601011200 stat:DELIVRD err:000");
        Body::DeliverSm(SubmitSm {
            source_addr: s.destination_addr.clone(),
            destination_addr: s.source_addr.clone(),
            esm_class: 0x04,
            short_message: ShortMessage::new(text.into_bytes()),
            tlvs: Tlvs(vec![Tlv::ReceiptedMessageId(id.into()), Tlv::MessageState(2)]),
            ..Default::default()
        })
    }
}

struct Faulty(Arc<Smsc>);

#[async_trait]
impl Handler for Faulty {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        let Body::SubmitSm(s) = request.body else { return (CommandStatus::ESME_ROK, Body::GenericNack) };
        let to = s.destination_addr.to_str_lossy().into_owned();
        let seen = {
            let mut seen = self.0.seen.lock().unwrap();
            let n = seen.entry(to.clone()).or_default();
            *n += 1;
            *n
        };
        let ok = |id: &str| {
            (CommandStatus::ESME_ROK, Body::SubmitSmResp(SubmitSmResp { message_id: id.into(), ..Default::default() }))
        };
        match (&to[to.len() - 2..], seen) {
            ("88", _) => {
                // Falls over on it, every time, and never answers.
                if let Some(session) = self.0.session() {
                    session.close();
                }
                std::future::pending::<()>().await;
            }
            ("11", 1) => {
                // Gone mid-window, the submit not taken.
                if let Some(session) = self.0.session() {
                    session.close();
                }
                return (CommandStatus::ESME_RSYSERR, Body::SubmitSmResp(SubmitSmResp::default()));
            }
            ("22", 1 | 2) => return (CommandStatus::ESME_RTHROTTLED, Body::SubmitSmResp(SubmitSmResp::default())),
            ("33", 1) => {
                *self.0.taken.lock().unwrap().entry(to.clone()).or_default() += 1;
                // Taken, and the answer never comes.
                std::future::pending::<()>().await;
            }
            _ => {}
        }
        *self.0.taken.lock().unwrap().entry(to.clone()).or_default() += 1;
        let n = 0xc000 + self.0.next_id.fetch_add(1, Ordering::Relaxed);
        // Ids in hex; but 66 gets its answer in decimal and its receipt in upper-case hex with leading zeros, and
        // 77 the other way round (carriers mix the forms; smsgate keeps no map of them).
        let (id, written) = match &to[to.len() - 2..] {
            "66" => (n.to_string(), format!("{n:08X}")),
            "77" => (format!("{n:08X}"), n.to_string()),
            _ => (format!("{n:x}"), format!("{n:x}")),
        };
        let receipt = Smsc::receipt(&written, &s);
        if to.ends_with("44") {
            // The receipt first; the answer after it.
            self.0.clone().deliver(receipt).await;
        } else {
            let smsc = self.0.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                smsc.deliver(receipt).await;
            });
        }
        ok(&id)
    }
}

#[async_trait]
impl Binder for Faulty {
    async fn bind(&self, _: BindKind, _: &Bind, _: Option<SocketAddr>) -> Result<Arc<dyn Handler>, CommandStatus> {
        Ok(Arc::new(Faulty(self.0.clone())))
    }
}

/// The misbehaving SMSC on a loopback port and an engine on a fresh SQLite store with an `smpp` connector to it.
struct Rig {
    smsc: Arc<Smsc>,
    store: Arc<dyn smsgate_store::Store>,
    engine: Engine,
    account: smsgate_core::AccountId,
    path: std::path::PathBuf,
    shutdown: CancellationToken,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

async fn rig(max_attempts: u32) -> Rig {
    let smsc = Arc::new(Smsc::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    {
        let (smsc, stop) = (smsc.clone(), stop.clone());
        let binder: Arc<dyn Binder> = Arc::new(Faulty(smsc.clone()));
        let bound = move |session: Session| {
            let smsc = smsc.clone();
            async move {
                smsc.sessions.lock().unwrap().push(session.clone());
                // A receipt for an id this SMSC never gave: logged and counted, nothing else.
                let stray = SubmitSm { source_addr: "447700900999".into(), ..Default::default() };
                let _ = session.request(Smsc::receipt("deadbeef", &stray)).await;
            }
        };
        let config = smpp_session::Config::default();
        tokio::spawn(async move { smpp_session::listen(listener, stop, "faulty", config, binder, bound).await });
    }

    let path = std::env::temp_dir().join(format!("smsgate-faults-{}.db", MessageId::generate()));
    let store = smsgate_store::open(&format!("sqlite://{}", path.display()), 4).await.unwrap();
    let account = store.create_account("acme", false, Timestamp::now()).await.unwrap().id;
    let settings = serde_json::json!({
        "host": "127.0.0.1", "port": addr.port(), "system_id": "gw", "password": "pw",
        "response_timeout_ms": 500, "reconnect_min_ms": 20, "reconnect_max_ms": 100,
    });
    let record = ConnectorRecord {
        name: "faulty".into(),
        kind: "smpp".into(),
        settings: settings.to_string(),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    };
    assert!(store.insert_connector(&record).await.unwrap());
    let target = RouteTarget { name: "faulty".into(), priority: 0, weight: 1, price_micros: None };
    let route = Route { name: "all".into(), position: 0, matches: RouteMatch::default(), connectors: vec![target] };
    assert!(store.insert_route(&route, Timestamp::now()).await.unwrap());
    let (tx, rx) = mpsc::channel::<ConnectorEvent>(1024);
    let config = Config {
        poll_interval: Duration::from_millis(20),
        retry_base: Duration::from_millis(20),
        lease: Duration::from_secs(5),
        max_attempts,
        ..Config::default()
    };
    let kit = Kit::new(Arc::new(SimNetwork::new(Vec::new(), tx)));
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(kit)), config);
    engine.reload().await.unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.clone().run(rx, shutdown.clone()));
    Rig { smsc, store, engine, account, path, shutdown, stop, running }
}

impl Rig {
    /// Stores a queued message to `to` and tells the engine.
    async fn send(&self, to: &str) -> MessageId {
        let at = Timestamp::now();
        let m = Message {
            account_id: self.account,
            status: Status::Queued,
            attempts: 0,
            category: Default::default(),
            expires_at: Some(at.plus_secs(600)),
            created_at: at,
            updated_at: at,
            ..smsgate_connectors::testing::message(to, "Faults")
        };
        let id = m.id;
        self.store.insert_messages(&[NewMessage::new(m, "accepted")]).await.unwrap();
        self.engine.wake();
        id
    }

    async fn finish(self) {
        self.shutdown.cancel();
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running).await.unwrap().unwrap();
        self.store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_duplicated_beyond_what_smpp_allows() {
    let rig = rig(Config::default().max_attempts).await;
    let (smsc, store, account) = (rig.smsc.clone(), rig.store.clone(), rig.account);
    let mut ids = Vec::new();
    // One drop and one unanswered submit (each takes the connector down for a cool-down when it costs a probe),
    // among well-behaved traffic.
    for (kind, n) in [("11", 1), ("22", 3), ("33", 1), ("44", 3), ("55", 4), ("66", 2), ("77", 2)] {
        for i in 0..n {
            let to = format!("+4477009{i}00{kind}");
            ids.push((rig.send(&to).await, to.trim_start_matches('+').to_string()));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    for (id, to) in &ids {
        loop {
            let status = store.message_status(*id).await.unwrap();
            if status == Some(Status::Delivered) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let mut all = Vec::new();
                for (id, to) in &ids {
                    all.push((
                        to.clone(),
                        store.message(account, *id).await.unwrap().map(|m| (m.status, m.carrier_id)),
                    ));
                }
                panic!("{to} stuck at {status:?}; all: {all:?}; taken {:?}", smsc.taken.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The SMSC took each message once, and again only after an attempt whose answer we never got (the session
    // closed under it, or no answer came in time): SMPP cannot tell those from submits that never arrived.
    let taken = smsc.taken.lock().unwrap().clone();
    for (id, to) in &ids {
        let events = store.events(*id).await.unwrap();
        let lost =
            events.iter().filter(|e| e.detail.contains("connection_lost") || e.detail.contains("timeout")).count();
        let n = taken.get(to).copied().unwrap_or(0) as usize;
        assert!((1..=1 + lost).contains(&n), "{to}: taken {n} times, {lost} answers lost: {events:?}");
        if to.ends_with("33") {
            assert!(n == 2 && lost >= 1, "{to}: the unanswered submit is the one duplicate: {events:?}");
        }
    }
    // The stray receipt moved nothing, and the connector stayed up through it all.
    for (id, _) in &ids {
        let journey: Vec<Status> = store.events(*id).await.unwrap().into_iter().map(|e| e.status).collect();
        assert_eq!(journey.last(), Some(&Status::Delivered));
        assert_eq!(journey.iter().filter(|s| **s == Status::Delivered).count(), 1, "{journey:?}");
    }
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_smsc_falls_over_on_fails_in_the_end() {
    // One attempt: each session closed under it while the connector is down for its health's cool-down takes
    // five seconds and more, so five attempts would make the test minutes long.
    let max = 1;
    let rig = rig(max).await;
    let poison = rig.send("+447700900088").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while rig.store.message_status(poison).await.unwrap() != Some(Status::Failed) {
        let events = rig.store.events(poison).await.unwrap();
        assert!(tokio::time::Instant::now() < deadline, "not failed in time: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first sessions closed under it cost nothing (the link's fault, as far as anyone can tell); after that
    // each costs an attempt, and it fails after the last of them rather than retrying until its validity ends.
    let m = rig.store.message(rig.account, poison).await.unwrap().unwrap();
    assert_eq!(m.attempts, max);
    assert_eq!(m.error_code.as_deref(), Some("connection_lost"));
    let events = rig.store.events(poison).await.unwrap();
    // (Tries that found no session bound while it reconnected cost nothing either: nothing went out.)
    let free =
        events.iter().filter(|e| e.detail.contains("connection_lost") && e.detail.contains("not counted")).count();
    let counted = events.iter().filter(|e| e.detail.contains("it counts")).count();
    assert_eq!((free, counted), (2, max as usize), "{events:?}");
    assert_eq!(rig.smsc.seen.lock().unwrap().get("447700900088").copied(), Some(2 + max), "{events:?}");
    rig.finish().await;
}
