//! The image mode's container runtime: each run of a container gets a fresh overlay over
//! its image's unpacked root file system (`<workdir>/containers/<name>-<run>/`) and an OCI
//! runtime spec written there, and runs as `runc run` in the foreground, so the runner's
//! process is runc, which forwards signals to the container's PID 1 and exits with its
//! code. The spec is what containerd's CRI plugin writes for a kubelet, simplified:
//!
//! - namespaces: mount, PID, IPC, UTS (hostname = the pod's name); NOT the network: every
//!   container is in the host's network namespace, so loopback is shared as in a pod (and
//!   with the host, unlike a pod).
//! - the runtime's default mounts (`/proc`, `/dev` tmpfs, `devpts`, `/dev/shm`, `mqueue`,
//!   `/sys` read-only, cgroups read-only) and masked and read-only `/proc` paths; then each
//!   volume mount as an `rbind` (`ro` for `readOnly`, `rprivate`, `rslave` for
//!   `HostToContainer`, `rshared` for `Bidirectional`, which also makes the root's
//!   propagation `rshared`, as containerd does) and the termination message file.
//! - `/etc/hosts` as the kubelet manages it (localhost and the pod's name); no
//!   `/etc/resolv.conf` (no DNS: nothing may leave the machine).
//! - privileged: every capability, every device allowed in the device cgroup, `/dev/fuse`
//!   created, `/sys` read-write, no masked paths.
//! - the "started" marker is written by a `poststart` hook (run by runc on the host after
//!   the container's process has started).
//! - probes run as `runc exec` (the container's user, environment and capabilities).
//! - no resources (cgroup limits), no seccomp filter, no AppArmor, no rlimits (the
//!   runner's own are inherited), no user namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::{json, Value};

use super::mounts::quote;
use super::plan::{ContainerPlan, OciPlan, Propagation};
use super::security::{Security, ALL_CAPS};
use super::PodError;

/// One run's bundle: its directory (config.json) and the overlay mounted at `rootfs`.
#[derive(Debug)]
pub(crate) struct Bundle {
    pub dir: PathBuf,
    pub id: String,
    rootfs: PathBuf,
    mounted: bool,
}

impl Bundle {
    /// A fresh overlay over the image's root file system, and the runtime spec.
    pub fn prepare(
        dir: PathBuf,
        id: String,
        c: &ContainerPlan,
        oci: &OciPlan,
        security: &Security,
        files: &SpecFiles<'_>,
    ) -> Result<Bundle, PodError> {
        let _ = std::fs::remove_dir_all(&dir);
        let io = |what: &str, p: &Path, e| {
            PodError::io(
                format!("container {:?}: cannot {what} {}", c.name, p.display()),
                e,
            )
        };
        let rootfs = dir.join("rootfs");
        for d in [dir.join("upper"), dir.join("work"), rootfs.clone()] {
            std::fs::create_dir_all(&d).map_err(|e| io("create", &d, e))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            oci.rootfs.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| io("mount an overlay at", &rootfs, e.into()))?;
        let bundle = Bundle {
            dir,
            id,
            rootfs,
            mounted: true,
        };
        let config = spec(c, oci, security, files);
        let path = bundle.dir.join("config.json");
        std::fs::write(&path, config.to_string()).map_err(|e| io("write", &path, e))?;
        Ok(bundle)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.rootfs, MntFlags::MNT_DETACH);
            self.mounted = false;
        }
    }
}

/// What a spec takes from the host.
pub(crate) struct SpecFiles<'a> {
    pub termination: &'a Path,
    pub marker: &'a Path,
    pub sh: &'a Path,
    /// The pod's `/etc/hosts` ([`hosts_file`]).
    pub hosts: &'a Path,
    /// The runner's bounding set ([`bounding_set`]): a privileged container gets these
    /// capabilities, as containerd gives it those of the host.
    pub bounding: u64,
}

