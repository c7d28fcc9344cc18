//! Hostile peers against a listener, over 127.0.0.1: junk, absurd length claims, silent
//! and stalled peers, the wrong transport, and a crowd of intruders among members.
//!
//! Every scenario runs against a tokio listener and a blocking listener
//! (`tokio_listener::*`, `blocking_listener::*`). The hostile side is a raw
//! `std::net::TcpStream`; members dial with the palisade client of the listener's own
//! adapter. Each test asserts what the failure hook reported (peer address and error),
//! what the hostile socket saw (the listener's reply, and when it was closed), that the
//! listener keeps serving members afterwards, and that no handshake is left in progress.
//! Handshake deadlines are short (1.5 to 2 s) and every wait is bounded.

mod hostile_support;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use hostile_support::*;
use palisade::preface::PREFACE;
use palisade::tls::{CertRefusal, TlsError};
use palisade::{
    CloseCause, CloseCode, ConnectionError, Endpoint, Event, FrameError, FrameKind, JoinError,
    LinkError, PrefaceError, RejectCode,
};
use palisade_driver::listener::MAX_HANDSHAKES;
use palisade_driver::AdmissionError;
use palisade_testkit::certs::TestCa;

/// Handshake timeout of the listeners in the deadline tests.
const DEADLINE: Duration = Duration::from_millis(1500);
/// Handshake timeout of the listeners in the refusal tests: a refusal must come long
/// before it, so a refusal is never a timeout in disguise.
const NOT_REACHED: Duration = Duration::from_secs(5);

// ----- 1. random bytes -----

fn random_bytes_are_refused_and_the_listener_keeps_serving(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    for tls in [false, true] {
        let server = Server::start(kind, cluster.listener(tls, NOT_REACHED));
        let (seed, junk) = junk(4096);
        let mut raw = Raw::connect(&server);
        raw.send(&junk);
        let closed = raw.read_until_closed(FAST);
        let what = format!("{kind:?} listener, tls {tls}, junk seed {seed:#x}");

        let failure = server.failures.of(raw.local, FAST);
        match &failure.link {
            Some(ConnectionError::Preface(PrefaceError::NotPalisade { first_bytes })) => {
                assert!(
                    !first_bytes.is_empty()
                        && first_bytes.len() <= PREFACE.len()
                        && junk.starts_with(first_bytes),
                    "{what}: first_bytes {first_bytes:02x?} are not what was sent"
                );
            }
            other => panic!("{what}: expected Preface(NotPalisade), the hook got {other:?}"),
        }
        assert_eq!(failure.code, None, "{what}");
        if tls {
            assert_tls_alert_or_nothing(&closed.reply);
        } else {
            let said = decode_plain_reply(&closed.reply);
            assert!(
                matches!(&said[..], [Said::Close(r)] if r.code == CloseCode::ProtocolError),
                "{what}: the listener said {said:?}"
            );
        }

        server.assert_serves(cluster.member(tls, "member-after-junk"));
        server.assert_failures_only_for(&[raw.local]);
        server.assert_no_handshake_left();
    }
}

// ----- 2. 4 GiB length claims -----

