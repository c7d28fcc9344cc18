//! The `palisade` facade re-exports the core: a join and a frame through it alone.

use palisade::{Config, Event, SharedSecret, Side};
use palisade_testkit::Pair;

#[test]
fn the_facade_joins_and_carries_a_frame() {
    let secret = SharedSecret::new(vec![42u8; 32]).unwrap();
    let mut pair = Pair::new(
        Config::new("prod", "a").with_secret(secret.clone()),
        Config::new("prod", "b").with_secret(secret.clone()),
    );
    pair.run();
    assert!(matches!(&pair.events(Side::Acceptor)[0], Event::Joined(p) if p.node_id == "a"));
    pair.send(Side::Acceptor, &b"ping"[..]).unwrap();
    pair.run();
    assert_eq!(
        pair.frames(Side::Initiator),
        vec![bytes::Bytes::from_static(b"ping")]
    );
    assert_eq!(
        pair.conn(Side::Initiator).peer().and_then(|p| p.key_id),
        Some(secret.key_id())
    );
}
