//! Serving the API on a TCP listener with the limits a server open to the internet needs, which `axum::serve`
//! does not have: a client must send a request's headers within [`ServerSettings::header_timeout`] (also the
//! longest a kept-alive connection may sit idle), at most [`ServerSettings::max_connections`] are open at once
//! (past it a new connection is closed at once, and the log says so, once in ten seconds), and a shutdown lets
//! the requests under way finish for [`ServerSettings::shutdown_grace`], then closes what is left — a half-sent
//! request cannot hold the process. With a TLS acceptor it serves HTTPS (the handshake, too, within the header
//! timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// How long a client has to send a request's headers, and the longest a connection may wait idle for the
    /// next request.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long requests under way may take to finish after a shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// In the extensions of every request that came over TLS.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// How often the log may say that the connection cap was reached.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown`, then lets the requests under way finish
/// for the grace period.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let closing = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut cap_logged: Option<Instant> = None;
    let router = if tls.is_some() { router.layer(axum::Extension(OverTls)) } else { router };
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait a moment rather than spin.
                warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if cap_logged.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY) {
                warn!(
                    max_connections = settings.max_connections,
                    "HTTP connection cap reached: new connections are closed until some end"
                );
                cap_logged = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let closing = closing.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(stream, service, settings, closing, peer).await,
                Some(tls) => match tokio::time::timeout(settings.header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => connection(stream, service, settings, closing, peer).await,
                    Ok(Err(e)) => debug!(?peer, error = %e, "a TLS handshake failed"),
                    Err(_) => debug!(?peer, "a TLS handshake took too long"),
                },
            }
        });
    }
    drop(listener);
    closing.cancel();
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.shutdown_grace, finished).await.is_err() {
        warn!(open = connections.len(), "HTTP connections still open at the shutdown deadline: closed");
        connections.abort_all();
    }
}

/// Serves one connection until it ends, or until `closing` (then gracefully).
async fn connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    settings: ServerSettings,
    closing: CancellationToken,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(settings.header_timeout).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = closing.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        debug!(?peer, error = %e, "an HTTP connection ended with an error");
    }
}
