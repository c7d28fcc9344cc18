//! The points of docs/PROTOCOL.md a second implementation used to have to guess (issue 20,
//! item 6), each checked against this implementation: the "More frame authentication
//! vectors" of §9 (computed from the keys, and produced and accepted by real connections),
//! the pre-join exception of §5.7, the control-frame limit around it, DATA before the
//! join (§3, §4), the order of REJECT 9 and 12 (§5.5, §5.6), what `now` is in the clock
//! check (§5.5 step 7) and whose HELLOs count as "this node's" (§5.5 step 8).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use palisade_core::error::ConnectionError;
use palisade_core::frame::FrameKind;
use palisade_core::frame_auth::{FrameAuth, LinkKeys, Opened, TAG_LEN};
use palisade_core::join::{acceptor_proof, Auth, InitiatorHandshake, JoinHello, JoinWelcome};
use palisade_core::preface::PREFACE;
use palisade_core::{
    CloseCause, CloseCode, CloseReason, Config, Connection, Endpoint, Event, JoinError,
    RandomError, RandomSource, RejectCode, Rejection, SharedSecret, Side,
};

const SPEC: &str = include_str!("../../docs/PROTOCOL.md");
const MORE: &str = "### More frame authentication vectors (§5.7)";
const SECRET: &[u8] = b"palisade test vector secret 0001";
const HELLO_TS: u64 = 1_767_225_600_000;
const WELCOME_TS: u64 = 1_767_225_600_250;

/// `name = hex` lines of `text`.
fn vectors_in(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(" = ")?;
            let ok = !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The vectors of the "More frame authentication vectors" subsection, in order.
fn more_vectors() -> Vec<(String, String)> {
    let section = SPEC.split(MORE).nth(1).expect("the subsection exists");
    let section = section.split("\n### ").next().unwrap_or(section);
    vectors_in(section)
}

/// One vector of §9 (the main list or the subsection), as bytes.
fn spec(name: &str) -> Vec<u8> {
    let section = SPEC.split("## 9. Test vectors").nth(1).unwrap();
    let (_, value) = vectors_in(section)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md §9 lists `{name}`"));
    hex::decode(value).unwrap()
}

fn secret() -> SharedSecret {
    SharedSecret::new(SECRET.to_vec()).unwrap()
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn sealed(auth: &mut FrameAuth, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let tag = auth.seal(kind, payload);
    let mut out = frame(kind.to_byte(), &[payload, &tag[..]].concat());
    out.truncate(5 + payload.len() + TAG_LEN);
    out
}

/// Every value of the subsection, computed with the frame-authentication API from the
/// spec's own `hello_frame` and `welcome_frame` (checked by protocol_vectors.rs).
fn computed_more() -> Vec<(String, String)> {
    let keys = LinkKeys::derive(
        &secret(),
        &spec("hello_frame")[5..],
        &spec("welcome_frame")[5..],
    );
    let mut i = FrameAuth::new(&keys, Side::Initiator);
    let mut r = FrameAuth::new(&keys, Side::Acceptor);
    let _seq0 = sealed(&mut i, FrameKind::Data, b"hello, cluster");
    let i1 = sealed(&mut i, FrameKind::Data, b"two");
    let i2 = sealed(&mut i, FrameKind::Data, b"three");
    let bye = CloseReason::new(CloseCode::ShuttingDown, "bye").encode();
    let i3 = sealed(&mut i, FrameKind::Close, &bye);
    let _ = sealed(&mut r, FrameKind::Data, b"anything");
    let _ = sealed(&mut r, FrameKind::Data, b"at all");
    let r2 = sealed(&mut r, FrameKind::Data, b"");
    let reject = Rejection::new(RejectCode::AuthenticationFailed, "bad proof").encode();
    let close = CloseReason::new(CloseCode::HandshakeTimeout, "timeout").encode();
    [
        ("auth_data_i1", i1),
        ("auth_data_i2", i2),
        ("auth_close_i3", i3),
        ("auth_data_r2", r2),
        ("unauth_reject_i0", frame(0x03, &reject)),
        ("unauth_close_i0", frame(0x11, &close)),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), hex::encode(v)))
    .collect()
}

