//! From [`TlsSettings`] (file paths and rules) to the core's [`TlsConfig`], running at
//! start every check a peer would run against this node, and more, so that a node that
//! would fail its first handshake says why before it listens. Every problem becomes a
//! finding of the [`Report`]; loading never stops at the first one.
//!
//! The authorization defaults are decided here (see [`TlsSettings`]): in CA mode
//! `verify_hostname` and `node_id_in_cert` are on unless the settings turn them off,
//! because otherwise any certificate the CA ever signed joins the cluster under any
//! node id; in pinned mode they are off, because every node shares one certificate.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::revocation::{self, CertFacts};
use palisade_core::tls::crl::{verify_crl_issuer, CrlSummary};
use palisade_core::tls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime,
};
use palisade_core::tls::{
    Authorization, CertSummary, Identity, NamePattern, NodeIdNames, TlsConfig, TlsConfigError,
    TlsVersion, TrustAnchors,
};
use palisade_core::{Config, ConfigError};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::X509Version;

use crate::pem;
use crate::report::{Finding, Report};
use crate::settings::{MinTls, TlsSettings, TlsTrust};

/// Days before expiry from which the report warns.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// Days before expiry from which the warning says the renewal is urgent.
pub const EXPIRY_URGENT_DAYS: i64 = 7;
/// The smallest RSA modulus accepted (NIST SP 800-131A; ring refuses smaller keys too).
pub const MIN_RSA_BITS: usize = 2048;

const CERT: &str = "tls_cert_file";
const KEY: &str = "tls_key_file";
const CA: &str = "tls_ca_file";
const CRL: &str = "tls_crl_files";
/// Days before a CRL's nextUpdate from which the report warns.
pub const CRL_EXPIRY_WARNING_DAYS: i64 = 7;

/// The authorization rules in force once the mode's defaults fill what the settings
/// leave unset: (`verify_hostname`, `same_name_as_own_cert`, `node_id_in_cert`).
fn effective_authorization(tls: &TlsSettings) -> (bool, bool, bool) {
    let ca_mode = tls.tls_trust == TlsTrust::Ca;
    (
        tls.verify_hostname.unwrap_or(ca_mode),
        tls.same_name_as_own_cert.unwrap_or(false),
        tls.node_id_in_cert.unwrap_or(ca_mode),
    )
}

