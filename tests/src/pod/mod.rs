//! A Kubernetes pod runner for tests, with no cluster: the pod's containers run as local
//! processes, as a kubelet would run them, each in its own process group and its own
//! private mount namespace where its volume mounts are bind mounts at their `mountPath`.
//!
//! ```no_run
//! use std::time::Duration;
//! use datamon_e2e::pod::{self, Phase, PodRunner};
//! let pod = pod::parse(&std::fs::read_to_string("pod.yaml")?)?;
//! let running = PodRunner::new(pod)
//!     .workdir("/tmp/pod")
//!     .image("datamon-agent:dev", vec!["/usr/local/bin/datamon-agent".into()])
//!     .start()?;
//! let report = running.wait(Duration::from_secs(60))?;
//! assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What the runner does, and where it is simpler than a kubelet:
//! - volumes: `emptyDir` (`<workdir>/volumes/<name>`) and `hostPath`; `subPath`,
//!   `subPathExpr`, `readOnly` and `mountPropagation` (`None`, `HostToContainer`,
//!   `Bidirectional`) of volume mounts. Any other volume type is an error.
//! - env: `value` with `$(VAR)` expansion, `valueFrom.fieldRef` for `metadata.name`,
//!   `metadata.namespace`, `metadata.labels['k']` and `metadata.annotations['k']`. The
//!   runner's `PATH` (host mode only), `HOSTNAME` (the pod's name) and [`PodRunner::env`]
//!   variables come first, and `$(VAR)` may refer to them.
//! - two modes, by image name:
//!   - host mode ([`PodRunner::image`], and any container with a `command` whose image is
//!     not registered as an OCI image): the command runs on the host's file system, as
//!     root, in a private mount namespace; an image name only selects the entrypoint
//!     registered for it. Users and security contexts are ignored. The fast tests use it.
//!   - image mode ([`PodRunner::oci_image`]): the container runs from the image's root file
//!     system with runc (`runc run` in the foreground is the container's process; see
//!     `runc.rs`): the archive unpacked once per digest (skopeo + umoci, cached across
//!     processes, see `image.rs`) and a fresh overlay per run,
//!     the image's `Env` first, its `WorkingDir`, and its `Entrypoint`/`Cmd` under the
//!     kubelet's rules (a `command` replaces the Entrypoint and drops the Cmd, `args`
//!     replace the Cmd), the `securityContext` as the kubelet and runc apply it, the pod's
//!     inherited (`security.rs`: users and groups, `fsGroup`, `runAsNonRoot` refused as
//!     `CreateContainerConfigError` in [`ContainerReport::waiting`], capabilities,
//!     privileged with `/dev/fuse`, read-only root, `noNewPrivileges`). Not modelled:
//!     seccomp (`RuntimeDefault` is accepted and no filter is applied: runc without a
//!     profile is simpler than containerd's default, which blocks some fifty system
//!     calls), AppArmor/SELinux, user namespaces, resources, image pulls (archives only),
//!     `imagePullPolicy`, and a separate network namespace: every container is in the
//!     host's network (loopback shared as within a pod, but also with the host).
//! - a container the kubelet would not create (image mode: `runAsNonRoot` with a root
//!   user) stays waiting with the kubelet's reason and message and the pod is
//!   [`Phase::Pending`], as the kubelet's `getPhase` has it ("One or more containers has
//!   not been started"); the other containers go on as the kubelet runs them. The kubelet
//!   retries the creation with a back-off for ever; the runner does not retry (the spec
//!   and image are fixed, so the outcome cannot change) and stops watching when nothing
//!   else runs or at [`PodRunner::pending_deadline`], a deadline of its own.
//! - restarts as the kubelet does them: the pod's `restartPolicy` (default `Always`, as the
//!   API server's) decides for the main containers; a classic init container that fails is
//!   retried unless the policy is `Never`, when it fails the pod; native sidecars (init
//!   containers with `restartPolicy: Always`) restart whenever they exit until the shutdown.
//!   Each restart waits for the kubelet's exponential backoff (10 s doubling to 5 min, reset
//!   after 10 min of running), scaled so that the first delay is
//!   [`PodRunner::restart_backoff`] (1 s by default). The Job controller's `backoffLimit`
//!   is not modelled: under `OnFailure` a pod whose container keeps failing keeps
//!   restarting until the caller's deadline.
//! - probes: only a native sidecar's exec `startupProbe` is run (through `nsenter` into the
//!   container's mount namespace), gating the containers after it; when it fails
//!   `failureThreshold` times the sidecar is killed and restarted with the backoff, as a
//!   kubelet does, and the pod stays in its init phase. Liveness and readiness probes, and
//!   main containers' startup probes, are ignored. Image mode runs the probe with `runc
//!   exec` (the container's user, environment and capabilities), so its command must exist
//!   in the image. There are no lifecycle hooks or resources.
//! - termination messages: `terminationMessagePath` is a file bind-mounted from
//!   `<workdir>/termination/<container>` (mode 0666 in image mode, as the kubelet makes
//!   it). The report keeps what the pod's status would: the kubelet reads the file's
//!   last 4096 bytes (`tail.ReadAtMost` in `kuberuntime_container.go`), and its status
//!   manager keeps the first 12 KiB / (init + main containers) of each (`normalizeStatus`
//!   in `pkg/kubelet/status/status_manager.go`): 3072 bytes each for 4 containers. See
//!   <https://kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure/#customizing-the-termination-message>.
//!   `terminationMessagePolicy` is ignored.
//! - emptyDirs are 0777 (the kubelet's mode); with the pod's `fsGroup`, owned by that
//!   group and setgid. One with `medium: Memory` is a tmpfs, of `sizeLimit` bytes when it
//!   has one, as the kubelet mounts it (a write past the limit fails with ENOSPC; the tmpfs
//!   is unmounted when the pod ends, so its files are gone). One on disk is a plain
//!   directory whose writes are never limited: with a `sizeLimit`, the kubelet's eviction
//!   manager measures it (du's way: blocks, a hard link once) every
//!   [`PodRunner::eviction_period`] (the kubelet's 10 s) and, once its usage is above the
//!   limit, evicts the pod: the shutdown below with a grace period of one second, whatever
//!   the pod's (the kubelet gives that second to each container in turn, the runner to
//!   the whole shutdown, as always); nothing restarts; the phase is
//!   Failed with [`PodReport::reason`] `Evicted` and the kubelet's message
//!   (`eviction.rs` cites the kubelet's source). A kubelet can be slower to notice (its
//!   volume statistics are refreshed every minute), never sooner.
//! - logs: stdout and stderr of each container go to `<workdir>/logs/<container>.log`.
//! - the grace period (`terminationGracePeriodSeconds`, or [`PodRunner::grace`]) is one
//!   deadline for the whole shutdown: main containers first, then sidecars in reverse order.
//!
//! Not modelled at all (a test that depends on one of these needs a cluster):
//! - evictions other than a disk-backed emptyDir's: a container or pod past its
//!   `ephemeral-storage` limit (its writable layer and logs are not measured), node
//!   pressure (memory, disk, PIDs), and the node's disk filling up (the volumes are on the
//!   host's disk: a full host disk gives ENOSPC, as a full node disk would);
//! - resources: no cgroup limits (CPU, memory, PIDs), so no OOM kill, and a memory-backed
//!   emptyDir is not counted against the pod's memory as the kubelet's cgroup counts it;
//! - the Job controller (`backoffLimit`, `activeDeadlineSeconds`, `podFailurePolicy`), the
//!   pod's own `activeDeadlineSeconds`;
//! - liveness and readiness probes, main containers' startup probes, lifecycle hooks
//!   (`postStart`, `preStop`), `terminationMessagePolicy: FallbackToLogsOnError`;
//! - volumes other than emptyDir and hostPath (Secret, ConfigMap, projected, downward
//!   API, CSI, persistent volume claims): the runner refuses them;
//! - the pod's network namespace, DNS, Services; `shareProcessNamespace`;
//! - image pulls and `imagePullPolicy`, seccomp, AppArmor, SELinux, user namespaces
//!   (image mode, above);
//! - pod conditions (`DisruptionTarget` of an eviction among them) and Events: the report
//!   has each container's exit code, signal, restarts, termination message and waiting
//!   reason, and the pod's phase, reason and message.

