//! Settings from TOML and the environment: equal results both ways, every load error
//! and warning by its message, secrets from a file and from the environment that join.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use palisade::settings::{self, key_id_of, keys, Settings, SettingsError, KEYS};

const SECRET: &str = "q7yJ2mS1nQe8VtLr0cXb5WfHk3ZpA9uGd4oNiR6sTvYwEjMlBzKxCaPgUhO+/Q==";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_env(pairs: &[(&str, &str)]) -> Result<Settings, settings::SettingsErrors> {
    let mut s = Settings::default();
    s.apply_env(env(pairs)).map(|()| s)
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("palisade-settings-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn messages(loaded: &settings::Loaded) -> Vec<String> {
    loaded
        .report
        .findings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn has(report: &[String], needle: &str) -> bool {
    report.iter().any(|m| m.contains(needle))
}

#[test]
fn a_toml_file_and_the_same_settings_from_the_environment_are_equal() {
    let toml = r#"
        cluster_name = "prod"
        node_id = "node-1"
        listen = "0.0.0.0:7000"
        seeds = ["node-2.palisade:7000", "10.0.0.7:7000"]
        shared_secret_file = "/run/secrets/palisade"
        accepted_secret_files = ["/run/secrets/old-1", "/run/secrets/old-2"]
        max_frame = 65536
        handshake_timeout = "5s"
        connect_timeout = "250ms"
        clock_skew_tolerance = "1m30s"
        clock_ahead_tolerance = "20s"
        first_bytes_timeout = "1s"
        replay_cache_capacity = 4096
        replay_cache_per_source = 64
        send_buffer_limit = 2048
        recv_buffer_limit = 4096
        max_unjoined = 100
        max_unjoined_per_source = 4
        new_connection_rate_per_source = 2.5
        new_connection_burst_per_source = 5
        failed_join_rate_per_source = 0.5
        failed_join_burst_per_source = 3
        source_backoff = "1m"
        min_evict_age = "2500ms"
        tls_enabled = true
        tls_cert_file = "/etc/palisade/tls/tls.crt"
        tls_key_file = "/etc/palisade/tls/tls.key"
        tls_ca_file = "/etc/palisade/tls/ca.crt"
        tls_trust = "pinned"
        verify_hostname = false
        same_name_as_own_cert = true
        allowed_names = ["*.palisade.svc.cluster.local", "node-*"]
        node_id_in_cert = true
        min_tls = "1.3"
        cipher_suites = ["TLS13_AES_256_GCM_SHA384"]
        tls_crl_files = ["/etc/palisade/tls/ca.crl", "/etc/palisade/tls/old-ca.crl"]
        allowed_peers = ["node-*", "db-1"]
        revocation_file = "/etc/palisade/revoked.txt"
        close_on_peer_expiry = false
    "#;
    let file = Settings::from_toml_str(toml, None).unwrap();
    let from_env = from_env(&[
        ("PALISADE_CLUSTER_NAME", "prod"),
        ("PALISADE_NODE_ID", "node-1"),
        ("PALISADE_LISTEN", "0.0.0.0:7000"),
        ("PALISADE_SEEDS", "node-2.palisade:7000, 10.0.0.7:7000,"),
        ("PALISADE_SHARED_SECRET_FILE", "/run/secrets/palisade"),
        (
            "PALISADE_ACCEPTED_SECRET_FILES",
            "/run/secrets/old-1,/run/secrets/old-2",
        ),
        ("PALISADE_MAX_FRAME", "65536"),
        ("PALISADE_HANDSHAKE_TIMEOUT", "5s"),
        ("PALISADE_CONNECT_TIMEOUT", "250ms"),
        ("PALISADE_CLOCK_SKEW_TOLERANCE", "90s"),
        ("PALISADE_CLOCK_AHEAD_TOLERANCE", "20s"),
        ("PALISADE_FIRST_BYTES_TIMEOUT", "1000ms"),
        ("PALISADE_REPLAY_CACHE_CAPACITY", "4096"),
        ("PALISADE_REPLAY_CACHE_PER_SOURCE", "64"),
        ("PALISADE_SEND_BUFFER_LIMIT", "2048"),
        ("PALISADE_RECV_BUFFER_LIMIT", "4096"),
        ("PALISADE_MAX_UNJOINED", "100"),
        ("PALISADE_MAX_UNJOINED_PER_SOURCE", "4"),
        ("PALISADE_NEW_CONNECTION_RATE_PER_SOURCE", "2.5"),
        ("PALISADE_NEW_CONNECTION_BURST_PER_SOURCE", "5"),
        ("PALISADE_FAILED_JOIN_RATE_PER_SOURCE", "0.5"),
        ("PALISADE_FAILED_JOIN_BURST_PER_SOURCE", "3"),
        ("PALISADE_SOURCE_BACKOFF", "1m"),
        ("PALISADE_MIN_EVICT_AGE", "2500ms"),
        ("PALISADE_TLS_ENABLED", "true"),
        ("PALISADE_TLS_CERT_FILE", "/etc/palisade/tls/tls.crt"),
        ("PALISADE_TLS_KEY_FILE", "/etc/palisade/tls/tls.key"),
        ("PALISADE_TLS_CA_FILE", "/etc/palisade/tls/ca.crt"),
        ("PALISADE_TLS_TRUST", "pinned"),
        ("PALISADE_VERIFY_HOSTNAME", "false"),
        ("PALISADE_SAME_NAME_AS_OWN_CERT", "TRUE"),
        (
            "PALISADE_ALLOWED_NAMES",
            "*.palisade.svc.cluster.local,node-*",
        ),
        ("PALISADE_NODE_ID_IN_CERT", "true"),
        ("PALISADE_MIN_TLS", "1.3"),
        ("PALISADE_CIPHER_SUITES", "TLS13_AES_256_GCM_SHA384"),
        (
            "PALISADE_TLS_CRL_FILES",
            "/etc/palisade/tls/ca.crl,/etc/palisade/tls/old-ca.crl",
        ),
        ("PALISADE_ALLOWED_PEERS", "node-*, db-1"),
        ("PALISADE_REVOCATION_FILE", "/etc/palisade/revoked.txt"),
        ("PALISADE_CLOSE_ON_PEER_EXPIRY", "false"),
        ("HOME", "/root"), // not ours: ignored
    ])
    .unwrap();
    assert_eq!(file, from_env);
    assert_eq!(file.seeds, ["node-2.palisade:7000", "10.0.0.7:7000"]);
    assert_eq!(file.allowed_peers, ["node-*", "db-1"]);
    assert!(!file.close_on_peer_expiry);
    assert_eq!(file.tls.tls_crl_files.len(), 2);
    assert_eq!(file.clock_skew_tolerance, Duration::from_secs(90));
    assert_eq!(file.min_evict_age, Duration::from_millis(2500));
    // And the environment wins over the file.
    let mut both = file.clone();
    both.apply_env(env(&[("PALISADE_NODE_ID", "node-9")]))
        .unwrap();
    assert_eq!(both.node_id, "node-9");
}

#[test]
fn every_key_reaches_its_field_and_the_defaults_are_the_documented_ones() {
    let defaults = Settings::default();
    let core = palisade::Config::new("", "");
    assert_eq!(defaults.max_frame, core.max_frame);
    assert_eq!(defaults.first_bytes_timeout, core.first_bytes_timeout);
    assert_eq!(
        defaults.source_backoff,
        palisade_driver::admission::AdmissionLimits::default().source_backoff
    );
    assert_eq!(
        defaults.min_evict_age,
        palisade_driver::admission::AdmissionLimits::default().min_evict_age
    );
    for key in KEYS {
        // The documented default, set through the environment, changes nothing.
        if let Some(default) = key.default {
            let text = if default == "[]" { "" } else { default };
            assert_eq!(
                from_env(&[(&key.env(), text)]).unwrap(),
                defaults,
                "{}",
                key.name
            );
        }
        // Another value reaches a field.
        let other = match key.kind {
            keys::Kind::Int => "7",
            keys::Kind::Float => "0.25",
            keys::Kind::Bool => {
                if key.default == Some("true") {
                    "false"
                } else {
                    "true"
                }
            }
            keys::Kind::Duration => "3s",
            keys::Kind::Choice(words) => words.iter().find(|w| Some(**w) != key.default).unwrap(),
            _ => "x:1",
        };
        assert_ne!(
            from_env(&[(&key.env(), other)]).unwrap(),
            defaults,
            "{}",
            key.name
        );
    }
    // Every field is a key: the serialized settings (secret left out) name only known keys.
    let mut full = defaults.clone();
    full.listen = Some("x".into());
    full.metrics_listen = Some("x".into());
    full.audit_log = Some("x".into());
    full.shared_secret_file = Some("x".into());
    full.revocation_file = Some("x".into());
    full.tls.tls_cert_file = Some("x".into());
    full.tls.tls_key_file = Some("x".into());
    full.tls.tls_ca_file = Some("x".into());
    full.tls.verify_hostname = Some(true);
    full.tls.same_name_as_own_cert = Some(true);
    full.tls.node_id_in_cert = Some(true);
    let table = toml::Table::try_from(&full).unwrap();
    let mut serialized: Vec<&str> = table.keys().map(String::as_str).collect();
    serialized.push("shared_secret");
    serialized.sort_unstable();
    let mut known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    known.sort_unstable();
    assert_eq!(serialized, known);
}

#[test]
fn the_readme_table_is_the_key_list() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let table = keys::markdown_table();
    assert!(
        readme.contains(&table),
        "README.md's configuration table is out of date; paste this:\n{table}"
    );
}

#[test]
fn unknown_keys_are_errors_with_a_did_you_mean_and_every_problem_is_reported() {
    let errors = Settings::from_toml_str(
        "cluster_name = \"prod\"\nhandshake_timout = \"5s\"\ntls_cert = \"a.pem\"\nwhatever = 1\nmax_frame = \"big\"\n",
        Some(Path::new("/etc/palisade.toml")),
    )
    .unwrap_err();
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 4, "{shown:#?}");
    assert!(shown.contains(&"/etc/palisade.toml: unknown key `handshake_timout`; did you mean `handshake_timeout`?".to_string()), "{shown:#?}");
    assert!(has(
        &shown,
        "unknown key `tls_cert`; did you mean `tls_cert_file`?"
    ));
    assert!(has(
        &shown,
        "unknown key `whatever`; remove it; the keys are listed in the README"
    ));
    assert!(
        has(
            &shown,
            "bad value for `max_frame`: invalid type: string \"big\", expected usize"
        ),
        "{shown:#?}"
    );
    let report = errors.report().to_string();
    assert!(
        report.contains(
            "error: handshake_timeout (/etc/palisade.toml): unknown key `handshake_timout`"
        ),
        "{report}"
    );
    assert!(report.ends_with("4 error(s), 0 warning(s)"), "{report}");
}