/// Reads the TLS files of `tls`, checks them (as its peers will, and more) and builds
/// the core's TLS settings. `None` when TLS is off or any error was found; every
/// problem, warning and a note describing the node's certificate go to `report`.
/// `now` is passed in (not read) so the expiry checks can be tested at any date.
pub fn load_tls(
    tls: &TlsSettings,
    node_id: &str,
    now: SystemTime,
    report: &mut Report,
) -> Option<TlsConfig> {
    if !tls.tls_enabled {
        rules_without_tls(tls, report);
        return None;
    }
    let errors_before = report.errors().count();
    let ca_mode = tls.tls_trust == TlsTrust::Ca;
    contradictions(tls, report);
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));

    let chain = match &tls.tls_cert_file {
        Some(path) => pem::load_certs(CERT, path, report),
        None => {
            report.push(Finding::error(
                CERT,
                "tls_enabled is true but no certificate is set",
                "set tls_cert_file to this node's PEM certificate (and tls_key_file to its key), or set tls_enabled = false",
            ));
            None
        }
    };
    let key = match &tls.tls_key_file {
        Some(path) => pem::load_key(path, report),
        None => {
            report.push(Finding::error(
                KEY,
                "tls_enabled is true but no private key is set",
                "set tls_key_file to the PEM private key made with tls_cert_file",
            ));
            None
        }
    };
    let cas = match (&tls.tls_ca_file, ca_mode) {
        (Some(path), true) => pem::load_certs(CA, path, report),
        _ => None,
    };

    let (_, same_name, node_id_in_cert) = effective_authorization(tls);
    let cert_path = tls.tls_cert_file.clone().unwrap_or_default();
    let mut leaf_ok = false;
    if let Some(leaf) = chain.as_ref().and_then(|c| c.first()) {
        leaf_ok = check_own_cert(tls, node_id, leaf, &cert_path, now_secs, report);
        // Whatever else is wrong with the certificate, a key that is not its own is
        // reported too: loading never stops at the first problem.
        if let (Some(key), Some(key_path)) = (&key, &tls.tls_key_file) {
            check_key_matches(leaf, key, &cert_path, key_path, report);
        }
        if let Some(summary) = CertSummary::parse(leaf) {
            check_own_names(tls, node_id, &summary, &cert_path, report);
            if ca_mode && !node_id_in_cert && !same_name && tls.allowed_names.is_empty() {
                report.push(Finding::warning(
                    "node_id_in_cert",
                    "every authorization rule is off (node_id_in_cert = false is the explicit opt-out, Authorization::accept_any_name): this node accepts any certificate its CA ever signed, under any node id",
                    "turn node_id_in_cert back on (the default), or set allowed_names to the patterns of this cluster's certificate names",
                ));
            }
        }
    }
    if let (Some(cas), Some(ca_path)) = (&cas, &tls.tls_ca_file) {
        let all_cas = check_ca_bundle(cas, ca_path, report);
        if let (Some(chain), true, true) = (&chain, leaf_ok, all_cas) {
            check_issued_by_bundle(chain, cas, &cert_path, ca_path, now_secs, report);
        }
    }
    let patterns = allowed_patterns(&tls.allowed_names, report);
    let crls = load_crls(
        tls,
        cas.as_deref(),
        chain.as_ref().and_then(|c| c.first()),
        now_secs,
        report,
    );

    if report.errors().count() > errors_before {
        return None;
    }
    let (chain, key) = (chain?, key?);
    // Which file each CRL came from, for the core's verdict on CRL #n.
    let crl_files: Vec<PathBuf> = crls
        .iter()
        .flat_map(|(path, ders)| ders.iter().map(move |_| path.clone()))
        .collect();
    let trust = match tls.tls_trust {
        TlsTrust::Ca => TrustAnchors::CaBundle(cas?),
        TlsTrust::Pinned => TrustAnchors::Pinned(chain.first().cloned().into_iter().collect()),
    };
    let mut config = TlsConfig::new(
        Identity {
            cert_chain: chain,
            key,
        },
        trust,
    );
    config.min_version = match tls.min_tls {
        MinTls::Tls12 => TlsVersion::Tls12,
        MinTls::Tls13 => TlsVersion::Tls13,
    };
    config.cipher_suites = tls.cipher_suites.clone();
    config.authorization = authorization(tls, patterns);
    config.crls = crls.into_iter().flat_map(|(_, ders)| ders).collect();
    // The core builds its TLS context here exactly as an endpoint will.
    let id = if node_id.is_empty() { "check" } else { node_id };
    match Config::new("check", id).with_tls(config.clone()).validate() {
        Ok(()) => Some(config),
        Err(ConfigError::Tls(e)) => {
            report.push(core_finding(&e, tls, &crl_files));
            None
        }
        // Names are the settings module's to check; the TLS part built.
        Err(_) => Some(config),
    }
}

/// The authorization the settings ask for: the mode's safe defaults
/// ([`Authorization::for_trust`]) with what the settings say over them. In CA mode, every
/// name rule explicitly off (`node_id_in_cert = false`, no `allowed_names`, no
/// `same_name_as_own_cert`) is the explicit opt-out [`Authorization::accept_any_name`],
/// which the report warns about and the core lists among the weakenings.
fn authorization(tls: &TlsSettings, patterns: Vec<NamePattern>) -> Authorization {
    let (verify_hostname, same_name, node_id_in_cert) = effective_authorization(tls);
    let ca_mode = tls.tls_trust == TlsTrust::Ca;
    let mut a = if ca_mode {
        Authorization::default()
    } else {
        Authorization::pinned()
    };
    a.verify_hostname = verify_hostname;
    a.share_name_with_own_cert = same_name;
    a.node_id_in_cert = node_id_in_cert;
    a.node_id_names = NodeIdNames::Dns;
    a.accept_any_name = ca_mode && !node_id_in_cert && !same_name && patterns.is_empty();
    a.allowed_names = patterns;
    a
}