fn four_gib_length_claims_are_refused_at_the_header(kind: Kind) {
    // Alone on the machine: memory is measured.
    let _machine = exclusive();
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, NOT_REACHED));
    let rss0 = proc_status_kib("VmRSS:");
    let vm0 = proc_status_kib("VmSize:");
    let check_memory = |case: &str| {
        // A listener that believed the claim would now hold a 4 GiB reservation (the
        // body never comes) and keep the link open.
        thread::sleep(Duration::from_millis(150));
        if let (Some(rss0), Some(rss)) = (rss0, proc_status_kib("VmRSS:")) {
            let grown = rss.saturating_sub(rss0);
            assert!(
                grown < 64 * 1024,
                "{kind:?} {case}: RSS grew by {grown} KiB"
            );
        }
        if let (Some(vm0), Some(vm)) = (vm0, proc_status_kib("VmSize:")) {
            let grown = vm.saturating_sub(vm0);
            assert!(
                grown < 2 * 1024 * 1024,
                "{kind:?} {case}: virtual memory grew by {grown} KiB"
            );
        }
    };
    let claim = |kind_byte: u8| {
        let mut bytes = vec![kind_byte, 0xff, 0xff, 0xff, 0xff];
        bytes.extend(std::iter::repeat_n(0xab, 64 * 1024));
        bytes
    };

    // DATA before the join: refused on its kind byte, answered with REJECT malformed.
    let mut data = Raw::connect(&server);
    data.send_lossy(&[&PREFACE[..], &claim(0x10)].concat());
    check_memory("DATA before the join");
    let closed = data.read_until_closed(FAST);
    assert!(closed.after_send < FAST, "{kind:?}: DATA claim: {closed:?}");
    let f = server.failures.of(data.local, FAST);
    assert!(
        matches!(
            f.link,
            Some(ConnectionError::UnexpectedFrame {
                kind: FrameKind::Data,
                ..
            })
        ),
        "{kind:?}: DATA before the join: the hook got {f:?}"
    );
    let said = decode_plain_reply(&closed.reply);
    assert!(
        matches!(&said[..], [Said::Reject(r)] if r.code == RejectCode::Malformed),
        "{kind:?}: DATA before the join: the listener said {said:?}"
    );

    // A 4 GiB HELLO: over the 4096-byte control limit, refused at the header.
    let mut hello = Raw::connect(&server);
    hello.send_lossy(&[&PREFACE[..], &claim(0x01)].concat());
    check_memory("4 GiB HELLO");
    let closed = hello.read_until_closed(FAST);
    assert!(
        closed.after_send < FAST,
        "{kind:?}: HELLO claim: {closed:?}"
    );
    let f = server.failures.of(hello.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::Frame(FrameError::TooLarge {
            kind: FrameKind::Hello,
            declared: u64::from(u32::MAX),
            max: 4096
        })),
        "{kind:?}: 4 GiB HELLO: {f:?}"
    );
    let said = decode_plain_reply(&closed.reply);
    assert!(
        matches!(&said[..], [Said::Close(r)] if r.code == CloseCode::ProtocolError),
        "{kind:?}: 4 GiB HELLO: the listener said {said:?}"
    );

    // A member that joined for real, then claims a 4 GiB DATA frame: over max_frame.
    let mut member = RawMember::join(&server, cluster.member(false, "raw-member"));
    let (accepted, _) = server.accept(1, FAST).pop().expect("one link");
    assert_eq!(accepted.peer().node_id, "raw-member");
    member.raw.send_lossy(&claim(0x10));
    check_memory("4 GiB DATA after the join");
    let closed = member.raw.read_until_closed(JOIN_BOUND);
    assert!(closed.after_send < FAST, "{kind:?}: DATA claim: {closed:?}");
    let got = server.recv(accepted, FAST);
    assert!(
        matches!(
            &got,
            Err(LinkError::Link(ConnectionError::Frame(FrameError::TooLarge {
                kind: FrameKind::Data,
                declared,
                max: 8_388_608,
            // Reported as a payload size: the link authenticates frames (plaintext with
            // the secret), so the claim includes a 16-byte tag (PROTOCOL.md §5.7).
            }))) if *declared == u64::from(u32::MAX) - 16
        ),
        "{kind:?}: the accepted link's recv gave {got:?}"
    );
    let events = member.interpret(&closed.reply);
    assert!(
        matches!(&events[..], [Event::Closed(CloseCause::Peer(r))] if r.code == CloseCode::FrameTooLarge),
        "{kind:?}: the member saw {events:?}"
    );

    server.assert_serves(cluster.member(false, "member-after-claims"));
    // The joined member's failure is the link's, not a handshake's: not reported.
    server.assert_failures_only_for(&[data.local, hello.local]);
    server.assert_no_handshake_left();
}

// ----- 3. a silent peer -----

/// Asserts a stalled peer was closed at the deadline (not before, not much after) and
/// reported by the hook as a handshake timeout.
fn assert_closed_at_deadline(
    server: &Server,
    raw: &Raw,
    closed: &Closed,
    deadline: Duration,
    what: &str,
) {
    let kind = server.kind;
    assert!(
        closed.after_open >= deadline,
        "{kind:?} {what}: closed after {:?}, before the {deadline:?} deadline",
        closed.after_open
    );
    assert!(
        closed.after_open <= deadline + LATE,
        "{kind:?} {what}: closed after {:?}, long after the {deadline:?} deadline",
        closed.after_open
    );
    let f = server.failures.of(raw.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::HandshakeTimeout { after: deadline }),
        "{kind:?} {what}: {f:?}"
    );
}

fn a_silent_peer_is_closed_at_the_handshake_deadline(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let plain = Server::start(kind, cluster.listener(false, DEADLINE));
    let tls = Server::start(kind, cluster.listener(true, DEADLINE));
    let mut silent_plain = Raw::connect(&plain);
    let mut silent_tls = Raw::connect(&tls);
    let (closed_plain, closed_tls) = thread::scope(|s| {
        let a = s.spawn(|| silent_plain.read_until_closed(DEADLINE + LATE));
        let b = s.spawn(|| silent_tls.read_until_closed(DEADLINE + LATE));
        (a.join().expect("reader"), b.join().expect("reader"))
    });

    assert_closed_at_deadline(&plain, &silent_plain, &closed_plain, DEADLINE, "plaintext");
    let said = decode_plain_reply(&closed_plain.reply);
    assert!(
        matches!(&said[..], [Said::Close(r)] if r.code == CloseCode::HandshakeTimeout),
        "{kind:?}: the plaintext listener said {said:?}"
    );
    assert_closed_at_deadline(&tls, &silent_tls, &closed_tls, DEADLINE, "TLS");
    // No TLS session, so no frame: at most an alert.
    assert_tls_alert_or_nothing(&closed_tls.reply);

    for (server, raw, tls) in [(&plain, &silent_plain, false), (&tls, &silent_tls, true)] {
        server.assert_serves(cluster.member(tls, "member-after-silence"));
        server.assert_failures_only_for(&[raw.local]);
        server.assert_no_handshake_left();
    }
}

