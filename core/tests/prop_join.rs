//! Property tests for the join handshake (docs/PROTOCOL.md §5, §6): tampering in transit,
//! replays, the message codecs, and the acceptor's checks for arbitrary configurations.
//!
//! Run more cases with `PROPTEST_CASES=10000 cargo test -p palisade-core --test prop_join`.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use palisade_core::frame::FrameKind;
use palisade_core::join::{Auth, JoinHello, JoinWelcome, NONCE_LEN, PROOF_LEN};
use palisade_core::preface::PREFACE;
use palisade_core::{
    CloseCause, CloseCode, CloseReason, Config, ConnectionError, JoinError, KeyId, RejectCode,
    Rejection, Side,
};
use palisade_testkit::PairBuilder;
use proptest::prelude::*;
use proptest::sample::Index;

use common::*;

const DEFAULT_CASES: u32 = 64;

fn config() -> ProptestConfig {
    proptest_config(regressions!("prop_join"), DEFAULT_CASES)
}

/// Who refused whom, with which code, as the close cause reports it.
fn refused_peer(cause: Option<&CloseCause>) -> Option<RejectCode> {
    match cause {
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedPeer(r)))) => Some(r.code),
        _ => None,
    }
}

fn refused_by_peer(cause: Option<&CloseCause>) -> Option<RejectCode> {
    match cause {
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(r)))) => Some(r.code),
        _ => None,
    }
}

/// Splits `bytes` at the given points and delivers the pieces one by one.
fn deliver_split(node: &mut Node, bytes: &[u8], cuts: &[Index]) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    for w in points.windows(2) {
        node.input(&bytes[w[0]..w[1]]);
    }
}

/// Initiator and acceptor, same cluster, both holding `secret`.
fn secured_pair(secret_byte: u8, seed: u64, latency_ms: u64) -> palisade_testkit::Pair {
    PairBuilder::with_seed(
        Config::new("prod", "a").with_secret(secret(secret_byte)),
        Config::new("prod", "b").with_secret(secret(secret_byte)),
        seed,
    )
    .latency(Duration::from_millis(latency_ms))
    .build()
}

/// The side's whole outgoing stream as the Pair recorded it.
fn pair_wire(pair: &palisade_testkit::Pair, side: Side) -> WireLog {
    parse_wire(&pair.sent(side).concat())
}

/// After a tampered join: the side that refused sent a well-formed stream ending in one
/// REJECT or CLOSE, and its peer closed because of that message (not because of EOF).
fn assert_refusal_reached_the_peer(pair: &palisade_testkit::Pair, refuser: Side) {
    let wire = pair_wire(pair, refuser);
    wire.assert_well_formed("refusing side");
    let last = wire.terminal_frames();
    assert_eq!(last.len(), 1, "the refusing side sent one REJECT or CLOSE");
    let peer_cause = pair.close_cause(other(refuser));
    match last[0].0 {
        FrameKind::Reject => {
            let sent = wire.rejection().expect("REJECT parses");
            assert!(
                matches!(peer_cause, Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(r)))) if *r == sent),
                "peer closed with {peer_cause:?}, the REJECT said {sent:?}"
            );
        }
        _ => {
            let sent = wire.close_reason().expect("CLOSE parses");
            assert!(
                matches!(peer_cause, Some(CloseCause::Peer(r)) if *r == sent),
                "peer closed with {peer_cause:?}, the CLOSE said {sent:?}"
            );
        }
    }
}

// ----- strategies for messages -----

fn any_auth() -> impl Strategy<Value = Option<Auth>> {
    prop::option::of(
        (any::<[u8; 8]>(), any::<[u8; PROOF_LEN]>()).prop_map(|(k, proof)| Auth {
            key_id: KeyId(k),
            proof,
        }),
    )
}

fn any_hello() -> impl Strategy<Value = JoinHello> {
    (
        any::<u16>(),
        name(),
        name(),
        any::<u64>(),
        any::<[u8; NONCE_LEN]>(),
        any::<u32>(),
        any_auth(),
    )
        .prop_map(
            |(version, cluster_name, node_id, timestamp_ms, nonce, max_frame, auth)| JoinHello {
                version,
                cluster_name,
                node_id,
                timestamp_ms,
                nonce,
                max_frame,
                auth,
            },
        )
}

