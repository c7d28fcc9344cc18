//! The settings of issue 20: `revocation_file`, `tls_crl_files`, `allowed_peers`,
//! `close_on_peer_expiry`. Each loads into the core `Config`; every file named is read
//! at load (missing, unreadable, a bad line, a CRL of another CA, an expired one: an
//! error naming the key and the file); `check` says so when this node's own
//! certificate, node id or secret is revoked; and the file watch reloads both kinds of
//! file like the certificate files, refusing a bad set and keeping the last good one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade::core::revocation::{hex, CertFacts};
use palisade::core::tls::crl::CrlSummary;
use palisade::tls::pki_types::CertificateRevocationListDer;
use palisade::{FileWatch, Loaded, Metrics, Reload, Settings};
use palisade_testkit::certs::{certs_pem, CertSpec, TestCa, TestIdentity};
use palisade_testkit::openssl::OpensslDir;

/// 2027-01-01T00:00:00Z: inside the test certificates' validity (2025 to 2030).
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_798_761_600)
}

const SECRET: &str = "revocation settings test secret, 32+ bytes";

/// A fresh directory under the system temp dir, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("palisade-revset-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A CRL as PEM (`X509 CRL`), as `openssl ca -gencrl` writes it.
fn crl_pem(der: &CertificateRevocationListDer<'_>) -> String {
    let body = base64(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
        lines.join("\n")
    )
}

fn serial_of(identity: &TestIdentity) -> Vec<u8> {
    CertFacts::parse(&identity.chain[0]).unwrap().serial
}

/// A node of `ca` with its files in `dir`: `node.crt`, `node.key`, `ca.crt`.
struct Node {
    dir: Dir,
    ca: TestCa,
    identity: TestIdentity,
}

impl Node {
    fn new(name: &str) -> Self {
        let dir = Dir::new(name);
        let ca = TestCa::new("revocation CA");
        let identity = ca.node("node-1");
        dir.write("node.crt", identity.cert_pem());
        dir.write("node.key", identity.key_pem());
        dir.write("ca.crt", certs_pem(std::slice::from_ref(&ca.cert)));
        dir.write("secret", format!("{SECRET}\n"));
        Self { dir, ca, identity }
    }

    /// The node's TOML, TLS in CA mode, with `extra` lines.
    fn toml(&self, extra: &str) -> String {
        format!(
            "cluster_name = \"prod\"\nnode_id = \"node-1\"\nshared_secret_file = {:?}\n\
             tls_enabled = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n{extra}\n",
            self.dir.path("secret").display().to_string(),
            self.dir.path("node.crt").display().to_string(),
            self.dir.path("node.key").display().to_string(),
            self.dir.path("ca.crt").display().to_string(),
        )
    }