// ----- 4. peers stalled mid-frame -----

fn peers_stalled_mid_frame_are_closed_at_the_handshake_deadline(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let plain = Server::start(kind, cluster.listener(false, DEADLINE));
    let tls = Server::start(kind, cluster.listener(true, DEADLINE));

    // What a member would send: PREFACE ‖ HELLO, and a ClientHello.
    let flight = first_flight(cluster.member(false, "stalled"));
    let hello_len = flight.len() - PREFACE.len();
    assert!(hello_len > 5 + 40, "a HELLO is header + body");
    let client_hello = first_flight(cluster.member(true, "stalled"));
    assert_eq!(client_hello[0], 0x16, "a TLS handshake record");

    let cuts: Vec<(&str, &Server, Vec<u8>)> = vec![
        ("half a preface", &plain, flight[..5].to_vec()),
        (
            "preface + half a HELLO header",
            &plain,
            flight[..PREFACE.len() + 3].to_vec(),
        ),
        (
            "preface + half a HELLO",
            &plain,
            flight[..PREFACE.len() + 5 + (hello_len - 5) / 2].to_vec(),
        ),
        (
            "half a ClientHello",
            &tls,
            client_hello[..client_hello.len() / 2].to_vec(),
        ),
    ];
    let mut peers: Vec<(&str, &Server, Raw)> = cuts
        .into_iter()
        .map(|(what, server, bytes)| {
            let mut raw = Raw::connect(server);
            raw.send(&bytes);
            (what, server, raw)
        })
        .collect();
    // A slowloris: a valid first flight, one byte every 100 ms. Activity must not move
    // the deadline.
    let mut trickler = Raw::connect(&plain);
    let mut drip = trickler.stream.try_clone().expect("clone");

    let stop = AtomicBool::new(false);
    let (closed, trickled) = thread::scope(|s| {
        let stop = &stop;
        let dripping = s.spawn(move || {
            for b in &flight {
                thread::sleep(Duration::from_millis(100));
                if stop.load(Ordering::Relaxed) || drip.write_all(&[*b]).is_err() {
                    break;
                }
            }
        });
        let readers: Vec<_> = peers
            .iter_mut()
            .map(|(_, _, raw)| s.spawn(move || raw.read_until_closed(DEADLINE + LATE)))
            .collect();
        let trickled = trickler.read_until_closed(DEADLINE + LATE);
        stop.store(true, Ordering::Relaxed);
        let closed: Vec<Closed> = readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect();
        dripping.join().expect("dripper");
        (closed, trickled)
    });

    for ((what, server, raw), closed) in peers.iter().zip(&closed) {
        assert_closed_at_deadline(server, raw, closed, DEADLINE, what);
        if std::ptr::eq(*server, &tls) {
            assert_tls_alert_or_nothing(&closed.reply);
        } else {
            let said = decode_plain_reply(&closed.reply);
            assert!(
                matches!(&said[..], [Said::Close(r)] if r.code == CloseCode::HandshakeTimeout),
                "{kind:?} {what}: the listener said {said:?}"
            );
        }
    }
    assert_closed_at_deadline(&plain, &trickler, &trickled, DEADLINE, "slowloris");

    plain.assert_serves(cluster.member(false, "member-after-stalls"));
    tls.assert_serves(cluster.member(true, "member-after-stalls"));
    let mut on_plain: Vec<_> = peers
        .iter()
        .filter(|(_, s, _)| std::ptr::eq(*s, &plain))
        .map(|(_, _, r)| r.local)
        .collect();
    on_plain.push(trickler.local);
    plain.assert_failures_only_for(&on_plain);
    tls.assert_failures_only_for(&[peers[3].2.local]);
    plain.assert_no_handshake_left();
    tls.assert_no_handshake_left();
}

// ----- 5. the wrong transport -----

