//! `demo`: the whole system on this machine (`./dev.sh demo`; the steps are
//! `datamon_e2e::demo`). Needs root, the release workspace build and the images
//! (`just images`). `--keep` keeps the work directory.

use std::process::ExitCode;

fn main() -> ExitCode {
    let keep = std::env::args().skip(1).any(|a| a == "--keep");
    if let Some(bad) = std::env::args().skip(1).find(|a| a != "--keep") {
        eprintln!("demo: unknown argument {bad:?} (only --keep: keep the work directory)");
        return ExitCode::from(64);
    }
    datamon_e2e::demo::stop_on_ctrl_c();
    let options = datamon_e2e::demo::Options {
        keep,
        bin_dir: None,
    };
    match datamon_e2e::demo::run(&options) {
        Ok(summary) if datamon_e2e::demo::succeeded(&summary) => {
            println!("\n\x1b[1mdemo finished\x1b[0m");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("\ndemo: the pods did not end as they should (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("\ndemo failed: {text}");
            ExitCode::FAILURE
        }
    }
}
