//! Shared secrets, their key ids, and the keyring that makes rotation possible.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Shortest shared secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

const KEY_ID_LABEL: &[u8] = b"palisade/v1 key id";

/// Names a shared secret on the wire without revealing it: the first 8 bytes of
/// HMAC-SHA256(secret, "palisade/v1 key id").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A shared secret was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    TooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// The same secret was added to a keyring twice.
    Duplicate(KeyId),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "the shared secret is {len} bytes long but must be at least {MIN_SECRET_LEN} bytes of \
                 random data; make one with `openssl rand -base64 48` and give every node the same value"
            ),
            Self::Duplicate(id) => write!(
                f,
                "the shared secret with key id {id} is in the keyring twice (shared_secret_file and \
                 accepted_secret_files); list each secret once (palisade::settings::key_id_of \
                 prints a secret's key id)"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// The cluster's shared secret. Zeroed when dropped; `Debug` shows only its key id.
#[derive(Clone)]
pub struct SharedSecret {
    bytes: Zeroizing<Vec<u8>>,
    key_id: KeyId,
}

impl SharedSecret {
    /// Wraps secret bytes, refusing anything shorter than [`MIN_SECRET_LEN`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        let mut mac = hmac_with(&bytes);
        mac.update(KEY_ID_LABEL);
        let digest = mac.finalize().into_bytes();
        let mut id = [0u8; 8];
        for (dst, src) in id.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
        Ok(Self {
            bytes,
            key_id: KeyId(id),
        })
    }

    /// The public name of this secret.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// A fresh HMAC-SHA256 keyed with this secret.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        hmac_with(&self.bytes)
    }
}

/// HMAC-SHA256 keyed with `key`, for every MAC palisade computes.
pub(crate) fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    // Justified exception to the no-panic rule: HMAC is defined for keys of every length
    // (long keys are hashed, short ones padded), so `new_from_slice` never fails for Hmac.
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret(key id {}, [redacted])", self.key_id)
    }
}

/// One primary secret, used for the joins this node starts, and any number of older
/// secrets still accepted from peers during a rotation.
///
/// Rotation without a failed join: add the new secret as accepted on every node, then make
/// it primary on every node, then remove the old one.
#[derive(Clone, Debug)]
pub struct Keyring {
    primary: SharedSecret,
    accepted: Vec<SharedSecret>,
}

impl Keyring {
    /// A keyring holding one secret.
    pub fn new(primary: SharedSecret) -> Self {
        Self {
            primary,
            accepted: Vec::new(),
        }
    }

    /// Adds a secret that peers may still use.
    pub fn with_accepted(mut self, secret: SharedSecret) -> Result<Self, SecretError> {
        if self.get(secret.key_id()).is_some() {
            return Err(SecretError::Duplicate(secret.key_id()));
        }
        self.accepted.push(secret);
        Ok(self)
    }

    /// The secret this node proves with when it initiates.
    pub fn primary(&self) -> &SharedSecret {
        &self.primary
    }

    /// The secret named by `id`, if this node holds it.
    pub fn get(&self, id: KeyId) -> Option<&SharedSecret> {
        std::iter::once(&self.primary)
            .chain(&self.accepted)
            .find(|s| s.key_id() == id)
    }

    /// Every key id held, primary first.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        std::iter::once(&self.primary)
            .chain(&self.accepted)
            .map(SharedSecret::key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_with_advice() {
        let err = SharedSecret::new(vec![7u8; 31]).unwrap_err();
        assert_eq!(err, SecretError::TooShort { len: 31 });
        assert!(err.to_string().contains("openssl rand"));
        assert!(SharedSecret::new(vec![7u8; 32]).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SharedSecret::new(b"correct horse battery staple 0123456789".to_vec()).unwrap();
        let shown = format!("{s:?} {:?}", Keyring::new(s.clone()));
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains(&s.key_id().to_string()));
    }

    #[test]
    fn key_ids_differ_per_secret_and_the_keyring_finds_them() {
        let a = SharedSecret::new(vec![1u8; 32]).unwrap();
        let b = SharedSecret::new(vec![2u8; 32]).unwrap();
        assert_ne!(a.key_id(), b.key_id());
        let ring = Keyring::new(a.clone()).with_accepted(b.clone()).unwrap();
        assert_eq!(ring.get(b.key_id()).map(|s| s.key_id()), Some(b.key_id()));
        assert_eq!(ring.primary().key_id(), a.key_id());
        assert_eq!(
            ring.clone().with_accepted(a.clone()).unwrap_err(),
            SecretError::Duplicate(a.key_id())
        );
        assert!(ring.get(KeyId([0; 8])).is_none());
    }
}
