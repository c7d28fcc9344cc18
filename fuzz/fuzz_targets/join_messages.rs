//! The `join_messages` target: see `palisade_fuzz::checks::join`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::checks::join::check(data));
