//! Replays every file of `testdata/fuzz/text_decode/` through the fuzz target's checks.

#[test]
fn replay_text_decode_regressions() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/fuzz/text_decode");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("regression folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        sms_text::fuzzing::check(&std::fs::read(&path).expect("file"));
        n += 1;
    }
    assert!(n > 0, "no regression files in {dir}");
}
