//! X.509 CRLs: read, checked against the CA bundle when settings are built, and
//! summarized for reports. The check during a handshake is rustls-webpki's own.
//!
//! A CRL is taken only when a CA of the bundle issued it and its signature verifies: a
//! CRL the chain check could not verify would make every certificate of that CA fail,
//! so a bad one is refused when the settings are built (the last good settings stay on
//! a reload) instead of locking the cluster out at the next handshake.

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::config::TlsConfigError;

/// What a CRL says, for reports (`palisade check`, `certs show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlSummary {
    /// The issuer, as x509-parser prints it.
    pub issuer: String,
    /// thisUpdate, unix seconds.
    pub this_update: i64,
    /// nextUpdate, unix seconds, when given.
    pub next_update: Option<i64>,
    /// The cRLNumber extension, hex, when given.
    pub number: Option<String>,
    /// The revoked serials (big-endian bytes, leading zeros removed).
    pub revoked: Vec<Vec<u8>>,
}

impl CrlSummary {
    /// Parses a DER CRL.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| format!("not an X.509 CRL ({e})"))?;
        Ok(Self {
            issuer: crl.issuer().to_string(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            number: crl.crl_number().map(|n| format!("{n:x}")),
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| trim(r.raw_serial()))
                .collect(),
        })
    }

    /// Whether it lists `serial` (leading zeros ignored).
    pub fn lists(&self, serial: &[u8]) -> bool {
        let serial = trim(serial);
        self.revoked.contains(&serial)
    }

    /// Whether nextUpdate has passed at `now_secs` (a CRL without one never expires).
    pub fn is_expired(&self, now_secs: i64) -> bool {
        self.next_update.is_some_and(|next| next < now_secs)
    }
}

fn trim(serial: &[u8]) -> Vec<u8> {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    serial.get(start..).unwrap_or_default().to_vec()
}

/// The CA of `cas` that issued the CRL and whose key verifies its signature.
pub fn verify_crl_issuer(der: &[u8], cas: &[CertificateDer<'_>]) -> Result<usize, String> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| format!("not an X.509 CRL ({e})"))?;
    webpki::OwnedCertRevocationList::from_der(der)
        .map_err(|e| format!("rustls-webpki cannot read it ({e})"))?;
    let mut named = false;
    for (i, ca) in cas.iter().enumerate() {
        let Ok((_, cert)) = X509Certificate::from_der(ca) else {
            continue;
        };
        if cert.subject().as_raw() != crl.issuer().as_raw() {
            continue;
        }
        named = true;
        if crl.verify_signature(cert.public_key()).is_ok() {
            return Ok(i);
        }
    }
    Err(if named {
        format!(
            "its signature does not verify with the key of the CA it names ({})",
            crl.issuer()
        )
    } else {
        format!(
            "it was issued by \"{}\", which is not a CA of tls_ca_file",
            crl.issuer()
        )
    })
}

/// Every CRL must be one of the bundle's CAs'.
pub(crate) fn check_crls(
    crls: &[CertificateRevocationListDer<'static>],
    cas: &[CertificateDer<'static>],
) -> Result<(), TlsConfigError> {
    for (index, crl) in crls.iter().enumerate() {
        verify_crl_issuer(crl, cas).map_err(|detail| TlsConfigError::BadCrl { index, detail })?;
    }
    Ok(())
}
