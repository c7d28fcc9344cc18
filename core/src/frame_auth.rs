//! Frame authentication on plaintext links with a shared secret (docs/PROTOCOL.md §5.7).
//!
//! Without TLS the join proves that both sides hold the secret, but nothing would stop a
//! relay that passed the join through from injecting, dropping, reordering or replaying
//! the frames after it. So when a link is plaintext and its join used a secret, every frame
//! a joined side sends carries a 16-byte tag under a per-link, per-direction key, over an
//! implicit sequence number:
//!
//! ```text
//! link_key = HMAC(secret,   lp16("palisade/v1 frame key") ‖ lp16(hello) ‖ lp16(welcome))
//! key_I    = HMAC(link_key, "palisade/v1 initiator frames")
//! key_R    = HMAC(link_key, "palisade/v1 acceptor frames")
//! frame    = kind ‖ u32(len + 16) ‖ payload ‖ tag
//! tag      = first 16 bytes of HMAC(key_dir, u64 seq ‖ kind ‖ u32 len ‖ payload)
//! ```
//!
//! The key depends on both nonces (inside hello / welcome), so a frame is worthless on any
//! other link; the direction key stops reflection; the sequence number stops drops,
//! reordering and replays. Integrity only: the payload travels in the clear.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::close::CloseReason;
use crate::config::Side;
use crate::frame::FrameKind;
use crate::join::{hmac_with as hmac, SharedSecret};

/// Bytes of the tag that ends every authenticated frame.
pub const TAG_LEN: usize = 16;

const LINK_KEY_LABEL: &[u8] = b"palisade/v1 frame key";
const INITIATOR_LABEL: &[u8] = b"palisade/v1 initiator frames";
const ACCEPTOR_LABEL: &[u8] = b"palisade/v1 acceptor frames";

fn update_lp16(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    // Join messages are at most 4096 bytes, so the length always fits.
    mac.update(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
    mac.update(bytes);
}

fn finish(mac: Hmac<Sha256>) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// The keys of one link. Zeroed on drop; `Debug` shows nothing of them.
pub struct LinkKeys {
    link_key: Zeroizing<[u8; 32]>,
    key_i: Zeroizing<[u8; 32]>,
    key_r: Zeroizing<[u8; 32]>,
}

impl LinkKeys {
    /// Derives a link's keys from the secret the join used and the whole HELLO and WELCOME
    /// payloads (proofs included), exactly as they travelled.
    pub fn derive(secret: &SharedSecret, hello: &[u8], welcome: &[u8]) -> Self {
        let mut mac = secret.mac();
        update_lp16(&mut mac, LINK_KEY_LABEL);
        update_lp16(&mut mac, hello);
        update_lp16(&mut mac, welcome);
        let link_key = finish(mac);
        let direction = |label: &[u8]| {
            let mut mac = hmac(&link_key[..]);
            mac.update(label);
            finish(mac)
        };
        Self {
            key_i: direction(INITIATOR_LABEL),
            key_r: direction(ACCEPTOR_LABEL),
            link_key,
        }
    }

    /// The link key (exposed for the spec's test vectors).
    pub fn link_key(&self) -> &[u8; 32] {
        &self.link_key
    }

    /// The key that authenticates the initiator's frames.
    pub fn key_i(&self) -> &[u8; 32] {
        &self.key_i
    }

    /// The key that authenticates the acceptor's frames.
    pub fn key_r(&self) -> &[u8; 32] {
        &self.key_r
    }
}

impl fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKeys([redacted])")
    }
}

/// A frame after the join failed authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameAuthError {
    /// The frame is too short to hold a tag.
    TooShort {
        /// The frame's kind byte.
        kind: FrameKind,
        /// Its declared length.
        len: usize,
    },
    /// The tag does not verify.
    BadTag {
        /// The frame's kind byte.
        kind: FrameKind,
        /// The sequence number the frame should have had.
        seq: u64,
    },
}

const ADVICE: &str = "the link is being tampered with (a relay injecting, changing, dropping, \
                      reordering or replaying frames), or the peer's implementation is broken";