#[test]
fn the_more_frame_auth_vectors_match_this_implementation() {
    let computed = computed_more();
    if std::env::var_os("PALISADE_PRINT_VECTORS").is_some() {
        for (name, value) in &computed {
            println!("{name} = {value}");
        }
    }
    assert_eq!(
        more_vectors(),
        computed,
        "docs/PROTOCOL.md §9 \"More frame authentication vectors\" (names, order and values)"
    );
}

// ----- driving real connections -----

/// The same bytes every time: the nonce the spec's vectors use.
#[derive(Debug)]
struct Fixed([u8; 32]);

impl RandomSource for Fixed {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        for (d, s) in dest.iter_mut().zip(self.0.iter().cycle()) {
            *d = *s;
        }
        Ok(())
    }
}

fn nonce(from: u8) -> [u8; 32] {
    std::array::from_fn(|i| from + i as u8)
}

fn wall(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn endpoint(node_id: &str, nonce_from: u8) -> Endpoint {
    let config = Config::new("prod", node_id).with_secret(secret());
    Endpoint::with_random(config, Arc::new(Fixed(nonce(nonce_from)))).unwrap()
}

fn out(conn: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(bytes) = conn.poll_transmit() {
        all.extend_from_slice(&bytes);
    }
    all
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn input(conn: &mut Connection, bytes: &[u8], now: Instant) {
    assert_eq!(conn.handle_input(bytes, now), bytes.len());
}

fn with_preface(frames: &[&[u8]]) -> Vec<u8> {
    let mut all = PREFACE.to_vec();
    frames.iter().for_each(|f| all.extend_from_slice(f));
    all
}

/// The spec's acceptor (`node-b`, nonce `20..3f`, at the WELCOME's time), joined by the
/// spec's HELLO; its WELCOME is checked to be the spec's byte for byte.
fn joined_acceptor(t0: Instant) -> Connection {
    let mut acceptor = endpoint("node-b", 0x20)
        .accept(t0, wall(WELCOME_TS))
        .unwrap();
    input(&mut acceptor, &with_preface(&[&spec("hello_frame")]), t0);
    assert_eq!(
        hex::encode(out(&mut acceptor)),
        hex::encode(with_preface(&[&spec("welcome_frame")]))
    );
    assert!(matches!(events(&mut acceptor)[..], [Event::Joined(_)]));
    acceptor
}

/// The spec's initiator (`node-a`, nonce `00..1f`, at the HELLO's time), its HELLO checked
/// to be the spec's, waiting for the WELCOME.
fn waiting_initiator(endpoint: &Endpoint, expecting: Option<&str>, t0: Instant) -> Connection {
    let mut initiator = endpoint
        .connect_expecting("node-b", expecting, t0, wall(HELLO_TS))
        .unwrap();
    assert_eq!(
        hex::encode(out(&mut initiator)),
        hex::encode(with_preface(&[&spec("hello_frame")]))
    );
    initiator
}

fn closed(events: &[Event]) -> &CloseCause {
    match events.last() {
        Some(Event::Closed(cause)) => cause,
        other => panic!("expected the link closed, got {other:?}"),
    }
}

/// The single frame in `bytes`: (kind byte, body).
fn one_frame(bytes: &[u8]) -> (u8, Vec<u8>) {
    assert!(bytes.len() >= 5, "a frame: {}", hex::encode(bytes));
    let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 5 + len, "exactly one frame");
    (bytes[0], bytes[5..].to_vec())
}

/// The acceptor's side of the spec's link, as the initiator checks it.
fn initiator_auth() -> FrameAuth {
    let keys = LinkKeys::derive(
        &secret(),
        &spec("hello_frame")[5..],
        &spec("welcome_frame")[5..],
    );
    FrameAuth::new(&keys, Side::Initiator)
}

/// An authenticated CLOSE from the acceptor's first sent frame (seq 0): its code.
fn authenticated_close(bytes: &[u8]) -> CloseCode {
    let (kind, body) = one_frame(bytes);
    assert_eq!(kind, 0x11, "a CLOSE: {}", hex::encode(bytes));
    let opened = initiator_auth().open(FrameKind::Close, &body).unwrap();
    let Opened::Authenticated { len } = opened else {
        panic!("the CLOSE is authenticated, got {opened:?}");
    };
    CloseReason::decode(&body[..len]).unwrap().code
}

#[test]
fn both_sides_of_a_real_link_send_and_accept_the_vectors() {
    let t0 = Instant::now();
    let endpoint_i = endpoint("node-a", 0x00);
    let mut initiator = waiting_initiator(&endpoint_i, None, t0);
    let mut acceptor = joined_acceptor(t0);
    input(
        &mut initiator,
        &with_preface(&[&spec("welcome_frame")]),
        t0 + Duration::from_millis(1),
    );
    assert!(matches!(events(&mut initiator)[..], [Event::Joined(_)]));

    // The initiator's direction: DATA seq 0, 1, 2, then its CLOSE (seq 3).
    for payload in ["hello, cluster", "two", "three"] {
        initiator
            .send(Bytes::from_static(payload.as_bytes()))
            .unwrap();
    }
    initiator.close(CloseReason::new(CloseCode::ShuttingDown, "bye"));
    let sent = out(&mut initiator);
    let expected = [
        spec("auth_data_i"),
        spec("auth_data_i1"),
        spec("auth_data_i2"),
        spec("auth_close_i3"),
    ]
    .concat();
    assert_eq!(hex::encode(&sent), hex::encode(&expected));
    input(&mut acceptor, &sent, t0);
    let got = events(&mut acceptor);
    let frames: Vec<&[u8]> = got
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(&f[..]),
            _ => None,
        })
        .collect();
    assert_eq!(frames, [&b"hello, cluster"[..], b"two", b"three"]);
    assert_eq!(
        closed(&got),
        &CloseCause::Peer(CloseReason::new(CloseCode::ShuttingDown, "bye"))
    );
    assert!(out(&mut acceptor).is_empty(), "no answer to a CLOSE");

    // The acceptor's direction: its third frame (seq 2), empty.
    let mut initiator = waiting_initiator(&endpoint_i, None, t0);
    let mut acceptor = joined_acceptor(t0);
    input(&mut initiator, &with_preface(&[&spec("welcome_frame")]), t0);
    for payload in ["hello, cluster", "one", ""] {
        acceptor
            .send(Bytes::from_static(payload.as_bytes()))
            .unwrap();
    }
    let sent = out(&mut acceptor);
    assert_eq!(sent[..spec("auth_data_r").len()], spec("auth_data_r")[..]);
    assert_eq!(
        hex::encode(&sent[sent.len() - spec("auth_data_r2").len()..]),
        hex::encode(spec("auth_data_r2"))
    );
    input(&mut initiator, &sent, t0);
    let got = events(&mut initiator);
    assert!(
        matches!(&got[..], [Event::Joined(_), Event::Frame(_), Event::Frame(_), Event::Frame(empty)] if empty.is_empty())
    );
}

