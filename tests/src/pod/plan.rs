//! The pod spec turned into what the runner executes: for each container its argv, its
//! environment, its mounts and its startup probe, with Kubernetes' `$(VAR)` expansion and
//! `fieldRef` values resolved; in the image mode also its image's root file system and its
//! security ([`super::security`]). Pure: no file system, no processes (images are read
//! before).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe, Volume};

use super::image::Image;
use super::security::{self, ConfigError, Security};
use super::PodError;

/// containerd's `PATH` for an image that sets none.
const DEFAULT_IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECS: i64 = 30;
/// Kubernetes' default `terminationMessagePath`.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// What the runner's builder contributes to the plan.
pub(crate) struct Settings<'a> {
    pub workdir: &'a Path,
    pub env: &'a [(String, String)],
    pub images: &'a HashMap<String, Vec<String>>,
    /// OCI images (the image mode), by name.
    pub oci: &'a HashMap<String, Image>,
    pub grace: Option<Duration>,
}

/// A pod ready to run.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Init containers first (in order), then the main containers.
    pub containers: Vec<ContainerPlan>,
    pub volumes: Vec<VolumePlan>,
    pub grace: Duration,
    /// The pod's `restartPolicy` (the API server's default is `Always`).
    pub restart_policy: RestartPolicy,
    /// The pod's `fsGroup`: emptyDirs are given to this group, setgid.
    pub fs_group: Option<u32>,
}

/// A pod's `restartPolicy`: which exited containers the kubelet starts again. It applies to
/// the main containers and the classic init containers; native sidecars always restart.
/// <https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#restart-policy>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    /// Every exit, whatever its code.
    Always,
    /// Only a non-zero exit.
    OnFailure,
    /// None: the container's exit is final.
    Never,
}

impl RestartPolicy {
    /// Whether a container that exited with `code` (None: killed by a signal) restarts.
    pub fn restarts(self, code: Option<i32>) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != Some(0),
            RestartPolicy::Never => false,
        }
    }
}

/// One volume on the host.
#[derive(Debug)]
pub(crate) struct VolumePlan {
    pub name: String,
    pub host: PathBuf,
    /// An `emptyDir` the runner creates (a `hostPath` is used as it is).
    pub empty_dir: bool,
    /// An `emptyDir` with `medium: Memory`: the runner mounts a tmpfs on it ([`Tmpfs`]).
    pub tmpfs: Option<Tmpfs>,
    /// A disk-backed `emptyDir` with a `sizeLimit`: a plain directory whose usage the
    /// eviction monitor measures ([`super::eviction`]).
    pub size_limit: Option<SizeLimit>,
    /// Some container mounts it `Bidirectional`: the host directory is made a shared mount.
    pub shared: bool,
}

/// The tmpfs of an `emptyDir` with `medium: Memory`: "the kubelet mounts a tmpfs
/// (RAM-backed filesystem)", sized by `sizeLimit` when there is one
/// (<https://kubernetes.io/docs/concepts/storage/volumes/#emptydir>), so a write past the
/// limit fails with ENOSPC, as here. A disk-backed `emptyDir` is never a tmpfs: its
/// `sizeLimit` is a [`SizeLimit`] that the kubelet enforces by evicting the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tmpfs {
    /// `sizeLimit` in bytes; None: the tmpfs's default (half the machine's memory).
    pub size: Option<u64>,
}

/// The `sizeLimit` of a disk-backed `emptyDir`: the writes are not limited, the kubelet's
/// eviction manager evicts the pod once the volume's usage passes it
/// ([`super::eviction`] cites the source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SizeLimit {
    /// The limit in bytes.
    pub bytes: u64,
    /// The quantity as the API server would print it (`resource.Quantity.String()`, its
    /// canonical form: `4096Ki` is `4Mi`), for the eviction's message.
    pub shown: String,
}

/// Where a container sits in the pod's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A classic init container: must exit 0 before the next one starts.
    Init,
    /// An init container with `restartPolicy: Always`.
    Sidecar,
    /// A main container.
    Main,
}

