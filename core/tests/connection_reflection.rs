//! Joins that come back to their sender, and joins that reach the wrong node: a HELLO or
//! WELCOME carrying this node's own node id (reject code 12), a HELLO carrying the nonce
//! of this node's own HELLO in flight (code 12), and a WELCOME from a node other than the
//! one dialed (code 9). Without these checks a man in the middle with no secret could make
//! a node join itself in plaintext mode by relaying its own HELLO and WELCOME back to it.

mod conn_support;

use std::time::Instant;

use conn_support::*;
use palisade_core::frame::FrameKind;
use palisade_core::{Config, ConnectionError, Event, JoinError, RejectCode};
use palisade_testkit::PairBuilder;

/// A reflected HELLO: `node`'s own first flight, handed to an acceptor of the same
/// endpoint. Returns the acceptor after it answered.
fn reflect(node: &palisade_core::Endpoint, acceptor: &palisade_core::Endpoint) -> Solo {
    let now = Instant::now();
    let mut initiator = Solo::new(node.connect("localhost", now, wall()).unwrap(), now);
    let hello = std::mem::take(&mut initiator.out);
    let mut reflected = Solo::new(acceptor.accept(now, wall()).unwrap(), now);
    reflected.input_all(&hello);
    // The initiator is still waiting for its WELCOME while its HELLO comes back.
    assert!(!initiator.conn.is_closed());
    reflected
}

#[test]
fn a_hello_reflected_to_its_sender_is_refused_with_or_without_a_secret() {
    for config in [keyed("node-a", 7), plain("node-a")] {
        let keyed_node = config.keyring.is_some();
        let node = endpoint(config, 1);
        let acceptor = reflect(&node, &node);
        let r = err_rejection(acceptor.error()).clone();
        assert_eq!(r.code, RejectCode::Reflected, "secret {keyed_node}: {r}");
        assert!(
            r.message
                .starts_with("the HELLO carries this node's own node id \"node-a\""),
            "{r}"
        );
        assert!(!acceptor
            .events
            .iter()
            .any(|e| matches!(e, Event::Joined(_))));
        assert_eq!(kinds(&acceptor.frames()), [FrameKind::Reject]);
    }
}

#[test]
fn a_hello_carrying_the_nonce_of_this_nodes_own_hello_in_flight_is_refused() {
    // Same endpoint state (replay cache), node id changed by a reconfigure: the node-id
    // check passes, the nonce check does not.
    let node = endpoint(keyed("node-a", 7), 1);
    let renamed = node.reconfigure(keyed("node-a2", 7)).unwrap();
    let acceptor = reflect(&node, &renamed);
    let r = err_rejection(acceptor.error()).clone();
    assert_eq!(r.code, RejectCode::Reflected, "{r}");
    assert!(r.message.contains("nonce of a HELLO this node sent"), "{r}");

    // Once the initiator's join is over, its nonce is no longer its own: a fresh endpoint
    // holding the same secret takes the same HELLO (the replay cache is what guards it).
    let now = Instant::now();
    let gone = Solo::new(node.connect("localhost", now, wall()).unwrap(), now);
    let hello = gone.out.clone();
    drop(gone);
    let mut fresh = Solo::new(renamed.accept(now, wall()).unwrap(), now);
    fresh.input_all(&hello);
    assert!(
        matches!(fresh.events.first(), Some(Event::Joined(p)) if p.node_id == "node-a"),
        "{:?}",
        fresh.events
    );
}

#[test]
fn a_welcome_carrying_the_initiators_own_node_id_is_refused() {
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    exchange_with_tampered_welcome(&mut pair, |answer| {
        rewrite_welcome(answer, |w| w.node_id = "node-a".into())
    });
    let r = assert_refused(&mut pair, I, RejectCode::Reflected);
    assert!(
        r.message
            .starts_with("the WELCOME carries this node's own node id \"node-a\""),
        "{r}"
    );
    assert_acceptor_joined_then_refused(&pair);
}

#[test]
fn connect_expecting_a_node_id_refuses_any_other_node() {
    let config = |node: &str| -> Config { keyed(node, 7) };
    let mut pair = PairBuilder::new(config("node-a"), config("node-b"))
        .expect_peer("node-b")
        .build();
    pair.run();
    assert!(pair.joined(I) && pair.joined(A));

    let mut pair = PairBuilder::new(config("node-a"), config("node-c"))
        .expect_peer("node-b")
        .build();
    pair.run();
    let r = assert_refused(&mut pair, I, RejectCode::IdentityNotAllowed);
    assert_eq!(
        r.message,
        "this node dialed \"node-b\" but \"node-c\" answered"
    );
    assert_acceptor_joined_then_refused(&pair);
    match pair.close_cause(A).map(|c| error_of(Some(c))) {
        Some(ConnectionError::Join(JoinError::RefusedByPeer(r))) => {
            assert_eq!(r.code, RejectCode::IdentityNotAllowed)
        }
        other => panic!("{other:?}"),
    }
}
