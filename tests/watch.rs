//! Certificates rotated from files while a node serves: a Kubernetes secret volume's
//! `..data` symlink swap, taken by `FileWatch` and handed to `Listener::reconfigure`.
//! New links present the new certificate, a link joined before keeps working, and a bad
//! new set (a key for another certificate) keeps the last good one with the reason.
//! Blocking adapter, 127.0.0.1, every wait bounded.

use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use palisade::{Config, FileWatch, Reload, Settings, SharedSecret};
use palisade_testkit::certs::{certs_pem, CertSpec, TestCa, TestIdentity};
use rotation_support::Volume;

mod rotation_support;

const BOUND: Duration = Duration::from_secs(10);

/// `cert`'s certificate and `key`'s key as the volume's next set.
fn publish(volume: &Volume, version: u32, cert: &TestIdentity, key: &TestIdentity) {
    volume.publish(
        version,
        &[("tls.crt", &cert.cert_pem()), ("tls.key", &key.key_pem())],
    );
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
    // The member dials 127.0.0.1, which no certificate here names: the hostname check
    // (on by default in CA mode) is off, the node id binding stays on.
    let mut tls = ca.tls(&ca.node("member"));
    tls.authorization.verify_hostname = false;
    Config::new("prod", "member")
        .with_secret(SharedSecret::new(b"rotation test secret, 32 bytes +".to_vec()).unwrap())
        .with_tls(tls)
}

/// The extra DNS name the listener's certificate shows a new dialer.
fn presented(addr: &str, ca: &TestCa) -> Vec<String> {
    let conn = palisade::blocking::connect(addr, member(ca)).expect("member joins");
    conn.peer().tls.as_ref().expect("TLS").names.dns.clone()
}

