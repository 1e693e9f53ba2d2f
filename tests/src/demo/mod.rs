//! The demo (`./dev.sh demo`, the `demo` binary, and tests/tests/demo.rs): the whole system
//! on one machine with no cloud and no cluster. A local-directory store gets a sample repo,
//! two bundles (one downloaded, one mounted), datamon's old PostgreSQL 12 bundle and an output
//! repo; `datamon-webhook certs` and `serve` run on 127.0.0.1 over HTTPS; a Job's pod goes
//! through `/mutate` as the API server sends it; the patched pod runs from the built images
//! on the pod runner, with a timeline read from its coordination directory by
//! `datamon-agent status`; then two failures are shown as `kubectl describe` shows them.
//!
//! - [`store`]: the store and the host agent that reads it;
//! - [`webhook`]: certificates, the server process, the API server's side of HTTPS;
//! - [`images`]: the built images and the application's (busybox);
//! - [`job`]: the sample pod, its admission and its run with the timeline;
//! - [`timeline`], [`describe`]: what is printed (pure).

pub mod describe;
pub mod images;
pub mod job;
pub mod store;
pub mod timeline;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::pod::Phase;

pub use job::Ran;

/// Set when the user pressed Ctrl-C: every wait of the demo looks at it and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A step failed; `detail` says why and what to do.
    #[error("{step}: {detail}")]
    Step {
        /// What the demo was doing.
        step: String,
        /// Why it failed.
        detail: String,
    },
    /// A file or process operation failed.
    #[error("cannot {what}")]
    Io {
        /// What the demo was doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The pod runner failed.
    #[error("the pod runner")]
    Pod(#[from] crate::pod::PodError),
    /// Ctrl-C.
    #[error("interrupted (Ctrl-C): cleaned up")]
    Interrupted,
}

/// Makes Ctrl-C stop the demo at its next wait (containers killed, mounts and temporary
/// directories removed, the webhook stopped) instead of leaving them behind.
pub fn stop_on_ctrl_c() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    });
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check_interrupt() -> Result<(), DemoError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(DemoError::Interrupted)
    } else {
        Ok(())
    }
}

/// How the demo runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep the work directory (store, certificates, pod logs) instead of removing it.
    pub keep: bool,
    /// The directory of `datamon-agent` and `datamon-webhook` (default: the running
    /// program's, or its parent when that is cargo's `deps`).
    pub bin_dir: Option<PathBuf>,
}

/// What the demo did, for its test.
#[derive(Debug)]
pub struct Summary {
    /// The Job's pod.
    pub job: Ran,
    /// The webhook's message denying the pod with a bad annotation.
    pub denied: String,
    /// The pod whose input label does not exist.
    pub missing_label: Ran,
}

/// Prints a section's heading.
pub fn section(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn bin_dir(options: &Options) -> Result<PathBuf, DemoError> {
    if let Some(d) = &options.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().map_err(|source| DemoError::Io {
        what: "find the running program".into(),
        source,
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

fn binary(dir: &Path, name: &str) -> Result<PathBuf, DemoError> {
    existing(
        dir.join(name),
        "build the workspace first (`cargo build --workspace --release`; `just demo` does)",
    )
}

/// `path` if it exists, else an error saying it is missing and `fix`.
pub(crate) fn existing(path: PathBuf, fix: &str) -> Result<PathBuf, DemoError> {
    if path.exists() {
        return Ok(path);
    }
    Err(DemoError::Step {
        step: format!("find {}", path.display()),
        detail: format!("it is missing: {fix}"),
    })
}

/// Runs the whole demo.
pub fn run(options: &Options) -> Result<Summary, DemoError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(DemoError::Step {
            step: "start".into(),
            detail: "the demo runs containers with runc and serves FUSE: run it as root (sudo)"
                .into(),
        });
    }
    let dir = bin_dir(options)?;
    let agent = binary(&dir, "datamon-agent")?;
    let webhook_bin = binary(&dir, "datamon-webhook")?;
    let archives = job::Archives::find()?;
    let work = tempfile::Builder::new()
        .prefix("datamon-demo.")
        .tempdir()
        .map_err(|source| DemoError::Io {
            what: "create a work directory in the temp dir".into(),
            source,
        })?;
    let result = job::demo(work.path(), &agent, &webhook_bin, &archives);
    if options.keep {
        let kept = work.keep();
        println!("\nkept the work directory {}", kept.display());
    } else {
        println!(
            "\ncleaned up: {} removed (run with --keep to keep it)",
            work.path().display()
        );
    }
    result
}

/// Whether the Job's pod did what it should (for the binary's exit code).
pub fn succeeded(summary: &Summary) -> bool {
    summary.job.report.phase == Phase::Succeeded
        && summary.missing_label.report.phase == Phase::Failed
}
