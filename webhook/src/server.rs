//! `datamon-webhook server` (being written).

use std::process::ExitCode;

/// Arguments of `server`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs `server`.
pub fn main(args: ServeArgs) -> ExitCode {
    let _ = args;
    eprintln!("datamon-webhook server is not implemented yet");
    ExitCode::FAILURE
}
