//! Forwarding in `palisade node` (issue 22), end to end with two real node processes on
//! loopback: node-2 offers services (a TCP echo server, a target that refuses, one that
//! allows nobody we are), node-1 has `[[forward]]` ports to them and reaches node-2 by
//! its `[peers]` address. Each test checks what a program on node-1's forward port sees.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// A TCP echo server on an ephemeral loopback port (a thread per connection); it echoes
/// until EOF, then shuts its write side.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    one: NodeProc,
    two: NodeProc,
    /// node-1's forward ports: echo, forbidden, unknown service, unreachable target.
    echo: u16,
    forbidden: u16,
    unknown: u16,
    unreachable: u16,
    /// node-2's forward port to node-1's own echo service (streams the other way).
    back: u16,
    /// node-1's forward port to `node-9`, which no link or address reaches.
    nowhere: u16,
    /// node-2's `metrics_listen` port.
    metrics: u16,
}

fn append(dir: &Path, node: &str, text: &str) {
    let path = config(dir, node);
    let mut full = std::fs::read_to_string(&path).unwrap();
    full.push_str(text);
    std::fs::write(&path, full).unwrap();
}

fn service_tables(echo: u16, echo_allow: &str) -> String {
    format!(
        "\n[[service]]\nname = \"echo\"\ntarget = \"127.0.0.1:{echo}\"\nallow = [{echo_allow}]\n\
         [[service]]\nname = \"forbidden\"\ntarget = \"127.0.0.1:{echo}\"\nallow = [\"node-9\", \"other-*\"]\n\
         [[service]]\nname = \"dead\"\ntarget = \"127.0.0.1:{}\"\nallow = [\"node-*\"]\n",
        closed_port()
    )
}

