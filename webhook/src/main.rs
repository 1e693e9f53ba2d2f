//! `datamon-webhook`: the mutating admission webhook (`serve`), its offline twin (`inject`),
//! and its certificates (`certs`).
//!
//! Each subcommand returns its own error; this file prints it once
//! (`datamon-webhook <command>: <error>: <cause>`) and maps it to an exit code in
//! [`exit_code`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use datamon_edge::exit::{FAILURE, USAGE};
use datamon_webhook::certs::{self, CertsError};
use datamon_webhook::inject::{self, InjectError};
use datamon_webhook::serve::{self, CommandError};

/// Gives Kubernetes pods their datamon bundles.
#[derive(Debug, Parser)]
#[command(name = "datamon-webhook", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(serve::ServeArgs),
    /// Print a workload (Pod, Deployment, StatefulSet, Job, CronJob) with its data plan
    /// injected, as the webhook would (like `istioctl kube-inject`).
    Inject(inject::InjectArgs),
    /// Generate a CA and a serving certificate for the webhook's Service.
    Certs(certs::CertsArgs),
}

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Serve(#[from] CommandError),
    #[error(transparent)]
    Inject(#[from] InjectError),
    #[error(transparent)]
    Certs(#[from] CertsError),
}

fn main() -> ExitCode {
    let (name, result) = match Cli::parse().command {
        Command::Serve(args) => ("serve", serve::main(args).map_err(Failure::from)),
        Command::Inject(args) => ("inject", inject::main(args).map_err(Failure::from)),
        Command::Certs(args) => ("certs", certs::main(args).map_err(Failure::from)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("datamon-webhook {name}: {}", datamon_edge::chain(&failure));
            ExitCode::from(exit_code(&failure))
        }
    }
}

/// [`USAGE`] (64) when the command line, the environment or an input file is wrong and
/// nothing was done; [`FAILURE`] (1) otherwise, a denial by `inject` included.
fn exit_code(failure: &Failure) -> u8 {
    match failure {
        Failure::Serve(e) => match e {
            CommandError::Config(_) | CommandError::KubeConfig(_) | CommandError::KubeClient(_) => {
                USAGE
            }
            CommandError::Runtime(_) | CommandError::Listen { .. } | CommandError::Serve(_) => {
                FAILURE
            }
        },
        Failure::Inject(e) => match e {
            InjectError::Read { .. }
            | InjectError::Parse { .. }
            | InjectError::NamespaceAnnotations(_) => USAGE,
            InjectError::Denied { .. } | InjectError::Patch { .. } => FAILURE,
        },
        Failure::Certs(e) => match e {
            CertsError::Usage(_) => USAGE,
            CertsError::Generate(_) | CertsError::Io { .. } => FAILURE,
        },
    }
}
