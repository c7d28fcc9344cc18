//! Revocation files of a `certs init` folder: DIR/revocation.txt (palisade's line
//! format, see `palisade_core::revocation`) and DIR/crl.pem (an X.509 CRL signed by the
//! CA). `certs init` writes both empty, `certs revoke` adds a node's current certificate
//! to both, and `certs show` marks a certificate either of them lists.

use std::path::{Path, PathBuf};

use palisade::core::revocation::{hex, CertFacts, Revocations};
use palisade::core::tls::crl::CrlSummary;
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::{mkdir, rcgen_err, replace, Ca};
use crate::exit::{self, CliError};

/// The revocation list `certs init` writes in DIR and every node config names.
pub const REVOCATION_FILE: &str = "revocation.txt";
/// The CRL `certs init` writes in DIR and every node config names.
pub const CRL_FILE: &str = "crl.pem";

/// How long a CRL is valid (nextUpdate - thisUpdate). Nodes refuse an expired CRL (they
/// keep the last good one and say so), and nothing here re-signs the CRL on a schedule:
/// it is re-signed only when `certs init` or `certs revoke` runs. So it must outlive the
/// node certificates it covers (365 days by default), or an idle cluster would start
/// warning about a stale CRL while every certificate is still valid.
pub const CRL_DAYS: i64 = 365;

/// The comment block a fresh revocation.txt holds.
const HEADER: &str = "\
# palisade revocation list: every node whose config names this file (revocation_file)
# refuses a peer that a line here names, at its next reload (reload_interval, or SIGHUP).
# One entry per line; \" # \" starts a reason; blank lines and lines starting with # are
# ignored. `palisade certs revoke --dir DIR --node NAME` appends a serial line.
#
#   node-id     NODE_ID                      # refuse this node id, whatever it presents
#   serial      HEX ISSUER                   # refuse one certificate (serial in hex, colons
#                                            # optional, then its issuer as `certs show` prints it)
#   spki-sha256 64_HEX_DIGITS                # refuse a public key, whatever certificate carries it
#   key-id      16_HEX_DIGITS                # refuse peers proving this secret (`palisade secret id`)
";

/// `certs init`: an empty revocation.txt and an empty CRL (number 1) in `dir`.
pub fn write_initial(dir: &Path, ca: &Ca, force: bool) -> Result<(), CliError> {
    replace(&dir.join(REVOCATION_FILE), HEADER.as_bytes(), force, false)?;
    let crl = sign(ca, &BigUint::from(1u8), &[])?;
    replace(&dir.join(CRL_FILE), crl.as_bytes(), force, false)
}

/// One certificate a CRL lists: its serial (as in the DER) and when it was revoked.
struct Listed {
    serial: Vec<u8>,
    at: time::OffsetDateTime,
}

/// A CRL as PEM, signed by `ca`, numbered `number`, listing `revoked`.
fn sign(ca: &Ca, number: &BigUint, revoked: &[Listed]) -> Result<String, CliError> {
    let now = time::OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(CRL_DAYS),
        crl_number: positive(&number.to_bytes_be()),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: positive(&r.serial),
                revocation_time: r.at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params
        .signed_by(&ca.issuer)
        .and_then(|crl| crl.pem())
        .map_err(|e| rcgen_err("sign the CRL", e))
}

/// A DER INTEGER's content for a non-negative number: a 0 byte before a high bit.
fn positive(bytes: &[u8]) -> SerialNumber {
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v = vec![0];
        v.extend_from_slice(bytes);
        SerialNumber::from(v)
    } else {
        SerialNumber::from_slice(bytes)
    }
}

/// The DER inside a PEM file (the first PEM block), or the bytes as they are (DER).
fn pem_or_der(bytes: &[u8]) -> Vec<u8> {
    match x509_parser::pem::parse_x509_pem(bytes) {
        Ok((_, pem)) => pem.contents,
        Err(_) => bytes.to_vec(),
    }
}

/// What the existing CRL at `path` holds: its number and entries. `None` when it does
/// not exist.
fn read_crl(path: &Path) -> Result<Option<(BigUint, Vec<Listed>)>, CliError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(exit::io("read", path, &e)),
    };
    let der = pem_or_der(&bytes);
    let (_, crl) = CertificateRevocationList::from_der(&der).map_err(|e| {
        CliError::new(
            exit::INVALID,
            format!("cannot read the CRL {}", path.display()),
        )
        .cause(&e)
        .hint("move it aside; `certs revoke` then writes a new one from revocation.txt")
    })?;
    let number = crl.crl_number().cloned().unwrap_or_default();
    let listed = crl
        .iter_revoked_certificates()
        .map(|r| Listed {
            serial: r.raw_serial().to_vec(),
            at: time::OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
        })
        .collect();
    Ok(Some((number, listed)))
}

