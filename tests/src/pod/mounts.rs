//! Mounts: the host side (volume directories; a shared mount for a volume some container
//! mounts `Bidirectional`, removed when the pod ends) and the shell script that sets up a
//! container's private mount namespace before it execs the container's command.
//!
//! A container runs as `unshare --mount --propagation P -- sh -c SCRIPT sh ARGV...`:
//! `unshare` without `--fork` execs in place, so the process the runner spawned is the
//! container's main process. P is `slave` (no mount made inside leaks out) unless a mount
//! is `Bidirectional`: then P is `unchanged`, and the script turns the root mount and the
//! mounts holding each mount path into slaves (non-recursively) before binding, so that only
//! mounts made under the shared volume mount reach the host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::plan::{ContainerPlan, Propagation, Tmpfs, VolumePlan};
use super::PodError;

/// Absolute paths of the host tools the runner uses, resolved once from `PATH` so that a
/// container's own `PATH` cannot change them.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    pub unshare: PathBuf,
    pub nsenter: PathBuf,
    pub sh: PathBuf,
    pub mount: PathBuf,
    pub findmnt: PathBuf,
    pub mkdir: PathBuf,
    /// runc, when some container runs from an image.
    pub runc: Option<PathBuf>,
}

impl Tools {
    pub fn find(runc: bool) -> Result<Self, PodError> {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let find = |name: &str| -> Result<PathBuf, PodError> {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| PodError::MissingTool {
                    tool: name.to_string(),
                })
        };
        Ok(Self {
            unshare: find("unshare")?,
            nsenter: find("nsenter")?,
            sh: find("sh")?,
            mount: find("mount")?,
            findmnt: find("findmnt")?,
            mkdir: find("mkdir")?,
            runc: if runc {
                // Debian installs it in /usr/sbin, which a user's PATH may lack.
                Some(find("runc").or_else(|e| {
                    let p = PathBuf::from("/usr/sbin/runc");
                    if p.is_file() {
                        Ok(p)
                    } else {
                        Err(e)
                    }
                })?)
            } else {
                None
            },
        })
    }
}

/// The host-side mounts of a pod; dropping it detaches them (and whatever containers
/// mounted under them), so a failed or timed-out pod leaves no mount behind.
#[derive(Debug, Default)]
pub(crate) struct HostMounts {
    shared: Vec<PathBuf>,
    /// The tmpfs mounts of memory-backed emptyDirs ([`super::plan::Tmpfs`]), unmounted
    /// after `shared`.
    tmpfs: Vec<PathBuf>,
}

impl HostMounts {
    /// Creates the volume directories (an emptyDir 0777, as the kubelet makes it; with an
    /// `fsGroup`, given to that group and setgid, 02777; with `medium: Memory`, a tmpfs of
    /// its `sizeLimit` mounted on it, while a disk-backed one stays a plain directory
    /// whatever its `sizeLimit`), and makes each volume mounted `Bidirectional` by some
    /// container a shared mount of its own peer group.
    pub fn prepare(volumes: &[VolumePlan], fs_group: Option<u32>) -> Result<Self, PodError> {
        let mut me = Self::default();
        for v in volumes {
            if v.empty_dir {
                let io = |e| {
                    PodError::io(
                        format!("cannot create volume directory {}", v.host.display()),
                        e,
                    )
                };
                std::fs::create_dir_all(&v.host).map_err(io)?;
                if let Some(t) = &v.tmpfs {
                    mount_tmpfs(&v.host, t)?;
                    me.tmpfs.push(v.host.clone());
                }
                let mut mode = 0o777;
                if let Some(g) = fs_group {
                    std::os::unix::fs::chown(&v.host, None, Some(g)).map_err(io)?;
                    mode |= 0o2000;
                }
                std::fs::set_permissions(&v.host, std::fs::Permissions::from_mode(mode))
                    .map_err(io)?;
            }
            if v.shared {
                let p = &v.host;
                let none: Option<&str> = None;
                mount(Some(p), p, none, MsFlags::MS_BIND, none).map_err(|e| {
                    PodError::io(format!("cannot bind {} onto itself", p.display()), e.into())
                })?;
                me.shared.push(p.clone());
                for flag in [MsFlags::MS_PRIVATE, MsFlags::MS_SHARED] {
                    mount(none, p, none, flag, none).map_err(|e| {
                        PodError::io(
                            format!("cannot change the propagation of {}", p.display()),
                            e.into(),
                        )
                    })?;
                }
            }
        }
        Ok(me)
    }
}