/// The kubelet-managed `/etc/hosts` of a pod, as the kubelet writes it for a pod without
/// `hostNetwork` (pkg/kubelet/kubelet_pods.go, managedHostsHeader and the default
/// entries), with the pod's name on 127.0.0.1 since the runner gives pods no IP of their
/// own. Images need it: without it, "localhost" does not resolve (glibc reads
/// /etc/hosts, then asks DNS).
pub(crate) fn hosts_file(pod_name: &str) -> String {
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n127.0.0.1\t{pod_name}\n"
    )
}

/// The runner's capability bounding set (`CapBnd` of /proc/self/status), all bits when it
/// cannot be read.
pub(crate) fn bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Runc's messages go to its own log file; those of a run that failed are appended to the
/// container's log.
pub(crate) fn log_file(root: &Path, id: &str) -> PathBuf {
    root.join(format!("{id}.log"))
}

/// `runc run` of a bundle, in the foreground.
pub(crate) fn run_command(runc: &Path, root: &Path, bundle: &Bundle) -> Command {
    let mut cmd = Command::new(runc);
    cmd.arg("--root")
        .arg(root)
        .arg("--log")
        .arg(log_file(root, &bundle.id))
        .args(["run", "--no-new-keyring", "--bundle"])
        .arg(&bundle.dir)
        .arg(&bundle.id);
    cmd
}

/// `runc exec` of a command in a running container.
pub(crate) fn exec_command(runc: &Path, root: &Path, id: &str, argv: &[String]) -> Command {
    let mut cmd = Command::new(runc);
    cmd.arg("--root").arg(root).arg("exec").arg(id).args(argv);
    cmd
}

/// `runc delete --force`: kills what is left of a container and removes its state.
pub(crate) fn delete(runc: &Path, root: &Path, id: &str) {
    let _ = Command::new(runc)
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn propagation(p: Propagation) -> &'static str {
    match p {
        Propagation::Private => "rprivate",
        Propagation::HostToContainer => "rslave",
        Propagation::Bidirectional => "rshared",
    }
}

/// The OCI runtime spec of one run. Pure.
pub(crate) fn spec(c: &ContainerPlan, oci: &OciPlan, s: &Security, files: &SpecFiles<'_>) -> Value {
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", if s.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &c.mounts {
        mounts.push(json!({
            "destination": m.target, "type": "bind", "source": m.source,
            "options": ["rbind", if m.read_only { "ro" } else { "rw" }, propagation(m.propagation)],
        }));
    }
    mounts.push(json!({
        "destination": "/etc/hosts", "type": "bind", "source": files.hosts,
        "options": ["rbind", "rw", "rprivate"],
    }));
    mounts.push(json!({
        "destination": c.termination_path, "type": "bind", "source": files.termination,
        "options": ["rbind", "rw", "rprivate"],
    }));
    let caps: Vec<&String> = s
        .capabilities
        .iter()
        .filter(|c| {
            !s.privileged
                || ALL_CAPS
                    .iter()
                    .position(|a| c.strip_prefix("CAP_") == Some(a))
                    .is_some_and(|bit| files.bounding & (1 << bit) != 0)
        })
        .collect();
    let mut linux = json!({
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
        "resources": {"devices": [{"allow": s.privileged, "access": "rwm"}]},
    });
    if c.bidirectional() {
        linux["rootfsPropagation"] = json!("rshared");
    } else if c
        .mounts
        .iter()
        .any(|m| m.propagation == Propagation::HostToContainer)
    {
        linux["rootfsPropagation"] = json!("rslave");
    }
    if s.privileged {
        linux["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                   "fileMode": 0o666, "uid": 0, "gid": 0}]);
    } else {
        // containerd's defaults.
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi"
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }
    let marker = format!(": > {}", quote(&files.marker.to_string_lossy()));
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": s.uid, "gid": s.gid, "additionalGids": s.additional_gids},
            "args": c.argv,
            "env": c.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "cwd": c.working_dir,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": s.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": s.read_only_root},
        "hostname": oci.hostname,
        "mounts": mounts,
        "hooks": {"poststart": [{"path": files.sh, "args": ["sh", "-c", marker]}]},
        "linux": linux,
    })
}
