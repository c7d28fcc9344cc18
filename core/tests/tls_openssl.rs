//! Certificates and keys exactly as the `openssl` command writes them: a CA, an
//! intermediate, node certificates from `openssl x509 -req -extfile`, an RSA key in PKCS#1
//! form, a SEC1 EC key, a PEM chain, and the development favourite
//! `openssl req -x509 -newkey rsa:4096 -nodes -subj "/CN=..."` in pinned mode. Parsed
//! with rustls-pki-types, as the `palisade` crate does. Skipped (saying so) where the
//! `openssl` command is missing.

use std::path::Path;

use palisade_core::tls::pki_types::pem::PemObject;
use palisade_core::tls::pki_types::{CertificateDer, PrivateKeyDer};
use palisade_core::tls::{CertRefusal, Identity, TlsConfig, TlsError, TrustAnchors};
use palisade_core::{CloseCause, Config, ConnectionError, SharedSecret, Side};
use palisade_testkit::openssl::OpensslDir;
use palisade_testkit::PairBuilder;

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
        OpensslDir::new(name).map(Self)
    }

    /// A node key of the given kind, then a certificate for `name` signed by `ca`.
    fn node(&self, name: &str, key_cmd: &[&str], ca: &str) {
        let key = format!("{name}.key");
        let mut args = key_cmd.to_vec();
        args.extend(["-out", &key]);
        self.openssl(&args);
        let csr = format!("{name}.csr");
        let subj = format!("/CN={name}");
        self.openssl(&["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr]);
        let ext = format!("{name}.ext");
        self.write(
            &ext,
            &format!(
                "subjectAltName=DNS:{name},DNS:{name}.cluster.local,IP:127.0.0.1\n\
                 extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature,keyEncipherment\n"
            ),
        );
        let cert = format!("{name}.pem");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "365",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ]);
    }
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

fn secret() -> SharedSecret {
    SharedSecret::new(vec![0x42; 32]).unwrap()
}

fn node(name: &str, tls: TlsConfig) -> Config {
    Config::new("prod", name)
        .with_secret(secret())
        .with_tls(tls)
}

/// Joins the two nodes on the simulated link with today's wall clock (openssl dates
/// its certificates from now). Returns the pair after the run.
fn join(i: Config, a: Config) -> palisade_testkit::Pair {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut pair = PairBuilder::new(i, a)
        .wall_clock_ms(now_ms)
        .server_name("node-b.cluster.local")
        .build();
    pair.run();
    pair
}

/// Root CA → intermediate CA → nodes; node A has an RSA key in PKCS#1 form, node B a
/// SEC1 EC key; each node's PEM file holds its certificate then the intermediate.
fn cluster(dir: &Dir) -> (TlsConfig, TlsConfig) {
    dir.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "3650",
        "-subj",
        "/CN=openssl root CA",
    ]);
    dir.openssl(&["genrsa", "-out", "inter.key", "2048"]);
    dir.openssl(&[
        "req",
        "-new",
        "-key",
        "inter.key",
        "-subj",
        "/CN=openssl intermediate CA",
        "-out",
        "inter.csr",
    ]);
    dir.write(
        "inter.ext",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    dir.openssl(&[
        "x509",
        "-req",
        "-in",
        "inter.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        "inter.pem",
        "-extfile",
        "inter.ext",
    ]);
    dir.node("node-a", &["genrsa", "-traditional"], "inter");
    dir.node(
        "node-b",
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "inter",
    );
    assert!(
        dir.read("node-a.key").contains("BEGIN RSA PRIVATE KEY"),
        "PKCS#1"
    );
    assert!(
        dir.read("node-b.key").contains("BEGIN EC PRIVATE KEY"),
        "SEC1"
    );
    let tls = |name: &str| {
        let chain = format!(
            "{}{}",
            dir.read(&format!("{name}.pem")),
            dir.read("inter.pem")
        );
        dir.write(&format!("{name}-chain.pem"), &chain);
        TlsConfig::new(
            Identity {
                cert_chain: certs(&dir.path(&format!("{name}-chain.pem"))),
                key: key(&dir.path(&format!("{name}.key"))),
            },
            TrustAnchors::CaBundle(certs(&dir.path("root.pem"))),
        )
    };
    (tls("node-a"), tls("node-b"))
}

