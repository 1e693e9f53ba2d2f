//! `datamon-webhook`: the mutating admission webhook. Not built yet (issue 5); the crate
//! exists so that the workspace has its final shape. It exits with an explanation.

fn main() -> std::process::ExitCode {
    eprintln!("datamon-webhook is not implemented yet: see the project's open issue on the admission webhook");
    std::process::ExitCode::FAILURE
}
