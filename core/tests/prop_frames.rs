//! Property tests for the frame codec (docs/PROTOCOL.md §3): `encode` / `encode_header`
//! against `FrameDecoder`, fed in arbitrary chunks, plus the limits a `Connection`
//! enforces on frame headers.
//!
//! Run more cases with `PROPTEST_CASES=10000 cargo test -p palisade-core --test prop_frames`.

mod common;

use bytes::BytesMut;
use palisade_core::frame::{
    encode, encode_header, Frame, FrameKind, HEADER_LEN, MAX_CONTROL_PAYLOAD,
};
use palisade_core::preface::PREFACE;
use palisade_core::{
    CloseCause, CloseCode, Config, ConnectionError, FrameDecoder, FrameError, Side,
};
use proptest::prelude::*;
use proptest::sample::Index;

use common::*;

const DEFAULT_CASES: u32 = 64;

fn config() -> ProptestConfig {
    proptest_config(regressions!("prop_frames"), DEFAULT_CASES)
}

const KIB_64: usize = 64 * 1024;

/// A frame to encode: its kind and payload, within the kind's limit for a decoder whose
/// max_frame is at least 64 KiB.
fn frame_spec() -> impl Strategy<Value = (FrameKind, Blob)> {
    any_kind().prop_flat_map(|kind| {
        let max = if kind.is_control() {
            MAX_CONTROL_PAYLOAD
        } else {
            KIB_64
        };
        (Just(kind), blob(max))
    })
}

/// What the spec says the decoder must do with `buf` (the undecoded bytes): the oracle
/// for every `decode` call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// A whole frame of this many bytes (header included) is at the front.
    Frame(FrameKind, usize),
    /// More bytes are needed; `need` is the whole frame's length once the header is in.
    More {
        need: Option<usize>,
    },
    Error(FrameError),
}

fn expect(buf: &[u8], max_frame: usize) -> Expect {
    let Some(&first) = buf.first() else {
        return Expect::More { need: None };
    };
    let kind = match first {
        0x01 => FrameKind::Hello,
        0x02 => FrameKind::Welcome,
        0x03 => FrameKind::Reject,
        0x04 => FrameKind::Rejoin,
        0x05 => FrameKind::Rejoined,
        0x06 => FrameKind::Rekey,
        0x10 => FrameKind::Data,
        0x11 => FrameKind::Close,
        other => return Expect::Error(FrameError::UnknownKind(other)),
    };
    if buf.len() < HEADER_LEN {
        return Expect::More { need: None };
    }
    let declared = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let limit = if kind == FrameKind::Data {
        max_frame
    } else {
        MAX_CONTROL_PAYLOAD
    };
    if declared as usize > limit {
        return Expect::Error(FrameError::TooLarge {
            kind,
            declared: u64::from(declared),
            max: limit,
        });
    }
    let total = HEADER_LEN + declared as usize;
    if buf.len() < total {
        Expect::More { need: Some(total) }
    } else {
        Expect::Frame(kind, total)
    }
}

/// Feeds `stream` to a decoder in chunks (cycling through `chunks`), checking every
/// `decode` call against [`expect`] and every yielded frame for canonical re-encoding.
/// Returns the frames and how the stream ended.
struct Feed {
    frames: Vec<Frame>,
    end: Result<(), FrameError>,
    /// Bytes left undecoded at the end.
    rest: BytesMut,
}

