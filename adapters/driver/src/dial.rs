//! What a dialer says about the link it wants: the address, the name TLS checks (which
//! may differ from the host dialed: dial `10.0.0.7:7000`, expect the certificate of
//! `node-2`), the node id that must answer, and how long the TCP connect may take.
//! Every adapter's `dial` takes one; `connect`, `connect_with` and `connect_expecting`
//! are shorthands for it.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use palisade_core::{Connection, Endpoint};

use crate::driver::Runtime;
use crate::error::Error;
use crate::follow::LinkRegistry;
use crate::metrics::Metrics;
use crate::observe::{link_span, LinkObserver};
use crate::server_name_of;

/// Where and whom to dial, and the node's counters the link is counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    addr: String,
    server_name: Option<String>,
    expected_peer: Option<String>,
    connect_timeout: Option<Duration>,
    metrics: Option<Metrics>,
    /// The dialer's live links, which follow its settings.
    links: Option<LinkRegistry>,
}

impl Dial {
    /// Dials `addr` (`host:port`); TLS checks the host's name, any node may answer, and
    /// the TCP connect takes as long as the operating system lets it.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            server_name: None,
            expected_peer: None,
            connect_timeout: None,
            metrics: None,
            links: None,
        }
    }

    /// Counts the link in `metrics` (joins, refusals, TLS failures, frames, bytes): give
    /// every dial of a node the handle its listener counts in.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The link follows the settings of the dialer owning `links` (a reload decides its
    /// peer again); [`Dialer`](crate::Dialer) sets this for its dials.
    pub fn following(mut self, links: LinkRegistry) -> Self {
        self.links = Some(links);
        self
    }

    /// The counters the link is counted in, if any.
    pub fn counted_in(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The link's span (`palisade_link`, side `dialer`, the address dialed) and
    /// counters.
    pub fn observer(&self) -> LinkObserver {
        let span = link_span(palisade_core::Side::Initiator, Some(&self.addr));
        LinkObserver::new(self.metrics.clone(), span).following(self.links.clone())
    }

    /// TLS checks the acceptor's certificate against `name` (and sends it as SNI)
    /// instead of the host dialed.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Only the node with node id `node_id` may answer (reject code 9 for any other).
    pub fn expect_peer(mut self, node_id: impl Into<String>) -> Self {
        self.expected_peer = Some(node_id.into());
        self
    }

    /// The same, when the node id is optional.
    pub fn expect_peer_opt(mut self, node_id: Option<&str>) -> Self {
        self.expected_peer = node_id.map(str::to_owned);
        self
    }

    /// The TCP connect fails with [`io::ErrorKind::TimedOut`] after `timeout`
    /// (`connect_timeout`).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The address dialed.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The name TLS checks: the one given, else the host of the address.
    pub fn tls_name(&self) -> &str {
        self.server_name
            .as_deref()
            .unwrap_or_else(|| server_name_of(&self.addr))
    }

    /// The TCP connect's deadline, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The core connection for this dial.
    pub fn connection(&self, endpoint: &Endpoint) -> Result<Connection, Error> {
        let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
        Ok(
            endpoint.connect_expecting(
                self.tls_name(),
                self.expected_peer.as_deref(),
                now,
                wall,
            )?,
        )
    }

    /// The error for a TCP connect that ran past `connect_timeout`.
    pub fn timed_out(&self) -> Error {
        let after = self.connect_timeout.unwrap_or_default();
        Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "connecting to {} took longer than connect_timeout ({} ms); the node is down \
                 or unreachable, or raise connect_timeout",
                self.addr,
                after.as_millis()
            ),
        ))
    }
}

/// Runs a runtime's TCP `connect` for `dial`, bounded by its `connect_timeout` with the
/// runtime's own sleep: every async adapter's `dial` is this plus its socket type.
pub async fn connect_within<R: Runtime, S>(
    runtime: &R,
    dial: &Dial,
    connect: impl Future<Output = io::Result<S>>,
) -> Result<S, Error> {
    let Some(timeout) = dial.timeout() else {
        return Ok(connect.await?);
    };
    let mut connect = pin!(connect);
    let mut late = pin!(runtime.sleep_until(Instant::now() + timeout));
    poll_fn(|cx| {
        if let Poll::Ready(result) = connect.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(Error::Io));
        }
        match late.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(dial.timed_out())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_name_is_the_host_unless_another_is_given() {
        let dial = Dial::new("10.0.0.7:7000");
        assert_eq!(dial.tls_name(), "10.0.0.7");
        assert_eq!(dial.clone().server_name("node-2").tls_name(), "node-2");
        let err = dial.connect_timeout(Duration::from_millis(250)).timed_out();
        assert!(
            err.to_string().contains("connect_timeout (250 ms)"),
            "{err}"
        );
    }
}
