//! SMPP 3.4 sessions over tokio, for both sides of a bind: [`bind`] connects as a client (an ESME binding to an
//! SMSC), [`accept`] answers a client's bind as a server. Either gives a [`Session`] that both sends requests
//! ([`Session::request`], matched to their responses by sequence number, at most [`Config::window`] waiting at
//! once, each for at most [`Config::response_timeout`]) and answers the peer's requests through a [`Handler`].
//!
//! The session itself answers `enquire_link`, `unbind` (then ends) and a second bind (`ESME_RALYBND`); it sends
//! `enquire_link` when the peer has been quiet for [`Config::enquire_link`] and ends when it has heard nothing for
//! [`Config::dead_after`]. A well-framed PDU with a malformed body is answered (`generic_nack`, or its own
//! response with the error status) and the session goes on; only a stream that cannot be framed ends it.
//!
//! Responses to the peer's requests go out as soon as each is ready, not in order: SMPP matches them by sequence
//! number, and a slow request must not hold up fast ones. Writes are gathered: everything ready is written with
//! one system call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use smpp::codec::SmppCodec;
use smpp::pdu::{Bind, BindResp, is_response};
use smpp::tlv::Tlv;
use smpp::{Body, CommandStatus, Pdu, Tlvs};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub mod tls;

/// How a session behaves; [`Config::default`] suits most peers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our requests waiting for the peer's response at once; one more waits for a place.
    pub window: usize,
    /// How long a request of ours waits for its response.
    pub response_timeout: Duration,
    /// After this long without a PDU from the peer, we send `enquire_link`.
    pub enquire_link: Duration,
    /// After this long without a PDU from the peer, the session ends.
    pub dead_after: Duration,
    /// The peer's requests handled at once; reading waits when this many are under way.
    pub concurrency: usize,
    /// The largest PDU read.
    pub max_pdu_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 64,
            response_timeout: Duration::from_secs(10),
            enquire_link: Duration::from_secs(30),
            dead_after: Duration::from_secs(90),
            concurrency: 256,
            max_pdu_len: smpp::frame::DEFAULT_MAX_PDU_LEN,
        }
    }
}

/// The three binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

impl BindKind {
    /// Whether a session of this bind may submit (send `submit_sm` and the like to the SMSC).
    pub fn can_submit(self) -> bool {
        self != BindKind::Receiver
    }

    /// Whether a session of this bind receives `deliver_sm` from the SMSC.
    pub fn can_receive(self) -> bool {
        self != BindKind::Transmitter
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BindKind::Transmitter => "transmitter",
            BindKind::Receiver => "receiver",
            BindKind::Transceiver => "transceiver",
        }
    }

    fn request(self, bind: Bind) -> Body {
        match self {
            BindKind::Transmitter => Body::BindTransmitter(bind),
            BindKind::Receiver => Body::BindReceiver(bind),
            BindKind::Transceiver => Body::BindTransceiver(bind),
        }
    }

    fn response(self, resp: BindResp) -> Body {
        match self {
            BindKind::Transmitter => Body::BindTransmitterResp(resp),
            BindKind::Receiver => Body::BindReceiverResp(resp),
            BindKind::Transceiver => Body::BindTransceiverResp(resp),
        }
    }

    /// The kind and the bind of a bind request.
    fn of(body: &Body) -> Option<(BindKind, &Bind)> {
        match body {
            Body::BindTransmitter(b) => Some((BindKind::Transmitter, b)),
            Body::BindReceiver(b) => Some((BindKind::Receiver, b)),
            Body::BindTransceiver(b) => Some((BindKind::Transceiver, b)),
            _ => None,
        }
    }
}

/// What answers the peer's requests (all but `enquire_link`, `unbind` and binds, which the session answers).
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The response to `request`: its status and body. The session sends it with the request's sequence number.
    async fn request(&self, request: Pdu) -> (CommandStatus, Body);
}

/// Why a request of ours got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The session ended (or was ending) before the response came.
    #[error("the session is closed")]
    Closed,
    /// No response within [`Config::response_timeout`]; the session goes on.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// Why a bind failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The peer answered the bind with an error status.
    #[error("the bind was refused: {0:?}")]
    Refused(CommandStatus),
    /// The connection failed or closed before the bind was answered.
    #[error("the connection failed during the bind: {0}")]
    Io(#[from] std::io::Error),
    /// The peer answered something else than the bind's response, or nothing in time.
    #[error("the bind got no proper response: {0}")]
    Protocol(String),
}

