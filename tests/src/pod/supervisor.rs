//! The pod's lifecycle, on one thread: init containers in order (native sidecars gated by
//! their startup probe), then the main containers together, then the shutdown (SIGTERM,
//! grace period, SIGKILL). Exited containers restart as the kubelet restarts them: native
//! sidecars always, the others by the pod's `restartPolicy`, each after the kubelet's
//! exponential backoff. At every poll the eviction manager ([`super::eviction`]) runs its
//! pass when one is due; an eviction shuts the pod down with the eviction's grace period
//! and nothing restarts after it. A container that cannot be created holds the pod Pending
//! until nothing else runs or the runner's pending deadline. Processes are polled every few
//! milliseconds; every wait has a deadline, and `kill_now` (set by
//! [`super::RunningPod::wait`] at its deadline) ends any wait at once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::eviction::{self, Monitor};
use super::mounts::{container_script, unshare_propagation, HostMounts, Tools};
use super::plan::{ContainerPlan, Plan, ProbePlan, RestartPolicy, Role};
use super::runc::{self, Bundle, SpecFiles};
use super::{PodError, Shared, POD_TERMINATION_MESSAGE_LIMIT, TERMINATION_MESSAGE_LIMIT};

/// Containers started by this process in image mode (their runc ids are unique).
static CONTAINERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often processes are polled.
const TICK: Duration = Duration::from_millis(20);
/// How long killed processes may take to be reaped before the runner gives up on them.
const REAP_DEADLINE: Duration = Duration::from_secs(10);

/// The kubelet's restart backoff, scaled so that its first delay is `initial` (the kubelet's
/// is 10 s): "the kubelet restarts them with an exponential backoff delay (10s, 20s, 40s, …),
/// that is capped at 300 seconds (5 minutes). Once a container has executed for 10 minutes
/// without any problems, the kubelet resets the restart backoff timer for that container."
/// <https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy>
/// The scaling keeps the order of events and changes no outcome: it only saves the tests time.
fn backoff_delay(initial: Duration, restarts_in_a_row: u32) -> Duration {
    let cap = initial * 30; // 300 s / 10 s
    initial
        .checked_mul(1 << restarts_in_a_row.min(16))
        .map_or(cap, |d| d.min(cap))
}

/// The bytes of each container's termination message a pod of `containers` containers
/// (init and main) keeps in its status: the kubelet's status manager splits
/// `MaxPodTerminationMessageLogLength` (12 KiB) evenly among them, never more than the
/// 4096 bytes it reads of one file.
fn message_share(containers: usize) -> usize {
    (POD_TERMINATION_MESSAGE_LIMIT / containers.max(1)).min(TERMINATION_MESSAGE_LIMIT)
}

/// How long a run must last for the backoff to start again from `initial` (10 min / 10 s).
fn backoff_reset_after(initial: Duration) -> Duration {
    initial * 60
}

/// The runner's knobs that stand for the kubelet's periods ([`super::PodRunner`] documents
/// each).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// The first delay of the restart backoff.
    pub backoff: Duration,
    /// The eviction manager's period.
    pub eviction_period: Duration,
    /// How long a Pending pod is watched.
    pub pending_deadline: Duration,
}

/// Runs one pod.
pub(crate) struct Supervisor {
    plan: Plan,
    tools: Tools,
    workdir: PathBuf,
    timing: Timing,
    monitor: Monitor,
    /// The eviction manager evicted the pod (the reason is in the shared state).
    evicted: bool,
    shared: Arc<Shared>,
    procs: Vec<Proc>,
    /// Shutting down: exited sidecars are no longer restarted.
    stopping: bool,
}

/// The runner's side of one container.
#[derive(Default)]
struct Proc {
    child: Option<Child>,
    /// When an exited native sidecar is due to restart.
    restart_at: Option<Instant>,
    /// When the current run started (its marker appeared).
    started_at: Option<Instant>,
    /// Restarts since the last run that lasted long enough to reset the backoff.
    crash_loop: u32,
    /// Image mode: the current run's bundle (its overlay is unmounted on drop).
    bundle: Option<Bundle>,
    /// Image mode: runs so far (each gets its own bundle and runc id).
    runs: u32,
    /// Image mode: the kubelet would not create it (`CreateContainerConfigError`).
    unstartable: bool,
}

