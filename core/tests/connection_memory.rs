//! A header that announces a huge frame costs the receiver nothing. Measured by the
//! process's virtual size (Linux `/proc/self/statm`): a body reserved up front shows up
//! there even before a byte of it is written. (A counting global allocator would need
//! `unsafe`, which the workspace forbids.)
//!
//! This binary holds one test only, so no other test allocates while it measures.

#![cfg(target_os = "linux")]

mod conn_support;

use conn_support::*;
use palisade_core::frame::{FrameKind, MAX_CONTROL_PAYLOAD};
use palisade_core::{CloseCause, ConnectionError, Event, FrameError};

fn virtual_size() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    pages * 4096
}

/// How much the process's virtual size grew while `f` ran.
fn growth(f: impl FnOnce()) -> usize {
    let before = virtual_size();
    f();
    virtual_size().saturating_sub(before)
}

#[test]
fn announced_sizes_over_the_limit_reserve_nothing_for_the_body() {
    const SMALL: usize = 256 * 1024;

    // The probe works: a legal 4 MiB DATA header makes the receiver reserve the body once.
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let now = pair.now();
    let legal = growth(|| {
        assert_eq!(pair.conn(A).handle_input(&[0x10, 0, 0x40, 0, 0], now), 5);
    });
    assert!(legal >= 4 << 20, "grew {legal} bytes");

    // A 4 GiB DATA header after the join.
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let now = pair.now();
    let conn = pair.conn(A);
    let huge = growth(|| {
        assert_eq!(conn.handle_input(&[0x10, 0xff, 0xff, 0xff, 0xff], now), 5);
        assert_eq!(conn.handle_input(&[0xab; 4096], now), 4096, "discarded");
    });
    assert!(huge < SMALL, "grew {huge} bytes");
    assert_eq!(
        conn.poll_event(),
        Some(Event::Closed(CloseCause::Error(ConnectionError::Frame(
            FrameError::TooLarge {
                kind: FrameKind::Data,
                declared: u64::from(u32::MAX),
                max: 8 * 1024 * 1024,
            }
        ))))
    );

    // A 4 GiB HELLO header before the join, from an unauthenticated peer.
    let mut solo = Solo::acceptor(plain("node-b"));
    let input = after_preface(&[0x01, 0xff, 0xff, 0xff, 0xff]);
    let huge = growth(|| {
        assert_eq!(solo.conn.handle_input(&input, solo.now), 15);
    });
    assert!(huge < SMALL, "grew {huge} bytes");
    solo.pump();
    assert_eq!(
        solo.error(),
        &ConnectionError::Frame(FrameError::TooLarge {
            kind: FrameKind::Hello,
            declared: u64::from(u32::MAX),
            max: MAX_CONTROL_PAYLOAD,
        })
    );

    // A 4 GiB DATA header before the join is refused on its kind byte.
    let mut solo = Solo::acceptor(plain("node-b"));
    let input = after_preface(&[0x10, 0xff, 0xff, 0xff, 0xff]);
    let huge = growth(|| {
        solo.conn.handle_input(&input, solo.now);
    });
    assert!(huge < SMALL, "grew {huge} bytes");
    solo.pump();
    assert!(matches!(
        solo.error(),
        ConnectionError::UnexpectedFrame {
            kind: FrameKind::Data,
            ..
        }
    ));
}