/// A bound session. Clones share it; it ends when the peer unbinds or goes away, on [`Session::unbind`] or
/// [`Session::close`], or when the peer stays silent past [`Config::dead_after`].
#[derive(Debug, Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    kind: BindKind,
    /// The peer's `system_id`: the client's as the server saw its bind, or the server's from its response.
    system_id: String,
    peer: Option<SocketAddr>,
    out: mpsc::Sender<Out>,
    pending: Mutex<HashMap<u32, oneshot::Sender<Pdu>>>,
    window: Semaphore,
    next_sequence: AtomicU32,
    closed: CancellationToken,
    config: Config,
}

/// What the writer task takes. PDUs travel inline: boxing them would cost an allocation per PDU to save room on
/// the rare `Close`.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Out {
    Pdu(Pdu),
    /// Write what came before, then close the connection.
    Close,
}

impl Session {
    pub fn kind(&self) -> BindKind {
        self.shared.kind
    }

    /// The peer's `system_id`.
    pub fn system_id(&self) -> &str {
        &self.shared.system_id
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.shared.peer
    }

    /// Sends a request and waits for its response (whatever its `command_status`; a `generic_nack` with our
    /// sequence number is a response too). Waits first for a place in the window.
    pub async fn request(&self, body: Body) -> Result<Pdu, RequestError> {
        let s = &self.shared;
        // Made once: each `cancelled()` takes the token's lock to register and again to leave.
        let closed = s.closed.cancelled();
        tokio::pin!(closed);
        let place = tokio::select! {
            p = s.window.acquire() => p.map_err(|_| RequestError::Closed)?,
            _ = &mut closed => return Err(RequestError::Closed),
        };
        let sequence = self.next_sequence();
        let (tx, rx) = oneshot::channel();
        s.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(sequence, tx);
        if s.out.send(Out::Pdu(Pdu::new(sequence, body))).await.is_err() {
            self.forget(sequence);
            return Err(RequestError::Closed);
        }
        let answered = tokio::select! {
            // A response read just before the session closed still counts.
            biased;
            r = tokio::time::timeout(s.config.response_timeout, rx) => r,
            _ = &mut closed => {
                self.forget(sequence);
                return Err(RequestError::Closed);
            }
        };
        drop(place);
        match answered {
            Ok(Ok(pdu)) => Ok(pdu),
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) => {
                self.forget(sequence);
                Err(RequestError::Timeout(s.config.response_timeout))
            }
        }
    }

    /// Sends `unbind`, waits (up to the response timeout) for `unbind_resp`, and ends the session.
    pub async fn unbind(&self) {
        let _ = self.request(Body::Unbind).await;
        self.close();
    }

    /// Ends the session now, after writing what is queued.
    pub fn close(&self) {
        if !self.shared.closed.is_cancelled() {
            let _ = self.shared.out.try_send(Out::Close);
            self.shared.closed.cancel();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Waits until the session has ended.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Our requests waiting for a response now.
    pub fn in_flight(&self) -> usize {
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn next_sequence(&self) -> u32 {
        // Sequence numbers run from 1 to 0x7FFFFFFF and wrap (SMPP 3.4 5.1.4).
        let n = self.shared.next_sequence.fetch_add(1, Ordering::Relaxed);
        (n % 0x7FFF_FFFF) + 1
    }

    fn forget(&self, sequence: u32) {
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&sequence);
    }
}

/// Connects to nothing itself: binds as a client over `stream` (already connected), with our `bind` as `kind`,
/// and runs the session with `handler` answering the SMSC's requests. Returns the session and the SMSC's bind
/// response.
pub async fn bind<S>(
    stream: S,
    kind: BindKind,
    bind: Bind,
    config: Config,
    handler: Arc<dyn Handler>,
) -> Result<(Session, BindResp), BindError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read, SmppCodec::new(config.max_pdu_len));
    let request = Pdu::new(1, kind.request(bind));
    write.write_all(&request.encode().map_err(|e| BindError::Protocol(e.to_string()))?).await?;
    let answer = tokio::time::timeout(config.response_timeout, async {
        loop {
            match frames.next().await {
                None => return Err(BindError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Some(Err(e)) => return Err(BindError::Protocol(e.to_string())),
                // An enquire_link before the bind's response is answered; anything else is a broken peer.
                Some(Ok(Ok(p))) if p.body == Body::EnquireLink => {
                    let resp = Pdu::new(p.sequence_number, Body::EnquireLinkResp).encode().unwrap_or_default();
                    write.write_all(&resp).await?;
                }
                Some(Ok(Ok(p))) => return Ok(p),
                Some(Ok(Err(e))) => return Err(BindError::Protocol(e.to_string())),
            }
        }
    })
    .await
    .map_err(|_| BindError::Protocol(format!("no bind response within {:?}", config.response_timeout)))??;
    // A refusal may come as the bind's response or as a generic_nack.
    if answer.command_status != CommandStatus::ESME_ROK {
        return Err(BindError::Refused(answer.command_status));
    }
    let resp = match answer.body {
        Body::BindTransmitterResp(r) | Body::BindReceiverResp(r) | Body::BindTransceiverResp(r) => r,
        other => return Err(BindError::Protocol(format!("{} in answer to a bind", other.name()))),
    };
    let system_id = resp.system_id.to_str_lossy().into_owned();
    let session = start(frames, write, kind, system_id, None, config, handler, 2);
    Ok((session, resp))
}

