//! Secrets given as text (a file, an environment variable): their bytes are the text
//! with surrounding ASCII whitespace removed (the trailing newline of
//! `openssl rand -base64 48 > file`), used as UTF-8 bytes exactly as written; base64 is
//! not decoded. `docs/PROTOCOL.md` §5.3 defines this; every node must agree on it, or the
//! same secret from a file and from the environment would silently mismatch.

use std::fmt;

use hmac::{Hmac, Mac};
use palisade_core::join::KeyId;
use serde::{Deserialize, Deserializer};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The bytes of a secret given as text: `text` without surrounding ASCII whitespace.
pub fn secret_bytes(text: &str) -> &[u8] {
    text.trim_matches(|c: char| c.is_ascii_whitespace())
        .as_bytes()
}

/// The key id of a secret given as text (as in a secret file or `PALISADE_SHARED_SECRET`),
/// to compare nodes' secrets without showing them: the same id on two nodes means the
/// same secret. Defined for any length (`docs/PROTOCOL.md` §5.4), so it also names a
/// secret too short to use.
pub fn key_id_of(secret_text: &str) -> KeyId {
    let key = Zeroizing::new(secret_bytes(secret_text).to_vec());
    // HMAC takes keys of any length, so this never fails; the fallback is unreachable.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&key) else {
        return KeyId([0; 8]);
    };
    mac.update(b"palisade/v1 key id");
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 8];
    id.iter_mut().zip(digest.iter()).for_each(|(d, s)| *d = *s);
    KeyId(id)
}

/// How an error message tells an operator to compare secrets.
pub(crate) const KEY_ID_HINT: &str =
    "compare key ids: run `palisade secret id --file FILE` (or `--env VAR`) on each node";

/// A secret's text as given in settings. Zeroed on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Wraps secret text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(Zeroizing::new(text.into()))
    }

    /// The secret's bytes (surrounding whitespace removed).
    pub fn bytes(&self) -> &[u8] {
        secret_bytes(&self.0)
    }

    /// Its key id.
    pub fn key_id(&self) -> KeyId {
        key_id_of(&self.0)
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText(key id {}, [redacted])", self.key_id())
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::join::SharedSecret;

    #[test]
    fn text_secrets_lose_surrounding_whitespace_only_and_key_ids_match_the_core() {
        let text = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQ=";
        assert_eq!(secret_bytes(&format!("{text}\n")), text.as_bytes());
        assert_eq!(secret_bytes(&format!(" \t{text}\r\n")), text.as_bytes());
        assert_eq!(secret_bytes("a b\n"), b"a b");
        let core = SharedSecret::new(text.as_bytes()).map(|s| s.key_id());
        assert_eq!(core, Ok(key_id_of(&format!("{text}\n"))));
        let secret = SecretText::new(format!("{text}\n"));
        assert!(!format!("{secret:?}").contains(text));
    }
}