impl Cluster {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let base = free_base(9);
        init(&dir, "node-1,node-2", base);
        // node-2 serves /metrics and keeps an audit log (keys above the tables).
        let two_config = config(&dir, "node-2");
        let text = std::fs::read_to_string(&two_config).unwrap();
        let audit = dir.join("node-2.audit");
        std::fs::write(
            &two_config,
            format!(
                "metrics_listen = \"127.0.0.1:{}\"\naudit_log = {:?}\n{text}",
                base + 8,
                audit.display().to_string()
            ),
        )
        .unwrap();
        let echo = echo_server();
        let (fwd_echo, forbidden, unknown, unreachable) = (base + 2, base + 3, base + 4, base + 5);
        append(&dir, "node-2", &service_tables(echo, "\"node-1\""));
        let forward = |port: u16, service: &str| {
            format!("\n[[forward]]\nlisten = \"127.0.0.1:{port}\"\npeer = \"node-2\"\nservice = \"{service}\"\n")
        };
        let mut one = String::new();
        one += &forward(fwd_echo, "echo");
        one += &forward(forbidden, "forbidden");
        one += &forward(unknown, "nope");
        one += &forward(unreachable, "dead");
        one += &forward(base + 7, "echo").replace("node-2", "node-9");
        one += &format!("\n[peers]\nnode-2 = \"127.0.0.1:{}\"\n", base + 1);
        // And the other way: node-2 reaches an echo service on node-1 over the same link.
        one += &format!(
            "\n[[service]]\nname = \"echo-1\"\ntarget = \"127.0.0.1:{}\"\nallow = [\"node-2\"]\n",
            echo_server()
        );
        append(&dir, "node-1", &one);
        append(
            &dir,
            "node-2",
            &forward(base + 6, "echo-1").replace("node-2", "node-1"),
        );
        let two = NodeProc::start(&dir, "node-2");
        let one = NodeProc::start(&dir, "node-1");
        let cluster = Self {
            _tmp: tmp,
            dir,
            one,
            two,
            echo: fwd_echo,
            forbidden,
            unknown,
            unreachable,
            back: base + 6,
            nowhere: base + 7,
            metrics: base + 8,
        };
        // Ready once node-1 dialed node-2 (of the two links the nodes make, the one both
        // keep, as node-1 is the smaller id) and a byte round-trips through the forward.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.one.log().contains("joined node-2 (127.0.0.1")
            || !cluster.one.log().contains("dialed)")
        {
            assert!(
                Instant::now() < deadline,
                "node-1 never dialed node-2\n{}",
                cluster.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
        loop {
            if let Ok(mut s) = cluster.connect(cluster.echo) {
                if s.write_all(b"?").is_ok() {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).is_ok() && &b == b"?" {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the forward never worked\n{}",
                cluster.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_write_timeout(Some(Duration::from_secs(15)))?;
        Ok(s)
    }

    fn logs(&self) -> String {
        format!("node-1:\n{}\nnode-2:\n{}", self.one.log(), self.two.log())
    }

    /// Waits (5 s at most) until `node`'s stats output (stdout) has a `forward:` line
    /// containing `part`.
    fn stats_line(&self, node: &NodeProc, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let out =
            |n: &NodeProc| std::fs::read_to_string(n.log.with_extension("out")).unwrap_or_default();
        while !out(node)
            .lines()
            .any(|l| l.starts_with("forward:") && l.contains(part))
        {
            assert!(
                Instant::now() < deadline,
                "no stats line with {part:?}:\n{}",
                out(node)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (5 s at most) until `node`'s log contains every one of `parts` in one line.
    fn log_line(&self, node: &NodeProc, parts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !node
            .log()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
        {
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Pseudo-random bytes (xorshift), so a shifted or dropped chunk cannot go unnoticed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` from a thread, shuts the write side, and reads everything back to EOF.
fn round_trip(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    try_round_trip(s, data).unwrap()
}

fn try_round_trip(mut s: TcpStream, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut w = s.try_clone()?;
    let writer = thread::spawn(move || {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    let read = s.read_to_end(&mut back);
    writer.join().unwrap()?;
    read.map(|_| back)
}

/// What a client on a refused forward sees: a reset (not a clean EOF), quickly.
fn assert_reset_quickly(c: &Cluster, port: u16) -> Duration {
    let started = Instant::now();
    let mut s = c.connect(port).unwrap();
    // Only a read: a write that met the RST would take its error, and the read after it
    // would see a plain EOF.
    let mut buf = [0u8; 16];
    let read = s.read(&mut buf);
    let took = started.elapsed();
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset on port {port}, got {read:?}\n{}",
        c.logs()
    );
    assert!(took < Duration::from_secs(2), "the reset took {took:?}");
    took
}

#[test]
fn a_mebibyte_round_trips_both_ways_intact() {
    let c = Cluster::start();
    let data = pattern(1 << 20, 7);
    let back = round_trip(c.connect(c.echo).unwrap(), data.clone());
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the echoed bytes differ");
}

#[test]
fn half_close_still_delivers_the_reply_then_eof() {
    let c = Cluster::start();
    let before = resets(&c.one);
    let mut s = c.connect(c.echo).unwrap();
    s.write_all(b"first ").unwrap();
    s.write_all(b"second").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"first second");
    // Both directions finished: the stream ended cleanly, without a reset on either end.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(resets(&c.one), before, "{}", c.logs());
}

#[test]
fn refused_streams_reset_the_client_at_once_and_both_ends_log_why() {
    let c = Cluster::start();
    assert_reset_quickly(&c, c.forbidden);
    c.log_line(
        &c.two,
        &[
            "refused stream",
            "node-1",
            "\"forbidden\"",
            "not in the allow list",
        ],
    );
    c.log_line(
        &c.one,
        &["refused or reset by node-2", "not allowed", "forbidden"],
    );

    assert_reset_quickly(&c, c.unknown);
    c.log_line(&c.two, &["refused stream", "\"nope\"", "no service"]);
    c.log_line(&c.one, &["refused or reset by node-2", "unknown service"]);

    assert_reset_quickly(&c, c.unreachable);
    c.log_line(
        &c.two,
        &["refused stream", "\"dead\"", "cannot connect to its target"],
    );
    c.log_line(
        &c.one,
        &["refused or reset by node-2", "target unreachable"],
    );

    // The stats (SIGUSR1) count them: three refused on node-2, three resets on node-1.
    for node in [&c.one, &c.two] {
        assert!(Command::new("kill")
            .args(["-USR1", &node.child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }
    c.stats_line(&c.two, "refused here 3;");
    c.stats_line(&c.one, "local sockets reset 3");

    // node-2's audit log has each refusal, with the opener's node id and the service.
    let audit = std::fs::read_to_string(c.dir.join("node-2.audit")).unwrap();
    for service in ["forbidden", "nope", "dead"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("\"event\":\"stream_refused\"")
                    && l.contains("\"node_id\":\"node-1\"")
                    && l.contains(&format!("\"service\":\"{service}\""))
                    && l.contains("\"peer_addr\":\"127.0.0.1:")),
            "no stream_refused record for {service}:\n{audit}"
        );
    }

    // The link and the allowed service are unaffected.
    assert_eq!(
        round_trip(c.connect(c.echo).unwrap(), b"still here".to_vec()),
        b"still here"
    );
    // node-2's /metrics counts the echo service's streams and bytes.
    let metrics = get_metrics(c.metrics);
    let series = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("service=\"echo\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} for echo:\n{metrics}"))
    };
    assert!(series("palisade_forward_streams_total") >= 2.0);
    let bytes = |direction: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("palisade_forward_bytes_total")
                    && l.contains("service=\"echo\"")
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // At least "?" and "still here" went each way through node-2's side of the stream.
    assert!(
        bytes("sent") >= 11.0 && bytes("received") >= 11.0,
        "{metrics}"
    );
}

/// `GET /metrics` from a node's `metrics_listen`.
fn get_metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn fifty_concurrent_streams_all_complete() {
    let c = Cluster::start();
    let started = Instant::now();
    let handles: Vec<_> = (0..50u64)
        .map(|i| {
            let s = c.connect(c.echo).unwrap();
            thread::spawn(move || {
                let data = pattern(64 * 1024 + i as usize, i);
                (try_round_trip(s, data.clone()).map(|b| b == data), i)
            })
        })
        .collect();
    for h in handles {
        let (ok, i) = h.join().unwrap();
        assert!(
            matches!(ok, Ok(true)),
            "stream {i}: {ok:?} (false: came back different)\n{}",
            c.logs()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_stalled_stream_does_not_block_another_on_the_same_link() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const LIMIT: usize = 512 << 20;
    let c = Cluster::start();
    // A client that writes and never reads: the echo server's replies fill its socket,
    // then node-1's stream, whose window then holds node-2's, which stops reading the
    // echo server, which stops reading ... until this writer blocks.
    let stalled = c.connect(c.echo).unwrap();
    let mut w = stalled.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let writer = thread::spawn(move || {
        let chunk = vec![1u8; 64 * 1024];
        while counter.load(Ordering::Relaxed) < LIMIT {
            match w.write(&chunk) {
                Ok(n) => counter.fetch_add(n, Ordering::Relaxed),
                Err(_) => break,
            };
        }
    });
    // Stalled: no progress for a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = sent.load(Ordering::Relaxed);
        thread::sleep(Duration::from_secs(1));
        let after = sent.load(Ordering::Relaxed);
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline && after < LIMIT,
            "the writer never stalled: {after} bytes"
        );
    }
    let held = sent.load(Ordering::Relaxed);
    eprintln!("the stalled writer stopped after {held} bytes");
    // Another stream on the same link still works, promptly.
    let started = Instant::now();
    let data = pattern(256 * 1024, 3);
    assert!(round_trip(c.connect(c.echo).unwrap(), data.clone()) == data);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the second stream took {took:?}"
    );
    // And the stalled one is still stalled (bounded by socket buffers and windows).
    assert_eq!(sent.load(Ordering::Relaxed), held);
    assert!(!writer.is_finished());
    stalled.shutdown(Shutdown::Both).unwrap();
    writer.join().unwrap();
}

#[test]
fn a_reload_withdraws_a_service_and_resets_its_streams_only() {
    let c = Cluster::start();
    // A stream that is open across the reload.
    let mut open = c.connect(c.echo).unwrap();
    open.write_all(b"before").unwrap();
    let mut b = [0u8; 6];
    open.read_exact(&mut b).unwrap();
    // node-2 now allows node-9 only on `echo`.
    let path = config(&c.dir, "node-2");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("allow = [\"node-1\"]", "allow = [\"node-9\"]");
    std::fs::write(&path, text).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &c.two.child.id().to_string()])
        .status()
        .unwrap()
        .success());
    c.log_line(
        &c.two,
        &[
            "reload: resetting stream",
            "node-1",
            "\"echo\"",
            "not in the allow list",
        ],
    );
    let mut buf = [0u8; 8];
    let read = open.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the open stream should be reset, got {read:?}\n{}",
        c.logs()
    );
    c.log_line(&c.one, &["reset by node-2", "withdrawn"]);
    // New streams are refused now.
    assert_reset_quickly(&c, c.echo);
}

/// Lines of a node's log about a reset stream (a stream of the start-up race between the
/// two nodes' links may have been reset before a test's own streams open).
fn resets(node: &NodeProc) -> usize {
    node.log().lines().filter(|l| l.contains("reset")).count()
}

fn hup(node: &NodeProc) {
    assert!(Command::new("kill")
        .args(["-HUP", &node.child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_reload_starts_and_stops_forward_listeners_and_keeps_allowed_streams() {
    let c = Cluster::start();
    let mut open = c.connect(c.echo).unwrap();
    let echo = |s: &mut TcpStream, text: &[u8]| {
        s.write_all(text).unwrap();
        let mut back = vec![0u8; text.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, text);
    };
    echo(&mut open, b"before");
    let resets = resets(&c.one);
    // node-1: the `forbidden` forward goes, a new one to `echo` comes.
    let new_port = closed_port();
    let path = config(&c.dir, "node-1");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            &format!("listen = \"127.0.0.1:{}\"", c.forbidden),
            &format!("listen = \"127.0.0.1:{new_port}\""),
        )
        .replace("service = \"forbidden\"", "service = \"echo\"");
    std::fs::write(&path, text).unwrap();
    hup(&c.one);
    // node-2 reloads too, its services unchanged: the stream stays.
    hup(&c.two);
    c.log_line(
        &c.one,
        &["forward on", &format!("{}", c.forbidden), "removed"],
    );
    c.log_line(&c.one, &[&format!("forwarding 127.0.0.1:{new_port}")]);
    c.log_line(&c.two, &["SIGHUP"]);
    thread::sleep(Duration::from_millis(300));
    echo(&mut open, b"after the reloads");
    assert_eq!(
        round_trip(c.connect(new_port).unwrap(), b"new port".to_vec()),
        b"new port"
    );
    let gone = TcpStream::connect(("127.0.0.1", c.forbidden));
    assert!(
        matches!(&gone, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "the removed forward still listens: {gone:?}"
    );
    assert_eq!(self::resets(&c.one), resets, "{}", c.logs());
}

#[test]
fn both_ends_of_the_link_open_streams_at_once() {
    let c = Cluster::start();
    let handles: Vec<_> = (0..10u64)
        .map(|i| {
            let port = if i % 2 == 0 { c.echo } else { c.back };
            let s = c.connect(port).unwrap();
            thread::spawn(move || {
                let data = pattern(200 * 1024, i + 100);
                (try_round_trip(s, data.clone()).map(|b| b == data), i)
            })
        })
        .collect();
    for h in handles {
        let (ok, i) = h.join().unwrap();
        assert!(
            matches!(ok, Ok(true)),
            "stream {i}: {ok:?} (false: came back different)\n{}",
            c.logs()
        );
    }
    // One link between the two nodes carried both directions' streams.
    let joined = |n: &NodeProc| n.log().matches("joined node-").count();
    assert!(joined(&c.one) >= 1 && joined(&c.two) >= 1);
}

#[test]
fn a_forward_to_a_peer_without_a_link_is_reset_and_logged() {
    let c = Cluster::start();
    let started = Instant::now();
    let mut s = c.connect(c.nowhere).unwrap();
    let mut buf = [0u8; 8];
    let read = s.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset, got {read:?}\n{}",
        c.logs()
    );
    // It waited for a link (5 s), not longer.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "{took:?}"
    );
    c.log_line(
        &c.one,
        &["no joined link with node-9", "resetting the connection"],
    );
}

/// A link carries at most 256 streams; a connection beyond them waits for one to end
/// (as under connection churn, where slots free a round trip after a close) instead of
/// being reset at once.
#[test]
fn a_connection_beyond_the_stream_cap_waits_for_a_slot() {
    let c = Cluster::start();
    // 256 open streams, each proven by a round trip.
    let mut held: Vec<TcpStream> = (0..256u64)
        .map(|i| {
            let mut s = c.connect(c.echo).unwrap();
            s.write_all(&[i as u8]).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s
        })
        .collect();
    let mut waiting = c.connect(c.echo).unwrap();
    waiting.write_all(b"late").unwrap();
    thread::sleep(Duration::from_millis(300));
    // One of the 256 goes: the waiting connection gets its slot and its echo.
    drop(held.remove(0));
    let mut b = [0u8; 4];
    waiting
        .read_exact(&mut b)
        .unwrap_or_else(|e| panic!("the 257th connection was not served: {e}\n{}", c.logs()));
    assert_eq!(&b, b"late");
}