/// Mounts a tmpfs of `t`'s size at `dir` (the kubelet's options for a memory-backed
/// emptyDir: `size=<bytes>`, no other limit).
fn mount_tmpfs(dir: &Path, t: &Tmpfs) -> Result<(), PodError> {
    let opts = t.size.map(|b| format!("size={b}"));
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        opts.as_deref(),
    )
    .map_err(|e| {
        PodError::io(
            format!(
                "cannot mount a tmpfs ({}) on the emptyDir {}",
                opts.as_deref().unwrap_or("default size"),
                dir.display()
            ),
            e.into(),
        )
    })
}

impl Drop for HostMounts {
    fn drop(&mut self) {
        for p in self.shared.drain(..).rev() {
            // Each detach removes the top mount at `p` with everything under it; a container
            // may have stacked mounts at `p` itself, so repeat until `p` is no mount point.
            for _ in 0..64 {
                if umount2(&p, MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
        }
        // A tmpfs that was also shared is gone already (the loop above detached every
        // mount at its path): then this fails, harmlessly.
        for p in self.tmpfs.drain(..).rev() {
            let _ = umount2(&p, MntFlags::MNT_DETACH);
        }
    }
}

/// Single-quotes a string for `sh`.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// The `unshare` propagation argument for a container.
pub(crate) fn unshare_propagation(c: &ContainerPlan) -> &'static str {
    if c.bidirectional() {
        "unchanged"
    } else {
        "slave"
    }
}

/// The script run by `sh -c` inside the container's new mount namespace: mounts, working
/// directory, the "started" marker, then `exec "$@"` (the container's argv).
pub(crate) fn container_script(
    c: &ContainerPlan,
    tools: &Tools,
    termination_file: &Path,
    started_marker: &Path,
) -> String {
    let mount = q(&tools.mount);
    let mkdir = q(&tools.mkdir);
    let findmnt = q(&tools.findmnt);
    let mut s = String::from("set -e\n");
    // Creates a mount point: a directory, or a file when the source is a file.
    let create = |s: &mut String, source_is_file: bool, target: &str| {
        let t = quote(target);
        if source_is_file {
            let parent = Path::new(target).parent().unwrap_or(Path::new("/"));
            s.push_str(&format!(
                "{mkdir} -p -- {}\n[ -e {t} ] || : > {t}\n",
                q(parent)
            ));
        } else {
            s.push_str(&format!("{mkdir} -p -- {t}\n"));
        }
    };
    if c.bidirectional() {
        // Everything stays as on the host, so a mount made under a shared host mount would
        // propagate to the host: make `/` and each mount that will hold one of our mount
        // points a slave first (not recursively: the shared volume mounts stay shared).
        s.push_str(&format!("{mount} --make-slave /\n"));
        for (target, is_file) in c
            .mounts
            .iter()
            .map(|m| (m.target.as_str(), m.source.is_file()))
            .chain([(c.termination_path.as_str(), true)])
        {
            create(&mut s, is_file, target);
            s.push_str(&format!(
                "{mount} --make-slave \"$({findmnt} -n -o TARGET -T {})\"\n",
                quote(target)
            ));
        }
    }
    for m in &c.mounts {
        let t = quote(&m.target);
        create(&mut s, m.source.is_file(), &m.target);
        s.push_str(&format!("{mount} --rbind -- {} {t}\n", q(&m.source)));
        if m.read_only {
            s.push_str(&format!("{mount} -o remount,bind,ro -- {t}\n"));
        }
        match m.propagation {
            Propagation::Private => s.push_str(&format!("{mount} --make-rprivate {t}\n")),
            Propagation::HostToContainer => s.push_str(&format!("{mount} --make-rslave {t}\n")),
            Propagation::Bidirectional => {}
        }
    }
    create(&mut s, true, &c.termination_path);
    s.push_str(&format!(
        "{mount} --bind -- {} {}\n",
        q(termination_file),
        quote(&c.termination_path)
    ));
    s.push_str(&format!("cd -- {}\n", quote(&c.working_dir)));
    s.push_str(&format!(": > {}\n", q(started_marker)));
    s.push_str("exec \"$@\"\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
