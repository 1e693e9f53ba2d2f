//! `datamon-webhook certs` (being written).

use std::process::ExitCode;

/// Arguments of `certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {}

/// Runs `certs`.
pub fn main(args: CertsArgs) -> ExitCode {
    let _ = args;
    eprintln!("datamon-webhook certs is not implemented yet");
    ExitCode::FAILURE
}
