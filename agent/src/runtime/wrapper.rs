//! `datamon-agent wrap -- CMD ARGS`: the application's side of the protocol. It waits for
//! every sidecar of the plan to be ready, runs the application (its own process group;
//! signals forwarded; stdio passed through), stops it when a sidecar fails or dies or its
//! deadline passes (SIGTERM, the grace period, SIGKILL), says how it ended, waits for the
//! outputs to be uploaded, and exits with the application's code, or with a code of its
//! own and the reason when something else went wrong.

use std::process::ExitStatus;
use std::time::Duration;

use datamon_plan::Plan;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::runtime::board::{Board, Watcher};
use crate::runtime::outcome::{
    self, Outcome, EXIT_DEADLINE, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SIDECAR,
    EXIT_TERMINATED,
};
use crate::runtime::state::{Phase, Reason, ReasonCode, State, Status};
use crate::signals::Forwarded;
use datamon_edge::chain;

/// A failure of the protocol, with the exit code it leads to.
struct Stop {
    reason: Reason,
    code: u8,
}

impl Stop {
    fn new(code: u8, reason_code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            reason: Reason::new(reason_code, message),
            code,
        }
    }

    fn internal(e: &crate::Error) -> Self {
        Self::new(EXIT_SIDECAR, ReasonCode::Internal, chain(e))
    }
}

/// Runs `command` as the plan's application participant `me`; returns the wrapper's exit
/// code.
pub async fn run(plan: &Plan, me: &str, command: &[String]) -> crate::Result<u8> {
    let mut signals = Forwarded::catch()?;
    super::reaper::become_subreaper();
    let Some((program, args)) = command.split_first() else {
        return Err(crate::Error::Usage(
            "no command to run: give it after `--`, as in `datamon-agent wrap -- python job.py`"
                .into(),
        ));
    };
    if !plan.effective_apps().iter().any(|a| a == me) {
        return Err(crate::Error::Usage(format!(
            "the plan has no application participant {me:?}: pass --participant with one of {:?}",
            plan.effective_apps()
        )));
    }
    let board = Board::open(&plan.coordination)?;
    let _lock = board.hold(me)?;
    board.write(&State::new(me, Phase::Starting))?;
    let mut watcher = board.watch()?;
    let mut w = Wrapper {
        plan,
        board: &board,
        outcome: Outcome {
            participant: me.to_string(),
            ..Outcome::default()
        },
    };
    let code = match w.run(program, args, &mut signals, &mut watcher).await {
        Ok(code) => code,
        Err(stop) => {
            eprintln!("datamon-agent wrap: {}", stop.reason);
            tracing::error!(reason = %stop.reason, "the application did not complete");
            let mut st = State::failed(me, stop.reason.clone());
            st.exit_code = w.outcome.exit_code;
            // If even this cannot be written, the sidecars see the wrapper gone: the same
            // conclusion.
            let _ = board.write(&st);
            w.outcome.reason = Some(stop.reason);
            stop.code
        }
    };
    outcome::write(&plan.termination_message, &w.outcome);
    Ok(code)
}

struct Wrapper<'a> {
    plan: &'a Plan,
    board: &'a Board,
    outcome: Outcome,
}

/// What a look at the sidecars found.
enum Look {
    /// Every sidecar asked about is where it should be.
    AllThere,
    /// Some are not yet.
    Waiting(Vec<String>),
}

/// Aborts the reaper when the application's run ends.
struct ReaperTask(tokio::task::JoinHandle<()>);