/// Why a wait ended early.
enum Stop {
    /// `RunningPod::terminate`: shut down gracefully.
    Terminate,
    /// The caller's deadline: kill everything now.
    KillNow,
    /// The eviction manager evicted the pod: shut down with the eviction's grace period.
    Evict,
}

type Step<T> = Result<Result<T, Stop>, PodError>;

impl Supervisor {
    pub fn new(
        plan: Plan,
        tools: Tools,
        workdir: PathBuf,
        timing: Timing,
        shared: Arc<Shared>,
    ) -> Self {
        let procs = plan.containers.iter().map(|_| Proc::default()).collect();
        let monitor = Monitor::new(
            &plan.volumes,
            timing.eviction_period,
            workdir.join("logs").join("kubelet.log"),
        );
        Self {
            plan,
            tools,
            workdir,
            timing,
            monitor,
            evicted: false,
            shared,
            procs,
            stopping: false,
        }
    }

    /// Runs the pod to its end; the host mounts are removed after the last process is
    /// reaped, whatever happened.
    pub fn run(mut self, host_mounts: HostMounts) -> Result<(), PodError> {
        let result = self.lifecycle();
        self.kill_all();
        drop(host_mounts);
        let mut g = self.shared.lock();
        g.done = true;
        self.shared.changed.notify_all();
        result
    }

    fn lifecycle(&mut self) -> Result<(), PodError> {
        match self.start_phase()? {
            Ok(()) | Err(Stop::Terminate) => self.shutdown(self.plan.grace),
            Err(Stop::Evict) => self.shutdown(eviction::GRACE),
            Err(Stop::KillNow) => Ok(()),
        }
    }

    /// Init containers, then the main containers until they have all exited.
    fn start_phase(&mut self) -> Step<()> {
        let n = self.plan.containers.len();
        for i in 0..n {
            match self.plan.containers[i].role {
                Role::Main => break,
                Role::Init => {
                    // A failed init container is restarted (with the backoff) until it
                    // succeeds, "However, if the Pod has a restartPolicy of Never, and an init
                    // container fails during startup of that Pod, Kubernetes treats the
                    // overall Pod as failed."
                    // <https://kubernetes.io/docs/concepts/workloads/pods/init-containers/#understanding-init-containers>
                    self.spawn(i)?;
                    if self.procs[i].unstartable {
                        return self.hold_pending();
                    }
                    let settled =
                        |s: &Self| s.procs[i].child.is_none() && s.procs[i].restart_at.is_none();
                    if let Err(stop) = self.wait_for(settled, None)? {
                        return Ok(Err(stop));
                    }
                    if self.shared.lock().containers[i].report.exit_code != Some(0) {
                        return Ok(Ok(()));
                    }
                }
                Role::Sidecar => {
                    self.spawn(i)?;
                    if self.procs[i].unstartable {
                        return self.hold_pending();
                    }
                    if let Err(stop) = self.gate(i)? {
                        return Ok(Err(stop));
                    }
                }
            }
        }
        let mains: Vec<usize> = (0..n)
            .filter(|&i| self.plan.containers[i].role == Role::Main)
            .collect();
        for &i in &mains {
            self.spawn(i)?;
        }
        // The kubelet starts the other main containers when one cannot be created.
        if mains.iter().any(|&i| self.procs[i].unstartable) {
            return self.hold_pending();
        }
        self.wait_for(
            |s| {
                mains
                    .iter()
                    .all(|&i| s.procs[i].child.is_none() && s.procs[i].restart_at.is_none())
            },
            None,
        )
    }

