//! Certificates made at test time with rcgen (ECDSA P-256 unless said otherwise): a
//! cluster CA, node certificates it signs, and self-signed certificates for pinned mode.

use palisade_core::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use palisade_core::tls::{Identity, TlsConfig, TrustAnchors};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// How a node certificate is made.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names (IP addresses become IP SANs).
    pub dns: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// Validity, as (year, month, day) pairs.
    pub not_before: (i32, u8, u8),
    /// End of validity.
    pub not_after: (i32, u8, u8),
    /// Extended key usages (default serverAuth + clientAuth).
    pub usages: Vec<ExtendedKeyUsagePurpose>,
}

impl CertSpec {
    /// A node certificate valid 2025-01-01 to 2030-01-01 with the DNS names given.
    pub fn new(common_name: &str, dns: &[&str]) -> Self {
        Self {
            common_name: common_name.to_owned(),
            dns: dns.iter().map(|s| (*s).to_owned()).collect(),
            uris: Vec::new(),
            not_before: (2025, 1, 1),
            not_after: (2030, 1, 1),
            usages: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        }
    }

    /// Sets the validity window.
    pub fn valid(mut self, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Adds URI alternative names (SPIFFE ids).
    pub fn uris(mut self, uris: &[&str]) -> Self {
        self.uris = uris.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = dn;
        for name in &self.dns {
            if let Ok(ip) = name.parse::<std::net::IpAddr>() {
                params.subject_alt_names.push(SanType::IpAddress(ip));
                continue;
            }
            params.subject_alt_names.push(SanType::DnsName(
                name.clone()
                    .try_into()
                    .unwrap_or_else(|e| panic!("bad DNS name {name}: {e}")),
            ));
        }
        for uri in &self.uris {
            params.subject_alt_names.push(SanType::URI(
                uri.clone()
                    .try_into()
                    .unwrap_or_else(|e| panic!("bad URI {uri}: {e}")),
            ));
        }
        let (y, m, d) = self.not_before;
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = self.not_after;
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.extended_key_usages = self.usages.clone();
        params
    }
}

/// A certificate and its PKCS#8 key.
#[derive(Debug, Clone)]
pub struct TestIdentity {
    /// The chain, end entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER of the key.
    pub key_der: Vec<u8>,
}

impl TestIdentity {
    /// As the core's [`Identity`].
    pub fn identity(&self) -> Identity {
        Identity {
            cert_chain: self.chain.clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
        }
    }

    /// The chain as PEM (`BEGIN CERTIFICATE` blocks, leaf first), as a file holds it.
    pub fn cert_pem(&self) -> String {
        certs_pem(&self.chain)
    }

    /// The key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PRIVATE KEY", self.key_der.clone()))
    }
}

/// Certificates as PEM blocks.
pub fn certs_pem(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
        .collect()
}

/// A test CA.
pub struct TestCa {
    /// The CA certificate.
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap_or_else(|e| panic!("rcgen key generation failed: {e}"))
}

impl TestCa {
    /// A CA named `name`, valid 2020 to 2040.
    pub fn new(name: &str) -> Self {
        let key = key();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("rcgen CA failed: {e}"));
        Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A node certificate this CA signs.
    pub fn issue(&self, spec: &CertSpec) -> TestIdentity {
        let key = key();
        let cert = spec
            .params()
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("rcgen signing failed: {e}"));
        TestIdentity {
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
        }
    }

    /// A node certificate with default validity for `name` (CN and DNS SAN).
    pub fn node(&self, name: &str) -> TestIdentity {
        self.issue(&CertSpec::new(name, &[name]))
    }

    /// A CRL this CA signs, listing `revoked_serials` (big-endian bytes), with CRL
    /// number `number`, issued 2020-01-01 (or a day before `next_update` when that is
    /// earlier) and valid until `next_update` (year, month, day).
    pub fn crl(
        &self,
        revoked_serials: &[&[u8]],
        number: u64,
        next_update: (i32, u8, u8),
    ) -> palisade_core::tls::pki_types::CertificateRevocationListDer<'static> {
        let (y, m, d) = next_update;
        let next = rcgen::date_time_ymd(y, m, d);
        let this =
            rcgen::date_time_ymd(2020, 1, 1).min(next - std::time::Duration::from_secs(86_400));
        let params = rcgen::CertificateRevocationListParams {
            this_update: this,
            next_update: next,
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked_serials
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(serial),
                    revocation_time: this,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .unwrap_or_else(|e| panic!("rcgen CRL failed: {e}"))
            .der()
            .clone()
    }

    /// A node certificate for node id `name` reached at `host`: CN and DNS SAN `name`,
    /// plus `host` as an IP SAN (an IP address) or a second DNS SAN. It passes both safe
    /// defaults of CA mode: `node_id_in_cert` for the node id `name`, and
    /// `verify_hostname` for a dialer that dials `host` (e.g. `127.0.0.1`).
    pub fn node_at(&self, name: &str, host: &str) -> TestIdentity {
        self.issue(&CertSpec::new(name, &[name, host]))
    }

    /// TLS settings for a node holding `identity`, trusting this CA only.
    pub fn tls(&self, identity: &TestIdentity) -> TlsConfig {
        TlsConfig::new(
            identity.identity(),
            TrustAnchors::CaBundle(vec![self.cert.clone()]),
        )
    }
}

/// A self-signed certificate (as `openssl req -x509` makes) for pinned mode.
pub fn self_signed(spec: &CertSpec) -> TestIdentity {
    let key = key();
    let cert = spec
        .params()
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("rcgen self-signed failed: {e}"));
    TestIdentity {
        chain: vec![cert.der().clone()],
        key_der: key.serialize_der(),
    }
}

/// TLS settings for pinned mode: present `identity`, trust exactly `pinned`.
pub fn pinned_tls(identity: &TestIdentity, pinned: &[&TestIdentity]) -> TlsConfig {
    TlsConfig::new(
        identity.identity(),
        TrustAnchors::Pinned(pinned.iter().map(|p| p.chain[0].clone()).collect()),
    )
}
