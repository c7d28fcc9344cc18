//! The `connection_acceptor_tls` target: see `palisade_fuzz::checks::conn`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| palisade_fuzz::checks::conn::acceptor_tls(data));
