//! A wait that cannot hang a test: the work runs on a thread of its own and the test
//! fails, naming the work, when it takes too long.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// Runs `f` on a thread of its own and waits at most `within` for it; panics naming
/// `what` when it takes longer or panics itself.
pub fn bounded<T: Send + 'static>(
    what: &str,
    within: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(within) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what} did not finish within {within:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}
