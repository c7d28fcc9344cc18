//! The audit log (`audit_log = "FILE"`): one JSON object per line, appended, for each
//! security event of the node: `join`, `join_refused`, `link_closed_by_trust`, `reload`
//! and `stream_refused`. Fields: `time` (RFC 3339, UTC), `event`, and where they apply
//! `peer_addr`, `node_id`, `cert_serial` (hex), `key_id`, `side`, `service`, `code`,
//! `reason`, `result`, `source`, `changed`. A field that does not apply is left out.
//!
//! Never a secret: the records hold identifiers (node ids, serials, key ids derived from
//! secrets) and the library's error texts, which never quote secrets either.
//!
//! Logging never blocks a link: records go through a bounded queue to one writer
//! thread; when the queue is full the record is dropped and counted, and the writer
//! says how many it lost (an `audit_dropped` record) as soon as it can.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::error;

use crate::exit::{self, CliError};

/// Records waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 8192;

/// One line of the log. Build it with [`Entry::new`] and the setters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entry {
    time: String,
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `dialed` or `accepted` (which end of the link this node is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A reject code, a TLS failure cause or a close cause, as in the metrics labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `reload`: `ok` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'static str>,
    /// `reload`: `files` (the watch) or `config` (SIGHUP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `reload`: what the new settings changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    /// `audit_dropped`: records lost to a full queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl Entry {
    /// An `event` record stamped now.
    pub fn new(event: &'static str) -> Self {
        Self {
            time: now_rfc3339(),
            event,
            ..Self::default()
        }
    }

    /// The record as one line of JSON (with its newline).
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                "{{\"time\":\"{}\",\"event\":\"unserializable\"}}",
                self.time
            )
        });
        line.push('\n');
        line
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

enum Msg {
    Line(String),
    Flush(SyncSender<()>),
}

#[derive(Debug)]
struct Inner {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// The audit log's handle: cheap to clone, never blocks. [`Audit::off`] (no
/// `audit_log`) records nothing.
#[derive(Debug, Clone, Default)]
pub struct Audit(Option<Arc<Inner>>);

impl Audit {
    /// Records nothing.
    pub fn off() -> Self {
        Self(None)
    }

    /// Opens (creates, appends to) `path` and starts the writer thread. An error names
    /// `audit_log` and the path: the node must not start without the log it was told
    /// to keep.
    pub fn open(path: &Path) -> Result<Self, CliError> {
        let file = open_append(path).map_err(|e| {
            CliError::new(
                exit::IO,
                format!("audit_log: cannot open {} for appending", path.display()),
            )
            .cause(&e)
            .hint("fix the path or the directory's permissions, or unset audit_log")
        })?;
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = Arc::clone(&dropped);
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("palisade-audit".into())
            .spawn(move || write_loop(file, &rx, &lost, &shown))
            .map_err(|e| CliError::new(exit::IO, "audit_log: cannot start its writer").cause(&e))?;
        Ok(Self(Some(Arc::new(Inner { tx, dropped }))))
    }

    /// Queues `entry`; drops it (counted) when the writer is that far behind.
    pub fn record(&self, entry: &Entry) {
        let Some(inner) = &self.0 else { return };
        match inner.tx.try_send(Msg::Line(entry.line())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `limit`) until everything queued before is written.
    pub fn flush(&self, limit: Duration) {
        let Some(inner) = &self.0 else { return };
        let (ack, done) = sync_channel(1);
        if inner.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(limit);
        }
    }

    /// A stream to `service` refused (not on the service's allow list, no such service,
    /// the target refused...): for the forwarding tables.
    pub fn stream_refused(&self, peer_addr: &str, node_id: &str, service: &str, reason: &str) {
        let mut e = Entry::new("stream_refused");
        e.peer_addr = Some(peer_addr.to_owned());
        e.node_id = Some(node_id.to_owned());
        e.service = Some(service.to_owned());
        e.reason = Some(reason.to_owned());
        self.record(&e);
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

fn write_loop(
    mut file: File,
    rx: &std::sync::mpsc::Receiver<Msg>,
    dropped: &AtomicU64,
    path: &str,
) {
    let mut failing = false;
    let mut write = |file: &mut File, line: &str| match file.write_all(line.as_bytes()) {
        Ok(()) => failing = false,
        Err(e) => {
            // Said once per run of failures, not once per record.
            if !failing {
                error!(
                    "audit_log: cannot write to {path}: {e}; records are lost until it works again"
                );
            }
            failing = true;
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Msg::Line(line)) => write(&mut file, &line),
            Ok(Msg::Flush(ack)) => {
                let _ = file.flush();
                let _ = ack.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let mut e = Entry::new("audit_dropped");
            e.count = Some(lost);
            e.reason = Some("the audit queue was full".into());
            write(&mut file, &e.line());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_of_json_with_only_the_fields_that_apply() {
        let mut e = Entry::new("join_refused");
        e.peer_addr = Some("127.0.0.1:4000".into());
        e.reason = Some("line\nbreak \"quoted\" \u{7}".into());
        let line = e.line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "join_refused");
        assert_eq!(v["reason"], "line\nbreak \"quoted\" \u{7}");
        assert!(v.get("node_id").is_none());
        let time = v["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    }

    #[test]
    fn records_reach_the_file_in_order_and_an_unopenable_path_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        for i in 0..100 {
            audit.stream_refused("127.0.0.1:1", &format!("node-{i}"), "etcd", "not allowed");
        }
        audit.flush(Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["node_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            ids,
            (0..100).map(|i| format!("node-{i}")).collect::<Vec<_>>()
        );

        let err = Audit::open(&dir.path().join("missing").join("audit.jsonl")).unwrap_err();
        let shown = err.render();
        assert!(
            shown.contains("audit_log") && shown.contains("missing"),
            "{shown}"
        );
    }
}
