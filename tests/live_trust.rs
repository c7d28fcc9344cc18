//! Joined links follow the current trust, in every adapter, over loopback: a listener's
//! `reconfigure` that revokes the peer closes the joined link at once (CLOSE 6, seen by
//! the dialer), one that drops the link's secret re-joins it in place when the peer holds
//! the new secret (frames go on, the key id changes on both ends, PROTOCOL.md §5.8), and
//! cuts it (CLOSE 9) when the peer does not. Plaintext with the secret (whose frame keys
//! switch in the re-join) and TLS.

use std::time::Duration;

use bytes::Bytes;
use palisade::core::revocation::Revocations;
use palisade::{CloseCause, CloseCode, Config, Dial, Endpoint, KeyId, Keyring, SharedSecret};
use palisade_testkit::certs::TestCa;

/// Bounds every wait, so a broken build fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
enum Transport {
    Plain,
    Tls,
}

struct Setup {
    ca: TestCa,
    transport: Transport,
}

fn secret(b: u8) -> SharedSecret {
    SharedSecret::new(vec![b; 32]).unwrap()
}

impl Setup {
    fn new(transport: Transport) -> Self {
        Self {
            ca: TestCa::new("live trust CA"),
            transport,
        }
    }

    fn config(&self, node: &str, keyring: Keyring) -> Config {
        let c = Config::new("live", node).with_keyring(keyring);
        match self.transport {
            Transport::Plain => c,
            Transport::Tls => c.with_tls(self.ca.tls(&self.ca.node(node))),
        }
    }
}

/// What the dialer saw after the listener's reload.
#[derive(Debug)]
struct Seen {
    /// The frame sent after the reload arrived (the link survived), or not.
    after_reload: Option<Bytes>,
    /// The key id the dialer's link rests on at the end.
    dialer_key: Option<KeyId>,
    /// The key id the listener's link rests on at the end.
    listener_key: Option<KeyId>,
    /// The close code the dialer's link ended with, if it ended.
    dialer_close: Option<CloseCode>,
}

fn code(cause: Option<CloseCause>) -> Option<CloseCode> {
    match cause? {
        CloseCause::Local(r) | CloseCause::Peer(r) => Some(r.code),
        CloseCause::Error(_) => None,
    }
}

/// One scenario: join `dialer` to `listener`, exchange a frame, reconfigure the
/// listener with `reload`, then try one more frame from the listener.
macro_rules! async_case {
    ($block_on:expr, $adapter:ident, $listener:expr, $dialer:expr, $reload:expr) => {{
        let (listener_config, dialer_config, reload): (Config, Config, Config) =
            ($listener, $dialer, $reload);
        $block_on(async move {
            let listener =
                palisade::$adapter::Listener::bind("127.0.0.1:0", listener_config).await?;
            let addr = listener.local_addr().to_string();
            let dialer = palisade::$adapter::Dialer::new(Endpoint::new(dialer_config)?);
            let dial = Dial::new(addr).server_name("node-b");
            let (dialed, accepted) =
                futures_util::future::join(dialer.dial(&dial), listener.accept()).await;
            let mut dialed = dialed?;
            let (mut accepted, _) = accepted;
            accepted.send(Bytes::from_static(b"before")).await?;
            assert_eq!(dialed.recv().await?, Some(Bytes::from_static(b"before")));
            listener.reconfigure(reload)?;
            // Whatever the reload did has reached the dialer once a frame sent after
            // it arrives, or the link ended.
            let _ = accepted.send(Bytes::from_static(b"after")).await;
            let after_reload = dialed.recv().await.ok().flatten();
            if after_reload.is_some() {
                // Sent after the dialer's REJOINED: once it arrives, both ends are done.
                dialed.send(Bytes::from_static(b"ack")).await?;
                assert_eq!(accepted.recv().await?, Some(Bytes::from_static(b"ack")));
            } else {
                let _ = accepted.recv().await;
            }
            Ok::<_, palisade::LinkError>(Seen {
                after_reload,
                dialer_key: dialed.current_peer().and_then(|p| p.key_id),
                listener_key: accepted.current_peer().and_then(|p| p.key_id),
                dialer_close: code(dialed.close_cause()),
            })
        })
    }};
}