#[test]
fn an_untagged_reject_or_close_ends_the_link_only_before_the_first_authenticated_frame() {
    let t0 = Instant::now();
    // Before any authenticated frame from the initiator: taken as they say, nothing sent.
    let mut acceptor = joined_acceptor(t0);
    input(&mut acceptor, &spec("unauth_reject_i0"), t0);
    let refused = Rejection::new(RejectCode::AuthenticationFailed, "bad proof");
    assert_eq!(
        closed(&events(&mut acceptor)),
        &CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(refused)))
    );
    assert!(out(&mut acceptor).is_empty());

    let mut acceptor = joined_acceptor(t0);
    input(&mut acceptor, &spec("unauth_close_i0"), t0);
    assert_eq!(
        closed(&events(&mut acceptor)),
        &CloseCause::Peer(CloseReason::new(CloseCode::HandshakeTimeout, "timeout"))
    );
    assert!(out(&mut acceptor).is_empty());

    // After one: the same bytes fail authentication, answered with an authenticated CLOSE 2.
    for late in ["unauth_reject_i0", "unauth_close_i0"] {
        let mut acceptor = joined_acceptor(t0);
        input(
            &mut acceptor,
            &[spec("auth_data_i"), spec(late)].concat(),
            t0,
        );
        let got = events(&mut acceptor);
        assert!(matches!(got[0], Event::Frame(_)), "{got:?}");
        assert!(
            matches!(
                closed(&got),
                CloseCause::Error(ConnectionError::FrameAuth(_))
            ),
            "{late}: {got:?}"
        );
        assert_eq!(
            authenticated_close(&out(&mut acceptor)),
            CloseCode::ProtocolError
        );
    }

    // A REJECT is let through on its kind and must then parse: malformed, CLOSE 2. A CLOSE
    // that does not parse is not let through: it fails authentication, CLOSE 2 too.
    let mut acceptor = joined_acceptor(t0);
    input(&mut acceptor, &frame(0x03, &[0x00]), t0);
    let got = events(&mut acceptor);
    assert!(
        matches!(closed(&got), CloseCause::Error(ConnectionError::Message(_))),
        "{got:?}"
    );
    assert_eq!(
        authenticated_close(&out(&mut acceptor)),
        CloseCode::ProtocolError
    );
    let mut acceptor = joined_acceptor(t0);
    input(&mut acceptor, &frame(0x11, &[0x00]), t0);
    let got = events(&mut acceptor);
    assert!(
        matches!(
            closed(&got),
            CloseCause::Error(ConnectionError::FrameAuth(_))
        ),
        "{got:?}"
    );
    assert_eq!(
        authenticated_close(&out(&mut acceptor)),
        CloseCode::ProtocolError
    );
}

