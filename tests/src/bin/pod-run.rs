//! `pod-run POD.yaml`: runs a Kubernetes pod's containers as local processes (see
//! `datamon_e2e::pod`) and prints the report as JSON. Exit status: 0 if the pod Succeeded,
//! 1 if it Failed or stayed Pending (a container it could not create), 2 if it could not be
//! run (or did not finish in time).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use datamon_e2e::pod::{self, Phase, PodRunner};

/// Runs a pod (YAML or JSON) without a cluster, as a kubelet would, and prints its report.
#[derive(Parser)]
#[command(name = "pod-run")]
struct Args {
    /// The pod manifest (YAML or JSON).
    pod: PathBuf,
    /// Where volumes, logs and termination files go (default: a new temporary directory).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Extra environment for every container (the container's env overrides it).
    #[arg(long, value_name = "K=V", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// The entrypoint of an image, for containers without `command`.
    #[arg(long, value_name = "NAME=PATH", value_parser = key_value)]
    image: Vec<(String, String)>,
    /// Overrides the pod's terminationGracePeriodSeconds.
    #[arg(long)]
    grace_secs: Option<u64>,
    /// Kill the pod and fail after this long.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(Phase::Succeeded) => ExitCode::SUCCESS,
        Ok(Phase::Failed | Phase::Pending) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pod-run: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<Phase> {
    let text = std::fs::read_to_string(&args.pod)
        .with_context(|| format!("cannot read {}", args.pod.display()))?;
    let mut runner = PodRunner::new(pod::parse(&text)?);
    if let Some(w) = args.workdir {
        runner = runner.workdir(w);
    }
    for (k, v) in args.env {
        runner = runner.env(k, v);
    }
    for (name, path) in args.image {
        runner = runner.image(name, vec![path]);
    }
    if let Some(g) = args.grace_secs {
        runner = runner.grace(Duration::from_secs(g));
    }
    let report = runner
        .start()?
        .wait(Duration::from_secs(args.timeout_secs))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.phase)
}