fn blocking_case(
    listener: Config,
    dialer: Config,
    reload: Config,
) -> Result<Seen, palisade::LinkError> {
    let l = palisade::blocking::Listener::bind("127.0.0.1:0", listener)?;
    let addr = l.local_addr().to_string();
    let d = palisade::blocking::Dialer::new(Endpoint::new(dialer)?);
    let dial = Dial::new(addr).server_name("node-b");
    let dialing = std::thread::spawn(move || d.dial(&dial));
    let (accepted, _) = l.accept()?;
    let dialed = dialing.join().unwrap()?;
    accepted.send(Bytes::from_static(b"before"))?;
    assert_eq!(dialed.recv()?, Some(Bytes::from_static(b"before")));
    l.reconfigure(reload)?;
    let _ = accepted.send(Bytes::from_static(b"after"));
    let after_reload = dialed.recv().ok().flatten();
    if after_reload.is_some() {
        dialed.send(Bytes::from_static(b"ack"))?;
        assert_eq!(accepted.recv()?, Some(Bytes::from_static(b"ack")));
    } else {
        let _ = accepted.recv();
    }
    Ok(Seen {
        after_reload,
        dialer_key: dialed.current_peer().and_then(|p| p.key_id),
        listener_key: accepted.current_peer().and_then(|p| p.key_id),
        dialer_close: code(dialed.close_cause()),
    })
}

/// One adapter's run of a scenario, on a thread of its own.
type Run = Box<dyn FnOnce() -> Result<Seen, palisade::LinkError> + Send>;

/// Runs one scenario in every adapter, each bounded by [`LIMIT`].
fn every_adapter(make: impl Fn() -> (Config, Config, Config)) -> Vec<(&'static str, Seen)> {
    let runs: Vec<(&'static str, Run)> = {
        let (l1, d1, r1) = make();
        let (l2, d2, r2) = make();
        let (l3, d3, r3) = make();
        let (l4, d4, r4) = make();
        vec![
            (
                "tokio",
                Box::new(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .unwrap();
                    async_case!(|f| rt.block_on(f), tokio, l1, d1, r1)
                }),
            ),
            (
                "async-std",
                Box::new(move || async_case!(async_std::task::block_on, async_std, l2, d2, r2)),
            ),
            (
                "smol",
                Box::new(move || async_case!(smol::block_on, smol, l3, d3, r3)),
            ),
            ("blocking", Box::new(move || blocking_case(l4, d4, r4))),
        ]
    };
    runs.into_iter()
        .map(|(name, run)| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(run());
            });
            let seen = rx
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("{name}: no outcome within {LIMIT:?}"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, seen)
        })
        .collect()
}

#[test]
fn a_revoked_peer_is_closed_at_the_reload_in_every_adapter() {
    for transport in [Transport::Plain, Transport::Tls] {
        let results = every_adapter(|| {
            let s = Setup::new(transport);
            let ring = Keyring::new(secret(1));
            let mut revoked = s.config("node-b", ring.clone());
            revoked.revoked =
                Revocations::parse("node-id node-a # decommissioned\n", "rev.txt").unwrap();
            (
                s.config("node-b", ring.clone()),
                s.config("node-a", ring),
                revoked,
            )
        });
        for (name, seen) in results {
            assert_eq!(seen.after_reload, None, "{name} {transport:?}: {seen:?}");
            assert_eq!(
                seen.dialer_close,
                Some(CloseCode::Revoked),
                "{name} {transport:?}: {seen:?}"
            );
        }
    }
}

#[test]
fn a_dropped_secret_rejoins_in_place_when_the_peer_holds_the_new_one() {
    for transport in [Transport::Plain, Transport::Tls] {
        let results = every_adapter(|| {
            let s = Setup::new(transport);
            let (a, b) = (secret(1), secret(2));
            // Both have taken step 1 of a rotation (B accepted), so the link joins under
            // A; the listener then takes steps 2 and 3 at once (B only).
            let step1 = Keyring::new(a.clone()).with_accepted(b.clone()).unwrap();
            (
                s.config("node-b", step1.clone()),
                s.config("node-a", step1),
                s.config("node-b", Keyring::new(b)),
            )
        });
        for (name, seen) in results {
            let b = Some(secret(2).key_id());
            assert_eq!(
                seen.after_reload,
                Some(Bytes::from_static(b"after")),
                "{name} {transport:?}: {seen:?}"
            );
            assert_eq!(
                (seen.dialer_key, seen.listener_key),
                (b, b),
                "{name} {transport:?}: {seen:?}"
            );
            assert_eq!(seen.dialer_close, None, "{name} {transport:?}");
        }
    }
}

#[test]
fn a_peer_without_the_new_secret_is_cut_by_the_rejoin() {
    for transport in [Transport::Plain, Transport::Tls] {
        let results = every_adapter(|| {
            let s = Setup::new(transport);
            let (a, b) = (secret(1), secret(2));
            (
                s.config("node-b", Keyring::new(a.clone())),
                s.config("node-a", Keyring::new(a)),
                s.config("node-b", Keyring::new(b)),
            )
        });
        for (name, seen) in results {
            assert_eq!(seen.after_reload, None, "{name} {transport:?}: {seen:?}");
            assert_eq!(
                seen.dialer_close,
                Some(CloseCode::RejoinFailed),
                "{name} {transport:?}: {seen:?}"
            );
        }
    }
}
