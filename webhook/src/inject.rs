//! `datamon-webhook inject` (being written).

use std::process::ExitCode;

/// Arguments of `inject`.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {}

/// Runs `inject`.
pub fn main(args: InjectArgs) -> ExitCode {
    let _ = args;
    eprintln!("datamon-webhook inject is not implemented yet");
    ExitCode::FAILURE
}