/// One container ready to spawn.
#[derive(Debug)]
pub(crate) struct ContainerPlan {
    pub name: String,
    pub role: Role,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    /// Sorted so that a parent mount path comes before the paths under it.
    pub mounts: Vec<MountPlan>,
    pub termination_path: String,
    pub startup_probe: Option<ProbePlan>,
    /// The image mode: run from an image with runc.
    pub oci: Option<OciPlan>,
}

/// A container run from an OCI image.
#[derive(Debug, Clone)]
pub(crate) struct OciPlan {
    /// The image's unpacked root file system (the overlay's lower layer).
    pub rootfs: PathBuf,
    /// The pod's name.
    pub hostname: String,
    /// Its security, or why the kubelet would not create it.
    pub security: Result<Security, ConfigError>,
}

impl ContainerPlan {
    /// Whether any mount is `Bidirectional` (the container then keeps the host's propagation).
    pub fn bidirectional(&self) -> bool {
        self.mounts
            .iter()
            .any(|m| m.propagation == Propagation::Bidirectional)
    }
}

/// `mountPropagation` of a volume mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// `None` (the default): no mount events either way.
    Private,
    /// Mounts made later on the host side (or by a `Bidirectional` container) appear here.
    HostToContainer,
    /// Mounts made here appear on the host side and in `HostToContainer` mounts.
    Bidirectional,
}

/// One bind mount of a container.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// Host path (the volume directory, or a path under it for `subPath`).
    pub source: PathBuf,
    /// `mountPath`, in the container's view.
    pub target: String,
    pub read_only: bool,
    pub propagation: Propagation,
}

/// An exec startup probe.
#[derive(Debug, Clone)]
pub(crate) struct ProbePlan {
    pub command: Vec<String>,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

fn invalid(what: impl Into<String>) -> PodError {
    PodError::Unsupported { what: what.into() }
}

/// Turns a pod into a plan.
pub(crate) fn plan(pod: &Pod, settings: &Settings<'_>) -> Result<Plan, PodError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| invalid("the pod has no spec"))?;
    let mut volumes = Vec::new();
    for v in spec.volumes.iter().flatten() {
        volumes.push(volume(v, settings.workdir)?);
    }
    let mut containers = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        let role = match c.restart_policy.as_deref() {
            None => Role::Init,
            Some("Always") => Role::Sidecar,
            Some(other) => {
                return Err(invalid(format!(
                    "init container {:?}: restartPolicy {other:?} (only Always, or none)",
                    c.name
                )))
            }
        };
        containers.push(container(pod, c, role, &mut volumes, settings)?);
    }
    for c in &spec.containers {
        containers.push(container(pod, c, Role::Main, &mut volumes, settings)?);
    }
    if !containers.iter().any(|c| c.role == Role::Main) {
        return Err(invalid("the pod has no containers"));
    }
    let mut names = std::collections::HashSet::new();
    for c in &containers {
        if !names.insert(c.name.as_str()) {
            return Err(invalid(format!("two containers are named {:?}", c.name)));
        }
    }
    let grace = settings.grace.unwrap_or_else(|| {
        let secs = spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECS);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    });
    let restart_policy = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => {
            return Err(invalid(format!(
                "restartPolicy {other:?}: use Always, OnFailure or Never"
            )))
        }
    };
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    Ok(Plan {
        containers,
        volumes,
        grace,
        restart_policy,
        fs_group,
    })
}

