//! `palisade demo` (being written).
use std::process::ExitCode;

use clap::Args;

use crate::exit::CliError;

#[derive(Debug, Args)]
pub struct DemoArgs {}

pub fn run(_: &DemoArgs) -> Result<ExitCode, CliError> {
    Ok(ExitCode::SUCCESS)
}