fn plaintext_and_tls_mix_ups_are_diagnosed(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let tls = Server::start(kind, cluster.listener(true, NOT_REACHED));
    let plain = Server::start(kind, cluster.listener(false, NOT_REACHED));

    // A plaintext palisade peer (its real first flight) on the TLS port.
    let mut plaintext_peer = Raw::connect(&tls);
    plaintext_peer.send(&first_flight(cluster.member(false, "plaintext-peer")));
    let closed = plaintext_peer.read_until_closed(FAST);
    let f = tls.failures.of(plaintext_peer.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::Preface(PrefaceError::PeerSpeaksPlaintext)),
        "{kind:?}: {f:?}"
    );
    assert_tls_alert_or_nothing(&closed.reply);

    // A TLS peer (a real palisade ClientHello) on the plaintext port.
    let mut tls_peer = Raw::connect(&plain);
    let client_hello = first_flight(cluster.member(true, "tls-peer"));
    tls_peer.send(&client_hello);
    let closed = tls_peer.read_until_closed(FAST);
    let f = plain.failures.of(tls_peer.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::Preface(PrefaceError::PeerSpeaksTls)),
        "{kind:?}: {f:?}"
    );
    let said = decode_plain_reply(&closed.reply);
    assert!(
        matches!(&said[..], [Said::Close(r)] if r.code == CloseCode::ProtocolError),
        "{kind:?}: the plaintext listener said {said:?}"
    );

    // An HTTP client on the plaintext port.
    let mut http = Raw::connect(&plain);
    http.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let closed = http.read_until_closed(FAST);
    let f = plain.failures.of(http.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::Preface(PrefaceError::PeerSpeaksHttp)),
        "{kind:?}: {f:?}"
    );
    let said = decode_plain_reply(&closed.reply);
    assert!(
        matches!(&said[..], [Said::Close(r)] if r.code == CloseCode::ProtocolError),
        "{kind:?}: the plaintext listener told the HTTP client {said:?}"
    );

    // The same mix-ups with palisade's own client: both ends name the problem.
    let (joined, _) = tls.join(cluster.member(false, "plaintext-member"));
    let err = joined.expect_err("a plaintext member cannot join a TLS listener");
    assert!(
        matches!(
            err,
            LinkError::Link(ConnectionError::Preface(PrefaceError::PeerSpeaksTls))
        ),
        "{kind:?}: the plaintext member got {err:?}"
    );
    let (joined, _) = plain.join(cluster.member(true, "tls-member"));
    let err = joined.expect_err("a TLS member cannot join a plaintext listener");
    assert!(
        matches!(
            err,
            LinkError::Link(ConnectionError::Preface(PrefaceError::PeerSpeaksPlaintext))
        ),
        "{kind:?}: the TLS member got {err:?}"
    );
    let seen = tls.failures.at_least(2, FAST);
    assert!(
        seen.iter()
            .all(|f| f.link == Some(ConnectionError::Preface(PrefaceError::PeerSpeaksPlaintext))),
        "{kind:?}: {seen:#?}"
    );
    let seen = plain.failures.at_least(3, FAST);
    let tls_peers = seen
        .iter()
        .filter(|f| f.link == Some(ConnectionError::Preface(PrefaceError::PeerSpeaksTls)))
        .count();
    assert_eq!(tls_peers, 2, "{kind:?}: {seen:#?}");

    tls.assert_serves(cluster.member(true, "member-after-mix-ups"));
    plain.assert_serves(cluster.member(false, "member-after-mix-ups"));
    assert_eq!(tls.failures.all().len(), 2);
    assert_eq!(plain.failures.all().len(), 3);
    tls.assert_no_handshake_left();
    plain.assert_no_handshake_left();
}

// ----- 6. a crowd of members and intruders -----

/// Concurrent handshakes in the crowd test.
const CROWD: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Member,
    WrongSecret,
    RogueCert,
}

fn who(i: usize) -> Who {
    match i % 8 {
        3 => Who::WrongSecret,
        6 => Who::RogueCert,
        _ => Who::Member,
    }
}

fn a_crowd_of_members_and_intruders_is_sorted_out(kind: Kind) {
    // Alone on the machine: hundreds of TLS handshakes at once.
    let _machine = exclusive();
    let cluster = Cluster::new();
    let rogue_ca = TestCa::new("rogue CA");
    let rogue = rogue_ca.node("member.hostile");
    let server = Server::start(kind, cluster.listener(true, Duration::from_secs(20)));

    let endpoints: Vec<Endpoint> = (0..CROWD)
        .map(|i| {
            let config = match who(i) {
                Who::Member => cluster.member(true, &format!("member-{i}")),
                Who::WrongSecret => cluster.wrong_secret(&format!("intruder-{i}")),
                Who::RogueCert => cluster.rogue_cert(&rogue, &format!("intruder-{i}")),
            };
            Endpoint::new(config).expect("config")
        })
        .collect();
    let start = Instant::now();
    let results = server.join_all(endpoints, Duration::from_secs(60));
    let took = start.elapsed();
    eprintln!("{kind:?} listener: {CROWD} concurrent TLS handshakes in {took:?}");

    let mut members = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match (who(i), r) {
            (Who::Member, Ok(conn)) => {
                assert_eq!(conn.peer().node_id, LISTENER_ID);
                members.push(conn);
            }
            (Who::WrongSecret, Err(e))
                if e.reject_code() == Some(RejectCode::UnknownKey) && e.rejection().is_some() => {}
            (
                Who::RogueCert,
                Err(LinkError::Link(ConnectionError::Tls(TlsError::RefusedByPeer { alert }))),
            ) if alert == "unknown_ca" => {}
            (w, r) => panic!("{kind:?}: #{i} ({w:?}) ended with {r:?}"),
        }
    }
    let member_count = (0..CROWD).filter(|&i| who(i) == Who::Member).count();
    assert_eq!(members.len(), member_count);

    // The listener side: every member accepted, every intruder reported.
    let accepted = server.accept(member_count, Duration::from_secs(10));
    let mut names: Vec<String> = accepted
        .iter()
        .map(|(c, _)| c.peer().node_id.clone())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..CROWD)
        .filter(|&i| who(i) == Who::Member)
        .map(|i| format!("member-{i}"))
        .collect();
    want.sort();
    assert_eq!(names, want, "{kind:?}: the accepted links");

    let intruders = CROWD - member_count;
    let failures = server.failures.at_least(intruders, Duration::from_secs(10));
    assert_eq!(failures.len(), intruders, "{kind:?}: {failures:#?}");
    let unknown_key = failures
        .iter()
        .filter(|f| {
            f.code == Some(RejectCode::UnknownKey)
                && matches!(&f.link, Some(ConnectionError::Join(JoinError::RefusedPeer(r))) if r.code == RejectCode::UnknownKey)
        })
        .count();
    let unknown_issuer = failures
        .iter()
        .filter(|f| {
            matches!(&f.link, Some(ConnectionError::Tls(TlsError::CertificateRefused(r)))
                if matches!(**r, CertRefusal::UnknownIssuer { .. }))
        })
        .count();
    let wrong_secrets = (0..CROWD).filter(|&i| who(i) == Who::WrongSecret).count();
    assert_eq!(unknown_key, wrong_secrets, "{kind:?}: {failures:#?}");
    assert_eq!(
        unknown_issuer,
        intruders - wrong_secrets,
        "{kind:?}: {failures:#?}"
    );

    // Still serving, and nothing leaked.
    server.assert_serves(cluster.member(true, "member-after-the-crowd"));
    server.assert_no_handshake_left();
    assert_eq!(server.failures.all().len(), intruders);
    drop(accepted);
    drop(members);
}

