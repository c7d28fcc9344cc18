//! Migration mode: how an acceptor treats peers that do not meet its own settings while
//! a cluster is being moved from plaintext to TLS, or from no join secret to a secret,
//! without stopping it (docs/PROTOCOL.md §8.1).
//!
//! In the default [`Mode::Strict`] an acceptor refuses every such peer. In
//! [`Mode::Permissive`] it accepts them, and says so on every link it joins
//! ([`BelowStrict`] in `PeerInfo`), so an operator can watch the sub-strict links drain
//! away before switching back to strict. A node dials with its own settings whatever its
//! mode: the mode relaxes what it accepts, never what it offers.

use std::fmt;

/// What an acceptor accepts beyond its own settings (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Only peers that meet this node's settings: TLS when TLS is on, the join proof
    /// when a keyring is set. The default.
    #[default]
    Strict,
    /// For a rollout only: with TLS on, a peer opening with plaintext palisade is also
    /// accepted (told apart by its first byte); with a keyring, a HELLO without a join
    /// proof is also accepted (and answered without one). A HELLO that carries a proof
    /// is checked exactly as in strict mode. Anyone who can reach the port can then
    /// join without the certificate or the secret, which is why every such link is
    /// reported and why this is refused at load unless set explicitly.
    Permissive,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::Permissive => "permissive",
        })
    }
}

/// How a joined link fell short of this node's own settings. Only a permissive acceptor
/// joins such links; on every other link both are false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BelowStrict {
    /// TLS is on here, and the peer joined over plaintext palisade: the link is neither
    /// encrypted nor authenticated by a certificate.
    pub plaintext: bool,
    /// This node has a shared secret, and the peer joined without a join proof: nothing
    /// proved it belongs to the cluster beyond what TLS checked (nothing, on a plaintext
    /// link), and frames carry no per-link authentication (§5.7 needs the secret).
    pub without_secret: bool,
}

impl BelowStrict {
    /// Whether the link fell short of the strict settings in any way.
    pub fn is_any(&self) -> bool {
        self.plaintext || self.without_secret
    }
}

impl fmt::Display for BelowStrict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.plaintext, self.without_secret) {
            (true, true) => "plaintext, without a join secret",
            (true, false) => "plaintext",
            (false, true) => "without a join secret",
            (false, false) => "meets the strict settings",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_is_the_default_and_shortfalls_are_named() {
        assert_eq!(Mode::default(), Mode::Strict);
        assert_eq!(Mode::Permissive.to_string(), "permissive");
        let both = BelowStrict {
            plaintext: true,
            without_secret: true,
        };
        assert!(both.is_any());
        assert_eq!(both.to_string(), "plaintext, without a join secret");
        assert!(!BelowStrict::default().is_any());
        let plain = BelowStrict {
            plaintext: true,
            ..BelowStrict::default()
        };
        assert_eq!(plain.to_string(), "plaintext");
    }
}
