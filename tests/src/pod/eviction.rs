//! The kubelet's eviction of a pod whose disk-backed `emptyDir` has grown past its
//! `sizeLimit`. The writes themselves are never limited; the kubelet's eviction manager
//! measures each volume's usage at every pass of its loop and, once a volume's usage is
//! above its limit, evicts the pod: every container is stopped with a grace period of one
//! second, whatever the pod asks, and the pod ends Failed with the reason `Evicted` and a
//! message naming the volume and the limit. The kubelet's sources, which this follows:
//!
//! - the decision, `emptyDirLimitEviction` in
//!   <https://github.com/kubernetes/kubernetes/blob/master/pkg/kubelet/eviction/eviction_manager.go>:
//!   `used.Cmp(*size) > 0` (strictly above; a zero `sizeLimit` is none), then
//!   `evictPod(pod, immediateEvictionGracePeriodSeconds, fmt.Sprintf(emptyDirMessageFmt,
//!   name, size.String()))`, where `immediateEvictionGracePeriodSeconds = 1` and `evictPod`
//!   sets the status's `Phase = PodFailed`, `Reason = "Evicted"`, `Message`;
//! - the message, `emptyDirMessageFmt = "Usage of EmptyDir volume %q exceeds the limit %q. "`
//!   in `pkg/kubelet/eviction/helpers.go` (with its trailing space);
//! - the grace period: `killContainer` in `pkg/kubelet/kuberuntime/kuberuntime_container.go`
//!   applies a `gracePeriodOverride` after the two-second minimum, so the eviction's one
//!   second is what each container gets between SIGTERM and SIGKILL;
//! - the period: `evictionMonitoringPeriod = time.Second * 10` in `pkg/kubelet/kubelet.go`,
//!   a constant, not a flag (the docs name the cAdvisor `--housekeeping-interval`, also
//!   10 s: <https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/>).
//!   The volume's usage comes from the kubelet's volume statistics, which it recomputes in
//!   the background every `--volume-stats-agg-period` (1 minute by default), so a kubelet
//!   may notice up to a minute later than the runner, which measures at every pass;
//! - the measure, `DiskUsage` in `pkg/volume/util/fs/fs.go` (when no filesystem quota is
//!   set up, the default): a walk of the tree that stays on the volume's device, counts a
//!   hard-linked inode once and adds `st_blocks * 512`, so a sparse file counts only the
//!   blocks it has;
//! - what is measured: "emptyDir volumes, except tmpfs emptyDir volumes"
//!   (<https://kubernetes.io/docs/concepts/storage/ephemeral-storage/>): a memory-backed
//!   emptyDir is a tmpfs of its `sizeLimit`, where the writer sees ENOSPC instead.
//!
//! [`decide`] is the pure decision; [`usage`] the measure; [`Monitor`] runs a pass when
//! one is due ([`super::PodRunner::eviction_period`] sets the period).

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::plan::VolumePlan;

/// The kubelet's `evictionMonitoringPeriod`.
pub(crate) const MONITORING_PERIOD: Duration = Duration::from_secs(10);
/// The kubelet's `immediateEvictionGracePeriodSeconds`, every container's grace period when
/// it evicts a pod for its local storage.
pub(crate) const GRACE: Duration = Duration::from_secs(1);
/// The pod status's reason for an eviction (`Reason` in the eviction manager).
pub(crate) const REASON: &str = "Evicted";

/// Why the kubelet evicted the pod: the pod status's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Eviction {
    pub reason: String,
    pub message: String,
}

/// The eviction due for a volume named `volume` that uses `used` bytes, under a limit of
/// `limit` bytes printed as `shown`; None while it is not above the limit.
pub(crate) fn decide(volume: &str, used: u64, limit: u64, shown: &str) -> Option<Eviction> {
    (limit > 0 && used > limit).then(|| Eviction {
        reason: REASON.into(),
        message: format!("Usage of EmptyDir volume {volume:?} exceeds the limit {shown:?}. "),
    })
}