impl fmt::Display for FrameAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { kind, len } => write!(
                f,
                "a {kind} frame after the join failed authentication: it is {len} bytes, too short \
                 for its {TAG_LEN}-byte tag; {ADVICE}"
            ),
            Self::BadTag { kind, seq } => write!(
                f,
                "a {kind} frame after the join failed authentication (frame #{seq} from the peer): \
                 {ADVICE}"
            ),
        }
    }
}

impl std::error::Error for FrameAuthError {}

/// How a received frame passed [`FrameAuth::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The tag verified; the payload is the first `len` bytes of the body.
    Authenticated {
        /// Payload bytes, tag excluded.
        len: usize,
    },
    /// A REJECT or CLOSE the initiator sent before it was joined, received by a joined
    /// acceptor as the initiator's first frame. Unauthenticated: it can only end the link.
    BeforePeerJoined,
}

/// One link's frame authentication: both directions' keyed MAC states, computed once,
/// and both sequence numbers.
pub struct FrameAuth {
    side: Side,
    send: Hmac<Sha256>,
    recv: Hmac<Sha256>,
    send_seq: u64,
    recv_seq: u64,
}

impl FrameAuth {
    /// The state for `side` of a link with `keys`.
    pub fn new(keys: &LinkKeys, side: Side) -> Self {
        let (send, recv) = match side {
            Side::Initiator => (&keys.key_i, &keys.key_r),
            Side::Acceptor => (&keys.key_r, &keys.key_i),
        };
        Self {
            side,
            send: hmac(&send[..]),
            recv: hmac(&recv[..]),
            send_seq: 0,
            recv_seq: 0,
        }
    }

    /// After a re-join (PROTOCOL.md §5.8): this side's frames from now on are tagged under
    /// `keys`, where `role` is this side's role in the re-join (the side that sent REJOIN
    /// is the initiator). Sequence numbers go on counting.
    pub fn rekey_send(&mut self, keys: &LinkKeys, role: Side) {
        let key = match role {
            Side::Initiator => &keys.key_i,
            Side::Acceptor => &keys.key_r,
        };
        self.send = hmac(&key[..]);
    }

    /// After a re-join: the peer's frames from now on are checked under `keys`.
    pub fn rekey_recv(&mut self, keys: &LinkKeys, role: Side) {
        let key = match role {
            Side::Initiator => &keys.key_r,
            Side::Acceptor => &keys.key_i,
        };
        self.recv = hmac(&key[..]);
    }

    /// The tag for the next frame this side sends, which then takes the next sequence
    /// number. The caller puts `payload.len() + TAG_LEN` in the header.
    pub fn seal(&mut self, kind: FrameKind, payload: &[u8]) -> [u8; TAG_LEN] {
        let tag = tag(&self.send, self.send_seq, kind, payload);
        // 2^64 frames are out of reach; wrapping keeps this panic-free regardless.
        self.send_seq = self.send_seq.wrapping_add(1);
        tag
    }

    /// Checks the body (payload ‖ tag) of a received frame against the next receive
    /// sequence number, in constant time.
    pub fn open(&mut self, kind: FrameKind, body: &[u8]) -> Result<Opened, FrameAuthError> {
        let verified = body
            .len()
            .checked_sub(TAG_LEN)
            .and_then(|len| Some((len, body.get(..len)?, body.get(len..)?)))
            .filter(|(_, payload, received)| {
                let expected = tag(&self.recv, self.recv_seq, kind, payload);
                bool::from(expected.ct_eq(received))
            });
        if let Some((len, _, _)) = verified {
            self.recv_seq = self.recv_seq.wrapping_add(1);
            return Ok(Opened::Authenticated { len });
        }
        // The acceptor is joined when it sends WELCOME, the initiator only once it has
        // verified it: until the initiator's first authenticated frame, it may still have
        // refused the WELCOME (REJECT) or given up (CLOSE) without a key.
        let pre_join_end = self.side == Side::Acceptor
            && self.recv_seq == 0
            && match kind {
                FrameKind::Reject => true,
                FrameKind::Close => CloseReason::decode(body).is_ok(),
                _ => false,
            };
        if pre_join_end {
            return Ok(Opened::BeforePeerJoined);
        }
        Err(if body.len() < TAG_LEN {
            FrameAuthError::TooShort {
                kind,
                len: body.len(),
            }
        } else {
            FrameAuthError::BadTag {
                kind,
                seq: self.recv_seq,
            }
        })
    }
}