#[test]
fn unknown_and_bad_environment_variables_name_the_variable_and_what_it_expects() {
    let errors = from_env(&[
        ("PALISADE_CLUSTER", "prod"),
        ("PALISADE_HANDSHAKE_TIMEOUT", "10"),
        ("PALISADE_MAX_FRAME", "8MiB"),
        ("PALISADE_TLS_ENABLED", "yes"),
        ("PALISADE_TLS_TRUST", "system"),
    ])
    .unwrap_err();
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(shown, [
        "unknown environment variable PALISADE_CLUSTER (palisade reads every PALISADE_* variable); did you mean PALISADE_CLUSTER_NAME?",
        "PALISADE_HANDSHAKE_TIMEOUT has a value palisade cannot read; set PALISADE_HANDSHAKE_TIMEOUT to a duration with a unit, e.g. 250ms, 10s, 5m, 1h",
        "PALISADE_MAX_FRAME has a value palisade cannot read; set PALISADE_MAX_FRAME to a whole number, e.g. 1024",
        "PALISADE_TLS_ENABLED has a value palisade cannot read; set PALISADE_TLS_ENABLED to true or false",
        "PALISADE_TLS_TRUST has a value palisade cannot read; set PALISADE_TLS_TRUST to one of: ca, pinned",
    ]);
    assert!(matches!(
        &errors.0[1],
        SettingsError::BadEnv {
            key: "handshake_timeout",
            ..
        }
    ));
}