/// The CRLs of `tls_crl_files`, each file with its CRLs, every one checked: readable,
/// signed by a CA of the bundle (`cas`), not past its nextUpdate (an error: an expired
/// CRL says nothing about today), and, when it lists this node's own certificate, an
/// error too (its peers would refuse it). A CRL close to its nextUpdate is a warning.
fn load_crls(
    tls: &TlsSettings,
    cas: Option<&[CertificateDer<'static>]>,
    leaf: Option<&CertificateDer<'static>>,
    now: i64,
    report: &mut Report,
) -> Vec<(PathBuf, Vec<CertificateRevocationListDer<'static>>)> {
    if tls.tls_crl_files.is_empty() {
        return Vec::new();
    }
    if tls.tls_trust == TlsTrust::Pinned {
        report.push(Finding::error(
            CRL,
            "tls_trust = \"pinned\" has no CA whose CRL could apply, so tls_crl_files would check nothing",
            "remove tls_crl_files; revoke a pinned certificate with a `serial HEX ISSUER` or `spki-sha256 HEX` line in revocation_file (or remove it from the pins)",
        ));
        return Vec::new();
    }
    let own = leaf.and_then(|l| CertFacts::parse(l));
    let mut out = Vec::new();
    for path in &tls.tls_crl_files {
        let Some(ders) = pem::load_crls(path, report) else {
            continue;
        };
        let mut good = true;
        for (i, der) in ders.iter().enumerate() {
            let which = if ders.len() > 1 {
                format!("CRL #{} of the file", i + 1)
            } else {
                "the CRL".to_owned()
            };
            let summary = match CrlSummary::parse(der) {
                Ok(s) => s,
                Err(detail) => {
                    good = false;
                    report.push(
                        Finding::error(
                            CRL,
                            format!("{which} cannot be read: {detail}"),
                            "give tls_crl_files an X.509 CRL (PEM \"-----BEGIN X509 CRL-----\" or DER), e.g. from `palisade certs revoke` or `openssl ca -gencrl`",
                        )
                        .in_file(path),
                    );
                    continue;
                }
            };
            if let Some(cas) = cas {
                if let Err(detail) = verify_crl_issuer(der, cas) {
                    good = false;
                    report.push(
                        Finding::error(
                            CRL,
                            format!("{which} cannot be used: {detail}"),
                            "use the CRL of a CA of tls_ca_file (signed with that CA's key), or add its CA to tls_ca_file",
                        )
                        .in_file(path),
                    );
                    continue;
                }
            }
            if summary.is_expired(now) {
                good = false;
                report.push(
                    Finding::error(
                        CRL,
                        format!(
                            "{which} of \"{}\" is expired: its nextUpdate was {}",
                            summary.issuer,
                            summary.next_update.map_or_else(String::new, rfc3339)
                        ),
                        "publish a fresh CRL from the CA (`palisade certs revoke`, `openssl ca -gencrl`) and write it to this file",
                    )
                    .in_file(path),
                );
                continue;
            }
            if let Some(next) = summary.next_update {
                let days_left = (next - now).div_euclid(86_400);
                if days_left < CRL_EXPIRY_WARNING_DAYS {
                    report.push(
                        Finding::warning(
                            CRL,
                            format!(
                                "{which} of \"{}\" expires in {days_left} day(s), at {} (its nextUpdate); once expired it is refused and this node will not start or reload",
                                summary.issuer,
                                rfc3339(next)
                            ),
                            "publish a fresh CRL from the CA before then",
                        )
                        .in_file(path),
                    );
                }
            }
            if let Some(own) = own.as_ref().filter(|o| {
                palisade_core::revocation::same_name(&o.issuer, &summary.issuer)
                    && summary.lists(&o.serial)
            }) {
                report.push(
                    Finding::warning(
                        CERT,
                        format!(
                            "this node's own certificate is revoked: serial {} (issuer \"{}\") is listed in {}; every peer will refuse it",
                            revocation::hex(&own.serial),
                            own.issuer,
                            path.display()
                        ),
                        "give this node a new certificate (and key) from the CA, or, if it was revoked by mistake, publish a CRL without it",
                    )
                    .in_file(path),
                );
            }
        }
        if good {
            out.push((path.clone(), ders));
        }
    }
    out
}

/// TLS rules and files set while TLS is off: rules that need certificates are errors
/// (the operator asked for a check that cannot happen), files and options are ignored.
fn rules_without_tls(t: &TlsSettings, report: &mut Report) {
    let fix = |key: &str| {
        format!("set tls_enabled = true with tls_cert_file, tls_key_file and tls_ca_file, or remove {key}")
    };
    for (key, on) in [
        ("verify_hostname", t.verify_hostname == Some(true)),
        (
            "same_name_as_own_cert",
            t.same_name_as_own_cert == Some(true),
        ),
        ("node_id_in_cert", t.node_id_in_cert == Some(true)),
        ("allowed_names", !t.allowed_names.is_empty()),
        ("tls_crl_files", !t.tls_crl_files.is_empty()),
    ] {
        if on {
            report.push(Finding::error(
                key,
                format!("{key} checks peer certificates, but tls_enabled is false: there are none to check"),
                fix(key),
            ));
        }
    }
    for (key, set) in [
        (CERT, t.tls_cert_file.is_some()),
        (KEY, t.tls_key_file.is_some()),
        (CA, t.tls_ca_file.is_some()),
        ("tls_trust", t.tls_trust != TlsTrust::default()),
        ("min_tls", t.min_tls != crate::settings::MinTls::default()),
        ("cipher_suites", !t.cipher_suites.is_empty()),
    ] {
        if set {
            report.push(Finding::warning(
                key,
                format!("{key} is set but tls_enabled is false, so it is ignored"),
                fix(key),
            ));
        }
    }
}

/// Settings that contradict each other.
fn contradictions(tls: &TlsSettings, report: &mut Report) {
    match (tls.tls_trust, &tls.tls_ca_file) {
        (TlsTrust::Pinned, Some(path)) => report.push(
            Finding::error(
                CA,
                "tls_trust = \"pinned\" trusts exactly the shared certificate of tls_cert_file, so a CA bundle would be ignored",
                "remove tls_ca_file, or set tls_trust = \"ca\" to trust certificates that CA issued",
            )
            .in_file(path),
        ),
        (TlsTrust::Ca, None) => report.push(Finding::error(
            CA,
            "tls_trust = \"ca\" (the default) but no CA bundle is set, so no peer could be trusted",
            "set tls_ca_file to the PEM bundle of the CA(s) that issue this cluster's node certificates, or set tls_trust = \"pinned\" when every node shares one self-signed certificate",
        )),
        _ => {}
    }
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix {secs}"))
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn rsa_bits(cert: &X509Certificate<'_>) -> Option<usize> {
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let modulus = rsa.modulus;
            let start = modulus.iter().position(|&b| b != 0)?;
            let first = modulus.get(start)?;
            Some((modulus.len() - start) * 8 - first.leading_zeros() as usize)
        }
        _ => None,
    }
}

