//! The `pair_ops` target: see `palisade_fuzz::checks::pair`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::checks::pair::check(data));
