//! The join handshake: one round trip in which each side proves it knows the cluster's
//! shared secret, bound to the TLS session when there is one.
//!
//! ```text
//! initiator                                   acceptor
//!   HELLO  {cluster, node id, time, nonce_I, key id, proof_I}  ->
//!                                     checks, then WELCOME {node id, time, nonce_R, proof_R}
//!   <- WELCOME  (or REJECT {code, message})
//! checks proof_R
//! ```
//!
//! The types follow the handshake's phases: an [`InitiatorHandshake`] exists only between
//! sending HELLO and reading the answer, and reading the answer consumes it.

mod handshake;
mod messages;
mod proof;
mod reject;
mod replay;
mod secret;

pub use handshake::{AcceptorHandshake, InitiatorHandshake, PeerInfo};
pub use messages::{
    Auth, JoinHello, JoinWelcome, MessageError, MAX_NAME_LEN, NONCE_LEN, PROOF_LEN,
};
pub use proof::{acceptor_proof, initiator_proof};
pub(crate) use reject::truncate_utf8;
pub use reject::{JoinError, RejectCode, Rejection, MAX_REASON_LEN};
pub(crate) use replay::OwnNonce;
pub use replay::{ReplayCache, ReplaySource};
pub(crate) use secret::hmac_with;
pub use secret::{KeyId, Keyring, SecretError, SharedSecret, MIN_SECRET_LEN};
