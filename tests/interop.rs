//! Every adapter against every other over loopback, TLS on and off, secret on and off:
//! many frames of mixed sizes both ways at once, then a graceful close. And a refused
//! join (wrong secret) on every adapter's listener, which keeps serving afterwards.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::{Config, KeyId, RejectCode, SharedSecret};
use palisade_testkit::certs::TestCa;
use support::{initiate, link_within, serve, Kind, Script, KINDS};

/// Frames each side sends per link.
const FRAMES: usize = 200;

/// Longest one link may take before its test fails (it takes well under a second).
const PAIR_LIMIT: Duration = Duration::from_secs(20);

/// Largest frame sent.
const MAX_LEN: usize = 300 * 1024;

/// Sizes that sit on the boundaries the stack cares about, then pseudo-random ones.
fn sizes(seed: u64) -> Vec<usize> {
    let edges = [
        0,
        1,
        7,
        8,
        64,
        1000,
        16 * 1024 - 1, // below the core's zero-copy threshold and one TLS record
        16 * 1024,
        16 * 1024 + 1,
        64 * 1024 - 1, // around the drivers' read buffer
        64 * 1024,
        64 * 1024 + 1,
        MAX_LEN,
        0,
        MAX_LEN,
    ];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut sizes = edges.to_vec();
    while sizes.len() < FRAMES {
        let r = next();
        // Mostly small frames, some medium, a few large.
        let len = match r % 20 {
            0..=9 => (r >> 8) % 1024,
            10..=14 => (r >> 8) % (20 * 1024),
            15..=18 => (r >> 8) % (100 * 1024),
            _ => (r >> 8) % (MAX_LEN as u64 + 1),
        };
        sizes.push(len as usize);
    }
    // Spread the edge cases through the stream rather than all at the start.
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    for i in (1..order.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order.into_iter().map(|i| sizes[i]).collect()
}

/// Frames whose every byte depends on the sender, the frame's index and the position,
/// so a lost, duplicated, reordered or corrupted frame (or slice of one) is seen.
fn make_frames(seed: u8) -> Vec<Bytes> {
    sizes(u64::from(seed))
        .into_iter()
        .enumerate()
        .map(|(i, len)| {
            let start = u32::from(seed) * 7919 + i as u32 * 131;
            Bytes::from(
                (0..len as u32)
                    .map(|j| (start + j * 7 + (j >> 8)) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect()
}

/// The frames the acceptors send and the frames the initiators send (made once).
fn frames() -> &'static (Vec<Bytes>, Vec<Bytes>) {
    static FRAMES: OnceLock<(Vec<Bytes>, Vec<Bytes>)> = OnceLock::new();
    FRAMES.get_or_init(|| (make_frames(1), make_frames(100)))
}

/// The small frames of [`frames`] only: well under what the sockets buffer, so neither
/// side ever waits to write.
fn light_frames() -> &'static (Vec<Bytes>, Vec<Bytes>) {
    static LIGHT: OnceLock<(Vec<Bytes>, Vec<Bytes>)> = OnceLock::new();
    LIGHT.get_or_init(|| {
        let light = |set: &[Bytes]| -> Vec<Bytes> {
            set.iter().filter(|f| f.len() <= 1024).cloned().collect()
        };
        let (a, i) = frames();
        (light(a), light(i))
    })
}

fn secret(byte: u8) -> SharedSecret {
    SharedSecret::new(vec![byte; 32]).unwrap()
}

fn config(name: &str, ca: Option<&TestCa>, secret: Option<SharedSecret>) -> Config {
    let mut c = Config::new("interop", name);
    if let Some(secret) = secret {
        c = c.with_secret(secret);
    }
    if let Some(ca) = ca {
        // Named by its node id and by the address it is dialed at.
        c = c.with_tls(ca.tls(&ca.node_at(name, "127.0.0.1")));
    }
    c
}

/// First differing frame, for a readable failure.
fn first_difference(got: &[Bytes], want: &[Bytes]) -> String {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            return format!("frame {i}: got {} bytes, want {} bytes", g.len(), w.len());
        }
    }
    format!("got {} frames, want {}", got.len(), want.len())
}

fn check(
    acceptor: Kind,
    initiator: Kind,
    ca: Option<&TestCa>,
    secret_on: bool,
    (a_frames, i_frames): &(Vec<Bytes>, Vec<Bytes>),
) {
    let tls = ca.is_some();
    let key = secret_on.then(|| secret(9));
    let (a, i) = link_within(
        (
            acceptor,
            config("node-b", ca, key.clone()),
            Script {
                send: a_frames.clone(),
                expect: i_frames.len(),
            },
        ),
        (
            initiator,
            config("node-a", ca, key.clone()),
            Script {
                send: i_frames.clone(),
                expect: a_frames.len(),
            },
        ),
        "127.0.0.1",
        PAIR_LIMIT,
    );
    let what =
        format!("{acceptor:?} acceptor ← {initiator:?} initiator, tls {tls}, secret {secret_on}");
    let a = a.unwrap_or_else(|e| panic!("{what}: acceptor: {e}"));
    let i = i.unwrap_or_else(|e| panic!("{what}: initiator: {e}"));
    assert_eq!(a.peer.node_id, "node-a", "{what}");
    assert_eq!(i.peer.node_id, "node-b", "{what}");
    let key_id: Option<KeyId> = key.as_ref().map(SharedSecret::key_id);
    assert_eq!(a.peer.key_id, key_id, "{what}: the acceptor's key id");
    assert_eq!(i.peer.key_id, key_id, "{what}: the initiator's key id");
    for (side, peer) in [("acceptor", &a.peer), ("initiator", &i.peer)] {
        match &peer.tls {
            Some(t) => {
                assert!(tls, "{what}: the {side} reports TLS on a plaintext link");
                assert_eq!(t.version, "TLSv1_3", "{what}: the {side}'s TLS version");
            }
            None => assert!(!tls, "{what}: the {side} reports no TLS"),
        }
    }
    assert!(
        a.received == *i_frames,
        "{what}: the acceptor's frames differ: {}",
        first_difference(&a.received, i_frames)
    );
    assert!(
        i.received == *a_frames,
        "{what}: the initiator's frames differ: {}",
        first_difference(&i.received, a_frames)
    );
}

fn matrix(tls: bool, secret_on: bool) {
    let started = Instant::now();
    let ca = TestCa::new("interop CA");
    let ca = tls.then_some(&ca);
    for a in KINDS {
        for i in KINDS {
            check(a, i, ca, secret_on, frames());
        }
    }
    eprintln!(
        "16 pairs, tls {tls}, secret {secret_on}: {:?}",
        started.elapsed()
    );
}

#[test]
fn every_adapter_against_every_adapter_with_tls_and_secret() {
    matrix(true, true);
}

#[test]
fn every_adapter_against_every_adapter_with_tls_without_secret() {
    matrix(true, false);
}

#[test]
fn every_adapter_against_every_adapter_plaintext_with_secret() {
    matrix(false, true);
}

#[test]
fn every_adapter_against_every_adapter_plaintext_without_secret() {
    matrix(false, false);
}

#[test]
fn the_frame_mix_covers_the_edges() {
    let (a, i) = frames();
    for set in [a, i] {
        assert_eq!(set.len(), FRAMES);
        assert!(set.iter().any(|f| f.is_empty()));
        assert!(set.iter().any(|f| f.len() == MAX_LEN));
        assert!(set.iter().all(|f| f.len() <= MAX_LEN));
        let total: usize = set.iter().map(Bytes::len).sum();
        assert!(total > 2 * 1024 * 1024, "{total} bytes per direction");
        eprintln!(
            "{} frames, {} empty, {} of 64 KiB or more, {total} bytes",
            set.len(),
            set.iter().filter(|f| f.is_empty()).count(),
            set.iter().filter(|f| f.len() >= 64 * 1024).count()
        );
    }
    assert_ne!(a, i);
    let (la, li) = light_frames();
    for set in [la, li] {
        assert!(set.len() > 50, "{} light frames", set.len());
        eprintln!(
            "{} light frames, {} bytes",
            set.len(),
            set.iter().map(Bytes::len).sum::<usize>()
        );
        assert!(set.iter().any(|f| f.is_empty()));
        let total: usize = set.iter().map(Bytes::len).sum();
        assert!(total < 128 * 1024, "{total} bytes of light frames");
    }
}

/// A wrong secret is refused with UnknownKey on every adapter's listener (TLS on), the
/// refused initiator's `connect` says so, and the same listener then serves a good
/// initiator.
fn refused_then_served(acceptor: Kind) {
    let ca = TestCa::new("refusal CA");
    let good = secret(9);
    let bad = secret(10);
    assert_ne!(good.key_id(), bad.key_id());
    // The refused initiator is the same adapter; the good one the next adapter.
    let bad_kind = acceptor;
    let good_kind = KINDS[(KINDS.iter().position(|k| *k == acceptor).unwrap() + 1) % 4];
    let what = format!("{acceptor:?} acceptor, {bad_kind:?} refused, {good_kind:?} joins");

    let to_acceptor: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 1000])).collect();
    let to_initiator: Vec<Bytes> = (0..20u8)
        .map(|i| Bytes::from(vec![i ^ 0x5a; 70_000]))
        .collect();
    let server = serve(
        acceptor,
        config("node-b", Some(&ca), Some(good.clone())),
        vec![Script {
            send: to_initiator.clone(),
            expect: to_acceptor.len(),
        }],
    )
    .unwrap_or_else(|e| panic!("{what}: serve: {e}"));
    let target = server.target("127.0.0.1");

    let refused = initiate(
        bad_kind,
        config("node-x", Some(&ca), Some(bad.clone())),
        Script {
            send: vec![Bytes::from_static(b"never sent")],
            expect: 1,
        },
        &target,
    );
    let err = match refused {
        Ok(o) => panic!("{what}: the wrong secret joined (peer {:?})", o.peer),
        Err(e) => e,
    };
    assert_eq!(
        err.reject_code,
        Some(RejectCode::UnknownKey),
        "{what}: the refused connect's error: {err}"
    );
    let rejection = err
        .rejection
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: the refusal did not come from the peer: {err}"));
    assert_eq!(rejection.code, RejectCode::UnknownKey, "{what}");

    let joined = initiate(
        good_kind,
        config("node-a", Some(&ca), Some(good.clone())),
        Script {
            send: to_acceptor.clone(),
            expect: to_initiator.len(),
        },
        &target,
    )
    .unwrap_or_else(|e| panic!("{what}: the good initiator after the refusal: {e}"));
    assert_eq!(joined.peer.node_id, "node-b", "{what}");
    assert_eq!(joined.peer.key_id, Some(good.key_id()), "{what}");
    assert_eq!(
        joined.peer.tls.as_ref().map(|t| t.version),
        Some("TLSv1_3"),
        "{what}"
    );
    assert!(
        joined.received == to_initiator,
        "{what}: frames to the initiator"
    );

    let outcomes = server
        .wait()
        .unwrap_or_else(|e| panic!("{what}: the server: {e}"));
    let failures = server.failures();
    assert_eq!(outcomes.len(), 1, "{what}");
    assert_eq!(outcomes[0].peer.node_id, "node-a", "{what}");
    assert_eq!(outcomes[0].peer.key_id, Some(good.key_id()), "{what}");
    assert!(
        outcomes[0].received == to_acceptor,
        "{what}: frames to the acceptor"
    );
    // The listener's failure hook saw exactly the refusal, with the code it sent.
    assert_eq!(failures.len(), 1, "{what}: {failures:?}");
    assert_eq!(
        failures[0].reject_code,
        Some(RejectCode::UnknownKey),
        "{what}: {failures:?}"
    );
    assert!(failures[0].peer_addr.ip().is_loopback(), "{what}");
}