/// The node's own certificate: a note describing it, validity warnings, and the forms
/// peers refuse. Returns whether it is usable as a node certificate.
fn check_own_cert(
    tls: &TlsSettings,
    node_id: &str,
    der: &CertificateDer<'_>,
    path: &Path,
    now: i64,
    report: &mut Report,
) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        report.push(
            Finding::error(
                CERT,
                "the first PEM block is not an X.509 certificate palisade can read",
                "give tls_cert_file the node certificate first (then any intermediates), in PEM",
            )
            .in_file(path),
        );
        return false;
    };
    let Some(summary) = CertSummary::parse(der) else {
        return false;
    };
    let (not_before, not_after) = (summary.not_before, summary.not_after);
    let days_left = (not_after - now).div_euclid(86_400);
    let names = &summary.names;
    report.push(
        Finding::note(
            CERT,
            format!(
                "certificate: subject \"{}\"; DNS names [{}]; IP addresses [{}]; URIs [{}]; issuer \"{}\"; serial {}; valid {} to {} ({} day(s) left)",
                summary.subject,
                names.dns.join(", "),
                names.ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                names.uris.join(", "),
                summary.issuer,
                hex(cert.raw_serial()),
                rfc3339(not_before),
                rfc3339(not_after),
                days_left.max(0),
            ),
        )
        .in_file(path),
    );
    validity_warning(not_before, not_after, now, path, report);

    let ca_mode = tls.tls_trust == TlsTrust::Ca;
    let mut usable = true;
    if let Some(bits) = rsa_bits(&cert).filter(|&bits| bits < MIN_RSA_BITS) {
        usable = false;
        report.push(
            Finding::error(
                CERT,
                format!("the certificate's RSA key has {bits} bits; palisade (and rustls) refuse RSA keys under {MIN_RSA_BITS} bits"),
                "make a new key and certificate: `openssl genrsa -out node.key 3072` (or an ECDSA key: `openssl ecparam -genkey -name prime256v1 -noout -out node.key`)",
            )
            .in_file(path),
        );
    }
    if cert.version() == X509Version::V1 {
        usable = false;
        report.push(
            Finding::error(
                CERT,
                "it is an X.509 v1 certificate (what `openssl x509 -req` makes without `-extfile`): it has no subjectAltName or key usage, and rustls refuses v1 certificates",
                reissue_command(tls, node_id, &summary, path),
            )
            .in_file(path),
        );
    } else if ca_mode && is_ca(&cert) {
        usable = false;
        report.push(
            Finding::error(
                CERT,
                "it is a CA certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes), and in CA mode peers refuse a CA certificate as a node certificate",
                format!(
                    "either share this one certificate between all nodes with tls_trust = \"pinned\" (and no tls_ca_file), or issue this node a certificate from the CA: {}",
                    reissue_command(tls, node_id, &summary, path)
                ),
            )
            .in_file(path),
        );
    }
    usable
}