fn any_welcome() -> impl Strategy<Value = JoinWelcome> {
    (
        any::<u16>(),
        name(),
        any::<u64>(),
        any::<[u8; NONCE_LEN]>(),
        any::<u32>(),
        any_auth(),
    )
        .prop_map(
            |(version, node_id, timestamp_ms, nonce, max_frame, auth)| JoinWelcome {
                version,
                node_id,
                timestamp_ms,
                nonce,
                max_frame,
                auth,
            },
        )
}

fn any_text(max_chars: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        prop::collection::vec(any::<char>(), 0..=max_chars).prop_map(|c| c.into_iter().collect()),
    ]
}

/// An edit to a valid encoding: flip a byte, cut the tail, or append bytes.
#[derive(Debug, Clone)]
enum Edit {
    Xor(Index, u8),
    Truncate(Index),
    Append(Vec<u8>),
    Set(Index, u8),
}

fn any_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Edit::Xor(i, x)),
        any::<Index>().prop_map(Edit::Truncate),
        prop::collection::vec(any::<u8>(), 1..=8).prop_map(Edit::Append),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Edit::Set(i, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Xor(i, x) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Edit::Set(i, v) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] = *v;
        }
        Edit::Truncate(i) => {
            let n = i.index(bytes.len() + 1);
            bytes.truncate(n);
        }
        Edit::Append(tail) => bytes.extend_from_slice(tail),
        _ => {}
    }
}

/// The secrets each side holds in a join scenario.
#[derive(Debug, Clone, Copy)]
enum Secrets {
    None,
    Same(u8),
    Different(u8, u8),
    InitiatorOnly(u8),
    AcceptorOnly(u8),
}

