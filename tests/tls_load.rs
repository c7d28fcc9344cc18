//! TLS material from files, checked completely at load: certificates and keys made at
//! test time by the `openssl` command with the usual recipes, and by rcgen. Each either
//! loads and then joins two nodes over loopback, or is refused at load with the message
//! a user needs. Skipped (saying so) where the `openssl` command is missing.

use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade::settings::{TlsSettings, TlsTrust};
use palisade::tls::TlsConfig;
use palisade::{load_tls, Config, Endpoint, Report, SharedSecret};
use palisade_driver::{FailureHook, HandshakeFailure};
use palisade_testkit::certs::{CertSpec, TestCa};
use palisade_testkit::openssl::OpensslDir;

const DAY: Duration = Duration::from_secs(86_400);
const BOUND: Duration = Duration::from_secs(20);

/// The openssl scratch folder, with this file's recipes on top.
struct Dir(OpensslDir);

impl std::ops::Deref for Dir {
    type Target = OpensslDir;
    fn deref(&self) -> &OpensslDir {
        &self.0
    }
}

impl Dir {
    fn new(name: &str) -> Option<Self> {
        OpensslDir::new(&format!("load-{name}")).map(Self)
    }

    /// A self-signed certificate as `openssl req -x509` makes it (CA:TRUE): the shared
    /// development certificate, or a private CA.
    fn self_signed(&self, name: &str, cn: &str) {
        let subj = format!("/CN={cn}");
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "365",
            "-subj",
            &subj,
        ]);
    }

    /// A key (`key_cmd` without `-out`), a CSR for `/CN=name`, and a certificate from
    /// `ca` (`x509 -req`), with `ext` as its -extfile when given (without: X.509 v1).
    fn node(&self, name: &str, key_cmd: &[&str], ca: &str, ext: Option<&str>) {
        let key = format!("{name}.key");
        // `-out` right after the subcommand: genrsa wants its bit count last.
        let mut args = key_cmd.to_vec();
        args.splice(1..1, ["-out", key.as_str()]);
        self.openssl(&args);
        let csr = format!("{name}.csr");
        let subj = format!("/CN={name}");
        self.openssl(&["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr]);
        let cert = format!("{name}.pem");
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "365",
            "-out",
            &cert,
        ];
        let ext_file = format!("{name}.ext");
        if let Some(ext) = ext {
            std::fs::write(self.path(&ext_file), ext).unwrap();
            args.extend(["-extfile", &ext_file]);
        }
        self.openssl(&args);
    }

    /// A CA-issued node certificate with the usual SAN extfile: a wildcard DNS name,
    /// `localhost`, `127.0.0.1` and the node's own name (its node id).
    fn san_node(&self, name: &str, key_cmd: &[&str], ca: &str) {
        let ext = format!(
            "subjectAltName=DNS:*.cluster.local,DNS:localhost,DNS:{name},IP:127.0.0.1\n\
             basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n"
        );
        self.node(name, key_cmd, ca, Some(&ext));
    }

    fn ca_settings(&self, node: &str, ca: &str) -> TlsSettings {
        TlsSettings {
            tls_enabled: true,
            tls_cert_file: Some(self.path(&format!("{node}.pem"))),
            tls_key_file: Some(self.path(&format!("{node}.key"))),
            tls_ca_file: Some(self.path(&format!("{ca}.pem"))),
            ..TlsSettings::default()
        }
    }
}

const PKCS1_RSA_2048: &[&str] = &["genrsa", "-traditional", "2048"];
const PKCS8_RSA_4096: &[&str] = &[
    "genpkey",
    "-algorithm",
    "RSA",
    "-pkeyopt",
    "rsa_keygen_bits:4096",
];
const SEC1_P256: &[&str] = &["ecparam", "-name", "prime256v1", "-genkey", "-noout"];
const PKCS8_P256: &[&str] = &[
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
];
const RSA_1024: &[&str] = &["genrsa", "1024"];

fn load(tls: &TlsSettings, node_id: &str, now: SystemTime) -> (Option<TlsConfig>, Report) {
    let mut report = Report::default();
    let config = load_tls(tls, node_id, now, &mut report);
    (config, report)
}

/// Loads, asserting the report has no error.
fn load_ok(tls: &TlsSettings, node_id: &str) -> TlsConfig {
    let (config, report) = load(tls, node_id, SystemTime::now());
    assert!(report.is_ok(), "{report}");
    config.unwrap_or_else(|| panic!("no config despite an ok report:\n{report}"))
}

