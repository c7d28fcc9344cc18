//! A listener takes new settings while it runs: new handshakes use them, links already
//! joined follow them (a link under a secret no longer accepted re-joins in place) and go
//! on carrying frames. Walked through the three steps of a secret rotation against a
//! tokio and a blocking listener, over 127.0.0.1, with every wait bounded.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use palisade::{Config, Keyring, LinkError, RejectCode, SharedSecret};

const BOUND: Duration = Duration::from_secs(10);

fn secret(byte: u8) -> SharedSecret {
    SharedSecret::new(vec![byte; 32]).expect("secret")
}

fn node(id: &str, keyring: Keyring) -> Config {
    Config::new("rotation", id).with_keyring(keyring)
}

/// One listener of either kind, accepting on a thread of its own.
enum Server {
    Tokio(
        tokio::runtime::Runtime,
        std::sync::Arc<palisade::tokio::Listener>,
    ),
    Blocking(std::sync::Arc<palisade::blocking::Listener>),
}

impl Server {
    fn start(tokio: bool, config: Config) -> Self {
        if tokio {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let l = rt
                .block_on(palisade::tokio::Listener::bind("127.0.0.1:0", config))
                .expect("bind");
            Self::Tokio(rt, std::sync::Arc::new(l))
        } else {
            let l = palisade::blocking::Listener::bind("127.0.0.1:0", config).expect("bind");
            Self::Blocking(std::sync::Arc::new(l))
        }
    }

    fn addr(&self) -> String {
        match self {
            Self::Tokio(_, l) => l.local_addr().to_string(),
            Self::Blocking(l) => l.local_addr().to_string(),
        }
    }

    fn reconfigure(&self, config: Config) -> Result<(), LinkError> {
        match self {
            Self::Tokio(_, l) => l.reconfigure(config),
            Self::Blocking(l) => l.reconfigure(config),
        }
    }

    /// Accepts one link and echoes every frame on it until it closes (on a thread).
    fn echo_next(&self) {
        match self {
            Self::Tokio(rt, l) => {
                let l = std::sync::Arc::clone(l);
                rt.spawn(async move {
                    let (mut conn, _) = l.accept().await;
                    while let Ok(Some(frame)) = conn.recv().await {
                        if conn.send(frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Self::Blocking(l) => {
                let l = std::sync::Arc::clone(l);
                thread::spawn(move || {
                    let Ok((conn, _)) = l.accept() else {
                        return;
                    };
                    while let Ok(Some(frame)) = conn.recv() {
                        if conn.send(frame).is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }
}

/// Dials and, when joined, checks one echoed frame.
fn join_and_echo(
    server: &Server,
    config: Config,
) -> Result<palisade::blocking::Connection, LinkError> {
    server.echo_next();
    let mut conn = palisade::blocking::connect(&server.addr(), config)?;
    assert_echoes(&mut conn, "first");
    Ok(conn)
}

fn assert_echoes(conn: &mut palisade::blocking::Connection, what: &str) {
    let frame = Bytes::from(format!("frame {what}"));
    conn.send(frame.clone()).expect("send");
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            let _ = tx.send(conn.recv());
        });
        let got = rx.recv_timeout(BOUND).expect("an echo in time");
        assert_eq!(got.expect("recv"), Some(frame), "{what}");
    });
}

fn a_secret_rotation_needs_no_restart_and_keeps_joined_links(tokio: bool) {
    let (old, new) = (secret(1), secret(2));
    let server = Server::start(tokio, node("listener", Keyring::new(old.clone())));
    // m1 joins with the old secret and, as every node does at step 1, accepts the new
    // one too: so its link can re-join in place when the old secret goes (step 3).
    let m1 = Keyring::new(old.clone())
        .with_accepted(new.clone())
        .expect("keyring");
    let mut first = join_and_echo(&server, node("m1", m1)).expect("m1");

    // Step 1: the new secret is accepted everywhere.
    let both = Keyring::new(old.clone())
        .with_accepted(new.clone())
        .expect("keyring");
    server.reconfigure(node("listener", both)).expect("step 1");
    join_and_echo(&server, node("m2", Keyring::new(new.clone()))).expect("new primary joins");
    join_and_echo(&server, node("m3", Keyring::new(old.clone()))).expect("old primary joins");

    // Step 2: the new secret is primary everywhere, the old one still accepted.
    let flipped = Keyring::new(new.clone())
        .with_accepted(old.clone())
        .expect("keyring");
    server
        .reconfigure(node("listener", flipped))
        .expect("step 2");
    join_and_echo(&server, node("m4", Keyring::new(new.clone()))).expect("step 2 joins");

    // Step 3: the old secret is gone. A node still on it is refused; the first link,
    // joined with the old secret, re-joins in place under the new one and keeps working.
    server
        .reconfigure(node("listener", Keyring::new(new.clone())))
        .expect("step 3");
    let stale = palisade::blocking::connect(&server.addr(), node("m5", Keyring::new(old)));
    assert_eq!(
        stale.err().and_then(|e| e.reject_code()),
        Some(RejectCode::UnknownKey)
    );
    assert_echoes(&mut first, "on the link joined before the rotation");

    // Settings that cannot work are refused, and the listener keeps its last good ones.
    let err = server
        .reconfigure(Config::new("rotation", ""))
        .expect_err("an empty node id");
    assert!(err.to_string().contains("node_id"), "{err}");
    join_and_echo(&server, node("m6", Keyring::new(new))).expect("still serving");
}

#[test]
fn tokio_listener_rotates_its_secret_live() {
    a_secret_rotation_needs_no_restart_and_keeps_joined_links(true);
}

#[test]
fn blocking_listener_rotates_its_secret_live() {
    a_secret_rotation_needs_no_restart_and_keeps_joined_links(false);
}
