//! The preface that opens each direction of the frame stream: `"PALISADE" ‖ version (u16)`.
//!
//! Its job is diagnosis. A node that receives something other than the preface can tell
//! the operator what the peer actually is (a TLS client on a plaintext port, an HTTP
//! client, another palisade version, or a stranger) instead of failing with noise.

use std::fmt;

/// The magic bytes at the start of every palisade stream.
pub const MAGIC: [u8; 8] = *b"PALISADE";

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes in a preface.
pub const PREFACE_LEN: usize = MAGIC.len() + 2;

/// The preface this implementation sends: [`MAGIC`] then [`PROTOCOL_VERSION`] big-endian.
pub const PREFACE: [u8; PREFACE_LEN] = *b"PALISADE\x00\x01";

const HTTP_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"PRI ",
];

/// What arrived instead of a valid preface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrefaceError {
    /// The peer opened with a TLS record: it has TLS on and this endpoint does not.
    PeerSpeaksTls,
    /// The peer opened with plaintext palisade: this endpoint has TLS on and the peer does not.
    PeerSpeaksPlaintext,
    /// The peer opened with an HTTP request line.
    PeerSpeaksHttp,
    /// The peer speaks palisade, but a version this node does not.
    UnsupportedVersion {
        /// This node's version.
        ours: u16,
        /// The version the peer announced.
        theirs: u16,
    },
    /// The peer speaks something else entirely.
    NotPalisade {
        /// The first bytes that arrived (at most [`PREFACE_LEN`]).
        first_bytes: Vec<u8>,
    },
}

impl fmt::Display for PrefaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerSpeaksTls => f.write_str(
                "the peer started a TLS handshake but this endpoint speaks plaintext palisade: \
                 enable TLS on this node, or disable it on the peer",
            ),
            Self::PeerSpeaksPlaintext => f.write_str(
                "the peer speaks plaintext palisade but this endpoint requires TLS: \
                 enable TLS on the peer, or disable it on this node",
            ),
            Self::PeerSpeaksHttp => f.write_str(
                "the peer sent an HTTP request to a palisade cluster port; point HTTP clients \
                 at the service's HTTP port instead",
            ),
            Self::UnsupportedVersion { ours, theirs } => write!(
                f,
                "the peer speaks palisade protocol version {theirs} but this node speaks version {ours}; \
                 upgrade the older node"
            ),
            Self::NotPalisade { first_bytes } => {
                write!(f, "the peer does not speak palisade (it opened with bytes ")?;
                for b in first_bytes {
                    write!(f, "{b:02x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl std::error::Error for PrefaceError {}

/// Checks the start of a received stream. `Ok(false)`: too few bytes yet, nothing wrong so
/// far. `Ok(true)`: a valid preface fills the first [`PREFACE_LEN`] bytes.
pub fn check(received: &[u8]) -> Result<bool, PrefaceError> {
    let head = received.get(..PREFACE_LEN).unwrap_or(received);
    let magic_part = head.get(..MAGIC.len()).unwrap_or(head);
    if !MAGIC.starts_with(magic_part) {
        return Err(classify(head));
    }
    match head.get(MAGIC.len()..PREFACE_LEN) {
        Some(&[hi, lo]) => {
            let theirs = u16::from_be_bytes([hi, lo]);
            if theirs == PROTOCOL_VERSION {
                Ok(true)
            } else {
                Err(PrefaceError::UnsupportedVersion {
                    ours: PROTOCOL_VERSION,
                    theirs,
                })
            }
        }
        _ => Ok(false),
    }
}

/// Whether `received` starts like a palisade preface (used by a TLS endpoint to spot a
/// plaintext peer). Needs at least one byte.
pub fn looks_like_preface(received: &[u8]) -> bool {
    let head = received.get(..MAGIC.len()).unwrap_or(received);
    !head.is_empty() && MAGIC.starts_with(head)
}

/// What a TLS endpoint received instead of a TLS record: plaintext palisade, HTTP, or
/// something else.
pub(crate) fn diagnose_non_tls(received: &[u8]) -> PrefaceError {
    if looks_like_preface(received) {
        return PrefaceError::PeerSpeaksPlaintext;
    }
    classify(received.get(..PREFACE_LEN).unwrap_or(received))
}

fn classify(head: &[u8]) -> PrefaceError {
    // A TLS record starts with a content type from 20 to 23 (22: handshake, 21: alert)
    // and major version 3.
    if matches!(head, [0x14..=0x17] | [0x14..=0x17, 0x03, ..]) {
        return PrefaceError::PeerSpeaksTls;
    }
    if head.len() >= 3
        && HTTP_METHODS
            .iter()
            .any(|m| m.starts_with(head) || head.starts_with(m))
    {
        return PrefaceError::PeerSpeaksHttp;
    }
    PrefaceError::NotPalisade {
        first_bytes: head.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_our_preface_byte_by_byte() {
        let p = PREFACE;
        assert_eq!(p[..8], MAGIC);
        assert_eq!(p[8..], PROTOCOL_VERSION.to_be_bytes());
        for n in 0..PREFACE_LEN {
            assert_eq!(check(&p[..n]), Ok(false), "prefix of {n} bytes");
        }
        assert_eq!(check(&p), Ok(true));
        assert_eq!(check(b"PALISADE\x00\x01trailing"), Ok(true));
    }

    #[test]
    fn names_what_the_peer_speaks() {
        assert_eq!(
            check(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Err(PrefaceError::PeerSpeaksTls)
        );
        assert_eq!(
            check(b"GET / HTTP/1.1\r\n"),
            Err(PrefaceError::PeerSpeaksHttp)
        );
        assert_eq!(
            check(b"PALISADE\x00\x07"),
            Err(PrefaceError::UnsupportedVersion { ours: 1, theirs: 7 })
        );
        assert_eq!(
            check(b"SSH-2.0-OpenSSH"),
            Err(PrefaceError::NotPalisade {
                first_bytes: b"SSH-2.0-Op".to_vec()
            })
        );
        assert!(PrefaceError::PeerSpeaksTls
            .to_string()
            .contains("enable TLS"));
    }

    #[test]
    fn spots_a_plaintext_preface() {
        assert!(looks_like_preface(b"PALI"));
        assert!(looks_like_preface(b"PALISADE\x00\x01"));
        assert!(!looks_like_preface(b""));
        assert!(!looks_like_preface(&[0x16, 0x03]));
    }
}