#[test]
fn bad_durations_in_the_file_say_how_to_write_one() {
    let err = |text: &str| Settings::from_toml_str(text, None).unwrap_err().to_string();
    assert_eq!(
        err("handshake_timeout = 10"),
        "bad value for `handshake_timeout`: expected a duration string with a unit, e.g. \"10s\" (a bare number is ambiguous); write it as the message says; the keys are listed in the README's Configuration section"
    );
    assert!(err("connect_timeout = \"10 sec\"")
        .contains("\" sec\" is not a duration unit; use ms, s, m or h"));
    assert!(err("source_backoff = \"\"").contains("the duration is empty"));
}

#[test]
fn toml_syntax_errors_give_line_and_column() {
    let e = Settings::from_toml_str(
        "cluster_name = \"prod\"\nnode_id = node-1\n",
        Some(Path::new("n.toml")),
    )
    .unwrap_err();
    match &e.0[..] {
        [SettingsError::Syntax {
            line: 2,
            column: 11,
            ..
        }] => {}
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("n.toml: invalid TOML at line 2, column 11: "),
        "{e}"
    );
    let unreadable = Settings::load("/nonexistent/palisade.toml")
        .unwrap_err()
        .to_string();
    assert!(
        unreadable
            .starts_with("/nonexistent/palisade.toml: cannot read /nonexistent/palisade.toml: "),
        "{unreadable}"
    );
}