/// The bytes a directory tree uses on its device, as the kubelet's `DiskUsage` counts them:
/// `st_blocks * 512` of every entry (the directory itself included) on the same device as
/// `dir`, a hard-linked inode once, symbolic links not followed, entries that vanish during
/// the walk skipped.
pub(crate) fn usage(dir: &Path) -> std::io::Result<u64> {
    let top = std::fs::symlink_metadata(dir)?;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.dev() != top.dev() || (meta.nlink() > 1 && !seen.insert(meta.ino())) {
            continue;
        }
        total = total.saturating_add(meta.blocks().saturating_mul(512));
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                match entry {
                    Ok(entry) => todo.push(entry.path()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(total)
}

/// A disk-backed emptyDir with a `sizeLimit`.
#[derive(Debug)]
struct Watched {
    name: String,
    dir: PathBuf,
    limit: u64,
    shown: String,
}

/// The eviction manager of one pod: a pass every period, from one period after the start.
#[derive(Debug)]
pub(crate) struct Monitor {
    watched: Vec<Watched>,
    period: Duration,
    next: Instant,
    /// The runner's own log (`<workdir>/logs/kubelet.log`), for a volume it cannot measure.
    log: PathBuf,
}

impl Monitor {
    /// Watches every disk-backed emptyDir of `volumes` that has a `sizeLimit`.
    pub fn new(volumes: &[VolumePlan], period: Duration, log: PathBuf) -> Self {
        let watched = volumes
            .iter()
            .filter_map(|v| {
                v.size_limit.as_ref().map(|l| Watched {
                    name: v.name.clone(),
                    dir: v.host.clone(),
                    limit: l.bytes,
                    shown: l.shown.clone(),
                })
            })
            .collect();
        Self {
            watched,
            period,
            next: Instant::now() + period,
            log,
        }
    }

    /// Runs a pass if one is due at `now`: the eviction if some volume is above its limit.
    /// A volume that cannot be measured is skipped for this pass (the kubelet then has no
    /// statistics for it either), and the error goes to the runner's log.
    pub fn poll(&mut self, now: Instant) -> Option<Eviction> {
        if self.watched.is_empty() || now < self.next {
            return None;
        }
        self.next = now + self.period;
        let mut failures = Vec::new();
        let eviction = self.watched.iter().find_map(|w| match usage(&w.dir) {
            Ok(used) => decide(&w.name, used, w.limit, &w.shown),
            Err(e) => {
                failures.push(format!(
                    "eviction manager: cannot measure emptyDir {:?} at {}: {e}\n",
                    w.name,
                    w.dir.display()
                ));
                None
            }
        });
        if !failures.is_empty() {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log);
            if let Ok(mut f) = log {
                // The log is for a person reading it afterwards; a failed write loses a line.
                let _ = f.write_all(failures.concat().as_bytes());
            }
        }
        eviction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_strictly_above_the_limit_with_the_kubelets_message() {
        assert_eq!(decide("raw", 4 << 20, 4 << 20, "4Mi"), None);
        assert_eq!(decide("raw", 1, 0, "0"), None);
        assert_eq!(
            decide("raw", (4 << 20) + 1, 4 << 20, "4Mi"),
            Some(Eviction {
                reason: "Evicted".into(),
                message: "Usage of EmptyDir volume \"raw\" exceeds the limit \"4Mi\". ".into()
            })
        );
    }

    #[test]
    fn usage_counts_blocks_once_per_inode_as_du_does() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1 << 20;
        let data = vec![7u8; mib];
        std::fs::write(dir.path().join("a"), &data).unwrap();
        std::fs::File::open(dir.path().join("a"))
            .unwrap()
            .sync_all()
            .unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        // 8 MiB long, no block written: du counts (almost) nothing for it.
        std::fs::File::create(dir.path().join("d/sparse"))
            .unwrap()
            .set_len(8 * mib as u64)
            .unwrap();
        let used = usage(dir.path()).unwrap();
        assert!(
            (mib as u64..2 * mib as u64).contains(&used),
            "{used} bytes: the data once, no hole, no second link"
        );
        assert!(usage(&dir.path().join("none")).is_err());
    }
}
