//! The `frame_decoder` target: see `palisade_fuzz::checks::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::checks::frame::check(data));