fn feed(stream: &[u8], chunks: &[usize], max_frame: usize) -> Feed {
    let mut dec = FrameDecoder::new(max_frame);
    assert_eq!(dec.max_frame(), max_frame);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0; // bytes of `stream` appended to `buf`
    let mut consumed = 0; // bytes of `stream` the decoder split off
    let mut chunk_iter = chunks.iter().cycle();
    loop {
        // Decode until the decoder wants more.
        loop {
            let before = buf.clone();
            let cap_before = buf.capacity();
            let oracle = expect(&before, max_frame);
            assert_eq!(
                dec.frame_len(&before),
                match &oracle {
                    Expect::Frame(_, total) => Ok(Some(*total)),
                    Expect::More { need } => Ok(*need),
                    Expect::Error(e) => Err(e.clone()),
                },
                "frame_len disagrees with the spec on {:02x?}",
                &before[..before.len().min(8)]
            );
            match (dec.decode(&mut buf), oracle) {
                (Ok(Some(frame)), Expect::Frame(kind, total)) => {
                    assert_eq!(frame.kind, kind);
                    assert_eq!(frame.payload.len() + HEADER_LEN, total);
                    assert_eq!(
                        buf.len(),
                        before.len() - total,
                        "consumed exactly one frame"
                    );
                    // (c) canonical: the frame re-encodes to exactly the bytes consumed.
                    let mut again = BytesMut::new();
                    encode(frame.kind, &frame.payload, &mut again);
                    assert_eq!(&again[..], &stream[consumed..consumed + total]);
                    assert_eq!(&again[..], &before[..total]);
                    consumed += total;
                    frames.push(frame);
                }
                (Ok(None), Expect::More { need }) => {
                    assert_eq!(buf, before, "Ok(None) leaves the bytes in place");
                    // (b) Nothing whole is left behind: what stays buffered is less than
                    // one frame, and a frame is at most header + its kind's limit.
                    let limit = max_frame.max(MAX_CONTROL_PAYLOAD);
                    assert!(buf.len() < HEADER_LEN + limit);
                    if let Some(need) = need {
                        assert!(buf.len() < need && need <= HEADER_LEN + limit);
                        assert!(
                            buf.capacity() >= need,
                            "the decoder reserves room for the body it waits for"
                        );
                    }
                    // Truncation report for a stream that ends here.
                    let truncation = dec.truncation(&buf);
                    if buf.is_empty() {
                        assert_eq!(truncation, None);
                    } else {
                        assert_eq!(
                            truncation,
                            Some(FrameError::Truncated {
                                have: buf.len(),
                                need: need.map(|n| n as u64)
                            })
                        );
                    }
                    break;
                }
                (Err(err), Expect::Error(want)) => {
                    assert_eq!(err, want);
                    assert_eq!(buf, before, "an error consumes nothing");
                    assert_eq!(
                        buf.capacity(),
                        cap_before,
                        "nothing is reserved for a refused frame"
                    );
                    // (d) Sticky: the same error again, and again with more bytes behind.
                    assert_eq!(dec.decode(&mut buf), Err(err.clone()));
                    let mut more = buf.clone();
                    more.extend_from_slice(&stream[fed..]);
                    more.extend_from_slice(&[0x10, 0, 0, 0, 0]);
                    assert_eq!(dec.decode(&mut more), Err(err.clone()));
                    assert_eq!(dec.frame_len(&more), Err(err.clone()));
                    return Feed {
                        frames,
                        end: Err(err),
                        rest: buf,
                    };
                }
                (got, want) => panic!(
                    "decode returned {got:?}, the spec says {want:?} for {:02x?}…",
                    &before[..before.len().min(8)]
                ),
            }
        }
        if fed == stream.len() {
            return Feed {
                frames,
                end: Ok(()),
                rest: buf,
            };
        }
        let n = (*chunk_iter.next().unwrap_or(&1))
            .max(1)
            .min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    }
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(chunk_len(), 1..=32)
}

/// A max_frame of at least 64 KiB, with the boundaries represented.
fn big_max_frame() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(KIB_64),
        KIB_64..=(u32::MAX as usize),
        Just(u32::MAX as usize)
    ]
}

/// Any max_frame a decoder can be built with, small ones well represented.
fn any_max_frame() -> impl Strategy<Value = usize> {
    prop_oneof![
        0..=64usize,
        0..=8192usize,
        Just(palisade_core::frame::DEFAULT_MAX_FRAME),
        0..=(u32::MAX as usize),
    ]
}

