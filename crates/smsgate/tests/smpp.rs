#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! End to end through a real carrier link: REST → `smsgate serve` → `smpp` connector → `smsgate sim` (another
//! process, over SMPP on loopback) → receipt → `delivered` → a signed webhook at `smsgate bench sink`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{start, stop};
use serde_json::{Value, json};

const KEY: &str = "sk_test_smpp_0123456789";

/// Starts a subcommand of ours and reads an address from each of its first lines, which start with `prefixes`.
fn spawn(args: &[&str], prefixes: &[&str]) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addresses = Vec::new();
    for prefix in prefixes {
        let line = lines.next().unwrap().unwrap();
        let address = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line}")).trim();
        addresses.push(address.trim_end_matches("/stats").to_string());
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addresses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_to_an_smpp_carrier_and_back() {
    let (mut sim, sim_addresses) = spawn(
        &["sim", "--smpp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--receipt-delay-ms", "20", "--account", "acme:pw"],
        &["smsgate sim: SMPP on ", "smsgate sim: counters on "],
    );
    let (smpp, sim_http) = (&sim_addresses[0], &sim_addresses[1]);
    let (mut sink, sink_addresses) =
        spawn(&["bench", "sink", "--listen", "127.0.0.1:0"], &["smsgate bench sink: listening on "]);
    let sink_addr = &sink_addresses[0];
    let data = std::env::temp_dir().join(format!("smsgate-smpp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server = start(&data, [] as [&str; 0], Some(KEY));
    let client = common::http_client(Duration::from_secs(10));
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = client.request(method, format!("{}{path}", server.base)).bearer_auth(KEY);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (host, port) = smpp.rsplit_once(':').unwrap();
    let connector = json!({"name": "carrier", "kind": "smpp", "host": host, "port": port.parse::<u16>().unwrap(),
                           "system_id": "acme", "password": "pw", "throughput": 100});
    let (st, c) = call(reqwest::Method::POST, "/v1/connectors", Some(connector)).await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["password"], "********", "never shown: {c}");
    let route = json!({"name": "uk", "match": {"prefix": "+44"}, "connectors": [{"name": "carrier", "price": 0.02}]});
    assert_eq!(call(reqwest::Method::POST, "/v1/routes", Some(route)).await.0, 201);
    let (st, _) =
        call(reqwest::Method::PUT, "/v1/webhooks", Some(json!({"status_url": format!("{sink_addr}/status")}))).await;
    assert_eq!(st, 200);
    // One message of one part and one of three (UDH), both to delivered through the carrier.
    let mut ids = Vec::new();
    for body in ["Hello over SMPP", &"Three parts of GSM text. ".repeat(18)] {
        let (st, m) = call(
            reqwest::Method::POST,
            "/v1/messages",
            Some(json!({"to": "+447700900125", "from": "Acme", "body": body})),
        )
        .await;
        assert_eq!(st, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        loop {
            let (_, m) = call(reqwest::Method::GET, &format!("/v1/messages/{id}?events=true"), None).await;
            if m["status"] == "delivered" {
                assert_eq!(m["connector"], "carrier", "{m}");
                assert!(m["carrier_id"].as_str().is_some_and(|c| !c.is_empty()), "{m}");
                break;
            }
            assert!(Instant::now() < deadline, "not delivered: {m}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A handset answers (a long reply, in three parts with a UDH): one inbound message, whole.
    let reply = "Thanks! I will be there on Tuesday, and I will bring the papers you asked for. ".repeat(4);
    let sent: Value = client
        .post(format!("{sim_http}/inbound"))
        .json(&json!({"system_id": "acme", "from": "+447700900125", "to": "Acme", "text": reply}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["parts"], 3, "{sent}");
    loop {
        let (_, inbound) = call(reqwest::Method::GET, "/v1/inbound", None).await;
        if let Some(m) = inbound["data"].as_array().and_then(|d| d.first()) {
            assert_eq!((m["from"].as_str(), m["body"].as_str()), (Some("+447700900125"), Some(reply.as_str())), "{m}");
            assert_eq!(inbound["data"].as_array().unwrap().len(), 1, "{inbound}");
            break;
        }
        assert!(Instant::now() < deadline, "no inbound message: {inbound}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, c) = call(reqwest::Method::GET, "/v1/connectors/carrier", None).await;
    assert_eq!(c["link"], json!({"sessions": 1, "bound": 1}), "{c}");
    assert_eq!(c["counters"]["accepted"], 2, "{c}");
    // Every status after queued of both messages reached the webhook receiver.
    loop {
        let stats: Value = client.get(format!("{sink_addr}/stats")).send().await.unwrap().json().await.unwrap();
        if stats["by_status"]["delivered"] == 2 {
            assert_eq!(stats["by_status"]["sent"], 2, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "callbacks missing: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(server);
    for child in [&mut sim, &mut sink] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    std::fs::remove_dir_all(&data).unwrap();
}

/// Answers whatever the server sends (receipts come with a later part of issue 5).
struct Client;

#[async_trait::async_trait]
impl smpp_session::Handler for Client {
    async fn request(&self, _: smpp::Pdu) -> (smpp::CommandStatus, smpp::Body) {
        (smpp::CommandStatus::ESME_ROK, smpp::Body::DeliverSmResp(Default::default()))
    }
}

/// An SMPP client application binds to `smsgate serve --smpp` with credentials made over REST, submits, and
/// follows its message to delivered with query_sm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smpp_client_submits_to_smsgate() {
    use smpp::pdu::{Bind, QuerySm, SubmitSm};
    use smpp::{Body, CommandStatus};
    let data = std::env::temp_dir().join(format!("smsgate-smpp-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let server = start(&data, [] as [&str; 0], Some(KEY));
    let smpp_addr = server
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("smsgate: SMPP on "))
        .map(|a| a.trim().to_string())
        .expect("the SMPP line");
    let client = common::http_client(Duration::from_secs(10));
    let made = client
        .post(format!("{}/v1/smpp/credentials", server.base))
        .bearer_auth(KEY)
        .json(&json!({"system_id": "app1", "password": "pw123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status().as_u16(), 201);
    let stream = tokio::net::TcpStream::connect(&smpp_addr).await.unwrap();
    let bind =
        Bind { system_id: "app1".into(), password: "pw123".into(), interface_version: 0x34, ..Default::default() };
    let (session, resp) = smpp_session::bind(
        stream,
        smpp_session::BindKind::Transceiver,
        bind,
        smpp_session::Config::default(),
        std::sync::Arc::new(Client),
    )
    .await
    .unwrap();
    assert_eq!(resp.system_id.as_bytes(), b"smsgate");
    let submit = Body::SubmitSm(SubmitSm {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        dest_addr_npi: 1,
        destination_addr: "447700900125".into(),
        short_message: smpp::ShortMessage::new(b"Hello from an SMPP client".to_vec()),
        ..Default::default()
    });
    let r = session.request(submit).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let Body::SubmitSmResp(r) = r.body else { panic!("a submit_sm_resp") };
    let id = r.message_id.to_str_lossy().into_owned();
    // The same message over REST, and query_sm to delivered.
    let m: Value = client
        .get(format!("{}/v1/messages/{id}", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((m["to"].as_str(), m["from"].as_str()), (Some("+447700900125"), Some("Acme")), "{m}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = session.request(Body::QuerySm(QuerySm { message_id: id.as_str().into(), ..Default::default() })).await;
        let Body::QuerySmResp(q) = q.unwrap().body else { panic!("a query_sm_resp") };
        if q.message_state == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {q:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    session.unbind().await;
    stop(server);
    std::fs::remove_dir_all(&data).unwrap();
}
