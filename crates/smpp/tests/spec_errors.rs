//! The malformed PDUs of `testdata/smpp/spec_vectors.json`: each must fail with the field, status and answer the
//! vector names, and never panic.

use serde_json::Value;
use smpp::{Body, Pdu};

#[test]
fn error_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/smpp/spec_vectors.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    let errors = file["errors"].as_array().expect("errors");
    assert!(errors.len() >= 10);
    for v in errors {
        let name = v["name"].as_str().expect("name");
        let bytes = hex::decode(v["hex"].as_str().expect("hex")).expect("hex");
        let err = Pdu::decode(&bytes).expect_err(name);
        assert_eq!(err.status().name(), v["status"].as_str(), "{name}: status");
        if let Some(field) = v["field"].as_str() {
            assert!(matches!(&err, smpp::PduError::Body { error, .. } if error.field == field), "{name}: {err}");
        }
        let response = err.response();
        assert_eq!(response.as_ref().map(|r| r.body.name()), v["response"].as_str(), "{name}: response");
        if let Some(r) = response {
            let h = smpp::Header::peek(&bytes).expect("header");
            assert_eq!(r.sequence_number, h.sequence_number, "{name}: the answer keeps the sequence number");
            assert_eq!(r.command_status, err.status());
            // An error response goes out without a body, as SMPP 3.4 allows.
            let wire = r.encode().expect("encodes");
            if r.body != Body::GenericNack {
                assert_eq!(wire.len(), 16, "{name}");
            }
        }
    }
}

#[test]
fn valid_spec_vectors_round_trip() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/smpp/spec_vectors.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    for v in file["valid"].as_array().expect("valid") {
        let bytes = hex::decode(v["hex"].as_str().expect("hex")).expect("hex");
        let pdu = Pdu::decode(&bytes).expect("decodes");
        assert_eq!(pdu.encode().expect("encodes"), bytes, "{}", v["name"]);
    }
}

/// A refused request is answered with its own (empty) response, or generic_nack when it has none.
#[test]
fn refusals_are_the_requests_own_responses() {
    use smpp::pdu::{CancelSm, Outbind, SubmitSm, SubmitSmResp};
    use smpp::{Body, CommandStatus, Pdu};
    let r = Pdu::refusal(&Body::SubmitSm(SubmitSm::default()), 7, CommandStatus::ESME_RTHROTTLED);
    assert_eq!(
        (r.body, r.sequence_number, r.command_status),
        (Body::SubmitSmResp(SubmitSmResp::default()), 7, CommandStatus::ESME_RTHROTTLED)
    );
    let cancel = Pdu::refusal(&Body::CancelSm(CancelSm::default()), 1, CommandStatus::ESME_RCANCELFAIL);
    assert_eq!(cancel.body, Body::CancelSmResp);
    let outbind = Pdu::refusal(&Body::Outbind(Outbind::default()), 1, CommandStatus::ESME_RINVCMDID);
    assert_eq!(outbind.body, Body::GenericNack);
    assert_eq!(Pdu::refusal(&Body::EnquireLinkResp, 1, CommandStatus::ESME_RINVCMDID).body, Body::GenericNack);
}