mod eviction;
mod image;
mod mounts;
mod plan;
mod runc;
mod security;
mod supervisor;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
pub use nix::sys::signal::Signal;
use serde::Serialize;

/// Bytes of a termination message file the kubelet reads: the last ones
/// (`MaxContainerTerminationMessageLength`).
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;
/// Bytes of termination messages a pod's status keeps across all its containers, split
/// evenly among them (`MaxPodTerminationMessageLogLength`).
pub const POD_TERMINATION_MESSAGE_LIMIT: usize = 12 * 1024;
/// Lines of each container's log quoted in a timeout error.
const LOG_TAIL_LINES: usize = 20;
/// [`PodRunner::pending_deadline`]'s default.
const DEFAULT_PENDING_DEADLINE: Duration = Duration::from_secs(5);

/// What can go wrong when running a pod.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The text is neither a YAML nor a JSON pod.
    #[error("cannot parse the pod (YAML or JSON)")]
    Parse(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The pod uses something the runner does not implement.
    #[error("pod not supported by the runner: {what}")]
    Unsupported {
        /// What, and where in the pod.
        what: String,
    },
    /// A host tool the runner needs is missing.
    #[error("{tool} not found in PATH (util-linux provides unshare, nsenter, mount, findmnt)")]
    MissingTool {
        /// The tool's name.
        tool: String,
    },
    /// A file system or process operation failed.
    #[error("{context}")]
    Io {
        /// What the runner was doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No container of that name.
    #[error("the pod has no container named {0:?}")]
    NoSuchContainer(String),
    /// The container is not running (not started yet, or exited).
    #[error("container {0:?} is not running")]
    NotRunning(String),
    /// A container did not start in time.
    #[error("container {container:?} did not start within {timeout:?}")]
    NotStarted {
        /// The container.
        container: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The pod did not finish in time; every process was killed.
    #[error("the pod did not finish within {timeout:?}, so every container was killed; log tails:\n{logs}")]
    Timeout {
        /// How long the caller waited.
        timeout: Duration,
        /// The last lines of each container's log.
        logs: String,
    },
    /// An image could not be unpacked or read.
    #[error("image: {what}")]
    Image {
        /// What, with the tool's message.
        what: String,
    },
    /// The runner's thread panicked (a bug of the runner).
    #[error("the pod runner's thread panicked")]
    Panicked,
}

impl PodError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Parses a pod from YAML or JSON.
pub fn parse(text: &str) -> Result<Pod, PodError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| PodError::Parse(Box::new(e)))
    } else {
        serde_norway::from_str(text).map_err(|e| PodError::Parse(Box::new(e)))
    }
}

