//! The Prometheus series `palisade node` exposes on `/metrics`: the names the library's
//! [`palisade::Metrics`] sends to the `metrics` facade (README, "Metrics and tracing"),
//! their help texts, and the per-service counters of the forwarding tables
//! ([`ServiceCounters`]), which code that forwards streams calls.
//!
//! Every series carries the label `node` (this node's id), as the library's do.

use metrics::{describe_counter, describe_gauge, Counter};

/// Counters the library updates, with their help text. Unlabelled ones are registered
/// at zero when the recorder is installed, so they show from the first scrape.
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "palisade_links_accepted_total",
        "Links this node accepted that joined.",
    ),
    (
        "palisade_links_dialed_total",
        "Links this node dialed that joined.",
    ),
    ("palisade_joins_ok_total", "Joins completed, both sides."),
    ("palisade_frames_sent_total", "Frames sent on joined links."),
    (
        "palisade_frames_received_total",
        "Frames received on joined links.",
    ),
    ("palisade_bytes_sent_total", "Frame payload bytes sent."),
    (
        "palisade_bytes_received_total",
        "Frame payload bytes received.",
    ),
    ("palisade_reloads_ok_total", "Settings reloads taken."),
    (
        "palisade_reloads_failed_total",
        "Settings reloads refused (the last good set stays).",
    ),
    (
        "palisade_links_below_strict_total",
        "Links a permissive listener joined below the strict settings.",
    ),
    (
        "palisade_rejoins_ok_total",
        "Links re-joined in place after a secret change.",
    ),
    (
        "palisade_rejoins_failed_total",
        "Re-joins in place that failed (the link closed).",
    ),
];

/// Counters with labels beyond `node`: they appear at their first event.
pub const LABELLED_COUNTERS: &[(&str, &str)] = &[
    ("palisade_joins_refused_total", "Join refusals by reject code and by who refused (side=sent: this node, received: the peer)."),
    ("palisade_tls_failures_total", "TLS handshakes that failed, by cause."),
    ("palisade_links_closed_by_trust_total", "Joined links this node closed because its settings no longer admit the peer, by cause."),
    (FORWARD_STREAMS, "Streams forwarded through a [[service]], by service."),
    (FORWARD_BYTES, "Bytes forwarded through a [[service]], by service and direction (sent: to the peer, received: from it)."),
];

/// Gauges the library sets.
pub const GAUGES: &[(&str, &str)] = &[
    ("palisade_links_open", "Joined links open now."),
    ("palisade_handshakes_in_progress", "Links not yet joined."),
    (
        "palisade_cert_expiry_seconds",
        "Seconds until this node's certificate expires (NaN without one).",
    ),
    (
        "palisade_permissive",
        "1 while the listener runs in permissive (migration) mode.",
    ),
];

/// `palisade_forward_streams_total{node,service}`.
pub const FORWARD_STREAMS: &str = "palisade_forward_streams_total";
/// `palisade_forward_bytes_total{node,service,direction}`.
pub const FORWARD_BYTES: &str = "palisade_forward_bytes_total";

/// Gives every series its help text and registers the unlabelled counters at zero.
/// Call once, after the recorder is installed.
pub fn describe(node_id: &str) {
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
        metrics::counter!(name, "node" => node_id.to_owned()).increment(0);
    }
    for &(name, help) in LABELLED_COUNTERS {
        describe_counter!(name, help);
    }
    for &(name, help) in GAUGES {
        describe_gauge!(name, help);
    }
    // The two the library moves by increments: shown at zero until their first change.
    for name in ["palisade_links_open", "palisade_handshakes_in_progress"] {
        metrics::gauge!(name, "node" => node_id.to_owned()).increment(0.0);
    }
}

// The forwarding tables (`[[forward]]`, `[[service]]`) count through what follows.

/// Which way forwarded bytes went, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the local application to the peer.
    Sent,
    /// From the peer to the local application.
    Received,
}

impl Direction {
    /// The `direction` label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// The counters of one `[[service]]` (or `[[forward]]`) on this node: make one per
/// service when the tables are loaded, clone it into each stream. Without a recorder
/// (no `metrics_listen`) every call is a no-op.
#[derive(Clone)]
pub struct ServiceCounters {
    streams: Counter,
    sent: Counter,
    received: Counter,
}

impl std::fmt::Debug for ServiceCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCounters").finish_non_exhaustive()
    }
}

impl ServiceCounters {
    /// The counters of `service` on node `node_id`.
    pub fn new(node_id: &str, service: &str) -> Self {
        let bytes = |d: Direction| metrics::counter!(FORWARD_BYTES, "node" => node_id.to_owned(), "service" => service.to_owned(), "direction" => d.label());
        Self {
            streams: metrics::counter!(FORWARD_STREAMS, "node" => node_id.to_owned(), "service" => service.to_owned()),
            sent: bytes(Direction::Sent),
            received: bytes(Direction::Received),
        }
    }

    /// A stream was opened (and admitted) for this service.
    pub fn stream_opened(&self) {
        self.streams.increment(1);
    }

    /// `n` bytes went `direction`.
    pub fn bytes(&self, direction: Direction, n: u64) {
        match direction {
            Direction::Sent => self.sent.increment(n),
            Direction::Received => self.received.increment(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn service_counters_and_the_zeroed_series_render_with_their_labels() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe("node-1");
            let etcd = ServiceCounters::new("node-1", "etcd-peer");
            etcd.stream_opened();
            etcd.stream_opened();
            etcd.bytes(Direction::Sent, 100);
            etcd.clone().bytes(Direction::Received, 7);
        });
        let text = handle.render();
        for line in [
            "palisade_forward_streams_total{node=\"node-1\",service=\"etcd-peer\"} 2",
            "palisade_forward_bytes_total{node=\"node-1\",service=\"etcd-peer\",direction=\"sent\"} 100",
            "palisade_forward_bytes_total{node=\"node-1\",service=\"etcd-peer\",direction=\"received\"} 7",
            "palisade_reloads_failed_total{node=\"node-1\"} 0",
            "palisade_links_open{node=\"node-1\"} 0",
            "# HELP palisade_forward_streams_total Streams forwarded",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }
}
