//! `datamon-webhook`: the mutating admission webhook (`serve`), its offline twin (`inject`),
//! and its certificates (`certs`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use datamon_webhook::{certs, inject, serve};

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

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve::main(args),
        Command::Inject(args) => inject::main(args),
        Command::Certs(args) => certs::main(args),
    }
}
