//! Any octets into the SMPP framing and decoder; the checks live in `smpp::fuzzing` so that the normal tests
//! replay this target's regression files (`testdata/fuzz/pdu_decode/`) with the same ones.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| smpp::fuzzing::check_decode(data));
