//! The text vectors of `testdata/text/vectors.json`, each checked against the planner.

use serde_json::Value;
use sms_text::{Language, Options, Reference, plan};

fn text_of(v: &Value) -> String {
    v["text"]
        .as_array()
        .expect("text is a list")
        .iter()
        .map(|piece| piece[0].as_str().expect("piece").repeat(piece[1].as_u64().expect("repeat") as usize))
        .collect()
}

fn options_of(v: &Value) -> Options {
    let o = &v["options"];
    let national = o["national"]
        .as_array()
        .map(|a| a.iter().map(|n| Language::from_name(n.as_str().expect("name")).expect("language")).collect())
        .unwrap_or_default();
    let reference = o["reference"].as_u64().unwrap_or(0);
    let reference = if o["ref16"].as_bool().unwrap_or(false) {
        Reference::Sixteen(reference as u16)
    } else {
        Reference::Eight(reference as u8)
    };
    Options { national, smart: o["smart"].as_bool().unwrap_or(false), reference }
}

#[test]
fn text_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/text/vectors.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("vectors.json")).expect("json");
    let vectors = file["vectors"].as_array().expect("vectors");
    assert!(vectors.len() >= 20);
    for v in vectors {
        let name = v["name"].as_str().expect("name");
        let want = &v["expect"];
        let got = plan(&text_of(v), &options_of(v));
        if let Some(err) = want["error"].as_str() {
            assert_eq!(got.expect_err(name).to_string(), err, "{name}");
            continue;
        }
        let p = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let checks: [(&str, Value); 6] = [
            ("encoding", Value::from(p.encoding.name())),
            ("data_coding", Value::from(p.encoding.data_coding())),
            ("segments", Value::from(p.segments.len())),
            ("units_used_in_last_segment", Value::from(p.units_used_in_last_segment())),
            ("units_left_in_last_segment", Value::from(p.units_left_in_last_segment())),
            ("text", Value::from(p.text.clone())),
        ];
        for (key, got) in checks {
            if !want[key].is_null() {
                assert_eq!(want[key], got, "{name}: {key}");
            }
        }
        if let Some(u) = want["ucs2_characters"].as_array() {
            let got: Vec<String> = p.ucs2_characters().iter().map(|c| c.to_string()).collect();
            let want: Vec<&str> = u.iter().map(|c| c.as_str().expect("char")).collect();
            assert_eq!(got, want, "{name}: ucs2_characters");
        }
        if let Some(units) = want["units_per_segment"].as_array() {
            let got: Vec<u64> = p.segments.iter().map(|s| s.units as u64).collect();
            let want: Vec<u64> = units.iter().map(|u| u.as_u64().expect("units")).collect();
            assert_eq!(got, want, "{name}: units_per_segment");
        }
        let hexes = |f: &dyn Fn(&sms_text::Segment) -> Vec<u8>| -> Vec<String> {
            p.segments.iter().map(|s| hex::encode(f(s))).collect()
        };
        for (key, got) in [
            ("udh", hexes(&|s| s.udh.clone())),
            ("user_data", hexes(&|s| s.user_data(p.encoding))),
            ("short_message", hexes(&|s| s.short_message())),
        ] {
            if let Some(want) = want[key].as_array() {
                let want: Vec<&str> = want.iter().map(|h| h.as_str().expect("hex")).collect();
                assert_eq!(got, want, "{name}: {key}");
            }
        }
        if let Some(last) = want["user_data_last"].as_str() {
            let got = hex::encode(p.segments.last().expect("a segment").user_data(p.encoding));
            assert_eq!(got, last, "{name}: user_data_last");
        }
    }
}