/// The serials (and issuers) of revocation.txt, for the CRL.
fn read_list(path: &Path) -> Result<(String, Revocations), CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_owned(),
        Err(e) => return Err(exit::io("read", path, &e)),
    };
    let list = Revocations::parse(&text, &path.display().to_string()).map_err(|e| {
        CliError::new(exit::INVALID, format!("{} has errors", path.display()))
            .cause(&e)
            .hint("fix or remove the line named; nodes keep their last good list meanwhile")
    })?;
    Ok((text, list))
}

/// `certs revoke`: adds `node`'s current certificate to DIR/revocation.txt and writes
/// DIR/crl.pem listing every serial revoked so far, with the next CRL number; unless
/// `certificate_only`, also a `node-id` line, so that the node is out whatever
/// certificate it presents (one issued before a rotation is still valid and unlisted,
/// and links joined with it would stay up).
pub fn revoke(
    dir: &Path,
    node: &str,
    reason: Option<&str>,
    certificate_only: bool,
) -> Result<(), CliError> {
    let cert_path = dir.join(node).join("tls.crt");
    let mut report = palisade::Report::default();
    let der = palisade::pem::load_certs("tls_cert_file", &cert_path, &mut report)
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| {
            CliError::new(
                exit::INVALID,
                format!("cannot read {node}'s certificate {}", cert_path.display()),
            )
            .cause(&std::io::Error::other(report.to_string().trim().to_owned()))
            .hint(format!(
                "--node is a folder of {} holding tls.crt (as `certs init` writes it)",
                dir.display()
            ))
        })?;
    let facts = CertFacts::parse(&der).ok_or_else(|| {
        CliError::new(
            exit::INVALID,
            format!("{} is not an X.509 certificate", cert_path.display()),
        )
    })?;
    let ca = super::Ca::load(&dir.join("ca"))?;
    mkdir(dir)?;

    // revocation.txt: the serial line unless an entry already revokes the certificate,
    // and (unless certificate_only) the node-id line unless one already revokes the node
    // id, written in one replace so that a node's reload never sees half of it.
    let list_path = dir.join(REVOCATION_FILE);
    let (text, list) = read_list(&list_path)?;
    let serial_hex = hex(&facts.serial);
    let reason = reason
        .unwrap_or("revoked by palisade certs revoke")
        .replace('\n', " ");
    let mut did = Vec::new();
    let mut lines = Vec::new();
    match list.certificate(&der) {
        Some(entry) => did.push(format!(
            "{} already revokes {node}'s certificate (serial {serial_hex}): {entry}",
            list_path.display()
        )),
        None => lines.push(format!("{}  # {reason}", facts.serial_entry())),
    }
    if !certificate_only {
        match list.node_id(node) {
            Some(entry) => did.push(format!(
                "{} already revokes the node id {node}: {entry}",
                list_path.display()
            )),
            None => lines.push(format!("node-id {node}  # {reason}")),
        }
    }
    if !lines.is_empty() {
        let mut new_text = text;
        if !new_text.is_empty() && !new_text.ends_with('\n') {
            new_text.push('\n');
        }
        let first = new_text.lines().count() + 1;
        for line in &lines {
            new_text.push_str(line);
            new_text.push('\n');
        }
        // Never write a list the nodes would refuse, or one that misses its point.
        let parsed =
            Revocations::parse(&new_text, &list_path.display().to_string()).map_err(|e| {
                CliError::new(exit::INVALID, "the new revocation lines do not parse").cause(&e)
            })?;
        if parsed.certificate(&der).is_none()
            || (!certificate_only && parsed.node_id(node).is_none())
        {
            return Err(CliError::new(
                exit::INVALID,
                format!("the lines written for {node} would not revoke it"),
            ));
        }
        replace(&list_path, new_text.as_bytes(), true, false)?;
        for (i, line) in lines.iter().enumerate() {
            did.push(format!(
                "{}: added `{line}` (line {})",
                list_path.display(),
                first + i
            ));
        }
    }

    // crl.pem: the old entries plus this serial, next number.
    let crl_path = dir.join(CRL_FILE);
    let (number, mut listed) = read_crl(&crl_path)?.unwrap_or_default();
    let listed_already = listed
        .iter()
        .any(|l| trim(&l.serial) == facts.serial.as_slice());
    if listed_already {
        did.push(format!(
            "{}: already lists serial {serial_hex} (CRL number {number:x}), unchanged",
            crl_path.display()
        ));
    } else {
        listed.push(Listed {
            serial: facts.serial.clone(),
            at: time::OffsetDateTime::now_utc(),
        });
        let next = number + 1u8;
        let pem = sign(&ca, &next, &listed)?;
        replace(&crl_path, pem.as_bytes(), true, false)?;
        did.push(format!(
            "{}: CRL number {next:x}, signed by the CA, lists {} serial(s) including {serial_hex}",
            crl_path.display(),
            listed.len()
        ));
    }
    println!(
        "revoked {node}'s certificate (serial {serial_hex}, issuer {})",
        facts.issuer
    );
    for line in did {
        println!("  {line}");
    }
    println!("nodes pick it up at their next reload (reload_interval, or SIGHUP)");
    if certificate_only {
        println!(
            "  (this revokes {node}'s current certificate only: a certificate it held before is still valid; without --certificate-only the node id is revoked too)"
        );
    }
    Ok(())
}

