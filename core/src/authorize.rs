//! Who may be on the other end of a joined link: one policy, checked at the join on both
//! sides and again on every link whenever the settings change.
//!
//! In order: the deny-list (`revocation_file`: the peer's node id, the secret it proved),
//! then the allow-list of node ids (`allowed_peers`), then, with TLS, the binding of the
//! node id to the certificate (`node_id_in_cert`). The certificate itself (trust, CRLs,
//! revoked serials and keys, name rules) is decided earlier, during the TLS handshake.

use std::fmt;

use crate::config::Config;
use crate::join::{KeyId, RejectCode, Rejection};
use crate::tls::{CertNames, NodeIdNames};

/// A node-id pattern in `allowed_peers`: `node-*`, `db-*-eu`, or an exact id. A `*`
/// stands for one or more characters of any kind; everything else matches byte for
/// byte, case included, as node ids are compared everywhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePattern(String);

impl NodePattern {
    /// A pattern; refused when empty.
    pub fn new(pattern: impl Into<String>) -> Result<Self, String> {
        let pattern = pattern.into();
        if pattern.trim().is_empty() {
            return Err("allowed_peers: a node id pattern is empty".into());
        }
        if pattern.len() > crate::join::MAX_NAME_LEN {
            return Err(format!(
                "allowed_peers: the pattern {pattern:?} is longer than a node id can be (255 bytes)"
            ));
        }
        Ok(Self(pattern))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `node_id` matches.
    pub fn matches(&self, node_id: &str) -> bool {
        crate::tls::names::glob_where(self.0.as_bytes(), node_id.as_bytes(), |_| true)
    }
}

impl fmt::Display for NodePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a joined (or joining) peer is, for the policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerFacts<'a> {
    pub(crate) node_id: &'a str,
    pub(crate) key_id: Option<KeyId>,
    /// The accepted certificate's names, with TLS.
    pub(crate) cert_names: Option<&'a CertNames>,
}

/// Refused by the policy: the code for the REJECT, and whether it was a revocation
/// (a joined link closes with `CloseCode::Revoked` then, else `NotAuthorized`).
pub(crate) fn authorize(config: &Config, peer: PeerFacts<'_>) -> Result<(), Rejection> {
    if let Some(entry) = config.revoked.node_id(peer.node_id) {
        return Err(Rejection::new(
            RejectCode::Revoked,
            format!("node id {:?} is revoked: {entry}", peer.node_id),
        ));
    }
    if let Some(entry) = peer.key_id.and_then(|k| config.revoked.key_id(k)) {
        return Err(Rejection::new(
            RejectCode::Revoked,
            format!("the shared secret the peer proved is revoked: {entry}"),
        ));
    }
    if !config.allowed_peers.is_empty()
        && !config.allowed_peers.iter().any(|p| p.matches(peer.node_id))
    {
        let allowed: Vec<&str> = config
            .allowed_peers
            .iter()
            .map(NodePattern::as_str)
            .collect();
        return Err(Rejection::new(
            RejectCode::IdentityNotAllowed,
            format!(
                "node id {:?} matches none of allowed_peers [{}]",
                peer.node_id,
                allowed.join(", ")
            ),
        ));
    }
    let rule = config
        .tls
        .as_ref()
        .filter(|t| t.authorization.node_id_in_cert)
        .map(|t| t.authorization.node_id_names);
    if let Some(rule) = rule {
        // Without a certificate (a permissive acceptor's plaintext link) there is nothing
        // to bind the node id to; such links are reported as below strict.
        if let Some(names) = peer.cert_names {
            if !names.names_node(peer.node_id, rule) {
                return Err(Rejection::new(
                    RejectCode::IdentityNotAllowed,
                    format!(
                        "node id {:?} is not, byte for byte, one of the peer certificate's {} \
                         names [{names}] (node_id_in_cert)",
                        peer.node_id,
                        match rule {
                            NodeIdNames::Dns => "DNS",
                            NodeIdNames::DnsAndUri => "DNS or URI",
                        },
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        NodePattern::new(p).unwrap().matches(n)
    }

    #[test]
    fn node_patterns_glob_and_are_exact_elsewhere() {
        assert!(m("node-*", "node-1"));
        assert!(!m("node-*", "node-"), "a star takes at least one character");
        assert!(m("*", "anything.at/all"));
        assert!(m("db-*-eu", "db-7-eu"));
        assert!(!m("db-*-eu", "db-7-us"));
        assert!(!m("node-*", "NODE-1"), "case counts");
        assert!(m("node-1", "node-1"));
        assert!(!m("node-1", "node-12"));
        assert!(!m("node-1", "node-"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(NodePattern::new(" ").is_err());
    }
}