// ----- 7. hostile peers do not hold up members -----

fn hostile_peers_do_not_delay_a_member(kind: Kind) {
    let _machine = shared();
    let hold = Duration::from_secs(2);
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(true, hold));
    let client_hello = first_flight(cluster.member(true, "stalled"));

    // Silent peers, and one stuck inside its ClientHello.
    let mut hostile: Vec<Raw> = (0..20).map(|_| Raw::connect(&server)).collect();
    let mut stuck = Raw::connect(&server);
    stuck.send(&client_hello[..client_hello.len() / 2]);
    hostile.push(stuck);
    let n = hostile.len();
    assert!(
        eventually(FAST, || server.handshakes_in_progress() == n),
        "{kind:?}: {} handshakes in progress, expected {n}",
        server.handshakes_in_progress()
    );

    let took = server.assert_serves(cluster.member(true, "prompt-member"));
    assert!(
        took < hold / 2,
        "{kind:?}: the member waited {took:?} behind hostile peers (deadline {hold:?})"
    );
    assert!(
        hostile.iter().all(Raw::untouched),
        "{kind:?}: a hostile peer was closed before its deadline"
    );
    assert!(server.failures.all().is_empty(), "{kind:?}");
    assert_eq!(
        server.handshakes_in_progress(),
        n,
        "{kind:?}: only the hostile peers are in progress"
    );

    let closed: Vec<Closed> = thread::scope(|s| {
        let readers: Vec<_> = hostile
            .iter_mut()
            .map(|raw| s.spawn(move || raw.read_until_closed(hold + LATE)))
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    });
    for (raw, closed) in hostile.iter().zip(&closed) {
        assert_closed_at_deadline(&server, raw, closed, hold, "hostile peer");
    }
    let peers: Vec<_> = hostile.iter().map(|r| r.local).collect();
    server.assert_failures_only_for(&peers);
    server.assert_no_handshake_left();
}

// ----- peers that leave mid-handshake -----