/// Loads, asserting it is refused with an error containing every one of `needles`.
fn refused(tls: &TlsSettings, node_id: &str, needles: &[&str]) -> Report {
    let (config, report) = load(tls, node_id, SystemTime::now());
    assert!(config.is_none(), "loaded despite:\n{report}");
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    assert!(
        errors.iter().any(|e| needles.iter().all(|n| e.contains(n))),
        "no error says {needles:?}:\n{report}"
    );
    report
}

fn node_config(node_id: &str, tls: TlsConfig) -> Config {
    Config::new("prod", node_id)
        .with_secret(SharedSecret::new(vec![0x42; 32]).unwrap())
        .with_tls(tls)
}

/// Two nodes join over loopback (the dialer checks the acceptor's certificate for
/// 127.0.0.1 when `verify_hostname` is on); bounded in time.
fn joins(a: (&str, TlsConfig), b: (&str, TlsConfig)) {
    let listener =
        palisade::blocking::Listener::bind("127.0.0.1:0", node_config(a.0, a.1)).unwrap();
    let addr = listener.local_addr().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(c, _)| c.peer().node_id.clone()));
    });
    let dialer = palisade::blocking::connect(&addr, node_config(b.0, b.1))
        .unwrap_or_else(|e| panic!("{} could not join {}: {e}", b.0, a.0));
    assert_eq!(dialer.peer().node_id, a.0);
    let accepted = rx.recv_timeout(BOUND).expect("the acceptor joined in time");
    assert_eq!(accepted.unwrap(), b.0);
}

#[test]
fn a_shared_self_signed_dev_certificate_joins_in_pinned_mode_and_is_refused_as_a_ca_node_cert() {
    let Some(dir) = Dir::new("dev") else { return };
    dir.self_signed("dev", "palisade-dev");
    let pinned = TlsSettings {
        tls_trust: TlsTrust::Pinned,
        tls_ca_file: None,
        ..dir.ca_settings("dev", "dev")
    };
    // Pinned mode defaults every name rule off: both nodes hold the same certificate.
    joins(
        ("node-a", load_ok(&pinned, "node-a")),
        ("node-b", load_ok(&pinned, "node-b")),
    );

    refused(
        &dir.ca_settings("dev", "dev"),
        "node-a",
        &[
            "error: tls_cert_file",
            "it is a CA certificate (basicConstraints CA:TRUE",
            "tls_trust = \"pinned\"",
        ],
    );
}

#[test]
fn a_v1_certificate_from_x509_req_without_extfile_is_refused_with_the_command_that_reissues_it() {
    let Some(dir) = Dir::new("v1") else { return };
    dir.self_signed("ca", "Test CA");
    dir.node("node-a", PKCS1_RSA_2048, "ca", None);
    let report = refused(&dir.ca_settings("node-a", "ca"), "node-a", &[
        "tls_cert_file",
        "node-a.pem",
        "X.509 v1 certificate",
        "subjectAltName=DNS:node-a\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=serverAuth,clientAuth",
        "openssl x509 -x509toreq -in ",
        "-extfile node.ext",
    ]);
    let shown = report.to_string();
    assert!(
        shown.contains(&format!("-CA {}", dir.path("ca.pem").display())),
        "{shown}"
    );

    // The command in the fix works as given: the re-issued certificate loads and joins.
    let fix = &report.errors().next().unwrap().fix;
    let command = fix.split('`').nth(1).unwrap();
    let out = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.san_node("node-b", SEC1_P256, "ca");
    let tls = |n: &str| load_ok(&dir.ca_settings(n, "ca"), n);
    joins(("node-b", tls("node-b")), ("node-a", tls("node-a")));
}

#[test]
fn ca_issued_certificates_with_a_san_extfile_join_whatever_the_key_form() {
    let Some(dir) = Dir::new("san") else { return };
    dir.self_signed("ca", "Test CA");
    for (name, key) in [
        ("node-a", PKCS1_RSA_2048),
        ("node-b", SEC1_P256),
        ("node-c", PKCS8_RSA_4096),
        ("node-d", PKCS8_P256),
    ] {
        dir.san_node(name, key, "ca");
    }
    let tls = |n: &str| load_ok(&dir.ca_settings(n, "ca"), n);
    joins(("node-a", tls("node-a")), ("node-b", tls("node-b")));
    joins(("node-c", tls("node-c")), ("node-d", tls("node-d")));

    let (_, report) = load(
        &dir.ca_settings("node-a", "ca"),
        "node-a",
        SystemTime::now(),
    );
    let note = report
        .findings
        .iter()
        .find(|f| f.cause.starts_with("certificate:"))
        .unwrap();
    for part in [
        "subject \"CN=node-a\"",
        "DNS names [*.cluster.local, localhost, node-a]",
        "IP addresses [127.0.0.1]",
        "issuer \"CN=Test CA\"",
        "serial ",
        " day(s) left)",
    ] {
        assert!(note.cause.contains(part), "{part:?} not in {}", note.cause);
    }
}