fn header(kind: u8, len: u32) -> Vec<u8> {
    [&[kind][..], &len.to_be_bytes()].concat()
}

#[test]
fn the_control_limit_follows_the_receivers_own_state() {
    let t0 = Instant::now();
    // Joined on an authenticated link: 4096 + 16 for every control header, tagged or not.
    let mut acceptor = joined_acceptor(t0);
    input(&mut acceptor, &header(0x03, 4096 + 16), t0);
    assert!(!acceptor.is_closed());
    let mut acceptor = joined_acceptor(t0);
    input(&mut acceptor, &header(0x03, 4096 + 17), t0);
    assert!(acceptor.is_closed());
    // Not yet joined: 4096.
    let endpoint_i = endpoint("node-a", 0x00);
    let mut initiator = waiting_initiator(&endpoint_i, None, t0);
    input(&mut initiator, &with_preface(&[&header(0x03, 4096)]), t0);
    assert!(!initiator.is_closed());
    let mut initiator = waiting_initiator(&endpoint_i, None, t0);
    input(&mut initiator, &with_preface(&[&header(0x03, 4097)]), t0);
    assert!(initiator.is_closed());
    let mut acceptor = endpoint("node-b", 0x20)
        .accept(t0, wall(WELCOME_TS))
        .unwrap();
    out(&mut acceptor);
    input(&mut acceptor, &with_preface(&[&header(0x01, 4097)]), t0);
    assert!(acceptor.is_closed());
}

/// The REJECT a connection sent: its code.
fn rejected(bytes: &[u8]) -> RejectCode {
    let (kind, body) = one_frame(bytes);
    assert_eq!(kind, 0x03, "a REJECT: {}", hex::encode(bytes));
    Rejection::decode(&body).unwrap().code
}

#[test]
fn data_before_the_join_is_answered_with_reject_10_on_its_kind_byte() {
    let t0 = Instant::now();
    let mut acceptor = endpoint("node-b", 0x20)
        .accept(t0, wall(WELCOME_TS))
        .unwrap();
    out(&mut acceptor);
    input(&mut acceptor, &with_preface(&[&[0x10]]), t0);
    assert_eq!(rejected(&out(&mut acceptor)), RejectCode::Malformed);
    let mut initiator = waiting_initiator(&endpoint("node-a", 0x00), None, t0);
    input(&mut initiator, &with_preface(&[&[0x10]]), t0);
    assert_eq!(rejected(&out(&mut initiator)), RejectCode::Malformed);
}