/// The outcome of a pod: its phase when the runner stopped watching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Some container was never created (its [`ContainerReport::waiting`] says why), so
    /// the kubelet keeps the pod pending and retries for ever; the runner stopped watching
    /// it ([`PodRunner::pending_deadline`]).
    Pending,
    /// Every main container exited 0.
    Succeeded,
    /// Anything else, an eviction among them ([`PodReport::reason`]).
    Failed,
}

/// The last state of one container.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerReport {
    /// The container's name.
    pub name: String,
    /// Exit code of its last run, if it exited (rather than being killed by a signal).
    pub exit_code: Option<i32>,
    /// Signal that ended its last run, if any.
    pub signal: Option<i32>,
    /// How many times it was restarted.
    pub restarts: u32,
    /// Its termination message file after its last run, as the pod's status keeps it: the
    /// file's last [`TERMINATION_MESSAGE_LIMIT`] bytes, of which the first
    /// [`POD_TERMINATION_MESSAGE_LIMIT`] / (the pod's containers) bytes.
    pub termination_message: String,
    /// Its log (stdout and stderr of every run).
    pub log: PathBuf,
    /// Whether it ever started (its mounts were set up and its command exec'd).
    pub started: bool,
    /// Why it is waiting and never started (image mode): the kubelet's reason, as
    /// `CreateContainerConfigError`, and its message.
    pub waiting: Option<(String, String)>,
}

/// The outcome of a pod and of each container.
#[derive(Debug, Clone, Serialize)]
pub struct PodReport {
    /// Pending, Succeeded or Failed.
    pub phase: Phase,
    /// The pod status's `reason`: `Evicted` when the kubelet's eviction manager ended it.
    pub reason: Option<String>,
    /// The pod status's `message`, as `Usage of EmptyDir volume "x" exceeds the limit
    /// "4Mi". ` for an eviction.
    pub message: Option<String>,
    /// Init containers, in declaration order.
    pub init_containers: Vec<ContainerReport>,
    /// Main containers, in declaration order.
    pub containers: Vec<ContainerReport>,
}

impl PodReport {
    /// The JSON termination message of a container (panics, with the logs, if it has none
    /// or it is not JSON: a test stops there).
    pub fn message(&self, container: &str) -> serde_json::Value {
        let c = self
            .container(container)
            .unwrap_or_else(|| panic!("no container {container}"));
        serde_json::from_str(&c.termination_message).unwrap_or_else(|e| {
            panic!(
                "{container}'s termination message {:?}: {e}\n{}",
                c.termination_message,
                self.logs()
            )
        })
    }

