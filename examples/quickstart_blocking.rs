//! Quickstart, blocking std sockets and threads: a node from its config file (TOML,
//! `PALISADE_*` variables over it). With `seeds` it dials the first and says hello;
//! without, it listens and prints the first frame of the first peer that joins.
//! `tests/quickstart.rs` runs it.
//!
//! ```sh
//! cargo run --example quickstart_blocking -- a.toml   # listen = "127.0.0.1:7000"
//! cargo run --example quickstart_blocking -- b.toml   # seeds = ["127.0.0.1:7000"]
//! ```

use palisade::blocking::{connect, Listener};
use palisade::{CloseReason, Settings};
use std::{error::Error, time::SystemTime};

pub fn run(path: &str) -> Result<String, Box<dyn Error>> {
    let (settings, loaded) = Settings::load_checked(path, SystemTime::now());
    let config = loaded.config.ok_or_else(|| loaded.report.to_string())?; // every error, with its fix
    if let Some(seed) = settings.seeds.first() {
        let link = connect(seed, config)?; // TCP, TLS and the join: done
        link.send("hello".into())?;
        let said = format!("said hello to {}", link.peer().node_id);
        link.close(CloseReason::normal());
        return Ok(said);
    }
    let listener = Listener::bind(settings.listen.as_deref().unwrap_or("0.0.0.0:7000"), config)?;
    let (link, addr) = listener.accept()?; // only joined links come out
    let frame = link.recv()?.unwrap_or_default();
    Ok(format!(
        "{} ({addr}) says {}",
        link.peer().node_id,
        String::from_utf8_lossy(&frame)
    ))
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: quickstart_blocking CONFIG.toml")?;
    println!("{}", run(&path)?);
    Ok(())
}