/// A WELCOME from `node_id` that proves the secret, answering the spec's HELLO.
fn welcome_from(node_id: &str) -> Vec<u8> {
    let hello = JoinHello::decode(&spec("hello_frame")[5..]).unwrap();
    let mut welcome = JoinWelcome::decode(&spec("welcome_frame")[5..]).unwrap();
    welcome.node_id = node_id.into();
    let key_id = secret().key_id();
    welcome.auth = Some(Auth {
        key_id,
        proof: [0; 32],
    });
    let proof = acceptor_proof(&secret(), b"", &hello, &welcome);
    welcome.auth = Some(Auth { key_id, proof });
    frame(0x02, &welcome.encode())
}

#[test]
fn reject_12_wins_over_reject_9() {
    let t0 = Instant::now();
    let endpoint_i = endpoint("node-a", 0x00);
    // Dialed node-b: node-c answering is REJECT 9, the initiator itself answering is 12.
    let mut initiator = waiting_initiator(&endpoint_i, Some("node-b"), t0);
    input(
        &mut initiator,
        &with_preface(&[&welcome_from("node-c")]),
        t0,
    );
    assert_eq!(
        rejected(&out(&mut initiator)),
        RejectCode::IdentityNotAllowed
    );
    let mut initiator = waiting_initiator(&endpoint_i, Some("node-b"), t0);
    input(
        &mut initiator,
        &with_preface(&[&welcome_from("node-a")]),
        t0,
    );
    assert_eq!(rejected(&out(&mut initiator)), RejectCode::Reflected);
}

#[test]
fn now_is_the_wall_clock_at_creation_plus_the_monotonic_time_since() {
    let t0 = Instant::now();
    let config = Config::new("prod", "node-a").with_secret(secret());
    let later = Duration::from_secs(100);
    // The acceptor was created at wall W; at t0 + 100 s its `now` is W + 100000 exactly.
    for (behind, code) in [(300_000, None), (300_001, Some(RejectCode::ClockSkew))] {
        let ts = WELCOME_TS + 100_000 - behind;
        let hello = InitiatorHandshake::new(&config, nonce(0x40), ts, b"")
            .hello()
            .encode();
        let mut acceptor = endpoint("node-b", 0x20)
            .accept(t0, wall(WELCOME_TS))
            .unwrap();
        out(&mut acceptor);
        input(
            &mut acceptor,
            &with_preface(&[&frame(0x01, &hello)]),
            t0 + later,
        );
        let sent = out(&mut acceptor);
        match code {
            None => assert_eq!(one_frame(&sent).0, 0x02, "WELCOME"),
            Some(code) => assert_eq!(rejected(&sent), code),
        }
    }
}

#[test]
fn own_hellos_are_those_of_the_endpoint_and_its_reconfigured_successors() {
    let t0 = Instant::now();
    let endpoint_a = endpoint("node-a", 0x00);
    let _in_flight = waiting_initiator(&endpoint_a, None, t0);
    let hello = with_preface(&[&spec("hello_frame")]);
    // A successor with another node id passes step 6 and is caught by step 8.
    let renamed = Config::new("prod", "node-z").with_secret(secret());
    let successor = endpoint_a.reconfigure(renamed.clone()).unwrap();
    let mut acceptor = successor.accept(t0, wall(HELLO_TS)).unwrap();
    out(&mut acceptor);
    input(&mut acceptor, &hello, t0);
    assert_eq!(rejected(&out(&mut acceptor)), RejectCode::Reflected);
    // A separately built endpoint does not know the nonce: it joins.
    let separate = Endpoint::with_random(renamed, Arc::new(Fixed(nonce(0x20)))).unwrap();
    let mut acceptor = separate.accept(t0, wall(HELLO_TS)).unwrap();
    out(&mut acceptor);
    input(&mut acceptor, &hello, t0);
    assert!(matches!(events(&mut acceptor)[..], [Event::Joined(_)]));
}