/// Where a certificate stands against its expiry: the thresholds of the report's
/// warnings, at start ([`load_tls`]) and while the node runs (`FileWatch`), decided in
/// one place so the two never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExpiryLevel {
    /// More than [`EXPIRY_WARNING_DAYS`] days left.
    Valid,
    /// Fewer than [`EXPIRY_WARNING_DAYS`] days left: renew it.
    Within30Days,
    /// Fewer than [`EXPIRY_URGENT_DAYS`] days left: renew it now.
    Within7Days,
    /// Past its end: every peer refuses this node.
    Expired,
}

impl ExpiryLevel {
    /// The level of a certificate valid until `not_after` at `now` (unix seconds).
    pub fn at(not_after: i64, now: i64) -> Self {
        let days_left = (not_after - now).div_euclid(86_400);
        if now > not_after {
            Self::Expired
        } else if days_left < EXPIRY_URGENT_DAYS {
            Self::Within7Days
        } else if days_left < EXPIRY_WARNING_DAYS {
            Self::Within30Days
        } else {
            Self::Valid
        }
    }
}

/// The warning about a certificate valid until `not_after`, at `level` (none when
/// [`ExpiryLevel::Valid`]).
pub(crate) fn expiry_finding(
    level: ExpiryLevel,
    not_after: i64,
    now: i64,
    path: &Path,
) -> Option<Finding> {
    let days_left = (not_after - now).div_euclid(86_400);
    let renew = "renew it now and replace tls_cert_file and tls_key_file (the node keeps running; peers refuse it until then)";
    let (cause, fix) = match level {
        ExpiryLevel::Valid => return None,
        ExpiryLevel::Expired => (
            format!(
                "the certificate EXPIRED at {}: every peer will refuse this node",
                rfc3339(not_after)
            ),
            renew.to_owned(),
        ),
        ExpiryLevel::Within7Days => (
            format!(
                "URGENT: the certificate expires in {days_left} day(s), at {}",
                rfc3339(not_after)
            ),
            renew.to_owned(),
        ),
        ExpiryLevel::Within30Days => (
            format!(
                "the certificate expires in {days_left} day(s), at {}",
                rfc3339(not_after)
            ),
            "renew it before then and replace tls_cert_file and tls_key_file".to_owned(),
        ),
    };
    Some(Finding::warning(CERT, cause, fix).in_file(path))
}

