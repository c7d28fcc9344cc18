//! Test support for palisade: a seeded random source and [`Pair`], two connections joined
//! by an in-memory link with simulated time and latency.
//!
//! The same `Pair` serves the unit tests, the property tests, the fuzz targets, the
//! benches and the demo, so every one of them drives the real state machine.

mod bounded;
pub mod certs;
pub mod openssl;
mod pair;
mod random;

pub use bounded::bounded;
pub use pair::{Link, Pair, PairBuilder, DEFAULT_HORIZON, EPOCH_MS};
pub use random::SeededRandom;