/// What decides a client's bind, on the server's side.
#[async_trait]
pub trait Binder: Send + Sync + 'static {
    /// Accepts (with the handler for the session's requests) or refuses (with the status to answer) a bind.
    async fn bind(
        &self,
        kind: BindKind,
        bind: &Bind,
        peer: Option<SocketAddr>,
    ) -> Result<Arc<dyn Handler>, CommandStatus>;
}

/// Why [`accept`] made no session.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The client went away (or sent what cannot be framed) before binding.
    #[error("the client left before binding: {0}")]
    Gone(String),
    /// The client sent no bind in time.
    #[error("no bind within {0:?}")]
    Timeout(Duration),
}

/// The binds a connection may try before it is closed.
pub const BIND_TRIES: u32 = 3;

/// Answers a client over `stream` (as a server, `our_id` being our `system_id`): requests before a bind get
/// `ESME_RINVBNDSTS` (`enquire_link` is answered), a bind is put to `binder`, and a refused one is answered and
/// may be tried again on the same connection, up to [`BIND_TRIES`] times in all, after which the connection is
/// closed. A bind that is accepted starts the session.
pub async fn accept<S>(
    stream: S,
    peer: Option<SocketAddr>,
    our_id: &str,
    config: Config,
    binder: &dyn Binder,
) -> Result<Session, AcceptError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read, SmppCodec::new(config.max_pdu_len));
    // A client has a few response timeouts to bind (and to try again after a refusal).
    let within = config.response_timeout.max(Duration::from_secs(1)) * 3;
    let deadline = tokio::time::Instant::now() + within;
    let gone = |e: &dyn std::fmt::Display| AcceptError::Gone(e.to_string());
    let mut refusals = 0;
    loop {
        let next = tokio::time::timeout_at(deadline, frames.next()).await.map_err(|_| AcceptError::Timeout(within))?;
        let pdu = match next {
            None => return Err(AcceptError::Gone("the connection closed".into())),
            Some(Err(e)) => return Err(gone(&e)),
            Some(Ok(Err(e))) => {
                if let Some(resp) = e.response() {
                    write.write_all(&resp.encode().unwrap_or_default()).await.map_err(|e| gone(&e))?;
                }
                continue;
            }
            Some(Ok(Ok(p))) => p,
        };
        let seq = pdu.sequence_number;
        let reply = |status, body| Pdu { command_status: status, sequence_number: seq, body };
        let Some((kind, bind)) = BindKind::of(&pdu.body) else {
            let answer = match &pdu.body {
                Body::EnquireLink => Some(reply(CommandStatus::ESME_ROK, Body::EnquireLinkResp)),
                b if is_response(b.command_id()) => None,
                b => Some(Pdu::refusal(b, seq, CommandStatus::ESME_RINVBNDSTS)),
            };
            if let Some(a) = answer {
                write.write_all(&a.encode().unwrap_or_default()).await.map_err(|e| gone(&e))?;
            }
            continue;
        };
        let resp = BindResp {
            system_id: our_id.into(),
            tlvs: if bind.interface_version >= 0x34 {
                Tlvs(vec![Tlv::ScInterfaceVersion(0x34)])
            } else {
                Tlvs::default()
            },
        };
        match binder.bind(kind, bind, peer).await {
            Ok(handler) => {
                let system_id = bind.system_id.to_str_lossy().into_owned();
                write
                    .write_all(&reply(CommandStatus::ESME_ROK, kind.response(resp)).encode().unwrap_or_default())
                    .await
                    .map_err(|e| gone(&e))?;
                return Ok(start(frames, write, kind, system_id, peer, config, handler, 1));
            }
            Err(status) => {
                let refused =
                    reply(status, kind.response(BindResp { system_id: our_id.into(), tlvs: Tlvs::default() }));
                write.write_all(&refused.encode().unwrap_or_default()).await.map_err(|e| gone(&e))?;
                refusals += 1;
                if refusals >= BIND_TRIES {
                    let _ = write.shutdown().await;
                    return Err(AcceptError::Gone(format!("{refusals} binds refused; connection closed")));
                }
            }
        }
    }
}

