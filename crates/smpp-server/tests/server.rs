#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! The SMPP server on real loopback TCP over a real SQLite store and engine (PostgreSQL too for the opt-out test):
//! binds checked against credentials, submits answered only once stored, query_sm following the message to
//! `delivered`.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use async_trait::async_trait;
use smpp::pdu::{Bind, QuerySm, SubmitSm};
use smpp::{Body, CommandStatus, Pdu};
use smpp_server::{Settings, SmppServer};
use smpp_session::{BindError, BindKind, Handler, Session};
use smsgate_connectors::Kit;
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::access::hash_password;
use smsgate_core::{AccountId, MessageId, Status, Timestamp};
use smsgate_engine::ingress::Ingress;
use smsgate_engine::registry::Registry;
use smsgate_engine::{Config, Engine};
use smsgate_store::{ListFilter, SmppCredential, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(10);

struct Nothing;

#[async_trait]
impl Handler for Nothing {
    async fn request(&self, _: Pdu) -> (CommandStatus, Body) {
        (CommandStatus::ESME_ROK, Body::DeliverSmResp(Default::default()))
    }
}

struct Setup {
    addr: std::net::SocketAddr,
    store: Arc<dyn Store>,
    account: AccountId,
    server: SmppServer,
    admin: smsgate_services::Admin,
    engine: Engine,
    stop: CancellationToken,
    path: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

async fn setup() -> Setup {
    setup_with(Settings { parts_wait: Duration::from_millis(300), ..Settings::default() }).await
}

async fn setup_with(settings: Settings) -> Setup {
    let path = std::env::temp_dir().join(format!("smsgate-smpp-server-{}.db", MessageId::generate()));
    setup_on(&format!("sqlite://{}", path.display()), path, settings).await
}

fn postgres_url() -> String {
    std::env::var("SMSGATE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn on_server(sql: String) {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.expect("PostgreSQL is up");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("statement");
    pool.close().await;
}

/// A setup on a schema of its own in the test PostgreSQL (dropped by [`drop_schema`]).
async fn setup_on_postgres() -> (Setup, String) {
    let schema = format!("test_{}", MessageId::generate().0.simple());
    on_server(format!("CREATE SCHEMA {schema}")).await;
    let url = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
    let s = setup_on(&url, std::env::temp_dir().join("unused.db"), Settings::default()).await;
    (s, schema)
}

async fn drop_schema(s: Setup, schema: String) {
    s.stop.cancel();
    s.store.close().await;
    drop(s);
    on_server(format!("DROP SCHEMA {schema} CASCADE")).await;
}

async fn setup_on(url: &str, path: std::path::PathBuf, settings: Settings) -> Setup {
    let store = smsgate_store::open(url, 4).await.unwrap();
    let account = store.create_account("acme", false, Timestamp(1)).await.unwrap().id;
    // The account sends only from what it owns (the default): these sender IDs.
    for (i, name) in ["Acme", "Sar", "Udh"].into_iter().enumerate() {
        let sender = smsgate_store::Sender {
            id: format!("sender-{i}"),
            account_id: account,
            kind: smsgate_core::senders::AddressKind::Alphanumeric,
            address: name.into(),
            connector: None,
            status: smsgate_core::senders::SenderStatus::Active,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
        };
        assert!(store.insert_sender(&sender).await.unwrap());
    }
    for (system_id, allowed, max) in [
        ("acme", None, Some(1)),
        ("acme_tx", None, None),
        ("acme_slow", None, None),
        ("acme_lan", Some(vec!["10.0.0.0/8".to_string()]), None),
    ] {
        let c = SmppCredential {
            system_id: system_id.into(),
            account_id: account,
            password_hash: hash_password("secret"),
            allowed_ips: allowed,
            max_binds: max,
            throughput: (system_id == "acme_slow").then_some(2.0),
            created_at: Timestamp(1),
        };
        assert!(store.create_smpp_credential(&c).await.unwrap());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let sim = Arc::new(SimNetwork::new(Vec::new(), tx));
    let config = Config { poll_interval: Duration::from_millis(20), ..Config::default() };
    let engine = Engine::new(store.clone(), Arc::new(Registry::new(Kit::new(sim))), config);
    let stop = CancellationToken::new();
    tokio::spawn(engine.clone().run(rx, stop.clone()));
    let ingress = Ingress::spawn(engine.clone(), store.clone(), Arc::default());
    let messages = smsgate_services::Messages::new(ingress, store.clone());
    let admin = smsgate_services::Admin::new(store.clone(), engine.clone());
    let server = SmppServer::new(store.clone(), messages, admin.clone(), settings);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let (server, stop) = (server.clone(), stop.clone());
        async move { server.serve(listener, stop).await }
    });
    Setup { addr, store, account, server, admin, engine, stop, path }
}

async fn bind_as(s: &Setup, kind: BindKind, id: &str, password: &str) -> Result<Session, BindError> {
    bind_with(s, kind, id, password, Arc::new(Nothing)).await
}

async fn bind_with(
    s: &Setup,
    kind: BindKind,
    id: &str,
    password: &str,
    handler: Arc<dyn Handler>,
) -> Result<Session, BindError> {
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let creds = Bind { system_id: id.into(), password: password.into(), interface_version: 0x34, ..Default::default() };
    smpp_session::bind(stream, kind, creds, smpp_session::Config::default(), handler).await.map(|(s, _)| s)
}

/// A client that keeps the deliver_sm it gets, refusing the first `refuse` of them (ESME_RX_T_APPN).
struct Inbox {
    got: tokio::sync::mpsc::UnboundedSender<SubmitSm>,
    refuse: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Handler for Inbox {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        let Body::DeliverSm(d) = request.body else { return (CommandStatus::ESME_RINVCMDID, Body::GenericNack) };
        let _ = self.got.send(d);
        let refused = self.refuse.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
        let status = if refused { CommandStatus::ESME_RX_T_APPN } else { CommandStatus::ESME_ROK };
        (status, Body::DeliverSmResp(Default::default()))
    }
}

fn inbox(refuse: usize) -> (Arc<Inbox>, tokio::sync::mpsc::UnboundedReceiver<SubmitSm>) {
    let (got, rx) = tokio::sync::mpsc::unbounded_channel();
    (Arc::new(Inbox { got, refuse: refuse.into() }), rx)
}

async fn next_deliver(rx: &mut tokio::sync::mpsc::UnboundedReceiver<SubmitSm>) -> SubmitSm {
    tokio::time::timeout(WITHIN, rx.recv()).await.expect("a deliver_sm in time").expect("open")
}

/// A receipt's `receipted_message_id`, `message_state` and parsed text.
fn receipt_of(d: &SubmitSm) -> (String, u8, smpp::receipt::Receipt) {
    assert_eq!(d.esm_class & 0x3c, 0x04, "an SMSC delivery receipt: {d:?}");
    let id = String::from_utf8_lossy(d.tlvs.receipted_message_id().expect("receipted_message_id")).into_owned();
    let state = d.tlvs.message_state();
    let text = smpp::receipt::Receipt::parse(&String::from_utf8_lossy(d.short_message.as_bytes())).unwrap();
    (id, state.expect("message_state"), text)
}

fn with_receipt(body: Body, registered_delivery: u8) -> Body {
    match body {
        Body::SubmitSm(s) => Body::SubmitSm(SubmitSm { registered_delivery, ..s }),
        other => other,
    }
}

fn id_of(r: &Pdu) -> String {
    assert_eq!(r.command_status, CommandStatus::ESME_ROK, "{r:?}");
    let Body::SubmitSmResp(resp) = &r.body else { panic!("{r:?}") };
    resp.message_id.to_str_lossy().into_owned()
}

fn submit(to: &str, text: &str) -> Body {
    Body::SubmitSm(SubmitSm {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        dest_addr_npi: 1,
        destination_addr: to.into(),
        short_message: smpp::ShortMessage::new(text.as_bytes()),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_are_checked_against_the_credentials() {
    let s = setup().await;
    let refused = |r: Result<Session, BindError>| match r {
        Err(BindError::Refused(st)) => st,
        other => panic!("{other:?}"),
    };
    // Every refusal is the same answer: nothing tells a guesser which part was wrong.
    assert_eq!(refused(bind_as(&s, BindKind::Transceiver, "acme", "wrong").await), CommandStatus::ESME_RBINDFAIL);
    assert_eq!(refused(bind_as(&s, BindKind::Transceiver, "nobody", "secret").await), CommandStatus::ESME_RBINDFAIL);
    // Allowed from 10.0.0.0/8 only; this is 127.0.0.1.
    assert_eq!(refused(bind_as(&s, BindKind::Transceiver, "acme_lan", "secret").await), CommandStatus::ESME_RBINDFAIL);
    // max_binds 1: a second bind is refused until the first is gone.
    let first = bind_as(&s, BindKind::Transceiver, "acme", "secret").await.unwrap();
    assert_eq!(s.server.binds("acme"), 1);
    assert_eq!(refused(bind_as(&s, BindKind::Receiver, "acme", "secret").await), CommandStatus::ESME_RBINDFAIL);
    first.unbind().await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while s.server.binds("acme") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the bind was not given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = bind_as(&s, BindKind::Receiver, "acme", "secret").await.unwrap();
    // A receiver does not submit.
    let r = again.request(submit("447700900125", "hi")).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_RINVBNDSTS);
    // A storm of binds: the password checks take turns (a few at once), and every bind gets its answer.
    let storm: Vec<_> = (0..12).map(|_| bind_as(&s, BindKind::Transmitter, "acme", "wrong")).collect();
    for r in futures_util::future::join_all(storm).await {
        assert_eq!(refused(r), CommandStatus::ESME_RBINDFAIL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_binds_lock_out_and_the_operator_sees_it() {
    use smsgate_services::binds::{BindKey, FREE_FAILURES};
    let s = setup().await;
    let refused = |r: Result<Session, BindError>| matches!(r, Err(BindError::Refused(CommandStatus::ESME_RBINDFAIL)));
    for _ in 0..FREE_FAILURES {
        assert!(refused(bind_as(&s, BindKind::Transceiver, "acme", "wrong").await));
    }
    // Locked out: the right password is refused too, and the operator sees by what.
    assert!(refused(bind_as(&s, BindKind::Transceiver, "acme", "secret").await));
    let keys: Vec<(BindKey, u32)> = s.admin.bind_lockouts().into_iter().map(|l| (l.key, l.failures)).collect();
    assert_eq!(
        keys,
        [
            (BindKey::SystemId("acme".into()), FREE_FAILURES),
            (BindKey::Address("127.0.0.1".parse().unwrap()), FREE_FAILURES)
        ]
    );
    // Another credential from the same address is locked out too: the address is.
    assert!(refused(bind_as(&s, BindKind::Transceiver, "acme_tx", "secret").await));
    s.admin.binds().clear();
    bind_as(&s, BindKind::Transceiver, "acme", "secret").await.unwrap().unbind().await;
    // Binds from outside a credential's ranges count against the address only, not the credential's real client.
    for _ in 0..FREE_FAILURES {
        assert!(refused(bind_as(&s, BindKind::Transceiver, "acme_lan", "secret").await));
    }
    let keys: Vec<BindKey> = s.admin.bind_lockouts().into_iter().map(|l| l.key).collect();
    assert_eq!(keys, [BindKey::Address("127.0.0.1".parse().unwrap())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_after_a_few_refused_binds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let bind =
        Bind { system_id: "acme".into(), password: "wrong".into(), interface_version: 0x34, ..Default::default() };
    for seq in 1..=smpp_session::BIND_TRIES {
        let pdu = Pdu::new(seq, Body::BindTransceiver(bind.clone())).encode().unwrap();
        stream.write_all(&pdu).await.unwrap();
        let mut header = [0u8; 16];
        tokio::time::timeout(WITHIN, stream.read_exact(&mut header)).await.unwrap().unwrap();
        let status = CommandStatus::from_u32(u32::from_be_bytes([header[8], header[9], header[10], header[11]]));
        assert_eq!(status, CommandStatus::ESME_RBINDFAIL, "bind {seq}");
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut rest = vec![0u8; len - 16];
        stream.read_exact(&mut rest).await.unwrap();
    }
    let mut more = [0u8; 1];
    let n = tokio::time::timeout(WITHIN, stream.read(&mut more)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_are_stored_before_the_response_and_followed_with_query_sm() {
    let s = setup().await;
    let c = bind_as(&s, BindKind::Transmitter, "acme", "secret").await.unwrap();
    let r = c.request(submit("447700900125", "Hello over SMPP")).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let Body::SubmitSmResp(resp) = r.body else { panic!("{r:?}") };
    let id_text = resp.message_id.to_str_lossy().into_owned();
    let id = MessageId::parse(&id_text).expect("the message's own id");
    // Stored by the time the response came, for the credential's account.
    let m = s.store.message(s.account, id).await.unwrap().expect("stored");
    assert_eq!((m.to.as_str(), m.from.as_str(), m.body.as_str()), ("+447700900125", "Acme", "Hello over SMPP"));
    // query_sm follows it to delivered (message_state 2) on the built-in network.
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let q = Body::QuerySm(QuerySm { message_id: id_text.as_str().into(), ..Default::default() });
        let r = c.request(q).await.unwrap();
        let Body::QuerySmResp(q) = r.body else { panic!("{r:?}") };
        if q.message_state == 2 {
            assert_eq!(q.final_date.as_bytes().len(), 16, "{q:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered: {q:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.store.message(s.account, id).await.unwrap().unwrap().status, Status::Delivered);
    // An international number sent with TON 0 (unknown), as many clients do: the server reads no national numbers.
    let unknown_ton = Body::SubmitSm(SubmitSm {
        source_addr: "Acme".into(),
        destination_addr: "447700900125".into(),
        short_message: smpp::ShortMessage::new(b"TON 0".to_vec()),
        ..Default::default()
    });
    let r = c.request(unknown_ton).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK, "{r:?}");
    // Admission refusals as command_status; unknown ids for query_sm.
    let bad = c.request(submit("12", "hi")).await.unwrap();
    assert_eq!(bad.command_status, CommandStatus::ESME_RINVDSTADR);
    // A sender the account does not own: refused as an invalid source address, and nothing stored.
    let not_owned = Body::SubmitSm(SubmitSm {
        source_addr_ton: 5,
        source_addr: "AcmeBank".into(),
        destination_addr: "447700900125".into(),
        dest_addr_ton: 1,
        short_message: smpp::ShortMessage::new(b"phishing".to_vec()),
        ..Default::default()
    });
    let r = c.request(not_owned).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_RINVSRCADR, "{r:?}");
    let filter = smsgate_store::ListFilter { from: Some("AcmeBank".into()), ..Default::default() };
    assert!(s.store.list_messages(s.account, &filter, None, 10).await.unwrap().is_empty());
    let empty = c.request(submit("447700900125", "")).await.unwrap();
    assert_eq!(empty.command_status, CommandStatus::ESME_RINVMSGLEN);
    let q = Body::QuerySm(QuerySm { message_id: "nope".into(), ..Default::default() });
    assert_eq!(c.request(q).await.unwrap().command_status, CommandStatus::ESME_RINVMSGID);
    // A long text: in parts with a UDH, in parts with SAR TLVs, or whole in message_payload. The parts' answers
    // wait for the set and carry the one message's id.
    let long = "A long text over SMPP, in more than one part. ".repeat(5);
    let plan = sms_text::plan(&long, &sms_text::Options::default()).unwrap();
    assert_eq!(plan.segments.len(), 2);
    let part = |i: usize, sar: bool| {
        let seg = &plan.segments[i];
        let (esm_class, short_message, tlvs) = if sar {
            let tlvs = vec![
                smpp::Tlv::SarMsgRefNum(7),
                smpp::Tlv::SarTotalSegments(2),
                smpp::Tlv::SarSegmentSeqnum(i as u8 + 1),
            ];
            (0, seg.payload.clone(), smpp::Tlvs(tlvs))
        } else {
            (0x40, seg.short_message(), smpp::Tlvs::default())
        };
        Body::SubmitSm(SubmitSm {
            esm_class,
            source_addr: if sar { "Sar".into() } else { "Udh".into() },
            source_addr_ton: 5,
            dest_addr_ton: 1,
            destination_addr: "447700900125".into(),
            short_message: smpp::ShortMessage::new(short_message),
            tlvs,
            ..Default::default()
        })
    };
    for sar in [false, true] {
        // The second part first: order does not matter.
        let (second, first) = tokio::join!(c.request(part(1, sar)), c.request(part(0, sar)));
        let ids: Vec<String> = [first.unwrap(), second.unwrap()]
            .into_iter()
            .map(|r| {
                assert_eq!(r.command_status, CommandStatus::ESME_ROK, "{r:?}");
                let Body::SubmitSmResp(resp) = r.body else { panic!("{r:?}") };
                resp.message_id.to_str_lossy().into_owned()
            })
            .collect();
        assert_eq!(ids[0], ids[1], "one message for both parts");
        let m = s.store.message(s.account, MessageId::parse(&ids[0]).unwrap()).await.unwrap().unwrap();
        assert_eq!((m.body.as_str(), m.segments), (long.as_str(), 2));
    }
    let whole = Body::SubmitSm(SubmitSm {
        source_addr: "Acme".into(),
        source_addr_ton: 5,
        dest_addr_ton: 1,
        destination_addr: "447700900125".into(),
        tlvs: smpp::Tlvs(vec![smpp::Tlv::MessagePayload(smpp::tlv::Bounded(smpp::Octets(long.as_bytes().to_vec())))]),
        ..Default::default()
    });
    let r = c.request(whole).await.unwrap();
    let Body::SubmitSmResp(resp) = r.body else { panic!("{r:?}") };
    let m = s.store.message(s.account, MessageId::parse(&resp.message_id.to_str_lossy()).unwrap()).await.unwrap();
    assert_eq!(m.unwrap().body, long);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_of_parts_that_never_completes_is_refused_and_not_stored() {
    let s = setup().await;
    let c = bind_as(&s, BindKind::Transmitter, "acme", "secret").await.unwrap();
    let first_of_two = Body::SubmitSm(SubmitSm {
        esm_class: 0x40,
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        destination_addr: "447700900125".into(),
        short_message: smpp::ShortMessage::new(vec![5, 0, 3, 9, 2, 1, b'h', b'i']),
        ..Default::default()
    });
    let r = c.request(first_of_two).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_RSUBMITFAIL, "refused after the wait: {r:?}");
    let stored = s.store.list_messages(s.account, &smsgate_store::ListFilter::default(), None, 10).await.unwrap();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_go_back_to_the_client_as_deliver_sm() {
    let s = setup().await;
    let (handler, mut got) = inbox(0);
    let c = bind_with(&s, BindKind::Transceiver, "acme", "secret", handler).await.unwrap();
    let id = id_of(&c.request(with_receipt(submit("447700900125", "Receipt, please"), 1)).await.unwrap());
    let d = next_deliver(&mut got).await;
    let (receipted, state, text) = receipt_of(&d);
    assert_eq!((receipted.as_str(), state), (id.as_str(), 2));
    assert_eq!(
        (text.id.as_str(), text.stat.stat(), text.dlvrd, text.text.as_str()),
        (id.as_str(), "DELIVRD", 1, "Receipt, please")
    );
    // From the handset to the sender, as SMSCs write receipts.
    assert_eq!((d.source_addr.to_str_lossy(), d.dest_addr_ton), ("447700900125".into(), 5));
    assert_eq!(d.destination_addr.to_str_lossy(), "Acme");
    // Without registered_delivery, none; with failures only (2), none for a delivered message; an undelivered
    // one (the built-in network's ending 0002) gets its UNDELIV.
    c.request(submit("447700900126", "no receipt")).await.unwrap();
    c.request(with_receipt(submit("447700900127", "failures only"), 2)).await.unwrap();
    let failing = id_of(&c.request(with_receipt(submit("447700900002", "failures only"), 2)).await.unwrap());
    let d = next_deliver(&mut got).await;
    let (receipted, state, text) = receipt_of(&d);
    assert_eq!((receipted.as_str(), state, text.stat.stat()), (failing.as_str(), 5, "UNDELIV"));
    // Nothing else: a message sent after them, with a receipt asked for, gets the next deliver_sm.
    let marker = id_of(&c.request(with_receipt(submit("447700900128", "marker"), 1)).await.unwrap());
    let (receipted, _, _) = receipt_of(&next_deliver(&mut got).await);
    assert_eq!(receipted, marker, "nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_wait_for_a_receiver_and_are_retried_until_taken() {
    let s = setup().await;
    let t = bind_as(&s, BindKind::Transmitter, "acme_tx", "secret").await.unwrap();
    // An intermediate notification (sent) and the final receipt.
    let id = id_of(&t.request(with_receipt(submit("447700900125", "held"), 0x11)).await.unwrap());
    let deadline = tokio::time::Instant::now() + WITHIN;
    let message = MessageId::parse(&id).unwrap();
    while s.store.message(s.account, message).await.unwrap().unwrap().status != Status::Delivered {
        assert!(tokio::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.store.count_pending_smpp_deliveries().await.unwrap(), 2, "held while no receiver is bound");
    // A receiver of the same account (another system_id) takes them, in order; it refuses the first once, which
    // comes again.
    let (handler, mut got) = inbox(1);
    let _r = bind_with(&s, BindKind::Receiver, "acme", "secret", handler).await.unwrap();
    let first = next_deliver(&mut got).await;
    assert_eq!(first.esm_class & 0x3c, 0x20, "intermediate notification: {first:?}");
    let again = next_deliver(&mut got).await;
    assert_eq!(again, first, "refused, then sent again");
    let last = next_deliver(&mut got).await;
    let (receipted, state, _) = receipt_of(&last);
    assert_eq!((receipted.as_str(), state), (id.as_str(), 2));
    let deadline = tokio::time::Instant::now() + WITHIN;
    while s.store.count_pending_smpp_deliveries().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not recorded as taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_that_each_ask_for_a_receipt_get_their_own_ids() {
    let s = setup().await;
    let (handler, mut got) = inbox(0);
    let c = bind_with(&s, BindKind::Transceiver, "acme", "secret", handler).await.unwrap();
    let long = "Each part of this long text asks for a receipt of its own. ".repeat(3);
    let plan = sms_text::plan(&long, &sms_text::Options::default()).unwrap();
    let parts: Vec<Body> = plan
        .segments
        .iter()
        .map(|seg| {
            Body::SubmitSm(SubmitSm {
                esm_class: 0x40,
                registered_delivery: 1,
                source_addr_ton: 5,
                source_addr: "Acme".into(),
                dest_addr_ton: 1,
                destination_addr: "447700900125".into(),
                short_message: smpp::ShortMessage::new(seg.short_message()),
                ..Default::default()
            })
        })
        .collect();
    let answers = futures_util::future::join_all(parts.into_iter().map(|p| c.request(p))).await;
    let ids: Vec<String> = answers.iter().map(|r| id_of(r.as_ref().unwrap())).collect();
    let whole = ids[0].rsplit_once('.').unwrap().0.to_string();
    let want: Vec<String> = (1..=ids.len()).map(|i| format!("{whole}.{i}")).collect();
    assert_eq!(ids, want);
    let mut receipted = Vec::new();
    for _ in &ids {
        receipted.push(receipt_of(&next_deliver(&mut got).await).0);
    }
    receipted.sort();
    assert_eq!(receipted, want);
    // query_sm takes a part's id too.
    let q = Body::QuerySm(QuerySm { message_id: ids[1].as_str().into(), ..Default::default() });
    let r = c.request(q).await.unwrap();
    let Body::QuerySmResp(q) = r.body else { panic!("{r:?}") };
    assert_eq!(q.message_state, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_messages_go_to_the_accounts_receivers() {
    let s = setup().await;
    let (handler, mut got) = inbox(0);
    let _c = bind_with(&s, BindKind::Receiver, "acme", "secret", handler).await.unwrap();
    let now = smsgate_core::Timestamp::now();
    let reply = |body: &str| smsgate_core::Message {
        id: MessageId::generate(),
        account_id: s.account,
        direction: smsgate_core::Direction::Inbound,
        to: "Acme".into(),
        from: "+447700900125".into(),
        body: body.into(),
        encoding: "gsm7".into(),
        segments: 1,
        price_micros: None,
        connector: None,
        carrier_id: None,
        status: Status::Received,
        error_code: None,
        reference: None,
        callback_url: None,
        callback_statuses: None,
        send_at: None,
        expires_at: None,
        attempts: 0,
        category: Default::default(),
        created_at: now,
        updated_at: now,
    };
    let long = "Ünïcode reply that is long enough to need more than one part of seventy characters. ".repeat(2);
    s.store
        .insert_messages(&[
            smsgate_store::NewMessage::new(reply("YES"), "received"),
            smsgate_store::NewMessage::new(reply(&long), "received"),
        ])
        .await
        .unwrap();
    // The two messages go side by side; a long one's parts in order.
    let plan = sms_text::plan(&long, &sms_text::Options::default()).unwrap();
    let mut all = Vec::new();
    for _ in 0..=plan.segments.len() {
        all.push(next_deliver(&mut got).await);
    }
    let (short, parts): (Vec<SubmitSm>, Vec<SubmitSm>) = all.into_iter().partition(|d| d.esm_class == 0);
    let first = &short[0];
    assert_eq!((first.data_coding, first.short_message.as_bytes()), (0, b"YES".as_slice()));
    assert_eq!((first.source_addr.to_str_lossy(), first.source_addr_ton), ("447700900125".into(), 1));
    let mut text = String::new();
    for p in &parts {
        assert_eq!((p.esm_class, p.data_coding), (0x40, 8));
        let d = sms_text::decode::decode_short_message(8, true, p.short_message.as_bytes()).unwrap();
        text.push_str(&d.text.unwrap());
    }
    assert_eq!(text, long);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sm_submit_multi_cancel_and_replace() {
    use smpp::pdu::{CancelSm, DataSm, DestAddress, DestAddresses, ReplaceSm, SubmitMulti};
    let s = setup().await;
    let c = bind_as(&s, BindKind::Transceiver, "acme", "secret").await.unwrap();
    let stored = |id: &str| {
        let (store, account, id) = (s.store.clone(), s.account, MessageId::parse(id).unwrap());
        async move { store.message(account, id).await.unwrap().unwrap() }
    };
    // data_sm: the text in message_payload.
    let data = Body::DataSm(DataSm {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        destination_addr: "447700900125".into(),
        tlvs: smpp::Tlvs(vec![smpp::Tlv::MessagePayload(smpp::tlv::Bounded(smpp::Octets(b"by data sm".to_vec())))]),
        ..Default::default()
    });
    let r = c.request(data).await.unwrap();
    let Body::DataSmResp(resp) = &r.body else { panic!("{r:?}") };
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    assert_eq!(stored(&resp.message_id.to_str_lossy()).await.body, "by data sm");

    // submit_multi: two good destinations, a bad one and a distribution list; the bad ones are listed.
    let dest = |n: &str| DestAddress::SmeAddress { dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: n.into() };
    let multi = Body::SubmitMulti(SubmitMulti {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_address: DestAddresses(vec![
            dest("447700900131"),
            dest("12"),
            DestAddress::DistributionList { dl_name: "staff".into() },
            dest("447700900132"),
        ]),
        short_message: smpp::ShortMessage::new(b"to many".to_vec()),
        ..Default::default()
    });
    let r = c.request(multi).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK, "{r:?}");
    let Body::SubmitMultiResp(resp) = &r.body else { panic!("{r:?}") };
    let refused: Vec<_> = resp.unsuccess_sme.0.iter().map(|u| u.error_status_code).collect();
    assert_eq!(refused, vec![CommandStatus::ESME_RINVDSTADR, CommandStatus::ESME_RINVDLNAME]);
    assert_eq!(stored(&resp.message_id.to_str_lossy()).await.to, "+447700900131");
    let to_many = ListFilter { to: Some("+447700900132".into()), ..ListFilter::default() };
    assert_eq!(s.store.list_messages(s.account, &to_many, None, 10).await.unwrap().len(), 1);

    // A scheduled submit (relative: in ten minutes) with a validity of an hour after it; replaced, then canceled.
    let scheduled = |to: &str, text: &str| {
        Body::SubmitSm(SubmitSm {
            source_addr_ton: 5,
            source_addr: "Acme".into(),
            dest_addr_ton: 1,
            destination_addr: to.into(),
            schedule_delivery_time: smpp::TimeString::new("000000001000000R").unwrap(),
            validity_period: smpp::TimeString::new("000000010000000R").unwrap(),
            short_message: smpp::ShortMessage::new(text.as_bytes()),
            ..Default::default()
        })
    };
    let id = id_of(&c.request(scheduled("447700900133", "first text")).await.unwrap());
    let m = stored(&id).await;
    assert_eq!(m.status, Status::Scheduled);
    let wait = m.send_at.unwrap().0 - m.created_at.0;
    assert!((599_000..=601_000).contains(&wait), "in ten minutes: {wait}");
    // A relative validity counts from now (SMPP 3.4 7.1.1.2), not from the schedule.
    assert!((3_599_000..=3_601_000).contains(&(m.expires_at.unwrap().0 - m.created_at.0)));
    let replace = Body::ReplaceSm(ReplaceSm {
        message_id: id.as_str().into(),
        short_message: smpp::ShortMessage::new(b"second text".to_vec()),
        ..Default::default()
    });
    assert_eq!(c.request(replace).await.unwrap().command_status, CommandStatus::ESME_ROK);
    let m = stored(&id).await;
    assert_eq!((m.body.as_str(), m.status), ("second text", Status::Scheduled));
    let cancel = |id: &str| Body::CancelSm(CancelSm { message_id: id.into(), ..Default::default() });
    assert_eq!(c.request(cancel(&id)).await.unwrap().command_status, CommandStatus::ESME_ROK);
    assert_eq!(stored(&id).await.status, Status::Canceled);
    // Twice: nothing left to cancel or replace.
    assert_eq!(c.request(cancel(&id)).await.unwrap().command_status, CommandStatus::ESME_RCANCELFAIL);
    let replace = Body::ReplaceSm(ReplaceSm {
        message_id: id.as_str().into(),
        short_message: smpp::ShortMessage::new(b"too late".to_vec()),
        ..Default::default()
    });
    assert_eq!(c.request(replace).await.unwrap().command_status, CommandStatus::ESME_RREPLACEFAIL);
    assert_eq!(c.request(cancel("nope")).await.unwrap().command_status, CommandStatus::ESME_RINVMSGID);
    // Without an id: every waiting message from that source to that destination.
    let a = id_of(&c.request(scheduled("447700900134", "one")).await.unwrap());
    let b = id_of(&c.request(scheduled("447700900134", "two")).await.unwrap());
    let other = id_of(&c.request(scheduled("447700900135", "three")).await.unwrap());
    let by_address = Body::CancelSm(CancelSm {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        destination_addr: "447700900134".into(),
        ..Default::default()
    });
    assert_eq!(c.request(by_address).await.unwrap().command_status, CommandStatus::ESME_ROK);
    assert_eq!((stored(&a).await.status, stored(&b).await.status), (Status::Canceled, Status::Canceled));
    assert_eq!(stored(&other).await.status, Status::Scheduled);

    // Times that make no sense.
    let bad = |schedule: &str, validity: &str| {
        Body::SubmitSm(SubmitSm {
            source_addr_ton: 5,
            source_addr: "Acme".into(),
            dest_addr_ton: 1,
            destination_addr: "447700900125".into(),
            schedule_delivery_time: smpp::TimeString::new(schedule).unwrap_or_default(),
            validity_period: smpp::TimeString::new(validity).unwrap_or_default(),
            short_message: smpp::ShortMessage::new(b"x".to_vec()),
            ..Default::default()
        })
    };
    // A validity that ends before the message is due.
    let r = c.request(bad("000000001000000R", "000000000100000R")).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_RINVEXPIRY);
    // One that ended long ago (absolute, 2001).
    let r = c.request(bad("", "010101000000000+")).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_RINVEXPIRY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_throughput_is_answered_with_throttled() {
    let s = setup().await;
    let c = bind_as(&s, BindKind::Transmitter, "acme_slow", "secret").await.unwrap();
    // 2 a second, a second's worth at once: of ten submits sent together, the first two go and the rest are
    // throttled, but for what the time they took let through.
    let started = tokio::time::Instant::now();
    let answers =
        futures_util::future::join_all((0..10).map(|i| c.request(submit("447700900125", &format!("n{i}"))))).await;
    let allowed = 2 + (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    let statuses: Vec<CommandStatus> = answers.into_iter().map(|r| r.unwrap().command_status).collect();
    let ok = statuses.iter().filter(|s| **s == CommandStatus::ESME_ROK).count();
    let throttled = statuses.iter().filter(|s| **s == CommandStatus::ESME_RTHROTTLED).count();
    assert_eq!(ok + throttled, 10, "{statuses:?}");
    assert!((2..=allowed).contains(&ok) && throttled > 0, "{ok} of 10 went, {allowed} allowed: {statuses:?}");
    // The bucket fills again at 2 a second: a submit goes within a second or so.
    let deadline = tokio::time::Instant::now() + WITHIN;
    while c.request(submit("447700900125", "later")).await.unwrap().command_status != CommandStatus::ESME_ROK {
        assert!(tokio::time::Instant::now() < deadline, "the throughput never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A submit_multi takes a token a destination: with the bucket full again (two), of six destinations the
    // first two go, the rest are throttled, each in the answer's unsuccess list.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dests = (0..6)
        .map(|i| smpp::pdu::DestAddress::SmeAddress {
            dest_addr_ton: 1,
            dest_addr_npi: 1,
            destination_addr: format!("44770090014{i}").as_str().into(),
        })
        .collect();
    let multi = Body::SubmitMulti(smpp::pdu::SubmitMulti {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_address: smpp::pdu::DestAddresses(dests),
        short_message: smpp::ShortMessage::new(b"to many".to_vec()),
        ..Default::default()
    });
    let started = tokio::time::Instant::now();
    let r = c.request(multi).await.unwrap();
    let allowed = 2 + (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    let Body::SubmitMultiResp(resp) = &r.body else { panic!("{r:?}") };
    assert_eq!(r.command_status, CommandStatus::ESME_ROK, "{r:?}");
    let throttled =
        resp.unsuccess_sme.0.iter().filter(|u| u.error_status_code == CommandStatus::ESME_RTHROTTLED).count();
    assert_eq!(throttled, resp.unsuccess_sme.0.len(), "{resp:?}");
    assert!(
        6 - throttled <= allowed && (throttled > 0 || allowed >= 6),
        "{} of 6 went, {allowed} allowed",
        6 - throttled
    );
}

/// A receiver that takes deliver_sm and never answers.
struct Silent(tokio::sync::mpsc::UnboundedSender<SubmitSm>);

#[async_trait]
impl Handler for Silent {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        if let Body::DeliverSm(d) = request.body {
            let _ = self.0.send(d);
        }
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_with_a_receipt_unanswered_gets_it_when_it_binds_again() {
    let s = setup().await;
    let t = bind_as(&s, BindKind::Transmitter, "acme_tx", "secret").await.unwrap();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let first = bind_with(&s, BindKind::Receiver, "acme", "secret", Arc::new(Silent(tx))).await.unwrap();
    let id = id_of(&t.request(with_receipt(submit("447700900125", "pending"), 1)).await.unwrap());
    // It reaches the first receiver, which goes away without answering.
    let d = next_deliver(&mut seen).await;
    assert_eq!(receipt_of(&d).0, id);
    first.close();
    // Bound again: the same receipt comes (the duplicate SMPP cannot prevent: the first answer never came).
    let (handler, mut got) = inbox(0);
    let deadline = tokio::time::Instant::now() + WITHIN;
    while s.server.binds("acme") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first bind was not given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _again = bind_with(&s, BindKind::Receiver, "acme", "secret", handler).await.unwrap();
    let d = next_deliver(&mut got).await;
    assert_eq!(receipt_of(&d).0, id);
    let deadline = tokio::time::Instant::now() + WITHIN;
    while s.store.count_pending_smpp_deliveries().await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "not recorded as taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_has_a_share_of_the_parts_buffer() {
    let s =
        setup_with(Settings { parts_wait: Duration::from_secs(5), parts_per_account: 2, ..Settings::default() }).await;
    second_account(&s).await;
    let acme = bind_as(&s, BindKind::Transmitter, "acme_tx", "secret").await.unwrap();
    let other = bind_as(&s, BindKind::Transmitter, "globex", "secret").await.unwrap();
    let part = |from: &str, reference: u16, seq: u8| {
        Body::SubmitSm(SubmitSm {
            source_addr_ton: 5,
            source_addr: from.into(),
            dest_addr_ton: 1,
            destination_addr: "447700900125".into(),
            short_message: smpp::ShortMessage::new(format!("part {seq} of set {reference} ").into_bytes()),
            tlvs: smpp::Tlvs(vec![
                smpp::Tlv::SarMsgRefNum(reference),
                smpp::Tlv::SarTotalSegments(2),
                smpp::Tlv::SarSegmentSeqnum(seq),
            ]),
            ..Default::default()
        })
    };
    // Acme opens its two sets; their answers wait for the second parts.
    let waiting: Vec<_> = [1u16, 2]
        .into_iter()
        .map(|r| {
            let (acme, first) = (acme.clone(), part("Acme", r, 1));
            tokio::spawn(async move { acme.request(first).await.unwrap().command_status })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while s.server.parts_open(s.account) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the first parts were not held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A third set of Acme's is refused: its share is full.
    let third = acme.request(part("Acme", 3, 1)).await.unwrap();
    assert_eq!(third.command_status, CommandStatus::ESME_RTHROTTLED, "{third:?}");
    // Globex's set goes through whole: nobody's share is its.
    let (a, b) = tokio::join!(other.request(part("Globex", 1, 1)), other.request(part("Globex", 1, 2)));
    assert_eq!(
        (a.unwrap().command_status, b.unwrap().command_status),
        (CommandStatus::ESME_ROK, CommandStatus::ESME_ROK)
    );
    // And Acme's sets were not evicted: their second parts complete them.
    for r in [1u16, 2] {
        assert_eq!(acme.request(part("Acme", r, 2)).await.unwrap().command_status, CommandStatus::ESME_ROK);
    }
    for w in waiting {
        assert_eq!(w.await.unwrap(), CommandStatus::ESME_ROK);
    }
    // Whole, they leave the share: a new set is taken.
    let (a, b) = tokio::join!(acme.request(part("Acme", 4, 1)), acme.request(part("Acme", 4, 2)));
    assert_eq!(
        (a.unwrap().command_status, b.unwrap().command_status),
        (CommandStatus::ESME_ROK, CommandStatus::ESME_ROK)
    );
}

/// A second account, Globex, with credentials `globex`/`secret` and leave to send from any sender.
async fn second_account(s: &Setup) -> AccountId {
    let globex = s.store.create_account("globex", false, Timestamp(1)).await.unwrap().id;
    s.store.set_sender_policy(globex, smsgate_core::senders::SenderPolicy::Any).await.unwrap();
    let c = SmppCredential {
        system_id: "globex".into(),
        account_id: globex,
        password_hash: hash_password("secret"),
        allowed_ips: None,
        max_binds: None,
        throughput: None,
        created_at: Timestamp(1),
    };
    assert!(s.store.create_smpp_credential(&c).await.unwrap());
    globex
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_holds_only_its_own_receipts() {
    let settings = Settings { deliver_per_account: 4, ..Settings::default() };
    let s = setup_with(settings).await;
    second_account(&s).await;
    // Acme's client takes deliver_sm and never answers them; its receipts pile up, a few at a time.
    let (tx, mut held) = tokio::sync::mpsc::unbounded_channel();
    let acme = bind_with(&s, BindKind::Transceiver, "acme_tx", "secret", Arc::new(Silent(tx))).await.unwrap();
    for wave in 0..6 {
        let sends = (0..4).map(|i| acme.request(with_receipt(submit(&format!("4477009003{wave}{i}"), "held"), 1)));
        for r in futures_util::future::join_all(sends).await {
            assert_eq!(r.unwrap().command_status, CommandStatus::ESME_ROK);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut unanswered = 0;
    while unanswered < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the silent client got no deliver_sm");
        if tokio::time::timeout(Duration::from_millis(100), held.recv()).await.is_ok_and(|d| d.is_some()) {
            unanswered += 1;
        }
    }
    // Globex's receipt comes at once, though Acme's wait for answers that never come.
    let (handler, mut got) = inbox(0);
    let globex = bind_with(&s, BindKind::Transceiver, "globex", "secret", handler).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut mine = submit("447700900399", "mine");
    if let Body::SubmitSm(m) = &mut mine {
        m.source_addr = "Globex".into();
    }
    let id = id_of(&globex.request(with_receipt(mine, 1)).await.unwrap());
    let (receipted, _, _) = receipt_of(&next_deliver(&mut got).await);
    assert_eq!(receipted, id);
    assert!(started.elapsed() < Duration::from_secs(5), "held behind the silent client: {:?}", started.elapsed());
    // Acme never has more than its share sent and unanswered.
    let mut more = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), held.recv()).await {
        more += 1;
    }
    assert!(unanswered + more <= 4 + 4, "{} sent to the silent client", unanswered + more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_number_is_refused_on_every_submit_on_sqlite() {
    let s = setup().await;
    an_opted_out_number_is_refused_on_every_submit(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_number_is_refused_on_every_submit_on_postgres() {
    let (s, schema) = setup_on_postgres().await;
    an_opted_out_number_is_refused_on_every_submit(&s).await;
    drop_schema(s, schema).await;
}

/// A number that opted out of the account's texts is refused on every SMPP submit: `submit_sm` and `data_sm` with
/// ESME_RX_R_APPN (0x66), `submit_multi` listing it among the unsuccessful destinations; nothing is stored for it.
async fn an_opted_out_number_is_refused_on_every_submit(s: &Setup) {
    use smpp::pdu::{DataSm, DestAddress, DestAddresses, SubmitMulti};
    let consent = s.engine.consent();
    let event = smsgate_store::ConsentEvent {
        id: "stop-1".into(),
        account_id: s.account,
        phone_hash: consent.hash("+447700900141"),
        phone: Some("+447700900141".into()),
        scope: String::new(),
        opted_out: true,
        source: smsgate_core::consent::Source::Keyword,
        evidence: "{}".into(),
        at: Timestamp(1),
    };
    assert!(consent.record(s.store.as_ref(), &event).await.unwrap());
    let c = bind_as(s, BindKind::Transceiver, "acme", "secret").await.unwrap();
    let r = c.request(submit("447700900141", "sale")).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_RX_R_APPN);
    let data = Body::DataSm(DataSm {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        destination_addr: "447700900141".into(),
        tlvs: smpp::Tlvs(vec![smpp::Tlv::MessagePayload(smpp::tlv::Bounded(smpp::Octets(b"sale".to_vec())))]),
        ..Default::default()
    });
    assert_eq!(c.request(data).await.unwrap().command_status, CommandStatus::ESME_RX_R_APPN);
    let dest = |n: &str| DestAddress::SmeAddress { dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: n.into() };
    let multi = Body::SubmitMulti(SubmitMulti {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_address: DestAddresses(vec![dest("447700900141"), dest("447700900142")]),
        short_message: smpp::ShortMessage::new(b"sale".to_vec()),
        ..Default::default()
    });
    let r = c.request(multi).await.unwrap();
    let Body::SubmitMultiResp(resp) = &r.body else { panic!("{r:?}") };
    let refused: Vec<_> = resp.unsuccess_sme.0.iter().map(|u| u.error_status_code).collect();
    assert_eq!(refused, vec![CommandStatus::ESME_RX_R_APPN]);
    let to = ListFilter { to: Some("+447700900141".into()), ..ListFilter::default() };
    assert!(s.store.list_messages(s.account, &to, None, 10).await.unwrap().is_empty(), "nothing stored for it");
    // Opted back in: it goes.
    let back = smsgate_store::ConsentEvent { id: "start-1".into(), opted_out: false, scope: "*".into(), ..event };
    assert!(consent.record(s.store.as_ref(), &back).await.unwrap());
    id_of(&c.request(submit("447700900141", "hello again")).await.unwrap());
}
