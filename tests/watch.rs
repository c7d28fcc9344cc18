//! Certificates rotated from files while a node serves: a Kubernetes secret volume's
//! `..data` symlink swap, taken by `FileWatch` and handed to `Listener::reconfigure`.
//! New links present the new certificate, a link joined before keeps working, and a bad
//! new set (a key for another certificate) keeps the last good one with the reason.
//! Blocking adapter, 127.0.0.1, every wait bounded.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use palisade::{Config, FileWatch, Reload, Settings, SharedSecret};
use palisade_testkit::certs::{certs_pem, CertSpec, TestCa, TestIdentity};

const BOUND: Duration = Duration::from_secs(10);

struct Volume(PathBuf);

impl Volume {
    /// A secret volume as the kubelet lays it out: `..data` → a timestamped folder,
    /// and `tls.crt` / `tls.key` → `..data/…`.
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("palisade-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["tls.crt", "tls.key"] {
            symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
        Self(dir)
    }

    /// Writes a new set into a fresh folder and swaps `..data` to it in one rename.
    fn publish(&self, version: u32, cert: &str, key: &str) {
        let folder = format!("..{version}");
        let at = self.0.join(&folder);
        std::fs::create_dir_all(&at).unwrap();
        std::fs::write(at.join("tls.crt"), cert).unwrap();
        std::fs::write(at.join("tls.key"), key).unwrap();
        let tmp = self.0.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&folder, &tmp).unwrap();
        std::fs::rename(&tmp, self.0.join("..data")).unwrap();
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listener_cert(ca: &TestCa, extra: &str) -> TestIdentity {
    ca.issue(&CertSpec::new("node-a", &["node-a", extra]))
}

fn settings(volume: &Volume, ca_file: &Path, secret_file: &Path) -> Settings {
    let toml = format!(
        "cluster_name = \"prod\"\nnode_id = \"node-a\"\nshared_secret_file = {:?}\n\
         tls_enabled = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n\
         verify_hostname = false\n",
        secret_file.display().to_string(),
        volume.path("tls.crt").display().to_string(),
        volume.path("tls.key").display().to_string(),
        ca_file.display().to_string(),
    );
    Settings::from_toml_str(&toml, None).expect("settings")
}

fn member(ca: &TestCa) -> Config {
    Config::new("prod", "member")
        .with_secret(SharedSecret::new(b"rotation test secret, 32 bytes +".to_vec()).unwrap())
        .with_tls(ca.tls(&ca.node("member")))
}

/// The extra DNS name the listener's certificate shows a new dialer.
fn presented(addr: &str, ca: &TestCa) -> Vec<String> {
    let conn = palisade::blocking::connect(addr, member(ca)).expect("member joins");
    conn.peer().tls.as_ref().expect("TLS").names.dns.clone()
}

#[test]
fn a_symlink_swap_rotates_the_certificate_without_dropping_a_link() {
    let ca = TestCa::new("watch CA");
    let volume = Volume::new("swap");
    let ca_file = volume.path("ca.crt");
    std::fs::write(&ca_file, certs_pem(std::slice::from_ref(&ca.cert))).unwrap();
    let secret_file = volume.path("secret");
    std::fs::write(&secret_file, "rotation test secret, 32 bytes +\n").unwrap();
    let v1 = listener_cert(&ca, "v1.node-a");
    volume.publish(1, &v1.cert_pem(), &v1.key_pem());

    let settings = settings(&volume, &ca_file, &secret_file);
    let loaded = settings.build(SystemTime::now());
    let config = loaded.config.unwrap_or_else(|| panic!("{}", loaded.report));
    let mut watch = FileWatch::new(settings);
    assert!(matches!(watch.check(SystemTime::now()), Reload::Unchanged));

    let listener =
        std::sync::Arc::new(palisade::blocking::Listener::bind("127.0.0.1:0", config).unwrap());
    let addr = listener.local_addr().to_string();
    {
        let listener = std::sync::Arc::clone(&listener);
        thread::spawn(move || {
            // Echo on every accepted link until it closes.
            while let Ok((conn, _)) = listener.accept() {
                thread::spawn(move || {
                    while let Ok(Some(frame)) = conn.recv() {
                        if conn.send(frame).is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    let first = palisade::blocking::connect(&addr, member(&ca)).expect("first link");
    assert!(first
        .peer()
        .tls
        .as_ref()
        .unwrap()
        .names
        .dns
        .contains(&"v1.node-a".to_string()));

    // A good new set: taken, and new links present it.
    let v2 = listener_cert(&ca, "v2.node-a");
    volume.publish(2, &v2.cert_pem(), &v2.key_pem());
    match watch.check(SystemTime::now()) {
        Reload::Reloaded { config, .. } => listener.reconfigure(config).unwrap(),
        other => panic!("{other:?}"),
    }
    assert!(presented(&addr, &ca).contains(&"v2.node-a".to_string()));

    // A bad new set: v3's certificate with v2's key. Refused, and v2 stays in use.
    let v3 = listener_cert(&ca, "v3.node-a");
    volume.publish(3, &v3.cert_pem(), &v2.key_pem());
    match watch.check(SystemTime::now()) {
        Reload::Refused { report } => {
            let shown = report.to_string();
            assert!(
                shown.contains("tls_key_file") && shown.contains("does not belong"),
                "{shown}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(presented(&addr, &ca).contains(&"v2.node-a".to_string()));

    // Fixed: the next check takes it.
    volume.publish(4, &v3.cert_pem(), &v3.key_pem());
    match watch.check(SystemTime::now()) {
        Reload::Reloaded { config, .. } => listener.reconfigure(config).unwrap(),
        other => panic!("{other:?}"),
    }
    assert!(presented(&addr, &ca).contains(&"v3.node-a".to_string()));

    // The link joined before all this still carries frames.
    let (tx, rx) = mpsc::channel();
    first.send(Bytes::from_static(b"still here")).unwrap();
    thread::spawn(move || {
        let _ = tx.send(first.recv());
    });
    assert_eq!(
        rx.recv_timeout(BOUND).expect("echo in time").unwrap(),
        Some(Bytes::from_static(b"still here"))
    );
}
