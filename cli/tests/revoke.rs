//! `palisade certs init` / `certs revoke` / `certs show` / `probe` and revocation: the
//! binary run as an operator would, in temp dirs, every wait bounded.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use palisade::core::revocation::{hex, CertFacts, Revocations};
use palisade::core::tls::crl::{verify_crl_issuer, CrlSummary};
use palisade::core::tls::pki_types::CertificateDer;

mod support;

use support::{free_base, palisade, revoke, text, BIN};

/// `certs init` for `nodes` (the listen ports do not matter here).
fn init(dir: &Path, nodes: &str) {
    support::init(dir, nodes, free_base(4));
}

/// The first PEM block's DER.
fn der_of(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    x509_parser::pem::parse_x509_pem(&bytes).unwrap().1.contents
}

fn crl(dir: &Path) -> CrlSummary {
    CrlSummary::parse(&der_of(&dir.join("crl.pem"))).expect("crl.pem is a CRL")
}

fn serial(dir: &Path, node: &str) -> Vec<u8> {
    CertFacts::parse(&der_of(&dir.join(node).join("tls.crt")))
        .unwrap()
        .serial
}

fn entries(dir: &Path) -> Revocations {
    let path = dir.join("revocation.txt");
    Revocations::parse(
        &std::fs::read_to_string(&path).unwrap(),
        &path.display().to_string(),
    )
    .expect("revocation.txt parses")
}

fn assert_signed_by_ca(dir: &Path) {
    let ca = CertificateDer::from(der_of(&dir.join("ca/ca.crt")));
    assert_eq!(
        verify_crl_issuer(&der_of(&dir.join("crl.pem")), &[ca]),
        Ok(0)
    );
    let openssl = Command::new("openssl").arg("version").output();
    if openssl.is_ok_and(|o| o.status.success()) {
        let out = Command::new("openssl")
            .args(["crl", "-in"])
            .arg(dir.join("crl.pem"))
            .arg("-CAfile")
            .arg(dir.join("ca/ca.crt"))
            .arg("-noout")
            .output()
            .unwrap();
        assert!(
            out.status.success() && text(&out).contains("verify OK"),
            "openssl crl: {}",
            text(&out)
        );
    } else {
        eprintln!("skipped: no `openssl` command, the CRL is checked by rustls-webpki only");
    }
}