    /// Asserts that the pod ended for its sidecar `sidecar` before the application
    /// (container `app`, whose first command touches `ran`) started: phase Failed, `ran`
    /// absent, the wrapper's exit 69 with `sidecar_failed`, the sidecar's exit 1 and no
    /// restart. `what` names the case in the failure. The sidecar's termination message.
    pub fn assert_failed_before_the_app(
        &self,
        sidecar: &str,
        ran: &Path,
        what: &str,
    ) -> serde_json::Value {
        let logs = || self.logs();
        assert_eq!(self.phase, Phase::Failed, "{what}: {}", logs());
        assert!(!ran.exists(), "{what}: the app must not start");
        assert_eq!(self.exit_code("app"), Some(69), "{what}: {}", logs());
        assert_eq!(self.exit_code(sidecar), Some(1), "{what}: {}", logs());
        let restarts = self.container(sidecar).map(|c| c.restarts);
        assert_eq!(restarts, Some(0), "{what}: {}", logs());
        let app = self.message("app");
        assert_eq!(app["reason"]["code"], "sidecar_failed", "{what}: {app}");
        self.message(sidecar)
    }

    /// The exit code of a container's last run (panics if the pod has no such container).
    pub fn exit_code(&self, container: &str) -> Option<i32> {
        self.container(container)
            .unwrap_or_else(|| panic!("no container {container}"))
            .exit_code
    }

    /// The report of a container.
    pub fn container(&self, name: &str) -> Option<&ContainerReport> {
        self.init_containers
            .iter()
            .chain(&self.containers)
            .find(|c| c.name == name)
    }

    /// The report followed by every container's full log, for a test's failure message.
    pub fn logs(&self) -> String {
        let mut s = format!("pod {:?}\n", self.phase);
        if let (Some(reason), Some(message)) = (&self.reason, &self.message) {
            let _ = writeln!(s, "reason {reason}: {message}");
        }
        for c in self.init_containers.iter().chain(&self.containers) {
            let _ = writeln!(
                s,
                "--- {} (exit {:?}, signal {:?}, restarts {}, started {}) {}",
                c.name,
                c.exit_code,
                c.signal,
                c.restarts,
                c.started,
                c.log.display()
            );
            s.push_str(&std::fs::read_to_string(&c.log).unwrap_or_default());
        }
        s
    }
}

/// Builds and starts a pod.
#[derive(Debug)]
pub struct PodRunner {
    pod: Pod,
    workdir: Option<PathBuf>,
    env: Vec<(String, String)>,
    images: HashMap<String, Vec<String>>,
    oci: HashMap<String, PathBuf>,
    grace: Option<Duration>,
    timing: supervisor::Timing,
}

impl PodRunner {
    /// A runner for this pod.
    pub fn new(pod: Pod) -> Self {
        Self {
            pod,
            workdir: None,
            env: Vec::new(),
            images: HashMap::new(),
            oci: HashMap::new(),
            grace: None,
            timing: supervisor::Timing {
                backoff: Duration::from_secs(1),
                eviction_period: eviction::MONITORING_PERIOD,
                pending_deadline: DEFAULT_PENDING_DEADLINE,
            },
        }
    }

    /// Where volumes, logs and termination files live (default: a new temporary
    /// directory that is left behind, so its logs can be read).
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// An environment variable for every container (a container's own `env` overrides it).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// The entrypoint of an image, used by containers of that image without `command`.
    pub fn image(mut self, name: impl Into<String>, entrypoint: Vec<String>) -> Self {
        self.images.insert(name.into(), entrypoint);
        self
    }

    /// The image mode: containers of image `name` run from the OCI archive at `archive`
    /// (as `buildah push ... oci-archive:` writes it) with runc. The archive is unpacked at
    /// [`PodRunner::start`] once per image digest, into a cache that later runs and other
    /// processes share (`image.rs` says how it is locked and pruned).
    pub fn oci_image(mut self, name: impl Into<String>, archive: impl Into<PathBuf>) -> Self {
        self.oci.insert(name.into(), archive.into());
        self
    }

