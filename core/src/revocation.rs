//! Revocation: the deny-list of a node's `revocation_file`, parsed and consulted.
//!
//! A peer is revoked when any entry names it: its node id, its certificate (serial with
//! issuer, or the SHA-256 of its public key), or the secret it joined with (key id).
//! X.509 CRLs are the other half; they travel as DER in [`crate::tls::TlsConfig::crls`]
//! and rustls-webpki checks them with the chain.
//!
//! The file is lines of text, so an operator can read, diff and append to it (`palisade
//! certs revoke` appends):
//!
//! ```text
//! # comments and blank lines are ignored; " # " starts a reason
//! node-id     node-3                                   # stolen disk, 2026-12-04
//! serial      3f:2a:91:0c  CN=palisade cluster CA      # serial (hex, colons optional), then the issuer
//! spki-sha256 9c1f...64 hex digits...
//! key-id      0011223344556677                         # a secret's key id (`palisade secret id`)
//! ```
//!
//! The issuer is written as `palisade certs show` prints it (x509-parser's form,
//! `CN=..., O=...`), and compared ignoring ASCII case and spaces after commas.

use std::fmt;

use crate::join::KeyId;

/// What one entry revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Revoked {
    /// A node id, byte for byte.
    NodeId(String),
    /// A certificate by serial number (big-endian bytes, leading zero bytes removed)
    /// and issuer.
    Serial {
        /// The serial's bytes.
        serial: Vec<u8>,
        /// The issuer's name, as printed.
        issuer: String,
    },
    /// A certificate by the SHA-256 of its SubjectPublicKeyInfo (DER): revokes the key,
    /// whatever certificate carries it.
    Spki([u8; 32]),
    /// A shared secret by key id: peers proving this secret are refused.
    KeyId(KeyId),
}

impl fmt::Display for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NodeId(id) => write!(f, "node-id {id}"),
            Self::Serial { serial, issuer } => write!(f, "serial {} {issuer}", hex(serial)),
            Self::Spki(digest) => write!(f, "spki-sha256 {}", hex(digest)),
            Self::KeyId(id) => write!(f, "key-id {id}"),
        }
    }
}

/// One line of the file: what it revokes, where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What is revoked.
    pub revoked: Revoked,
    /// Where: `FILE:LINE`, or what built it in code.
    pub origin: String,
    /// The text after ` # `, if any.
    pub reason: Option<String>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}", self.revoked, self.origin)?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

/// A node's deny-list. Empty by default: nothing is revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    entries: Vec<Entry>,
}

/// A line of a revocation file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationError {
    /// The file (or origin) named when parsing.
    pub origin: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, and what was expected.
    pub problem: String,
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "revocation_file {}:{}: {}; each line is `node-id ID`, `serial HEX ISSUER`, \
             `spki-sha256 HEX` or `key-id HEX`, optionally followed by ` # reason`",
            self.origin, self.line, self.problem
        )
    }
}

impl std::error::Error for RevocationError {}

/// Largest revocation file the parser takes, in lines; beyond it the file is refused
/// (a deny-list of that size belongs in a CRL).
pub const MAX_ENTRIES: usize = 100_000;