fn any_secrets() -> impl Strategy<Value = Secrets> {
    prop_oneof![
        2 => Just(Secrets::None),
        3 => any::<u8>().prop_map(Secrets::Same),
        1 => (any::<u8>(), any::<u8>())
            .prop_filter("different", |(a, b)| a != b)
            .prop_map(|(a, b)| Secrets::Different(a, b)),
        1 => any::<u8>().prop_map(Secrets::InitiatorOnly),
        1 => any::<u8>().prop_map(Secrets::AcceptorOnly),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// (a) With a shared secret, changing any one byte of the initiator's first flight
    /// (PREFACE ‖ HELLO) in transit, delivered in arbitrary pieces, means neither side
    /// ever joins. Both sides end closed, the acceptor's answer is one REJECT or CLOSE
    /// (nothing after it) and the initiator closes because of that answer — or, when the
    /// change makes the acceptor wait for bytes that never come, both time out.
    #[test]
    fn a_changed_byte_in_the_hello_flight_never_joins(
        secret_byte in any::<u8>(),
        seed in any::<u64>(),
        latency_ms in 0..=200u64,
        at in any::<Index>(),
        xor in 1..=255u8,
        cuts in prop::collection::vec(any::<Index>(), 0..=3),
    ) {
        let mut pair = secured_pair(secret_byte, seed, latency_ms);
        let mut flight = pair.transmit(Side::Initiator).concat();
        let wire = parse_wire(&flight);
        wire.assert_well_formed("initiator");
        prop_assert_eq!(wire.frames.len(), 1);
        prop_assert_eq!(wire.frames[0].0, FrameKind::Hello);
        let i = at.index(flight.len());
        flight[i] ^= xor;
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(flight.len() + 1)).collect();
        points.extend([0, flight.len()]);
        points.sort_unstable();
        for w in points.windows(2) {
            pair.deliver(Side::Acceptor, &flight[w[0]..w[1]]);
        }
        pair.run();
        prop_assert!(!pair.joined(Side::Acceptor), "acceptor joined a HELLO changed at byte {}", i);
        prop_assert!(!pair.joined(Side::Initiator), "initiator joined after its HELLO was changed at byte {}", i);
        for side in SIDES {
            check_events("side", pair.events(side));
            prop_assert!(pair.close_cause(side).is_some(), "{:?} never closed", side);
            pair_wire(&pair, side).assert_well_formed("side");
        }
        let timed_out = matches!(
            pair.close_cause(Side::Acceptor),
            Some(CloseCause::Error(ConnectionError::HandshakeTimeout { .. }))
        );
        if !timed_out {
            assert_refusal_reached_the_peer(&pair, Side::Acceptor);
        }
    }

    /// (a) With a shared secret, changing any one byte of the acceptor's first flight
    /// (PREFACE ‖ WELCOME, possibly followed by DATA the acceptor sent right after it
    /// joined) means the initiator never joins and never delivers a frame. The acceptor
    /// joined at the HELLO (that is the protocol: 0.5 round trips), so what the code
    /// guarantees for it is: it is closed by the initiator's REJECT or CLOSE (the
    /// initiator always answers), never by an EOF it would have to wait for.
    #[test]
    fn a_changed_byte_in_the_welcome_flight_never_joins_the_initiator(
        secret_byte in any::<u8>(),
        seed in any::<u64>(),
        latency_ms in 0..=200u64,
        at in any::<Index>(),
        xor in 1..=255u8,
        early_data in prop::collection::vec(0..=64usize, 0..=3),
        cuts in prop::collection::vec(any::<Index>(), 0..=3),
    ) {
        let mut pair = secured_pair(secret_byte, seed, latency_ms);
        let hello = pair.transmit(Side::Initiator).concat();
        pair.deliver(Side::Acceptor, &hello);
        prop_assert!(pair.joined(Side::Acceptor));
        let welcome_len = pair.conn(Side::Acceptor).send_buffered();
        for (n, len) in early_data.iter().enumerate() {
            pair.send(Side::Acceptor, payload(*len, n as u64)).expect("joined acceptor sends");
        }
        let mut flight = pair.transmit(Side::Acceptor).concat();
        let wire = parse_wire(&flight[..welcome_len]);
        wire.assert_well_formed("acceptor");
        prop_assert_eq!(wire.frames.len(), 1);
        prop_assert_eq!(wire.frames[0].0, FrameKind::Welcome);
        let i = at.index(welcome_len);
        flight[i] ^= xor;
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(flight.len() + 1)).collect();
        points.extend([0, flight.len()]);
        points.sort_unstable();
        for w in points.windows(2) {
            pair.deliver(Side::Initiator, &flight[w[0]..w[1]]);
        }
        pair.run();
        let init = check_events("initiator", pair.events(Side::Initiator));
        prop_assert!(init.joined.is_none(), "initiator joined a WELCOME changed at byte {}", i);
        prop_assert!(init.frames.is_empty());
        prop_assert!(init.closed.is_some());
        let acc = check_events("acceptor", pair.events(Side::Acceptor));
        prop_assert!(acc.frames.is_empty());
        prop_assert!(acc.closed.is_some(), "the acceptor stays joined to a peer that refused it");
        assert_refusal_reached_the_peer(&pair, Side::Initiator);
    }

    /// (b) A HELLO recorded from a successful join and sent again (in arbitrary pieces) to
    /// a new connection of the same acceptor Endpoint is refused with REJECT code 6
    /// (replay) for as long as the HELLO's timestamp is within the tolerance, and with
    /// code 5 (clock skew) after that — never joined, however many other joins happened
    /// in between.
    #[test]
    fn a_replayed_hello_is_refused_as_a_replay(
        secret_byte in any::<u8>(),
        seed in any::<u64>(),
        delay_ms in prop_oneof![
            0..=TOLERANCE_MS,
            Just(TOLERANCE_MS),
            Just(TOLERANCE_MS + 1),
            0..=2 * TOLERANCE_MS,
        ],
        joins_between in 0..=3usize,
        replays in 1..=3usize,
        reconfigured in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..=3),
    ) {
        let now = Instant::now();
        let initiator = Node::endpoint(Config::new("prod", "a").with_secret(secret(secret_byte)), seed);
        let acceptor = Node::endpoint(
            Config::new("prod", "b").with_secret(secret(secret_byte)),
            seed.wrapping_add(1),
        );
        // The recorded join.
        let mut i = Node::connect(&initiator, now, EPOCH_MS);
        let mut a = Node::accept(&acceptor, now, EPOCH_MS);
        let recorded = i.flush();
        a.input(&recorded);
        i.input(&a.flush());
        prop_assert!(i.conn.is_joined() && a.conn.is_joined());
        // Other joins through the same acceptor endpoint.
        for _ in 0..joins_between {
            let mut i2 = Node::connect(&initiator, now, EPOCH_MS);
            let mut a2 = Node::accept(&acceptor, now, EPOCH_MS);
            a2.input(&i2.flush());
            i2.input(&a2.flush());
            prop_assert!(i2.conn.is_joined() && a2.conn.is_joined());
        }
        // The replays, `delay_ms` later by the acceptor's wall clock.
        let expected = if delay_ms <= TOLERANCE_MS { RejectCode::Replay } else { RejectCode::ClockSkew };
        // `Endpoint::reconfigure` (e.g. a rotated keyring) keeps the replay cache.
        let target = if reconfigured {
            let keyring = palisade_core::Keyring::new(secret(secret_byte.wrapping_add(1)))
                .with_accepted(secret(secret_byte))
                .expect("distinct secrets");
            acceptor
                .reconfigure(Config::new("prod", "b").with_keyring(keyring))
                .expect("valid config")
        } else {
            acceptor.clone()
        };
        for _ in 0..replays {
            let mut victim = Node::accept(&target, now, EPOCH_MS + delay_ms);
            deliver_split(&mut victim, &recorded, &cuts);
            victim.flush();
            let log = victim.log("replayed acceptor");
            prop_assert!(log.joined.is_none(), "a replayed HELLO joined after {} ms", delay_ms);
            prop_assert_eq!(refused_peer(log.closed.as_ref()), Some(expected));
            let wire = victim.wire();
            wire.assert_well_formed("replayed acceptor");
            prop_assert_eq!(wire.rejection().map(|r| r.code), Some(expected));
        }
    }

    /// (b) The replay cache is bounded and fails closed: with capacity `c`, `c` verified
    /// joins inside the tolerance window succeed, the next is refused with REJECT 11
    /// (busy) — never admitted unremembered — and once those HELLOs' window has passed,
    /// joins succeed again.
    #[test]
    fn a_full_replay_cache_refuses_with_busy_until_entries_expire(
        capacity in 1..=8usize,
        secret_byte in any::<u8>(),
        seed in any::<u64>(),
        later_ms in (TOLERANCE_MS + 1)..=(3 * TOLERANCE_MS),
    ) {
        let now = Instant::now();
        let initiator = Node::endpoint(Config::new("prod", "a").with_secret(secret(secret_byte)), seed);
        let mut acc_config = Config::new("prod", "b").with_secret(secret(secret_byte));
        acc_config.replay_cache_capacity = capacity;
        let acceptor = Node::endpoint(acc_config, seed.wrapping_add(1));
        let join_at = |wall_ms: u64| {
            let mut i = Node::connect(&initiator, now, wall_ms);
            let mut a = Node::accept(&acceptor, now, wall_ms);
            a.input(&i.flush());
            i.input(&a.flush());
            (i, a)
        };
        for n in 0..capacity {
            let (i, a) = join_at(EPOCH_MS);
            prop_assert!(i.conn.is_joined() && a.conn.is_joined(), "join {} of {}", n + 1, capacity);
        }
        let (i, a) = join_at(EPOCH_MS);
        prop_assert!(!i.conn.is_joined() && !a.conn.is_joined());
        prop_assert_eq!(refused_peer(a.conn.close_cause()), Some(RejectCode::Busy));
        prop_assert_eq!(refused_by_peer(i.conn.close_cause()), Some(RejectCode::Busy));
        let (i, a) = join_at(EPOCH_MS + later_ms);
        prop_assert!(i.conn.is_joined() && a.conn.is_joined(), "no join after the window passed");
    }

    /// (d) Key rotation (§5.4): whatever keyrings the two nodes hold, the join succeeds
    /// exactly when the acceptor holds the initiator's primary secret, and both sides
    /// report that secret's key id; otherwise the acceptor refuses with REJECT 4.
    #[test]
    fn rotation_joins_iff_the_acceptor_holds_the_initiators_primary(
        init_primary in 0..4u8,
        init_accepted in prop::collection::vec(0..4u8, 0..=3),
        acc_primary in 0..4u8,
        acc_accepted in prop::collection::vec(0..4u8, 0..=3),
        seed in any::<u64>(),
    ) {
        let keyring = |primary: u8, accepted: &[u8]| {
            let mut ring = palisade_core::Keyring::new(secret(primary));
            let mut held = vec![primary];
            for &b in accepted {
                if !held.contains(&b) {
                    ring = ring.with_accepted(secret(b)).expect("not a duplicate");
                    held.push(b);
                }
            }
            (ring, held)
        };
        let (ring_i, _) = keyring(init_primary, &init_accepted);
        let (ring_a, held_a) = keyring(acc_primary, &acc_accepted);
        let mut pair = PairBuilder::with_seed(
            Config::new("prod", "a").with_keyring(ring_i),
            Config::new("prod", "b").with_keyring(ring_a),
            seed,
        )
        .build();
        pair.run();
        let acc = check_events("acceptor", pair.events(Side::Acceptor));
        let init = check_events("initiator", pair.events(Side::Initiator));
        if held_a.contains(&init_primary) {
            let key = Some(secret(init_primary).key_id());
            prop_assert_eq!(acc.joined.map(|p| p.key_id), Some(key));
            prop_assert_eq!(init.joined.map(|p| p.key_id), Some(key));
        } else {
            prop_assert!(acc.joined.is_none() && init.joined.is_none());
            prop_assert_eq!(refused_peer(acc.closed.as_ref()), Some(RejectCode::UnknownKey));
            prop_assert_eq!(refused_by_peer(init.closed.as_ref()), Some(RejectCode::UnknownKey));
        }
    }

    /// The handshake deadline (§4): with one-way latency `L` and `handshake_timeout` `T`
    /// on both sides, the initiator joins iff the WELCOME is back by the deadline
    /// (2L ≤ T; the testkit delivers bytes before it fires timers due at the same
    /// instant), else it closes with CLOSE code 4 at T. The acceptor joins iff the HELLO
    /// arrives by T; if it joined and the initiator then timed out, the acceptor is closed
    /// by that CLOSE code 4.
    #[test]
    fn the_handshake_deadline_decides_the_join(
        (latency_ms, timeout_ms) in prop_oneof![
            (0..=20_000u64, 1..=20_000u64),
            (1..=10_000u64, -1..=1i64).prop_map(|(l, d)| (l, (2 * l).saturating_add_signed(d).max(1))),
            (1..=10_000u64, -1..=1i64).prop_map(|(l, d)| (l, l.saturating_add_signed(d).max(1))),
        ],
        with_secret in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let make = |node: &str| {
            let mut c = Config::new("prod", node);
            c.handshake_timeout = Duration::from_millis(timeout_ms);
            // Only the join deadline here (the first-bytes one is tested on its own).
            c.first_bytes_timeout = c.handshake_timeout;
            if with_secret { c.with_secret(secret(3)) } else { c }
        };
        let mut pair = PairBuilder::with_seed(make("a"), make("b"), seed)
            .latency(Duration::from_millis(latency_ms))
            .build();
        pair.run();
        let timeout = |cause: Option<&CloseCause>| matches!(
            cause,
            Some(CloseCause::Error(ConnectionError::HandshakeTimeout { after }))
                if *after == Duration::from_millis(timeout_ms)
        );
        let init = check_events("initiator", pair.events(Side::Initiator));
        let acc = check_events("acceptor", pair.events(Side::Acceptor));
        if 2 * latency_ms <= timeout_ms {
            prop_assert!(init.joined.is_some() && acc.joined.is_some());
            prop_assert!(init.closed.is_none() && acc.closed.is_none());
            prop_assert_eq!(pair.conn(Side::Initiator).poll_timeout(), None);
        } else {
            prop_assert!(init.joined.is_none());
            prop_assert!(timeout(init.closed.as_ref()), "initiator closed with {:?}", init.closed);
            let sent = pair_wire(&pair, Side::Initiator);
            sent.assert_well_formed("initiator");
            prop_assert_eq!(sent.close_reason().map(|r| r.code), Some(CloseCode::HandshakeTimeout));
            if latency_ms <= timeout_ms {
                prop_assert!(acc.joined.is_some());
                prop_assert!(
                    matches!(&acc.closed, Some(CloseCause::Peer(r)) if r.code == CloseCode::HandshakeTimeout),
                    "acceptor closed with {:?}", acc.closed
                );
            } else {
                prop_assert!(acc.joined.is_none());
                prop_assert!(timeout(acc.closed.as_ref()), "acceptor closed with {:?}", acc.closed);
            }
        }
    }

    /// (b) Documented limit, not a guarantee: without a shared secret there is no replay
    /// protection (PROTOCOL.md §5.5 step 7 applies "with a secret"), so the same HELLO
    /// joins again.
    #[test]
    fn without_a_secret_a_resent_hello_joins_again(seed in any::<u64>(), again in 1..=3usize) {
        let now = Instant::now();
        let initiator = Node::endpoint(Config::new("prod", "a"), seed);
        let acceptor = Node::endpoint(Config::new("prod", "b"), seed.wrapping_add(1));
        let recorded = Node::connect(&initiator, now, EPOCH_MS).flush();
        for _ in 0..=again {
            let mut a = Node::accept(&acceptor, now, EPOCH_MS);
            a.input(&recorded);
            prop_assert!(a.conn.is_joined());
        }
    }

    /// (c) HELLO and WELCOME round-trip through their codecs for arbitrary field values,
    /// and the signed part is the encoding minus the trailing proof.
    #[test]
    fn join_messages_round_trip(hello in any_hello(), welcome in any_welcome()) {
        let bytes = hello.encode();
        prop_assert_eq!(JoinHello::decode(&bytes), Ok(hello.clone()));
        let proof_len = if hello.auth.is_some() { PROOF_LEN } else { 0 };
        prop_assert_eq!(&bytes[..bytes.len() - proof_len], &hello.signed_part()[..]);
        let bytes = welcome.encode();
        prop_assert_eq!(JoinWelcome::decode(&bytes), Ok(welcome.clone()));
        let proof_len = if welcome.auth.is_some() { PROOF_LEN } else { 0 };
        prop_assert_eq!(&bytes[..bytes.len() - proof_len], &welcome.signed_part()[..]);
    }

    /// (c) REJECT and CLOSE bodies round-trip; messages longer than 1024 bytes are cut on
    /// a character boundary to a prefix of at most 1024 bytes; codes round-trip through
    /// their wire values.
    #[test]
    fn reject_and_close_bodies_round_trip(
        code in any::<u16>(),
        message in any_text(600),
    ) {
        let r = Rejection::new(RejectCode::from_u16(code), message.clone());
        prop_assert!(r.message.len() <= 1024 && message.starts_with(&r.message));
        if message.len() <= 1024 {
            prop_assert_eq!(&r.message, &message);
        }
        prop_assert_eq!(r.code.to_u16(), code);
        prop_assert_eq!(Rejection::decode(&r.encode()), Ok(r.clone()));
        let c = CloseReason::new(CloseCode::from_u16(code), message.clone());
        prop_assert!(c.message.len() <= 1024 && message.starts_with(&c.message));
        prop_assert_eq!(c.code.to_u16(), code);
        prop_assert_eq!(CloseReason::decode(&c.encode()), Ok(c));
    }

    /// (c) Decoding arbitrary bytes, or valid encodings with arbitrary edits, never panics;
    /// whatever decodes re-encodes to exactly the input (the codecs are canonical, which
    /// the proofs rely on).
    #[test]
    fn decoding_arbitrary_bytes_never_panics_and_is_canonical(
        raw in prop::collection::vec(any::<u8>(), 0..=300),
        hello in any_hello(),
        welcome in any_welcome(),
        reject_code in any::<u16>(),
        message in any_text(40),
        edits in prop::collection::vec(any_edit(), 1..=3),
    ) {
        let reject = Rejection::new(RejectCode::from_u16(reject_code), message.clone()).encode().to_vec();
        let close = CloseReason::new(CloseCode::from_u16(reject_code), message).encode().to_vec();
        let mut inputs = vec![raw];
        for valid in [hello.encode().to_vec(), welcome.encode().to_vec(), reject, close] {
            let mut edited = valid.clone();
            for e in &edits {
                apply(&mut edited, e);
            }
            inputs.push(valid);
            inputs.push(edited);
        }
        for bytes in &inputs {
            if let Ok(h) = JoinHello::decode(bytes) {
                prop_assert_eq!(&h.encode()[..], &bytes[..]);
            }
            if let Ok(w) = JoinWelcome::decode(bytes) {
                prop_assert_eq!(&w.encode()[..], &bytes[..]);
            }
            if let Ok(r) = Rejection::decode(bytes) {
                prop_assert_eq!(&r.encode()[..], &bytes[..]);
            }
            if let Ok(c) = CloseReason::decode(bytes) {
                prop_assert_eq!(&c.encode()[..], &bytes[..]);
            }
        }
    }

    /// (d) For arbitrary cluster names, node ids, secrets, max_frames, latencies and clock
    /// offsets, the join outcome is the one §5.5 / §5.6 prescribe, with the checks in
    /// their order: cluster (7), secrets (1 / 2), key id (4), own node id (12), clock
    /// skew (5, at most 30 s ahead for a plaintext join with a secret); otherwise
    /// both sides join and learn exactly the peer's node id, key id, max_frame and skew.
    /// A refusal reaches the other side as the same REJECT.
    #[test]
    fn join_outcome_follows_the_spec_checks(
        cluster_i in name(),
        cluster_a in prop::option::of(name()),
        node_i in name(),
        node_a in name(),
        secrets in any_secrets(),
        max_frame_i in prop_oneof![Just(8 * 1024 * 1024usize), 1..=(u32::MAX as usize)],
        max_frame_a in prop_oneof![Just(8 * 1024 * 1024usize), 1..=(u32::MAX as usize)],
        latency_ms in 0..=1000u64,
        offset_ms in prop_oneof![
            Just(0i64),
            -(2 * TOLERANCE_MS as i64)..=(2 * TOLERANCE_MS as i64),
            (TOLERANCE_MS as i64 - 1000)..=(TOLERANCE_MS as i64 + 1000),
        ],
        seed in any::<u64>(),
    ) {
        let cluster_a = cluster_a.unwrap_or_else(|| cluster_i.clone());
        let mut ci = Config::new(cluster_i.clone(), node_i.clone());
        let mut ca = Config::new(cluster_a.clone(), node_a.clone());
        ci.max_frame = max_frame_i;
        ca.max_frame = max_frame_a;
        let (si, sa) = match secrets {
            Secrets::None => (None, None),
            Secrets::Same(s) => (Some(s), Some(s)),
            Secrets::Different(x, y) => (Some(x), Some(y)),
            Secrets::InitiatorOnly(s) => (Some(s), None),
            Secrets::AcceptorOnly(s) => (None, Some(s)),
        };
        if let Some(s) = si {
            ci = ci.with_secret(secret(s));
        }
        if let Some(s) = sa {
            ca = ca.with_secret(secret(s));
        }
        let mut pair = PairBuilder::with_seed(ci, ca, seed)
            .latency(Duration::from_millis(latency_ms))
            .initiator_clock_offset_ms(offset_ms)
            .build();
        pair.run();

        // What the acceptor measures: the HELLO was stamped at the initiator's start and
        // arrives one latency later.
        let skew_at_acceptor = offset_ms - latency_ms as i64;
        let expected = if cluster_i != cluster_a {
            Some(RejectCode::ClusterMismatch)
        } else {
            match (si, sa) {
                (None, Some(_)) => Some(RejectCode::SecretRequired),
                (Some(_), None) => Some(RejectCode::NoSecret),
                (Some(x), Some(y)) if x != y => Some(RejectCode::UnknownKey),
                _ if node_i == node_a => Some(RejectCode::Reflected),
                // A plaintext HELLO with a secret may be at most 30 s ahead (the default
                // clock_ahead_tolerance): its nonce is remembered until timestamp + tolerance.
                (Some(_), _) if skew_at_acceptor > AHEAD_MS as i64 => Some(RejectCode::ClockSkew),
                _ if skew_at_acceptor.unsigned_abs() > TOLERANCE_MS => Some(RejectCode::ClockSkew),
                _ => None,
            }
        };
        let acc = check_events("acceptor", pair.events(Side::Acceptor));
        let init = check_events("initiator", pair.events(Side::Initiator));
        match expected {
            Some(code) => {
                prop_assert!(acc.joined.is_none() && init.joined.is_none());
                prop_assert_eq!(refused_peer(acc.closed.as_ref()), Some(code));
                prop_assert_eq!(refused_by_peer(init.closed.as_ref()), Some(code));
                let wire = pair_wire(&pair, Side::Acceptor);
                wire.assert_well_formed("acceptor");
                prop_assert_eq!(wire.rejection().map(|r| r.code), Some(code));
            }
            None => {
                let key_id = sa.map(|s| secret(s).key_id());
                let peer_of_acceptor = acc.joined.expect("acceptor joined");
                prop_assert_eq!(&peer_of_acceptor.node_id, &node_i);
                prop_assert_eq!(peer_of_acceptor.key_id, key_id);
                prop_assert_eq!(peer_of_acceptor.max_frame, max_frame_i);
                prop_assert_eq!(peer_of_acceptor.clock_skew_ms, skew_at_acceptor);
                let peer_of_initiator = init.joined.expect("initiator joined");
                prop_assert_eq!(&peer_of_initiator.node_id, &node_a);
                prop_assert_eq!(peer_of_initiator.key_id, key_id);
                prop_assert_eq!(peer_of_initiator.max_frame, max_frame_a);
                // The WELCOME is stamped when the HELLO arrived and read one latency later.
                prop_assert_eq!(peer_of_initiator.clock_skew_ms, -offset_ms - latency_ms as i64);
                prop_assert!(acc.closed.is_none() && init.closed.is_none());
                // PROTOCOL.md §4: the acceptor joins after 0.5 round trips, the initiator
                // after 1.
                if latency_ms > 0 {
                    let rtt = |side| pair.round_trips_to_joined(side).unwrap_or(f64::NAN);
                    prop_assert!((rtt(Side::Acceptor) - 0.5).abs() < 1e-9);
                    prop_assert!((rtt(Side::Initiator) - 1.0).abs() < 1e-9);
                }
            }
        }
    }

    /// (d) A HELLO whose version field is not 1 is refused with code 8 whatever else it
    /// says; a HELLO that does not parse is refused with code 10 (malformed).
    #[test]
    fn hello_version_and_shape_are_checked_first(
        version in any::<u16>().prop_filter("not 1", |v| *v != 1),
        cluster in name(),
        node in name(),
        junk in prop::collection::vec(any::<u8>(), 0..=80),
        seed in any::<u64>(),
    ) {
        let acceptor = Node::endpoint(Config::new("prod", "b"), seed);
        let now = Instant::now();
        let hello = JoinHello {
            version,
            cluster_name: cluster,
            node_id: node,
            timestamp_ms: EPOCH_MS,
            nonce: [7; NONCE_LEN],
            max_frame: 1024,
            auth: None,
        };
        for (body, expected) in [
            (hello.encode().to_vec(), RejectCode::UnsupportedVersion),
            (junk, RejectCode::Malformed),
        ] {
            if expected == RejectCode::Malformed && JoinHello::decode(&body).is_ok() {
                continue;
            }
            let mut a = Node::accept(&acceptor, now, EPOCH_MS);
            let mut input = BytesMut::from(&PREFACE[..]);
            input.put_slice(&frame_bytes(FrameKind::Hello, &body));
            a.input(&input);
            a.flush();
            let log = a.log("acceptor");
            prop_assert!(log.joined.is_none());
            let wire = a.wire();
            wire.assert_well_formed("acceptor");
            prop_assert_eq!(wire.rejection().map(|r| r.code), Some(expected));
        }
    }
}