fn volume(v: &Volume, workdir: &Path) -> Result<VolumePlan, PodError> {
    if let Some(hp) = &v.host_path {
        return Ok(VolumePlan {
            name: v.name.clone(),
            host: PathBuf::from(&hp.path),
            empty_dir: false,
            tmpfs: None,
            size_limit: None,
            shared: false,
        });
    }
    // A volume with no source at all is an emptyDir (the API server's default).
    let other = serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .unwrap_or_default()
        .into_iter()
        .find(|k| k != "name" && k != "emptyDir");
    if let Some(kind) = other {
        return Err(invalid(format!(
            "volume {:?} is of type {kind}; the runner supports emptyDir and hostPath",
            v.name
        )));
    }
    let (mut tmpfs, mut size_limit) = (None, None);
    if let Some(e) = &v.empty_dir {
        let memory = match e.medium.as_deref() {
            None | Some("") => false,
            Some("Memory") => true,
            Some(other) => {
                let what = format!("volume {:?}: emptyDir medium {other:?}", v.name);
                return Err(invalid(format!(
                    "{what}; the runner supports \"\" and Memory"
                )));
            }
        };
        let limit = e
            .size_limit
            .as_ref()
            .map(|q| {
                quantity_bytes(&q.0)
                    .map(|bytes| SizeLimit {
                        bytes,
                        shown: canonical_quantity(&q.0),
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "volume {:?}: sizeLimit {:?} is not a quantity (e.g. 4Mi, 100M, 1Gi)",
                            v.name, q.0
                        ))
                    })
            })
            .transpose()?;
        if memory {
            tmpfs = Some(Tmpfs {
                size: limit.map(|l| l.bytes),
            });
        } else {
            // A zero limit is no limit, as the kubelet's `size.Sign() == 1` test has it.
            size_limit = limit.filter(|l| l.bytes > 0);
        }
    }
    Ok(VolumePlan {
        name: v.name.clone(),
        host: workdir.join("volumes").join(&v.name),
        empty_dir: true,
        tmpfs,
        size_limit,
        shared: false,
    })
}

/// The bytes of a Kubernetes quantity (`4Mi`, `100M`, `1.5Gi`, `1e6`, `4096`), rounded up
/// to a whole byte; None if it is not one, or is negative.
/// <https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/>
pub(crate) fn quantity_bytes(q: &str) -> Option<u64> {
    let bytes = quantity_value(q)?.ceil();
    // An f64 below 2^64 converts exactly to its integer part here (it is already whole).
    (bytes.is_finite() && (0.0..1.8e19).contains(&bytes)).then_some(bytes as u64)
}

/// A quantity's number and suffix (`4` and `Mi`).
fn quantity_parts(q: &str) -> (&str, &str) {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    q.split_at(split)
}

