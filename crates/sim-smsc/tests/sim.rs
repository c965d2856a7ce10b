#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! The simulator over real loopback TCP, driven by SMPP sessions as a client application would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sim_smsc::{SimConfig, SimSmsc};
use smpp::pdu::{Bind, SubmitSm, SubmitSmResp};
use smpp::receipt::{MessageState, Receipt};
use smpp::tlv::Tlv;
use smpp::{Body, CommandStatus, Pdu};
use smpp_session::{BindError, BindKind, Config, Handler, Session, bind};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(10);

/// What a client got: each deliver_sm, answered OK.
struct Inbox(mpsc::UnboundedSender<SubmitSm>);

#[async_trait]
impl Handler for Inbox {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        if let Body::DeliverSm(d) = request.body {
            let _ = self.0.send(d);
        }
        (CommandStatus::ESME_ROK, Body::DeliverSmResp(SubmitSmResp::default()))
    }
}

struct Sim {
    addr: SocketAddr,
    smsc: SimSmsc,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn sim(config: SimConfig) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let smsc = SimSmsc::new(config);
    let stop = CancellationToken::new();
    tokio::spawn({
        let (smsc, stop) = (smsc.clone(), stop.clone());
        async move { smsc.serve(listener, stop).await }
    });
    Sim { addr, smsc, stop }
}

async fn client(
    sim: &Sim,
    kind: BindKind,
    id: &str,
    password: &str,
) -> Result<(Session, mpsc::UnboundedReceiver<SubmitSm>), BindError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = TcpStream::connect(sim.addr).await.unwrap();
    let creds = Bind { system_id: id.into(), password: password.into(), interface_version: 0x34, ..Default::default() };
    let (session, _) = bind(stream, kind, creds, Config::default(), Arc::new(Inbox(tx))).await?;
    Ok((session, rx))
}

fn submit(to: &str, text: &str) -> Body {
    Body::SubmitSm(SubmitSm {
        source_addr: "Acme".into(),
        destination_addr: to.into(),
        registered_delivery: 1,
        short_message: smpp::ShortMessage::new(text.as_bytes()),
        ..Default::default()
    })
}

/// Submits; the id on success, the status otherwise.
async fn send(s: &Session, to: &str, text: &str) -> Result<String, CommandStatus> {
    let r = s.request(submit(to, text)).await.expect("answered");
    match (r.command_status, r.body) {
        (CommandStatus::ESME_ROK, Body::SubmitSmResp(resp)) => Ok(resp.message_id.to_str_lossy().into_owned()),
        (status, _) => Err(status),
    }
}

