//! `datamon-agent probe` (a startupProbe/readinessProbe exec command: is this participant
//! ready?) and `datamon-agent install DIR` (copies this static binary into a shared volume,
//! so that any application image can run the wrapper).

use std::path::{Path, PathBuf};

use datamon_plan::Plan;

use crate::error::{Error, Result};
use crate::runtime::board::Board;
use crate::runtime::state::{Phase, Status};

/// Whether the startup gate of `participant` is open: its inputs are in place, its work
/// is done, or it has failed; the message says what it is doing otherwise.
///
/// A failed participant passes on purpose. As a native sidecar it is a startupProbe's
/// subject, and a kubelet kills and restarts a sidecar whose startupProbe keeps failing
/// ("If the startup probe fails, the kubelet kills the container, and the container is
/// subjected to its restart policy", kubernetes.io/docs/concepts/workloads/pods/
/// pod-lifecycle/#container-probes; a sidecar's policy is `Always`), so the pod would stay
/// in `Init` and the failure would loop. Passed, the gate lets the application's
/// container start, where the wrapper reads the failure, never runs the application,
/// and exits 69 with the sidecar's reason: the pod ends within seconds, and says why.
pub fn probe(plan: &Plan, participant: &str) -> Result<(bool, String)> {
    let board = Board::open(&plan.coordination)?;
    Ok(match board.status(participant)? {
        Status::Absent => (false, format!("{participant}: not started")),
        Status::Dead(s) => (false, format!("{participant}: died while {:?}", s.phase)),
        Status::Known(s) => {
            let ready = matches!(
                s.phase,
                Phase::Ready
                    | Phase::Running
                    | Phase::Exited
                    | Phase::Uploading
                    | Phase::Done
                    | Phase::Failed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::{Reason, ReasonCode, State};

    fn plan_in(dir: &Path) -> Plan {
        Plan {
            coordination: dir.to_path_buf(),
            ..Plan::default()
        }
    }

    #[test]
    fn the_gate_opens_when_ready_or_failed_and_stays_shut_before() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_in(dir.path());
        let board = Board::open(dir.path()).unwrap();
        let (open, why) = probe(&plan, "datamon").unwrap();
        assert!(!open, "{why}");
        let _lock = board.hold("datamon").unwrap();
        board
            .write(&State::new("datamon", Phase::Starting))
            .unwrap();
        assert!(!probe(&plan, "datamon").unwrap().0);
        board.write(&State::new("datamon", Phase::Ready)).unwrap();
        assert!(probe(&plan, "datamon").unwrap().0);
        let reason = Reason::new(ReasonCode::InputFailed, "no label v9 in repo raw");
        board.write(&State::failed("datamon", reason)).unwrap();
        let (open, why) = probe(&plan, "datamon").unwrap();
        assert!(
            open,
            "a failed sidecar opens the gate so the wrapper reports it"
        );
        assert!(
            why.contains("failed") && why.contains("no label v9"),
            "{why}"
        );
    }
}
