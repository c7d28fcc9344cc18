//! `palisade`: the operator's command for palisade clusters. One module per subcommand;
//! every failure prints what failed, its causes and a hint, and exits with a code that
//! says which step failed (see [`exit`] and `palisade --help`).

mod certs;
mod check;
mod demo;
mod exit;
mod forward;
mod node;
mod ops;
mod probe;
mod proto;
mod secret;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use exit::CliError;

/// The exit codes, as `--help` shows them.
const EXIT_CODES: &str = "\
Exit codes:
  0   success (check: warnings only)
  1   the settings or certificates have errors (check, certs show, node at start)
  2   usage error (bad arguments)
  3   a file could not be read or written, or would be overwritten without --force
  10  probe: TCP connect failed
  11  probe: TLS failed (or the peer does not speak palisade over TLS)
  12  probe: authorization failed (certificate names, node id not allowed), or this
      node is revoked (\"revoked: serial ... in FILE\")
  13  probe: the join failed (secret, cluster name, clock)
  14  probe: the link failed after the join (ping or info unanswered)
  20  demo: an expectation did not hold";

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Secure links between cluster nodes: certificates, secrets, config checks, probes, a node, and a demo",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make and inspect certificates (a cluster CA, node certificates, a dev pair).
    #[command(subcommand, after_help = EXIT_CODES)]
    Certs(certs::CertsCommand),
    /// Make a shared secret, or print a secret's key id.
    #[command(subcommand, after_help = EXIT_CODES)]
    Secret(secret::SecretCommand),
    /// Load a node's settings as the node would and print every finding.
    #[command(after_help = EXIT_CODES)]
    Check(check::CheckArgs),
    /// Dial a node, join, and report its identity, TLS, timings and ping round trips.
    #[command(after_help = EXIT_CODES)]
    Probe(probe::ProbeArgs),
    /// Run a node: listen, keep links to its seeds, answer pings, reload live.
    #[command(after_help = EXIT_CODES)]
    Node(node::NodeArgs),
    /// Three real nodes on loopback, intruders, live rotations, a summary (offline).
    #[command(after_help = EXIT_CODES)]
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs(c) => certs::run(c),
        Command::Secret(c) => secret::run(c),
        Command::Check(a) => check::run(&a),
        Command::Probe(a) => probe::run(&a),
        Command::Node(a) => node::run(&a),
        Command::Demo(a) => demo::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => e.print_and_exit_code(),
    }
}

/// A multi-threaded tokio runtime, or the error saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(exit::IO, "cannot start the tokio runtime").cause(&e))
}