/// The exact value of a quantity, None if it is not one.
fn quantity_value(q: &str) -> Option<f64> {
    let (number, suffix) = quantity_parts(q);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// A quantity of whole bytes in Kubernetes' canonical form (`resource.Quantity.String()`):
/// the format of its suffix kept (binary `Ki`..`Ei`, decimal `k`..`E`, or an `e`
/// exponent) with the largest suffix that leaves a whole number, so `4096Ki` is `4Mi`,
/// `1000M` is `1G`, `0.5Ki` is `512` (a binary value under 1Ki is shown as decimal).
/// Anything else (a fraction of a byte) is returned as written.
/// <https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/>
pub(crate) fn canonical_quantity(q: &str) -> String {
    let (_, suffix) = quantity_parts(q);
    let whole = quantity_value(q).filter(|v| v.fract() == 0.0);
    let Some(bytes) = whole.and_then(|_| quantity_bytes(q)) else {
        return q.trim().to_string();
    };
    let largest = |base: u64| {
        let mut k = 0;
        while k < 6 && bytes != 0 && bytes % base.pow(k + 1) == 0 {
            k += 1;
        }
        (bytes / base.pow(k), k as usize)
    };
    if suffix.ends_with('i') && bytes >= 1024 {
        let (n, k) = largest(1024);
        return format!("{n}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k]);
    }
    let (n, k) = largest(1000);
    if suffix.starts_with(['e', 'E']) {
        return if k == 0 {
            n.to_string()
        } else {
            format!("{n}e{}", 3 * k)
        };
    }
    format!("{n}{}", ["", "k", "M", "G", "T", "P", "E"][k])
}

fn container(
    pod: &Pod,
    c: &Container,
    role: Role,
    volumes: &mut [VolumePlan],
    settings: &Settings<'_>,
) -> Result<ContainerPlan, PodError> {
    let name = &c.name;
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(invalid(format!(
            "container {name:?}: envFrom is not supported"
        )));
    }
    let image_name = c.image.as_deref().unwrap_or_default();
    let oci = settings.oci.get(image_name);
    let kube_env = environment(pod, c, settings.env, oci.is_none())?;
    let lookup: HashMap<&str, &str> = kube_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expand_all =
        |v: &[String]| -> Vec<String> { v.iter().map(|s| expand(s, &lookup)).collect() };

    let command = c
        .command
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| expand_all(c));
    let args = c
        .args
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(|a| expand_all(a));
    let argv = match oci {
        Some(image) => image_argv(image, command, args),
        None => {
            let mut argv = match command {
                Some(cmd) => cmd,
                None => settings.images.get(image_name).cloned().ok_or_else(|| {
                    invalid(format!(
                        "container {name:?} has no command and image {image_name:?} has no entrypoint registered (PodRunner::image, or pod-run --image {image_name}=PATH)"
                    ))
                })?,
            };
            argv.extend(args.unwrap_or_default());
            argv
        }
    };
    if argv.is_empty() {
        return Err(invalid(format!(
            "container {name:?}: empty command (no command, args, nor the image's Entrypoint or Cmd)"
        )));
    }
    // The image's variables come first; the container's (and the runner's) override them.
    let env = match oci {
        Some(image) => {
            let mut all = image.env.clone();
            if !all.iter().any(|(k, _)| k == "PATH") {
                all.insert(0, ("PATH".into(), DEFAULT_IMAGE_PATH.into()));
            }
            for (k, v) in kube_env.iter().cloned() {
                match all.iter_mut().find(|(key, _)| *key == k) {
                    Some(e) => e.1 = v,
                    None => all.push((k, v)),
                }
            }
            all
        }
        None => kube_env.clone(),
    };

    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let vol = volumes
            .iter_mut()
            .find(|v| v.name == m.name)
            .ok_or_else(|| {
                invalid(format!(
                    "container {name:?} mounts volume {:?}, which the pod does not declare",
                    m.name
                ))
            })?;
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") => Propagation::Private,
            Some("HostToContainer") => Propagation::HostToContainer,
            Some("Bidirectional") => {
                vol.shared = true;
                Propagation::Bidirectional
            }
            Some(other) => {
                return Err(invalid(format!(
                    "container {name:?}: mountPropagation {other:?}"
                )))
            }
        };
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Some(e)) if !e.is_empty() => expand(e, &lookup),
            _ => String::new(),
        };
        let sub = Path::new(&sub);
        if sub
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(invalid(format!(
                "container {name:?}: subPath {:?} must be a relative path without '..'",
                sub.display()
            )));
        }
        if !m.mount_path.starts_with('/') {
            return Err(invalid(format!(
                "container {name:?}: mountPath {:?} is not absolute",
                m.mount_path
            )));
        }
        mounts.push(MountPlan {
            source: vol.host.join(sub),
            target: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
            propagation,
        });
    }
    mounts.sort_by_key(|m| Path::new(&m.target).components().count());

    let startup_probe = c
        .startup_probe
        .as_ref()
        .map(|p| probe(name, p))
        .transpose()?;

    Ok(ContainerPlan {
        name: name.clone(),
        role,
        argv,
        working_dir: c
            .working_dir
            .clone()
            .or_else(|| oci.map(|i| i.working_dir.clone()))
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        mounts,
        termination_path: c
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_TERMINATION_PATH.into()),
        startup_probe,
        env,
        oci: oci.map(|image| OciPlan {
            rootfs: image.rootfs.clone(),
            hostname: pod.metadata.name.clone().unwrap_or_default(),
            security: security::resolve(pod, c, image),
        }),
    })
}

/// The argv of a container from an image, as the kubelet makes it: "If you supply a
/// `command` but no `args` for a Container, only the supplied `command` is used. The
/// default EntryPoint and the default Cmd defined in the Docker image are ignored. If you
/// supply only `args` for a Container, the default Entrypoint defined in the Docker image
/// is run with the `args` that you supplied."
/// <https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/#notes>
fn image_argv(
    image: &Image,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
) -> Vec<String> {
    match (command, args) {
        (Some(mut cmd), args) => {
            cmd.extend(args.unwrap_or_default());
            cmd
        }
        (None, Some(args)) => [image.entrypoint.clone(), args].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    }
}

