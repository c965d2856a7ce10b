//! The receipt texts of `testdata/smpp/receipts.json`, read leniently; and what is read writes back strictly.

use serde_json::Value;
use smpp::receipt::{Receipt, ReceiptDate};

#[test]
fn receipt_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/smpp/receipts.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("receipts")).expect("json");
    for v in file["receipts"].as_array().expect("receipts") {
        let name = v["name"].as_str().expect("name");
        let want = &v["expect"];
        let got = Receipt::parse(v["text"].as_str().expect("text"));
        if let Some(err) = want["error"].as_str() {
            assert_eq!(got.expect_err(name).to_string(), err, "{name}");
            continue;
        }
        let r = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let date = |d: Option<ReceiptDate>| d.map_or(Value::Null, |d| Value::from(d.to_string()));
        let fields = [
            ("id", Value::from(r.id.clone())),
            ("sub", Value::from(r.sub)),
            ("dlvrd", Value::from(r.dlvrd)),
            ("submit_date", date(r.submit_date)),
            ("done_date", date(r.done_date)),
            ("stat", Value::from(r.stat.stat())),
            ("err", Value::from(r.err.clone())),
            ("text", Value::from(r.text.clone())),
        ];
        let expected = want.as_object().expect("object");
        for (key, got) in fields {
            if expected.contains_key(key) {
                assert_eq!(want[key], got, "{name}: {key}");
            }
        }
        // Written strictly, it reads back the same (but for the seconds the layout drops).
        let again = Receipt::parse(&r.format()).expect("own format parses");
        assert_eq!(
            (again.id, again.stat, again.sub, again.dlvrd),
            (r.id.clone(), r.stat.clone(), r.sub.min(999), r.dlvrd.min(999)),
            "{name}"
        );
    }
}
