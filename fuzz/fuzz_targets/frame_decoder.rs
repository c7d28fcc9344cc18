//! Arbitrary bytes, fed in arbitrary chunk sizes, into the frame decoder: it never panics,
//! never buffers past `max_frame` + header, and every frame it yields re-encodes to the
//! bytes it was decoded from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use palisade_core::frame::{encode, FrameDecoder, HEADER_LEN};

const MAX_FRAME: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let mut again = BytesMut::new();
                    encode(frame.kind, &frame.payload, &mut again);
                    assert_eq!(&again[..], &before[..again.len()]);
                    consumed += again.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(buf.len() <= MAX_FRAME + HEADER_LEN + chunk);
        }
        assert!(buf.len() < MAX_FRAME + HEADER_LEN + chunk);
    }
    assert!(consumed <= stream.len());
});