    /// A container cannot be created: the kubelet keeps the pod Pending and retries it for
    /// ever, with the same outcome, while the containers already running go on. The runner
    /// watches until nothing runs or is due to restart, or until its pending deadline.
    fn hold_pending(&mut self) -> Step<()> {
        let deadline = Instant::now() + self.timing.pending_deadline;
        let idle = |s: &Self| {
            s.procs
                .iter()
                .all(|p| p.child.is_none() && p.restart_at.is_none())
        };
        self.wait_for(idle, Some(deadline))
    }

    /// Waits for a native sidecar's startup probe to pass (or for its start, without one).
    fn gate(&mut self, i: usize) -> Step<()> {
        if let Err(stop) = self.wait_for(|s| s.procs[i].started_at.is_some(), None)? {
            return Ok(Err(stop));
        }
        let Some(probe) = self.plan.containers[i].startup_probe.clone() else {
            return Ok(Ok(()));
        };
        // "If the startup probe fails, the kubelet kills the container, and the container is
        // subjected to its restart policy" (Always, for a sidecar): the pod does not fail, it
        // stays in its init phase while the sidecar restarts with the backoff, and the next
        // init container waits for a run whose probe passes.
        // <https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/#startup-probe>
        // <https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/#sidecar-containers-and-pod-lifecycle>
        let mut run = self.procs[i].started_at;
        let mut next = Instant::now() + probe.initial_delay;
        let mut failures = 0;
        loop {
            if let Err(stop) = self.wait_for(|_| false, Some(next))? {
                return Ok(Err(stop));
            }
            next = Instant::now() + probe.period;
            let pid = match (&self.procs[i].child, self.procs[i].started_at) {
                (Some(c), Some(started)) => {
                    if run != Some(started) {
                        // A new run: its probe starts from scratch.
                        run = Some(started);
                        failures = 0;
                        next = started + probe.initial_delay;
                        continue;
                    }
                    c.id()
                }
                _ => continue, // restarting: no probe until it runs again
            };
            if self.probe(i, pid, &probe) {
                return Ok(Ok(()));
            }
            failures += 1;
            if failures >= probe.failure_threshold {
                self.kill_group(i);
                failures = 0;
            }
        }
    }

