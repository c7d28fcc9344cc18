//! HELLO and WELCOME: their fields and their exact bytes (see docs/PROTOCOL.md §Join).
//!
//! The encoding is canonical: decoding is strict (exact lengths, known values, no trailing
//! bytes), so re-encoding a decoded message gives back the bytes that were received. The
//! proofs are computed over those bytes.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::secret::KeyId;
use crate::frame::FrameKind;
use crate::wire::{put_lp16, FieldError, Reader};

/// Bytes in a join nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes in an HMAC-SHA256 proof.
pub const PROOF_LEN: usize = 32;
/// Longest cluster name or node id, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;

const AUTH_NONE: u8 = 0;
const AUTH_HMAC_SHA256: u8 = 1;

/// A join message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    /// Which message.
    pub message: FrameKind,
    /// What is wrong with it.
    pub problem: FieldError,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the peer sent a malformed {}: {}",
            self.message, self.problem
        )
    }
}

impl std::error::Error for MessageError {}

/// The proof part of a HELLO or WELCOME, present when the sender has a shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth {
    /// Which secret the proof was made with.
    pub key_id: KeyId,
    /// HMAC-SHA256 over the message's signed part (docs/PROTOCOL.md §Proofs).
    pub proof: [u8; PROOF_LEN],
}

/// The initiator's join request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinHello {
    /// Join protocol version.
    pub version: u16,
    /// The cluster the initiator wants to join.
    pub cluster_name: String,
    /// The initiator's node id.
    pub node_id: String,
    /// The initiator's wall clock, unix milliseconds.
    pub timestamp_ms: u64,
    /// Fresh random bytes.
    pub nonce: [u8; NONCE_LEN],
    /// Largest DATA payload the initiator accepts.
    pub max_frame: u32,
    /// The proof, when the initiator has a secret.
    pub auth: Option<Auth>,
}

/// The acceptor's answer to a valid HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinWelcome {
    /// Join protocol version.
    pub version: u16,
    /// The acceptor's node id.
    pub node_id: String,
    /// The acceptor's wall clock, unix milliseconds.
    pub timestamp_ms: u64,
    /// Fresh random bytes.
    pub nonce: [u8; NONCE_LEN],
    /// Largest DATA payload the acceptor accepts.
    pub max_frame: u32,
    /// The proof, when the acceptor has a secret.
    pub auth: Option<Auth>,
}

fn put_auth_flag(dst: &mut BytesMut, auth: &Option<Auth>) {
    match auth {
        None => dst.put_u8(AUTH_NONE),
        Some(a) => {
            dst.put_u8(AUTH_HMAC_SHA256);
            dst.put_slice(&a.key_id.0);
        }
    }
}

fn put_proof(dst: &mut BytesMut, auth: &Option<Auth>) {
    if let Some(a) = auth {
        dst.put_slice(&a.proof);
    }
}

fn read_auth(r: &mut Reader<'_>) -> Result<Option<Auth>, FieldError> {
    match r.u8("auth")? {
        AUTH_NONE => Ok(None),
        AUTH_HMAC_SHA256 => Ok(Some(Auth {
            key_id: KeyId(r.array("key id")?),
            proof: r.array("proof")?,
        })),
        _ => Err(FieldError::BadValue("auth")),
    }
}

fn read_name<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a str, FieldError> {
    let name = r.text(field, MAX_NAME_LEN)?;
    if name.is_empty() {
        return Err(FieldError::BadValue(field));
    }
    Ok(name)
}

impl JoinHello {
    /// The bytes the initiator's proof covers: every field but the proof itself.
    pub fn signed_part(&self) -> BytesMut {
        let mut dst = BytesMut::with_capacity(128);
        dst.put_u16(self.version);
        put_lp16(&mut dst, self.cluster_name.as_bytes());
        put_lp16(&mut dst, self.node_id.as_bytes());
        dst.put_u64(self.timestamp_ms);
        dst.put_slice(&self.nonce);
        dst.put_u32(self.max_frame);
        put_auth_flag(&mut dst, &self.auth);
        dst
    }

    /// The whole HELLO body.
    pub fn encode(&self) -> BytesMut {
        let mut dst = self.signed_part();
        put_proof(&mut dst, &self.auth);
        dst
    }