fn tag(mac: &Hmac<Sha256>, seq: u64, kind: FrameKind, payload: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = mac.clone();
    mac.update(&seq.to_be_bytes());
    mac.update(&[kind.to_byte()]);
    mac.update(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    mac.update(payload);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; TAG_LEN];
    for (dst, src) in out.iter_mut().zip(full.iter()) {
        *dst = *src;
    }
    out
}

impl Drop for FrameAuth {
    /// hmac 0.12 does not zero its keyed state on drop: overwrite both with a state keyed
    /// by zeros (best effort without `unsafe`; `black_box` keeps the stores).
    fn drop(&mut self) {
        self.send = hmac(&[0; 32]);
        self.recv = hmac(&[0; 32]);
        std::hint::black_box((&self.send, &self.recv));
    }
}

impl fmt::Debug for FrameAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAuth")
            .field("side", &self.side)
            .field("send_seq", &self.send_seq)
            .field("recv_seq", &self.recv_seq)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (FrameAuth, FrameAuth) {
        let secret = SharedSecret::new(vec![7u8; 32]).unwrap();
        let keys = LinkKeys::derive(&secret, b"hello", b"welcome");
        (
            FrameAuth::new(&keys, Side::Initiator),
            FrameAuth::new(&keys, Side::Acceptor),
        )
    }

    fn body(payload: &[u8], tag: [u8; TAG_LEN]) -> Vec<u8> {
        [payload, &tag[..]].concat()
    }

    #[test]
    fn frames_verify_in_order_only_and_in_their_own_direction() {
        let (mut i, mut a) = pair();
        let f0 = body(b"zero", i.seal(FrameKind::Data, b"zero"));
        let f1 = body(b"one", i.seal(FrameKind::Data, b"one"));
        assert!(a.open(FrameKind::Data, &f1).is_err(), "skipped frame 0");
        let (mut i2, mut a) = pair();
        let _ = i2.seal(FrameKind::Data, b"x");
        assert_eq!(
            a.open(FrameKind::Data, &f0),
            Ok(Opened::Authenticated { len: 4 })
        );
        assert!(a.open(FrameKind::Data, &f0).is_err(), "replay");
        assert!(a.open(FrameKind::Close, &f1).is_err(), "kind is covered");
        // Reflection: the initiator never accepts its own frame.
        let (mut i, _) = pair();
        let (mut sender, _) = pair();
        let own = body(b"zero", sender.seal(FrameKind::Data, b"zero"));
        assert!(matches!(
            i.open(FrameKind::Data, &own),
            Err(FrameAuthError::BadTag { seq: 0, .. })
        ));
    }

    #[test]
    fn short_frames_and_pre_join_endings() {
        let (mut i, mut a) = pair();
        assert_eq!(
            i.open(FrameKind::Data, b"short"),
            Err(FrameAuthError::TooShort {
                kind: FrameKind::Data,
                len: 5
            })
        );
        let close = CloseReason::normal().encode();
        assert_eq!(
            a.open(FrameKind::Close, &close),
            Ok(Opened::BeforePeerJoined)
        );
        assert!(i.open(FrameKind::Close, &close).is_err());
        let msg = FrameAuthError::BadTag {
            kind: FrameKind::Data,
            seq: 3,
        }
        .to_string();
        assert!(msg.contains("tampered"), "{msg}");
        let keys = LinkKeys::derive(&SharedSecret::new(vec![1; 32]).unwrap(), b"", b"");
        assert_eq!(format!("{keys:?}"), "LinkKeys([redacted])");
    }
}