impl Drop for ReaperTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Wrapper<'_> {
    async fn run(
        &mut self,
        program: &str,
        args: &[String],
        signals: &mut Forwarded,
        watcher: &mut Watcher,
    ) -> Result<u8, Stop> {
        self.wait_for_sidecars(false, signals, watcher).await?;
        let mut child = match tokio::process::Command::new(program)
            .args(args)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_NOT_EXECUTABLE
                };
                return Err(Stop::new(
                    code,
                    ReasonCode::AppNotStarted,
                    format!("cannot run {program:?}: {e}"),
                ));
            }
        };
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        // Dropped (aborted) when `run` returns: the wrapper exits soon after.
        let _reaper = ReaperTask(tokio::spawn(super::reaper::run(
            pgid.map_or(-1, Pid::as_raw),
        )));
        let mut st = State::new(&self.outcome.participant, Phase::Running);
        self.write(&st)?;
        tracing::info!(program, pid = ?pgid, "application started");

        let app_deadline = self.plan.deadlines.app.map(|d| Instant::now() + d);
        let stop_reason = loop {
            if let Err(stop) = self.check_sidecars(false) {
                break Some(stop);
            }
            let deadline = async {
                match app_deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(|e| Stop::new(EXIT_SIDECAR, ReasonCode::Internal, format!("cannot wait for the application: {e}")))?;
                    break self.exited(status, &mut st).err();
                }
                sig = signals.recv() => {
                    if let Some(pg) = pgid {
                        tracing::info!(signal = ?sig, "forwarding to the application");
                        let _ = killpg(pg, sig);
                    }
                }
                _ = watcher.changed() => {}
                () = deadline => {
                    break Some(Stop::new(EXIT_DEADLINE, ReasonCode::Deadline, format!(
                        "the application ran longer than {} (deadlines.app)",
                        humantime::format_duration(self.plan.deadlines.app.unwrap_or_default()))));
                }
            }
        };
        if let Some(stop) = stop_reason {
            if st.phase == Phase::Running {
                self.stop_app(&mut child, pgid).await;
            }
            return Err(stop);
        }
        let app_code = self.outcome.exit_code.unwrap_or(-1);
        self.wait_for_sidecars(true, signals, watcher).await?;
        Ok(u8::try_from(app_code).unwrap_or(1))
    }

    fn write(&self, st: &State) -> Result<(), Stop> {
        self.board.write(st).map_err(|e| Stop::internal(&e))
    }

    /// Records how the application exited.
    fn exited(&mut self, status: ExitStatus, st: &mut State) -> Result<(), Stop> {
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1);
        tracing::info!(code, "application exited");
        self.outcome.exit_code = Some(code);
        st.phase = Phase::Exited;
        st.exit_code = Some(code);
        st.updated = chrono::Utc::now().to_rfc3339();
        self.write(st)
    }

    /// SIGTERM to the application's process group, the grace period, then SIGKILL.
    async fn stop_app(&mut self, child: &mut tokio::process::Child, pgid: Option<Pid>) {
        let Some(pg) = pgid else { return };
        tracing::warn!(grace = ?self.plan.deadlines.grace, "stopping the application");
        let _ = killpg(pg, Signal::SIGTERM);
        let status = match tokio::time::timeout(self.plan.deadlines.grace, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                tracing::warn!("the application outlived its grace period: SIGKILL");
                let _ = killpg(pg, Signal::SIGKILL);
                child.wait().await.ok()
            }
        };
        if let Some(s) = status {
            use std::os::unix::process::ExitStatusExt;
            self.outcome.exit_code = s.code().or_else(|| s.signal().map(|x| 128 + x));
        }
    }

    /// Looks at every sidecar (only those that upload, [`Plan::sidecars_that_upload`], when
    /// `uploads`): failed or dead is an error; otherwise says whether each is where the
    /// current step needs it.
    fn look(&mut self, uploads: bool) -> Result<Look, Stop> {
        let mut waiting = Vec::new();
        let sidecars = if uploads {
            self.plan.sidecars_that_upload()
        } else {
            self.plan.effective_sidecars()
        };
        for s in sidecars {
            let status = self.board.status(&s.name).map_err(|e| Stop::internal(&e))?;
            match status {
                Status::Known(st) if st.phase == Phase::Failed => {
                    let code = match (uploads, st.reason.as_ref().map(|r| r.code)) {
                        (true, Some(ReasonCode::DatabaseSaveFailed)) => {
                            ReasonCode::DatabaseSaveFailed
                        }
                        (true, _) => ReasonCode::UploadFailed,
                        (false, _) => ReasonCode::SidecarFailed,
                    };
                    let r = st.reason.map(|r| r.to_string()).unwrap_or_default();
                    return Err(Stop::new(
                        EXIT_SIDECAR,
                        code,
                        format!("sidecar {} failed: {r}", s.name),
                    ));
                }
                Status::Dead(st) => {
                    return Err(Stop::new(EXIT_SIDECAR, ReasonCode::SidecarDied, format!("sidecar {} (pid {}) died while {:?}, without saying why (killed, or out of memory?)", s.name, st.pid, st.phase)));
                }
                Status::Known(st) => {
                    let there = if uploads {
                        st.phase == Phase::Done
                    } else {
                        matches!(st.phase, Phase::Ready | Phase::Uploading | Phase::Done)
                    };
                    if there {
                        self.outcome.inputs.extend(st.inputs);
                        self.outcome.outputs.extend(st.outputs);
                    } else {
                        waiting.push(s.name.clone());
                    }
                }
                Status::Absent => waiting.push(s.name.clone()),
            }
        }
        Ok(if waiting.is_empty() {
            Look::AllThere
        } else {
            Look::Waiting(waiting)
        })
    }

    fn check_sidecars(&mut self, uploads: bool) -> Result<(), Stop> {
        self.look(uploads).map(|_| ())
    }

    /// Waits until every sidecar is ready (`uploads` false) or every sidecar that uploads
    /// (outputs, or databases saved) is done (`uploads` true), within the plan's deadline
    /// for that step.
    async fn wait_for_sidecars(
        &mut self,
        uploads: bool,
        signals: &mut Forwarded,
        watcher: &mut Watcher,
    ) -> Result<(), Stop> {
        let (limit, field, missed) = if uploads {
            (
                self.plan.deadlines.upload,
                "upload",
                "did not finish their uploads",
            )
        } else {
            (self.plan.deadlines.ready, "ready", "were not ready")
        };
        let deadline = Instant::now() + limit;
        let mut last_log = Instant::now();
        loop {
            match self.look(uploads)? {
                Look::AllThere => return Ok(()),
                Look::Waiting(names) if Instant::now() >= deadline => {
                    let after = if uploads {
                        "they may still finish"
                    } else {
                        "the application was not started"
                    };
                    return Err(Stop::new(
                        EXIT_DEADLINE,
                        ReasonCode::Deadline,
                        format!(
                            "sidecars {names:?} {missed} within {} (deadlines.{field}); {after}",
                            humantime::format_duration(limit)
                        ),
                    ));
                }
                Look::Waiting(names) => {
                    if last_log.elapsed() >= Duration::from_secs(10) {
                        tracing::info!(?names, "waiting for sidecars ({field})");
                        last_log = Instant::now();
                    }
                }
            }
            tokio::select! {
                _ = watcher.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
                sig = signals.recv() => {
                    if uploads {
                        // The application is gone; the uploads are what is left of its work.
                        tracing::warn!(signal = ?sig, "waiting for the uploads to finish first");
                    } else if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                        return Err(Stop::new(EXIT_TERMINATED, ReasonCode::Terminated, format!("{sig:?} before the application started")));
                    }
                }
            }
        }
    }
}