fn probe(container: &str, p: &Probe) -> Result<ProbePlan, PodError> {
    let command = p
        .exec
        .as_ref()
        .and_then(|e| e.command.clone())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            invalid(format!(
                "container {container:?}: only exec startup probes are supported"
            ))
        })?;
    let secs = |v: Option<i32>, default: u64| {
        Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
    };
    Ok(ProbePlan {
        command,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_millis(100)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_millis(100)),
        failure_threshold: p
            .failure_threshold
            .and_then(|f| u32::try_from(f).ok())
            .unwrap_or(3)
            .max(1),
    })
}

/// The container's environment: `PATH` from the runner (or the host), the runner's
/// variables, then the container's, each `$(VAR)`-expanded against those before it.
fn environment(
    pod: &Pod,
    c: &Container,
    runner: &[(String, String)],
    host_path: bool,
) -> Result<Vec<(String, String)>, PodError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: String| match env
        .iter_mut()
        .find(|(key, _)| key == k)
    {
        Some(e) => e.1 = v,
        None => env.push((k.to_string(), v)),
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    if host_path {
        set(
            &mut env,
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        );
    }
    set(&mut env, "HOSTNAME", pod_name);
    for (k, v) in runner {
        set(&mut env, k, v.clone());
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                let field = from.field_ref.as_ref().ok_or_else(|| {
                    invalid(format!(
                        "container {:?}, env {:?}: only valueFrom.fieldRef is supported",
                        c.name, e.name
                    ))
                })?;
                field_ref(pod, &field.field_path).ok_or_else(|| {
                    invalid(format!(
                        "container {:?}, env {:?}: fieldRef {:?} (supported: metadata.name, metadata.namespace, metadata.labels['k'], metadata.annotations['k'])",
                        c.name, e.name, field.field_path
                    ))
                })?
            }
            (Some(v), None) => {
                let lookup: HashMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(v, &lookup)
            }
            (None, None) => String::new(),
        };
        set(&mut env, &e.name, value);
    }
    Ok(env)
}

