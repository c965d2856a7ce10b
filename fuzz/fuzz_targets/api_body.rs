//! Any octets as the REST API's JSON bodies, through parsing and admission; the checks live in
//! `smsgate_api::fuzzing` so that the normal tests (`crates/api/tests/bodies.rs`) run them too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smsgate_api::fuzzing::check_body(data));
