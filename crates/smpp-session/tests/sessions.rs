#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! Sessions over real loopback TCP: a server made with `accept` and clients made with `bind` or writing raw octets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use smpp::pdu::{Bind, SubmitSm, SubmitSmResp};
use smpp::{Body, CommandStatus, Pdu};
use smpp_session::{BindError, BindKind, Binder, Config, Handler, RequestError, Session, accept, bind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Answers submit_sm with a message id made of the destination; sleeps first when the text says "slow" (and
/// forever for "never"); counts the requests under way at once.
#[derive(Debug, Default)]
struct Smsc {
    under_way: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl Handler for Smsc {
    async fn request(&self, request: Pdu) -> (CommandStatus, Body) {
        let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let answer = match request.body {
            Body::SubmitSm(s) => {
                match s.short_message.as_bytes() {
                    b"slow" => tokio::time::sleep(Duration::from_millis(100)).await,
                    b"never" => tokio::time::sleep(Duration::from_secs(3600)).await,
                    _ => {}
                }
                let id = format!("id-{}", s.destination_addr.to_str_lossy());
                (
                    CommandStatus::ESME_ROK,
                    Body::SubmitSmResp(SubmitSmResp { message_id: id.as_str().into(), ..Default::default() }),
                )
            }
            Body::DeliverSm(_) => (CommandStatus::ESME_ROK, Body::DeliverSmResp(SubmitSmResp::default())),
            _ => (CommandStatus::ESME_RINVCMDID, Body::GenericNack),
        };
        self.under_way.fetch_sub(1, Ordering::SeqCst);
        answer
    }
}

/// Binds `alice` with password `secret`; refuses others as SMPP 3.4 says (unknown system_id, bad password).
struct Accounts {
    smsc: Arc<Smsc>,
}

#[async_trait]
impl Binder for Accounts {
    async fn bind(&self, _: BindKind, bind: &Bind, _: Option<SocketAddr>) -> Result<Arc<dyn Handler>, CommandStatus> {
        match (bind.system_id.as_bytes(), bind.password.as_bytes()) {
            (b"alice", b"secret") => Ok(self.smsc.clone()),
            (b"alice", _) => Err(CommandStatus::ESME_RINVPASWD),
            _ => Err(CommandStatus::ESME_RINVSYSID),
        }
    }
}

struct Server {
    addr: SocketAddr,
    smsc: Arc<Smsc>,
    /// Each session the server bound.
    sessions: mpsc::UnboundedReceiver<Session>,
}

async fn server(config: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let smsc = Arc::new(Smsc::default());
    let binder = Arc::new(Accounts { smsc: smsc.clone() });
    let (tx, sessions) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let (binder, config, tx) = (binder.clone(), config.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(s) = accept(stream, Some(peer), "testsmsc", config, binder.as_ref()).await {
                    let _ = tx.send(s);
                }
            });
        }
    });
    Server { addr, smsc, sessions }
}

fn credentials(system_id: &str, password: &str) -> Bind {
    Bind { system_id: system_id.into(), password: password.into(), interface_version: 0x34, ..Default::default() }
}

async fn client(s: &Server, kind: BindKind, config: Config) -> Session {
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let (session, resp) =
        bind(stream, kind, credentials("alice", "secret"), config, Arc::new(Smsc::default())).await.expect("bound");
    assert_eq!(resp.system_id.as_bytes(), b"testsmsc");
    session
}

fn submit(to: &str, text: &str) -> Body {
    Body::SubmitSm(SubmitSm {
        destination_addr: to.into(),
        short_message: smpp::ShortMessage::new(text.as_bytes()),
        ..Default::default()
    })
}

const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn binds_and_submits() {
    let mut s = server(Config::default()).await;
    let c = client(&s, BindKind::Transceiver, Config::default()).await;
    let theirs = tokio::time::timeout(BOUND, s.sessions.recv()).await.unwrap().unwrap();
    assert_eq!((theirs.system_id(), theirs.kind()), ("alice", BindKind::Transceiver));
    for i in 0..100 {
        let r = c.request(submit(&format!("4477009{i:05}"), "hi")).await.unwrap();
        assert_eq!(r.command_status, CommandStatus::ESME_ROK);
        let Body::SubmitSmResp(resp) = r.body else { panic!("{r:?}") };
        assert_eq!(resp.message_id.to_str_lossy(), format!("id-4477009{i:05}"));
    }
    // The server sends to the client too: a deliver_sm on the transceiver, answered by the client's handler.
    let r = theirs.request(Body::DeliverSm(SubmitSm::default())).await.unwrap();
    assert_eq!((r.command_status, r.body), (CommandStatus::ESME_ROK, Body::DeliverSmResp(SubmitSmResp::default())));
    // Unbinding ends both sides.
    c.unbind().await;
    tokio::time::timeout(BOUND, theirs.closed()).await.expect("the server's session ended");
    assert!(c.is_closed());
    assert_eq!(c.request(submit("1", "late")).await, Err(RequestError::Closed));
}