impl Revocations {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a revocation file's text; `origin` (the file's path) is named in errors
    /// and in each entry. Every line must be valid: a list that cannot be read in full
    /// is refused, never half applied.
    pub fn parse(text: &str, origin: &str) -> Result<Self, RevocationError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |problem: String| RevocationError {
                origin: origin.to_owned(),
                line,
                problem,
            };
            let (body, reason) = match raw.split_once(" # ") {
                Some((body, reason)) => (body, Some(reason.trim().to_owned())),
                None => (raw, None),
            };
            let body = body.trim();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            if entries.len() >= MAX_ENTRIES {
                return Err(err(format!("more than {MAX_ENTRIES} entries")));
            }
            let (kind, rest) = body
                .split_once(char::is_whitespace)
                .map_or((body, ""), |(k, r)| (k, r.trim()));
            let revoked = parse_entry(kind, rest).map_err(err)?;
            entries.push(Entry {
                revoked,
                origin: format!("{origin}:{line}"),
                reason,
            });
        }
        Ok(Self { entries })
    }

    /// Adds an entry (settings built in code).
    pub fn with(mut self, revoked: Revoked, origin: impl Into<String>) -> Self {
        self.entries.push(Entry {
            revoked,
            origin: origin.into(),
            reason: None,
        });
        self
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry revoking node id `node_id`, if any.
    pub fn node_id(&self, node_id: &str) -> Option<&Entry> {
        self.find(|r| matches!(r, Revoked::NodeId(id) if id == node_id))
    }

    /// The entry revoking key id `key_id`, if any.
    pub fn key_id(&self, key_id: KeyId) -> Option<&Entry> {
        self.find(|r| matches!(r, Revoked::KeyId(id) if *id == key_id))
    }

    /// The entry revoking the certificate `der` (by serial and issuer, or by its public
    /// key), if any. A certificate that cannot be parsed matches nothing here (the chain
    /// check refuses it anyway).
    pub fn certificate(&self, der: &[u8]) -> Option<&Entry> {
        if !self
            .entries
            .iter()
            .any(|e| matches!(e.revoked, Revoked::Serial { .. } | Revoked::Spki(_)))
        {
            return None;
        }
        let facts = CertFacts::parse(der)?;
        self.find(|r| match r {
            Revoked::Serial { serial, issuer } => {
                *serial == facts.serial && same_name(issuer, &facts.issuer)
            }
            Revoked::Spki(digest) => *digest == facts.spki_sha256,
            _ => false,
        })
    }

    fn find(&self, pred: impl Fn(&Revoked) -> bool) -> Option<&Entry> {
        self.entries.iter().find(|e| pred(&e.revoked))
    }
}

/// What revocation compares in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The serial number, leading zero bytes removed.
    pub serial: Vec<u8>,
    /// The issuer, as x509-parser prints it.
    pub issuer: String,
    /// SHA-256 of the SubjectPublicKeyInfo DER.
    pub spki_sha256: [u8; 32],
}

impl CertFacts {
    /// Reads them from a DER certificate.
    pub fn parse(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
        let mut spki_sha256 = [0u8; 32];
        spki_sha256.copy_from_slice(digest.as_ref());
        Some(Self {
            serial: trim_serial(cert.raw_serial()),
            issuer: cert.issuer().to_string(),
            spki_sha256,
        })
    }

    /// The entry a revocation file would hold for this certificate (`palisade certs
    /// revoke` writes it).
    pub fn serial_entry(&self) -> Revoked {
        Revoked::Serial {
            serial: self.serial.clone(),
            issuer: self.issuer.clone(),
        }
    }
}

fn trim_serial(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let trimmed = raw.get(start..).unwrap_or_default();
    if trimmed.is_empty() {
        vec![0]
    } else {
        trimmed.to_vec()
    }
}

