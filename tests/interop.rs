//! Every adapter against every other over loopback, TLS on and off, secret on and off.

mod support;

use bytes::Bytes;
use palisade::{Config, SharedSecret};
use palisade_testkit::certs::TestCa;
use support::{link, Kind, Script, KINDS};

fn frames(seed: u8) -> Vec<Bytes> {
    [0usize, 1, 64, 1000, 16 * 1024, 70_000, 5, 300_000]
        .iter()
        .cycle()
        .take(40)
        .enumerate()
        .map(|(i, &len)| Bytes::from(vec![seed.wrapping_add(i as u8); len]))
        .collect()
}

fn config(name: &str, ca: Option<&TestCa>, secret: bool) -> Config {
    let mut c = Config::new("interop", name);
    if secret {
        c = c.with_secret(SharedSecret::new(vec![9; 32]).unwrap());
    }
    if let Some(ca) = ca {
        c = c.with_tls(ca.tls(&ca.node(name)));
    }
    c
}

fn check(acceptor: Kind, initiator: Kind, tls: bool, secret: bool) {
    let ca = TestCa::new("interop CA");
    let ca = tls.then_some(&ca);
    let (a_frames, i_frames) = (frames(1), frames(100));
    let (a, i) = link(
        (
            acceptor,
            config("node-b", ca, secret),
            Script {
                send: a_frames.clone(),
                expect: i_frames.len(),
            },
        ),
        (
            initiator,
            config("node-a", ca, secret),
            Script {
                send: i_frames.clone(),
                expect: a_frames.len(),
            },
        ),
        "127.0.0.1",
    );
    let what =
        format!("{acceptor:?} acceptor ← {initiator:?} initiator, tls {tls}, secret {secret}");
    let a = a.unwrap_or_else(|e| panic!("{what}: acceptor: {e}"));
    let i = i.unwrap_or_else(|e| panic!("{what}: initiator: {e}"));
    assert_eq!(a.peer.node_id, "node-a", "{what}");
    assert_eq!(i.peer.node_id, "node-b", "{what}");
    assert_eq!(a.peer.tls.is_some(), tls, "{what}");
    assert_eq!(a.peer.key_id.is_some(), secret, "{what}");
    assert!(
        a.received == i_frames,
        "{what}: the acceptor's frames differ"
    );
    assert!(
        i.received == a_frames,
        "{what}: the initiator's frames differ"
    );
}

#[test]
fn every_adapter_against_every_adapter_with_tls_and_secret() {
    for a in KINDS {
        for i in KINDS {
            check(a, i, true, true);
        }
    }
}
