//! A replay cache one insider cannot fill for everyone (issue 21, docs/PROTOCOL.md §5.5
//! step 9), over real sockets from loopback aliases 127.0.0.x, against a tokio and a
//! blocking listener: a node flooding plaintext joins from 16 addresses uses up its own
//! share and no more, a holder of the secret inventing node ids from 16 addresses leaves
//! room for the others, and other nodes keep joining either way. Small capacities.

#[macro_use]
mod hostile_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use hostile_support::*;
use palisade::{LinkError, RejectCode};

const NOT_REACHED: Duration = Duration::from_secs(5);

fn flooders() -> Vec<Ipv4Addr> {
    (2..=17).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()
}

/// Joins from each of `addresses` in turn, under the node id `node(k)` for the k-th
/// attempt, until every address is refused. Returns the joins made and the refusals.
fn flood(
    server: &Server,
    cluster: &Cluster,
    addresses: &[Ipv4Addr],
    node: impl Fn(usize) -> String,
) -> (usize, Vec<LinkError>) {
    let mut joined = 0;
    let mut refused: Vec<Option<LinkError>> = addresses.iter().map(|_| None).collect();
    let mut attempt = 0;
    while refused.iter().any(Option::is_none) {
        for (i, from) in addresses.iter().enumerate() {
            if refused[i].is_some() {
                continue;
            }
            let (result, _) = server.join_from(*from, cluster.member(false, &node(attempt)));
            attempt += 1;
            match result {
                Ok(_) => joined += 1,
                Err(e) => refused[i] = Some(e),
            }
        }
        assert!(attempt < 10_000, "the flood never ended");
    }
    (joined, refused.into_iter().flatten().collect())
}

fn assert_busy<T>(result: Result<T, LinkError>, naming: &[&str]) {
    let Err(e) = result else {
        panic!("joined; expected a refusal as busy")
    };
    assert_eq!(e.reject_code(), Some(RejectCode::Busy), "{e}");
    assert!(!e.is_permanent(), "busy is worth a retry: {e}");
    let shown = e.to_string();
    for what in naming {
        assert!(shown.contains(what), "{what:?} not in {shown}");
    }
}

/// Nodes `legit-0..n`, each from its own address (127.0.0.100 on), join.
fn others_join(server: &Server, cluster: &Cluster, n: u8) {
    for k in 0..n {
        let from = Ipv4Addr::new(127, 0, 0, 100 + k);
        let (result, _) = server.join_from(from, cluster.member(false, &format!("legit-{k}")));
        assert!(result.is_ok(), "legit-{k} from {from}: {:?}", result.err());
    }
}

fn one_node_flooding_from_16_addresses_locks_out_only_itself(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let mut config = cluster.listener(false, NOT_REACHED);
    // 16 addresses × a share of 2 would fill the whole cache if shares were per address.
    config.replay_cache_capacity = 32;
    config.replay_cache_per_source = 2;
    let server = Server::start(kind, config);
    let (joined, refusals) = flood(&server, &cluster, &flooders(), |_| "flooder".into());
    assert_eq!(
        joined, 2,
        "the node id's share, whatever addresses it joins from"
    );
    for refusal in refusals {
        assert_busy(
            Err::<(), _>(refusal),
            &["node id \"flooder\"", "replay_cache_per_source"],
        );
    }
    others_join(&server, &cluster, 20);
    // The flooder is still refused, from a fresh address too.
    let (again, _) = server.join_from(
        Ipv4Addr::new(127, 0, 0, 60),
        cluster.member(false, "flooder"),
    );
    assert_busy(again, &["node id \"flooder\""]);
}

fn node_ids_invented_from_16_addresses_leave_room_for_the_others(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let mut config = cluster.listener(false, NOT_REACHED);
    config.replay_cache_capacity = 64;
    config.replay_cache_per_source = 4;
    let server = Server::start(kind, config);
    let (joined, refusals) = flood(&server, &cluster, &flooders(), |k| format!("invented-{k}"));
    assert!(64 - joined >= 3, "the flood left {} entries", 64 - joined);
    for refusal in refusals {
        assert_busy(Err::<(), _>(refusal), &["this peer's address"]);
    }
    // The room left goes to the others; the flood, still going, gets none of it.
    for k in 0..3u8 {
        let from = Ipv4Addr::new(127, 0, 0, 100 + k);
        let (result, _) = server.join_from(from, cluster.member(false, &format!("legit-{k}")));
        assert!(result.is_ok(), "legit-{k}: {:?}", result.err());
        for from in flooders() {
            let (again, _) = server.join_from(from, cluster.member(false, "invented-again"));
            assert_busy(again, &[]);
        }
    }
}

for_both_listeners!(
    one_node_flooding_from_16_addresses_locks_out_only_itself,
    node_ids_invented_from_16_addresses_leave_room_for_the_others,
);