fn named() -> Settings {
    Settings {
        cluster_name: "prod".into(),
        node_id: "node-1".into(),
        ..Settings::default()
    }
}

#[test]
fn every_load_error_and_warning_is_explained() {
    let now = SystemTime::now();
    // Nothing set: names missing, and no authentication at all.
    let loaded = Settings::default().build(now);
    let m = messages(&loaded);
    assert!(loaded.config.is_none());
    assert!(has(&m, "error: cluster_name: cluster_name is not set\n  fix: set cluster_name to the cluster's name, the same on every node"), "{m:#?}");
    assert!(has(&m, "error: node_id: node_id is not set"));
    assert!(has(&m, "warning: shared_secret: no authentication at all: TLS is off and there is no shared secret"));
    assert!(has(&m, "`openssl rand -base64 48 > secret`"));

    let mut s = named();
    s.node_id = "n".repeat(256);
    s.max_frame = 0;
    s.handshake_timeout = Duration::ZERO;
    s.recv_buffer_limit = 0;
    s.new_connection_rate_per_source = f64::NAN;
    s.listen = Some("localhost".into());
    s.seeds = vec!["node-2".into(), "10.0.0.7:7000".into()];
    let m = messages(&s.build(now));
    for needle in [
        "error: node_id: node_id is 256 bytes long; at most 255 bytes fit the join",
        "error: max_frame: max_frame is 0; it must be 1 to 4294967295 bytes",
        "error: handshake_timeout: handshake_timeout is zero\n  fix: give handshake_timeout a positive duration",
        "error: recv_buffer_limit: recv_buffer_limit is zero",
        "error: new_connection_rate_per_source: new_connection_rate_per_source is NaN",
        "error: listen: listen = \"localhost\" is not an IP address and port",
        "error: seeds: seed \"node-2\" is not host:port",
    ] {
        assert!(has(&m, needle), "{needle}\n{m:#?}");
    }
    assert!(!has(&m, "seed \"10.0.0.7:7000\""));

    // Warnings: deadlines that cannot take effect. The node still starts.
    let mut s = named();
    s.shared_secret = Some(settings::SecretText::new(SECRET));
    s.first_bytes_timeout = Duration::from_secs(20);
    s.clock_ahead_tolerance = Duration::from_secs(600);
    let loaded = s.build(now);
    let m = messages(&loaded);
    assert!(loaded.config.is_some(), "{m:#?}");
    assert!(has(&m, "warning: first_bytes_timeout: first_bytes_timeout (20s) is longer than handshake_timeout (10s), so it has no effect"));
    assert!(has(&m, "warning: clock_ahead_tolerance: clock_ahead_tolerance (10m) is longer than clock_skew_tolerance (5m)"));
    assert!(has(
        &m,
        &format!(
            "note: shared_secret: the shared secret's key id is {}",
            key_id_of(SECRET)
        )
    ));
    assert!(!has(&m, "no authentication"));
    assert_eq!(loaded.report.warnings().count(), 2);

    // Authorization rules that need certificates while TLS is off; TLS files ignored.
    let mut s = named();
    s.tls.node_id_in_cert = Some(true);
    s.tls.allowed_names = vec!["*.svc".into()];
    s.tls.tls_cert_file = Some("/etc/palisade/tls/tls.crt".into());
    let m = messages(&s.build(now));
    assert!(has(&m, "error: node_id_in_cert: node_id_in_cert checks peer certificates, but tls_enabled is false: there are none to check\n  fix: set tls_enabled = true"));
    assert!(has(
        &m,
        "error: allowed_names: allowed_names checks peer certificates"
    ));
    assert!(has(
        &m,
        "warning: tls_cert_file: tls_cert_file is set but tls_enabled is false, so it is ignored"
    ));
}