fn peers_that_leave_mid_handshake_are_reported_at_once(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let plain = Server::start(kind, cluster.listener(false, NOT_REACHED));
    let tls = Server::start(kind, cluster.listener(true, NOT_REACHED));
    let flight = first_flight(cluster.member(false, "leaver"));
    let hello_len = flight.len() - PREFACE.len();
    let half = PREFACE.len() + 5 + (hello_len - 5) / 2;
    let client_hello = first_flight(cluster.member(true, "leaver"));

    // Connects and ends its stream at once.
    let mut quitter = Raw::connect(&plain);
    quitter.stream.shutdown(Shutdown::Write).expect("shutdown");
    let left_at = Instant::now();
    let closed = quitter.read_until_closed(FAST);
    let f = plain.failures.of(quitter.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::UnexpectedEof { joined: false }),
        "{kind:?} quitter: {f:?}"
    );
    assert!(f.at - left_at < FAST, "{kind:?} quitter: reported late");
    // The preface, and nothing to say to a peer that left.
    assert_eq!(decode_plain_reply(&closed.reply), vec![], "{kind:?}");

    // Half a HELLO, then the end of its stream.
    let mut truncator = Raw::connect(&plain);
    truncator.send(&flight[..half]);
    truncator
        .stream
        .shutdown(Shutdown::Write)
        .expect("shutdown");
    let left_at = Instant::now();
    let closed = truncator.read_until_closed(FAST);
    let f = plain.failures.of(truncator.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::Frame(FrameError::Truncated {
            have: half - PREFACE.len(),
            need: Some(hello_len as u64),
        })),
        "{kind:?} truncator: {f:?}"
    );
    assert!(f.at - left_at < FAST, "{kind:?} truncator: reported late");
    let said = decode_plain_reply(&closed.reply);
    assert!(
        matches!(&said[..], [Said::Close(r)] if r.code == CloseCode::ProtocolError),
        "{kind:?} truncator: the listener said {said:?}"
    );

    // Half a HELLO, then a reset (it leaves the listener's preface unread, so closing
    // the socket sends RST).
    let resetter = Raw::connect(&plain);
    resetter.wait_unread(PREFACE.len(), FAST);
    let Raw {
        mut stream,
        local: resetter_addr,
        ..
    } = resetter;
    stream.write_all(&flight[..half]).expect("write");
    thread::sleep(Duration::from_millis(100));
    let left_at = Instant::now();
    drop(stream);
    let f = plain.failures.of(resetter_addr, FAST);
    assert_eq!(
        f.io,
        Some(ErrorKind::ConnectionReset),
        "{kind:?} resetter: {f:?}"
    );
    assert!(f.at - left_at < FAST, "{kind:?} resetter: reported late");

    // Half a ClientHello, then the end of its stream.
    let mut tls_quitter = Raw::connect(&tls);
    tls_quitter.send(&client_hello[..client_hello.len() / 2]);
    tls_quitter
        .stream
        .shutdown(Shutdown::Write)
        .expect("shutdown");
    let left_at = Instant::now();
    let closed = tls_quitter.read_until_closed(FAST);
    let f = tls.failures.of(tls_quitter.local, FAST);
    assert_eq!(
        f.link,
        Some(ConnectionError::UnexpectedEof { joined: false }),
        "{kind:?} TLS quitter: {f:?}"
    );
    assert!(f.at - left_at < FAST, "{kind:?} TLS quitter: reported late");
    assert_tls_alert_or_nothing(&closed.reply);

    plain.assert_serves(cluster.member(false, "member-after-leavers"));
    tls.assert_serves(cluster.member(true, "member-after-leavers"));
    plain.assert_failures_only_for(&[quitter.local, truncator.local, resetter_addr]);
    tls.assert_failures_only_for(&[tls_quitter.local]);
    plain.assert_no_handshake_left();
    tls.assert_no_handshake_left();
}

// ----- a replayed HELLO -----

fn a_replayed_hello_is_refused(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, NOT_REACHED));
    let flight = first_flight(cluster.member(false, "replayed-member"));

    // The original joins.
    let mut original = Raw::connect(&server);
    original.send(&flight);
    let said = original.read_frames(1, FAST);
    assert!(
        matches!(&said[..], [Said::Other(FrameKind::Welcome, _)]),
        "{kind:?}: the original got {said:?}"
    );
    let (accepted, _) = server.accept(1, FAST).pop().expect("one link");
    assert_eq!(accepted.peer().node_id, "replayed-member");
    assert_eq!(accepted.peer().key_id, Some(cluster.secret.key_id()));

    // Its exact bytes again, on another connection: the nonce was seen.
    let mut replay = Raw::connect(&server);
    replay.send(&flight);
    let closed = replay.read_until_closed(FAST);
    let said = decode_plain_reply(&closed.reply);
    assert!(
        matches!(&said[..], [Said::Reject(r)] if r.code == RejectCode::Replay),
        "{kind:?}: the replay got {said:?}"
    );
    let f = server.failures.of(replay.local, FAST);
    assert_eq!(f.code, Some(RejectCode::Replay), "{kind:?}: {f:?}");
    assert!(
        matches!(&f.link, Some(ConnectionError::Join(JoinError::RefusedPeer(r))) if r.code == RejectCode::Replay),
        "{kind:?}: {f:?}"
    );

    server.assert_serves(cluster.member(false, "member-after-replay"));
    server.assert_failures_only_for(&[replay.local]);
    server.assert_no_handshake_left();
    drop(accepted);
}

// ----- a connection flood -----

