#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! End to end through a real carrier link: REST → `smsgate serve` → `smpp` connector → `smsgate sim` (another
//! process, over SMPP on loopback) → receipt → `delivered` → a signed webhook at `smsgate bench sink`; and an SMPP
//! client → `smsgate serve` → `smsgate sim` → the receipt back to the client as a deliver_sm.

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
    // The handset texts STOP over the carrier's deliver_sm: opted out, told so once through the carrier (from the
    // sender it wrote to), and a send to it is refused.
    let sent: Value = client
        .post(format!("{sim_http}/inbound"))
        .json(&json!({"system_id": "acme", "from": "+447700900125", "to": "Acme", "text": "Stop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["parts"], 1, "{sent}");
    loop {
        let (st, m) = call(
            reqwest::Method::POST,
            "/v1/messages",
            Some(json!({"to": "+447700900125", "from": "Acme", "body": "One more thing"})),
        )
        .await;
        if st == 422 {
            assert_eq!(m["error"]["code"], "recipient_opted_out", "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the STOP was not applied: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loop {
        let inbox: Value = client
            .get(format!("{sim_http}/handsets/447700900125/messages"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let texts: Vec<&str> = inbox["data"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
        if let Some(confirmation) = texts.iter().find(|t| t.contains("unsubscribed")) {
            assert!(confirmation.contains("START"), "{confirmation}");
            let from =
                inbox["data"].as_array().unwrap().iter().find(|m| m["text"] == *confirmation).unwrap()["from"].clone();
            assert_eq!(from, "Acme", "{inbox}");
            break;
        }
        assert!(Instant::now() < deadline, "no confirmation at the handset: {inbox}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, c) = call(reqwest::Method::GET, "/v1/connectors/carrier", None).await;
    assert_eq!(c["link"], json!({"sessions": 1, "bound": 1}), "{c}");
    assert_eq!(c["counters"]["accepted"], 3, "the two texts and the confirmation: {c}");
    // Every status after queued of both messages reached the webhook receiver.
    loop {
        let stats: Value = client.get(format!("{sink_addr}/stats")).send().await.unwrap().json().await.unwrap();
        if stats["by_status"]["delivered"] == 3 {
            assert_eq!(stats["by_status"]["sent"], 3, "{stats}");
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

/// An SMPP client that keeps the deliver_sm smsgate sends it.
struct Client(tokio::sync::mpsc::UnboundedSender<smpp::pdu::SubmitSm>);

#[async_trait::async_trait]
impl smpp_session::Handler for Client {
    async fn request(&self, request: smpp::Pdu) -> (smpp::CommandStatus, smpp::Body) {
        if let smpp::Body::DeliverSm(d) = request.body {
            let _ = self.0.send(d);
        }
        (smpp::CommandStatus::ESME_ROK, smpp::Body::DeliverSmResp(Default::default()))
    }
}

/// Binds a transceiver to smsgate over `stream`; the session and the deliver_sm it gets.
async fn bind_client<S>(
    stream: S,
    system_id: &str,
    password: &str,
) -> (smpp_session::Session, tokio::sync::mpsc::UnboundedReceiver<smpp::pdu::SubmitSm>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let bind = smpp::pdu::Bind {
        system_id: system_id.into(),
        password: password.into(),
        interface_version: 0x34,
        ..Default::default()
    };
    let (tx, delivered) = tokio::sync::mpsc::unbounded_channel();
    let config = smpp_session::Config::default();
    let kind = smpp_session::BindKind::Transceiver;
    let (session, resp) =
        smpp_session::bind(stream, kind, bind, config, std::sync::Arc::new(Client(tx))).await.unwrap();
    assert_eq!(resp.system_id.as_bytes(), b"smsgate");
    (session, delivered)
}

/// An SMPP client application binds to `smsgate serve --smpp` with credentials made over REST and submits with a
/// receipt asked for; smsgate sends the message through its `smpp` connector to `smsgate sim` (another process),
/// whose receipt comes back to smsgate and on to the client as a deliver_sm. A handset's reply reaches the client
/// the same way. query_sm agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smpp_client_through_smsgate_to_an_smpp_carrier() {
    use smpp::pdu::{QuerySm, SubmitSm};
    use smpp::{Body, CommandStatus};
    let (mut sim, sim_addresses) = spawn(
        &["sim", "--smpp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--receipt-delay-ms", "20", "--account", "gw:pw"],
        &["smsgate sim: SMPP on ", "smsgate sim: counters on "],
    );
    let (carrier, sim_http) = (&sim_addresses[0], &sim_addresses[1]);
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
    let post = |path: &str, body: Value| {
        let r = client.post(format!("{}{path}", server.base)).bearer_auth(KEY).json(&body);
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let (host, port) = carrier.rsplit_once(':').unwrap();
    let connector = json!({"name": "carrier", "kind": "smpp", "host": host, "port": port.parse::<u16>().unwrap(),
                           "system_id": "gw", "password": "pw"});
    assert_eq!(post("/v1/connectors", connector).await, 201);
    let route = json!({"name": "uk", "match": {"prefix": "+44"}, "connectors": [{"name": "carrier"}]});
    assert_eq!(post("/v1/routes", route).await, 201);
    assert_eq!(post("/v1/smpp/credentials", json!({"system_id": "app1", "password": "pw1234"})).await, 201);

    let stream = tokio::net::TcpStream::connect(&smpp_addr).await.unwrap();
    let (session, mut delivered) = bind_client(stream, "app1", "pw1234").await;
    let submit = Body::SubmitSm(SubmitSm {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        dest_addr_npi: 1,
        destination_addr: "447700900125".into(),
        registered_delivery: 1,
        short_message: smpp::ShortMessage::new(b"Hello from an SMPP client".to_vec()),
        ..Default::default()
    });
    let r = session.request(submit).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let Body::SubmitSmResp(r) = r.body else { panic!("a submit_sm_resp") };
    let id = r.message_id.to_str_lossy().into_owned();
    // The carrier's receipt, back to the client as a deliver_sm for our id.
    let deadline = Instant::now() + Duration::from_secs(20);
    let receipt = loop {
        if let Ok(d) = delivered.try_recv() {
            break d;
        }
        assert!(Instant::now() < deadline, "no receipt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(receipt.esm_class, 0x04, "{receipt:?}");
    assert_eq!(receipt.tlvs.receipted_message_id(), Some(id.as_bytes()), "{receipt:?}");
    let text = String::from_utf8_lossy(receipt.short_message.as_bytes()).into_owned();
    assert!(text.starts_with(&format!("id:{id} sub:001 dlvrd:001")) && text.contains("stat:DELIVRD"), "{text}");
    // It went through the carrier: the message names the connector, and the sim counted it.
    let m: Value = client
        .get(format!("{}/v1/messages/{id}", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((m["status"].as_str(), m["connector"].as_str()), (Some("delivered"), Some("carrier")), "{m}");
    let q = session.request(Body::QuerySm(QuerySm { message_id: id.as_str().into(), ..Default::default() })).await;
    let Body::QuerySmResp(q) = q.unwrap().body else { panic!("a query_sm_resp") };
    assert_eq!(q.message_state, 2);
    // The handset replies to Acme: the client gets it as a deliver_sm.
    let sent = client
        .post(format!("{sim_http}/inbound"))
        .json(&json!({"system_id": "gw", "from": "+447700900125", "to": "Acme", "text": "See you then"}))
        .send()
        .await
        .unwrap();
    assert!(sent.status().is_success());
    let reply = loop {
        if let Ok(d) = delivered.try_recv() {
            break d;
        }
        assert!(Instant::now() < deadline, "no reply");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((reply.esm_class, reply.short_message.as_bytes()), (0, b"See you then".as_slice()), "{reply:?}");
    assert_eq!(reply.source_addr.as_bytes(), b"447700900125");
    session.unbind().await;
    stop(server);
    sim.kill().unwrap();
    sim.wait().unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

/// TLS on both sides: a client binds to `[smpp_server] tls_listen` and submits with a receipt asked for; smsgate
/// sends the message through an `smpp` connector with `tls` to `smsgate sim --tls-cert`, and the receipt comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smpp_client_binds_over_tls() {
    use smpp::pdu::SubmitSm;
    use smpp::{Body, CommandStatus};
    let data = std::env::temp_dir().join(format!("smsgate-smpp-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key, config) = (data.join("cert.pem"), data.join("key.pem"), data.join("smsgate.toml"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let toml = format!(
        "[smpp_server]\ntls_listen = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    std::fs::write(&config, toml).unwrap();
    let server = start(&data, ["--config".as_ref(), config.as_os_str()], Some(KEY));
    let tls_addr = server
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("smsgate: SMPP over TLS on "))
        .map(|a| a.trim().to_string())
        .expect("the TLS line");
    let client = common::http_client(Duration::from_secs(10));
    let made = client
        .post(format!("{}/v1/smpp/credentials", server.base))
        .bearer_auth(KEY)
        .json(&json!({"system_id": "secure", "password": "pw1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status().as_u16(), 201);
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let (mut sim, sim_addresses) = spawn(
        &["sim", "--smpp", "127.0.0.1:0", "--receipt-delay-ms", "20", "--tls-cert", &cert_arg, "--tls-key", &key_arg],
        &["smsgate sim: SMPP over TLS on "],
    );
    let port: u16 = sim_addresses[0].rsplit_once(':').unwrap().1.parse().unwrap();
    let connector = json!({"name": "tls-carrier", "kind": "smpp", "host": "127.0.0.1", "port": port,
        "system_id": "gw", "password": "pw", "tls": true, "tls_ca_file": cert_arg, "tls_server_name": "localhost"});
    let route = json!({"name": "all", "connectors": [{"name": "tls-carrier"}]});
    for (path, body) in [("/v1/connectors", connector), ("/v1/routes", route)] {
        let r = client.post(format!("{}{path}", server.base)).bearer_auth(KEY).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let tcp = tokio::net::TcpStream::connect(&tls_addr).await.unwrap();
    let tls = smpp_session::tls::connector(Some(&cert)).unwrap();
    let stream = tls.connect(smpp_session::tls::server_name("localhost").unwrap(), tcp).await.unwrap();
    let (session, mut delivered) = bind_client(stream, "secure", "pw1234").await;
    let submit = Body::SubmitSm(SubmitSm {
        source_addr_ton: 5,
        source_addr: "Acme".into(),
        dest_addr_ton: 1,
        destination_addr: "447700900125".into(),
        registered_delivery: 1,
        short_message: smpp::ShortMessage::new(b"Over TLS".to_vec()),
        ..Default::default()
    });
    let r = session.request(submit).await.unwrap();
    assert_eq!(r.command_status, CommandStatus::ESME_ROK);
    let Body::SubmitSmResp(r) = r.body else { panic!("a submit_sm_resp") };
    let receipt = tokio::time::timeout(Duration::from_secs(20), delivered.recv()).await.unwrap().unwrap();
    assert_eq!(receipt.tlvs.receipted_message_id(), Some(r.message_id.as_bytes()), "{receipt:?}");
    let id = r.message_id.to_str_lossy().into_owned();
    let m: Value = client
        .get(format!("{}/v1/messages/{id}", server.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((m["status"].as_str(), m["connector"].as_str()), (Some("delivered"), Some("tls-carrier")), "{m}");
    session.unbind().await;
    stop(server);
    sim.kill().unwrap();
    sim.wait().unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}
