//! The fuzz corpora as plain tests: every file of `fuzz/corpus/<target>/` (seeds recorded
//! from real traffic) and of `fuzz/regressions/<target>/` (inputs that once crashed a
//! target) goes through that target's check, the very code the fuzz target runs (the
//! module is included from `fuzz/src/checks/`). No nightly toolchain, no cargo-fuzz.
//!
//! The seed corpus is written by the ignored test below, from a testkit `Pair` of the
//! fuzz fixture nodes:
//!
//! ```text
//! PALISADE_WRITE_FUZZ_CORPUS=1 cargo test -p palisade-core --test fuzz_corpus -- --ignored
//! ```
//!
//! TLS seeds differ from run to run (rustls draws its randoms from the OS), so rewrite
//! the corpus only when the traffic changed.

#[path = "../../fuzz/src/checks/mod.rs"]
mod checks;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use palisade_core::frame::{FrameKind, HEADER_LEN};
use palisade_core::preface::{PREFACE, PREFACE_LEN};
use palisade_core::{Config, SharedSecret, Side};
use palisade_testkit::{Pair, PairBuilder};

use checks::conn::Op as C;
use checks::fixtures::{self, SERVER_NAME};
use checks::pair::Op as P;
use checks::{conn, frame, join, pair, TARGETS};