#[test]
fn tokio_listener_refuses_a_wrong_secret_and_keeps_serving() {
    refused_then_served(Kind::Tokio);
}

#[test]
fn async_std_listener_refuses_a_wrong_secret_and_keeps_serving() {
    refused_then_served(Kind::AsyncStd);
}

#[test]
fn smol_listener_refuses_a_wrong_secret_and_keeps_serving() {
    refused_then_served(Kind::Smol);
}

#[test]
fn blocking_listener_refuses_a_wrong_secret_and_keeps_serving() {
    refused_then_served(Kind::Blocking);
}

/// Frames of `len` bytes numbered in their first 8 bytes (the rest is the index's low
/// byte): cheap to make and to compare in bulk.
fn numbered(count: usize, len: usize, tag: u8) -> Vec<Bytes> {
    (0..count)
        .map(|i| {
            let mut f = vec![(i as u8) ^ tag; len];
            f[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Bytes::from(f)
        })
        .collect()
}

/// Frames per direction in the bulk tests: 16 MiB of 64 KiB frames, several times what
/// the sockets of a loopback link buffer (about 4 MiB sent + the receiver's window).
const BULK_FRAMES: usize = 256;

/// Both sides send far more than the sockets buffer, at the same time, while both read:
/// neither side may stop reading because it is waiting to write.
fn bulk_both_ways(acceptor: Kind, initiator: Kind, tls: Option<&TestCa>) {
    let started = Instant::now();
    let what = format!("bulk both ways, {acceptor:?} acceptor ← {initiator:?} initiator");
    let to_a = numbered(BULK_FRAMES, 64 * 1024, 1);
    let to_i = numbered(BULK_FRAMES, 64 * 1024, 2);
    let (a, i) = link_within(
        (
            acceptor,
            config("node-b", tls, None),
            Script {
                send: to_i.clone(),
                expect: to_a.len(),
            },
        ),
        (
            initiator,
            config("node-a", tls, None),
            Script {
                send: to_a.clone(),
                expect: to_i.len(),
            },
        ),
        "127.0.0.1",
        PAIR_LIMIT,
    );
    let a = a.unwrap_or_else(|e| panic!("{what}: acceptor: {e}"));
    let i = i.unwrap_or_else(|e| panic!("{what}: initiator: {e}"));
    assert!(
        a.received == to_a,
        "{what}: {}",
        first_difference(&a.received, &to_a)
    );
    assert!(
        i.received == to_i,
        "{what}: {}",
        first_difference(&i.received, &to_i)
    );
    eprintln!("{what}: {:?}", started.elapsed());
}

#[test]
fn bulk_both_ways_every_pair() {
    for a in KINDS {
        for i in KINDS {
            bulk_both_ways(a, i, None);
        }
    }
}

/// How long connecting, joining and closing an idle link may take. The drivers give a
/// peer that does not shut its socket `LINGER` (2 s) before they stop waiting for its
/// EOF; a graceful close between two palisade nodes must not need that fallback.
const PROMPT: Duration = Duration::from_secs(1);

/// The initiator joins and closes at once: its `close()` returns when both sockets are
/// shut, which between two palisade nodes takes a round trip, not `LINGER`.
fn close_is_prompt(acceptor: Kind, initiator: Kind) -> Duration {
    let what = format!("{acceptor:?} acceptor ← {initiator:?} initiator");
    let idle = Script {
        send: Vec::new(),
        expect: 0,
    };
    let server = serve(acceptor, config("node-b", None, None), vec![idle.clone()])
        .unwrap_or_else(|e| panic!("{what}: serve: {e}"));
    let started = Instant::now();
    initiate(
        initiator,
        config("node-a", None, None),
        idle,
        &server.target("127.0.0.1"),
    )
    .unwrap_or_else(|e| panic!("{what}: initiator: {e}"));
    let took = started.elapsed();
    server
        .wait()
        .unwrap_or_else(|e| panic!("{what}: acceptor: {e}"));
    assert!(
        took < PROMPT,
        "{what}: connect + join + close took {took:?} (the drivers' linger fallback is 2 s)"
    );
    took
}

#[test]
fn close_is_prompt_for_every_pair() {
    for a in KINDS {
        for i in KINDS {
            close_is_prompt(a, i);
        }
    }
}