/// Byte streams with structure: valid frames, headers with arbitrary lengths, headers
/// right at a kind's limit for `max_frame` (one under, at, one over), random bytes.
fn segment(max_frame: usize) -> impl Strategy<Value = Vec<u8>> {
    let header = |k: FrameKind, len: u64| {
        let mut v = vec![k.to_byte()];
        v.extend_from_slice(&(len.min(u64::from(u32::MAX)) as u32).to_be_bytes());
        v
    };
    prop_oneof![
        3 => (any_kind(), prop::collection::vec(any::<u8>(), 0..=48))
            .prop_map(|(k, body)| frame_bytes(k, &body).to_vec()),
        2 => (any_kind(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..=16)).prop_map(
            move |(k, len, tail)| {
                let mut v = header(k, u64::from(len));
                v.extend_from_slice(&tail);
                v
            }
        ),
        2 => (any_kind(), 0..=300u64).prop_map(move |(k, len)| header(k, len)),
        3 => (any_kind(), 0..=2u64).prop_map(move |(k, delta)| {
            let limit = FrameDecoder::new(max_frame).limit(k) as u64;
            header(k, (limit + delta).saturating_sub(1))
        }),
        2 => prop::collection::vec(any::<u8>(), 0..=64),
    ]
}

/// A max_frame and a byte stream to decode with it.
fn stream() -> impl Strategy<Value = (usize, Vec<u8>)> {
    any_max_frame().prop_flat_map(|max_frame| {
        (
            Just(max_frame),
            prop_oneof![
                3 => prop::collection::vec(segment(max_frame), 0..=12).prop_map(|s| s.concat()),
                1 => prop::collection::vec(any::<u8>(), 0..=512),
            ],
        )
    })
}

