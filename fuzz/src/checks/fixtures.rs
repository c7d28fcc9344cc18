//! The two nodes every target uses, fixed so that recorded traffic replays: the seed
//! corpus is recorded from a testkit `Pair` of exactly these nodes (same cluster, ids,
//! secret, `max_frame`, random seeds and wall clock), so a recorded HELLO or WELCOME
//! verifies in the fuzz targets and the fuzzer starts from joined links.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::join::NONCE_LEN;
use palisade_core::tls::TlsConfig;
use palisade_core::{Config, Endpoint, RandomSource, SharedSecret, Side};
use palisade_testkit::certs::TestCa;
use palisade_testkit::{SeededRandom, EPOCH_MS};

/// The cluster both nodes are in.
pub const CLUSTER: &str = "prod";
/// The shared secret's bytes.
pub const SECRET: [u8; 32] = [0x42; 32];
/// Both nodes' `max_frame`: small, so the fuzzer reaches the limit with short inputs.
pub const MAX_FRAME: usize = 1024;
/// The wall clock the connections start at (the testkit's).
pub const WALL_MS: u64 = EPOCH_MS;
/// The name the initiator dials (it is in the acceptor's certificate).
pub const SERVER_NAME: &str = "node-b";
/// `recv_buffer_limit` choices: tiny, one frame, a few frames, the default.
pub const RECV_LIMITS: [usize; 4] = [64, 1024, 16 * 1024, 1024 * 1024];

/// Index of a side in two-element arrays (initiator first).
pub fn idx(side: Side) -> usize {
    usize::from(side == Side::Acceptor)
}

/// The other end of the link.
pub fn other(side: Side) -> Side {
    [Side::Acceptor, Side::Initiator][idx(side)]
}

/// A node's id.
pub fn node_id(side: Side) -> &'static str {
    ["node-a", "node-b"][idx(side)]
}

/// The random seed of a node's endpoint (`PairBuilder::new`'s seeds).
pub fn seed(side: Side) -> u64 {
    [1, 1 + 0x5eed][idx(side)]
}

/// The shared secret.
pub fn secret() -> SharedSecret {
    match SharedSecret::new(SECRET.to_vec()) {
        Ok(s) => s,
        Err(e) => panic!("fixture secret: {e}"),
    }
}

/// The nonce a node's first connection draws (its endpoint's seeded source).
pub fn first_nonce(side: Side) -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    if let Err(e) = SeededRandom::new(seed(side)).fill(&mut nonce) {
        panic!("seeded random: {e}");
    }
    nonce
}

/// Both nodes' TLS settings: certificates from one test CA, made once per process
/// (ECDSA P-256, so this is quick).
pub fn tls_config(side: Side) -> TlsConfig {
    static TLS: OnceLock<[TlsConfig; 2]> = OnceLock::new();
    let configs = TLS.get_or_init(|| {
        let ca = TestCa::new("fuzz CA");
        [Side::Initiator, Side::Acceptor].map(|s| ca.tls(&ca.node(node_id(s))))
    });
    configs[idx(side)].clone()
}

/// A node's settings: the secret on or off, TLS on or off.
pub fn config(side: Side, keyed: bool, tls: bool) -> Config {
    let mut config = Config::new(CLUSTER, node_id(side));
    if keyed {
        config = config.with_secret(secret());
    }
    if tls {
        config = config.with_tls(tls_config(side));
    }
    config.max_frame = MAX_FRAME;
    config
}

/// A fresh endpoint (fresh replay cache) with the node's seeded random source.
pub fn endpoint(side: Side, config: Config) -> Endpoint {
    match Endpoint::with_random(config, Arc::new(SeededRandom::new(seed(side)))) {
        Ok(e) => e,
        Err(e) => panic!("fixture config: {e}"),
    }
}

/// The wall clock at `WALL_MS`.
pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(WALL_MS)
}

/// Deterministic payload bytes.
pub fn payload(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}