/// Accepts TCP connections from `listener` until `shutdown`, each answered by [`accept`] on a task of its own (as
/// `our_id`, binds decided by `binder`); every session bound goes to `bound`, on that task.
pub async fn listen<F, Fut>(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    our_id: &str,
    config: Config,
    binder: Arc<dyn Binder>,
    bound: F,
) where
    F: Fn(Session) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve(listener, None, shutdown, our_id, config, binder, bound).await;
}

/// [`listen`], each connection over TLS first (a handshake not done within the response timeout ends it).
pub async fn listen_tls<F, Fut>(
    listener: tokio::net::TcpListener,
    tls: tls::TlsAcceptor,
    shutdown: CancellationToken,
    our_id: &str,
    config: Config,
    binder: Arc<dyn Binder>,
    bound: F,
) where
    F: Fn(Session) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve(listener, Some(tls), shutdown, our_id, config, binder, bound).await;
}

async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    tls: Option<tls::TlsAcceptor>,
    shutdown: CancellationToken,
    our_id: &str,
    config: Config,
    binder: Arc<dyn Binder>,
    bound: F,
) where
    F: Fn(Session) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let (binder, config, bound, our_id) = (binder.clone(), config.clone(), bound.clone(), our_id.to_string());
        let tls = tls.clone();
        tokio::spawn(async move {
            let accepted = match tls {
                None => accept(stream, Some(peer), &our_id, config, binder.as_ref()).await,
                Some(tls) => match tokio::time::timeout(config.response_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => accept(stream, Some(peer), &our_id, config, binder.as_ref()).await,
                    Ok(Err(e)) => Err(AcceptError::Gone(format!("TLS handshake: {e}"))),
                    Err(_) => Err(AcceptError::Timeout(config.response_timeout)),
                },
            };
            match accepted {
                Ok(session) => bound(session).await,
                Err(e) => debug!(error = %e, %peer, "no bind"),
            }
        });
    }
}

/// Starts the writer and reader tasks of a bound session.
#[allow(clippy::too_many_arguments)]
fn start<R, W>(
    frames: FramedRead<R, SmppCodec>,
    write: W,
    kind: BindKind,
    system_id: String,
    peer: Option<SocketAddr>,
    config: Config,
    handler: Arc<dyn Handler>,
    first_sequence: u32,
) -> Session
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (out, queued) = mpsc::channel(config.window.max(config.concurrency) * 2 + 16);
    let shared = Arc::new(Shared {
        kind,
        system_id,
        peer,
        out,
        pending: Mutex::new(HashMap::new()),
        window: Semaphore::new(config.window.max(1)),
        next_sequence: AtomicU32::new(first_sequence - 1),
        closed: CancellationToken::new(),
        config,
    });
    let session = Session { shared };
    tokio::spawn(writer(write, queued, session.shared.closed.clone()));
    tokio::spawn(reader(frames, session.clone(), handler));
    session
}

