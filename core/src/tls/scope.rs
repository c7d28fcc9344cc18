//! What one link keeps of its own while every link of an endpoint shares one rustls
//! configuration.
//!
//! rustls configurations are built once per [`TlsContext`](super::config::TlsContext),
//! that is per endpoint and settings generation: building one per connection cost about
//! as much as the join itself. Two things in a configuration are per connection,
//! though, and live here instead:
//!
//! - the clock: certificate validity follows the caller's `now` (the core reads no
//!   clock), and two links of one endpoint may be driven with different `now`s;
//! - the verifier's verdict: rustls only carries a coarse error (and sends the peer the
//!   matching alert), while the verdict holds the full story for this node's error
//!   (issuer, dates, expected and presented names) and the accepted certificate's names
//!   for the join's identity check.
//!
//! rustls calls the verifier and the time provider synchronously, from inside the
//! session's own calls into rustls, so the session [`enter`](LinkScope::enter)s its
//! scope around those calls and the shared verifier and clock find it in a thread-local.
//! Outside any scope the clock has no time, so no certificate can verify there.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;

use super::error::CertRefusal;
use super::verify::AcceptedCert;

thread_local! {
    static CURRENT: Cell<Option<Arc<LinkScope>>> = const { Cell::new(None) };
}

/// One link's clock and certificate verdict.
#[derive(Debug, Default)]
pub(crate) struct LinkScope {
    unix_ms: AtomicU64,
    verdict: OnceLock<Result<AcceptedCert, CertRefusal>>,
}

impl LinkScope {
    pub(crate) fn new(unix_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            unix_ms: AtomicU64::new(unix_ms),
            verdict: OnceLock::new(),
        })
    }

    /// Makes this the current link on this thread until the guard drops (the previous
    /// one, if any, is restored then, also on unwind), with the clock at `unix_ms`.
    pub(crate) fn enter(self: &Arc<Self>, unix_ms: u64) -> Entered {
        self.unix_ms.store(unix_ms, Ordering::Relaxed);
        Entered {
            previous: CURRENT.with(|c| c.replace(Some(Arc::clone(self)))),
        }
    }

    /// The accepted certificate, once the handshake has verified one.
    pub(crate) fn accepted(&self) -> Option<&AcceptedCert> {
        self.verdict.get().and_then(|v| v.as_ref().ok())
    }

    /// Why the certificate was refused, if it was.
    pub(crate) fn refusal(&self) -> Option<&CertRefusal> {
        self.verdict.get().and_then(|v| v.as_ref().err())
    }

    /// Records the verdict of the current link. A handshake verifies one certificate;
    /// should rustls ask again, the first verdict stands for the report.
    pub(crate) fn record(verdict: Result<AcceptedCert, CertRefusal>) {
        with_current(|scope| {
            let _ = scope.verdict.set(verdict);
        });
    }
}

/// Restores the previous current link when dropped.
#[must_use = "the scope ends when the guard drops"]
pub(crate) struct Entered {
    previous: Option<Arc<LinkScope>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| c.set(previous));
    }
}

/// Runs `f` on the current link, if there is one.
fn with_current<R>(f: impl FnOnce(&LinkScope) -> R) -> Option<R> {
    CURRENT.with(|c| {
        let current = c.take();
        let result = current.as_deref().map(f);
        c.set(current);
        result
    })
}

/// The certificate clock of every link of an endpoint: the current link's `now`.
#[derive(Debug, Default)]
pub(crate) struct LinkClock;

impl TimeProvider for LinkClock {
    fn current_time(&self) -> Option<UnixTime> {
        with_current(|scope| {
            UnixTime::since_unix_epoch(Duration::from_millis(scope.unix_ms.load(Ordering::Relaxed)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_follows_the_entered_link_and_nests() {
        let clock = LinkClock;
        assert_eq!(
            clock.current_time(),
            None,
            "outside a link there is no time"
        );
        let a = LinkScope::new(0);
        let b = LinkScope::new(0);
        {
            let _a = a.enter(1_000);
            assert_eq!(clock.current_time().map(|t| t.as_secs()), Some(1));
            {
                let _b = b.enter(5_000);
                assert_eq!(clock.current_time().map(|t| t.as_secs()), Some(5));
            }
            assert_eq!(clock.current_time().map(|t| t.as_secs()), Some(1));
        }
        assert_eq!(clock.current_time(), None);
    }

    fn refusal(subject: &str) -> CertRefusal {
        CertRefusal::UnknownIssuer {
            subject: subject.into(),
            issuer: "CN=elsewhere".into(),
        }
    }

    #[test]
    fn a_verdict_goes_to_the_entered_link_only() {
        let a = LinkScope::new(0);
        let b = LinkScope::new(0);
        LinkScope::record(Err(refusal("nowhere")));
        {
            let _b = b.enter(0);
            LinkScope::record(Err(refusal("b")));
        }
        assert!(a.refusal().is_none() && a.accepted().is_none());
        assert!(b.refusal().is_some());
    }

    #[test]
    fn another_thread_sees_no_link() {
        let a = LinkScope::new(0);
        let _a = a.enter(1_000);
        let seen = std::thread::spawn(|| LinkClock.current_time())
            .join()
            .ok()
            .flatten();
        assert_eq!(seen, None);
    }
}
