#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! The `smpp` connector against the SMSC simulator (`sim-smsc`) on real loopback TCP: binds, submits in each
//! concatenation style, the SMSC's refusals mapped to temporary or permanent errors, receipts matched to the ids the
//! submits got, and rebinding after the SMSC goes away and comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sim_smsc::{SimConfig, SimSmsc};
use smsgate_connectors::sim::SimNetwork;
use smsgate_connectors::testing::message;
use smsgate_connectors::{Connector, ConnectorEvent, Kit, ReceiptState, SubmitError};
use smsgate_core::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(10);

/// Runs the simulator on `listener` until the token is cancelled.
fn run_sim(listener: TcpListener, config: SimConfig) -> (SimSmsc, CancellationToken) {
    let smsc = SimSmsc::new(config);
    let stop = CancellationToken::new();
    tokio::spawn({
        let (smsc, stop) = (smsc.clone(), stop.clone());
        async move { smsc.serve(listener, stop).await }
    });
    (smsc, stop)
}

fn fast() -> SimConfig {
    SimConfig { receipt_delay: Duration::from_millis(5), ..SimConfig::default() }
}

/// A kit whose connectors report on the returned channel.
fn kit() -> (Kit, mpsc::Receiver<ConnectorEvent>) {
    let (tx, rx) = mpsc::channel(1024);
    (Kit::new(Arc::new(SimNetwork::new(Vec::new(), tx))), rx)
}