/// Writes what is queued, everything ready at once, until the session closes.
async fn writer<W: AsyncWrite + Unpin>(mut write: W, mut queued: mpsc::Receiver<Out>, closed: CancellationToken) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let cancelled = closed.cancelled();
    tokio::pin!(cancelled);
    'session: loop {
        let first = tokio::select! {
            o = queued.recv() => o,
            _ = &mut cancelled => {
                // Write what was queued before the close (an unbind_resp, say), then stop.
                let mut rest = Vec::new();
                while let Ok(o) = queued.try_recv() { rest.push(o); }
                for o in rest {
                    if let Out::Pdu(p) = o { let _ = p.encode_into(&mut buf); }
                }
                let _ = write.write_all(&buf).await;
                break 'session;
            }
        };
        let mut close = false;
        let mut next = first;
        loop {
            match next {
                Some(Out::Pdu(p)) => {
                    if let Err(e) = p.encode_into(&mut buf) {
                        debug!(error = %e, command = p.body.name(), "a PDU could not be encoded; dropped");
                    }
                }
                Some(Out::Close) | None => {
                    close = true;
                    break;
                }
            }
            if buf.len() >= 60 * 1024 {
                break;
            }
            match queued.try_recv() {
                Ok(o) => next = Some(o),
                Err(_) => break,
            }
        }
        if !buf.is_empty() && write.write_all(&buf).await.is_err() {
            break;
        }
        buf.clear();
        if close {
            break;
        }
    }
    let _ = write.shutdown().await;
    closed.cancel();
}

/// Reads the peer's PDUs until the session ends: responses to the requests waiting for them, requests to the
/// handler (or answered here), and `enquire_link` when the peer is quiet.
async fn reader<R: AsyncRead + Unpin>(
    mut frames: FramedRead<R, SmppCodec>,
    session: Session,
    handler: Arc<dyn Handler>,
) {
    let s = session.shared.clone();
    let handling = Arc::new(Semaphore::new(s.config.concurrency.max(1)));
    let mut heard = Instant::now();
    // One timer for the session's silence, moved on only when it goes off (not at every PDU, which cost a timer
    // entry made and dropped per PDU): then it looks at when the peer was last heard.
    let quiet = tokio::time::sleep(s.config.enquire_link);
    tokio::pin!(quiet);
    let closed = s.closed.cancelled();
    tokio::pin!(closed);
    loop {
        let next = tokio::select! {
            n = frames.next() => n,
            _ = &mut quiet => {
                if heard.elapsed() < s.config.enquire_link {
                    quiet.as_mut().reset(heard + s.config.enquire_link);
                    continue;
                }
                if heard.elapsed() >= s.config.dead_after {
                    debug!(system_id = %s.system_id, "the peer has been silent too long; closing");
                    break;
                }
                let probe = session.clone();
                tokio::spawn(async move { probe.request(Body::EnquireLink).await });
                quiet.as_mut().reset(Instant::now() + s.config.enquire_link);
                continue;
            }
            _ = &mut closed => break,
        };
        let pdu = match next {
            None => break,
            Some(Err(e)) => {
                debug!(error = %e, "the stream cannot be framed; closing");
                break;
            }
            Some(Ok(Err(e))) => {
                heard = Instant::now();
                debug!(error = %e, "a malformed PDU; answered");
                if let Some(resp) = e.response() {
                    let _ = s.out.send(Out::Pdu(resp)).await;
                }
                continue;
            }
            Some(Ok(Ok(p))) => p,
        };
        heard = Instant::now();
        let seq = pdu.sequence_number;
        if is_response(pdu.command_id()) {
            let waiting = s.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&seq);
            match waiting {
                Some(tx) => {
                    let _ = tx.send(pdu);
                }
                None => debug!(sequence = seq, command = pdu.body.name(), "a response nobody waits for; ignored"),
            }
            continue;
        }
        match &pdu.body {
            Body::EnquireLink => {
                let _ = s.out.send(Out::Pdu(Pdu::new(seq, Body::EnquireLinkResp))).await;
            }
            Body::Unbind => {
                let _ = s.out.send(Out::Pdu(Pdu::new(seq, Body::UnbindResp))).await;
                let _ = s.out.send(Out::Close).await;
                break;
            }
            b if BindKind::of(b).is_some() => {
                let _ = s.out.send(Out::Pdu(Pdu::refusal(b, seq, CommandStatus::ESME_RALYBND))).await;
            }
            _ => {
                let Ok(permit) = handling.clone().acquire_owned().await else { break };
                let (handler, out) = (handler.clone(), s.out.clone());
                // alert_notification has no response.
                let answered = !matches!(pdu.body, Body::AlertNotification(_));
                tokio::spawn(async move {
                    let (status, body) = handler.request(pdu).await;
                    if answered {
                        let _ = out.send(Out::Pdu(Pdu { command_status: status, sequence_number: seq, body })).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    session.close();
    // Whoever waits for a response gets `Closed`.
    s.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
