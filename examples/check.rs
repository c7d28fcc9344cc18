//! Loads a node's settings as the node would and prints the report: every error, warning
//! and note with its key, file, cause and fix. Exit code 0 when the node may start
//! (warnings allowed), 1 when it may not. (The `palisade check` command will do the same.)
//!
//! ```sh
//! cargo run --example check -- node.toml
//! ```

use std::process::ExitCode;
use std::time::SystemTime;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: cargo run --example check -- CONFIG.toml");
        return ExitCode::from(2);
    };
    let (_, loaded) = palisade::Settings::load_checked(&path, SystemTime::now());
    println!("{}", loaded.report);
    if loaded.report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