fn settings(addr: SocketAddr, extra: serde_json::Value) -> serde_json::Value {
    let mut s = json!({"host": addr.ip().to_string(), "port": addr.port(), "system_id": "acme", "password": "pw",
                       "reconnect_min_ms": 50, "reconnect_max_ms": 200, "response_timeout_ms": 2000});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// A simulator with `config` and a started `smpp` connector to it (default settings), reporting on the channel.
async fn connected(
    config: SimConfig,
) -> (SimSmsc, CancellationToken, Arc<dyn Connector>, mpsc::Receiver<ConnectorEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (smsc, stop) = run_sim(listener, config);
    let (kit, events) = kit();
    let c = kit.build("carrier", "smpp", settings(addr, json!({}))).unwrap();
    c.start();
    (smsc, stop, c, events)
}

/// Submits until it works (the connector binds in the background); the carrier ids.
async fn submit_when_bound(c: &dyn Connector, m: &Message) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        match c.submit(m).await {
            Ok(ids) => return ids,
            Err(SubmitError::NotBound { .. }) => {
                assert!(tokio::time::Instant::now() < deadline, "never bound");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// The next event, kept as the engine keeps it: the connector hands receipts and messages on as
/// [`ConnectorEvent::Durable`] and answers the SMSC once told they are kept.
async fn next_event(rx: &mut mpsc::Receiver<ConnectorEvent>) -> ConnectorEvent {
    match tokio::time::timeout(WITHIN, rx.recv()).await.unwrap().unwrap() {
        ConnectorEvent::Durable(event, kept) => {
            kept.send(true).unwrap();
            *event
        }
        other => panic!("not waiting to be kept: {other:?}"),
    }
}

async fn receipts(rx: &mut mpsc::Receiver<ConnectorEvent>, n: usize) -> Vec<(String, ReceiptState)> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_event(rx).await {
            ConnectorEvent::Receipt(r) => {
                assert_eq!(r.connector, "carrier");
                out.push((r.carrier_id, r.state));
            }
            other => panic!("{other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_and_receipts_in_every_concatenation_style() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (smsc, _stop) = run_sim(listener, fast());
    let (kit, mut events) = kit();
    let long = "a long message ".repeat(20); // 300 characters: 2 parts of GSM 7-bit
    for (style, parts) in [("udh", 2), ("sar", 2), ("payload", 1)] {
        let c = kit.build("carrier", "smpp", settings(addr, json!({"concatenation": style}))).unwrap();
        c.start();
        let ids = submit_when_bound(c.as_ref(), &message("+447700900125", &long)).await;
        assert_eq!(ids.len(), parts, "{style}");
        let mut got = receipts(&mut events, parts).await;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want: Vec<_> = ids.iter().map(|i| (i.clone(), ReceiptState::Delivered)).collect();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{style}");
    }
    // One part, then the faults: 0001 refused for good, 0004 throttled (temporary), 0002 an undelivered receipt.
    let c = kit.build("carrier", "smpp", settings(addr, json!({}))).unwrap();
    c.start();
    let one = submit_when_bound(c.as_ref(), &message("+447700900125", "Hi €")).await;
    assert_eq!(receipts(&mut events, 1).await, vec![(one[0].clone(), ReceiptState::Delivered)]);
    match c.submit(&message("+447700900001", "x")).await {
        Err(SubmitError::Permanent { code, .. }) => assert_eq!(code, "esme_rinvdstadr"),
        other => panic!("{other:?}"),
    }
    match c.submit(&message("+447700900004", "x")).await {
        Err(SubmitError::Throttled { code, .. }) => assert_eq!(code, "esme_rthrottled"),
        other => panic!("{other:?}"),
    }
    let bad = c.submit(&message("+447700900002", "x")).await.unwrap();
    let ConnectorEvent::Receipt(r) = next_event(&mut events).await else { panic!("a receipt") };
    assert_eq!((r.carrier_id.clone(), r.state), (bad[0].clone(), ReceiptState::Undelivered));
    // The carrier's own error code, named by the connector; what the receipt says as the journey's detail.
    assert_eq!(r.error_code.as_deref(), Some("carrier:001"));
    let said = format!("carrier: id:{} sub:001 dlvrd:000 stat:UNDELIV err:001", r.carrier_id);
    assert_eq!(r.detail, said);
    assert!(smsc.counters().binds.load(std::sync::atomic::Ordering::Relaxed) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_again_after_the_smsc_goes_away_and_with_a_transmitter_and_a_receiver() {
    // Nothing listens yet: submits fail temporarily, not_bound.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let (kit, mut events) = kit();
    let c =
        kit.build("carrier", "smpp", settings(addr, json!({"bind": "transmitter_receiver", "sessions": 2}))).unwrap();
    c.start();
    match c.submit(&message("+447700900125", "early")).await {
        Err(e @ SubmitError::NotBound { .. }) => assert_eq!(e.code(), "not_bound"),
        other => panic!("{other:?}"),
    }
    // The SMSC comes up: the connector binds (transmitter and receiver), submits, gets the receipt.
    let (_, stop) = run_sim(TcpListener::bind(addr).await.unwrap(), fast());
    let ids = submit_when_bound(c.as_ref(), &message("+447700900125", "hello")).await;
    assert_eq!(receipts(&mut events, 1).await, vec![(ids[0].clone(), ReceiptState::Delivered)]);
    // It goes away (its sessions end) and comes back: the connector binds again.
    stop.cancel();
    let deadline = tokio::time::Instant::now() + WITHIN;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) if c.link()["bound"] == 0 => break l,
            _ => {
                assert!(tokio::time::Instant::now() < deadline, "the sessions never ended");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let (_, _again) = run_sim(listener, fast());
    let ids = submit_when_bound(c.as_ref(), &message("+447700900125", "again")).await;
    assert_eq!(receipts(&mut events, 1).await, vec![(ids[0].clone(), ReceiptState::Delivered)]);
}

#[test]
fn bad_settings_say_what_is_wrong() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let (kit, _) = kit();
    let addr: SocketAddr = "127.0.0.1:2775".parse().unwrap();
    for (bad, says) in [
        (json!({"password": "far too long"}), "password"),
        (json!({"sessions": 0}), "sessions"),
        (json!({"concatenation": "smoke"}), "expected one of `udh`, `sar`, `payload`"),
        (json!({"tls": true, "tls_ca_file": "/nonexistent/ca.pem"}), "/nonexistent/ca.pem"),
        (json!({"tls_ca_file": "ca.pem"}), "need tls: true"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let e = kit.build("carrier", "smpp", settings(addr, bad.clone())).unwrap_err();
        assert!(e.0.contains(says), "{bad}: {e}");
    }
    assert!(kit.build("carrier", "smpp", json!({"host": "h"})).unwrap_err().0.contains("port"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_messages_arrive_whole() {
    let (smsc, _stop, c, mut events) = connected(fast()).await;
    submit_when_bound(c.as_ref(), &message("+447700900003", "bind first")).await; // 0003: no receipt
    let long_gsm = "Thanks for the reminder, see you on Tuesday at ten. ".repeat(5); // 3 parts
    let long_ucs2 = "Спасибо, до встречи во вторник! ".repeat(5); // UCS-2, 3 parts
    for text in ["Yes", long_gsm.as_str(), long_ucs2.as_str()] {
        // The SMSC waits for each answer, which waits for the message to be kept: both at once.
        let sent = tokio::spawn({
            let (smsc, text) = (smsc.clone(), text.to_string());
            async move { smsc.inbound("acme", "+447700900125", "Acme", &text).await }
        });
        let ConnectorEvent::Inbound(i) = next_event(&mut events).await else { panic!("an inbound message") };
        let parts = sent.await.unwrap().unwrap();
        assert!(text.len() < 10 || parts > 1, "{parts}");
        assert_eq!((i.from.as_str(), i.to.as_str(), i.body.as_str()), ("+447700900125", "Acme", text));
    }
    // Nothing else came: each long message was handed on once, whole.
    assert!(tokio::time::timeout(Duration::from_millis(200), events.recv()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_over_tls_to_a_carrier_it_trusts() {
    let dir = std::env::temp_dir().join(format!("smsgate-connector-tls-{}", smsgate_core::MessageId::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str| {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    };
    let (cert, key) = write("carrier");
    let (stranger, _) = write("stranger");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let smsc = SimSmsc::new(fast());
    let stop = CancellationToken::new();
    tokio::spawn({
        let (smsc, stop, tls) = (smsc.clone(), stop.clone(), smpp_session::tls::acceptor(&cert, &key).unwrap());
        async move { smsc.serve_tls(listener, tls, stop).await }
    });
    let (kit, mut events) = kit();
    let tls = |ca: &std::path::Path| json!({"tls": true, "tls_ca_file": ca.display().to_string(), "tls_server_name": "localhost"});
    let c = kit.build("carrier", "smpp", settings(addr, tls(&cert))).unwrap();
    c.start();
    let ids = submit_when_bound(c.as_ref(), &message("+447700900125", "over TLS")).await;
    assert_eq!(receipts(&mut events, 1).await, vec![(ids[0].clone(), ReceiptState::Delivered)]);
    // A carrier whose certificate is not the one trusted: never bound.
    let wary = kit.build("wary", "smpp", settings(addr, tls(&stranger))).unwrap();
    wary.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wary.link()["bound"], 0);
    match wary.submit(&message("+447700900125", "no")).await {
        Err(e @ SubmitError::NotBound { .. }) => assert_eq!(e.code(), "not_bound"),
        other => panic!("{other:?}"),
    }
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_that_drops_its_links_now_and_then() {
    let (smsc, _stop, c, mut events) = connected(SimConfig { drop_every: Some(10), ..fast() }).await;
    // Forty messages, each tried again while the link is down (as the engine would): every one is taken.
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + WITHIN;
    for i in 0..40 {
        let m = message("+447700900125", &format!("message {i}"));
        loop {
            match c.submit(&m).await {
                Ok(got) => {
                    ids.push(got[0].clone());
                    break;
                }
                Err(e) if e.is_link_down() || matches!(e, SubmitError::Temporary { .. }) => {
                    assert!(tokio::time::Instant::now() < deadline, "never taken again");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert!(smsc.counters().drops.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    // Every receipt arrives, through whichever session is bound when it falls due (and some for submits whose
    // answer went down with a link: taken by the carrier, never known here).
    let mut missing: std::collections::HashSet<String> = ids.into_iter().collect();
    while !missing.is_empty() {
        let (id, _) = receipts(&mut events, 1).await.remove(0);
        missing.remove(&id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_not_kept_is_not_acknowledged_and_comes_again() {
    let (smsc, _stop, c, mut events) = connected(fast()).await;
    let ids = submit_when_bound(c.as_ref(), &message("+447700900125", "keep me")).await;
    // The engine could not keep it (its store failed): the SMSC hears ESME_RX_T_APPN and sends it again.
    let Some(ConnectorEvent::Durable(first, kept)) = tokio::time::timeout(WITHIN, events.recv()).await.unwrap() else {
        panic!("a receipt to keep")
    };
    kept.send(false).unwrap();
    let ConnectorEvent::Receipt(first) = *first else { panic!("a receipt") };
    assert_eq!(first.carrier_id, ids[0]);
    assert_eq!(receipts(&mut events, 1).await, vec![(ids[0].clone(), ReceiptState::Delivered)]);
    assert!(smsc.counters().receipts_retried.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