    fn settings(&self, extra: &str) -> Settings {
        Settings::from_toml_str(&self.toml(extra), None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn build(&self, extra: &str) -> Loaded {
        self.settings(extra).build(now())
    }
}

/// `key = [path, ...]` as TOML.
fn paths(key: &str, files: &[&Path]) -> String {
    let quoted: Vec<String> = files
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!("{key} = [{}]", quoted.join(", "))
}

fn path(key: &str, file: &Path) -> String {
    format!("{key} = {:?}", file.display().to_string())
}

/// The error findings of `key`, as printed, all about `file`.
/// The warnings about `key` in `file`; the node still starts.
fn warnings_of(loaded: &Loaded, key: &str, file: &Path) -> Vec<String> {
    assert!(loaded.config.is_some(), "{}", loaded.report);
    let found: Vec<String> = loaded
        .report
        .warnings()
        .filter(|f| f.key == key && f.file.as_deref() == Some(file))
        .map(ToString::to_string)
        .collect();
    assert!(
        !found.is_empty(),
        "no warning about {key} in {}:\n{}",
        file.display(),
        loaded.report
    );
    found
}

fn errors_of(loaded: &Loaded, key: &str, file: &Path) -> Vec<String> {
    assert!(loaded.config.is_none(), "{}", loaded.report);
    let found: Vec<String> = loaded
        .report
        .errors()
        .filter(|f| f.key == key && f.file.as_deref() == Some(file))
        .map(ToString::to_string)
        .collect();
    assert!(
        !found.is_empty(),
        "no error about {key} in {}:\n{}",
        file.display(),
        loaded.report
    );
    found
}

fn expect_error(loaded: &Loaded, key: &str, file: &Path, needle: &str) {
    let found = errors_of(loaded, key, file);
    assert!(
        found.iter().any(|m| m.contains(needle)),
        "no {needle:?} in {found:#?}"
    );
}

#[test]
fn the_four_keys_reach_the_config() {
    let node = Node::new("keys");
    let revoked = node.dir.write(
        "revoked.txt",
        "# decommissioned\nnode-id node-3 # stolen disk\nkey-id 0011223344556677\n",
    );
    let crl = node.ca.crl(&[&[0x77]], 1, (2028, 1, 1));
    let pem = node.dir.write("ca.crl", crl_pem(&crl));
    let der = node.dir.write("ca.crl.der", crl.as_ref());
    let loaded = node.build(&format!(
        "{}\n{}\nallowed_peers = [\"node-*\", \"db-1\"]\nclose_on_peer_expiry = false",
        path("revocation_file", &revoked),
        paths("tls_crl_files", &[&pem, &der]),
    ));
    let config = loaded.config.unwrap_or_else(|| panic!("{}", loaded.report));
    let entry = config.revoked.node_id("node-3").expect("node-3 revoked");
    assert_eq!(entry.origin, format!("{}:2", revoked.display()));
    assert_eq!(entry.reason.as_deref(), Some("stolen disk"));
    assert_eq!(config.revoked.entries().len(), 2);
    let allowed: Vec<&str> = config.allowed_peers.iter().map(|p| p.as_str()).collect();
    assert_eq!(allowed, ["node-*", "db-1"]);
    assert!(!config.close_on_peer_expiry);
    let tls = config.tls.as_ref().expect("TLS");
    assert_eq!(tls.crls.len(), 2, "the PEM and the DER file");
    assert_eq!(tls.crls[0], crl);
    assert_eq!(tls.crls[1], crl);

    // Unset: nothing revoked, no allow-list, links close at peer expiry.
    let loaded = node.build("");
    let config = loaded.config.unwrap();
    assert!(config.revoked.is_empty());
    assert!(config.allowed_peers.is_empty());
    assert!(config.close_on_peer_expiry);
    assert!(config.tls.unwrap().crls.is_empty());

    // An empty revocation file is fine: nothing revoked.
    let empty = node.dir.write("empty.txt", "");
    let loaded = node.build(&path("revocation_file", &empty));
    assert!(loaded.config.unwrap().revoked.is_empty());

    // And through the environment, as every key.
    let mut settings = node.settings("");
    settings
        .apply_env([
            (
                "PALISADE_REVOCATION_FILE".to_owned(),
                revoked.display().to_string(),
            ),
            (
                "PALISADE_TLS_CRL_FILES".to_owned(),
                pem.display().to_string(),
            ),
            (
                "PALISADE_ALLOWED_PEERS".to_owned(),
                "node-1,node-2".to_owned(),
            ),
            (
                "PALISADE_CLOSE_ON_PEER_EXPIRY".to_owned(),
                "false".to_owned(),
            ),
        ])
        .unwrap();
    let config = settings.build(now()).config.unwrap();
    assert!(config.revoked.node_id("node-3").is_some());
    assert_eq!(config.allowed_peers.len(), 2);
    assert!(!config.close_on_peer_expiry);
    assert_eq!(config.tls.unwrap().crls.len(), 1);
}

#[test]
fn files_that_cannot_be_used_are_errors_naming_the_key_and_the_file() {
    let node = Node::new("errors");

    // A revocation file named but missing: the node does not start.
    let missing = node.dir.path("no-such-revoked.txt");
    let loaded = node.build(&path("revocation_file", &missing));
    expect_error(&loaded, "revocation_file", &missing, "does not exist");

    // A line that cannot be read: the whole file is refused, by line number.
    let bad = node
        .dir
        .write("bad.txt", "node-id node-3\nserial 0a\nnode-id node-4\n");
    let loaded = node.build(&path("revocation_file", &bad));
    expect_error(&loaded, "revocation_file", &bad, "line 2");
    expect_error(&loaded, "revocation_file", &bad, "issuer");

    // A CRL file named but missing.
    let missing = node.dir.path("no-such.crl");
    let loaded = node.build(&paths("tls_crl_files", &[&missing]));
    expect_error(&loaded, "tls_crl_files", &missing, "does not exist");

    // A CRL of another CA.
    let other = TestCa::new("some other CA");
    let foreign = node
        .dir
        .write("foreign.crl", crl_pem(&other.crl(&[], 1, (2028, 1, 1))));
    let loaded = node.build(&paths("tls_crl_files", &[&foreign]));
    expect_error(
        &loaded,
        "tls_crl_files",
        &foreign,
        "not a CA of tls_ca_file",
    );

    // A CRL naming this CA but signed by another key: refused too.
    let impostor = TestCa::new("revocation CA");
    let forged = node
        .dir
        .write("forged.crl", crl_pem(&impostor.crl(&[], 1, (2028, 1, 1))));
    let loaded = node.build(&paths("tls_crl_files", &[&forged]));
    expect_error(
        &loaded,
        "tls_crl_files",
        &forged,
        "signature does not verify",
    );

    // An expired CRL (nextUpdate before now).
    let expired = node
        .dir
        .write("expired.crl", crl_pem(&node.ca.crl(&[], 1, (2026, 6, 1))));
    let loaded = node.build(&paths("tls_crl_files", &[&expired]));
    expect_error(&loaded, "tls_crl_files", &expired, "expired");

    // Bytes that are no CRL, as DER and as PEM; a certificate where the CRL goes.
    let garbage = node
        .dir
        .write("garbage.crl", b"\x30\x03\x02\x01\x05 not a CRL");
    let loaded = node.build(&paths("tls_crl_files", &[&garbage]));
    expect_error(&loaded, "tls_crl_files", &garbage, "cannot be read");
    let cert = node.dir.write("cert-not-crl.pem", node.identity.cert_pem());
    let loaded = node.build(&paths("tls_crl_files", &[&cert]));
    expect_error(&loaded, "tls_crl_files", &cert, "X509 CRL");

    // Pinned trust has no CA a CRL could come from: use revocation_file entries.
    let good = node
        .dir
        .write("good.crl", crl_pem(&node.ca.crl(&[], 1, (2028, 1, 1))));
    let pinned_toml = format!(
        "cluster_name = \"prod\"\nnode_id = \"dev\"\ntls_enabled = true\ntls_trust = \"pinned\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\n{}\n",
        node.dir.path("dev.crt").display().to_string(),
        node.dir.path("dev.key").display().to_string(),
        paths("tls_crl_files", &[&good]),
    );
    let dev = palisade_testkit::certs::self_signed(&CertSpec::new("dev", &["dev"]));
    node.dir.write("dev.crt", dev.cert_pem());
    node.dir.write("dev.key", dev.key_pem());
    let loaded = Settings::from_toml_str(&pinned_toml, None)
        .unwrap()
        .build(now());
    assert!(loaded.config.is_none());
    let shown = loaded.report.to_string();
    assert!(
        loaded.report.errors().any(|f| f.key == "tls_crl_files"
            && f.cause.contains("pinned")
            && f.fix.contains("revocation_file")
            && f.fix.contains("serial")),
        "{shown}"
    );

    // CRLs with TLS off would check nothing: an error, not silence.
    let plain = format!(
        "cluster_name = \"prod\"\nnode_id = \"node-1\"\nshared_secret_file = {:?}\n{}\n",
        node.dir.path("secret").display().to_string(),
        paths("tls_crl_files", &[&good]),
    );
    let loaded = Settings::from_toml_str(&plain, None).unwrap().build(now());
    assert!(
        loaded
            .report
            .errors()
            .any(|f| f.key == "tls_crl_files" && f.cause.contains("tls_enabled is false")),
        "{}",
        loaded.report
    );

    // A bad allowed_peers pattern names the key.
    let loaded = node.build("allowed_peers = [\"node-*\", \" \"]");
    assert!(loaded.config.is_none());
    assert!(
        loaded
            .report
            .errors()
            .any(|f| f.key == "allowed_peers" && f.cause.contains("empty")),
        "{}",
        loaded.report
    );

    // A good CRL close to its nextUpdate: a warning, the node starts.
    let soon = node
        .dir
        .write("soon.crl", crl_pem(&node.ca.crl(&[], 2, (2027, 1, 4))));
    let loaded = node.build(&paths("tls_crl_files", &[&soon]));
    assert!(loaded.config.is_some(), "{}", loaded.report);
    assert!(
        loaded.report.warnings().any(|f| f.key == "tls_crl_files"
            && f.file.as_deref() == Some(soon.as_path())
            && f.cause.contains("expires in 3 day(s)")),
        "{}",
        loaded.report
    );
}

#[test]
fn check_reports_this_node_own_certificate_node_id_or_secret_revoked() {
    let node = Node::new("own");
    let facts = CertFacts::parse(&node.identity.chain[0]).unwrap();
    let serial = palisade::tls_load::serial_hex(&node.identity.chain[0]).unwrap();
    let secret_id = palisade::settings::key_id_of(SECRET);
    let check = |revocations: &str| {
        let revoked = node
            .dir
            .write("revoked.txt", format!("node-id node-9\n{revocations}\n"));
        let config = node.dir.write(
            "palisade.toml",
            node.toml(&path("revocation_file", &revoked)),
        );
        let (_, loaded) = Settings::load_checked(&config, now());
        (loaded, revoked)
    };
    for (line, needle) in [
        // Written by hand as an operator would: the serial as `check` prints it, the issuer
        // as `certs show` does, colons and case as they come.
        (
            format!("serial {serial} CN=Revocation CA # laptop stolen"),
            format!(
                "revoked: serial {} CN=Revocation CA in ",
                hex(&facts.serial)
            ),
        ),
        (
            format!("spki-sha256 {}", hex(&facts.spki_sha256)),
            "revoked: spki-sha256".to_owned(),
        ),
        (
            "node-id node-1".to_owned(),
            "node id is revoked: node-id node-1 in ".to_owned(),
        ),
        (
            format!("key-id {secret_id}"),
            format!("(key id {secret_id}) is revoked: key-id"),
        ),
    ] {
        let (loaded, revoked) = check(&line);
        let found = warnings_of(&loaded, "revocation_file", &revoked);
        assert!(
            found
                .iter()
                .any(|m| m.contains(&needle) && m.contains(&format!("{}:2", revoked.display()))),
            "{line}: no {needle:?} in {found:#?}"
        );
    }

    // Another node's entries only: this node starts.
    let (loaded, _) = check("node-id node-3");
    assert!(loaded.config.is_some(), "{}", loaded.report);

    // Listed in a CRL of its CA: a warning naming the serial and the CRL file.
    let crl = node.dir.write(
        "ca.crl",
        crl_pem(&node.ca.crl(&[&[0x42], &facts.serial], 7, (2028, 1, 1))),
    );
    let loaded = node.build(&paths("tls_crl_files", &[&crl]));
    let found = warnings_of(&loaded, "tls_cert_file", &crl);
    assert!(
        found.iter().any(|m| m.contains(&format!("serial {}", hex(&facts.serial)))
            && m.contains("revoked")),
        "{found:#?}"
    );
    assert_eq!(
        loaded.report.errors().count(),
        0,
        "a revoked own certificate does not stop the node: {}",
        loaded.report
    );
}

#[test]
fn node_id_in_cert_false_is_the_explicit_reported_opt_out() {
    let node = Node::new("optout");
    // The defaults: the node id is bound to the certificate, no opt-out.
    let config = node.build("").config.unwrap();
    let a = &config.tls.as_ref().unwrap().authorization;
    assert!(a.node_id_in_cert && a.verify_hostname && !a.accept_any_name);
    assert!(config.weakenings().is_empty(), "{:?}", config.weakenings());

    // Every name rule off, explicitly: accept_any_name, warned about and a weakening.
    let loaded = node.build("node_id_in_cert = false");
    assert!(loaded.report.warnings().any(|f| f.key == "node_id_in_cert"));
    let config = loaded.config.unwrap_or_else(|| panic!("{}", loaded.report));
    let a = &config.tls.as_ref().unwrap().authorization;
    assert!(!a.node_id_in_cert && a.accept_any_name);
    assert!(
        config
            .weakenings()
            .iter()
            .any(|w| w.contains("accept_any_name")),
        "{:?}",
        config.weakenings()
    );

    // With another name rule left, no opt-out is needed.
    let config = node
        .build("node_id_in_cert = false\nallowed_names = [\"node-*\"]")
        .config
        .unwrap();
    assert!(!config.tls.unwrap().authorization.accept_any_name);

    // Pinned: the pinned defaults (no name rule, no opt-out).
    let dev = palisade_testkit::certs::self_signed(&CertSpec::new("dev", &["dev"]));
    node.dir.write("dev.crt", dev.cert_pem());
    node.dir.write("dev.key", dev.key_pem());
    let toml = format!(
        "cluster_name = \"prod\"\nnode_id = \"a\"\ntls_enabled = true\ntls_trust = \"pinned\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        node.dir.path("dev.crt").display().to_string(),
        node.dir.path("dev.key").display().to_string(),
    );
    let loaded = Settings::from_toml_str(&toml, None).unwrap().build(now());
    let a = loaded
        .config
        .unwrap_or_else(|| panic!("{}", loaded.report))
        .tls
        .unwrap()
        .authorization;
    assert!(!a.verify_hostname && !a.node_id_in_cert && !a.accept_any_name);
}

#[test]
fn a_crl_from_openssl_ca_gencrl_loads_and_lists_the_revoked_certificate() {
    let Some(dir) = OpensslDir::new("revset-gencrl") else {
        return;
    };
    dir.write(
        "ca.cnf",
        "[ ca ]\ndefault_ca = ca_default\n[ ca_default ]\ndatabase = ./index.txt\n\
         crlnumber = ./crlnumber\ncertificate = ./ca.crt\nprivate_key = ./ca.key\n\
         default_md = sha256\ndefault_crl_days = 30\nnew_certs_dir = .\n",
    );
    dir.write("index.txt", "");
    dir.write("crlnumber", "1000\n");
    dir.write(
        "node.ext",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:${NODE}\n",
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=openssl CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    dir.openssl(&args);
    for node in ["node-1", "node-2"] {
        dir.write(
            &format!("{node}.ext"),
            &dir.read("node.ext").replace("${NODE}", node),
        );
        let (key, csr, crt, ext) = (
            format!("{node}.key"),
            format!("{node}.csr"),
            format!("{node}.crt"),
            format!("{node}.ext"),
        );
        let subj = format!("/CN={node}");
        let mut args = vec!["req", "-new"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        dir.openssl(&args);
        dir.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
    }
    dir.openssl(&[
        "ca",
        "-config",
        "ca.cnf",
        "-revoke",
        "node-2.crt",
        "-crl_reason",
        "keyCompromise",
    ]);
    dir.openssl(&["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"]);

    let toml = |node: &str| {
        format!(
            "cluster_name = \"prod\"\nnode_id = \"{node}\"\ntls_enabled = true\n\
             tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\ntls_crl_files = [{:?}]\n",
            dir.path(&format!("{node}.crt")).display().to_string(),
            dir.path(&format!("{node}.key")).display().to_string(),
            dir.path("ca.crt").display().to_string(),
            dir.path("crl.pem").display().to_string(),
        )
    };
    let node1 = Settings::from_toml_str(&toml("node-1"), None).unwrap();
    let loaded = node1.build(SystemTime::now());
    let config = loaded.config.unwrap_or_else(|| panic!("{}", loaded.report));
    let crls = &config.tls.as_ref().unwrap().crls;
    assert_eq!(crls.len(), 1);
    let summary = CrlSummary::parse(&crls[0]).unwrap();
    assert_eq!(summary.number.as_deref(), Some("1000"));
    let node2_pem = dir.read("node-2.crt");
    let node2 =
        palisade::tls::pki_types::CertificateDer::from_pem_slice(node2_pem.as_bytes()).unwrap();
    assert!(summary.lists(&CertFacts::parse(&node2).unwrap().serial));

    // node-2 itself is told its certificate is revoked.
    let loaded = Settings::from_toml_str(&toml("node-2"), None)
        .unwrap()
        .build(SystemTime::now());
    warnings_of(&loaded, "tls_cert_file", &dir.path("crl.pem"));

    // The same CRL as DER.
    dir.openssl(&[
        "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
    ]);
    let der_toml = toml("node-1").replace("crl.pem", "crl.der");
    let config = Settings::from_toml_str(&der_toml, None)
        .unwrap()
        .build(SystemTime::now())
        .config
        .expect("DER CRL");
    assert_eq!(config.tls.unwrap().crls, *crls);
}

use palisade::tls::pki_types::pem::PemObject;

#[test]
fn editing_the_revocation_file_reloads_it_and_a_bad_line_keeps_the_last_good_list() {
    let node = Node::new("watch-rev");
    let revoked = node.dir.write("revoked.txt", "");
    let settings = node.settings(&path("revocation_file", &revoked));
    let metrics = Metrics::new("node-1");
    let mut watch = FileWatch::new(settings).count_in(metrics.clone());
    assert!(watch.files().contains(&revoked));
    assert!(matches!(watch.check(now()), Reload::Unchanged));

    std::fs::write(&revoked, "node-id node-3 # decommissioned\n").unwrap();
    match watch.check(now()) {
        Reload::Reloaded { config, .. } => {
            let entry = config.revoked.node_id("node-3").expect("node-3 revoked");
            assert_eq!(entry.origin, format!("{}:1", revoked.display()));
        }
        other => panic!("{other:?}"),
    }

    // A line that cannot be read: refused, naming the key, the file and the line.
    std::fs::write(&revoked, "node-id node-3\nnode-id node-4\nspki-sha256 zz\n").unwrap();
    match watch.check(now()) {
        Reload::Refused { report } => {
            assert!(
                report.errors().any(|f| f.key == "revocation_file"
                    && f.file.as_deref() == Some(revoked.as_path())
                    && f.cause.contains("line 3")),
                "{report}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Reported once; then fixed, the new list is taken.
    assert!(matches!(watch.check(now()), Reload::Unchanged));
    std::fs::write(&revoked, "node-id node-3\nnode-id node-4\n").unwrap();
    match watch.check(now()) {
        Reload::Reloaded { config, .. } => {
            assert!(config.revoked.node_id("node-4").is_some());
        }
        other => panic!("{other:?}"),
    }
    let stats = watch.stats();
    assert_eq!((stats.reloads_ok, stats.reloads_failed), (2, 1));
    let snapshot = metrics.snapshot();
    assert_eq!((snapshot.reloads_ok, snapshot.reloads_failed), (2, 1));

    // Deleted: refused (a file the settings name must exist).
    std::fs::remove_file(&revoked).unwrap();
    match watch.check(now()) {
        Reload::Refused { report } => {
            assert!(
                report
                    .errors()
                    .any(|f| f.key == "revocation_file"
                        && f.file.as_deref() == Some(revoked.as_path())),
                "{report}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_crl_is_reloaded_and_a_corrupt_one_is_refused_keeping_the_last_good_set() {
    let node = Node::new("watch-crl");
    let crl_file = node
        .dir
        .write("ca.crl", crl_pem(&node.ca.crl(&[], 1, (2028, 1, 1))));
    let settings = node.settings(&paths("tls_crl_files", &[&crl_file]));
    let mut watch = FileWatch::new(settings);
    assert!(watch.files().contains(&crl_file));
    assert!(matches!(watch.check(now()), Reload::Unchanged));

    // The CA publishes CRL 2, revoking node-3's certificate.
    let node3 = node.ca.node("node-3");
    let second = node.ca.crl(&[&serial_of(&node3)], 2, (2028, 1, 1));
    std::fs::write(&crl_file, crl_pem(&second)).unwrap();
    let good = match watch.check(now()) {
        Reload::Reloaded { config, .. } => config,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        good.tls.as_ref().unwrap().crls,
        std::slice::from_ref(&second)
    );

    // Half written: refused, naming the key and the file; nothing new to take.
    let text = crl_pem(&second);
    std::fs::write(&crl_file, &text[..text.len() / 2]).unwrap();
    match watch.check(now()) {
        Reload::Refused { report } => {
            assert!(
                report
                    .errors()
                    .any(|f| f.key == "tls_crl_files"
                        && f.file.as_deref() == Some(crl_file.as_path())),
                "{report}"
            );
            assert!(!report.is_ok());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(watch.check(now()), Reload::Unchanged));

    // A CRL from another CA is refused the same way.
    let other = TestCa::new("rogue CA");
    std::fs::write(&crl_file, crl_pem(&other.crl(&[], 9, (2028, 1, 1)))).unwrap();
    match watch.check(now()) {
        Reload::Refused { report } => assert!(
            report.errors().any(|f| f.key == "tls_crl_files"
                && f.file.as_deref() == Some(crl_file.as_path())
                && f.cause.contains("not a CA of tls_ca_file")),
            "{report}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(watch.stats().reloads_failed, 2);
    assert_eq!(watch.stats().reloads_ok, 1);

    // Written back as it was: the set in use, nothing to reload; CRL 3 is taken.
    std::fs::write(&crl_file, crl_pem(&second)).unwrap();
    assert!(matches!(watch.check(now()), Reload::Unchanged));
    let third = node.ca.crl(&[&serial_of(&node3)], 3, (2028, 1, 1));
    std::fs::write(&crl_file, crl_pem(&third)).unwrap();
    match watch.check(now()) {
        Reload::Reloaded { config, .. } => {
            assert_eq!(config.tls.unwrap().crls, [third]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(watch.stats().reloads_ok, 2);
}