#[test]
fn an_rsa_1024_key_is_refused() {
    let Some(dir) = Dir::new("rsa1024") else {
        return;
    };
    dir.self_signed("ca", "Test CA");
    dir.san_node("node-a", RSA_1024, "ca");
    refused(
        &dir.ca_settings("node-a", "ca"),
        "node-a",
        &[
            "tls_cert_file",
            "RSA key has 1024 bits",
            "openssl genrsa -out node.key 3072",
        ],
    );
}

#[test]
fn expiry_is_a_warning_that_grows_louder_and_never_stops_the_node() {
    let Some(dir) = Dir::new("expiry") else {
        return;
    };
    dir.self_signed("ca", "Test CA");
    dir.san_node("node-a", SEC1_P256, "ca");
    let tls = dir.ca_settings("node-a", "ca");
    let warning_at = |days_ahead: u64, behind: bool| {
        let now = if behind {
            SystemTime::now() - DAY * days_ahead as u32
        } else {
            SystemTime::now() + DAY * days_ahead as u32
        };
        let (config, report) = load(&tls, "node-a", now);
        assert!(config.is_some(), "{report}");
        report
            .warnings()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(warning_at(0, false), "");
    let month = warning_at(340, false);
    assert!(
        month.contains("the certificate expires in 2") && !month.contains("URGENT"),
        "{month}"
    );
    assert!(warning_at(360, false).contains("URGENT: the certificate expires in "));
    assert!(warning_at(400, false).contains("the certificate EXPIRED at"));
    assert!(warning_at(2, true).contains("the certificate is not valid before"));
}

#[test]
fn a_certificate_not_issued_by_its_own_ca_bundle_is_refused() {
    let Some(dir) = Dir::new("other-ca") else {
        return;
    };
    dir.self_signed("ca", "Test CA");
    dir.self_signed("other", "Other CA");
    dir.san_node("node-a", SEC1_P256, "other");
    refused(
        &dir.ca_settings("node-a", "ca"),
        "node-a",
        &[
            "tls_cert_file",
            "(issuer \"CN=Other CA\") is not issued by any CA of this node's own tls_ca_file",
        ],
    );
    // A bundle holding both CAs (a CA rotation) accepts it.
    let both = dir.path("both.pem");
    let text = std::fs::read_to_string(dir.path("ca.pem")).unwrap()
        + &std::fs::read_to_string(dir.path("other.pem")).unwrap();
    std::fs::write(&both, text).unwrap();
    load_ok(
        &TlsSettings {
            tls_ca_file: Some(both),
            ..dir.ca_settings("node-a", "ca")
        },
        "node-a",
    );
}

#[test]
fn a_ca_file_holding_a_node_certificate_is_refused() {
    let Some(dir) = Dir::new("ca-file") else {
        return;
    };
    dir.self_signed("ca", "Test CA");
    dir.san_node("node-a", SEC1_P256, "ca");
    refused(
        &dir.ca_settings("node-a", "node-a"),
        "node-a",
        &[
            "tls_ca_file",
            "certificate #1 of the bundle (\"CN=node-a\") is not a CA certificate",
        ],
    );
}

#[test]
fn file_mistakes_name_the_file_and_the_fix() {
    let Some(dir) = Dir::new("files") else { return };
    dir.self_signed("ca", "Test CA");
    dir.san_node("node-a", SEC1_P256, "ca");
    dir.san_node("node-b", SEC1_P256, "ca");
    let good = dir.ca_settings("node-a", "ca");
    let with = |cert: &str, key: &str| TlsSettings {
        tls_cert_file: Some(dir.path(cert)),
        tls_key_file: Some(dir.path(key)),
        ..good.clone()
    };
    refused(
        &with("node-a.pem", "node-b.key"),
        "node-a",
        &[
            "error: tls_key_file",
            "node-b.key does not belong to the certificate in",
            "openssl pkey -in KEY -pubout",
        ],
    );
    let report = refused(
        &with("node-a.key", "node-a.pem"),
        "node-a",
        &[
            "tls_cert_file",
            "holds a private key, not a certificate",
            "swapped",
        ],
    );
    assert!(
        report.errors().any(|e| e.key == "tls_key_file"
            && e.cause.contains("holds a certificate, not a private key")),
        "{report}"
    );
    refused(
        &with("missing.pem", "node-a.key"),
        "node-a",
        &["tls_cert_file", "missing.pem", "the file does not exist"],
    );
    dir.openssl(&[
        "pkey",
        "-in",
        "node-a.key",
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        "enc.key",
    ]);
    refused(
        &with("node-a.pem", "enc.key"),
        "node-a",
        &[
            "tls_key_file",
            "encrypted with a passphrase",
            &format!(
                "openssl pkey -in {0} -out {0}.plain",
                dir.path("enc.key").display()
            ),
        ],
    );
}

#[test]
fn settings_that_cannot_work_are_all_reported_at_once() {
    let tls_on = TlsSettings {
        tls_enabled: true,
        ..TlsSettings::default()
    };
    let (config, report) = load(&tls_on, "node-a", SystemTime::now());
    assert!(config.is_none());
    let keys: Vec<&str> = report.errors().map(|f| f.key).collect();
    assert_eq!(
        keys,
        ["tls_ca_file", "tls_cert_file", "tls_key_file"],
        "{report}"
    );
    assert!(report
        .to_string()
        .contains("tls_enabled is true but no certificate is set"));

    let rules_without_tls = TlsSettings {
        node_id_in_cert: Some(true),
        allowed_names: vec!["*.cluster.local".into()],
        ..TlsSettings::default()
    };
    let (_, report) = load(&rules_without_tls, "node-a", SystemTime::now());
    let keys: Vec<&str> = report.errors().map(|f| f.key).collect();
    assert_eq!(keys, ["node_id_in_cert", "allowed_names"], "{report}");
    assert!(report.to_string().contains("but tls_enabled is false"));

    let files_without_tls = TlsSettings {
        tls_cert_file: Some("/etc/palisade/tls.crt".into()),
        ..TlsSettings::default()
    };
    let (config, report) = load(&files_without_tls, "node-a", SystemTime::now());
    assert!(config.is_none() && report.is_ok(), "{report}");
    assert!(
        report.warnings().any(|w| w.key == "tls_cert_file"
            && w.cause
                .contains("is set but tls_enabled is false, so it is ignored")),
        "{report}"
    );

    let pinned_with_ca = TlsSettings {
        tls_trust: TlsTrust::Pinned,
        tls_ca_file: Some("/etc/palisade/ca.pem".into()),
        ..tls_on
    };
    let (_, report) = load(&pinned_with_ca, "node-a", SystemTime::now());
    assert!(
        report.errors().any(|f| f.key == "tls_ca_file"
            && f.cause
                .contains("tls_trust = \"pinned\" trusts exactly the shared certificate")),
        "{report}"
    );
}

#[test]
fn the_node_own_names_are_checked_against_its_own_rules() {
    let Some(dir) = Dir::new("names") else { return };
    dir.self_signed("ca", "Test CA");
    dir.san_node("node-a", SEC1_P256, "ca");
    let tls = dir.ca_settings("node-a", "ca");
    // node_id_in_cert is on by default in CA mode.
    refused(&tls, "node-7", &[
        "error: node_id_in_cert",
        "is on (on by default in CA mode) but node_id \"node-7\" is not one of this node's certificate DNS names [*.cluster.local, localhost, node-a]",
    ]);
    refused(
        &TlsSettings {
            allowed_names: vec!["*.prod.svc".into()],
            ..tls.clone()
        },
        "node-a",
        &["allowed_names", "none of this node's own certificate names"],
    );
    // Every rule off: it loads, with a warning.
    let open = TlsSettings {
        node_id_in_cert: Some(false),
        ..tls
    };
    let (config, report) = load(&open, "node-7", SystemTime::now());
    assert!(config.is_some(), "{report}");
    assert!(
        report.warnings().any(|w| w
            .cause
            .contains("accepts any certificate its CA ever signed")),
        "{report}"
    );
}

/// Writes an rcgen identity as PEM files (DER → PEM by `openssl`, never by hand).
fn write_rcgen(dir: &Dir, name: &str, chain: &[Vec<u8>], key: &[u8]) {
    std::fs::write(dir.path(&format!("{name}.der")), &chain[0]).unwrap();
    dir.openssl(&[
        "x509",
        "-inform",
        "der",
        "-in",
        &format!("{name}.der"),
        "-out",
        &format!("{name}.pem"),
    ]);
    std::fs::write(dir.path(&format!("{name}.key.der")), key).unwrap();
    dir.openssl(&[
        "pkey",
        "-inform",
        "der",
        "-in",
        &format!("{name}.key.der"),
        "-out",
        &format!("{name}.key"),
    ]);
}

#[test]
fn rcgen_certificates_load_and_join_and_an_expired_one_loads_with_a_warning() {
    let Some(dir) = Dir::new("rcgen") else { return };
    let ca = TestCa::new("rcgen CA");
    std::fs::write(dir.path("ca.der"), ca.cert.as_ref()).unwrap();
    dir.openssl(&["x509", "-inform", "der", "-in", "ca.der", "-out", "ca.pem"]);
    for name in ["node-a", "node-b"] {
        let id =
            ca.issue(&CertSpec::new(name, &[name, "127.0.0.1"]).valid((2025, 1, 1), (2040, 1, 1)));
        let chain: Vec<Vec<u8>> = id.chain.iter().map(|c| c.to_vec()).collect();
        write_rcgen(&dir, name, &chain, &id.key_der);
    }
    let tls = |n: &str| load_ok(&dir.ca_settings(n, "ca"), n);
    joins(("node-a", tls("node-a")), ("node-b", tls("node-b")));

    let old = ca.issue(&CertSpec::new("node-old", &["node-old"]).valid((2020, 1, 1), (2021, 1, 1)));
    let chain: Vec<Vec<u8>> = old.chain.iter().map(|c| c.to_vec()).collect();
    write_rcgen(&dir, "node-old", &chain, &old.key_der);
    let (config, report) = load(
        &dir.ca_settings("node-old", "ca"),
        "node-old",
        SystemTime::now(),
    );
    assert!(config.is_some(), "{report}");
    assert!(
        report
            .warnings()
            .any(|w| w.cause.contains("EXPIRED at 2021-01-01")),
        "{report}"
    );
}

/// Binds node `a` with a failure hook and dials it as node `b`; returns what the
/// acceptor's hook reported (bounded wait).
fn acceptor_failure(a: (&str, TlsConfig), b: (&str, TlsConfig)) -> String {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let hook: FailureHook = Arc::new(move |f: &HandshakeFailure| {
        record.lock().unwrap().push(f.error.to_string());
    });
    let listener = palisade::blocking::Listener::bind_with(
        "127.0.0.1:0",
        Endpoint::new(node_config(a.0, a.1)).unwrap(),
        Some(hook),
    )
    .unwrap();
    let addr = listener.local_addr().to_string();
    assert!(palisade::blocking::connect(&addr, node_config(b.0, b.1)).is_err());
    let deadline = std::time::Instant::now() + BOUND;
    while seen.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = seen.lock().unwrap().join("\n");
    seen
}

/// The acceptor whose certificate the dialer refuses in a form rustls reports only as
/// `certificate_unknown` (here: a CA certificate as the acceptor's node certificate)
/// says what that alert means and where to look, not a bare alert name.
#[test]
fn an_acceptor_refused_with_certificate_unknown_says_what_it_means() {
    let Some(dir) = Dir::new("cert-unknown") else {
        return;
    };
    dir.self_signed("dev", "palisade-dev");
    dir.self_signed("ca", "Test CA");
    dir.san_node("node-b", SEC1_P256, "ca");
    let both = dir.path("both.pem");
    let text = std::fs::read_to_string(dir.path("ca.pem")).unwrap()
        + &std::fs::read_to_string(dir.path("dev.pem")).unwrap();
    std::fs::write(&both, text).unwrap();
    let pinned = TlsSettings {
        tls_trust: TlsTrust::Pinned,
        tls_ca_file: None,
        ..dir.ca_settings("dev", "dev")
    };
    let a = load_ok(&pinned, "node-a");
    let b = load_ok(
        &TlsSettings {
            tls_ca_file: Some(both),
            ..dir.ca_settings("node-b", "ca")
        },
        "node-b",
    );
    let seen = acceptor_failure(("node-a", a), ("node-b", b));
    assert!(
        seen.contains("alert certificate_unknown")
            && seen.contains("CA certificate used as a node certificate"),
        "the acceptor said: {seen}"
    );
}

/// The acceptor of a refused handshake says why, not only the alert it sent: node-b's
/// certificate comes from a CA node-a does not trust.
#[test]
fn the_acceptor_of_a_refused_certificate_says_why() {
    let Some(dir) = Dir::new("acceptor") else {
        return;
    };
    dir.self_signed("ca", "Test CA");
    dir.self_signed("other", "Other CA");
    dir.san_node("node-a", SEC1_P256, "ca");
    dir.san_node("node-b", SEC1_P256, "other");
    let both = dir.path("both.pem");
    let text = std::fs::read_to_string(dir.path("ca.pem")).unwrap()
        + &std::fs::read_to_string(dir.path("other.pem")).unwrap();
    std::fs::write(&both, text).unwrap();
    let a = load_ok(&dir.ca_settings("node-a", "ca"), "node-a");
    let b = load_ok(
        &TlsSettings {
            tls_ca_file: Some(both),
            ..dir.ca_settings("node-b", "other")
        },
        "node-b",
    );

    let seen = acceptor_failure(("node-a", a), ("node-b", b));
    assert!(
        seen.contains("was issued by \"CN=Other CA\", which is not in this node's CA bundle"),
        "the acceptor said: {seen}"
    );
}

#[test]
fn toml_files_naming_the_pem_files_load_through_settings_and_join() {
    // The path a user takes: PEM files from `openssl`, a TOML file per node naming them,
    // `Settings::load` (file, then environment), `build`, and two nodes joining.
    let Some(dir) = Dir::new("toml") else { return };
    dir.self_signed("ca", "Test CA");
    for (name, key) in [("node-a", SEC1_P256), ("node-b", PKCS8_RSA_4096)] {
        dir.san_node(name, key, "ca");
    }
    let secret = dir.path("secret");
    std::fs::write(
        &secret,
        "k3pkx7Qm4Yf0mDqzZC1YRHxZ3wK5rj8TdQ9g9y2A0bqJ7wVnC3u1xQ\n",
    )
    .unwrap();
    let config = |node: &str| {
        let toml = format!(
            "cluster_name = \"prod\"\nnode_id = \"{node}\"\nshared_secret_file = {:?}\n\
             tls_enabled = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n",
            secret.display().to_string(),
            dir.path(&format!("{node}.pem")).display().to_string(),
            dir.path(&format!("{node}.key")).display().to_string(),
            dir.path("ca.pem").display().to_string(),
        );
        let file = dir.path(&format!("{node}.toml"));
        std::fs::write(&file, toml).unwrap();
        let loaded = palisade::Settings::load(&file)
            .expect("the file parses")
            .build(SystemTime::now());
        assert!(loaded.report.is_ok(), "{}", loaded.report);
        loaded.config.expect("a config")
    };
    let (a, b) = (config("node-a"), config("node-b"));
    // CA mode defaults: the dialer checks the acceptor's name, and both check node ids.
    let rules = &b.tls.as_ref().unwrap().authorization;
    assert!(rules.verify_hostname && rules.node_id_in_cert);

    let listener = palisade::blocking::Listener::bind("127.0.0.1:0", a).unwrap();
    let addr = listener.local_addr().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(c, _)| c.peer().node_id.clone()));
    });
    let dialer = palisade::blocking::connect(&addr, b).expect("node-b joins node-a");
    assert_eq!(dialer.peer().node_id, "node-a");
    assert_eq!(rx.recv_timeout(BOUND).unwrap().unwrap(), "node-b");
}

#[test]
fn a_wrong_key_is_reported_even_beside_another_certificate_error() {
    // Loading never stops at the first problem: a CA certificate used as the node's
    // certificate AND a key that belongs to another certificate are both reported.
    let Some(dir) = Dir::new("both") else { return };
    dir.self_signed("dev", "palisade-dev");
    dir.self_signed("other", "other");
    let tls = TlsSettings {
        tls_enabled: true,
        tls_cert_file: Some(dir.path("dev.pem")),
        tls_key_file: Some(dir.path("other.key")),
        tls_ca_file: Some(dir.path("dev.pem")),
        ..TlsSettings::default()
    };
    refused(&tls, "palisade-dev", &["a CA certificate"]);
    refused(
        &tls,
        "palisade-dev",
        &["does not belong to the certificate"],
    );
}