#[tokio::test]
async fn refused_binds_say_why() {
    let s = server(Config::default()).await;
    for (id, password, why) in
        [("alice", "wrong", CommandStatus::ESME_RINVPASWD), ("mallory", "secret", CommandStatus::ESME_RINVSYSID)]
    {
        let stream = TcpStream::connect(s.addr).await.unwrap();
        let bound = bind(
            stream,
            BindKind::Transmitter,
            credentials(id, password),
            Config::default(),
            Arc::new(Smsc::default()),
        )
        .await;
        assert!(matches!(bound, Err(BindError::Refused(st)) if st == why), "{id}: {bound:?}");
    }
}

/// Writes `pdu` raw and reads one PDU back.
async fn exchange(stream: &mut TcpStream, octets: &[u8]) -> Pdu {
    stream.write_all(octets).await.unwrap();
    read_pdu(stream).await
}

async fn read_pdu(stream: &mut TcpStream) -> Pdu {
    let mut len = [0u8; 4];
    tokio::time::timeout(BOUND, stream.read_exact(&mut len)).await.unwrap().unwrap();
    let mut frame = len.to_vec();
    frame.resize(u32::from_be_bytes(len) as usize, 0);
    stream.read_exact(&mut frame[4..]).await.unwrap();
    Pdu::decode(&frame).unwrap()
}

#[tokio::test]
async fn bad_pdus_are_answered_and_the_session_goes_on() {
    let mut s = server(Config::default()).await;
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    // Before a bind: a submit is refused with ESME_RINVBNDSTS; enquire_link is answered.
    let r = exchange(&mut raw, &Pdu::new(1, submit("1", "x")).encode().unwrap()).await;
    assert_eq!((r.command_status, r.sequence_number), (CommandStatus::ESME_RINVBNDSTS, 1));
    let r = exchange(&mut raw, &Pdu::new(2, Body::EnquireLink).encode().unwrap()).await;
    assert_eq!((r.command_status, r.body), (CommandStatus::ESME_ROK, Body::EnquireLinkResp));
    // A wrong password, then the right one on the same connection.
    let r =
        exchange(&mut raw, &Pdu::new(3, Body::BindTransmitter(credentials("alice", "nope"))).encode().unwrap()).await;
    assert_eq!(r.command_status, CommandStatus::ESME_RINVPASWD);
    let r =
        exchange(&mut raw, &Pdu::new(4, Body::BindTransmitter(credentials("alice", "secret"))).encode().unwrap()).await;
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let theirs = tokio::time::timeout(BOUND, s.sessions.recv()).await.unwrap().unwrap();
    // Bound: an unknown command gets generic_nack ESME_RINVCMDID.
    let unknown = [0, 0, 0, 16, 0, 0, 0x0F, 0x0F, 0, 0, 0, 0, 0, 0, 0, 5];
    let r = exchange(&mut raw, &unknown).await;
    assert_eq!((r.body, r.command_status, r.sequence_number), (Body::GenericNack, CommandStatus::ESME_RINVCMDID, 5));
    // A submit_sm whose body stops short: its own response with an error status.
    let mut short = Pdu::new(6, submit("44770090001", "hello")).encode().unwrap();
    short.truncate(24);
    short[..4].copy_from_slice(&24u32.to_be_bytes());
    let r = exchange(&mut raw, &short).await;
    assert_eq!((r.sequence_number, r.body.name()), (6, "submit_sm_resp"));
    assert_ne!(r.command_status, CommandStatus::ESME_ROK);
    // A second bind on a bound session.
    let r =
        exchange(&mut raw, &Pdu::new(7, Body::BindTransceiver(credentials("alice", "secret"))).encode().unwrap()).await;
    assert_eq!(r.command_status, CommandStatus::ESME_RALYBND);
    // And the session still works.
    let r = exchange(&mut raw, &Pdu::new(8, submit("447700900123", "hi")).encode().unwrap()).await;
    assert_eq!((r.command_status, r.sequence_number), (CommandStatus::ESME_ROK, 8));
    // The peer's unbind is answered and ends the session.
    let r = exchange(&mut raw, &Pdu::new(9, Body::Unbind).encode().unwrap()).await;
    assert_eq!((r.body, r.sequence_number), (Body::UnbindResp, 9));
    tokio::time::timeout(BOUND, theirs.closed()).await.expect("ended");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(BOUND, raw.read_to_end(&mut rest)).await.unwrap();
    assert!(read.is_ok_and(|n| n == 0), "the server closed the connection");
}

