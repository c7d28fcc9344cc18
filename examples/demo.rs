//! Two palisade nodes join over an in-memory link with a simulated clock, exchange frames
//! and close; then an intruder with the wrong secret is refused.
//!
//! Run: `cargo run --example demo`

use std::time::Duration;

use bytes::Bytes;
use palisade::{CloseCause, CloseReason, Config, Event, SharedSecret, Side};
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
                        "  t={t:5.1} ms  {} joined {} (key id {}) after {:.1} round trips",
                        name(side),
                        peer.node_id,
                        peer.key_id.map_or("none".to_string(), |k| k.to_string()),
                        pair.round_trips_to_joined(side).unwrap_or(f64::NAN),
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

    println!("1. node-a dials node-b; both hold the cluster secret");
    let a = Config::new("demo", "node-a").with_secret(cluster_secret.clone());
    let b = Config::new("demo", "node-b").with_secret(cluster_secret.clone());
    let mut pair = PairBuilder::new(a, b.clone()).latency(LATENCY).build();
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

    println!("\n4. an intruder with the wrong secret dials node-b");
    let intruder = Config::new("demo", "intruder")
        .with_secret(secret("not the cluster secret, but long enough"));
    let mut pair = PairBuilder::new(intruder, b).latency(LATENCY).build();
    run_and_report(&mut pair, &mut [0; 2]);
    let refused = matches!(pair.close_cause(Side::Acceptor), Some(CloseCause::Error(_)))
        && !pair.joined(Side::Acceptor)
        && !pair.joined(Side::Initiator);
    println!("\nintruder refused: {refused}");
    if !(refused && in_order && got_b.len() == frames && got_a.len() == frames) {
        std::process::exit(1);
    }
}