    /// Overrides the pod's `terminationGracePeriodSeconds`.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// The first delay of the restart backoff (default 1 s; the kubelet's is 10 s, and
    /// the later delays scale with it).
    pub fn restart_backoff(mut self, backoff: Duration) -> Self {
        self.timing.backoff = backoff;
        self
    }

    /// How often the eviction manager measures the disk-backed emptyDirs that have a
    /// `sizeLimit` (default 10 s, the kubelet's `evictionMonitoringPeriod`, a constant of
    /// the kubelet rather than a flag; `eviction.rs` cites it). A shorter period changes
    /// only how soon an eviction comes, never whether it comes.
    pub fn eviction_period(mut self, period: Duration) -> Self {
        self.timing.eviction_period = period;
        self
    }

    /// How long the runner watches a pod that is stuck Pending because a container cannot
    /// be created (default 5 s). This is the runner's own deadline, not the kubelet's: a
    /// kubelet never gives up, it retries the container with a back-off and the pod stays
    /// Pending until it is deleted. The retries are not run, as they cannot succeed (the
    /// pod's spec and image do not change). The runner stops at once when no other
    /// container runs; otherwise, at the deadline, it deletes the pod as
    /// [`RunningPod::terminate`] does, and the report says Pending.
    pub fn pending_deadline(mut self, deadline: Duration) -> Self {
        self.timing.pending_deadline = deadline;
        self
    }

    /// Checks the pod, prepares its volumes and starts it (init containers first).
    pub fn start(self) -> Result<RunningPod, PodError> {
        let workdir = match self.workdir {
            Some(w) => w,
            None => tempfile::Builder::new()
                .prefix("pod-")
                .tempdir()
                .map_err(|e| PodError::io("cannot create a working directory", e))?
                .keep(),
        };
        let oci = image::load_all(&self.oci)?;
        let plan = plan::plan(
            &self.pod,
            &plan::Settings {
                workdir: &workdir,
                env: &self.env,
                images: &self.images,
                oci: &oci,
                grace: self.grace,
            },
        )?;
        let tools = mounts::Tools::find(plan.containers.iter().any(|c| c.oci.is_some()))?;
        for sub in ["logs", "termination", "run", "containers", "runc"] {
            let d = workdir.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(|e| PodError::io(format!("cannot create {}", d.display()), e))?;
        }
        let host_mounts = mounts::HostMounts::prepare(&plan.volumes, plan.fs_group)?;
        let volumes = plan
            .volumes
            .iter()
            .map(|v| (v.name.clone(), v.host.clone()))
            .collect();
        let shared = Arc::new(Shared::new(&plan, &workdir));
        let sup =
            supervisor::Supervisor::new(plan, tools, workdir.clone(), self.timing, shared.clone());
        let thread = std::thread::Builder::new()
            .name("pod-runner".into())
            .spawn(move || sup.run(host_mounts))
            .map_err(|e| PodError::io("cannot start the pod runner's thread", e))?;
        Ok(RunningPod {
            shared,
            thread: Some(thread),
            volumes,
            workdir,
        })
    }
}