#[test]
fn secret_errors_say_how_to_make_a_secret_and_how_to_compare_key_ids() {
    let dir = TempDir::new("secret-errors");
    let now = SystemTime::now();
    let short = dir.write("short", "abc\n");
    let current = dir.write("current", &format!("{SECRET}\n"));
    let same = dir.write("same", &format!("  {SECRET}\r\n"));

    let mut s = named();
    s.shared_secret = Some(settings::SecretText::new(SECRET));
    s.shared_secret_file = Some(current.clone());
    let m = messages(&s.build(now));
    assert!(has(&m, "error: shared_secret_file: both shared_secret (or PALISADE_SHARED_SECRET) and shared_secret_file are set; which one wins would be a guess"), "{m:#?}");

    let mut s = named();
    s.shared_secret_file = Some(short.clone());
    let m = messages(&s.build(now));
    assert!(has(&m, &format!("error: shared_secret_file ({}): the secret is 3 bytes long (after removing surrounding whitespace); at least 32 are needed\n  fix: make one with `openssl rand -base64 48 > secret`", short.display())), "{m:#?}");

    let mut s = named();
    s.shared_secret_file = Some(dir.0.join("missing"));
    assert!(has(&messages(&s.build(now)), "error: shared_secret_file ("));

    let mut s = named();
    s.accepted_secret_files = vec![current.clone()];
    assert!(has(&messages(&s.build(now)), "error: accepted_secret_files: accepted_secret_files is set but there is no shared_secret or shared_secret_file"));

    let mut s = named();
    s.shared_secret_file = Some(current);
    s.accepted_secret_files = vec![same.clone()];
    let loaded = s.build(now);
    let m = messages(&loaded);
    assert!(loaded.config.is_none());
    assert!(has(&m, &format!("error: accepted_secret_files ({}): this secret (key id {}) is already in the keyring", same.display(), key_id_of(SECRET))), "{m:#?}");
    assert!(has(
        &m,
        "compare key ids: run `palisade secret id --file FILE` (or `--env VAR`) on each node"
    ));
    // The secret itself is never shown.
    assert!(!format!("{loaded:?}{m:?}{s:?}").contains(&SECRET[..20]));
}

#[test]
fn an_empty_accepted_secret_file_accepts_nothing_so_a_rotation_only_changes_contents() {
    let dir = TempDir::new("accepted-empty");
    let now = SystemTime::now();
    let current = dir.write("current", &format!("{SECRET}\n"));
    let accepted = dir.write("accepted", "\n");
    let mut s = named();
    s.shared_secret_file = Some(current.clone());
    s.accepted_secret_files = vec![accepted.clone()];
    let loaded = s.build(now);
    let keyring = loaded
        .config
        .as_ref()
        .and_then(|c| c.keyring.as_ref())
        .expect("keyring");
    assert_eq!(keyring.key_ids().count(), 1, "{}", loaded.report);
    assert!(has(
        &messages(&loaded),
        &format!(
            "note: accepted_secret_files ({}): the file is empty: no secret accepted from it",
            accepted.display()
        )
    ));

    // The same file holding the next secret: accepted, and its key id noted.
    let next = "the next secret, at least thirty-two bytes long";
    std::fs::write(&accepted, format!("{next}\n")).unwrap();
    let loaded = s.build(now);
    let keyring = loaded
        .config
        .as_ref()
        .and_then(|c| c.keyring.as_ref())
        .expect("keyring");
    assert_eq!(keyring.key_ids().count(), 2);
    assert!(has(
        &messages(&loaded),
        &format!(
            "also accepted from peers: the secret with key id {}",
            key_id_of(next)
        )
    ));

    // The primary secret file may not be empty.
    std::fs::write(&current, "").unwrap();
    let m = messages(&s.build(now));
    assert!(has(&m, "error: shared_secret_file ("), "{m:#?}");
    assert!(has(&m, "the secret is empty"), "{m:#?}");
}

#[test]
fn tls_enabled_without_files_is_refused_by_the_tls_loader() {
    let mut s = named();
    s.shared_secret = Some(settings::SecretText::new(SECRET));
    s.tls.tls_enabled = true;
    let loaded = s.build(SystemTime::now());
    assert!(loaded.config.is_none());
    assert!(has(
        &messages(&loaded),
        "error: tls_cert_file: tls_enabled is true but no certificate is set"
    ));
}