fn validity_warning(not_before: i64, not_after: i64, now: i64, path: &Path, report: &mut Report) {
    let level = ExpiryLevel::at(not_after, now);
    let finding = if level != ExpiryLevel::Expired && now < not_before {
        Some(Finding::warning(
            CERT,
            format!("the certificate is not valid before {}: every peer will refuse this node until then", rfc3339(not_before)),
            "check this machine's clock, or use a certificate valid now",
        ).in_file(path))
    } else {
        expiry_finding(level, not_after, now, path)
    };
    report.findings.extend(finding);
}

/// The openssl commands that re-issue the node certificate at `path` as X.509 v3 with
/// the extensions a node certificate needs, keeping its key and names.
fn reissue_command(tls: &TlsSettings, node_id: &str, summary: &CertSummary, path: &Path) -> String {
    let mut dns: Vec<String> = summary.names.dns.clone();
    if dns.is_empty() {
        dns.extend(summary.names.common_name.iter().cloned());
    }
    if !node_id.is_empty() && !dns.iter().any(|n| n == node_id) {
        dns.push(node_id.to_owned());
    }
    let mut san: Vec<String> = dns.iter().map(|n| format!("DNS:{n}")).collect();
    san.extend(summary.names.ips.iter().map(|ip| format!("IP:{ip}")));
    san.extend(summary.names.uris.iter().map(|u| format!("URI:{u}")));
    let key = tls
        .tls_key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("node.key"));
    let ca = tls
        .tls_ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("ca.pem"));
    let ca_key = ca.with_extension("key");
    format!(
        "re-issue it as v3: `printf 'subjectAltName={}\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature,keyEncipherment\\nextendedKeyUsage=serverAuth,clientAuth\\n' > node.ext && openssl x509 -x509toreq -in {cert} -signkey {key} -out node.csr && openssl x509 -req -in node.csr -CA {ca} -CAkey {ca_key} -CAcreateserial -days 365 -extfile node.ext -out {cert}` (-CA and -CAkey: the CA certificate and key that sign node certificates)",
        san.join(","),
        cert = path.display(),
        key = key.display(),
        ca = ca.display(),
        ca_key = ca_key.display(),
    )
}