    /// Parses a HELLO body strictly.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let fields = |r: &mut Reader<'_>| -> Result<Self, FieldError> {
            Ok(Self {
                version: r.u16("version")?,
                cluster_name: read_name(r, "cluster name")?.to_owned(),
                node_id: read_name(r, "node id")?.to_owned(),
                timestamp_ms: r.u64("timestamp")?,
                nonce: r.array("nonce")?,
                max_frame: r.u32("max frame")?,
                auth: read_auth(r)?,
            })
        };
        let mut r = Reader::new(body);
        fields(&mut r)
            .and_then(|hello| r.finish().map(|()| hello))
            .map_err(|problem| MessageError {
                message: FrameKind::Hello,
                problem,
            })
    }
}

impl JoinWelcome {
    /// The bytes the acceptor's proof covers (after the HELLO's): every field but the proof.
    pub fn signed_part(&self) -> BytesMut {
        let mut dst = BytesMut::with_capacity(96);
        dst.put_u16(self.version);
        put_lp16(&mut dst, self.node_id.as_bytes());
        dst.put_u64(self.timestamp_ms);
        dst.put_slice(&self.nonce);
        dst.put_u32(self.max_frame);
        put_auth_flag(&mut dst, &self.auth);
        dst
    }

    /// The whole WELCOME body.
    pub fn encode(&self) -> BytesMut {
        let mut dst = self.signed_part();
        put_proof(&mut dst, &self.auth);
        dst
    }

    /// Parses a WELCOME body strictly.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let fields = |r: &mut Reader<'_>| -> Result<Self, FieldError> {
            Ok(Self {
                version: r.u16("version")?,
                node_id: read_name(r, "node id")?.to_owned(),
                timestamp_ms: r.u64("timestamp")?,
                nonce: r.array("nonce")?,
                max_frame: r.u32("max frame")?,
                auth: read_auth(r)?,
            })
        };
        let mut r = Reader::new(body);
        fields(&mut r)
            .and_then(|welcome| r.finish().map(|()| welcome))
            .map_err(|problem| MessageError {
                message: FrameKind::Welcome,
                problem,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(auth: Option<Auth>) -> JoinHello {
        JoinHello {
            version: 1,
            cluster_name: "prod".into(),
            node_id: "node-a".into(),
            timestamp_ms: 1_700_000_000_000,
            nonce: [9; NONCE_LEN],
            max_frame: 1024,
            auth,
        }
    }

    #[test]
    fn hello_round_trips_with_and_without_auth() {
        let auth = Auth {
            key_id: KeyId([1; 8]),
            proof: [2; PROOF_LEN],
        };
        for h in [hello(None), hello(Some(auth))] {
            let bytes = h.encode();
            assert_eq!(JoinHello::decode(&bytes), Ok(h.clone()));
            assert_eq!(
                &bytes[..bytes.len() - if h.auth.is_some() { PROOF_LEN } else { 0 }],
                &h.signed_part()[..]
            );
        }
    }

    #[test]
    fn strict_decoding_names_the_problem() {
        let mut bytes = hello(None).encode();
        bytes.put_u8(0);
        let err = JoinHello::decode(&bytes).unwrap_err();
        assert_eq!(err.problem, FieldError::Trailing(1));
        assert!(err.to_string().contains("malformed HELLO"), "{err}");

        let bytes = hello(None).encode();
        let err = JoinHello::decode(&bytes[..bytes.len() - 2]).unwrap_err();
        assert_eq!(err.problem, FieldError::Truncated("max frame"));

        let mut bad_auth = hello(None).encode();
        let last = bad_auth.len() - 1;
        bad_auth[last] = 7;
        assert_eq!(
            JoinHello::decode(&bad_auth).unwrap_err().problem,
            FieldError::BadValue("auth")
        );

        let mut empty_id = hello(None);
        empty_id.node_id.clear();
        assert_eq!(
            JoinHello::decode(&empty_id.encode()).unwrap_err().problem,
            FieldError::BadValue("node id")
        );
    }

    #[test]
    fn welcome_round_trips() {
        let w = JoinWelcome {
            version: 1,
            node_id: "node-b".into(),
            timestamp_ms: 5,
            nonce: [3; NONCE_LEN],
            max_frame: 77,
            auth: Some(Auth {
                key_id: KeyId([4; 8]),
                proof: [5; PROOF_LEN],
            }),
        };
        assert_eq!(JoinWelcome::decode(&w.encode()), Ok(w));
    }
}
