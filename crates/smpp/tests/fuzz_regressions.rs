//! Replays every file of `testdata/fuzz/pdu_decode/` (inputs the fuzzer found interesting or that once crashed)
//! through the fuzz target's checks.

#[test]
fn replay_pdu_decode_regressions() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/fuzz/pdu_decode");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("regression folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        smpp::fuzzing::check_decode(&std::fs::read(&path).expect("file"));
        n += 1;
    }
    assert!(n > 0, "no regression files in {dir}");
}