fn a_connection_flood_is_capped_and_drains(kind: Kind) {
    // Alone on the machine: a thousand sockets (and, blocking, two thousand threads).
    let _machine = exclusive();
    let hold = Duration::from_secs(3);
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, hold));

    // Paced so that the kernel's accept queue never overflows (std listens with a
    // backlog of 128; a dropped SYN is retried only after a second).
    let mut flood: Vec<Raw> = Vec::with_capacity(MAX_HANDSHAKES);
    while flood.len() < MAX_HANDSHAKES {
        let queued = flood.len() - server.handshakes_in_progress();
        if queued < 64 {
            flood.push(Raw::connect(&server));
        } else {
            thread::yield_now();
        }
    }
    let opened = flood[0].opened.elapsed();
    assert!(
        eventually(Duration::from_secs(3), || server.handshakes_in_progress()
            == MAX_HANDSHAKES),
        "{kind:?}: {} handshakes in progress, expected {MAX_HANDSHAKES}; the hook saw {:#?}",
        server.handshakes_in_progress(),
        &server.failures.all()[..server.failures.all().len().min(5)]
    );
    assert!(
        opened < hold / 2,
        "{kind:?}: the flood took {opened:?} to open"
    );

    // One too many: the OLDEST is evicted (closed at once, reported as an eviction),
    // the newcomer takes its place.
    let mut extra = Raw::connect(&server);
    let within = flood[0].opened.elapsed() + FAST;
    let evicted = flood[0].read_until_closed(within);
    assert!(evicted.after_open < hold, "{kind:?}: {evicted:?}");
    let f = server.failures.of(flood[0].local, FAST);
    assert_eq!(
        f.admission,
        Some(AdmissionError::Evicted {
            limit: MAX_HANDSHAKES
        }),
        "{kind:?}: {f:?}"
    );
    assert!(f.text.contains("max_unjoined"), "{kind:?}: {f:?}");
    // (The newcomer stays: it is closed at its deadline with the rest, below.)
    // While the flood fills every place a member still joins (the next oldest goes).
    let took = server.assert_serves(cluster.member(false, "member-during-flood"));
    assert!(
        took < FAST,
        "{kind:?}: a member during the flood took {took:?}"
    );
    let f = server.failures.of(flood[1].local, FAST);
    assert!(
        matches!(f.admission, Some(AdmissionError::Evicted { .. })),
        "{kind:?}: {f:?}"
    );

    // The rest of the flood drains at its deadline.
    for raw in flood.iter_mut().skip(2).chain([&mut extra]) {
        let closed = raw.read_until_closed(hold + LATE + Duration::from_secs(1));
        assert!(
            closed.after_open >= hold,
            "{kind:?}: closed before the deadline"
        );
    }
    let failures = server.failures.at_least(MAX_HANDSHAKES + 1, FAST);
    let timeouts = failures
        .iter()
        .filter(|f| matches!(f.link, Some(ConnectionError::HandshakeTimeout { .. })))
        .count();
    assert_eq!(timeouts, MAX_HANDSHAKES - 1, "{kind:?}");
    server.assert_no_handshake_left();
    server.assert_serves(cluster.member(false, "member-after-flood"));
    assert_eq!(server.failures.all().len(), MAX_HANDSHAKES + 1);
    assert_eq!(server.stats().evicted, 2, "{kind:?}");
}

// ----- a peer that will not stop -----

fn a_peer_that_keeps_sending_after_refusal_is_cut_off(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, NOT_REACHED));
    let mut blaster = Raw::connect(&server);
    let (_, junk) = junk(16 * 1024);
    blaster.send(&junk);
    let refused_at = Instant::now();
    // Refused at once; it keeps writing. The listener reads and discards for a while
    // (so its CLOSE is not destroyed by a reset), then lets go of the socket.
    let f = server.failures.of(blaster.local, FAST);
    assert!(
        matches!(
            f.link,
            Some(ConnectionError::Preface(PrefaceError::NotPalisade { .. }))
        ),
        "{kind:?}: {f:?}"
    );
    let bound = palisade_driver::driver::LINGER + LATE;
    blaster
        .stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    let cut_off = loop {
        match blaster.stream.write(&junk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break refused_at.elapsed(),
        }
        assert!(
            refused_at.elapsed() < bound,
            "{kind:?}: a refused peer still had a reader after {bound:?}"
        );
    };
    eprintln!("{kind:?} listener: a refused blaster was cut off after {cut_off:?}");
    server.assert_serves(cluster.member(false, "member-after-blaster"));
    server.assert_failures_only_for(&[blaster.local]);
    server.assert_no_handshake_left();
}

// ----- out of file descriptors -----

/// Set in a child copy of this test binary that runs only a listener, under a small
/// file-descriptor limit.
const FD_CHILD: &str = "PALISADE_HOSTILE_FD_CHILD";
/// The child's file-descriptor limit (small, so filling it is quick).
const FD_LIMIT: u32 = 64;

/// Kills the child (by its pid) if the test ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The child: a listener with long handshake deadlines, driven by lines on stdin:
/// `FILL` takes every free file descriptor (and keeps taking any that comes free, the
/// way a busy process would), `RELEASE` gives them back, end of input ends it.
fn serve_with_few_fds(kind: Kind) {
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, Duration::from_secs(30)));
    println!("\nPORT={}", server.local.port());
    let _ = std::io::stdout().flush();
    let stop = Arc::new(AtomicBool::new(false));
    let mut filler = None;
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        match line.trim() {
            "FILL" => {
                let (stop, (full_tx, full_rx)) = (Arc::clone(&stop), mpsc::channel());
                filler = Some(
                    thread::Builder::new()
                        .name("fd-filler".into())
                        .spawn(move || {
                            let mut held = Vec::new();
                            let mut told = false;
                            while !stop.load(Ordering::Relaxed) {
                                match std::fs::File::open("/dev/null") {
                                    Ok(f) => held.push(f),
                                    Err(_) => {
                                        if !told {
                                            told = full_tx.send(()).is_ok();
                                        }
                                        thread::yield_now();
                                    }
                                }
                            }
                            held.len()
                        })
                        .expect("filler thread"),
                );
                let _ = full_rx.recv();
                println!("\nFULL");
            }
            "RELEASE" => {
                stop.store(true, Ordering::Relaxed);
                if let Some(f) = filler.take() {
                    let _ = f.join();
                }
                println!("\nRELEASED");
            }
            _ => {}
        }
        let _ = std::io::stdout().flush();
    }
    drop(server);
}

