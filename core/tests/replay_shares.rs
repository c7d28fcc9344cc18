//! The replay cache's shares (docs/PROTOCOL.md §5.5 step 9), through the acceptor's HELLO
//! checks: one node flooding plaintext joins, from one address, from 16 addresses or
//! under node ids it invents, uses up its own share and leaves the cache to the others.
//! Small capacities; each HELLO is made and checked directly (no connection).

use std::net::{IpAddr, Ipv4Addr};

use palisade_core::join::{AcceptorHandshake, InitiatorHandshake, RejectCode, ReplayCache};
use palisade_core::{Config, SharedSecret};

const NOW: u64 = 1_800_000_000_000;

fn keyed(node: &str) -> Config {
    Config::new("prod", node).with_secret(SharedSecret::new(vec![7; 32]).unwrap())
}

/// A listener ("node-b") whose replay cache holds `capacity` nonces, `share` per node id
/// and per address.
fn listener(capacity: usize, share: usize) -> (Config, ReplayCache) {
    let mut config = keyed("node-b");
    config.replay_cache_capacity = capacity;
    config.replay_cache_per_source = share;
    let cache = ReplayCache::new(capacity, share);
    (config, cache)
}

fn addr(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// One plaintext join of `node` from `from` with a fresh nonce: Ok, or the refusal.
fn join(
    listener: &(Config, ReplayCache),
    node: &str,
    from: IpAddr,
    seq: &mut u32,
) -> Result<(), (RejectCode, String)> {
    *seq += 1;
    let mut nonce = [0u8; 32];
    nonce[..4].copy_from_slice(&seq.to_be_bytes());
    let init = InitiatorHandshake::new(&keyed(node), nonce, NOW, b"");
    AcceptorHandshake::new([0xaa; 32])
        .from_source(Some(from))
        .read_hello(&listener.0, &listener.1, init.hello(), b"", NOW)
        .map(|_| ())
        .map_err(|r| (r.code, r.message))
}

/// `node` joins from `addresses` in turn until each is refused; returns the joins made
/// and the last refusal.
fn flood(
    listener: &(Config, ReplayCache),
    node: impl Fn(usize) -> String,
    addresses: &[IpAddr],
    seq: &mut u32,
) -> (usize, (RejectCode, String)) {
    let mut joined = 0;
    let mut refused = vec![None; addresses.len()];
    for round in 0.. {
        for (i, from) in addresses.iter().enumerate() {
            if refused[i].is_none() {
                match join(listener, &node(round * addresses.len() + i), *from, seq) {
                    Ok(()) => joined += 1,
                    Err(r) => refused[i] = Some(r),
                }
            }
        }
        if refused.iter().all(Option::is_some) {
            break;
        }
        assert!(round < 10_000, "the flood never ended");
    }
    (joined, refused.pop().flatten().unwrap())
}

/// Several other nodes, each from its own address, join while the flooder is refused.
fn others_still_join(listener: &(Config, ReplayCache), seq: &mut u32, how_many: u8) {
    for n in 0..how_many {
        let node = format!("legit-{n}");
        let result = join(listener, &node, addr(200 + n), seq);
        assert_eq!(result, Ok(()), "{node} after the flood");
    }
}

#[test]
fn one_node_flooding_from_one_address_uses_up_only_its_own_share() {
    let l = listener(16, 4);
    let mut seq = 0;
    let (joined, (code, message)) = flood(&l, |_| "flooder".into(), &[addr(2)], &mut seq);
    assert_eq!(joined, 4);
    assert_eq!(code, RejectCode::Busy);
    assert!(
        message.contains("node id \"flooder\"") && message.contains("replay_cache_per_source"),
        "{message}"
    );
    others_still_join(&l, &mut seq, 12);
}

#[test]
fn one_node_flooding_from_16_addresses_uses_up_only_its_own_share() {
    // Before node ids had shares, 16 addresses × 4 filled the 64 entries and every other
    // plaintext join was refused as busy.
    let l = listener(64, 4);
    let mut seq = 0;
    let addresses: Vec<IpAddr> = (1..=16).map(addr).collect();
    let (joined, (code, message)) = flood(&l, |_| "flooder".into(), &addresses, &mut seq);
    assert_eq!(joined, 4, "the node id's share, whatever addresses it uses");
    assert_eq!(code, RejectCode::Busy);
    assert!(
        message.contains("node id \"flooder\"") && message.contains("replay_cache_per_source"),
        "{message}"
    );
    others_still_join(&l, &mut seq, 40);
}

#[test]
fn a_holder_of_the_secret_inventing_node_ids_from_16_addresses_cannot_fill_the_cache() {
    let l = listener(64, 4);
    let mut seq = 0;
    let addresses: Vec<IpAddr> = (1..=16).map(addr).collect();
    let (joined, (code, message)) = flood(&l, |n| format!("invented-{n}"), &addresses, &mut seq);
    assert!(joined < 64, "the flood filled the cache ({joined})");
    assert_eq!(code, RejectCode::Busy);
    assert!(
        message.contains("this peer's address") && message.contains("replay_cache_per_source"),
        "{message}"
    );
    // The room the flood left goes to the others, and the flood, still going, gets none.
    let free = 64 - l.1.len();
    assert!(free >= 3, "{free} entries left");
    for n in 0..3u8 {
        assert_eq!(
            join(&l, &format!("legit-{n}"), addr(200 + n), &mut seq),
            Ok(())
        );
        for from in &addresses {
            let again = join(&l, "invented-again", *from, &mut seq);
            assert_eq!(again.map_err(|r| r.0), Err(RejectCode::Busy));
        }
    }
}
