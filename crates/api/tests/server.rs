#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! The HTTP server's limits over real loopback sockets: a client that does not finish its headers, or sits idle,
//! is closed after the header timeout; past the connection cap a new connection is closed at once; a shutdown lets
//! a request under way finish and does not wait for a half-sent one past its grace period. Every wait is bounded.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use smsgate_api::server::{ServerSettings, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(5);

fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        }),
    )
}

async fn start(settings: ServerSettings) -> (std::net::SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, app(), settings, None, stop.clone()));
    (addr, stop, task)
}

/// Reads until the peer closes (or resets: closed with our request unread); what was read.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    match tokio::time::timeout(BOUND, stream.read_to_end(&mut all)).await.expect("closed within the bound") {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{e}"),
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// One request on an open connection; its response's head and body.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(BOUND, stream.read(&mut buf)).await.expect("an answer").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let settings = ServerSettings { header_timeout: Duration::from_millis(300), ..ServerSettings::default() };
    let (addr, stop, task) = start(settings).await;
    // Half a request, never finished.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let started = tokio::time::Instant::now();
    read_to_close(&mut slow).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout: {:?}", started.elapsed());
    // A kept-alive connection that goes quiet after its request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(request(&mut idle, "/").await.starts_with("HTTP/1.1 200"));
    read_to_close(&mut idle).await;
    stop.cancel();
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed() {
    let settings = ServerSettings { max_connections: 2, ..ServerSettings::default() };
    let (addr, stop, task) = start(settings).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(request(&mut first, "/").await.starts_with("HTTP/1.1 200"));
    assert!(request(&mut second, "/").await.starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(read_to_close(&mut third).await, "", "closed without an answer");
    // One goes; a new connection is served again.
    drop(first);
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let mut again = TcpStream::connect(addr).await.unwrap();
        let _ = again.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(BOUND, again.read(&mut buf)).await.unwrap().unwrap_or(0);
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed place was not given to a new connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(request(&mut second, "/").await.starts_with("HTTP/1.1 200"), "the others are untouched");
    stop.cancel();
    tokio::time::timeout(BOUND, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_shutdown_finishes_requests_under_way_and_does_not_wait_for_half_sent_ones() {
    let settings = ServerSettings {
        header_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_millis(800),
        ..ServerSettings::default()
    };
    let (addr, stop, task) = start(settings).await;
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le").await.unwrap();
    let mut working = TcpStream::connect(addr).await.unwrap();
    working.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    stop.cancel();
    // The request under way is answered.
    let answer = read_to_close(&mut working).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"), "{answer:?}");
    // The server is gone by the end of its grace period, the half-sent request notwithstanding.
    tokio::time::timeout(BOUND, task).await.expect("the server stops").unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    read_to_close(&mut half).await;
}