    /// Runs a probe command in the container's mount namespace; true if it exits 0 in time.
    fn probe(&self, i: usize, pid: u32, probe: &ProbePlan) -> bool {
        let c = &self.plan.containers[i];
        let mut cmd = match (&self.tools.runc, &self.procs[i].bundle) {
            (Some(runc), Some(b)) => {
                runc::exec_command(runc, &self.runc_root(), &b.id, &probe.command)
            }
            _ => {
                let mut cmd = Command::new(&self.tools.nsenter);
                cmd.arg("-t")
                    .arg(pid.to_string())
                    .args(["-m", "-w", "--"])
                    .args(&probe.command);
                cmd
            }
        };
        cmd.env_clear()
            .envs(c.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let Ok(mut child) = cmd.spawn() else {
            return false;
        };
        let deadline = Instant::now() + probe.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(TICK / 4),
                _ => {
                    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                    let _ = killpg(pgid, Signal::SIGKILL);
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// Gracefully stops whatever runs: main (and classic init) containers first, then
    /// native sidecars one by one in reverse order, all within one grace period (`grace`:
    /// the pod's, or the eviction's); then SIGKILL.
    fn shutdown(&mut self, grace: Duration) -> Result<(), PodError> {
        self.stopping = true;
        let deadline = Instant::now() + grace;
        let n = self.plan.containers.len();
        let non_sidecars: Vec<usize> = (0..n)
            .filter(|&i| self.plan.containers[i].role != Role::Sidecar)
            .collect();
        for &i in &non_sidecars {
            self.send(i, Signal::SIGTERM);
        }
        let all_gone = |s: &Self| non_sidecars.iter().all(|&i| s.procs[i].child.is_none());
        if self.wait_for(all_gone, Some(deadline))?.is_err() {
            return Ok(());
        }
        for i in (0..n).rev() {
            if self.plan.containers[i].role != Role::Sidecar {
                continue;
            }
            self.procs[i].restart_at = None;
            self.send(i, Signal::SIGTERM);
            if self
                .wait_for(|s| s.procs[i].child.is_none(), Some(deadline))?
                .is_err()
            {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Ticks until `done` holds or `deadline` passes (`Ok(Ok(()))` either way), or until a
    /// stop is requested (`Ok(Err(_))`; `Terminate` only while not already stopping).
    fn wait_for(&mut self, done: impl Fn(&Self) -> bool, deadline: Option<Instant>) -> Step<()> {
        loop {
            let (terminate, kill_now) = self.tick()?;
            if kill_now {
                return Ok(Err(Stop::KillNow));
            }
            if self.evicted && !self.stopping {
                return Ok(Err(Stop::Evict));
            }
            if terminate && !self.stopping {
                return Ok(Err(Stop::Terminate));
            }
            if done(self) || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Ok(()));
            }
            std::thread::sleep(TICK);
        }
    }

    /// One poll: delivers requested signals, notices starts, reaps exits, restarts
    /// sidecars that are due. Returns (terminate requested, kill now requested).
    fn tick(&mut self) -> Result<(bool, bool), PodError> {
        let (signals, terminate, kill_now) = {
            let mut g = self.shared.lock();
            (std::mem::take(&mut g.signals), g.terminate, g.kill_now)
        };
        for (i, sig) in signals {
            self.send(i, sig);
        }
        let mut changed = false;
        if !self.stopping && !self.evicted {
            if let Some(e) = self.monitor.poll(Instant::now()) {
                self.evicted = true;
                self.shared.lock().evicted = Some(e);
                changed = true;
            }
        }
        for i in 0..self.procs.len() {
            let Some(child) = self.procs[i].child.as_mut() else {
                continue;
            };
            let status = child.try_wait().map_err(|e| {
                PodError::io(
                    format!(
                        "cannot wait for container {:?}",
                        self.plan.containers[i].name
                    ),
                    e,
                )
            })?;
            let started_now = self.procs[i].started_at.is_none() && self.marker(i).exists();
            if started_now {
                self.procs[i].started_at = Some(Instant::now());
                let mut g = self.shared.lock();
                g.containers[i].running = true;
                g.containers[i].report.started = true;
                changed = true;
            }
            if let Some(status) = status {
                self.procs[i].child = None;
                let ran = self.procs[i].started_at.take().map(|t| t.elapsed());
                self.kill_group(i);
                self.remove_bundle(i);
                let message = self.termination_message(i);
                let mut g = self.shared.lock();
                let c = &mut g.containers[i];
                c.pid = None;
                c.running = false;
                c.report.exit_code = status.code();
                c.report.signal = status.signal();
                c.report.termination_message = message;
                changed = true;
                drop(g);
                if !self.stopping && !self.evicted && self.restarts(i, status.code()) {
                    let p = &mut self.procs[i];
                    if ran.is_some_and(|d| d >= backoff_reset_after(self.timing.backoff)) {
                        p.crash_loop = 0;
                    }
                    p.restart_at =
                        Some(Instant::now() + backoff_delay(self.timing.backoff, p.crash_loop));
                    p.crash_loop += 1;
                }
            }
        }
        for i in 0..self.procs.len() {
            if self.procs[i]
                .restart_at
                .is_some_and(|t| Instant::now() >= t)
                && !self.stopping
                && !self.evicted
                && !kill_now
            {
                self.procs[i].restart_at = None;
                self.spawn(i)?;
                self.shared.lock().containers[i].report.restarts += 1;
                changed = true;
            }
        }
        if changed {
            self.shared.changed.notify_all();
        }
        Ok((terminate, kill_now))
    }

    /// Whether the kubelet would start container `i` again after it exited with `code`.
    fn restarts(&self, i: usize, code: Option<i32>) -> bool {
        match self.plan.containers[i].role {
            // A sidecar's own `restartPolicy: Always`.
            Role::Sidecar => true,
            // "If the Pod's restartPolicy is set to Always, the init containers use
            // restartPolicy OnFailure." (init-containers page, as above)
            Role::Init => match self.plan.restart_policy {
                RestartPolicy::Never => false,
                _ => RestartPolicy::OnFailure.restarts(code),
            },
            Role::Main => self.plan.restart_policy.restarts(code),
        }
    }

    fn runc_root(&self) -> PathBuf {
        self.workdir.join("runc")
    }

    /// Image mode: removes the exited run's container from runc and unmounts its overlay.
    fn remove_bundle(&mut self, i: usize) {
        if let (Some(runc), Some(b)) = (&self.tools.runc, self.procs[i].bundle.take()) {
            let root = self.runc_root();
            runc::delete(runc, &root, &b.id);
            // runc's errors (a container that could not start) belong in the container's log.
            let runc_log =
                std::fs::read_to_string(runc::log_file(&root, &b.id)).unwrap_or_default();
            let errors: String = runc_log
                .lines()
                .filter(|l| l.contains("level=error"))
                .map(|l| format!("runc: {l}\n"))
                .collect();
            if !errors.is_empty() {
                let log = self
                    .workdir
                    .join("logs")
                    .join(format!("{}.log", self.plan.containers[i].name));
                if let Ok(mut f) = OpenOptions::new().append(true).open(&log) {
                    let _ = std::io::Write::write_all(&mut f, errors.as_bytes());
                }
            }
        }
    }

    fn marker(&self, i: usize) -> PathBuf {
        self.workdir
            .join("run")
            .join(format!("{}.started", self.plan.containers[i].name))
    }

    fn termination_file(&self, i: usize) -> PathBuf {
        self.workdir
            .join("termination")
            .join(&self.plan.containers[i].name)
    }

    fn termination_message(&self, i: usize) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(self.termination_file(i)) {
            // A file that cannot be read has no message, as for the kubelet.
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let limit = TERMINATION_MESSAGE_LIMIT as u64;
            if f.seek(SeekFrom::Start(len.saturating_sub(limit))).is_ok() {
                let _ = f.take(limit).read_to_end(&mut buf);
            }
        }
        buf.truncate(message_share(self.plan.containers.len()));
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Starts (or restarts) a container.
    fn spawn(&mut self, i: usize) -> Result<(), PodError> {
        let c: &ContainerPlan = &self.plan.containers[i];
        let io = |what: &str, p: &std::path::Path, e| {
            PodError::io(
                format!("container {:?}: cannot {what} {}", c.name, p.display()),
                e,
            )
        };
        for m in &c.mounts {
            if !m.source.exists() {
                std::fs::create_dir_all(&m.source).map_err(|e| io("create", &m.source, e))?;
            }
        }
        let marker = self.marker(i);
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &marker, e))
            }
            _ => {}
        }
        let term = self.termination_file(i);
        File::create(&term).map_err(|e| io("create", &term, e))?;
        let log_path = self.workdir.join("logs").join(format!("{}.log", c.name));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| io("open", &log_path, e))?;
        let log2 = log.try_clone().map_err(|e| io("open", &log_path, e))?;
        let mut cmd = match (&c.oci, &self.tools.runc) {
            (Some(oci), Some(runc)) => {
                let security = match &oci.security {
                    Ok(s) => s,
                    Err(message) => {
                        return self.unstartable(i, "CreateContainerConfigError", message.clone())
                    }
                };
                // The kubelet makes the file writable by any user of the container.
                std::fs::set_permissions(&term, std::fs::Permissions::from_mode(0o666))
                    .map_err(|e| io("chmod", &term, e))?;
                self.procs[i].runs += 1;
                let run = self.procs[i].runs;
                let dir = self
                    .workdir
                    .join("containers")
                    .join(format!("{}-{run}", c.name));
                // Unique on the machine: runc names the container's cgroups after it, and
                // two containers sharing a cgroup share its device rules and are killed
                // together by `runc delete --force`.
                let id = format!(
                    "datamon-pod-{}-{}-{}-{run}",
                    std::process::id(),
                    CONTAINERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    c.name
                );
                let hosts = self.workdir.join("containers").join("hosts");
                if !hosts.exists() {
                    std::fs::write(&hosts, runc::hosts_file(&oci.hostname))
                        .map_err(|e| io("write", &hosts, e))?;
                }
                let files = SpecFiles {
                    hosts: &hosts,
                    termination: &term,
                    marker: &marker,
                    sh: &self.tools.sh,
                    bounding: runc::bounding_set(),
                };
                let bundle = Bundle::prepare(dir, id, c, oci, security, &files)?;
                let cmd = runc::run_command(runc, &self.workdir.join("runc"), &bundle);
                self.procs[i].bundle = Some(bundle);
                cmd
            }
            _ => {
                let script = container_script(c, &self.tools, &term, &marker);
                let mut cmd = Command::new(&self.tools.unshare);
                cmd.args(["--mount", "--propagation", unshare_propagation(c), "--"])
                    .arg(&self.tools.sh)
                    .args(["-c", &script, "sh"])
                    .args(&c.argv)
                    .env_clear()
                    .envs(c.env.iter().map(|(k, v)| (k, v)));
                cmd
            }
        };
        let c: &ContainerPlan = &self.plan.containers[i];
        let child = cmd
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .map_err(|e| PodError::io(format!("container {:?}: cannot start it", c.name), e))?;
        let pid = i32::try_from(child.id()).ok();
        self.procs[i].child = Some(child);
        self.procs[i].started_at = None;
        let mut g = self.shared.lock();
        g.containers[i].pid = pid;
        g.containers[i].running = false;
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Image mode: the container cannot be created; it stays waiting with `reason` (the
    /// kubelet retries it and keeps the pod Pending; see [`Self::hold_pending`]).
    fn unstartable(&mut self, i: usize, reason: &str, message: String) -> Result<(), PodError> {
        let c = &self.plan.containers[i];
        let log = self.workdir.join("logs").join(format!("{}.log", c.name));
        let _ = std::fs::write(&log, format!("{reason}: {message}\n"));
        self.procs[i].unstartable = true;
        let mut g = self.shared.lock();
        g.containers[i].report.waiting = Some((reason.into(), message));
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Sends a signal to a container's main process, if it runs.
    fn send(&self, i: usize, sig: Signal) {
        if let Some(c) = &self.procs[i].child {
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// SIGKILL to the container's whole process group (its main process is its leader).
    fn kill_group(&self, i: usize) {
        let pid = match &self.procs[i].child {
            Some(c) => c.id(),
            None => match self.shared.lock().containers[i].pid {
                Some(p) => u32::try_from(p).unwrap_or(0),
                None => return,
            },
        };
        if let Ok(pid) = i32::try_from(pid) {
            if pid > 0 {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Kills every container that still runs and reaps it (within a deadline).
    fn kill_all(&mut self) {
        self.stopping = true;
        for i in 0..self.procs.len() {
            self.procs[i].restart_at = None;
            self.kill_group(i);
        }
        let deadline = Instant::now() + REAP_DEADLINE;
        while self.procs.iter().any(|p| p.child.is_some()) && Instant::now() < deadline {
            if self.tick().is_err() {
                break;
            }
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_times_the_first_delay() {
        let s = Duration::from_secs;
        let delays: Vec<_> = (0..7).map(|n| backoff_delay(s(10), n)).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300].map(s));
        assert_eq!(backoff_delay(s(10), u32::MAX), s(300));
        assert_eq!(backoff_reset_after(s(10)), s(600));
    }

    #[test]
    fn a_pod_of_more_than_three_containers_keeps_less_than_4096_bytes_of_each_message() {
        let shares: Vec<_> = [0, 1, 3, 4, 6, 12].map(message_share).into();
        assert_eq!(shares, [4096, 4096, 4096, 3072, 2048, 1024]);
    }
}
