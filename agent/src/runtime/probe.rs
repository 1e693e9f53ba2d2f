//! `datamon-agent probe` (a startupProbe/readinessProbe exec command: is this participant
//! ready?) and `datamon-agent install DIR` (copies this static binary into a shared volume,
//! so that any application image can run the wrapper).

use std::path::{Path, PathBuf};

use datamon_plan::Plan;

use crate::error::{Error, Result};
use crate::runtime::board::Board;
use crate::runtime::state::{Phase, Status};

/// Whether `participant` is ready (its inputs are in place, or its work is done); the
/// message says what it is doing otherwise.
pub fn probe(plan: &Plan, participant: &str) -> Result<(bool, String)> {
    let board = Board::open(&plan.coordination)?;
    Ok(match board.status(participant)? {
        Status::Absent => (false, format!("{participant}: not started")),
        Status::Dead(s) => (false, format!("{participant}: died while {:?}", s.phase)),
        Status::Known(s) => {
            let ready = matches!(
                s.phase,
                Phase::Ready | Phase::Running | Phase::Exited | Phase::Uploading | Phase::Done
            );
            let why = s.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            (
                ready,
                format!("{participant}: {:?}{why}", s.phase).to_lowercase(),
            )
        }
    })
}

/// Copies the running executable to `dir/datamon-agent` (mode 0755), atomically: a
/// temporary file renamed into place, so a reader never runs half a binary.
pub fn install(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().map_err(Error::io("find", "the running executable"))?;
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let target = dir.join("datamon-agent");
    let tmp = dir.join(format!(".datamon-agent.{}.tmp", std::process::id()));
    std::fs::copy(&exe, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, &target))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("install the agent into", dir)(e)
        })?;
    Ok(target)
}
