//! The `mode` setting: strict unless a file or `PALISADE_MODE` says `permissive` in so
//! many words; a permissive node is warned about at every load (naming `mode` and the way
//! back to strict), and refused when it has neither TLS nor a secret to migrate to; the
//! loaded config makes a listener that takes a plaintext peer without the secret.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use palisade::settings::{Settings, SettingsError};
use palisade::{BelowStrict, Mode, Severity};
use palisade_testkit::bounded;
use palisade_testkit::certs::TestCa;

const SECRET: &str = "q7yJ2mS1nQe8VtLr0cXb5WfHk3ZpA9uGd4oNiR6sTvYwEjMlBzKxCaPgUhO+/Q==";
const BACK_TO_STRICT: &str = "set mode = \"strict\" once every node has TLS and the secret";

fn named(extra: &str) -> Settings {
    let toml = format!("cluster_name = \"prod\"\nnode_id = \"node-1\"\n{extra}");
    Settings::from_toml_str(&toml, None).expect("settings")
}

fn mode_findings(settings: &Settings) -> Vec<(Severity, String, String)> {
    settings
        .build(SystemTime::now())
        .report
        .findings
        .into_iter()
        .filter(|f| f.key == "mode")
        .map(|f| (f.severity, f.cause, f.fix))
        .collect()
}

#[test]
fn strict_unless_permissive_is_written_out() {
    assert_eq!(Settings::default().mode, Mode::Strict);
    assert_eq!(named("").mode, Mode::Strict);
    // Nothing else turns it on: not TLS without a secret, not a secret without TLS.
    let secret_only = named(&format!("shared_secret = {SECRET:?}\n"));
    assert_eq!(secret_only.mode, Mode::Strict);
    assert!(mode_findings(&secret_only).is_empty());

    let file = named("mode = \"permissive\"\n");
    let mut env = named("");
    env.apply_env([("PALISADE_MODE".to_owned(), "permissive".to_owned())])
        .unwrap();
    assert_eq!(file, env);
    assert_eq!(file.mode, Mode::Permissive);

    // Only the two words, as written.
    let err = Settings::from_toml_str("mode = \"Permissive\"\n", None).unwrap_err();
    match &err.0[..] {
        [SettingsError::BadValue {
            key: "mode",
            message,
            ..
        }] => {
            assert_eq!(
                message,
                "unknown variant `Permissive`, expected `strict` or `permissive`"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut s = Settings::default();
    let err = s
        .apply_env([("PALISADE_MODE".to_owned(), "lenient".to_owned())])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("set PALISADE_MODE to one of: strict, permissive"),
        "{err}"
    );
}

#[test]
fn permissive_with_nothing_to_migrate_to_is_an_error() {
    let s = named("mode = \"permissive\"\n");
    let loaded = s.build(SystemTime::now());
    assert!(loaded.config.is_none());
    let found = mode_findings(&s);
    assert_eq!(found.len(), 1, "{found:?}");
    let (severity, cause, fix) = &found[0];
    assert_eq!(*severity, Severity::Error);
    assert!(cause.contains("nothing to migrate to"), "{cause}");
    assert!(fix.contains("mode = \"strict\""), "{fix}");
}

#[test]
fn permissive_with_a_secret_loads_with_a_warning_naming_mode_and_the_way_back() {
    let s = named(&format!(
        "mode = \"permissive\"\nshared_secret = {SECRET:?}\n"
    ));
    let loaded = s.build(SystemTime::now());
    assert_eq!(
        loaded.config.as_ref().map(|c| c.mode),
        Some(Mode::Permissive)
    );
    let found = mode_findings(&s);
    assert_eq!(found.len(), 1, "{found:?}");
    let (severity, cause, fix) = &found[0];
    assert_eq!(*severity, Severity::Warning);
    assert!(cause.contains("peers without the shared secret"), "{cause}");
    assert!(cause.contains("rollout state only"), "{cause}");
    assert_eq!(fix, BACK_TO_STRICT);
    let shown = loaded.report.to_string();
    assert!(
        shown.contains("warning: mode: mode = \"permissive\""),
        "{shown}"
    );
}

/// A folder of TLS files, removed on drop.
struct Files(PathBuf);

impl Files {
    fn new(ca: &TestCa) -> Self {
        let dir = std::env::temp_dir().join(format!("palisade-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let node = ca.node("node-1");
        std::fs::write(dir.join("tls.crt"), node.cert_pem()).unwrap();
        std::fs::write(dir.join("tls.key"), node.key_pem()).unwrap();
        std::fs::write(
            dir.join("ca.crt"),
            palisade_testkit::certs::certs_pem(std::slice::from_ref(&ca.cert)),
        )
        .unwrap();
        Self(dir)
    }

    fn toml(&self) -> String {
        let path = |f: &str| self.0.join(f).display().to_string();
        format!(
            "tls_enabled = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n",
            path("tls.crt"),
            path("tls.key"),
            path("ca.crt")
        )
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_permissive_listener_from_settings_takes_a_plaintext_peer_without_the_secret() {
    let ca = TestCa::new("cluster CA");
    let files = Files::new(&ca);
    let s = named(&format!(
        "mode = \"permissive\"\nshared_secret = {SECRET:?}\n{}",
        files.toml()
    ));
    let loaded = s.build(SystemTime::now());
    let found = mode_findings(&s);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]
            .1
            .contains("plaintext peers and peers without the shared secret"),
        "{found:?}"
    );
    assert!(found[0].1.contains("without the certificate or the secret"));
    let config = loaded.config.expect("loads");

    let listener = palisade::blocking::Listener::bind("127.0.0.1:0", config).expect("bind");
    let addr = listener.local_addr().to_string();
    let below = bounded("a plaintext join", Duration::from_secs(10), move || {
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            let below = conn.peer().below_strict;
            let frame = conn.recv().expect("recv");
            (below, frame)
        });
        let dialer = palisade::Config::new("prod", "node-2");
        let conn = palisade::blocking::connect(&addr, dialer).expect("joins");
        conn.send(Bytes::from_static(b"hello")).expect("send");
        server.join().expect("server")
    });
    assert_eq!(
        below,
        (
            BelowStrict {
                plaintext: true,
                without_secret: true
            },
            Some(Bytes::from_static(b"hello"))
        )
    );
}
