//! The node's HTTP endpoints (`metrics_listen`): `GET /metrics`, `/healthz`, `/readyz`.
//!
//! A deliberately small HTTP/1.1 responder: one request per connection (`Connection:
//! close`), no request bodies, GET and HEAD only. Bounded so it can never be turned
//! against the node: at most [`MAX_CONNECTIONS`] connections at once (more are closed
//! at once), a request head of at most [`MAX_REQUEST`] bytes (else `431`), [`READ_TIMEOUT`]
//! to send it (else `408`), [`WRITE_TIMEOUT`] to take the answer, and a bounded drain
//! before closing so the client reads the answer rather than a reset.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::{Health, Readiness};

/// HTTP connections served at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request head (request line and headers), bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering: how long, and how many bytes, unread input is drained before close.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// What the endpoints read.
#[derive(Debug)]
pub struct State {
    /// `None`: `/metrics` answers 404 (no recorder).
    pub metrics: Option<PrometheusHandle>,
    pub ready: Arc<Readiness>,
    pub health: Arc<Health>,
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                // Out of descriptors or memory: pause instead of spinning.
                tracing::debug!("metrics_listen: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let limit = READ_TIMEOUT + WRITE_TIMEOUT + LINGER + Duration::from_secs(1);
            let _ = timeout(limit, connection(sock, &state)).await;
            drop(permit);
        });
    }
}

enum Head {
    /// The head is `buf[..n]`.
    Complete(usize),
    TooLarge,
    /// The client went away before a whole head.
    Closed,
}

async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Head> {
    let mut chunk = [0u8; 1024];
    loop {
        let room = MAX_REQUEST - buf.len();
        if room == 0 {
            return Ok(Head::TooLarge);
        }
        let take = room.min(chunk.len());
        let n = sock.read(&mut chunk[..take]).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf[from..]) {
            return Ok(Head::Complete(from + end));
        }
    }
}

/// The end of a request head (after its blank line) in `bytes`.
fn find_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn connection(mut sock: TcpStream, state: &State) {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::with_capacity(512);
    let response = match timeout(READ_TIMEOUT, read_head(&mut sock, &mut buf)).await {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err(_) | Ok(Head::Closed)) => return,
        Ok(Ok(Head::TooLarge)) => Response::text(431, "request head too large\n"),
        Ok(Ok(Head::Complete(n))) => respond(&buf[..n], state),
    };
    let bytes = response.bytes();
    if !matches!(
        timeout(WRITE_TIMEOUT, sock.write_all(&bytes)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let _ = sock.shutdown().await;
    // Drain what the client still sends (bounded), so closing does not reset the
    // connection before it has read the answer.
    let _ = timeout(LINGER, async {
        let mut drained = 0;
        let mut chunk = [0u8; 4096];
        while drained < LINGER_BYTES {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// The answer to a request head.
pub(crate) fn respond(head: &[u8], state: &State) -> Response {
    let Some((method, path)) = request_line(head) else {
        return Response::text(400, "bad request\n");
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let mut r = Response::text(405, "only GET and HEAD\n");
        r.allow = true;
        return r;
    }
    let mut r = match path {
        "/metrics" => match &state.metrics {
            Some(handle) => {
                handle.run_upkeep();
                Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: handle.render().into_bytes(),
                    allow: false,
                    head_only: false,
                }
            }
            None => Response::text(404, "not found\n"),
        },
        "/healthz" => match state.health.check() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(why) => Response::text(503, &format!("{why}\n")),
        },
        "/readyz" => match state.ready.check() {
            Ok(text) => Response::text(200, &text),
            Err(text) => Response::text(503, &text),
        },
        _ => Response::text(404, "not found\n"),
    };
    r.head_only = head_only;
    r
}

/// `(method, path without the query)` of a well-formed HTTP/1.x request line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some((method, target.split(['?', '#']).next().unwrap_or(target)))
}

#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    content_type: &'static str,
    pub body: Vec<u8>,
    allow: bool,
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: false,
            head_only: false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.allow {
            out += "Allow: GET, HEAD\r\n";
        }
        out += "\r\n";
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            metrics: None,
            ready: Arc::new(Readiness::new(&["127.0.0.1:1".to_owned()])),
            health: Arc::new(Health::new()),
        }
    }

    #[test]
    fn routes_methods_and_malformed_requests() {
        let s = state();
        let status = |head: &str| respond(head.as_bytes(), &s).status;
        assert_eq!(status("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("GET /healthz?verbose=1 HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET /readyz HTTP/1.1\r\n\r\n"), 503);
        assert_eq!(status("GET /metrics HTTP/1.1\r\n\r\n"), 404, "no recorder");
        assert_eq!(status("GET /nope HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("GET /healthz/ HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status("POST /healthz HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("GET /healthz HTTP/2.0\r\n\r\n"), 400);
        assert_eq!(status("GET healthz HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET  /healthz HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("\u{0}\u{1}\r\n\r\n"), 400);
        let head = respond(b"HEAD /healthz HTTP/1.1\r\n\r\n", &s).bytes();
        let text = String::from_utf8(head).unwrap();
        assert!(
            text.ends_with(
                "Content-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            ),
            "{text}"
        );
        s.ready.joined("127.0.0.1:1", "node-2");
        assert_eq!(status("GET /readyz HTTP/1.1\r\n\r\n"), 200);
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
