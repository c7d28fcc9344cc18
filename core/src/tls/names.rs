//! What a certificate says about its holder (names, issuer, validity), and the name
//! patterns operators write in allow-lists.
//!
//! Certificates are parsed with x509-parser: once for our own certificate when the
//! endpoint is built, once for each peer certificate during its handshake.

use std::fmt;
use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The names a certificate is valid for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// URI subject alternative names (SPIFFE ids, say).
    pub uris: Vec<String>,
    /// IP address subject alternative names.
    pub ips: Vec<IpAddr>,
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
}

impl CertNames {
    /// The names authorization rules look at: every DNS, URI and IP alternative name, and
    /// the common name only when the certificate has no alternative name at all (as
    /// RFC 6125 says; `openssl req -subj "/CN=node-1"` certificates have none).
    pub fn for_authorization(&self) -> Vec<String> {
        let mut names: Vec<String> = self.dns.iter().chain(&self.uris).cloned().collect();
        names.extend(self.ips.iter().map(IpAddr::to_string));
        if names.is_empty() {
            names.extend(self.common_name.iter().cloned());
        }
        names
    }

    /// Whether `name` is one of the names authorization looks at (DNS names compared
    /// without regard to ASCII case).
    pub fn contains(&self, name: &str) -> bool {
        self.for_authorization()
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether `node_id` is, byte for byte, one of the names `node_id_in_cert` accepts:
    /// the DNS alternative names (and the URI ones with [`NodeIdNames::DnsAndUri`]), or
    /// the common name when the certificate has no alternative name at all. Never an IP
    /// alternative name, and never case-folded: a certificate for `node-1` does not make
    /// its holder `NODE-1`, and one for 127.0.0.1 does not make it node `127.0.0.1`.
    pub fn names_node(&self, node_id: &str, names: NodeIdNames) -> bool {
        let no_san = self.dns.is_empty() && self.uris.is_empty() && self.ips.is_empty();
        if no_san {
            return self.common_name.as_deref() == Some(node_id);
        }
        let uris: &[String] = match names {
            NodeIdNames::Dns => &[],
            NodeIdNames::DnsAndUri => &self.uris,
        };
        self.dns.iter().chain(uris).any(|n| n == node_id)
    }

    /// The DNS names, or the common name when there are no alternative names: what
    /// "shares a name with our own certificate" compares.
    pub fn host_names(&self) -> Vec<String> {
        if self.dns.is_empty() && self.uris.is_empty() && self.ips.is_empty() {
            return self.common_name.iter().cloned().collect();
        }
        self.dns.clone()
    }
}

impl fmt::Display for CertNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.for_authorization();
        if names.is_empty() {
            return f.write_str("(no names)");
        }
        f.write_str(&names.join(", "))
    }
}

/// Which certificate names `node_id_in_cert` compares a peer's node id with (always
/// byte for byte; the common name only when the certificate has no alternative name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeIdNames {
    /// DNS alternative names (the default).
    #[default]
    Dns,
    /// DNS and URI alternative names (SPIFFE ids as node ids).
    DnsAndUri,
}

/// The parts of a certificate palisade reports and decides on. Public so the `palisade`
/// crate's load report reads certificates exactly as the handshake does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The names authorization looks at.
    pub names: CertNames,
    /// The subject, as x509-parser prints it (`CN=node-1, O=...`).
    pub subject: String,
    /// The issuer, printed the same way.
    pub issuer: String,
    /// Start of the validity window, unix seconds.
    pub not_before: i64,
    /// End of the validity window, unix seconds.
    pub not_after: i64,
}