const I: Side = Side::Initiator;
const A: Side = Side::Acceptor;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted by name (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every file of every target's corpus and regression directory through the
/// target's check; returns the failures as `target/file: message`.
fn run_all(kinds: &[&str]) -> (usize, Vec<String>) {
    let (mut ran, mut failures) = (0, Vec::new());
    for (target, check) in TARGETS {
        for kind in kinds {
            for path in files(&fuzz_dir().join(kind).join(target)) {
                let data = std::fs::read(&path).unwrap();
                ran += 1;
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    let name = path.file_name().unwrap().to_string_lossy();
                    failures.push(format!("{kind}/{target}/{name}: {msg}"));
                }
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_seed_and_regression_input_passes_its_target_check() {
    for (target, _) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seed corpus for {target}");
    }
    let (ran, failures) = run_all(&["corpus", "regressions"]);
    assert!(
        failures.is_empty(),
        "{} of {ran} inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ----- writing the seed corpus -----

/// A recorded link: what each side wrote, chunk by chunk.
struct Recording {
    chunks: [Vec<Bytes>; 2],
}

impl Recording {
    fn of(pair: &Pair) -> Self {
        Self {
            chunks: [I, A].map(|s| pair.sent(s).to_vec()),
        }
    }

    fn stream(&self, side: Side) -> Vec<u8> {
        self.chunks[fixtures::idx(side)].concat()
    }

    /// The frames after the preface.
    fn frames(&self, side: Side) -> Vec<u8> {
        let stream = self.stream(side);
        assert_eq!(&stream[..PREFACE_LEN], &PREFACE);
        stream[PREFACE_LEN..].to_vec()
    }

    /// The body of the first frame of `kind` `side` wrote.
    fn body(&self, side: Side, kind: FrameKind) -> Vec<u8> {
        let frames = self.frames(side);
        let mut rest = &frames[..];
        while rest.len() >= HEADER_LEN {
            let len = u32::from_be_bytes(rest[1..HEADER_LEN].try_into().unwrap()) as usize;
            if rest[0] == kind.to_byte() {
                return rest[HEADER_LEN..HEADER_LEN + len].to_vec();
            }
            rest = &rest[HEADER_LEN + len..];
        }
        panic!("{side:?} wrote no {kind}");
    }
}

fn pair_of(initiator: Config, acceptor: Config, latency_ms: u64) -> Pair {
    PairBuilder::new(initiator, acceptor)
        .server_name(SERVER_NAME)
        .latency(Duration::from_millis(latency_ms))
        .build()
}

/// A joined link carrying frames both ways, closed by the initiator.
///
/// No latency: the acceptor then dates its WELCOME at the fixtures' wall clock, as the
/// acceptor target does when it reads the recorded HELLO at once, so both derive the same
/// frame-authentication keys (PROTOCOL.md §5.7) and the recorded frames after the join
/// verify in the target.
fn record_session(keyed: bool, tls: bool) -> Recording {
    let mut pair = pair_of(
        fixtures::config(I, keyed, tls),
        fixtures::config(A, keyed, tls),
        0,
    );
    pair.run_until(|p| p.joined(I) && p.joined(A));
    assert!(pair.joined(I) && pair.joined(A), "the fixture nodes join");
    for len in [0, 1, 100, 1024] {
        pair.send(I, fixtures::payload(len, 1)).unwrap();
    }
    for len in [5, 1000] {
        pair.send(A, fixtures::payload(len, 2)).unwrap();
    }
    pair.run_until(|p| p.frames(A).len() == 4 && p.frames(I).len() == 2);
    pair.conn(I).close(palisade_core::CloseReason::normal());
    pair.run();
    Recording::of(&pair)
}

/// A link whose join is refused or times out.
fn record_refusal(initiator: Config, latency_ms: u64) -> Recording {
    let mut pair = pair_of(initiator, fixtures::config(A, true, false), latency_ms);
    pair.run();
    assert!(!pair.joined(A), "the join is refused");
    Recording::of(&pair)
}

/// Seeds by target, then by file name.
type Seeds = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn seeds() -> Seeds {
    let plain = record_session(true, false);
    let unkeyed = record_session(false, false);
    let tls = record_session(true, true);
    let mut foreign = fixtures::config(I, true, false);
    foreign.keyring = Some(palisade_core::Keyring::new(
        SharedSecret::new(vec![0x43; 32]).unwrap(),
    ));
    let wrong_secret = record_refusal(foreign, 10);
    let mut staging = fixtures::config(I, true, false);
    staging.cluster_name = "staging".into();
    let other_cluster = record_refusal(staging, 10);
    // One-way latency past the handshake timeout: both sides time out.
    let timeout = record_refusal(fixtures::config(I, true, false), 20_000);

    let mut seeds = Seeds::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        seeds
            .entry(target)
            .or_default()
            .insert(name.to_owned(), data);
    };

    // frame_decoder: recorded frame streams, several chunk sizes and limits.
    let streams = [
        ("session-i", plain.frames(I)),
        ("session-a", plain.frames(A)),
        ("reject", wrong_secret.frames(A)),
        ("cluster-reject", other_cluster.frames(A)),
        ("timeout-close", timeout.frames(A)),
    ];
    for (name, stream) in &streams {
        add(
            "frame_decoder",
            name,
            frame::encode_input(255, 1024, stream),
        );
    }
    let (session_i, session_a) = (&streams[0].1[..], &streams[1].1[..]);
    let framed: [(&str, u8, u16, &[u8]); 7] = [
        ("session-i-bytewise", 1, 1024, session_i),
        ("session-a-chunk7", 7, 1024, session_a),
        ("session-i-limit16", 64, 16, session_i),
        ("session-a-default-limit", 200, 0, session_a),
        ("data-4gib", 3, 1024, &[0x10, 0xff, 0xff, 0xff, 0xff]),
        ("hello-over-limit", 5, 1024, &[0x01, 0, 0, 0x10, 0x01]),
        ("unknown-kind", 9, 1024, &[0x11, 0, 0, 0, 2, 0, 0, 0x7f]),
    ];
    for (name, chunk, max_frame, stream) in framed {
        add(
            "frame_decoder",
            name,
            frame::encode_input(chunk, max_frame, stream),
        );
    }

    // join_messages: recorded bodies, for verifiers with and without the secret, with
    // and without a channel binding, at several clocks.
    let (hello, welcome) = (FrameKind::Hello, FrameKind::Welcome);
    let (reject, close) = (FrameKind::Reject, FrameKind::Close);
    let keyed = join::selector(true, false, 0);
    let unkeyed_sel = join::selector(false, false, 0);
    let bound = join::selector(true, true, 0);
    let bodies = [
        ("hello", keyed, plain.body(I, hello)),
        ("welcome", keyed, plain.body(A, welcome)),
        ("hello-unkeyed", unkeyed_sel, unkeyed.body(I, hello)),
        ("welcome-unkeyed", unkeyed_sel, unkeyed.body(A, welcome)),
        ("hello-foreign-key", keyed, wrong_secret.body(I, hello)),
        ("hello-other-cluster", keyed, other_cluster.body(I, hello)),
        ("hello-other-binding", bound, plain.body(I, hello)),
        (
            "hello-skewed",
            join::selector(true, false, 2),
            plain.body(I, hello),
        ),
        (
            "hello-at-tolerance",
            join::selector(true, false, 1),
            plain.body(I, hello),
        ),
        ("welcome-other-binding", bound, plain.body(A, welcome)),
        ("reject-unknown-key", keyed, wrong_secret.body(A, reject)),
        ("reject-cluster", keyed, other_cluster.body(A, reject)),
        // The CLOSE body without its frame-authentication tag.
        ("close-normal", keyed, unkeyed.body(I, close)),
        ("close-timeout", keyed, timeout.body(A, close)),
    ];
    for (name, selector, body) in &bodies {
        add("join_messages", name, join::encode_input(*selector, body));
    }

    // The single connections: the peer's recorded stream, whole, chunked, lazily
    // polled, interleaved with the application's commands and the clock.
    let http = b"GET / HTTP/1.1\r\nHost: node-b\r\n\r\n".to_vec();
    let client_hello = tls.chunks[0][0].to_vec();
    for (target, peer, refused, refused_too) in [
        (
            "connection_acceptor_plain",
            I,
            &wrong_secret,
            &other_cluster,
        ),
        ("connection_initiator_plain", A, &wrong_secret, &timeout),
    ] {
        let stream = plain.stream(peer);
        let join_len = plain.chunks[fixtures::idx(peer)][0].len();
        let (join, rest) = stream.split_at(join_len);
        add(
            target,
            "session",
            conn::encode(
                3,
                false,
                &[C::Rest {
                    chunk: 0,
                    bytes: &stream,
                }],
            ),
        );
        add(
            target,
            "session-chunk49-lazy-window64",
            conn::encode(
                0,
                true,
                &[C::Rest {
                    chunk: 49,
                    bytes: &stream,
                }],
            ),
        );
        add(
            target,
            "session-bytewise-window1k",
            conn::encode(
                1,
                false,
                &[C::Rest {
                    chunk: 1,
                    bytes: &stream,
                }],
            ),
        );
        add(
            target,
            "join-send-close",
            conn::encode(
                2,
                false,
                &[
                    C::Input(join),
                    C::Send(0),
                    C::Send(1024),
                    C::Send(1025),
                    C::Poll,
                    C::Close(1),
                    C::Input(rest),
                ],
            ),
        );
        add(
            target,
            "join-wait-lazy",
            conn::encode(
                0,
                true,
                &[
                    C::Input(join),
                    C::Advance(60_000),
                    C::Input(rest),
                    C::Poll,
                    C::Eof,
                ],
            ),
        );
        add(
            target,
            "join-frames-lazy-window64",
            conn::encode(
                0,
                true,
                &[
                    C::Input(join),
                    C::Frames {
                        kind: 0x10,
                        len: 16,
                        count: 3,
                    },
                    C::Frames {
                        kind: 0x10,
                        len: 255,
                        count: 2,
                    },
                    C::Poll,
                    C::Frames {
                        kind: 0x10,
                        len: 0,
                        count: 2,
                    },
                    C::Frames {
                        kind: 0x11,
                        len: 4,
                        count: 1,
                    },
                ],
            ),
        );
        add(
            target,
            "join-small-frames-lazy-window64",
            conn::encode(
                0,
                true,
                &[
                    C::Input(join),
                    C::Frames {
                        kind: 0x10,
                        len: 0,
                        count: 40,
                    },
                    C::Frames {
                        kind: 0x10,
                        len: 1,
                        count: 40,
                    },
                    C::Poll,
                    C::Frames {
                        kind: 0x10,
                        len: 3,
                        count: 40,
                    },
                ],
            ),
        );
        add(
            target,
            "join-eof",
            conn::encode(3, false, &[C::Input(join), C::Short(&rest[..7]), C::Eof]),
        );
        add(
            target,
            "timeout",
            conn::encode(
                3,
                false,
                &[C::Short(&PREFACE), C::Advance(9_999), C::Advance(1)],
            ),
        );
        add(
            target,
            "refused",
            conn::encode(
                3,
                false,
                &[C::Rest {
                    chunk: 0,
                    bytes: &refused.stream(peer),
                }],
            ),
        );
        add(
            target,
            "refused-too",
            conn::encode(
                3,
                false,
                &[C::Rest {
                    chunk: 0,
                    bytes: &refused_too.stream(peer),
                }],
            ),
        );
        add(target, "http", conn::encode(3, false, &[C::Input(&http)]));
        add(
            target,
            "tls-client",
            conn::encode(3, false, &[C::Input(&client_hello)]),
        );
    }
    let mut tls_ops: Vec<C<'_>> = tls.chunks[0].iter().map(|c| C::Input(c)).collect();
    add(
        "connection_acceptor_tls",
        "session",
        conn::encode(3, false, &tls_ops),
    );
    tls_ops.insert(1, C::Poll);
    add(
        "connection_acceptor_tls",
        "session-lazy-window64",
        conn::encode(0, true, &tls_ops),
    );
    add(
        "connection_acceptor_tls",
        "client-hello-bytewise",
        conn::encode(
            3,
            false,
            &[C::Rest {
                chunk: 1,
                bytes: &client_hello,
            }],
        ),
    );
    add(
        "connection_acceptor_tls",
        "client-hello-timeout",
        conn::encode(3, false, &[C::Input(&client_hello), C::Advance(10_000)]),
    );
    add(
        "connection_acceptor_tls",
        "plaintext-peer",
        conn::encode(3, false, &[C::Input(&plain.stream(I))]),
    );
    add(
        "connection_acceptor_tls",
        "http",
        conn::encode(3, false, &[C::Input(&http)]),
    );
    // The same acceptor, permissive (PROTOCOL.md §8.1): plaintext and unkeyed peers join.
    let permissive = |mut input: Vec<u8>| {
        input[0] |= conn::PERMISSIVE;
        input
    };
    let plain_stream = plain.stream(I);
    let unkeyed_stream = unkeyed.stream(I);
    for (name, ops) in [
        ("permissive-tls-session", tls_ops.clone()),
        (
            "permissive-plaintext-session",
            vec![C::Rest {
                chunk: 0,
                bytes: &plain_stream,
            }],
        ),
        (
            "permissive-unkeyed-session-chunk49",
            vec![C::Rest {
                chunk: 49,
                bytes: &unkeyed_stream,
            }],
        ),
        ("permissive-http", vec![C::Input(&http)]),
        ("permissive-timeout", vec![C::Advance(2_000)]),
    ] {
        add(
            "connection_acceptor_tls",
            name,
            permissive(conn::encode(3, false, &ops)),
        );
    }

    // pair_ops: operation sequences on a live link.
    let talk = [
        P::Pump(4),
        P::Send { from: I, len: 100 },
        P::Send { from: A, len: 1024 },
        P::Send { from: I, len: 0 },
        P::Deliver { to: A, max: 7 },
        P::Pump(2),
        P::Close { side: I, code: 0 },
        P::Pump(2),
    ];
    let flip_data = [
        P::Pump(4),
        P::Send { from: I, len: 300 },
        P::Send { from: I, len: 300 },
        P::Flip {
            to: A,
            offset: 400,
            mask: 0x20,
        },
        P::Pump(3),
    ];
    for (tls, tag) in [(false, "plain"), (true, "tls")] {
        add(
            "pair_ops",
            &format!("{tag}-talk"),
            pair::encode(tls, true, 3, false, &talk),
        );
        add(
            "pair_ops",
            &format!("{tag}-talk-lazy-window64"),
            pair::encode(
                tls,
                true,
                0,
                true,
                &[&talk[..], &[P::Poll(A), P::Poll(I), P::Pump(2)]].concat(),
            ),
        );
        add(
            "pair_ops",
            &format!("{tag}-flip-hello"),
            pair::encode(
                tls,
                true,
                3,
                false,
                &[
                    P::Flip {
                        to: A,
                        offset: 20,
                        mask: 1,
                    },
                    P::Pump(4),
                    P::Advance(10_000),
                    P::Pump(2),
                ],
            ),
        );
        add(
            "pair_ops",
            &format!("{tag}-flip-data"),
            pair::encode(tls, true, 1, false, &flip_data),
        );
        add(
            "pair_ops",
            &format!("{tag}-abort"),
            pair::encode(
                tls,
                true,
                3,
                false,
                &[
                    P::Pump(4),
                    P::Send { from: A, len: 9 },
                    P::Abort(A),
                    P::Pump(2),
                ],
            ),
        );
        add(
            "pair_ops",
            &format!("{tag}-timeout"),
            pair::encode(
                tls,
                true,
                3,
                false,
                &[P::Deliver { to: A, max: 3 }, P::Advance(10_000), P::Pump(3)],
            ),
        );
        add(
            "pair_ops",
            &format!("{tag}-unkeyed"),
            pair::encode(tls, false, 3, false, &talk),
        );
    }
    seeds
}

#[test]
#[ignore = "writes fuzz/corpus; run with PALISADE_WRITE_FUZZ_CORPUS=1"]
fn write_seed_corpus() {
    if std::env::var_os("PALISADE_WRITE_FUZZ_CORPUS").is_none() {
        eprintln!("PALISADE_WRITE_FUZZ_CORPUS is not set: nothing written");
        return;
    }
    for (target, files) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    let (ran, failures) = run_all(&["corpus"]);
    assert!(
        failures.is_empty(),
        "{} of {ran} seeds fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The seeds are what their names say: recorded traffic replays to a join, so the
/// fuzzer starts from joined links and mutates from there.
#[test]
fn recorded_traffic_replays_to_a_join_in_the_targets() {
    let seeds = seeds();
    let acceptor = conn::run(A, false, &seeds["connection_acceptor_plain"]["session"]);
    assert!(acceptor.joined.is_some(), "{:?}", acceptor.closed);
    assert_eq!(acceptor.frames.len(), 4);
    assert!(matches!(
        acceptor.closed,
        Some(palisade_core::CloseCause::Peer(_))
    ));
    let tls_seeds = &seeds["connection_acceptor_tls"];
    for (name, plaintext, without_secret) in [
        ("permissive-plaintext-session", true, false),
        ("permissive-unkeyed-session-chunk49", true, true),
    ] {
        let acceptor = conn::run(A, true, &tls_seeds[name]);
        let peer = acceptor.joined.as_ref().unwrap_or_else(|| panic!("{name}"));
        assert_eq!(
            (
                peer.below_strict.plaintext,
                peer.below_strict.without_secret
            ),
            (plaintext, without_secret),
            "{name}"
        );
        assert_eq!(acceptor.frames.len(), 4, "{name}");
    }
    // Strict, the same plaintext peer is refused.
    let strict = conn::run(A, true, &tls_seeds["plaintext-peer"]);
    assert!(strict.joined.is_none());
    let initiator = conn::run(I, false, &seeds["connection_initiator_plain"]["session"]);
    assert!(initiator.joined.is_some(), "{:?}", initiator.closed);
    assert_eq!(initiator.frames.len(), 2);

    assert_eq!(
        join::run(&seeds["join_messages"]["hello"]),
        (Some(true), None)
    );
    assert_eq!(
        join::run(&seeds["join_messages"]["welcome"]),
        (None, Some(true))
    );
    assert_eq!(
        join::run(&seeds["join_messages"]["hello-unkeyed"]),
        (Some(true), None)
    );
    assert_eq!(
        join::run(&seeds["join_messages"]["hello-foreign-key"]),
        (Some(false), None)
    );

    for tls in ["plain", "tls"] {
        let [i, a] = pair::run(&seeds["pair_ops"][&format!("{tls}-talk")]);
        assert!(
            i.joined.is_some() && a.joined.is_some(),
            "{tls}: {:?} {:?}",
            i.closed,
            a.closed
        );
        assert_eq!((i.frames.len(), a.frames.len()), (1, 2), "{tls}");
    }
}