#[test]
fn init_writes_an_empty_revocation_list_and_crl_that_every_config_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    init(&dir, "node-1,node-2,node-3");
    let dir = dir.canonicalize().unwrap();

    let list = std::fs::read_to_string(dir.join("revocation.txt")).unwrap();
    assert!(list.starts_with("# palisade revocation list"), "{list}");
    assert!(list.contains("serial      HEX ISSUER"), "{list}");
    assert!(entries(&dir).is_empty());

    let summary = crl(&dir);
    assert_eq!(summary.number.as_deref(), Some("1"));
    assert!(summary.revoked.is_empty(), "{summary:?}");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let next = summary.next_update.expect("nextUpdate");
    assert!((next - now) > 300 * 86_400, "{summary:?}");
    assert!(!summary.is_expired(now));
    assert_signed_by_ca(&dir);

    for node in ["node-1", "node-2", "node-3", "probe"] {
        let config = std::fs::read_to_string(dir.join(node).join("palisade.toml")).unwrap();
        // The same path style as the other files (absolute, from the canonical DIR).
        let lines = [
            format!(
                "revocation_file = {:?}",
                dir.join("revocation.txt").display().to_string()
            ),
            format!(
                "tls_crl_files = [{:?}]",
                dir.join("crl.pem").display().to_string()
            ),
        ];
        for line in lines {
            assert!(
                config.lines().any(|l| l == line),
                "{node}: no `{line}` in\n{config}"
            );
        }
        assert!(config.contains(&format!(
            "tls_cert_file = {:?}",
            dir.join(node).join("tls.crt").display().to_string()
        )));
    }
    // The configs still load and check clean.
    let out = palisade(&[
        "check",
        "--config",
        dir.join("node-1/palisade.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn revoke_appends_one_entry_and_resigns_the_crl_with_the_next_number() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    init(&dir, "node-1,node-2,node-3");
    let before = std::fs::read_to_string(dir.join("revocation.txt")).unwrap();
    let (s2, s3) = (serial(&dir, "node-2"), serial(&dir, "node-3"));

    let out = revoke(&dir, "node-3", None);
    assert!(out.contains(&hex(&s3)), "{out}");
    assert!(out.contains("CRL number 2"), "{out}");
    assert!(
        out.contains("nodes pick it up at their next reload (reload_interval, or SIGHUP)"),
        "{out}"
    );
    let after = std::fs::read_to_string(dir.join("revocation.txt")).unwrap();
    let added = after.strip_prefix(before.as_str()).expect("appended");
    let issuer = CertFacts::parse(&der_of(&dir.join("node-3/tls.crt")))
        .unwrap()
        .issuer;
    // The certificate, and the node id: a certificate node-3 held before a rotation is
    // still valid and unlisted, and must not keep it in.
    assert_eq!(
        added,
        format!(
            "serial {} {issuer}  # revoked by palisade certs revoke\n\
             node-id node-3  # revoked by palisade certs revoke\n",
            hex(&s3)
        )
    );
    let list = entries(&dir);
    assert_eq!(list.entries().len(), 2);
    assert!(list.node_id("node-3").is_some());
    assert!(list
        .certificate(&der_of(&dir.join("node-3/tls.crt")))
        .is_some());
    assert!(list
        .certificate(&der_of(&dir.join("node-2/tls.crt")))
        .is_none());
    let summary = crl(&dir);
    assert_eq!(summary.number.as_deref(), Some("2"));
    assert_eq!(summary.revoked, vec![s3.clone()]);
    assert_signed_by_ca(&dir);

    // --certificate-only: the certificate alone (a key to replace; the node stays).
    let out = palisade(&[
        "certs",
        "revoke",
        "--dir",
        dir.to_str().unwrap(),
        "--node",
        "node-2",
        "--reason",
        "decommissioned",
        "--certificate-only",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("current certificate only"),
        "{}",
        text(&out)
    );
    let summary = crl(&dir);
    assert_eq!(summary.number.as_deref(), Some("3"));
    assert_eq!(summary.revoked.len(), 2, "{summary:?}");
    assert!(summary.lists(&s2) && summary.lists(&s3), "{summary:?}");
    let list = entries(&dir);
    assert_eq!(list.entries().len(), 3);
    assert_eq!(list.entries()[2].reason.as_deref(), Some("decommissioned"));
    assert!(list.node_id("node-2").is_none());
    assert_signed_by_ca(&dir);

    // Again: nothing added, the CRL untouched.
    let (text_before, crl_before) = (
        std::fs::read(dir.join("revocation.txt")).unwrap(),
        std::fs::read(dir.join("crl.pem")).unwrap(),
    );
    let out = revoke(&dir, "node-3", None);
    assert!(out.contains("already"), "{out}");
    assert_eq!(
        std::fs::read(dir.join("revocation.txt")).unwrap(),
        text_before
    );
    assert_eq!(std::fs::read(dir.join("crl.pem")).unwrap(), crl_before);
    assert_eq!(crl(&dir).number.as_deref(), Some("3"));
    // No temporary file left behind.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().contains("tmp"), "{name:?}");
    }

    // An unknown node: exit 1 with a cause and a hint, nothing written.
    let out = palisade(&[
        "certs",
        "revoke",
        "--dir",
        dir.to_str().unwrap(),
        "--node",
        "node-9",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("node-9") && text(&out).contains("hint:"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(dir.join("revocation.txt")).unwrap(),
        text_before
    );
}

#[test]
fn show_marks_a_revoked_certificate_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    init(&dir, "node-1,node-2,node-3");
    let show = |node: &str| {
        palisade(&[
            "certs",
            "show",
            dir.join(node).join("tls.crt").to_str().unwrap(),
        ])
    };
    let out = show("node-3");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("REVOKED"), "{}", text(&out));

    palisade(&[
        "certs",
        "revoke",
        "--dir",
        dir.to_str().unwrap(),
        "--node",
        "node-3",
        "--reason",
        "stolen disk",
    ]);
    let out = show("node-3");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let want = format!(
        "REVOKED (serial {} in {}:11: stolen disk)",
        hex(&serial(&dir, "node-3")),
        dir.join("revocation.txt").display()
    );
    assert!(text(&out).contains(&want), "want {want} in\n{}", text(&out));
    let out = show("node-1");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("REVOKED"), "{}", text(&out));

    // The CRL alone marks it too (the list emptied by hand).
    std::fs::write(dir.join("revocation.txt"), "# emptied\n").unwrap();
    let out = show("node-3");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "REVOKED (serial {} in {}, CRL number 2)",
            hex(&serial(&dir, "node-3")),
            dir.join("crl.pem").display()
        )),
        "{}",
        text(&out)
    );
}

/// A listener that refuses the probe's certificate as revoked (its `revoked` list built
/// in code, as a node with the new settings would load it): the probe exits 12 and
/// names the entry of its own files, or says none lists it.
#[test]
fn probe_refused_as_revoked_exits_12_naming_its_own_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    init(&dir, "node-1");
    let dir = dir.canonicalize().unwrap();
    let probe_der = der_of(&dir.join("probe/tls.crt"));
    let facts = CertFacts::parse(&probe_der).unwrap();

    let (_, loaded) =
        palisade::Settings::load_checked(dir.join("node-1/palisade.toml"), SystemTime::now());
    let mut node = loaded.config.expect("node-1 loads");
    node.revoked = node
        .revoked
        .with(facts.serial_entry(), "the test's listener");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(palisade::tokio::Listener::bind("127.0.0.1:0", node))
        .unwrap();
    let addr = listener.local_addr().to_string();
    runtime.spawn(async move {
        loop {
            let (_conn, _) = listener.accept().await;
        }
    });
    let probe = || {
        let mut child = Command::new(BIN)
            .args(["probe", "--config"])
            .arg(dir.join("probe/palisade.toml"))
            .arg(&addr)
            .env_remove("PALISADE_SHARED_SECRET")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(30), "probe hangs");
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };

    let out = probe();
    assert_eq!(out.status.code(), Some(12), "{}", text(&out));
    assert!(
        text(&out).contains("revoked by the peer (the TLS alert certificate_revoked); this node's files do not list it"),
        "{}",
        text(&out)
    );

    revoke(&dir, "probe", None);
    let out = probe();
    assert_eq!(out.status.code(), Some(12), "{}", text(&out));
    let want = format!(
        "revoked: serial {} in {}:11",
        hex(&facts.serial),
        dir.join("revocation.txt").display()
    );
    assert!(text(&out).contains(&want), "want {want} in\n{}", text(&out));
    runtime.shutdown_background();
}
