//! Two palisade nodes join over mutual TLS and the shared-secret handshake, on an
//! in-memory link with a simulated clock, exchange frames and close; then two intruders
//! are refused: one with a stolen certificate but the wrong secret, one with the secret
//! but a certificate from another CA. Certificates are made at start with rcgen.
//!
//! Run: `cargo run --example demo`

use std::time::Duration;

use bytes::Bytes;
use palisade::{CloseCause, CloseReason, Config, Event, SharedSecret, Side};
use palisade_testkit::certs::TestCa;
use palisade_testkit::{Pair, PairBuilder};

const LATENCY: Duration = Duration::from_millis(10);

fn secret(text: &str) -> SharedSecret {
    match SharedSecret::new(text.as_bytes().to_vec()) {
        Ok(s) => s,
        Err(e) => panic!("demo secret refused: {e}"),
    }
}

fn name(side: Side) -> &'static str {
    match side {
        Side::Initiator => "node-a",
        Side::Acceptor => "node-b",
    }
}

/// Runs the pair until idle, printing each side's join and close as it happens.
/// `seen` counts the events of each side already printed.
fn run_and_report(pair: &mut Pair, seen: &mut [usize; 2]) {
    while pair.step() {
        for (i, side) in [Side::Initiator, Side::Acceptor].into_iter().enumerate() {
            for event in &pair.events(side)[seen[i]..] {
                let t = pair.elapsed().as_secs_f64() * 1e3;
                match event {
                    Event::Joined(peer) => println!(
                        "  t={t:5.1} ms  {} joined {} ({}, key id {}) after {:.1} round trips",
                        name(side),
                        peer.node_id,
                        peer.tls.as_ref().map_or("no TLS".to_string(), |t| format!(
                            "{} {}",
                            t.version, t.cipher_suite
                        )),
                        peer.key_id.map_or("none".to_string(), |k| k.to_string()),
                        pair.round_trips_to_joined(side).unwrap_or(f64::NAN),
                    ),
                    Event::Rejoined(peer) => println!(
                        "  t={t:5.1} ms  {} re-joined {} in place",
                        name(side),
                        peer.node_id,
                    ),
                    Event::Closed(cause) => println!("  t={t:5.1} ms  {}: {cause}", name(side)),
                    Event::Frame(_) => {}
                }
            }
            seen[i] = pair.events(side).len();
        }
    }
}

fn main() {
    let cluster_secret = secret("demo cluster secret, 32 bytes or more!");
    println!(
        "palisade demo: cluster \"demo\", in-memory link, {} ms one way, simulated clock\n",
        LATENCY.as_millis()
    );

    let ca = TestCa::new("demo cluster CA");
    let node = |name: &str, ca: &TestCa, secret: &SharedSecret| {
        Config::new("demo", name)
            .with_secret(secret.clone())
            .with_tls(ca.tls(&ca.node(name)))
    };

    println!("1. node-a dials node-b: mutual TLS against the cluster CA, then the join");
    let a = node("node-a", &ca, &cluster_secret);
    let b = node("node-b", &ca, &cluster_secret);
    let mut pair = PairBuilder::new(a, b.clone())
        .latency(LATENCY)
        .server_name("node-b")
        .build();
    let mut seen = [0; 2];
    run_and_report(&mut pair, &mut seen);

    let frames = 1000;
    for n in 0..frames {
        let payload = Bytes::from(format!("frame {n} from node-a"));
        if let Err(e) = pair.send(Side::Initiator, payload) {
            panic!("send failed: {e}");
        }
        if let Err(e) = pair.send(
            Side::Acceptor,
            Bytes::from(format!("frame {n} from node-b")),
        ) {
            panic!("send failed: {e}");
        }
    }
    pair.run();
    let got_b = pair.frames(Side::Acceptor);
    let got_a = pair.frames(Side::Initiator);
    let in_order = got_b
        .iter()
        .enumerate()
        .all(|(n, f)| f == format!("frame {n} from node-a").as_bytes());
    println!(
        "\n2. {frames} frames each way: node-b received {} (in order: {in_order}), node-a received {}",
        got_b.len(),
        got_a.len()
    );

    println!("\n3. node-a closes the link");
    pair.conn(Side::Initiator).close(CloseReason::new(
        palisade::CloseCode::Normal,
        "demo finished",
    ));
    run_and_report(&mut pair, &mut seen);

    let wrong_secret = secret("not the cluster secret, but long enough");
    let rogue_ca = TestCa::new("rogue CA");
    let intruders = [
        (
            "4. an intruder with a stolen cluster certificate but the wrong secret dials node-b",
            node("intruder", &ca, &wrong_secret),
        ),
        (
            "5. an intruder with the secret but a certificate from another CA dials node-b",
            {
                let mut c = node("intruder", &rogue_ca, &cluster_secret);
                if let Some(tls) = c.tls.as_mut() {
                    tls.trust = palisade::tls::TrustAnchors::CaBundle(vec![ca.cert.clone()]);
                }
                c
            },
        ),
    ];
    let mut refused = true;
    for (title, intruder) in intruders {
        println!("\n{title}");
        let mut pair = PairBuilder::new(intruder, b.clone())
            .latency(LATENCY)
            .server_name("node-b")
            .build();
        run_and_report(&mut pair, &mut [0; 2]);
        refused &= matches!(pair.close_cause(Side::Acceptor), Some(CloseCause::Error(_)))
            && !pair.joined(Side::Acceptor)
            && !pair.joined(Side::Initiator);
    }
    println!("\nintruders refused: {refused}");
    if !(refused && in_order && got_b.len() == frames && got_a.len() == frames) {
        std::process::exit(1);
    }
}
