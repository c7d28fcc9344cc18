//! The checks behind palisade's fuzz targets.
//!
//! Each target in `fuzz_targets/` is one line that calls a function of [`checks`]. The
//! same module is compiled into `core/tests/fuzz_corpus.rs` (by `#[path]`), which runs
//! every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through it
//! under plain `cargo test`, so a corpus file means the same to both and a crash found
//! by the fuzzer stays fixed without nightly.

pub mod checks;
