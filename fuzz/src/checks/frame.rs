//! `frame_decoder`: arbitrary bytes, fed in arbitrary chunk sizes, into the frame
//! decoder. It never panics; it never holds more than one incomplete frame (at most
//! `max_frame` + header for DATA, the control limit + header for the others) nor
//! reserves memory for a body over the limit; `frame_len` and `truncation` agree with
//! `decode`; and the frames it yields re-encode to exactly the bytes they came from.
//!
//! Input: chunk size (u8, 0 read as 1), `max_frame` (u16, 0 meaning the 8 MiB default),
//! then the stream.

use bytes::BytesMut;
use palisade_core::frame::{
    encode, FrameDecoder, FrameError, FrameKind, DEFAULT_MAX_FRAME, HEADER_LEN, MAX_CONTROL_PAYLOAD,
};

use super::input::{put_u16, Input};

/// A whole input.
pub fn encode_input(chunk: u8, max_frame: u16, stream: &[u8]) -> Vec<u8> {
    let mut out = vec![chunk];
    put_u16(&mut out, max_frame);
    out.extend_from_slice(stream);
    out
}

/// The check.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let chunk = usize::from(input.u8()).max(1);
    let max_frame = match input.u16() {
        0 => DEFAULT_MAX_FRAME,
        n => usize::from(n),
    };
    let stream = input.rest();
    let mut decoder = FrameDecoder::new(max_frame);
    assert_eq!(decoder.max_frame(), max_frame);
    // The most an incomplete frame may hold.
    let largest = HEADER_LEN + max_frame.max(MAX_CONTROL_PAYLOAD);
    let mut buf = BytesMut::new();
    // Bytes of `stream` handed over so far, and the part of them yielded as frames.
    let (mut fed, mut yielded) = (0usize, 0usize);
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let announced = decoder.frame_len(&buf);
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.payload.len() <= decoder.limit(frame.kind));
                    let mut again = BytesMut::new();
                    encode(frame.kind, &frame.payload, &mut again);
                    assert_eq!(announced, Ok(Some(again.len())), "frame_len disagrees");
                    assert_eq!(
                        &again[..],
                        &stream[yielded..yielded + again.len()],
                        "a frame does not re-encode to its bytes"
                    );
                    yielded += again.len();
                    assert_eq!(buf.len(), fed - yielded, "decode took more than a frame");
                }
                Ok(None) => {
                    match announced {
                        Ok(Some(total)) => assert!(buf.len() < total, "a whole frame left"),
                        Ok(None) => assert!(buf.len() < HEADER_LEN, "a whole header left"),
                        Err(e) => panic!("frame_len failed ({e}) but decode waits"),
                    }
                    break;
                }
                Err(e) => {
                    assert_eq!(announced, Err(e.clone()), "frame_len disagrees");
                    check_error(&decoder, &e, &buf);
                    assert_eq!(&buf[..], &stream[yielded..fed], "an error consumed bytes");
                    check_capacity(&buf, largest, chunk);
                    return;
                }
            }
        }
        assert_eq!(&buf[..], &stream[yielded..fed]);
        assert!(
            buf.len() < largest,
            "{} bytes held for an incomplete frame (max_frame {max_frame})",
            buf.len()
        );
        check_capacity(&buf, largest, chunk);
    }
    match decoder.truncation(&buf) {
        None => assert!(buf.is_empty(), "a partial frame is not a truncation"),
        Some(FrameError::Truncated { have, need }) => {
            assert_eq!(have, buf.len());
            assert!(have > 0);
            if let Some(need) = need {
                assert!(need > have as u64 && need <= largest as u64);
            }
            let _ = FrameError::Truncated { have, need }.to_string();
        }
        Some(other) => panic!("truncation returned {other:?}"),
    }
}

fn check_error(decoder: &FrameDecoder, e: &FrameError, buf: &[u8]) {
    let _ = e.to_string();
    match e {
        FrameError::UnknownKind(byte) => {
            assert_eq!(buf.first(), Some(byte));
            assert_eq!(FrameKind::from_byte(*byte), None);
        }
        FrameError::TooLarge {
            kind,
            declared,
            max,
        } => {
            assert_eq!(buf.first(), Some(&kind.to_byte()));
            assert_eq!(*max, decoder.limit(*kind));
            assert!(*declared > *max as u64, "TooLarge within the limit");
        }
        other => panic!("decode returned {other:?}"),
    }
}

/// The buffer never grew far past what it holds: no memory was reserved for a body
/// over the limit.
fn check_capacity(buf: &BytesMut, largest: usize, chunk: usize) {
    let bound = (4 * (largest + chunk)).max(256 * 1024);
    assert!(
        buf.capacity() <= bound,
        "{} bytes reserved (bound {bound})",
        buf.capacity()
    );
}
