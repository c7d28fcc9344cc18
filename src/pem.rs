//! Certificates and keys from PEM files, read with `rustls-pki-types`' `PemObject` (never a
//! hand-written PEM parser). Every failure becomes a [`Finding`] naming the setting, the
//! file, the cause and the fix, because "no items found" tells an operator nothing about
//! a swapped key and certificate or a passphrase-protected key.

use std::io::ErrorKind;
use std::path::Path;

use palisade_core::tls::pki_types::pem::{PemObject, SectionKind};
use palisade_core::tls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::report::{Finding, Report};

/// Reads the file, or says why it cannot be read (an error finding naming `key` and
/// the file).
pub(crate) fn read(key: &'static str, path: &Path, report: &mut Report) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            let (cause, fix) = match e.kind() {
                ErrorKind::NotFound => (
                    "the file does not exist".to_owned(),
                    format!("check the path in {key} (relative paths are relative to the working directory), or mount the file"),
                ),
                ErrorKind::PermissionDenied => (
                    "this process may not read the file".to_owned(),
                    "give the user palisade runs as read permission (e.g. chmod 0640 and the right group)".to_owned(),
                ),
                _ => (
                    format!("the file cannot be read: {e}"),
                    format!("make {key} name a readable file"),
                ),
            };
            report.push(Finding::error(key, cause, fix).in_file(path));
            None
        }
    }
}

/// Every PEM section of the file, by kind; `None` (with a finding) when the PEM is broken.
fn sections(
    key: &'static str,
    path: &Path,
    bytes: &[u8],
    report: &mut Report,
) -> Option<Vec<(SectionKind, Vec<u8>)>> {
    match <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>() {
        Ok(sections) => Some(sections),
        Err(e) => {
            report.push(
                Finding::error(
                    key,
                    format!("the file is not valid PEM: {e}"),
                    "the file may be truncated or damaged; copy it again from its source",
                )
                .in_file(path),
            );
            None
        }
    }
}

fn is_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
    )
}

/// The certificates of a PEM file (`tls_cert_file`: leaf first; `tls_ca_file`: a bundle).
pub fn load_certs(
    key: &'static str,
    path: &Path,
    report: &mut Report,
) -> Option<Vec<CertificateDer<'static>>> {
    let bytes = read(key, path, report)?;
    let sections = sections(key, path, &bytes, report)?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if !certs.is_empty() {
        return Some(certs);
    }
    let (cause, fix) = if sections.iter().any(|(kind, _)| is_key(*kind)) || encrypted(&bytes) {
        (
            "the file holds a private key, not a certificate".to_owned(),
            "put the certificate (\"-----BEGIN CERTIFICATE-----\") here and the key in tls_key_file; were the two swapped?".to_owned(),
        )
    } else {
        (
            "the file holds no PEM \"-----BEGIN CERTIFICATE-----\" block".to_owned(),
            format!("give {key} a PEM certificate file (DER files convert with `openssl x509 -inform der -in FILE -out FILE.pem`)"),
        )
    };
    report.push(Finding::error(key, cause, fix).in_file(path));
    None
}

/// Whether the file holds a passphrase-protected key (PKCS#8 `ENCRYPTED PRIVATE KEY`, or
/// a legacy OpenSSL `Proc-Type: 4,ENCRYPTED` header), which `PemObject` skips as unknown.
fn encrypted(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// The private key of `tls_key_file` (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: &Path, report: &mut Report) -> Option<PrivateKeyDer<'static>> {
    const KEY: &str = "tls_key_file";
    let bytes = read(KEY, path, report)?;
    if encrypted(&bytes) {
        report.push(
            Finding::error(
                KEY,
                "the private key is encrypted with a passphrase, and palisade reads only unencrypted keys",
                format!(
                    "decrypt it once with `openssl pkey -in {0} -out {0}.plain` (it asks for the passphrase), point tls_key_file at the result and keep that file readable by this node only (chmod 0600)",
                    path.display()
                ),
            )
            .in_file(path),
        );
        return None;
    }
    let sections = sections(KEY, path, &bytes, report)?;
    let key = sections
        .into_iter()
        .find(|(kind, _)| is_key(*kind))
        .and_then(|(kind, der)| PrivateKeyDer::from_pem(kind, der));
    if key.is_some() {
        return key;
    }
    let holds_cert = CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok());
    let (cause, fix) = if holds_cert {
        (
            "the file holds a certificate, not a private key",
            "put the private key (\"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\") here and the certificate in tls_cert_file; were the two swapped?",
        )
    } else {
        (
            "the file holds no PEM private key block",
            "give tls_key_file the PEM key made with the certificate (\"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")",
        )
    };
    report.push(Finding::error(KEY, cause, fix).in_file(path));
    None
}

/// The CRLs of one `tls_crl_files` entry: PEM (one or more `X509 CRL` blocks) or a DER
/// CRL. Only read here; whether each is a CRL of the bundle is checked by the caller.
pub fn load_crls(
    path: &Path,
    report: &mut Report,
) -> Option<Vec<CertificateRevocationListDer<'static>>> {
    const KEY: &str = "tls_crl_files";
    let bytes = read(KEY, path, report)?;
    let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if !is_pem {
        if bytes.is_empty() {
            report.push(
                Finding::error(
                    KEY,
                    "the CRL file is empty",
                    "give tls_crl_files a CRL (PEM \"-----BEGIN X509 CRL-----\" or DER) signed by a CA of tls_ca_file",
                )
                .in_file(path),
            );
            return None;
        }
        return Some(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls: Vec<CertificateRevocationListDer<'static>> =
        match CertificateRevocationListDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
            Ok(crls) => crls,
            Err(e) => {
                report.push(
                    Finding::error(
                        KEY,
                        format!("the file is not valid PEM: {e}"),
                        "the file may be truncated or damaged; copy it again from its source",
                    )
                    .in_file(path),
                );
                return None;
            }
        };
    if crls.is_empty() {
        report.push(
            Finding::error(
                KEY,
                "the file holds no PEM \"-----BEGIN X509 CRL-----\" block",
                "give tls_crl_files a CRL (PEM or DER) signed by a CA of tls_ca_file, e.g. from `palisade certs revoke` or `openssl ca -gencrl`; certificates go in tls_ca_file",
            )
            .in_file(path),
        );
        return None;
    }
    Some(crls)
}
