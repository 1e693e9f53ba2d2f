//! Mount points: the mount table of this namespace (`/proc/self/mountinfo`: its fields
//! and octal escapes), the stale FUSE mounts a dead daemon leaves behind (detected and
//! detached), and the check every mount point passes before a mount
//! ([`check_mount_point`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `ENOTCONN`: what a FUSE mount answers once its daemon is gone.
const ENOTCONN: i32 = nix::errno::Errno::ENOTCONN as i32;

/// Undoes the octal escapes (`\040` for a space, `\011`, `\012`, `\134`) of a path in
/// `/proc/self/mountinfo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            d.iter()
                .all(|b| (b'0'..=b'7').contains(b))
                .then(|| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')))
                .and_then(|n| u8::try_from(n).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The mount points (5th field) listed in the text of a `mountinfo` file.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(unescape_mountinfo)
}

/// Whether `dir` (absolute) is a mount point according to the text of a `mountinfo` file.
fn listed_in(mountinfo: &str, dir: &Path) -> bool {
    mount_points(mountinfo).any(|p| p == dir)
}

/// Whether a mount point is a stale FUSE mount, left by a daemon that died: looking at it
/// (`stat`, then opening it as a directory) fails with `ENOTCONN` (`probe_errno`), and it is
/// a mount point (`listed`).
fn is_stale(probe_errno: Option<i32>, listed: bool) -> bool {
    listed && probe_errno == Some(ENOTCONN)
}

/// `dir` as an absolute path as `mountinfo` shows it: its parent resolved (symbolic links
/// included), its own name kept, since a stale mount cannot be resolved.
fn mountinfo_path(dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(absolute.clone()),
        _ => absolute,
    }
}

/// At most this many stale mounts stacked on one mount point are detached.
const MAX_STALE_MOUNTS: usize = 16;

/// Detaches the stale FUSE mounts at `dir` (ones whose daemon died, so that every access
/// fails with "Transport endpoint is not connected"); does nothing otherwise.
fn repair_stale_mounts(dir: &Path) -> Result<()> {
    for _ in 0..MAX_STALE_MOUNTS {
        if !repair_stale_mount(dir)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Detaches the top stale FUSE mount at `dir`, if there is one; tells whether it did.
fn repair_stale_mount(dir: &Path) -> Result<bool> {
    // Listing, not only `stat`: the kernel may answer `stat` of a dead mount's root from
    // its attribute cache, but opening the directory needs the daemon.
    let probe = match std::fs::metadata(dir).and_then(|_| std::fs::read_dir(dir)) {
        Ok(_) => return Ok(false),
        Err(e) => e.raw_os_error(),
    };
    if probe != Some(ENOTCONN) {
        return Ok(false);
    }
    let at = mountinfo_path(dir);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("read", "/proc/self/mountinfo"))?;
    if !is_stale(probe, listed_in(&mountinfo, &at)) {
        return Err(Error::MountPoint {
            path: dir.to_path_buf(),
            reason: "it answers \"Transport endpoint is not connected\" but is not a mount \
                     point of this mount namespace; unmount it where it was mounted"
                .to_string(),
        });
    }
    nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH).map_err(|errno| Error::Mount {
        op: "detach the stale mount (its daemon is gone) at",
        path: dir.to_path_buf(),
        source: std::io::Error::from(errno),
    })?;
    tracing::warn!(
        mount = %dir.display(),
        "found a stale mount left by a daemon that is gone: detached it"
    );
    Ok(true)
}

/// A mount point must be an existing, empty directory. A stale FUSE mount left there by a
/// daemon that died is detached first (with a warning); a live mount is judged like any
/// directory.
pub(crate) fn check_mount_point(dir: &Path) -> Result<()> {
    let refuse = |reason: &str| Error::MountPoint {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    repair_stale_mounts(dir)?;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse("it does not exist; create an empty directory first"))
        }
        Err(e) => return Err(Error::io("inspect", dir)(e)),
    };
    if !meta.is_dir() {
        return Err(refuse("it is not a directory"));
    }
    let mut entries = std::fs::read_dir(dir).map_err(Error::io("read directory", dir))?;
    if entries.next().is_some() {
        return Err(refuse(
            "it is not empty; mount on an empty directory so that no file is hidden",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_existing_empty_directory_is_a_mount_point() {
        let tmp = tempfile::tempdir().unwrap();
        check_mount_point(tmp.path()).unwrap();
        let missing = tmp.path().join("missing");
        let err = check_mount_point(&missing).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("missing"),
            "{err}"
        );
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = check_mount_point(&file).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        let err = check_mount_point(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a/b"), PathBuf::from("/a/b"));
        assert_eq!(unescape_mountinfo("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(
            unescape_mountinfo("/t\\011a\\012b\\134c"),
            PathBuf::from("/t\ta\nb\\c")
        );
        // Not an escape: kept as is.
        assert_eq!(unescape_mountinfo("/x\\9y\\"), PathBuf::from("/x\\9y\\"));
    }

    #[test]
    fn mount_points_are_the_fifth_field() {
        let info = "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    36 22 0:33 / /tmp/my\\040mnt ro,nosuid - fuse.datamon datamon ro\n\
                    \n\
                    short line\n";
        let points: Vec<_> = mount_points(info).collect();
        assert_eq!(points, [PathBuf::from("/"), PathBuf::from("/tmp/my mnt")]);
        assert!(listed_in(info, Path::new("/tmp/my mnt")));
        assert!(!listed_in(info, Path::new("/tmp/my")));
        assert!(!listed_in(info, Path::new("/tmp/my\\040mnt")));
    }

    #[test]
    fn only_an_unreachable_listed_mount_is_stale() {
        assert!(is_stale(Some(ENOTCONN), true));
        // A live mount (or any directory) answers.
        assert!(!is_stale(None, true));
        assert!(!is_stale(None, false));
        // Other failures are not ours to repair.
        assert!(!is_stale(Some(nix::errno::Errno::EACCES as i32), true));
        // Not a mount point here: nothing to unmount.
        assert!(!is_stale(Some(ENOTCONN), false));
    }

    #[test]
    fn a_directory_that_answers_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!repair_stale_mount(tmp.path()).unwrap());
        repair_stale_mounts(tmp.path()).unwrap();
        assert_eq!(
            mountinfo_path(tmp.path()),
            std::fs::canonicalize(tmp.path()).unwrap()
        );
    }
}