fn parse_entry(kind: &str, rest: &str) -> Result<Revoked, String> {
    let one_word = |what: &str| -> Result<&str, String> {
        if rest.is_empty() {
            return Err(format!("`{kind}` needs {what}"));
        }
        if rest.contains(char::is_whitespace) {
            return Err(format!("`{kind}` takes one word ({what}), found {rest:?}"));
        }
        Ok(rest)
    };
    match kind {
        "node-id" => {
            let id = one_word("a node id")?;
            if id.len() > crate::join::MAX_NAME_LEN {
                return Err(format!("node id {id:?} is longer than 255 bytes"));
            }
            Ok(Revoked::NodeId(id.to_owned()))
        }
        "key-id" => {
            let bytes = parse_hex(one_word("a 16-digit hex key id")?)?;
            let id: [u8; 8] = bytes
                .try_into()
                .map_err(|_| "a key id is 8 bytes (16 hex digits)".to_owned())?;
            Ok(Revoked::KeyId(KeyId(id)))
        }
        "spki-sha256" => {
            let bytes = parse_hex(one_word("64 hex digits")?)?;
            let digest: [u8; 32] = bytes
                .try_into()
                .map_err(|_| "an spki-sha256 pin is 32 bytes (64 hex digits)".to_owned())?;
            Ok(Revoked::Spki(digest))
        }
        "serial" => {
            let (serial, issuer) = rest
                .split_once(char::is_whitespace)
                .map(|(s, i)| (s, i.trim()))
                .filter(|(_, i)| !i.is_empty())
                .ok_or_else(|| {
                    "`serial` needs the serial (hex) and then the issuer (`CN=...`)".to_owned()
                })?;
            let bytes = parse_hex(serial)?;
            if bytes.len() > 20 {
                return Err(format!(
                    "serial {serial} is longer than 20 bytes (RFC 5280 §4.1.2.2)"
                ));
            }
            Ok(Revoked::Serial {
                serial: trim_serial(&bytes),
                issuer: issuer.to_owned(),
            })
        }
        other => Err(format!("unknown entry kind {other:?}")),
    }
}

/// Hex digits, colons allowed between bytes, case ignored.
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(format!("{text:?} is not an even number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

/// Lowercase hex, no separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Two names as x509-parser prints them (`CN=..., O=...`) are the same name: ASCII case
/// and the spaces after the separators do not count.
pub fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.split(',')
            .map(|part| part.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_with_reasons_and_origins() {
        let text = "# list\n\nnode-id node-3 # stolen disk\nserial 0A:3f CN=palisade CA, O=acme\n\
                    spki-sha256 {}\nkey-id 0011223344556677\n"
            .replace("{}", &"ab".repeat(32));
        let list = Revocations::parse(&text, "rev.txt").unwrap();
        assert_eq!(list.entries().len(), 4);
        let node = list.node_id("node-3").unwrap();
        assert_eq!(node.origin, "rev.txt:3");
        assert_eq!(node.reason.as_deref(), Some("stolen disk"));
        assert!(list.node_id("node-4").is_none());
        assert!(list.node_id("NODE-3").is_none(), "node ids are exact");
        assert!(list
            .key_id(KeyId([0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]))
            .is_some());
        assert_eq!(
            list.entries()[1].revoked,
            Revoked::Serial {
                serial: vec![0x0a, 0x3f],
                issuer: "CN=palisade CA, O=acme".into()
            }
        );
        assert!(same_name("CN=palisade CA, O=acme", "cn=palisade ca,o=acme"));
        assert!(!same_name("CN=palisade CA", "CN=palisade CB"));
    }

    #[test]
    fn a_bad_line_refuses_the_whole_file_naming_it() {
        for (text, needle) in [
            ("node-id\n", "needs"),
            ("node-id a b\n", "one word"),
            ("key-id 0011\n", "8 bytes"),
            ("spki-sha256 zz\n", "not hex"),
            ("serial 01\n", "issuer"),
            ("frobnicate x\n", "unknown entry kind"),
            ("serial abc CN=x\n", "even number"),
        ] {
            let err = Revocations::parse(&format!("node-id ok\n{text}"), "f").unwrap_err();
            assert_eq!(err.line, 2, "{text}");
            assert!(err.to_string().contains(needle), "{err}");
            assert!(err.to_string().contains("revocation_file f:2"), "{err}");
        }
    }

    #[test]
    fn serials_compare_without_leading_zeros() {
        assert_eq!(trim_serial(&[0, 0, 5]), vec![5]);
        assert_eq!(trim_serial(&[0]), vec![0]);
        let list = Revocations::parse("serial 00:00:05 CN=a", "f").unwrap();
        assert_eq!(
            list.entries()[0].revoked,
            Revoked::Serial {
                serial: vec![5],
                issuer: "CN=a".into()
            }
        );
    }
}
