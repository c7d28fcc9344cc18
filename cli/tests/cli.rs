//! The `palisade` binary run as an operator would: in temp dirs, over loopback, every
//! wait bounded.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn init_check_join_probe_rotate_a_certificate_and_stop_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let base = free_base(3);
    init(&dir, "node-1,node-2,node-3", base);
    let key = std::fs::metadata(dir.join("node-1/tls.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    // A second init refuses to overwrite.
    let again = palisade(&[
        "certs",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--nodes",
        "node-1",
    ]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));

    for node in ["node-1", "node-2", "node-3"] {
        let out = palisade(&["check", "--config", &config(&dir, node)]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("0 error(s)"));
    }
    let mut nodes: Vec<NodeProc> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| NodeProc::start(&dir, n))
        .collect();
    let addr2 = format!("127.0.0.1:{}", base + 1);
    let before = probe_until(&dir, &addr2, |o| {
        let links = field(o, "peer's links:");
        links.contains("node-1#") && links.contains("node-3#")
    });
    assert_eq!(field(&before, "node id:"), "node-2");
    assert!(field(&before, "TLS:").starts_with("TLSv1_3"), "{before}");
    assert_eq!(
        field(&before, "ping RTTs:").matches("ms").count(),
        3,
        "{before}"
    );
    let links_before: Vec<String> = field(&before, "peer's links:")
        .split(',')
        .filter(|l| l.starts_with("node-"))
        .map(str::to_owned)
        .collect();

    // Replace node-2's certificate and key: it reloads, and links stay up.
    let old_serial = field(&before, "cert serial:");
    let issued = palisade(&[
        "certs",
        "issue",
        "--dir",
        dir.to_str().unwrap(),
        "--node",
        "node-2",
    ]);
    assert!(issued.status.success(), "{}", text(&issued));
    let after = probe_until(&dir, &addr2, |o| field(o, "cert serial:") != old_serial);
    let new_serial = field(&after, "cert serial:");
    assert!(
        text(&issued).contains(&new_serial),
        "{}\n{after}",
        text(&issued)
    );
    for link in &links_before {
        assert!(
            field(&after, "peer's links:").contains(link.as_str()),
            "link {link} dropped: {after}"
        );
    }
    assert!(nodes[1]
        .log()
        .contains(&format!("certificate serial {new_serial}")));

    // SIGTERM: exit 0, the peers see a CLOSE (not a dropped socket).
    let status = nodes[1].terminate();
    assert_eq!(status.code(), Some(0), "{}", nodes[1].log());
    assert!(nodes[1].log().contains("CLOSE sent"), "{}", nodes[1].log());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !nodes[0]
        .log()
        .contains("link with node-2 ended: closed by the peer")
    {
        assert!(Instant::now() < deadline, "{}", nodes[0].log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in [0, 2] {
        assert_eq!(nodes[i].terminate().code(), Some(0));
    }
}

#[test]
fn check_explains_broken_configs_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    init(&dir, "node-1", free_base(1));
    let good = std::fs::read_to_string(config(&dir, "node-1")).unwrap();
    let short = tmp.path().join("short-secret");
    std::fs::write(&short, "too-short\n").unwrap();
    let cases: Vec<(String, &[&str])> = vec![
        (
            good.replace("tls.crt", "missing.crt"),
            &["tls_cert_file", "missing.crt", "fix:"],
        ),
        (
            good.replace("tls_trust", "tls_trsut"),
            &["tls_trsut", "tls_trust"],
        ),
        (
            good.lines()
                .filter(|l| !l.starts_with("shared_secret_file"))
                .chain([format!("shared_secret_file = {:?}", short.display().to_string()).as_str()])
                .collect::<Vec<_>>()
                .join("\n"),
            &["shared_secret_file", "32", "fix:"],
        ),
        (good.replace("tls.key", "ca.crt"), &["tls_key_file", "fix:"]),
    ];
    for (i, (text_, expect)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text_).unwrap();
        let out = palisade(&["check", "--config", path.to_str().unwrap()]);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "case {i}: {shown}");
        for needle in *expect {
            assert!(
                shown.contains(needle),
                "case {i}: no {needle:?} in\n{shown}"
            );
        }
    }
}

#[test]
fn probe_reports_the_failing_step_with_its_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let base = free_base(2);
    init(&dir, "node-1", base);
    let _node = NodeProc::start(&dir, "node-1");
    let addr = format!("127.0.0.1:{base}");
    probe_until(&dir, &addr, |_| true);

    // TCP: nothing listens on base + 1.
    let out = probe(&dir, &format!("127.0.0.1:{}", base + 1), &[]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    assert!(text(&out).contains("TCP connect"), "{}", text(&out));

    // Authorization: the node is not the one expected.
    let out = probe(&dir, &addr, &["--expect-name", "node-9"]);
    assert_eq!(out.status.code(), Some(12), "{}", text(&out));

    // Join: another secret.
    let other_secret = tmp.path().join("other-secret");
    assert!(palisade(&[
        "secret",
        "generate",
        "--out",
        other_secret.to_str().unwrap()
    ])
    .status
    .success());
    let cfg = std::fs::read_to_string(config(&dir, "probe")).unwrap();
    let secret_line = cfg
        .lines()
        .find(|l| l.starts_with("shared_secret_file"))
        .unwrap();
    let wrong = cfg.replace(
        secret_line,
        &format!(
            "shared_secret_file = {:?}",
            other_secret.display().to_string()
        ),
    );
    let wrong_path = tmp.path().join("wrong-secret.toml");
    std::fs::write(&wrong_path, wrong).unwrap();
    let out = palisade(&["probe", "--config", wrong_path.to_str().unwrap(), &addr]);
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(text(&out).contains("the join"), "{}", text(&out));

    // TLS: an identity from another CA.
    let foreign = tmp.path().join("foreign");
    init(&foreign, "node-x", free_base(1));
    let out = probe(&foreign, &addr, &[]);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    assert!(text(&out).contains("TLS"), "{}", text(&out));
}

