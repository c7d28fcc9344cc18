//! The two join proofs and their exact MAC inputs (docs/PROTOCOL.md §Proofs).
//!
//! Each proof is HMAC-SHA256 keyed with the shared secret over a transcript:
//!
//! ```text
//! proof_I = HMAC(secret, lp16("palisade/v1 initiator proof") ‖ lp16(binding) ‖ hello_signed)
//! proof_R = HMAC(secret, lp16("palisade/v1 acceptor proof")  ‖ lp16(binding) ‖ lp16(hello) ‖ welcome_signed)
//! ```
//!
//! `hello_signed` / `welcome_signed` are the message bodies without the trailing proof, so
//! every field a peer sends (cluster name, node ids, timestamps, nonces, max_frame, key id)
//! is covered; `hello` is the whole HELLO body including proof_I, which binds the WELCOME to
//! that exact request. `binding` is the TLS exporter value (empty without TLS).

use hmac::Mac;
use subtle::ConstantTimeEq;

use super::messages::{JoinHello, JoinWelcome, PROOF_LEN};
use super::secret::SharedSecret;
use crate::wire::put_lp16;

const INITIATOR_LABEL: &[u8] = b"palisade/v1 initiator proof";
const ACCEPTOR_LABEL: &[u8] = b"palisade/v1 acceptor proof";

fn lp16(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + bytes.len());
    put_lp16(&mut out, bytes);
    out
}

/// proof_I for `hello` (whose `auth.proof` is ignored).
pub fn initiator_proof(
    secret: &SharedSecret,
    binding: &[u8],
    hello: &JoinHello,
) -> [u8; PROOF_LEN] {
    let mut mac = secret.mac();
    mac.update(&lp16(INITIATOR_LABEL));
    mac.update(&lp16(binding));
    mac.update(&hello.signed_part());
    mac.finalize().into_bytes().into()
}

/// proof_R for `welcome` (whose `auth.proof` is ignored) answering `hello`.
pub fn acceptor_proof(
    secret: &SharedSecret,
    binding: &[u8],
    hello: &JoinHello,
    welcome: &JoinWelcome,
) -> [u8; PROOF_LEN] {
    let mut mac = secret.mac();
    mac.update(&lp16(ACCEPTOR_LABEL));
    mac.update(&lp16(binding));
    mac.update(&lp16(&hello.encode()));
    mac.update(&welcome.signed_part());
    mac.finalize().into_bytes().into()
}

/// Compares a received proof with the expected one in constant time.
pub(crate) fn proofs_match(expected: &[u8; PROOF_LEN], received: &[u8; PROOF_LEN]) -> bool {
    expected.ct_eq(received).into()
}
