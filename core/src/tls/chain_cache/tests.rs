//! The cache answers exactly what a full verification would, and only then.

use std::time::Duration;

use palisade_testkit::certs::{CertSpec, TestCa, TestIdentity};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::super::config::{Identity, TlsConfig, TlsContext, TrustAnchors};
use super::super::error::CertRefusal;
use super::super::verify::PeerPolicy;
use super::*;
use crate::revocation::Revocations;

/// 2026-06-01, inside the default test certificates' 2025–2030 window.
const NOW: u64 = 1_780_272_000;

fn at(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

fn identity(id: &TestIdentity) -> Identity {
    Identity {
        cert_chain: id.chain.clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
    }
}

/// node-1's policy, trusting `ca` with the default (safe) rules.
fn policy_of(ca: &TestCa) -> Arc<PeerPolicy> {
    let own = ca.node("node-1");
    let config = TlsConfig::new(
        identity(&own),
        TrustAnchors::CaBundle(vec![ca.cert.clone()]),
    );
    TlsContext::build(&config, &Revocations::default())
        .expect("context")
        .policy
}

fn dns(name: &'static str) -> ServerName<'static> {
    ServerName::try_from(name).expect("name")
}

fn refusal(
    policy: &PeerPolicy,
    peer: &TestIdentity,
    name: Option<&ServerName<'_>>,
    now: u64,
) -> CertRefusal {
    policy
        .check(&peer.chain[0], &peer.chain[1..], name, at(now))
        .expect_err("refused")
        .0
}

#[test]
fn a_chain_verified_once_is_answered_from_the_cache_with_the_same_verdict() {
    let ca = TestCa::new("cluster CA");
    let policy = policy_of(&ca);
    let peer = ca.node("node-2");
    let first = policy
        .check(&peer.chain[0], &[], None, at(NOW))
        .expect("accepted");
    assert_eq!((policy.chains.len(), policy.chains.hits()), (1, 0));
    let again = policy
        .check(&peer.chain[0], &[], None, at(NOW + 3600))
        .expect("accepted again");
    assert_eq!(again, first);
    assert_eq!(
        policy.chains.hits(),
        1,
        "the second check came from the cache"
    );
    // The dialer's check (server certificate, for a name) is an entry of its own.
    let name = dns("node-2");
    policy
        .check(&peer.chain[0], &[], Some(&name), at(NOW))
        .expect("accepted as a server");
    assert_eq!((policy.chains.len(), policy.chains.hits()), (2, 1));
}

#[test]
fn a_remembered_chain_is_verified_in_full_outside_its_validity() {
    let ca = TestCa::new("cluster CA");
    let policy = policy_of(&ca);
    let peer = ca.issue(&CertSpec::new("node-2", &["node-2"]).valid((2026, 1, 1), (2027, 1, 1)));
    policy
        .check(&peer.chain[0], &[], None, at(NOW))
        .expect("accepted in 2026");
    // 2027-06-01: past notAfter.
    let later = 1_811_808_000;
    assert!(
        matches!(
            refusal(&policy, &peer, None, later),
            CertRefusal::Expired { .. }
        ),
        "an expired certificate is refused although its chain was remembered"
    );
    // 2025-06-01: before notBefore.
    let earlier = 1_748_736_000;
    assert!(matches!(
        refusal(&policy, &peer, None, earlier),
        CertRefusal::NotYetValid { .. }
    ));
    assert_eq!(policy.chains.hits(), 0);
}

#[test]
fn a_refused_chain_is_not_remembered() {
    let ca = TestCa::new("cluster CA");
    let stranger = TestCa::new("cluster CA").node("node-2");
    let policy = policy_of(&ca);
    // Signed by another key under the same CA name: the signature check fails, twice.
    for _ in 0..2 {
        let refused = refusal(&policy, &stranger, None, NOW);
        assert!(
            matches!(refused, CertRefusal::Invalid { ref detail } if detail.contains("BadSignature")),
            "{refused:?}"
        );
    }
    assert_eq!(policy.chains.len(), 0);
}

#[test]
fn the_dialed_name_is_decided_for_each_name() {
    let ca = TestCa::new("cluster CA");
    let policy = policy_of(&ca);
    let peer = ca.node("node-2");
    let (right, wrong) = (dns("node-2"), dns("node-9"));
    policy
        .check(&peer.chain[0], &[], Some(&right), at(NOW))
        .expect("the name it names");
    for _ in 0..2 {
        assert!(matches!(
            refusal(&policy, &peer, Some(&wrong), NOW),
            CertRefusal::HostnameMismatch { .. }
        ));
    }
    // The client-certificate check of the same chain does not borrow the dialer's.
    policy
        .check(&peer.chain[0], &[], None, at(NOW))
        .expect("as a client");
    assert_eq!(
        policy.chains.hits(),
        1,
        "only the mismatch's second try hit"
    );
}

#[test]
fn a_new_policy_starts_with_nothing_remembered() {
    let ca = TestCa::new("cluster CA");
    let peer = ca.node("node-2");
    let before = policy_of(&ca);
    before
        .check(&peer.chain[0], &[], None, at(NOW))
        .expect("accepted");
    // The bundle rotated to another CA: what the old policy remembered does not count.
    let after = policy_of(&TestCa::new("next CA"));
    assert!(matches!(
        refusal(&after, &peer, None, NOW),
        CertRefusal::UnknownIssuer { .. }
    ));
}

#[test]
fn keys_differ_by_role_name_kind_and_every_byte() {
    let a = CertificateDer::from(vec![1u8, 2, 3, 4]);
    let (ab, cd) = (
        CertificateDer::from(vec![1u8, 2]),
        CertificateDer::from(vec![3u8, 4]),
    );
    let ip = ServerName::try_from("10.0.0.1").expect("ip");
    let dns_ip = dns("node-2");
    let keys = [
        key(&a, &[], None),
        key(&a, &[], Some(&dns_ip)),
        key(&a, &[], Some(&ip)),
        key(&ab, std::slice::from_ref(&cd), None),
        key(&CertificateDer::from(vec![1u8, 2, 3, 5]), &[], None),
    ];
    for (i, x) in keys.iter().enumerate() {
        for y in &keys[i + 1..] {
            assert_ne!(x, y);
        }
    }
}

#[test]
fn a_full_cache_forgets_one_to_remember_another() {
    let cache = ChainCache::default();
    let summary = || CertSummary {
        names: Default::default(),
        subject: String::new(),
        issuer: String::new(),
        not_before: 0,
        not_after: i64::MAX,
    };
    for i in 0..=CAPACITY as u32 {
        cache.insert(
            i.to_be_bytes().to_vec(),
            Verified::new(summary(), &[], false),
        );
    }
    assert_eq!(cache.len(), CAPACITY);
    let newest = (CAPACITY as u32).to_be_bytes();
    assert!(cache.get(&newest, at(NOW)).is_some());
}
