//! One check per fuzz target. A check panics when an invariant breaks; that is how
//! libFuzzer (and the corpus test) learns of a failure.
//!
//! Inputs are read with [`input::Input`], which turns any byte string into a valid
//! sequence of choices, and seeds are written with the matching `encode` functions, so
//! the seed corpus can be generated from recorded traffic (see
//! `core/tests/fuzz_corpus.rs`).

pub mod conn;
pub mod driver;
pub mod fixtures;
pub mod frame;
pub mod input;
pub mod join;
pub mod pair;
pub mod wire;

/// A target's check.
pub type Check = fn(&[u8]);

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: [(&str, Check); 6] = [
    ("frame_decoder", frame::check),
    ("join_messages", join::check),
    ("connection_acceptor_plain", conn::acceptor_plain),
    ("connection_initiator_plain", conn::initiator_plain),
    ("connection_acceptor_tls", conn::acceptor_tls),
    ("pair_ops", pair::check),
];