#[test]
fn a_symlink_swap_rotates_the_certificate_without_dropping_a_link() {
    let ca = TestCa::new("watch CA");
    let volume = Volume::new("watch-swap", &["tls.crt", "tls.key"]);
    let ca_file = volume.path("ca.crt");
    std::fs::write(&ca_file, certs_pem(std::slice::from_ref(&ca.cert))).unwrap();
    let secret_file = volume.path("secret");
    std::fs::write(&secret_file, "rotation test secret, 32 bytes +\n").unwrap();
    let v1 = listener_cert(&ca, "v1.node-a");
    publish(&volume, 1, &v1, &v1);

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
    publish(&volume, 2, &v2, &v2);
    match watch.check(SystemTime::now()) {
        Reload::Reloaded { config, .. } => listener.reconfigure(config).unwrap(),
        other => panic!("{other:?}"),
    }
    assert!(presented(&addr, &ca).contains(&"v2.node-a".to_string()));

    // A bad new set: v3's certificate with v2's key. Refused, and v2 stays in use.
    let v3 = listener_cert(&ca, "v3.node-a");
    publish(&volume, 3, &v3, &v2);
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
    publish(&volume, 4, &v3, &v3);
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

/// Serves on 127.0.0.1 (blocking adapter), accepting and dropping every link.
fn serve(config: Config) -> (std::sync::Arc<palisade::blocking::Listener>, String) {
    let listener =
        std::sync::Arc::new(palisade::blocking::Listener::bind("127.0.0.1:0", config).unwrap());
    let addr = listener.local_addr().to_string();
    let accepting = std::sync::Arc::clone(&listener);
    thread::spawn(move || while accepting.accept().is_ok() {});
    (listener, addr)
}

/// The serial of the certificate a new link to `addr` presents.
fn presented_serial(addr: &str, ca: &TestCa) -> Vec<u8> {
    let conn = palisade::blocking::connect(addr, member(ca)).expect("member joins");
    let serial = conn.peer().tls.as_ref().and_then(|t| t.serial());
    serial.expect("a serial")
}

fn serial(identity: &TestIdentity) -> Vec<u8> {
    rotation_support::serial_of(&identity.chain[0])
}

#[test]
fn bad_new_sets_keep_the_old_certificate_and_say_which_file_and_why() {
    let ca = TestCa::new("watch CA");
    let volume = Volume::new("watch-bad", &["tls.crt", "tls.key"]);
    let ca_file = volume.path("ca.crt");
    std::fs::write(&ca_file, certs_pem(std::slice::from_ref(&ca.cert))).unwrap();
    let secret_file = volume.path("secret");
    std::fs::write(&secret_file, "rotation test secret, 32 bytes +\n").unwrap();
    let v1 = listener_cert(&ca, "v1.node-a");
    publish(&volume, 1, &v1, &v1);
    let settings = settings(&volume, &ca_file, &secret_file);
    let config = settings.build(SystemTime::now()).config.unwrap();
    let (listener, addr) = serve(config);
    // The node's metrics count the watch's reloads beside the listener's links.
    let mut watch = FileWatch::new(settings).count_in(listener.metrics().clone());
    assert_eq!(presented_serial(&addr, &ca), serial(&v1));

    let (cert, key) = (volume.path("tls.crt"), volume.path("tls.key"));
    let stranger = TestCa::new("unknown CA").issue(&CertSpec::new("node-a", &["node-a"]));
    let half = v1.cert_pem()[..v1.cert_pem().len() / 2].to_owned();
    type Bad<'a> = (&'a str, Vec<(&'a str, String)>, &'a Path, &'a str);
    let bad: Vec<Bad<'_>> = vec![
        (
            "half a PEM",
            vec![("tls.crt", half), ("tls.key", v1.key_pem())],
            &cert,
            "not valid PEM",
        ),
        (
            "a certificate from an unknown CA",
            vec![
                ("tls.crt", stranger.cert_pem()),
                ("tls.key", stranger.key_pem()),
            ],
            &cert,
            "is not issued by any CA of this node's own tls_ca_file",
        ),
        (
            "a missing key",
            vec![("tls.crt", v1.cert_pem())],
            &key,
            "the file does not exist",
        ),
        (
            "a certificate that cannot be read",
            vec![("tls.key", v1.key_pem())],
            &cert,
            "the file cannot be read",
        ),
    ];
    for (n, (what, files, file, cause)) in bad.iter().enumerate() {
        let version = n as u32 + 2;
        let files: Vec<(&str, &str)> = files.iter().map(|(f, c)| (*f, c.as_str())).collect();
        volume.publish(version, &files);
        if *what == "a certificate that cannot be read" {
            // A folder where the file should be: read fails (root reads any file).
            std::fs::create_dir(volume.0.join(format!("..{version}/tls.crt"))).unwrap();
        }
        match watch.check(SystemTime::now()) {
            Reload::Refused { report } => {
                let error = report.errors().next().expect("an error");
                assert_eq!(error.file.as_deref(), Some(*file), "{what}: {report}");
                assert!(error.cause.contains(cause), "{what}: {report}");
            }
            other => panic!("{what}: {other:?}"),
        }
        // Reported once, not at every check; the old certificate stays in use.
        assert!(matches!(watch.check(SystemTime::now()), Reload::Unchanged));
        assert_eq!(presented_serial(&addr, &ca), serial(&v1), "{what}");
        assert_eq!(watch.stats().reloads_failed, n as u64 + 1);
    }

    // The next good set is taken.
    let v2 = listener_cert(&ca, "v2.node-a");
    publish(&volume, 9, &v2, &v2);
    match watch.check(SystemTime::now()) {
        Reload::Reloaded { config, .. } => listener.reconfigure(config).unwrap(),
        other => panic!("{other:?}"),
    }
    assert_eq!(presented_serial(&addr, &ca), serial(&v2));
    assert_eq!(
        (watch.stats().reloads_ok, watch.stats().reloads_failed),
        (1, 4)
    );
    let node = listener.metrics().snapshot();
    assert_eq!((node.reloads_ok, node.reloads_failed), (1, 4));
    assert_eq!(node.cert_expiry_seconds, watch.seconds_to_expiry());
    assert!(node.cert_expiry_seconds.is_some_and(|s| s > 0));
}

/// Unix seconds of a date at midnight UTC.
fn at(y: i32, m: u8, d: u8) -> SystemTime {
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
    let secs = date.midnight().assume_utc().unix_timestamp();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
}

#[test]
fn expiry_is_re_evaluated_at_every_check_and_each_threshold_warns_once() {
    use palisade::ExpiryLevel::*;
    let ca = TestCa::new("watch CA");
    let volume = Volume::new("watch-expiry", &["tls.crt", "tls.key"]);
    let ca_file = volume.path("ca.crt");
    std::fs::write(&ca_file, certs_pem(std::slice::from_ref(&ca.cert))).unwrap();
    let secret_file = volume.path("secret");
    std::fs::write(&secret_file, "rotation test secret, 32 bytes +\n").unwrap();
    // Valid until 2030-01-01.
    let v1 = listener_cert(&ca, "v1.node-a");
    publish(&volume, 1, &v1, &v1);
    let metrics = palisade::Metrics::new("node-a");
    let mut watch =
        FileWatch::new(settings(&volume, &ca_file, &secret_file)).count_in(metrics.clone());
    let cert = volume.path("tls.crt");

    let mut level_at = |now: SystemTime| {
        assert!(matches!(watch.check(now), Reload::Unchanged));
        let warning = watch.poll_expiry();
        (
            warning.map(|w| (w.level, w.finding)),
            watch.seconds_to_expiry(),
        )
    };
    let end = at(2030, 1, 1);
    let left = |now: SystemTime| Some(end.duration_since(now).unwrap().as_secs() as i64);
    assert_eq!(level_at(at(2029, 11, 1)), (None, left(at(2029, 11, 1))));
    let (warning, secs) = level_at(at(2029, 12, 10));
    let (level, finding) = warning.expect("the 30-day warning");
    assert_eq!((level, secs), (Within30Days, left(at(2029, 12, 10))));
    assert_eq!(
        (finding.key, finding.file.as_deref()),
        ("tls_cert_file", Some(cert.as_path()))
    );
    assert!(
        finding
            .cause
            .starts_with("the certificate expires in 22 day(s)"),
        "{finding}"
    );
    // Once per crossing: the next days inside the same window say nothing new.
    assert_eq!(level_at(at(2029, 12, 11)).0, None);
    let (warning, _) = level_at(at(2029, 12, 28));
    let (level, finding) = warning.expect("the 7-day warning");
    assert_eq!(level, Within7Days);
    assert!(
        finding
            .cause
            .starts_with("URGENT: the certificate expires in 4 day(s)"),
        "{finding}"
    );
    assert_eq!(level_at(at(2029, 12, 29)).0, None);
    let (warning, secs) = level_at(at(2030, 1, 2));
    assert_eq!(warning.expect("expired").0, Expired);
    assert_eq!(secs, Some(-86_400));
    assert_eq!(metrics.snapshot().cert_expiry_seconds, Some(-86_400));
    assert_eq!(level_at(at(2030, 1, 3)).0, None);

    // A renewed certificate starts afresh: nothing to warn about, the new end counted.
    let renewed = ca.issue(&CertSpec::new("node-a", &["node-a"]).valid((2029, 1, 1), (2031, 1, 1)));
    publish(&volume, 2, &renewed, &renewed);
    assert!(matches!(
        watch.check(at(2030, 1, 3)),
        Reload::Reloaded { .. }
    ));
    assert_eq!(watch.poll_expiry(), None);
    assert_eq!(watch.seconds_to_expiry(), Some(363 * 86_400));
    assert_eq!(watch.stats().reloads_ok, 1);
}

#[test]
fn a_spawned_watch_checks_every_reload_interval_or_on_demand_only() {
    let ca = TestCa::new("watch CA");
    for (interval, every) in [("50ms", Some(Duration::from_millis(50))), ("0", None)] {
        let volume = Volume::new(
            &format!("watch-spawn-{}", every.is_some()),
            &["tls.crt", "tls.key"],
        );
        let ca_file = volume.path("ca.crt");
        std::fs::write(&ca_file, certs_pem(std::slice::from_ref(&ca.cert))).unwrap();
        let secret_file = volume.path("secret");
        std::fs::write(&secret_file, "rotation test secret, 32 bytes +\n").unwrap();
        let v1 = listener_cert(&ca, "v1.node-a");
        publish(&volume, 1, &v1, &v1);
        let mut settings = settings(&volume, &ca_file, &secret_file);
        assert_eq!(
            FileWatch::new(settings.clone()).interval(),
            Some(Duration::from_secs(10))
        );
        settings.reload_interval = palisade::settings::parse_duration(interval).unwrap();
        let watch = FileWatch::new(settings);
        assert_eq!(watch.interval(), every);
        let (tx, rx) = mpsc::channel();
        let handle = watch
            .spawn(move |event| {
                let _ = tx.send(event);
            })
            .unwrap();
        let v2 = listener_cert(&ca, "v2.node-a");
        publish(&volume, 2, &v2, &v2);
        if every.is_none() {
            // Off: nothing happens until asked.
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            handle.check_now();
        }
        match rx.recv_timeout(BOUND).expect("an event in time") {
            palisade::WatchEvent::Reload(Reload::Reloaded { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(handle.stats().reloads_ok, 1);
        assert!(handle.stats().seconds_to_expiry.is_some());
        drop(handle);
        // Dropping the handle stops the thread at once: the callback (and with it the
        // sender) is gone.
        let gone = rx.recv_timeout(BOUND);
        assert!(
            matches!(gone, Err(mpsc::RecvTimeoutError::Disconnected)),
            "{gone:?}"
        );
    }
}
