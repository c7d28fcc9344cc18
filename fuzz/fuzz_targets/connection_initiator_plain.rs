//! The `connection_initiator_plain` target: see `palisade_fuzz::checks::conn`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::checks::conn::initiator_plain(data));