proptest! {
    #![proptest_config(config())]

    /// (a) encode → decode in arbitrary chunks gives back the frames, in order, and ends
    /// cleanly with nothing left over.
    #[test]
    fn encoded_frames_decode_back_in_order_from_any_chunking(
        frames in prop::collection::vec(frame_spec(), 0..=16),
        chunks in chunks(),
        max_frame in big_max_frame(),
    ) {
        let mut stream = BytesMut::new();
        for (kind, Blob(body)) in &frames {
            let before = stream.len();
            encode(*kind, body, &mut stream);
            // encode_header writes exactly the header encode writes.
            let mut header = BytesMut::new();
            encode_header(*kind, body.len(), &mut header);
            prop_assert_eq!(&stream[before..before + HEADER_LEN], &header[..]);
            prop_assert_eq!(stream.len() - before, HEADER_LEN + body.len());
        }
        let out = feed(&stream, &chunks, max_frame);
        prop_assert_eq!(out.end, Ok(()));
        prop_assert!(out.rest.is_empty());
        let decoded: Vec<(FrameKind, Blob)> =
            out.frames.into_iter().map(|f| (f.kind, Blob(f.payload))).collect();
        prop_assert_eq!(decoded, frames);
    }

    /// (b) A header announcing more than the kind's limit fails with TooLarge as soon as
    /// its 5 bytes are in, before any body byte, reserving nothing; 1..=4 header bytes
    /// are not an error yet. A header at the limit is fine.
    #[test]
    fn an_oversized_header_fails_on_its_fifth_byte(
        before in prop::collection::vec(frame_spec(), 0..=3),
        kind in any_kind(),
        max_frame in any_max_frame(),
        over in any::<Index>(),
        body in prop::collection::vec(any::<u8>(), 0..=64),
    ) {
        let limit = if kind.is_control() { MAX_CONTROL_PAYLOAD } else { max_frame };
        prop_assume!(limit < u32::MAX as usize);
        let declared = (limit + 1 + over.index(u32::MAX as usize - limit)) as u32;
        prop_assert!(declared as usize > limit);

        let mut dec = FrameDecoder::new(max_frame);
        prop_assert_eq!(dec.limit(kind), limit);

        let mut stream = BytesMut::new();
        for (k, Blob(b)) in &before {
            // The preceding frames must fit this decoder.
            if b.len() <= dec.limit(*k) {
                encode(*k, b, &mut stream);
            }
        }
        let mut header = BytesMut::new();
        encode_header(kind, declared as usize, &mut header);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&stream);
        while let Some(_f) = dec.decode(&mut buf).expect("valid frames") {}
        prop_assert!(buf.is_empty());
        for n in 1..HEADER_LEN {
            let mut partial = BytesMut::from(&header[..n]);
            prop_assert_eq!(dec.decode(&mut partial), Ok(None));
        }
        buf.extend_from_slice(&header);
        let cap = buf.capacity();
        let err = FrameError::TooLarge { kind, declared: u64::from(declared), max: limit };
        prop_assert_eq!(dec.decode(&mut buf), Err(err.clone()));
        prop_assert_eq!(buf.len(), HEADER_LEN);
        prop_assert_eq!(buf.capacity(), cap);
        prop_assert_eq!(dec.frame_len(&buf), Err(err.clone()));
        // Body bytes arriving later change nothing.
        buf.extend_from_slice(&body);
        prop_assert_eq!(dec.decode(&mut buf), Err(err.clone()));
        prop_assert_eq!(
            dec.truncation(&buf),
            Some(FrameError::Truncated { have: buf.len(), need: None })
        );
        // The same header at the limit is accepted and waits for its body.
        let mut at_limit = BytesMut::new();
        encode_header(kind, limit, &mut at_limit);
        prop_assert_eq!(dec.frame_len(&at_limit), Ok(Some(HEADER_LEN + limit)));
    }

    /// (b, c, d) Arbitrary byte streams in arbitrary chunks: every decode call does what
    /// the spec's rules say (frame, need more, or the right typed error), errors are
    /// sticky and consume nothing, decoded frames re-encode to exactly the bytes
    /// consumed, and a whole frame is never left undecoded.
    #[test]
    fn arbitrary_streams_decode_as_the_spec_says(
        (max_frame, stream) in stream(),
        chunks in chunks(),
    ) {
        let out = feed(&stream, &chunks, max_frame);
        let consumed: usize = out.frames.iter().map(|f| HEADER_LEN + f.payload.len()).sum();
        if out.end.is_ok() {
            prop_assert_eq!(consumed + out.rest.len(), stream.len());
        } else {
            prop_assert!(consumed + out.rest.len() <= stream.len());
        }
        // Chunking never changes the outcome: feeding everything at once agrees.
        let whole = feed(&stream, &[usize::MAX], max_frame);
        prop_assert_eq!(whole.frames, out.frames);
        prop_assert_eq!(whole.end, out.end);
    }

    /// (d) A connection fed arbitrary bytes (after a valid preface or not), in arbitrary
    /// chunks, never panics, reports at most one Closed (last) and no frames, answers
    /// with a well-formed stream, and takes all input once closed. EOF always closes it.
    #[test]
    fn a_connection_survives_arbitrary_bytes(
        side in prop::sample::select(vec![Side::Initiator, Side::Acceptor]),
        with_preface in any::<bool>(),
        with_secret in any::<bool>(),
        (_, stream) in stream(),
        chunks in chunks(),
        seed in any::<u64>(),
    ) {
        let mut cfg = Config::new("prod", "node");
        if with_secret {
            cfg = cfg.with_secret(secret(7));
        }
        let endpoint = Node::endpoint(cfg, seed);
        let now = std::time::Instant::now();
        let mut node = match side {
            Side::Initiator => Node::connect(&endpoint, now, EPOCH_MS),
            Side::Acceptor => Node::accept(&endpoint, now, EPOCH_MS),
        };
        let mut input = Vec::new();
        if with_preface {
            input.extend_from_slice(&PREFACE);
        }
        input.extend_from_slice(&stream);
        let mut at = 0;
        for n in chunks.iter().cycle() {
            if at == input.len() {
                break;
            }
            let n = (*n).min(input.len() - at);
            node.input(&input[at..at + n]);
            node.flush();
            at += n;
        }
        let log = node.log("node");
        prop_assert!(log.joined.is_none(), "random bytes joined: {:?}", log.joined);
        prop_assert!(log.frames.is_empty());
        if node.conn.is_closed() {
            prop_assert!(log.closed.is_some());
            let events = node.events.len();
            prop_assert_eq!(node.conn.handle_input(&[0x10, 0, 0], node.now), 3);
            node.eof();
            prop_assert_eq!(node.events.len(), events, "events after Closed");
        } else {
            node.eof();
            prop_assert!(node.conn.is_closed());
        }
        node.flush();
        prop_assert!(node.conn.is_drained());
        let log = node.log("node");
        prop_assert!(log.closed.is_some());
        node.wire().assert_well_formed("node");
    }

    /// (b) At the connection level (PROTOCOL.md §3): a DATA header over this node's
    /// max_frame after the join ends the link with FrameTooLarge and CLOSE code 3, before
    /// any body byte.
    #[test]
    fn a_joined_connection_refuses_an_oversized_data_header_with_close_3(
        max_frame in prop_oneof![1..=4096usize, 1..=(u32::MAX as usize - 1)],
        over in any::<Index>(),
        seed in any::<u64>(),
    ) {
        let declared = max_frame as u64 + 1 + over.index(u32::MAX as usize - max_frame) as u64;
        let mut acc = Config::new("prod", "b");
        acc.max_frame = max_frame;
        let mut link = Duplex::new(Config::new("prod", "a"), acc, seed);
        link.transmit();
        link.deliver(1, usize::MAX, true);
        link.transmit();
        link.deliver(0, usize::MAX, true);
        prop_assert!(link.nodes[0].conn.is_joined() && link.nodes[1].conn.is_joined());
        let acceptor = &mut link.nodes[1];
        let mut header = BytesMut::new();
        encode_header(FrameKind::Data, declared as usize, &mut header);
        acceptor.input(&header);
        let want = FrameError::TooLarge {
            kind: FrameKind::Data,
            declared,
            max: max_frame,
        };
        prop_assert_eq!(
            acceptor.conn.close_cause(),
            Some(&CloseCause::Error(ConnectionError::Frame(want)))
        );
        acceptor.flush();
        let wire = acceptor.wire();
        wire.assert_well_formed("acceptor");
        prop_assert_eq!(wire.close_reason().map(|r| r.code), Some(CloseCode::FrameTooLarge));
    }
}