fn accept_errors_do_not_make_the_listener_spin(kind: Kind) {
    if let Ok(mode) = std::env::var(FD_CHILD) {
        if mode == format!("{kind:?}") {
            serve_with_few_fds(kind);
        }
        return;
    }
    let _machine = exclusive();
    let module = match kind {
        Kind::Tokio => "tokio_listener",
        Kind::Blocking => "blocking_listener",
    };
    let test = format!("{module}::accept_errors_do_not_make_the_listener_spin");
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = ChildGuard(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {FD_LIMIT} && exec \"$0\" --exact \"$1\" --include-ignored --nocapture --test-threads=1"
            ))
            .arg(&exe)
            .arg(&test)
            .env(FD_CHILD, format!("{kind:?}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child listener"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut stdin = child.0.stdin.take().expect("stdin");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let expect_line = |prefix: &str| -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{kind:?}: the child never said {prefix}"));
            if let Some(rest) = line.trim().strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    };
    let port: u16 = expect_line("PORT=").parse().expect("port");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = child.0.id();

    // The child runs out of descriptors while connections keep arriving. (A blocking
    // accept() parked in the kernel holds a reserved descriptor; each arrival spends
    // it, and the spin starts once the filler wins the freed descriptor back.)
    writeln!(stdin, "FILL").expect("to the child");
    expect_line("FULL");
    let feeding = AtomicBool::new(true);
    let (busy, window) = thread::scope(|s| {
        let feeder = s.spawn(|| {
            let mut held = Vec::new();
            while feeding.load(Ordering::Relaxed) {
                if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    held.push(c);
                }
                thread::sleep(Duration::from_millis(2));
            }
            held
        });
        thread::sleep(Duration::from_millis(700));
        // The accept loop's threads: the blocking listener's own, or tokio's workers.
        let loop_threads: &[&str] = match kind {
            Kind::Tokio => &["tokio-rt-worker"],
            Kind::Blocking => &["palisade-accept"],
        };
        let before = thread_cpu_time(pid, loop_threads).expect("the child's CPU time");
        let window = Duration::from_secs(1);
        thread::sleep(window);
        let busy = thread_cpu_time(pid, loop_threads).expect("the child's CPU time") - before;
        feeding.store(false, Ordering::Relaxed);
        drop(feeder.join().expect("feeder"));
        (busy, window)
    });

    // Descriptors come back: the listener must serve again.
    writeln!(stdin, "RELEASE").expect("to the child");
    expect_line("RELEASED");
    let joined = dial(
        kind,
        &format!("127.0.0.1:{port}"),
        // The cluster secret is fixed, so a member made here fits the child's listener.
        Cluster::new().member(false, "member-after-fd-exhaustion"),
    );
    drop(stdin);
    assert!(
        busy < window * 3 / 10,
        "{kind:?}: out of file descriptors, the accept loop used {busy:?} of CPU in {window:?}: \
         it retries a failing accept() without pausing"
    );
    let conn =
        joined.unwrap_or_else(|e| panic!("{kind:?}: no join once descriptors are back: {e}"));
    assert_eq!(conn.peer().node_id, LISTENER_ID);
}

macro_rules! against_each_listener {
    ($($scenario:ident),* $(,)? ; bugs: $($bug:ident = $why:literal),* $(,)?) => {
        mod tokio_listener {
            $(#[test]
            fn $scenario() {
                super::$scenario(super::Kind::Tokio);
            })*
            $(#[test]
            #[ignore = $why]
            fn $bug() {
                super::$bug(super::Kind::Tokio);
            })*
        }
        mod blocking_listener {
            $(#[test]
            fn $scenario() {
                super::$scenario(super::Kind::Blocking);
            })*
            $(#[test]
            #[ignore = $why]
            fn $bug() {
                super::$bug(super::Kind::Blocking);
            })*
        }
    };
}

against_each_listener!(
    random_bytes_are_refused_and_the_listener_keeps_serving,
    four_gib_length_claims_are_refused_at_the_header,
    a_silent_peer_is_closed_at_the_handshake_deadline,
    peers_stalled_mid_frame_are_closed_at_the_handshake_deadline,
    plaintext_and_tls_mix_ups_are_diagnosed,
    a_crowd_of_members_and_intruders_is_sorted_out,
    hostile_peers_do_not_delay_a_member,
    peers_that_leave_mid_handshake_are_reported_at_once,
    a_replayed_hello_is_refused,
    a_connection_flood_is_capped_and_drains,
    a_peer_that_keeps_sending_after_refusal_is_cut_off,
    accept_errors_do_not_make_the_listener_spin;
    bugs:
);