/// State shared by the supervisor thread and the [`RunningPod`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
pub(crate) struct State {
    containers: Vec<Status>,
    /// Set when the eviction manager evicted the pod.
    evicted: Option<eviction::Eviction>,
    signals: Vec<(usize, Signal)>,
    terminate: bool,
    kill_now: bool,
    done: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Status {
    name: String,
    init: bool,
    /// The main process, while it runs.
    pid: Option<i32>,
    /// The current run has set up its mounts and exec'd its command.
    running: bool,
    report: ContainerReport,
}

impl Shared {
    fn new(plan: &plan::Plan, workdir: &Path) -> Self {
        let containers = plan
            .containers
            .iter()
            .map(|c| Status {
                name: c.name.clone(),
                init: c.role != plan::Role::Main,
                pid: None,
                running: false,
                report: ContainerReport {
                    name: c.name.clone(),
                    exit_code: None,
                    signal: None,
                    restarts: 0,
                    termination_message: String::new(),
                    log: workdir.join("logs").join(format!("{}.log", c.name)),
                    started: false,
                    waiting: None,
                },
            })
            .collect();
        Self {
            state: Mutex::new(State {
                containers,
                evicted: None,
                signals: Vec::new(),
                terminate: false,
                kill_now: false,
                done: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means the other side panicked; the state is still readable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a change, at most until `deadline`.
    fn wait_until<'a>(&self, g: MutexGuard<'a, State>, deadline: Instant) -> MutexGuard<'a, State> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.changed.wait_timeout(g, left) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        }
    }

    fn index(&self, container: &str) -> Result<usize, PodError> {
        self.lock()
            .containers
            .iter()
            .position(|c| c.name == container)
            .ok_or_else(|| PodError::NoSuchContainer(container.into()))
    }
}

impl State {
    fn report(&self) -> PodReport {
        let (init, main): (Vec<&Status>, Vec<&Status>) =
            self.containers.iter().partition(|c| c.init);
        // The kubelet's getPhase: a container waiting that never ran keeps the pod
        // Pending; an eviction fails it whatever its containers did.
        let never_created = self
            .containers
            .iter()
            .any(|c| c.report.waiting.is_some() && !c.report.started);
        let phase = if self.evicted.is_some() {
            Phase::Failed
        } else if never_created {
            Phase::Pending
        } else if !main.is_empty() && main.iter().all(|c| c.report.exit_code == Some(0)) {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        PodReport {
            phase,
            reason: self.evicted.as_ref().map(|e| e.reason.clone()),
            message: self.evicted.as_ref().map(|e| e.message.clone()),
            init_containers: init.into_iter().map(|c| c.report.clone()).collect(),
            containers: main.into_iter().map(|c| c.report.clone()).collect(),
        }
    }
}

/// A started pod. Dropping it kills every container and removes the pod's mounts.
#[derive(Debug)]
pub struct RunningPod {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), PodError>>>,
    volumes: HashMap<String, PathBuf>,
    workdir: PathBuf,
}

impl RunningPod {
    /// The pod's working directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The host directory of a volume (`emptyDir` or `hostPath`).
    pub fn volume_dir(&self, name: &str) -> Option<PathBuf> {
        self.volumes.get(name).cloned()
    }

    /// Waits until the container has started (its mounts set up and its command exec'd),
    /// now or earlier: a container that already ran and exited counts as started.
    pub fn wait_running(&self, container: &str, timeout: Duration) -> Result<(), PodError> {
        let i = self.shared.index(container)?;
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        loop {
            if g.containers[i].running || g.containers[i].report.started {
                return Ok(());
            }
            if g.done || Instant::now() >= deadline {
                return Err(PodError::NotStarted {
                    container: container.into(),
                    timeout,
                });
            }
            g = self.shared.wait_until(g, deadline);
        }
    }

    /// Sends a signal to a container's main process (as `kill` on the node would); the
    /// runner then kills what is left of its process group, as when it exits by itself.
    pub fn signal(&self, container: &str, signal: Signal) -> Result<(), PodError> {
        let i = self.shared.index(container)?;
        let mut g = self.shared.lock();
        if g.containers[i].pid.is_none() {
            return Err(PodError::NotRunning(container.into()));
        }
        g.signals.push((i, signal));
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Deletes the pod as `kubectl delete pod` would: SIGTERM to the main containers, then
    /// to the native sidecars once the mains have exited, SIGKILL to whatever is left when
    /// the grace period ends. Returns at once; [`RunningPod::wait`] gives the report.
    pub fn terminate(&self) -> Result<(), PodError> {
        let mut g = self.shared.lock();
        g.terminate = true;
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Waits for the pod to end and returns its report. After `timeout`, every container is
    /// killed and the error carries the tail of each container's log.
    pub fn wait(mut self, timeout: Duration) -> Result<PodReport, PodError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        while !g.done && Instant::now() < deadline {
            g = self.shared.wait_until(g, deadline);
        }
        let timed_out = !g.done;
        drop(g);
        let report = self.stop()?;
        if timed_out {
            return Err(PodError::Timeout {
                timeout,
                logs: log_tails(&report),
            });
        }
        Ok(report)
    }

    /// Kills everything still running, waits for the supervisor, returns the final report.
    fn stop(&mut self) -> Result<PodReport, PodError> {
        {
            let mut g = self.shared.lock();
            g.kill_now = true;
            self.shared.changed.notify_all();
        }
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| PodError::Panicked)??;
        }
        Ok(self.shared.lock().report())
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// The last lines of every container's log.
fn log_tails(report: &PodReport) -> String {
    let mut s = String::new();
    for c in report.init_containers.iter().chain(&report.containers) {
        let log = std::fs::read_to_string(&c.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        let _ = writeln!(
            s,
            "--- {} (exit {:?}, signal {:?}, started {})",
            c.name, c.exit_code, c.signal, c.started
        );
        for l in tail {
            let _ = writeln!(s, "{l}");
        }
    }
    s
}
