#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! The SMPP server on real loopback TCP over a real SQLite store and engine: binds checked against credentials,
//! submits answered only once stored, query_sm following the message to `delivered`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use smpp::pdu::{Bind, QuerySm, SubmitSm};
use smpp::{Body, CommandStatus, Pdu};
use smpp_server::SmppServer;
use smpp_session::{BindError, BindKind, Handler, Session};
use smsgate_connectors::Kit;
use smsgate_connectors::sim::SimNetwork;
use smsgate_core::access::hash_password;
use smsgate_core::{AccountId, MessageId, Status, Timestamp};
use smsgate_engine::ingress::Ingress;
use smsgate_engine::registry::Registry;
use smsgate_engine::{Config, Engine};
use smsgate_store::{SmppCredential, Store};
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
    let path = std::env::temp_dir().join(format!("smsgate-smpp-server-{}.db", MessageId::generate()));
    let store = smsgate_store::open(&format!("sqlite://{}", path.display()), 4).await.unwrap();
    let account = store.create_account("acme", false, Timestamp(1)).await.unwrap().id;
    for (system_id, allowed, max) in [("acme", None, Some(1)), ("acme_lan", Some(vec!["10.0.0.0/8".to_string()]), None)]
    {
        let c = SmppCredential {
            system_id: system_id.into(),
            account_id: account,
            password_hash: hash_password("secret"),
            allowed_ips: allowed,
            max_binds: max,
            throughput: None,
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
    let ingress = Ingress::spawn(engine, store.clone(), Arc::default());
    let wait = Duration::from_millis(300);
    let server = SmppServer::parts_wait(store.clone(), ingress, smpp_session::Config::default(), wait);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let (server, stop) = (server.clone(), stop.clone());
        async move { server.serve(listener, stop).await }
    });
    Setup { addr, store, account, server, stop, path }
}

async fn bind_as(s: &Setup, kind: BindKind, id: &str, password: &str) -> Result<Session, BindError> {
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let creds = Bind { system_id: id.into(), password: password.into(), interface_version: 0x34, ..Default::default() };
    smpp_session::bind(stream, kind, creds, smpp_session::Config::default(), Arc::new(Nothing)).await.map(|(s, _)| s)
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
    assert_eq!(refused(bind_as(&s, BindKind::Transceiver, "acme", "wrong").await), CommandStatus::ESME_RINVPASWD);
    assert_eq!(refused(bind_as(&s, BindKind::Transceiver, "nobody", "secret").await), CommandStatus::ESME_RINVSYSID);
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
