#![allow(clippy::unwrap_used)] // Test code; a failure is a test failure.
//! The API's JSON bodies under random input: valid bodies mutated field by field (numbers, senders, texts,
//! times, URLs, scopes) and raw octets, through `smsgate_api::fuzzing::check_body` — the checks of the `api_body`
//! fuzz target, run here on every test run.

use proptest::prelude::*;
use serde_json::{Value, json};

/// A string from the kinds that reach the checks' edges.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+0-9 ()-]{0,24}",
        "[A-Za-z0-9 &'!#@+._-]{0,14}",
        "\\PC{0,200}",
        Just("https://127.0.0.1:8080/x".to_string()),
        Just("http://[::ffff:10.0.0.1]/".to_string()),
        Just("http://0x7f.1/".to_string()),
        Just("2026-12-06T10:00:00Z".to_string()),
        Just("€".repeat(400)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        text().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(Value::Null),
        prop::collection::vec(text().prop_map(Value::from), 0..4).prop_map(Value::from),
    ]
}

fn body() -> impl Strategy<Value = Value> {
    let fields = [
        "to",
        "from",
        "body",
        "send_at",
        "validity",
        "callback_url",
        "callback_statuses",
        "reference",
        "number",
        "account_id",
        "connector",
        "sender_id",
        "status_url",
        "inbound_url",
        "scopes",
        "name",
        "sender_policy",
        "routes",
        "requests_per_second",
        "messages_per_second",
    ];
    prop::collection::vec((prop::sample::select(fields.to_vec()), value()), 0..8).prop_map(|pairs| {
        let mut base = json!({"to": "+447700900123", "from": "Acme", "body": "Hello"});
        for (k, v) in pairs {
            base[k] = v;
        }
        base
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_bodies(b in body()) {
        smsgate_api::fuzzing::check_body(b.to_string().as_bytes());
        let batch = json!({"messages": [b.clone(), b]});
        smsgate_api::fuzzing::check_body(batch.to_string().as_bytes());
    }

    #[test]
    fn raw_octets(data in prop::collection::vec(any::<u8>(), 0..512)) {
        smsgate_api::fuzzing::check_body(&data);
    }
}
