//! The README's troubleshooting table is tested against the real messages: every
//! failure it lists is produced here (nodes configured by TOML and PEM files as an
//! operator would, linked over 127.0.0.1 on tokio; settings loaded as a node loads them),
//! and the message text of its row must occur in what palisade actually said. The rows
//! and the scenarios below are in the same order.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade::tokio::Listener;
use palisade::{Config, Dial, Endpoint, FailureHook, Settings};
use palisade_testkit::certs::{certs_pem, CertSpec, TestCa, TestIdentity};

const SECRET: &str = "troubleshooting-secret-0123456789abcdefghij";
const OTHER_SECRET: &str = "another-secret-of-another-cluster-0123456789";

/// A temp dir of its own, removed at the end.
struct Dir(PathBuf, std::cell::Cell<u32>);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Dir {
    /// Writes `text` to a new file (never one a config already names).
    fn file(&self, name: &str, text: &str) -> String {
        self.1.set(self.1.get() + 1);
        let path = self.0.join(format!("{}-{name}", self.1.get()));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// A node's TOML: its certificate files (written here), its secret, `extra` keys.
fn node_toml(
    dir: &Dir,
    ca: &TestCa,
    id: &TestIdentity,
    node: &str,
    secret: &str,
    extra: &str,
) -> String {
    format!(
        "cluster_name = \"shop\"\nnode_id = \"{node}\"\nshared_secret_file = \"{}\"\n\
         tls_enabled = true\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_ca_file = \"{}\"\n{extra}",
        dir.file(&format!("{node}.secret"), secret),
        dir.file(&format!("{node}.crt"), &id.cert_pem()),
        dir.file(&format!("{node}.key"), &id.key_pem()),
        dir.file(&format!("{node}-ca.crt"), &certs_pem(std::slice::from_ref(&ca.cert))),
    )
}

/// The settings' report (its errors and warnings, as `palisade check` prints them).
fn report(toml: &str) -> String {
    match Settings::from_toml_str(toml, None) {
        Ok(s) => s.build(SystemTime::now()).report.to_string(),
        Err(e) => e.to_string(),
    }
}

/// `toml` with `key` set to `value` instead.
fn with(toml: &str, key: &str, value: &str) -> String {
    toml.lines()
        .map(|l| match l.starts_with(&format!("{key} =")) {
            true => format!("{key} = {value}\n"),
            false => format!("{l}\n"),
        })
        .collect()
}

fn config(toml: &str) -> Config {
    let loaded = Settings::from_toml_str(toml, None)
        .unwrap()
        .build(SystemTime::now());
    loaded.config.unwrap_or_else(|| panic!("{}", loaded.report))
}

/// Links `dialer` to a listener with `acceptor`; what each side said (the dial's error,
/// the listener's failure hook), or "joined".
async fn link(acceptor: Config, dialer: Config, host: &str) -> String {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&failures);
    let hook: FailureHook = Arc::new(move |f| seen.lock().unwrap().push(f.error.to_string()));
    let listener = Listener::bind_with("127.0.0.1:0", Endpoint::new(acceptor).unwrap(), Some(hook))
        .await
        .unwrap();
    let addr = format!("{host}:{}", listener.local_addr().port());
    let dialed = tokio::time::timeout(
        Duration::from_secs(10),
        palisade::tokio::dial(&Endpoint::new(dialer).unwrap(), &Dial::new(addr)),
    )
    .await
    .expect("bounded");
    let dialer_said = match dialed {
        Ok(_) => "joined".to_owned(),
        Err(e) => e.to_string(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while failures.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let acceptor_said = failures.lock().unwrap().join(" | ");
    format!("dialer: {dialer_said}\nacceptor: {acceptor_said}")
}

/// Every scenario of the table, in its order: (what it is, what palisade said).
fn scenarios() -> Vec<(&'static str, String)> {
    let tmp = Dir(
        std::env::temp_dir().join(format!("palisade-troubleshooting-{}", std::process::id())),
        Default::default(),
    );
    std::fs::create_dir_all(&tmp.0).unwrap();
    let ca = TestCa::new("shop CA");
    let other_ca = TestCa::new("another CA");
    let node = |id: &str| ca.issue(&CertSpec::new(id, &[id, "127.0.0.1"]));
    let (a, b) = (node("node-a"), node("node-b"));
    let a_toml = node_toml(&tmp, &ca, &a, "node-a", SECRET, "");
    let b_toml = node_toml(&tmp, &ca, &b, "node-b", SECRET, "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |acceptor: &str, dialer: &str, host: &str| {
        rt.block_on(link(config(acceptor), config(dialer), host))
    };
    let mut out = Vec::new();

    out.push((
        "wrong secret",
        run(
            &a_toml,
            &node_toml(&tmp, &ca, &b, "node-b", OTHER_SECRET, ""),
            "127.0.0.1",
        ),
    ));
    out.push((
        "wrong cluster",
        run(
            &a_toml,
            &b_toml.replace("cluster_name = \"shop\"", "cluster_name = \"shop-2\""),
            "127.0.0.1",
        ),
    ));
    let foreign = other_ca.issue(&CertSpec::new("node-b", &["node-b", "127.0.0.1"]));
    out.push((
        "another CA",
        run(
            &a_toml,
            &node_toml(&tmp, &other_ca, &foreign, "node-b", SECRET, ""),
            "127.0.0.1",
        ),
    ));
    let no_ip = ca.issue(&CertSpec::new("node-a", &["node-a"]));
    out.push((
        "name mismatch",
        run(
            &node_toml(&tmp, &ca, &no_ip, "node-a", SECRET, ""),
            &b_toml,
            "127.0.0.1",
        ),
    ));
    out.push((
        "node id not in cert",
        report(&node_toml(&tmp, &ca, &b, "node-c", SECRET, "")),
    ));
    let expired = ca.issue(
        &CertSpec::new("node-b", &["node-b", "127.0.0.1"]).valid((2020, 1, 1), (2021, 1, 1)),
    );
    out.push((
        "expired",
        run(
            &a_toml,
            &node_toml(&tmp, &ca, &expired, "node-b", SECRET, ""),
            "127.0.0.1",
        ),
    ));
    let plain =
        format!("cluster_name = \"shop\"\nnode_id = \"node-b\"\nshared_secret = \"{SECRET}\"\n");
    out.push(("plaintext to TLS", run(&a_toml, &plain, "127.0.0.1")));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let refused = rt.block_on(palisade::tokio::dial(
        &Endpoint::new(config(&b_toml)).unwrap(),
        &Dial::new(addr),
    ));
    let refused = refused.err().map_or("joined".into(), |e| e.to_string());
    out.push(("nothing listening", refused));
    out.push((
        "short secret",
        report("cluster_name = \"shop\"\nnode_id = \"a\"\nshared_secret = \"short\"\n"),
    ));
    out.push((
        "typo",
        report("cluster_name = \"shop\"\nnode_id = \"a\"\nshared_secert = \"x\"\n"),
    ));
    out.push((
        "missing file",
        report(&with(
            &a_toml,
            "tls_cert_file",
            "\"/etc/palisade/tls/none.crt\"",
        )),
    ));
    let wrong_key = format!("{:?}", tmp.file("other.key", &b.key_pem()));
    out.push((
        "key for another cert",
        report(&with(&a_toml, "tls_key_file", &wrong_key)),
    ));
    out.push((
        "nothing",
        report("cluster_name = \"shop\"\nnode_id = \"a\"\n"),
    ));
    out
}

/// The README's table: between its marker and the next blank line, the rows after the
/// header; of each, the `code` spans of its first cell.
fn table_rows() -> Vec<Vec<String>> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- troubleshooting: tests/troubleshooting.rs")
        .expect("the README's troubleshooting table marker");
    readme[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .skip(2)
        .map(|row| {
            let first = row
                .trim_start_matches('|')
                .split(" | ")
                .next()
                .unwrap_or("");
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// Every row's message text occurs in what palisade said in its scenario (a node's log
/// line, a dial's error, or `palisade check`'s report).
#[test]
fn the_readme_troubleshooting_table_quotes_the_real_messages() {
    let rows = table_rows();
    let seen = scenarios();
    assert_eq!(
        rows.len(),
        seen.len(),
        "one README row per scenario, in order: {rows:?}"
    );
    for (row, (what, said)) in rows.iter().zip(&seen) {
        assert!(!row.is_empty(), "{what}: the row quotes no message");
        for quoted in row {
            assert!(
                said.contains(quoted.as_str()),
                "{what}: the README quotes `{quoted}` but palisade said:\n{said}"
            );
        }
    }
}