proptest! {
    #![proptest_config(config())]

    /// PROTOCOL.md §3: "Over the limit: CLOSE code 3 (frame too large) for DATA, code 2
    /// for control frames." A control-frame header over 4096 bytes, during the join or
    /// after it, must be answered with CLOSE code 2 (protocol error).
    #[test]
    fn an_oversized_control_header_is_answered_with_close_2(
        kind in prop::sample::select(vec![
            FrameKind::Hello, FrameKind::Welcome, FrameKind::Reject, FrameKind::Close,
            FrameKind::Rejoin, FrameKind::Rejoined, FrameKind::Rekey,
        ]),
        joined in any::<bool>(),
        over in any::<Index>(),
        seed in any::<u64>(),
    ) {
        let declared = MAX_CONTROL_PAYLOAD + 1 + over.index(u32::MAX as usize - MAX_CONTROL_PAYLOAD);
        let mut link = Duplex::new(Config::new("prod", "a"), Config::new("prod", "b"), seed);
        link.transmit();
        if joined {
            link.deliver(1, usize::MAX, true);
            link.transmit();
            link.deliver(0, usize::MAX, true);
            prop_assert!(link.nodes[1].conn.is_joined());
        }
        let acceptor = &mut link.nodes[1];
        let mut input = BytesMut::new();
        if !joined {
            input.extend_from_slice(&PREFACE);
        }
        encode_header(kind, declared, &mut input);
        acceptor.input(&input);
        let cause = acceptor.conn.close_cause().cloned();
        let too_large = matches!(
            &cause,
            Some(CloseCause::Error(ConnectionError::Frame(FrameError::TooLarge { .. })))
        );
        prop_assert!(too_large, "closed with {:?}", cause);
        acceptor.flush();
        let wire = acceptor.wire();
        wire.assert_well_formed("acceptor");
        prop_assert_eq!(wire.close_reason().map(|r| r.code), Some(CloseCode::ProtocolError));
    }
}