impl CertSummary {
    /// Parses a DER certificate. `None` when it is not a certificate x509-parser can read.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut names = CertNames::default();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => names.dns.push((*n).to_owned()),
                    GeneralName::URI(u) => names.uris.push((*u).to_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            names.ips.push(ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        names.common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(Self {
            names,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

/// A name pattern in an allow-list: `*.cluster.svc.local`, `node-*`,
/// `spiffe://cluster.local/ns/prod/sa/*`. A `*` stands for one or more characters other
/// than `.` and `/`, so it never reaches across a DNS label or a path segment. Matching
/// ignores ASCII case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// A pattern; refused when empty.
    pub fn new(pattern: impl Into<String>) -> Result<Self, String> {
        let pattern = pattern.into();
        if pattern.trim().is_empty() {
            return Err("an allowed name pattern is empty".into());
        }
        if pattern.contains("**") {
            return Err(format!(
                "the allowed name pattern {pattern:?} has \"**\"; one \"*\" already matches any run of characters within a label"
            ));
        }
        Ok(Self(pattern.to_ascii_lowercase()))
    }

    /// The pattern as written (lowercased).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.to_ascii_lowercase().as_bytes())
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Glob match where `*` takes one or more bytes other than `.` and `/`.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    glob_where(pattern, name, |c| c != b'.' && c != b'/')
}

/// Glob match where `*` takes one or more bytes that `star_takes`. Iterative, with one
/// backtracking point per star, so any input runs in O(pattern × name). Shared by the
/// certificate name patterns here and the node-id patterns of `allowed_peers`.
pub(crate) fn glob_where(pattern: &[u8], name: &[u8], star_takes: impl Fn(u8) -> bool) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    // (pattern index after the star, name index where the star's run ends)
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let pc = pattern.get(p).copied();
        let nc = name.get(n).copied();
        match pc {
            Some(b'*') if nc.is_some_and(&star_takes) => {
                // The star takes this byte; remember where to try taking more.
                star = Some((p + 1, n + 1));
                p += 1;
                n += 1;
            }
            Some(c) if Some(c) == nc && c != b'*' => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) if name.get(sn).copied().is_some_and(&star_takes) => {
                    star = Some((sp, sn + 1));
                    p = sp;
                    n = sn + 1;
                }
                _ => return false,
            },
        }
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        NamePattern::new(p).unwrap().matches(n)
    }

    #[test]
    fn star_stays_inside_one_label_or_segment() {
        assert!(m("*.cluster.svc.local", "node-1.cluster.svc.local"));
        assert!(!m("*.cluster.svc.local", "a.b.cluster.svc.local"));
        assert!(!m("*.cluster.svc.local", ".cluster.svc.local"));
        assert!(!m("*.cluster.svc.local", "cluster.svc.local"));
        assert!(m("node-*", "node-12"));
        assert!(!m("node-*", "node-"));
        assert!(!m("node-*", "node-1.evil.com"));
        assert!(m(
            "spiffe://c.local/ns/*/sa/node",
            "spiffe://c.local/ns/prod/sa/node"
        ));
        assert!(!m(
            "spiffe://c.local/ns/*/sa/node",
            "spiffe://c.local/ns/a/b/sa/node"
        ));
        assert!(m("NODE-*.Example.COM", "node-a.example.com"));
        assert!(m("n*e-*", "node-7"));
        assert!(!m("exact", "exactly"));
        assert!(m("exact", "EXACT"));
    }

    #[test]
    fn empty_and_double_star_patterns_are_refused() {
        assert!(NamePattern::new("").is_err());
        assert!(NamePattern::new("a.**").is_err());
    }

    #[test]
    fn common_name_counts_only_without_alternative_names() {
        let mut names = CertNames {
            common_name: Some("node-1".into()),
            ..CertNames::default()
        };
        assert_eq!(names.for_authorization(), vec!["node-1".to_string()]);
        names.dns.push("node-1.svc".into());
        assert_eq!(names.for_authorization(), vec!["node-1.svc".to_string()]);
        assert!(!names.contains("node-1"));
    }

    #[test]
    fn node_ids_match_dns_names_exactly_and_never_ips() {
        let names = CertNames {
            dns: vec!["node-1".into()],
            uris: vec!["spiffe://prod/node-9".into()],
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            common_name: Some("node-cn".into()),
        };
        assert!(names.names_node("node-1", NodeIdNames::Dns));
        assert!(
            !names.names_node("NODE-1", NodeIdNames::Dns),
            "case is not folded"
        );
        assert!(
            !names.names_node("127.0.0.1", NodeIdNames::Dns),
            "IP SANs never count"
        );
        assert!(
            !names.names_node("node-cn", NodeIdNames::Dns),
            "no CN when there are SANs"
        );
        assert!(!names.names_node("spiffe://prod/node-9", NodeIdNames::Dns));
        assert!(names.names_node("spiffe://prod/node-9", NodeIdNames::DnsAndUri));
        let cn_only = CertNames {
            common_name: Some("node-cn".into()),
            ..CertNames::default()
        };
        assert!(cn_only.names_node("node-cn", NodeIdNames::Dns));
        assert!(!cn_only.names_node("Node-CN", NodeIdNames::Dns));
    }
}
