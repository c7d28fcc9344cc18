//! `palisade node`'s operations side end to end (issue 22): `metrics_listen` serves
//! `/metrics`, `/healthz` and `/readyz` from real node processes, bounded against
//! abuse, and `audit_log` records joins, refusals and reloads, never a secret.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Appends `lines` to `node`'s config.
fn add_to_config(dir: &Path, node: &str, lines: &str) {
    let path = config(dir, node);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(lines);
    std::fs::write(&path, text).unwrap();
}

/// Sends `request` raw; the status code and body of the answer (`None`: the
/// connection closed without an answer).
fn http(addr: &str, request: &[u8]) -> Option<(u16, String)> {
    let mut sock = TcpStream::connect(addr).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A server that refuses mid-request may reset: what it answered is still read.
    let _ = sock.write_all(request);
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n").as_bytes(),
    )
}

/// GETs `path` until `done` holds (15 s at most); the last answer.
fn get_until(
    addr: &str,
    path: &str,
    done: impl Fn(u16, &str) -> bool,
    logs: &[&NodeProc],
) -> (u16, String) {
    let started = Instant::now();
    loop {
        let answer = get(addr, path);
        if let Some((status, body)) = &answer {
            if done(*status, body) {
                return (*status, body.clone());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "GET {path} on {addr}: last answer {answer:?}\nlogs:\n{}",
            logs.iter()
                .map(|n| n.log())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the series `name{labels}` (labels exactly as rendered).
fn series(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The audit log's records.
fn audit(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits (15 s at most) for a record of `path` that `matches`.
fn audit_until(
    path: &Path,
    what: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let records = audit(path);
        if let Some(r) = records.iter().find(|r| matches(r)) {
            return r.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no {what} in {}:\n{records:#?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serial(cert: &Path) -> String {
    let out = palisade(&["certs", "show", cert.to_str().unwrap()]);
    field(&text(&out), "serial:")
}

fn hup(node: &NodeProc) {
    assert!(Command::new("kill")
        .args(["-HUP", &node.child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

#[test]
fn metrics_health_readiness_and_the_audit_log_of_real_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    // node-1, node-2, node-3 links; then the three metrics ports.
    let base = free_base(6);
    init(&dir, "node-1,node-2,node-3", base);
    let m = |i: u16| format!("127.0.0.1:{}", base + 3 + i);
    let audit_of = |node: &str| tmp.path().join(format!("{node}-audit.jsonl"));
    for (i, node) in ["node-1", "node-2", "node-3"].iter().enumerate() {
        let i = u16::try_from(i).unwrap();
        add_to_config(
            &dir,
            node,
            &format!(
                "metrics_listen = {:?}\naudit_log = {:?}\n",
                m(i),
                audit_of(node).display().to_string()
            ),
        );
    }
    // node-3 holds another secret: node-1 must refuse it.
    let wrong = tmp.path().join("wrong-secret");
    let out = palisade(&["secret", "generate", "--out", wrong.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let cfg3 = config(&dir, "node-3");
    let text3 = std::fs::read_to_string(&cfg3).unwrap();
    let text3: String = text3
        .lines()
        .map(|l| {
            if l.starts_with("shared_secret_file") {
                format!("shared_secret_file = {:?}\n", wrong.display().to_string())
            } else if l.starts_with("seeds") {
                format!("seeds = [\"127.0.0.1:{base}\"]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&cfg3, text3).unwrap();

    // node-2 first: its seed (node-1) is not up, so it is alive but not ready.
    let node2 = NodeProc::start(&dir, "node-2");
    get_until(&m(1), "/healthz", |s, b| s == 200 && b == "ok\n", &[&node2]);
    let (status, body) = get(&m(1), "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&format!("seed 127.0.0.1:{base}")), "{body}");

    // node-1 comes up; node-2 joins it and is ready.
    let mut node1 = NodeProc::start(&dir, "node-1");
    let (_, body) = get_until(&m(1), "/readyz", |s, _| s == 200, &[&node1, &node2]);
    assert!(body.contains("joined node-1"), "{body}");
    let (_, body) = get(&m(0), "/readyz").unwrap();
    assert!(body.starts_with("ready"), "node-1 has no seeds: {body}");

    // /metrics: the README's series, with plausible values.
    let (_, two) = get_until(
        &m(1),
        "/metrics",
        |s, b| s == 200 && series(b, "palisade_links_open{node=\"node-2\"}") == Some(1.0),
        &[&node1, &node2],
    );
    for (name, min) in [
        ("palisade_links_dialed_total", 1.0),
        ("palisade_joins_ok_total", 1.0),
        ("palisade_links_open", 1.0),
        ("palisade_links_accepted_total", 0.0),
        ("palisade_reloads_failed_total", 0.0),
        ("palisade_handshakes_in_progress", 0.0),
        ("palisade_permissive", 0.0),
        ("palisade_cert_expiry_seconds", 300.0 * 86_400.0),
    ] {
        let value = series(&two, &format!("{name}{{node=\"node-2\"}}"));
        assert!(
            value.is_some_and(|v| v >= min),
            "{name} = {value:?} in\n{two}"
        );
    }
    assert!(
        two.contains("# TYPE palisade_joins_ok_total counter"),
        "{two}"
    );
    assert!(two.contains("# TYPE palisade_links_open gauge"), "{two}");
    let (_, one) = get_until(
        &m(0),
        "/metrics",
        |_, b| {
            series(b, "palisade_links_accepted_total{node=\"node-1\"}").is_some_and(|v| v >= 1.0)
        },
        &[&node1, &node2],
    );
    assert!(
        series(&one, "palisade_joins_ok_total{node=\"node-1\"}").is_some_and(|v| v >= 1.0),
        "{one}"
    );

    // Everything else: 404, 405, 400; an oversized request head is refused.
    assert_eq!(get(&m(1), "/nope").unwrap().0, 404);
    assert_eq!(get(&m(1), "/metrics/x").unwrap().0, 404);
    assert_eq!(
        http(
            &m(1),
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap()
        .0,
        405
    );
    assert_eq!(http(&m(1), b"garbage\r\n\r\n").unwrap().0, 400);
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(http(&m(1), &big).map(|a| a.0), Some(431));
    assert_eq!(get(&m(1), "/healthz").unwrap().0, 200, "still serving");

    // The audit log: each end's join, with the peer's node id, certificate serial and key id.
    let joined = audit_until(&audit_of("node-1"), "join of node-2", |r| {
        r["event"] == "join" && r["node_id"] == "node-2"
    });
    assert_eq!(
        joined["cert_serial"],
        serial(&dir.join("node-2").join("tls.crt")),
        "{joined}"
    );
    assert_eq!(joined["side"], "accepted");
    assert!(
        joined["key_id"].as_str().is_some_and(|k| !k.is_empty()),
        "{joined}"
    );
    assert!(
        joined["peer_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{joined}"
    );
    assert!(
        joined["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{joined}"
    );
    let dialed = audit_until(&audit_of("node-2"), "join of node-1", |r| {
        r["event"] == "join" && r["node_id"] == "node-1"
    });
    assert_eq!(dialed["peer_addr"], format!("127.0.0.1:{base}"));
    assert_eq!(
        dialed["cert_serial"],
        serial(&dir.join("node-1").join("tls.crt"))
    );

    // node-3, with the wrong secret: node-1 refuses it and says so; node-3 gives its
    // seed up (a permanent refusal), which counts as ready, naming why.
    let node3 = NodeProc::start(&dir, "node-3");
    let refused = audit_until(&audit_of("node-1"), "a refusal", |r| {
        r["event"] == "join_refused"
    });
    assert_eq!(refused["code"], "unknown_key", "{refused}");
    assert_eq!(refused["side"], "accepted");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown key")),
        "{refused}"
    );
    let (_, body) = get_until(&m(2), "/readyz", |s, _| s == 200, &[&node1, &node3]);
    assert!(body.contains("given up"), "{body}");
    let theirs = audit_until(&audit_of("node-3"), "the refusal", |r| {
        r["event"] == "join_refused"
    });
    assert_eq!(theirs["side"], "dialed");
    let (_, one) = get(&m(0), "/metrics").unwrap();
    assert!(
        series(
            &one,
            "palisade_joins_refused_total{node=\"node-1\",code=\"unknown_key\",side=\"sent\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{one}"
    );

    // A reload (SIGHUP): a line with its result and what changed.
    hup(&node1);
    let reload = audit_until(&audit_of("node-1"), "a reload", |r| r["event"] == "reload");
    assert_eq!(reload["result"], "ok", "{reload}");
    assert_eq!(reload["source"], "config");
    assert!(reload["changed"].is_array(), "{reload}");
    let (_, one) = get_until(
        &m(0),
        "/metrics",
        |_, b| series(b, "palisade_reloads_ok_total{node=\"node-1\"}").is_some_and(|v| v >= 1.0),
        &[&node1],
    );
    assert!(one.contains("palisade_reloads_ok_total"));

    // A reload that fails: the config no longer parses.
    add_to_config(&dir, "node-1", "max_frame = \"lots\"\n");
    hup(&node1);
    let failed = audit_until(&audit_of("node-1"), "a failed reload", |r| {
        r["event"] == "reload" && r["result"] == "failed"
    });
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("max_frame")),
        "{failed}"
    );

    // node-2 revoked: node-1's file watch takes the new deny-list, says what changed,
    // and closes node-2's link; both ends record why.
    revoke(&dir, "node-2", Some("lost laptop"));
    let files = audit_until(&audit_of("node-1"), "the deny-list reload", |r| {
        r["event"] == "reload" && r["source"] == "files"
    });
    assert_eq!(files["result"], "ok", "{files}");
    let changed = files["changed"].to_string();
    assert!(changed.contains("revocation entries: 0 -> 2"), "{files}");
    let closed = audit_until(&audit_of("node-1"), "the trust close", |r| {
        r["event"] == "link_closed_by_trust"
    });
    assert_eq!(closed["node_id"], "node-2", "{closed}");
    assert_eq!(closed["code"], "revoked");
    assert_eq!(
        closed["cert_serial"],
        serial(&dir.join("node-2").join("tls.crt"))
    );
    assert!(
        closed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lost laptop")),
        "{closed}"
    );
    let told = audit_until(&audit_of("node-2"), "the trust close", |r| {
        r["event"] == "link_closed_by_trust"
    });
    assert!(
        told["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("closed by the peer")),
        "{told}"
    );

    // SIGTERM: still exits 0.
    assert!(node1.terminate().success());

    // Never a secret: not the cluster's, not node-3's, in any audit log or node output.
    let mut seen = String::new();
    for node in ["node-1", "node-2", "node-3"] {
        seen += &std::fs::read_to_string(audit_of(node)).unwrap();
    }
    seen += &node1.log();
    seen += &node2.log();
    seen += &node3.log();
    for secret in [dir.join("secret"), wrong] {
        let text = std::fs::read_to_string(&secret).unwrap();
        let text = text.trim();
        assert!(text.len() >= 32);
        assert!(!seen.contains(text), "{} leaked", secret.display());
        // Nor its bytes in any other spelling a log might use.
        let bytes = hex_bytes(text);
        let upper = text.to_ascii_uppercase();
        assert!(!seen.contains(&upper));
        assert!(!seen
            .as_bytes()
            .windows(bytes.len().max(1))
            .any(|w| w == bytes.as_slice()));
    }
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .filter_map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// The HTTP side cannot be held by idle clients: connections past the cap are closed at
/// once, a client that sends nothing is answered 408, and the node serves again after.
#[test]
fn the_http_side_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let base = free_base(2);
    init(&dir, "node-1", base);
    let addr = format!("127.0.0.1:{}", base + 1);
    add_to_config(&dir, "node-1", &format!("metrics_listen = {addr:?}\n"));
    let node = NodeProc::start(&dir, "node-1");
    get_until(&addr, "/healthz", |s, _| s == 200, &[&node]);

    // 16 (the cap) idle connections, then one more: closed at once without an answer.
    // (Until the server has taken all 16, the extra one may still find a slot: then it
    // is answered, and the test tries again.)
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let started = Instant::now();
    loop {
        let attempt = Instant::now();
        let mut extra = TcpStream::connect(&addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\n\r\n");
        let mut answer = Vec::new();
        let _ = extra.read_to_end(&mut answer);
        if answer.is_empty() {
            assert!(
                attempt.elapsed() < Duration::from_secs(2),
                "{:?}",
                attempt.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "served past the cap: {}",
            String::from_utf8_lossy(&answer)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // An idle client is told it took too long.
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = first.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Their slots are free again.
    get_until(&addr, "/healthz", |s, _| s == 200, &[&node]);
}

/// A node that cannot open its audit log, or bind its metrics address, does not start,
/// and says which key and which path; `check` names a bad address by its key; the
/// environment sets both keys.
#[test]
fn bad_ops_settings_stop_the_node_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let base = free_base(2);
    init(&dir, "node-1", base);
    let cfg = config(&dir, "node-1");
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["node", "--config", &cfg])
            .env_remove("PALISADE_SHARED_SECRET");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the node started");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };
    let missing: PathBuf = tmp.path().join("no-such-dir").join("audit.jsonl");
    let out = run(&[("PALISADE_AUDIT_LOG", missing.to_str().unwrap())]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(
        shown.contains("audit_log") && shown.contains(missing.to_str().unwrap()),
        "{shown}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let out = run(&[("PALISADE_METRICS_LISTEN", &taken)]);
    assert!(!out.status.success());
    let shown = text(&out);
    assert!(
        shown.contains("metrics_listen") && shown.contains(&taken),
        "{shown}"
    );

    add_to_config(&dir, "node-1", "metrics_listen = \"localhost\"\n");
    let out = palisade(&["check", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("metrics_listen = \"localhost\" is not an IP address and port"),
        "{}",
        text(&out)
    );
}
