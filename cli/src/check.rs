//! `palisade check`: load a node's settings as the node would (file, `PALISADE_*`
//! environment, secret and TLS files, every check a peer would run) and print the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use crate::exit::{self, CliError};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The node's config file (TOML).
    #[arg(long)]
    pub config: PathBuf,
}

pub fn run(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let (_, loaded) = palisade::Settings::load_checked(&args.config, SystemTime::now());
    println!("{}", loaded.report);
    if loaded.report.is_ok() {
        println!(
            "{}: a node may start with these settings",
            args.config.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(exit::INVALID))
    }
}