fn trim(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    serial.get(start..).unwrap_or_default()
}

/// Where a certificate's revocation is looked up: a revocation file and CRL files.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub revocation_file: Option<PathBuf>,
    pub crl_files: Vec<PathBuf>,
}

impl Sources {
    /// The files a node config names (`revocation_file`, `tls_crl_files`); relative
    /// paths are taken from the config's folder.
    pub fn of_config(config: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(config).map_err(|e| e.to_string())?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let base = config.parent().unwrap_or(Path::new("."));
        let path = |v: &toml::Value| v.as_str().map(|s| base.join(s));
        Ok(Self {
            revocation_file: table.get("revocation_file").and_then(path),
            crl_files: table
                .get("tls_crl_files")
                .and_then(toml::Value::as_array)
                .map(|a| a.iter().filter_map(path).collect())
                .unwrap_or_default(),
        })
    }

    /// The files `config` names, or when it names none, the `certs init` layout around
    /// it ([`Self::beside`]); `None` when it cannot be read.
    pub fn for_config(config: &Path) -> Option<Self> {
        let named = Self::of_config(config).ok()?;
        if named.is_empty() {
            return Some(Self::beside(config));
        }
        Some(named)
    }

    /// For a certificate file: the files the palisade.toml beside it names, else
    /// [`Self::beside`].
    pub fn near(cert: &Path) -> Self {
        let folder = cert.parent().unwrap_or(Path::new("."));
        match Self::of_config(&folder.join("palisade.toml")) {
            Ok(s) if !s.is_empty() => s,
            _ => Self::beside(cert),
        }
    }

    fn is_empty(&self) -> bool {
        self.revocation_file.is_none() && self.crl_files.is_empty()
    }

    /// revocation.txt and crl.pem in the folder of `file` or one folder up (the
    /// `certs init` layout: DIR/NODE/FILE).
    pub fn beside(file: &Path) -> Self {
        let folder = file.parent().unwrap_or(Path::new("."));
        let find = |name: &str| {
            [Some(folder), folder.parent()]
                .into_iter()
                .flatten()
                .map(|d| d.join(name))
                .find(|p| p.exists())
        };
        Self {
            revocation_file: find(REVOCATION_FILE),
            crl_files: find(CRL_FILE).into_iter().collect(),
        }
    }

    /// Why these files revoke a node with certificate `cert` and node id `node_id`:
    /// [`Self::revokes`], or "node-id ID in FILE:LINE: reason".
    pub fn revokes_node(&self, cert: Option<&[u8]>, node_id: &str) -> Option<String> {
        if let Some(why) = cert.and_then(|der| self.revokes(der)) {
            return Some(why);
        }
        let path = self.revocation_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let list = Revocations::parse(&text, &path.display().to_string()).ok()?;
        let entry = list.node_id(node_id)?;
        Some(match &entry.reason {
            Some(reason) => format!("node-id {node_id} in {}: {reason}", entry.origin),
            None => format!("node-id {node_id} in {}", entry.origin),
        })
    }

    /// Why these files revoke `der`: "serial HEX in FILE:LINE: reason" or "serial HEX
    /// in FILE (CRL number N)"; `None` when none lists it. Files that cannot be read
    /// are skipped.
    pub fn revokes(&self, der: &[u8]) -> Option<String> {
        let facts = CertFacts::parse(der)?;
        let serial = hex(&facts.serial);
        if let Some(path) = &self.revocation_file {
            let list = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| Revocations::parse(&text, &path.display().to_string()).ok());
            if let Some(list) = list {
                if let Some(entry) = list.certificate(der) {
                    let what = match &entry.revoked {
                        palisade::core::Revoked::Spki(_) => {
                            format!("key of serial {serial}")
                        }
                        _ => format!("serial {serial}"),
                    };
                    return Some(match &entry.reason {
                        Some(reason) => format!("{what} in {}: {reason}", entry.origin),
                        None => format!("{what} in {}", entry.origin),
                    });
                }
            }
        }
        for path in &self.crl_files {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            let Ok(crl) = CrlSummary::parse(&pem_or_der(&bytes)) else {
                continue;
            };
            if crl.issuer == facts.issuer && crl.lists(&facts.serial) {
                let number = crl
                    .number
                    .map_or(String::new(), |n| format!(", CRL number {n}"));
                return Some(format!("serial {serial} in {}{number}", path.display()));
            }
        }
        None
    }
}