#[tokio::test]
async fn the_window_bounds_requests_under_way_and_slow_ones_do_not_hold_fast_ones() {
    let s = server(Config::default()).await;
    let config = Config { window: 4, ..Config::default() };
    let c = client(&s, BindKind::Transmitter, config).await;
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.request(submit(&format!("{i}"), "slow")).await })
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap().unwrap().command_status, CommandStatus::ESME_ROK);
    }
    assert_eq!(s.smsc.most.load(Ordering::SeqCst), 4, "at most the window under way at once");
    // Out of order: a fast request answered while a slow one waits.
    let wide = client(&s, BindKind::Transmitter, Config::default()).await;
    let slow = tokio::spawn({
        let c = wide.clone();
        async move { c.request(submit("1", "slow")).await }
    });
    // The slow one is with the handler before the fast one goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.smsc.under_way.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the slow request never arrived");
        tokio::task::yield_now().await;
    }
    wide.request(submit("2", "fast")).await.unwrap();
    assert!(!slow.is_finished(), "the fast one came back first");
    slow.await.unwrap().unwrap();
}

#[tokio::test]
async fn unanswered_requests_time_out_and_silent_peers_are_dropped() {
    let mut s = server(Config {
        enquire_link: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        ..Config::default()
    })
    .await;
    let c =
        client(&s, BindKind::Transmitter, Config { response_timeout: Duration::from_millis(200), ..Config::default() })
            .await;
    let theirs = tokio::time::timeout(BOUND, s.sessions.recv()).await.unwrap().unwrap();
    assert_eq!(c.request(submit("1", "never")).await, Err(RequestError::Timeout(Duration::from_millis(200))));
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.request(submit("2", "hi")).await.unwrap().command_status, CommandStatus::ESME_ROK);
    // A client that binds and then answers nothing (not even enquire_link) is dropped by the server.
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    let r =
        exchange(&mut raw, &Pdu::new(1, Body::BindReceiver(credentials("alice", "secret"))).encode().unwrap()).await;
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let silent = tokio::time::timeout(BOUND, s.sessions.recv()).await.unwrap().unwrap();
    // It hears enquire_link first.
    assert_eq!(read_pdu(&mut raw).await.body, Body::EnquireLink);
    tokio::time::timeout(BOUND, silent.closed()).await.expect("dropped");
    // The first client answers enquire_link (its session does) and stays.
    assert!(!theirs.is_closed());
    assert!(!c.is_closed());
}

/// A self-signed certificate for `localhost`, its key, and a folder holding both as PEM files.
fn certificate() -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("smpp-tls-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_tls() {
    use smpp_session::tls;
    let (dir, cert, key) = certificate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let binder: Arc<dyn Binder> = Arc::new(Accounts { smsc: Arc::new(Smsc::default()) });
    let acceptor = tls::acceptor(&cert, &key).unwrap();
    tokio::spawn(smpp_session::listen_tls(
        listener,
        acceptor,
        stop.clone(),
        "tls-smsc",
        Config::default(),
        binder,
        |s| async move {
            s.closed().await;
        },
    ));
    // A client that trusts the certificate binds and submits.
    let connector = tls::connector(Some(&cert)).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = connector.connect(tls::server_name("localhost").unwrap(), tcp).await.unwrap();
    let creds =
        Bind { system_id: "alice".into(), password: "secret".into(), interface_version: 0x34, ..Default::default() };
    let (session, resp) =
        bind(stream, BindKind::Transceiver, creds, Config::default(), Arc::new(Smsc::default())).await.unwrap();
    assert_eq!(resp.system_id.as_bytes(), b"tls-smsc");
    let submit = Body::SubmitSm(SubmitSm { destination_addr: "447700900123".into(), ..Default::default() });
    let r = session.request(submit).await.unwrap();
    let Body::SubmitSmResp(r) = r.body else { panic!("{r:?}") };
    assert_eq!(r.message_id.as_bytes(), b"id-447700900123");
    // One that does not trust it gets no session; neither does plain SMPP on the TLS port.
    let other = TcpStream::connect(addr).await.unwrap();
    let (_d2, other_cert, _k2) = certificate();
    assert!(
        tls::connector(Some(&other_cert))
            .unwrap()
            .connect(tls::server_name("localhost").unwrap(), other)
            .await
            .is_err()
    );
    let mut plain = TcpStream::connect(addr).await.unwrap();
    let bind_pdu = Pdu::new(
        1,
        Body::BindTransceiver(Bind { system_id: "alice".into(), password: "secret".into(), ..Default::default() }),
    );
    plain.write_all(&bind_pdu.encode().unwrap()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert!(n == 0 || !buf.starts_with(&[0, 0, 0]), "no SMPP answer over plain TCP: {:?}", &buf[..n]);
    // Files that are not what they should be say so.
    let swapped = tls::acceptor(&key, &cert).err().unwrap();
    assert!(swapped.contains("key"), "{swapped}");
    assert!(tls::connector(Some(&dir.join("missing.pem"))).is_err());
    session.unbind().await;
    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&_d2);
}
