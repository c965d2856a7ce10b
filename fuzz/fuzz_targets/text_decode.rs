//! Any octets into the SMS text decoders and the planner; the checks live in `sms_text::fuzzing` so that the
//! normal tests replay this target's regression files (`testdata/fuzz/text_decode/`) with the same ones.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sms_text::fuzzing::check(data));