#[test]
fn secret_id_matches_the_nodes_key_id_and_show_judges_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    init(&dir, "node-1", free_base(1));
    let id = palisade(&[
        "secret",
        "id",
        "--file",
        dir.join("secret").to_str().unwrap(),
    ]);
    let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
    let check = text(&palisade(&["check", "--config", &config(&dir, "node-1")]));
    assert!(check.contains(&format!("key id is {id}")), "{id}\n{check}");

    let show = palisade(&[
        "certs",
        "show",
        dir.join("node-1/tls.crt").to_str().unwrap(),
    ]);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show));
    assert!(text(&show).contains("would accept"), "{}", text(&show));
    // The CA certificate as a node certificate: refused, and why.
    let show = palisade(&[
        "certs",
        "show",
        dir.join("ca/ca.crt").to_str().unwrap(),
        "--key",
        dir.join("ca/ca.key").to_str().unwrap(),
        "--ca",
        dir.join("ca/ca.crt").to_str().unwrap(),
    ]);
    assert_eq!(show.status.code(), Some(1), "{}", text(&show));
    assert!(text(&show).contains("CA certificate"), "{}", text(&show));
}

#[test]
fn demo_exits_0_with_every_expectation_held_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env_remove("PALISADE_SHARED_SECRET")
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains(", 0 failed"), "{shown}");
    for needle in [
        "wrong secret",
        "another CA",
        "plaintext",
        "replayed",
        "step 3",
        "new certificate",
        "MiB/s",
    ] {
        assert!(shown.contains(needle), "no {needle:?} in\n{shown}");
    }
    // The temp dir the demo made is gone.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "{shown}");
}

#[test]
fn an_interrupted_demo_stops_its_nodes_and_removes_its_temp_dir() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env_remove("PALISADE_SHARED_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut pids = Vec::new();
    while pids.len() < 3 {
        let line = lines.next().expect("the demo printed its nodes").unwrap();
        if let Some(rest) = line.split_once(": pid ").map(|(_, r)| r) {
            pids.push(rest.split_whitespace().next().unwrap().to_owned());
        }
    }
    let demo_pid = demo.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &demo_pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(20));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    for pid in pids {
        let deadline = Instant::now() + Duration::from_secs(5);
        // Gone, or a zombie waiting for its reaper: not running either way.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(Instant::now() < deadline, "node {pid} still runs");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `palisade node` without `--reload-interval` takes the config's `reload_interval`, and
/// its stats (SIGUSR1) are the library's `MetricsSnapshot` of the whole node: links it
/// accepted and links it dialed counted together, the watch's reload and the
/// certificate's expiry in the same block.
#[test]
fn a_node_reloads_by_its_reload_interval_setting_and_prints_one_snapshot_on_sigusr1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let base = free_base(2);
    init(&dir, "node-1,node-2", base);
    let cfg2 = config(&dir, "node-2");
    let mut toml = std::fs::read_to_string(&cfg2).unwrap();
    toml += "reload_interval = \"200ms\"\n";
    std::fs::write(&cfg2, toml).unwrap();
    let _node1 = NodeProc::start(&dir, "node-1");
    let stdout = tmp.path().join("node-2.out");
    let mut node2 = NodeProc {
        child: Command::new(BIN)
            .args(["node", "--config", &cfg2])
            .env_remove("PALISADE_SHARED_SECRET")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(tmp.path().join("node-2.log")).unwrap())
            .spawn()
            .unwrap(),
        log: tmp.path().join("node-2.log"),
    };
    let addr2 = format!("127.0.0.1:{}", base + 1);
    let before = probe_until(&dir, &addr2, |o| {
        field(o, "peer's links:").contains("node-1#")
    });
    let old_serial = field(&before, "cert serial:");
    let issued = palisade(&[
        "certs",
        "issue",
        "--dir",
        dir.to_str().unwrap(),
        "--node",
        "node-2",
    ]);
    assert!(issued.status.success(), "{}", text(&issued));
    // The default interval (10 s) would not reload within this bound; 200ms does.
    let t = Instant::now();
    let after = probe_until(&dir, &addr2, |o| field(o, "cert serial:") != old_serial);
    assert!(t.elapsed() < Duration::from_secs(5), "{after}");
    assert!(node2.log().contains("every 0.2s"), "{}", node2.log());

    let pid = node2.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let value = |out: &str, name: &str| -> Option<i64> {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let shown = loop {
        let out = std::fs::read_to_string(&stdout).unwrap_or_default();
        if out.contains("permissive ") {
            break out;
        }
        assert!(Instant::now() < deadline, "no snapshot on SIGUSR1: {out}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(shown.starts_with("stats: node node-2"), "{shown}");
    assert!(value(&shown, "links_dialed") >= Some(1), "{shown}");
    assert!(value(&shown, "links_accepted") >= Some(2), "{shown}");
    assert!(value(&shown, "joins_ok") >= Some(3), "{shown}");
    assert_eq!(value(&shown, "reloads_ok"), Some(1), "{shown}");
    let expiry = value(&shown, "cert_expiry_seconds").expect("expiry");
    assert!(expiry > 86_400, "{shown}");
    assert_eq!(node2.terminate().code(), Some(0));
}
