//! The real `smsgate` binary, run as a user would.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn smsgate(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn smsgate");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("smsgate runs")
}

fn json(args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let out = smsgate(args, stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A failing run: non-zero exit, one line on stderr, nothing on stdout, no panic.
fn fails(args: &[&str], stdin: Option<&str>, needle: &str) {
    let out = smsgate(args, stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!err.contains("panicked"));
}

#[test]
fn encode_json_answers_how_many_segments() {
    let v = json(&["encode", "--json", &"a".repeat(161)], None);
    assert_eq!(v["encoding"], "gsm7");
    assert_eq!(v["segments"], 2);
    assert_eq!(v["characters"], 161);
    assert_eq!(v["units_used_in_last_segment"], 8);
    assert_eq!(v["units_left_in_last_segment"], 145);
    assert_eq!(v["ucs2_characters"], serde_json::json!([]));
    let v = json(&["encode", "--json", "Привет 😀"], None);
    assert_eq!(v["encoding"], "ucs2");
    assert_eq!(v["ucs2_characters"], serde_json::json!(["П", "р", "и", "в", "е", "т", "😀"]));
    assert_eq!(v["units_used_in_last_segment"], 9);
}

#[test]
fn encode_reads_stdin_and_drops_the_final_newline() {
    let v = json(&["encode", "--json"], Some("hello\n"));
    assert_eq!(v["characters"], 5);
    let v = json(&["encode", "--json", "--keep-newline"], Some("hello\n"));
    assert_eq!(v["characters"], 6);
}

#[test]
fn encode_smart_and_national() {
    let v = json(&["encode", "--json", "--smart", "It\u{2019}s \u{201C}ok\u{201D}"], None);
    assert_eq!(v["encoding"], "gsm7");
    assert_eq!(v["smart_replacements"], 3);
    let turkish = "Günaydın, nasılsın? Şimdi çıkıyorum. ".repeat(4);
    let v = json(&["encode", "--json", "--national", "tr", &turkish], None);
    assert_eq!(v["encoding"], "gsm7-turkish-locking");
    assert_eq!(v["locking_shift"], "turkish");
    let text = smsgate(&["encode", "€"], None);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("encoding:    gsm7") && out.contains("segments:    1"), "{out}");
}

#[test]
fn encode_errors() {
    fails(&["encode", &"a".repeat(153 * 255 + 1)], None, "256 segments");
    fails(&["encode", "--national", "klingon", "x"], None, "unknown national language");
    fails(&["encode", "--reference", "300", "x"], None, "--ref16");
}

#[test]
fn pdu_decode_and_encode() {
    let v = json(&["pdu", "decode", "00000010000000150000000000000007"], None);
    assert_eq!(v["command"], "enquire_link");
    assert_eq!(v["sequence_number"], 7);
    assert_eq!(v["command_status"], "ESME_ROK");
    let v = json(&["pdu", "decode"], Some("0x00000010 80000004 00000058 00000009\n"));
    assert_eq!(v["command"], "submit_sm_resp");
    assert_eq!(v["command_status"], "ESME_RTHROTTLED");
    let input =
        r#"{"command":"submit_sm","sequence_number":2,"destination_addr":"447700900123","short_message":"4869"}"#;
    let out = smsgate(&["pdu", "encode"], Some(input));
    assert!(out.status.success());
    let hex = String::from_utf8(out.stdout).expect("utf-8");
    let v = json(&["pdu", "decode", hex.trim()], None);
    assert_eq!(v["destination_addr"], "447700900123");
    assert_eq!(v["short_message_text"], "Hi");
}

#[test]
fn pdu_errors_name_the_field() {
    fails(&["pdu", "decode", "zz"], None, "invalid hex");
    fails(&["pdu", "decode", "0000"], None, "at least 16 octets");
    fails(&["pdu", "decode", "00000008000000150000000000000007"], None, "smaller than the 16-octet header");
    fails(&["pdu", "decode", "00000020000000150000000000000007"], None, "command_length says 32");
    fails(&["pdu", "decode", "00000010000009990000000000000007"], None, "unknown command_id");
    let long_dest = format!("{{\"command\":\"submit_sm\",\"destination_addr\":\"{}\"}}", "1".repeat(30));
    fails(&["pdu", "encode", &long_dest], None, "destination_addr");
    fails(&["pdu", "encode", r#"{"command":"submit_smx"}"#], None, "invalid PDU JSON");
    fails(&["pdu", "encode", "not json"], None, "invalid PDU JSON");
    fails(&["pdu", "encode", r#"{"command":"submit_sm","short_message":"zz"}"#], None, "invalid PDU JSON");
}

#[test]
fn config_shows_each_value_and_its_source() {
    let file = std::env::temp_dir().join(format!("smsgate-cli-config-{}.toml", std::process::id()));
    std::fs::write(&file, "data_dir = \"/srv/smsgate\"\n[[sim.carriers]]\nname = \"uk\"\nprefix = \"+44\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smsgate"))
        .args(["config", "--http", "127.0.0.1:9000", "--config"])
        .arg(&file)
        .env("SMSGATE_NODE", "edge-2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("http = \"127.0.0.1:9000\"  # command line: --http"), "{text}");
    assert!(text.contains("node = \"edge-2\"  # environment: SMSGATE_NODE"), "{text}");
    assert!(text.contains("data_dir = \"/srv/smsgate\"  # file"), "{text}");
    assert!(text.contains("prefix = \"+44\""), "{text}");
    std::fs::write(&file, "http_port = 1\n").unwrap();
    let config = file.to_string_lossy().to_string();
    fails(&["config", "--config", &config], None, "unknown field");
    std::fs::remove_file(&file).unwrap();
    fails(&["serve", "--config", "/nonexistent/smsgate.toml"], None, "does not exist");
}
