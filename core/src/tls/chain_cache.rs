//! Peer certificate chains this endpoint has already verified, remembered so that a peer
//! reconnecting with the same chain costs no second signature check.
//!
//! A cluster sees the same few certificates again and again: every node redials its
//! peers after a partition, a restart or a deploy. Checking a chain means parsing it and
//! verifying a signature per certificate (an ECDSA P-256 verification, about a sixth of
//! a whole mutual-TLS handshake on each side), and the answer is a pure function of:
//!
//! - the chain's exact bytes (the key here holds all of them, compared byte for byte:
//!   no digest whose collisions would matter);
//! - the trust anchors and CRLs: fixed for the life of one [`PeerPolicy`]
//!   (super::verify::PeerPolicy), which a reload replaces with a new one and an empty
//!   cache;
//! - the name the dialer checks (part of the key);
//! - the time, only through each certificate's validity window (a CRL past its
//!   nextUpdate still counts, see `Trust::ca`): an entry answers only inside the
//!   intersection of the windows of every certificate of the chain, and a lookup
//!   outside it is a miss, verified in full.
//!
//! Only chains that passed are remembered, so no input can make a refusal stick or a
//! stranger's chain pass. What is checked per connection stays per connection: the
//! deny-list of `revocation_file`, the authorization rules, the proof of the private key
//! (the handshake's CertificateVerify signature, which rustls checks for every
//! handshake) and, at the join, the node id. An insider with many valid certificates can
//! only turn the cache over, which costs it nothing but speed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::names::CertSummary;

/// Chains remembered per endpoint and settings generation. Each holds its bytes (about
/// 0.5–2 KiB), so a full cache stays within a few MiB.
pub(crate) const CAPACITY: usize = 1024;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the remembering of verified chains on or off for every endpoint of the
/// process (on by default). For measuring what it buys (`benches/inmemory.rs` and
/// `benches/loopback.rs` time handshakes with it off too): with it off every handshake
/// verifies the peer's chain in full, as bare rustls does. Verdicts are the same
/// either way; this is not a security setting.
pub fn remember_verified_chains(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// A chain that passed: what the verifier would find again at any time inside the
/// window.
#[derive(Debug)]
pub(crate) struct Verified {
    /// The end-entity certificate, parsed.
    pub(crate) summary: CertSummary,
    /// The chain verifier also found the dialed name in the certificate.
    pub(crate) name_verified: bool,
    /// Latest notBefore of the chain's certificates, unix seconds.
    not_before: i64,
    /// Earliest notAfter of the chain's certificates, unix seconds.
    not_after: i64,
}

impl Verified {
    /// The verdict of a chain whose end entity is `summary` and whose other
    /// certificates are `intermediates`. When an intermediate cannot be parsed for its
    /// dates the window is empty: the verdict is used once and not remembered.
    pub(crate) fn new(
        summary: CertSummary,
        intermediates: &[CertificateDer<'_>],
        name_verified: bool,
    ) -> Self {
        let (mut not_before, mut not_after) = (summary.not_before, summary.not_after);
        for der in intermediates {
            match CertSummary::parse(der) {
                Some(other) => {
                    not_before = not_before.max(other.not_before);
                    not_after = not_after.min(other.not_after);
                }
                None => (not_before, not_after) = (i64::MAX, i64::MIN),
            }
        }
        Self {
            summary,
            name_verified,
            not_before,
            not_after,
        }
    }

    /// Every certificate of the chain is valid at `now` (bounds included, as webpki
    /// checks them).
    fn holds_at(&self, now: UnixTime) -> bool {
        let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.not_before <= secs && secs <= self.not_after
    }
}

/// The lookup key: which check (client certificate, or server certificate for a name)
/// and every byte of the chain, each part length-prefixed so no two inputs share a key.
pub(crate) fn key(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: Option<&ServerName<'_>>,
) -> Vec<u8> {
    let name = server_name.map(|n| n.to_str());
    let len = 1
        + name.as_ref().map_or(0, |n| 4 + n.len())
        + 4
        + end_entity.len()
        + intermediates.iter().map(|c| 4 + c.len()).sum::<usize>();
    let mut key = Vec::with_capacity(len);
    match (&name, server_name) {
        (Some(n), Some(ServerName::IpAddress(_))) => {
            key.push(2);
            put(&mut key, n.as_bytes());
        }
        (Some(n), _) => {
            key.push(1);
            put(&mut key, n.as_bytes());
        }
        (None, _) => key.push(0),
    }
    put(&mut key, end_entity);
    for der in intermediates {
        put(&mut key, der);
    }
    key
}

/// Appends `bytes` with its length before it.
fn put(key: &mut Vec<u8>, bytes: &[u8]) {
    key.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    key.extend_from_slice(bytes);
}

/// The remembered chains of one [`PeerPolicy`](super::verify::PeerPolicy).
#[derive(Debug, Default)]
pub(crate) struct ChainCache {
    entries: Mutex<HashMap<Vec<u8>, Arc<Verified>>>,
    /// Lookups answered from the cache.
    hits: AtomicU64,
}

impl ChainCache {
    /// The remembered verdict for `key`, if it holds at `now`.
    pub(crate) fn get(&self, key: &[u8], now: UnixTime) -> Option<Arc<Verified>> {
        if !ENABLED.load(Ordering::Relaxed) {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let verified = entries.get(key)?;
        let hit = verified.holds_at(now).then(|| Arc::clone(verified));
        if hit.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Remembers a chain that passed, making room by forgetting another when full.
    pub(crate) fn insert(&self, key: Vec<u8>, verified: Verified) -> Arc<Verified> {
        let empty_window = verified.not_before > verified.not_after;
        let verified = Arc::new(verified);
        if empty_window || !ENABLED.load(Ordering::Relaxed) {
            return verified;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY && !entries.contains_key(&key) {
                if let Some(old) = entries.keys().next().cloned() {
                    entries.remove(&old);
                }
            }
            entries.insert(key, Arc::clone(&verified));
        }
        verified
    }

    /// Chains remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Lookups answered from the cache so far.
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