#[test]
fn openssl_made_ca_chain_pkcs1_rsa_and_sec1_ec_keys_join() {
    let Some(dir) = Dir::new("ca") else { return };
    let (a, b) = cluster(&dir);
    assert_eq!(a.identity.cert_chain.len(), 2, "leaf + intermediate");
    assert!(matches!(a.identity.key, PrivateKeyDer::Pkcs1(_)));
    assert!(matches!(b.identity.key, PrivateKeyDer::Sec1(_)));
    let mut pair = join(node("node-a", a.clone()), node("node-b", b.clone()));
    assert!(
        pair.joined(Side::Initiator),
        "{:?}",
        pair.close_cause(Side::Initiator)
    );
    assert!(
        pair.joined(Side::Acceptor),
        "{:?}",
        pair.close_cause(Side::Acceptor)
    );
    let tls = pair
        .conn(Side::Acceptor)
        .peer()
        .unwrap()
        .tls
        .clone()
        .unwrap();
    assert_eq!(tls.version, "TLSv1_3");
    assert!(tls.names.contains("node-a.cluster.local"));

    // The RSA node over TLS 1.2 with an RSA suite chosen by name.
    let mut a12 = a;
    a12.cipher_suites = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()];
    let mut b_any = b;
    b_any.cipher_suites = vec![
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
    ];
    // The acceptor's key is EC, so it needs the ECDSA suite; the RSA initiator presents
    // its client certificate with an RSA signature either way.
    a12.cipher_suites
        .push("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into());
    let mut pair = join(node("node-a", a12), node("node-b", b_any));
    assert!(
        pair.joined(Side::Acceptor),
        "{:?}",
        pair.close_cause(Side::Acceptor)
    );
    let tls = pair
        .conn(Side::Acceptor)
        .peer()
        .unwrap()
        .tls
        .clone()
        .unwrap();
    assert_eq!(tls.version, "TLSv1_2");
}

#[test]
fn an_x509_v1_certificate_from_openssl_is_refused_at_load_time_with_the_fix() {
    let Some(dir) = Dir::new("v1") else { return };
    dir.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=v1 CA",
    ]);
    dir.openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "n.key",
    ]);
    dir.openssl(&[
        "req",
        "-new",
        "-key",
        "n.key",
        "-subj",
        "/CN=node-v1",
        "-out",
        "n.csr",
    ]);
    // No -extfile: OpenSSL 3 writes an X.509 v1 certificate, which webpki does not accept.
    dir.openssl(&[
        "x509",
        "-req",
        "-in",
        "n.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        "n.pem",
    ]);
    let tls = TlsConfig::new(
        Identity {
            cert_chain: certs(&dir.path("n.pem")),
            key: key(&dir.path("n.key")),
        },
        TrustAnchors::CaBundle(certs(&dir.path("ca.pem"))),
    );
    match palisade_core::Endpoint::new(node("node-v1", tls)) {
        Err(palisade_core::ConfigError::Tls(e)) => {
            let msg = e.to_string();
            eprintln!("palisade says: {msg}");
            assert!(msg.starts_with("tls_cert_file:"), "{msg}");
            assert!(
                msg.contains("X.509 v1") && msg.contains("-extfile"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn openssl_self_signed_rsa_4096_works_in_pinned_mode() {
    let Some(dir) = Dir::new("pinned") else {
        return;
    };
    dir.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:4096",
        "-nodes",
        "-keyout",
        "dev.key",
        "-out",
        "dev.pem",
        "-days",
        "365",
        "-subj",
        "/CN=palisade-dev",
    ]);
    assert!(dir.read("dev.key").contains("BEGIN PRIVATE KEY"), "PKCS#8");
    let tls = || {
        TlsConfig::new(
            Identity {
                cert_chain: certs(&dir.path("dev.pem")),
                key: key(&dir.path("dev.key")),
            },
            TrustAnchors::Pinned(certs(&dir.path("dev.pem"))),
        )
    };
    let pair = join(node("node-a", tls()), node("node-b", tls()));
    assert!(
        pair.joined(Side::Initiator),
        "{:?}",
        pair.close_cause(Side::Initiator)
    );
    assert!(pair.joined(Side::Acceptor));

    // The same self-signed certificate used as a CA bundle is refused by webpki: an
    // `openssl req -x509` certificate is a CA certificate, not an end-entity one. This is
    // why pinned mode exists; the error says what is wrong.
    let ca_mode = || {
        TlsConfig::new(
            Identity {
                cert_chain: certs(&dir.path("dev.pem")),
                key: key(&dir.path("dev.key")),
            },
            TrustAnchors::CaBundle(certs(&dir.path("dev.pem"))),
        )
    };
    let pair = join(node("node-a", ca_mode()), node("node-b", ca_mode()));
    assert!(!pair.joined(Side::Initiator));
    match pair.close_cause(Side::Initiator) {
        Some(CloseCause::Error(ConnectionError::Tls(TlsError::CertificateRefused(r)))) => {
            assert!(matches!(**r, CertRefusal::Invalid { .. }), "{r:?}");
            assert!(r.to_string().contains("pinned mode"), "{r}");
            eprintln!("palisade says: {r}");
        }
        other => panic!("{other:?}"),
    }
}