/// A receipt's id (from the TLV), its state (from the TLV) and its text.
fn read(d: &SubmitSm) -> (String, u8, Receipt) {
    assert_eq!(d.esm_class, 0x04, "a receipt");
    let id = d.tlvs.0.iter().find_map(|t| match t {
        Tlv::ReceiptedMessageId(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    });
    let state = d.tlvs.0.iter().find_map(|t| match t {
        Tlv::MessageState(s) => Some(*s),
        _ => None,
    });
    let text = Receipt::parse(&String::from_utf8_lossy(d.short_message.as_bytes())).expect("a receipt text");
    (id.expect("receipted_message_id"), state.expect("message_state"), text)
}

#[tokio::test]
async fn submits_get_ids_and_receipts_with_the_magic_faults() {
    let sim = sim(SimConfig { receipt_delay: Duration::from_millis(20), ..SimConfig::default() }).await;
    let (c, mut receipts) = client(&sim, BindKind::Transceiver, "acme", "any").await.unwrap();
    let delivered = send(&c, "447700900125", "hello").await.unwrap();
    let undelivered = send(&c, "447700900002", "hello").await.unwrap();
    let silent = send(&c, "447700900003", "hello").await.unwrap();
    assert_eq!(send(&c, "447700900001", "hello").await, Err(CommandStatus::ESME_RINVDSTADR));
    // 0004: throttled twice, then taken.
    assert_eq!(send(&c, "447700900004", "again").await, Err(CommandStatus::ESME_RTHROTTLED));
    assert_eq!(send(&c, "447700900004", "again").await, Err(CommandStatus::ESME_RTHROTTLED));
    let third = send(&c, "447700900004", "again").await.unwrap();
    let ids = [&delivered, &undelivered, &silent, &third];
    assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), 4, "distinct ids: {ids:?}");
    let mut got = HashMap::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(BOUND, receipts.recv()).await.unwrap().unwrap();
        let (id, state, text) = read(&d);
        assert_eq!(text.id, id);
        assert_eq!(d.destination_addr.as_bytes(), b"Acme", "back to the sender");
        got.insert(id, (state, text.stat));
    }
    assert_eq!(got[&delivered], (2, MessageState::Delivered));
    assert_eq!(got[&undelivered], (5, MessageState::Undeliverable));
    assert_eq!(got[&third], (2, MessageState::Delivered));
    // 0003 never gets one.
    assert!(tokio::time::timeout(Duration::from_millis(300), receipts.recv()).await.is_err());
    let n = sim.smsc.counters();
    assert_eq!(n.receipts_sent.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[tokio::test]
async fn receipts_wait_for_a_receiver_to_bind() {
    let sim = sim(SimConfig { receipt_delay: Duration::from_millis(10), ..SimConfig::default() }).await;
    let (tx, _) = client(&sim, BindKind::Transmitter, "acme", "x").await.unwrap();
    let id = send(&tx, "447700900125", "hello").await.unwrap();
    // The receipt comes due with no receiver bound: held. A receiver bind is refused submits; it gets it.
    let deadline = tokio::time::Instant::now() + BOUND;
    while sim.smsc.counters().receipts_retried.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the receipt never came due");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (rx, mut receipts) = client(&sim, BindKind::Receiver, "acme", "x").await.unwrap();
    assert_eq!(send(&rx, "447700900125", "no").await, Err(CommandStatus::ESME_RINVBNDSTS));
    let d = tokio::time::timeout(BOUND, receipts.recv()).await.unwrap().unwrap();
    assert_eq!(read(&d).0, id);
    // Another account's receiver gets nothing of it.
    let (_, mut others) = client(&sim, BindKind::Receiver, "other", "x").await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), others.recv()).await.is_err());
}

#[tokio::test]
async fn configured_credentials_and_throttling() {
    let credentials = HashMap::from([("acme".to_string(), "secret".to_string())]);
    let sim = sim(SimConfig { credentials: Some(credentials), throttle: Some(5), ..SimConfig::default() }).await;
    assert!(matches!(
        client(&sim, BindKind::Transceiver, "acme", "wrong").await,
        Err(BindError::Refused(CommandStatus::ESME_RINVPASWD))
    ));
    assert!(matches!(
        client(&sim, BindKind::Transceiver, "nobody", "secret").await,
        Err(BindError::Refused(CommandStatus::ESME_RINVSYSID))
    ));
    let (c, _) = client(&sim, BindKind::Transceiver, "acme", "secret").await.unwrap();
    let mut results = Vec::new();
    for i in 0..8 {
        results.push(send(&c, &format!("4477009{i:04}5"), "hi").await.is_ok());
    }
    // Five a second: the first five of a quick burst, then throttled (unless a second passed meanwhile).
    assert!(results[..5].iter().all(|ok| *ok), "{results:?}");
    assert!(results[5..].iter().any(|ok| !ok), "{results:?}");
}

#[tokio::test]
async fn handsets_keep_their_last_messages() {
    let sim = sim(SimConfig { keep_inboxes: true, ..SimConfig::default() }).await;
    let (c, _) = client(&sim, BindKind::Transmitter, "acme", "x").await.unwrap();
    for i in 0..25 {
        send(&c, "447700900125", &format!("message {i}")).await.unwrap();
    }
    let ucs2 = Body::SubmitSm(SubmitSm {
        source_addr: "Acme".into(),
        destination_addr: "447700900135".into(),
        data_coding: 8,
        short_message: smpp::ShortMessage::new(vec![0x04, 0x1F, 0x04, 0x40, 0x04, 0x38]),
        ..Default::default()
    });
    assert_eq!(c.request(ucs2).await.unwrap().command_status, CommandStatus::ESME_ROK);
    let inbox = sim.smsc.inbox("+447700900125");
    assert_eq!(inbox.len(), sim_smsc::INBOX_KEPT);
    assert_eq!((inbox[0].text.as_str(), inbox[19].text.as_str()), ("message 5", "message 24"));
    assert_eq!(inbox[19].from, "Acme");
    assert_eq!(sim.smsc.inbox("447700900135")[0].text, "При");
    assert!(sim.smsc.inbox("+1555").is_empty());
}