/// The value of a `fieldRef` path, `None` if the path is not supported. A missing label
/// or annotation is the empty string, as in Kubernetes.
fn field_ref(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    match path {
        "metadata.name" => return Some(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => {
            return Some(meta.namespace.clone().unwrap_or_else(|| "default".into()))
        }
        _ => {}
    }
    let keyed = |prefix: &str| -> Option<String> {
        let rest = path
            .strip_prefix(prefix)?
            .strip_prefix('[')?
            .strip_suffix(']')?;
        let key = rest
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))?;
        Some(key.to_string())
    };
    if let Some(k) = keyed("metadata.labels") {
        return Some(
            meta.labels
                .as_ref()
                .and_then(|m| m.get(&k).cloned())
                .unwrap_or_default(),
        );
    }
    if let Some(k) = keyed("metadata.annotations") {
        return Some(
            meta.annotations
                .as_ref()
                .and_then(|m| m.get(&k).cloned())
                .unwrap_or_default(),
        );
    }
    None
}

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes the value of NAME when it is defined
/// and stays as written otherwise; `$$` is a literal `$`; any other `$` is kept.
pub(crate) fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<&'static str, &'static str> {
        HashMap::from([("A", "1"), ("B", "two")])
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let v = vars();
        assert_eq!(expand("$(A)-$(B)", &v), "1-two");
        assert_eq!(expand("$(C)", &v), "$(C)");
        assert_eq!(expand("$$(A)", &v), "$(A)");
        assert_eq!(expand("$$$(A)", &v), "$1");
        assert_eq!(expand("a$b", &v), "a$b");
        assert_eq!(expand("$(A", &v), "$(A");
        assert_eq!(expand("end$", &v), "end$");
        assert_eq!(expand("", &v), "");
    }

    #[test]
    fn command_and_args_over_the_images_entrypoint_and_cmd() {
        let image = Image {
            rootfs: "/x".into(),
            entrypoint: vec!["/e".into()],
            cmd: vec!["c".into()],
            env: vec![],
            user: String::new(),
            working_dir: String::new(),
            passwd: vec![],
            groups: vec![],
        };
        let v = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(image_argv(&image, None, None), ["/e", "c"]);
        assert_eq!(image_argv(&image, None, v(&["a"])), ["/e", "a"]);
        assert_eq!(image_argv(&image, v(&["/m"]), None), ["/m"]);
        assert_eq!(image_argv(&image, v(&["/m"]), v(&["a"])), ["/m", "a"]);
    }

    #[test]
    fn field_refs() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"app": "x"}, "annotations": {"a.b/c": "d"}},
            "spec": {"containers": []}
        }))
        .unwrap();
        assert_eq!(field_ref(&pod, "metadata.name").as_deref(), Some("p"));
        assert_eq!(
            field_ref(&pod, "metadata.namespace").as_deref(),
            Some("default")
        );
        assert_eq!(
            field_ref(&pod, "metadata.labels['app']").as_deref(),
            Some("x")
        );
        assert_eq!(
            field_ref(&pod, "metadata.annotations['a.b/c']").as_deref(),
            Some("d")
        );
        assert_eq!(
            field_ref(&pod, "metadata.labels['none']").as_deref(),
            Some("")
        );
        assert_eq!(field_ref(&pod, "spec.nodeName"), None);
    }

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("4Mi"), Some(4 << 20));
        assert_eq!(quantity_bytes("100M"), Some(100_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("1e6"), Some(1_000_000));
        assert_eq!(quantity_bytes("4096"), Some(4096));
        assert_eq!(quantity_bytes("1500m"), Some(2));
        assert_eq!(quantity_bytes("2Ki"), Some(2048));
        for bad in ["", "Mi", "4 Mi", "4MB", "-1", "x"] {
            assert_eq!(quantity_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn canonical_quantities_as_the_api_server_prints_them() {
        for (written, shown) in [
            ("4Mi", "4Mi"),
            ("4096Ki", "4Mi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("1000M", "1G"),
            ("100M", "100M"),
            ("4096", "4096"),
            ("1e6", "1e6"),
            ("1500m", "1500m"),
        ] {
            assert_eq!(canonical_quantity(written), shown, "{written}");
        }
    }

    #[test]
    fn only_a_memory_empty_dir_is_a_tmpfs_a_disk_one_has_a_measured_limit() {
        let volume_of = |empty_dir: serde_json::Value| {
            let v: Volume =
                serde_json::from_value(serde_json::json!({"name": "v", "emptyDir": empty_dir}))
                    .unwrap();
            volume(&v, Path::new("/w"))
        };
        let both = |e| {
            let v = volume_of(e).unwrap();
            (v.tmpfs, v.size_limit)
        };
        assert_eq!(both(serde_json::json!({})), (None, None));
        assert_eq!(
            both(serde_json::json!({"medium": "Memory", "sizeLimit": "4Mi"})),
            (
                Some(Tmpfs {
                    size: Some(4 << 20)
                }),
                None
            )
        );
        assert_eq!(
            both(serde_json::json!({"medium": "Memory"})),
            (Some(Tmpfs { size: None }), None)
        );
        assert_eq!(
            both(serde_json::json!({"sizeLimit": "1000M"})),
            (
                None,
                Some(SizeLimit {
                    bytes: 1_000_000_000,
                    shown: "1G".into()
                })
            )
        );
        assert_eq!(both(serde_json::json!({"sizeLimit": "0"})), (None, None));
        let err = volume_of(serde_json::json!({"sizeLimit": "lots"})).unwrap_err();
        assert!(err.to_string().contains("\"lots\""), "{err}");
        let err = volume_of(serde_json::json!({"medium": "HugePages"})).unwrap_err();
        assert!(err.to_string().contains("HugePages"), "{err}");
    }
}
