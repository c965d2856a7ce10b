//! Every PDU vector of `testdata/smpp/` both ways, through the JSON form `smsgate pdu` prints: hex from an
//! independent encoder (smpp.pdu3) or assembled by hand from the specification decodes to the recorded JSON, and
//! that JSON encodes back to the same octets.

use serde_json::Value;
use smpp::Pdu;

fn vectors(file: &str, key: &str) -> Vec<Value> {
    let path = format!("{}/../../testdata/smpp/{file}", env!("CARGO_MANIFEST_DIR"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    v[key].as_array().expect("list").clone()
}

#[test]
fn every_pdu_both_ways() {
    let mut all = vectors("pdu3_vectors.json", "vectors");
    all.extend(vectors("spec_vectors.json", "valid"));
    let mut commands = std::collections::BTreeSet::new();
    for v in &all {
        let name = v["name"].as_str().expect("name");
        let hex = v["hex"].as_str().expect("hex");
        let pdu = smsgate::pdu::decode_hex(hex).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(smsgate::pdu::to_json(&pdu).expect("json"), v["pdu"], "{name}: decode");
        let back: Pdu = serde_json::from_value(v["pdu"].clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hex::encode(back.encode().expect("encodes")), hex, "{name}: encode");
        commands.insert(pdu.body.name());
    }
    // Every SMPP 3.4 command has at least one vector.
    let every = [
        "alert_notification",
        "bind_receiver",
        "bind_receiver_resp",
        "bind_transceiver",
        "bind_transceiver_resp",
        "bind_transmitter",
        "bind_transmitter_resp",
        "cancel_sm",
        "cancel_sm_resp",
        "data_sm",
        "data_sm_resp",
        "deliver_sm",
        "deliver_sm_resp",
        "enquire_link",
        "enquire_link_resp",
        "generic_nack",
        "outbind",
        "query_sm",
        "query_sm_resp",
        "replace_sm",
        "replace_sm_resp",
        "submit_multi",
        "submit_multi_resp",
        "submit_sm",
        "submit_sm_resp",
        "unbind",
        "unbind_resp",
    ];
    let missing: Vec<_> = every.iter().filter(|c| !commands.contains(*c)).collect();
    assert!(missing.is_empty(), "no vector for {missing:?}");
}