/// The key must be the certificate's: compare the public key derived from the private
/// key with the certificate's subjectPublicKeyInfo.
fn check_key_matches(
    leaf: &CertificateDer<'_>,
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
    report: &mut Report,
) {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = match provider.key_provider.load_private_key(key.clone_key()) {
        Ok(k) => k,
        Err(e) => {
            report.push(
                Finding::error(
                    KEY,
                    format!("the private key cannot be used: {e}"),
                    "use an RSA (2048 bits or more), ECDSA P-256/P-384 or Ed25519 key in PKCS#8, PKCS#1 or SEC1 PEM",
                )
                .in_file(key_path),
            );
            return;
        }
    };
    let Ok((_, cert)) = X509Certificate::from_der(leaf) else {
        return;
    };
    let Some(public) = signing_key.public_key() else {
        return;
    };
    if public.as_ref() != cert.public_key().raw {
        report.push(
            Finding::error(
                KEY,
                format!(
                    "the private key in {} does not belong to the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
                "use the key the certificate was made for (compare `openssl pkey -in KEY -pubout` with `openssl x509 -in CERT -noout -pubkey`)",
            )
            .in_file(key_path),
        );
    }
}

/// Every certificate of the CA bundle must be a CA. Returns whether all are.
fn check_ca_bundle(cas: &[CertificateDer<'static>], path: &Path, report: &mut Report) -> bool {
    let mut all = true;
    for (i, der) in cas.iter().enumerate() {
        let ok = X509Certificate::from_der(der).is_ok_and(|(_, c)| is_ca(&c));
        if !ok {
            all = false;
            let subject =
                CertSummary::parse(der).map_or_else(|| "unreadable".into(), |s| s.subject);
            report.push(
                Finding::error(
                    CA,
                    format!("certificate #{} of the bundle (\"{subject}\") is not a CA certificate (basicConstraints CA:TRUE is missing)", i + 1),
                    "put the certificate of the CA that signs node certificates in tls_ca_file, not a node certificate (for one shared self-signed certificate use tls_trust = \"pinned\")",
                )
                .in_file(path),
            );
        }
    }
    all
}

/// CA mode: this node's chain must lead to a CA of its own bundle, or its peers (using
/// the same bundle) will refuse it. Validity dates are reported separately, so the chain
/// is checked at a time inside the certificate's validity.
fn check_issued_by_bundle(
    chain: &[CertificateDer<'static>],
    cas: &[CertificateDer<'static>],
    cert_path: &Path,
    ca_path: &Path,
    now: i64,
    report: &mut Report,
) {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return;
    };
    let anchors: Vec<_> = cas
        .iter()
        .filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok())
        .collect();
    let Some(summary) = CertSummary::parse(leaf) else {
        return;
    };
    let at = now.clamp(summary.not_before, summary.not_after).max(0);
    let time = UnixTime::since_unix_epoch(Duration::from_secs(at.unsigned_abs()));
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    for (usage, role) in [
        (webpki::KeyUsage::client_auth(), "clientAuth"),
        (webpki::KeyUsage::server_auth(), "serverAuth"),
    ] {
        let Err(e) = ee.verify_for_usage(algs, &anchors, intermediates, time, usage, None, None)
        else {
            continue;
        };
        let (cause, fix) = match e {
            webpki::Error::UnknownIssuer => (
                format!(
                    "the certificate (issuer \"{}\") is not issued by any CA of this node's own tls_ca_file ({}), so its peers, which use the same bundle, will refuse it",
                    summary.issuer,
                    ca_path.display()
                ),
                "add the issuing CA to tls_ca_file, or give this node a certificate from a CA of the bundle (intermediates go after the node certificate in tls_cert_file)".to_owned(),
            ),
            webpki::Error::RequiredEkuNotFoundContext(_) => (
                format!("the certificate's extendedKeyUsage lacks {role}; a node both dials and accepts, so it needs serverAuth and clientAuth"),
                "re-issue it with `extendedKeyUsage=serverAuth,clientAuth` in the -extfile".to_owned(),
            ),
            other => (
                format!("peers will refuse the certificate: {other}"),
                "re-issue it from a CA of tls_ca_file with the v3 extensions of a node certificate".to_owned(),
            ),
        };
        report.push(Finding::error(CERT, cause, fix).in_file(cert_path));
        return;
    }
}

/// The node's own names that its own rules would refuse: its peers, running the same
/// settings, would refuse it.
fn check_own_names(
    tls: &TlsSettings,
    node_id: &str,
    summary: &CertSummary,
    path: &Path,
    report: &mut Report,
) {
    let (_, same_name, node_id_in_cert) = effective_authorization(tls);
    let names = &summary.names;
    if node_id_in_cert && !names.names_node(node_id, NodeIdNames::Dns) {
        let explicit = if tls.node_id_in_cert.is_none() {
            " (on by default in CA mode)"
        } else {
            ""
        };
        report.push(
            Finding::error(
                "node_id_in_cert",
                format!(
                    "node_id_in_cert is on{explicit} but node_id {node_id:?} is not one of this node's certificate DNS names [{}] (compared exactly), so its peers would refuse it",
                    names.dns.join(", ")
                ),
                format!("set node_id to one of the certificate's DNS names, re-issue the certificate with subjectAltName=DNS:{node_id}, or set node_id_in_cert = false"),
            )
            .in_file(path),
        );
    }
    if !tls.allowed_names.is_empty() {
        let patterns: Vec<NamePattern> = tls
            .allowed_names
            .iter()
            .filter_map(|p| NamePattern::new(p.as_str()).ok())
            .collect();
        let own = names.for_authorization();
        if !own.iter().any(|n| patterns.iter().any(|p| p.matches(n))) {
            report.push(
                Finding::error(
                    "allowed_names",
                    format!(
                        "none of this node's own certificate names [{}] matches allowed_names [{}], so its peers would refuse it",
                        own.join(", "),
                        tls.allowed_names.join(", ")
                    ),
                    "add a pattern matching this node's certificate names to allowed_names, or re-issue the certificate",
                )
                .in_file(path),
            );
        }
    }
    if same_name && names.host_names().is_empty() {
        report.push(
            Finding::error(
                "same_name_as_own_cert",
                "same_name_as_own_cert is on but this node's certificate has no DNS name to share, so every peer would be refused",
                "give the certificates a common DNS name (subjectAltName=DNS:...), or set same_name_as_own_cert = false",
            )
            .in_file(path),
        );
    }
}

fn allowed_patterns(names: &[String], report: &mut Report) -> Vec<NamePattern> {
    let mut patterns = Vec::with_capacity(names.len());
    for name in names {
        match NamePattern::new(name.as_str()) {
            Ok(p) => patterns.push(p),
            Err(cause) => report.push(Finding::error(
                "allowed_names",
                cause,
                "write patterns like \"*.cluster.svc.local\" or \"node-*\"",
            )),
        }
    }
    patterns
}

/// The core's verdict, under the setting it concerns.
fn core_finding(err: &TlsConfigError, tls: &TlsSettings, crl_files: &[PathBuf]) -> Finding {
    let file = |p: &Option<PathBuf>| p.clone();
    let (key, file, cause, fix) = match err {
        TlsConfigError::UnknownCipherSuite { name, known } => (
            "cipher_suites",
            None,
            format!("unknown cipher suite {name:?}"),
            format!("use IANA names from: {}", known.join(", ")),
        ),
        TlsConfigError::NoUsableSuite { min_version } => (
            "cipher_suites",
            None,
            format!("none of the chosen cipher suites works with min_tls = {min_version}"),
            "add a suite for that TLS version, or empty cipher_suites for the defaults".to_owned(),
        ),
        TlsConfigError::BadKey(detail) => (
            KEY,
            file(&tls.tls_key_file),
            format!("the private key cannot be used: {detail}"),
            "use the key made with tls_cert_file (PKCS#8, PKCS#1 RSA or SEC1 EC)".to_owned(),
        ),
        TlsConfigError::BadCertificate { which, detail }
            if matches!(*which, "tls.ca" | "tls_ca_file") =>
        {
            (
                CA,
                file(&tls.tls_ca_file),
                format!("a CA certificate cannot be used: {detail}"),
                "give tls_ca_file PEM CA certificates".to_owned(),
            )
        }
        TlsConfigError::BadCrl { index, detail } => (
            CRL,
            crl_files.get(*index).cloned(),
            format!("the CRL cannot be used: {detail}"),
            "give tls_crl_files CRLs (PEM or DER) signed by a CA of tls_ca_file, e.g. from `palisade certs revoke` or `openssl ca -gencrl`".to_owned(),
        ),
        TlsConfigError::NoNameRule => (
            "node_id_in_cert",
            None,
            err.to_string(),
            "turn node_id_in_cert on (the default), or set allowed_names".to_owned(),
        ),
        TlsConfigError::NoTrustAnchors => (
            CA,
            file(&tls.tls_ca_file),
            "the CA bundle holds no certificate".to_owned(),
            "give tls_ca_file the PEM certificate(s) of the cluster's CA".to_owned(),
        ),
        other => (
            CERT,
            file(&tls.tls_cert_file),
            format!("the certificate cannot be used: {other}"),
            "give tls_cert_file a v3 node certificate (PEM, node certificate first)".to_owned(),
        ),
    };
    let finding = Finding::error(key, cause, fix);
    match file {
        Some(path) => finding.in_file(path),
        None => finding,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate's serial number as lowercase hex (as `check`'s note and
/// `palisade certs show` print it), `None` when `der` is not a certificate. Public so the
/// `palisade` command names certificates exactly as the load report does.
pub fn serial_hex(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(hex(cert.raw_serial()))
}