#[test]
fn a_secret_file_with_a_trailing_newline_and_the_same_secret_from_the_environment_join() {
    let dir = TempDir::new("join");
    let file = dir.write("secret", &format!("{SECRET}\n"));
    let acceptor = Settings::from_toml_str(
        &format!("cluster_name = \"prod\"\nnode_id = \"a\"\nlisten = \"127.0.0.1:0\"\nshared_secret_file = {:?}\n", file.display().to_string()),
        None,
    )
    .unwrap();
    let dialer = from_env(&[
        ("PALISADE_CLUSTER_NAME", "prod"),
        ("PALISADE_NODE_ID", "b"),
        ("PALISADE_SHARED_SECRET", SECRET),
    ])
    .unwrap();
    assert_eq!(
        key_id_of(&std::fs::read_to_string(&file).unwrap()),
        key_id_of(SECRET)
    );
    let now = SystemTime::now();
    let (a, b) = (acceptor.build(now), dialer.build(now));
    assert!(
        a.report.is_ok() && b.report.is_ok(),
        "{}\n{}",
        a.report,
        b.report
    );
    let listener = palisade::blocking::Listener::bind_with_limits(
        acceptor.listen.as_deref().unwrap(),
        palisade::Endpoint::new(a.config.unwrap()).unwrap(),
        None,
        a.limits,
    )
    .unwrap();
    let addr = listener.local_addr().to_string();
    let accept = std::thread::spawn(move || listener.accept().map(|(c, _)| c));
    let conn = palisade::blocking::connect(&addr, b.config.unwrap()).unwrap();
    let theirs = accept.join().unwrap().unwrap();
    assert_eq!(conn.peer().node_id, "a");
    assert_eq!(conn.peer().key_id, Some(key_id_of(SECRET)));
    assert_eq!(theirs.peer().key_id, Some(key_id_of(SECRET)));
    conn.send(Bytes::from_static(b"hello")).unwrap();
    assert_eq!(theirs.recv().unwrap().as_deref(), Some(&b"hello"[..]));
}

#[test]
fn the_readme_kubernetes_example_loads() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Configuration").nth(1).unwrap();
    let example = section
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut s = Settings::from_toml_str(example, Some(Path::new("README.md"))).unwrap();
    s.apply_env(env(&[("PALISADE_NODE_ID", "orders-0")]))
        .unwrap();
    assert!(s.tls.tls_enabled);
    assert_eq!(
        s.tls.tls_ca_file.as_deref(),
        Some(Path::new("/etc/palisade/tls/ca.crt"))
    );
    assert_eq!(s.seeds.len(), 3);
}

#[test]
fn an_arc_style_cluster_table_says_the_keys_go_at_the_top_level() {
    let e = Settings::from_toml_str(
        "[cluster]\ncluster_name = \"prod\"\ntls_enabled = true\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "unknown table `[cluster]`: palisade's keys are at the top level of the file; remove the `[cluster]` line and move its keys above every other table"
    );
}

#[test]
fn palisade_tool_variables_are_not_settings() {
    assert_eq!(
        from_env(&[
            ("PALISADE_BENCH_QUICK", "1"),
            ("PALISADE_PRINT_VECTORS", "1")
        ])
        .unwrap(),
        Settings::default()
    );
}

#[test]
fn load_checked_reports_file_problems_and_the_checks_of_the_keys_it_could_read() {
    let dir = TempDir::new("checked");
    let short = dir.write("short", "abc\n");
    let path = dir.write(
        "palisade.toml",
        &format!("cluster_name = \"prod\"\nnode_id = \"n1\"\nhandshake_timout = \"5s\"\nmax_frame = 0\nshared_secret_file = {:?}\n", short.display().to_string()),
    );
    let (settings, loaded) = Settings::load_checked(&path, SystemTime::now());
    let m = messages(&loaded);
    assert_eq!(settings.node_id, "n1");
    assert!(loaded.config.is_none());
    assert!(has(&m, "unknown key `handshake_timout`"), "{m:#?}");
    assert!(has(&m, "error: max_frame: max_frame is 0"));
    assert!(has(&m, "the secret is 3 bytes long"));
    // A secret is configured (if unusable): no "no authentication" warning on top.
    assert!(!has(&m, "no authentication"));
}

#[test]
fn min_evict_age_reaches_the_listeners_admission_limits() {
    let settings = Settings::from_toml_str(
        "cluster_name = \"prod\"\nnode_id = \"a\"\nshared_secret = \"0123456789abcdef0123456789abcdef\"\nmin_evict_age = \"4s\"\n",
        None,
    )
    .unwrap();
    let built = settings.build(SystemTime::now());
    assert!(built.report.is_ok(), "{}", built.report);
    assert_eq!(built.limits.min_evict_age, Duration::from_secs(4));
}
