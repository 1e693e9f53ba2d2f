//! `bundle mount`: serves a bundle read-only through FUSE. The bundle and its file lists are
//! read before anything is mounted, so a missing repo, bundle or label fails cleanly; the
//! mount then serves until SIGTERM or SIGINT, and is unmounted before the command returns.
//!
//! [`tree`] builds the inodes, [`span`] cuts reads into leaves and [`prefetch`] decides how
//! far to read ahead (all three pure), [`cache`] keeps verified leaves in buffers recycled
//! by [`pool`] and optionally on disk by [`disk`], where [`whole`] also assembles whole
//! files for the kernel to read directly; [`fs`] answers the kernel.

pub mod cache;
pub mod disk;
pub mod fs;
pub mod pool;
pub mod prefetch;
pub mod span;
pub mod tree;
pub mod whole;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use fuser::{Config, MountOption, SessionACL};

use crate::bundle::BundleRef;
use crate::cafs::reader::BlobReader;
use crate::cafs::LeafSize;
use crate::error::{Error, Result};
use crate::runtime::signals::Termination;
use crate::stores::Stores;

/// How long the mount may take to answer its first request before the command gives up.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// How long unmounting may take.
const UNMOUNT_DEADLINE: Duration = Duration::from_secs(30);

/// Threads answering the kernel.
const SESSION_THREADS: usize = 4;

/// What to mount.
#[derive(Clone, Debug)]
pub struct MountRequest {
    /// Repo.
    pub repo: String,
    /// Which bundle.
    pub bundle: BundleRef,
    /// Mount point: an existing empty directory.
    pub mount: PathBuf,
    /// Let every user (not only the mounting one) use the mount (FUSE `allow_other`).
    pub allow_other: bool,
    /// Bytes of verified leaves kept in memory (cached and read ahead).
    pub cache_bytes: usize,
    /// Keep verified leaves on disk too, across mounts.
    pub disk_cache: Option<disk::DiskCacheConfig>,
    /// Who the mounted files and directories belong to.
    pub file_owner: FileOwner,
}

/// The user and group the mounted files and directories show; `None` is this process's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOwner {
    /// User id [default: this process's].
    pub uid: Option<u32>,
    /// Group id [default: this process's].
    pub gid: Option<u32>,
}

impl FileOwner {
    /// The user and group ids, this process's filling in those not given.
    pub fn ids(self) -> (u32, u32) {
        let (uid, gid) = process_owner();
        (self.uid.unwrap_or(uid), self.gid.unwrap_or(gid))
    }
}

/// Mounts the bundle, prints `mounted <DIR>` once the mount answers, and serves it until
/// SIGTERM or SIGINT (or until someone else unmounts it).
pub async fn mount(stores: &Stores, req: &MountRequest) -> Result<()> {
    let signals = Termination::catch()?;
    let mounted = Mounted::start(stores, req).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "mounted {}", mounted.dir.display())
            .and_then(|()| out.flush())
            .map_err(Error::io("write to", "standard output"))?;
    }
    match wait_for_end(&mounted.session, signals).await? {
        End::Signal(name) => {
            tracing::info!(mount = %mounted.dir.display(), "{name}: unmounting");
            mounted.unmount().await
        }
        End::Unmounted => {
            tracing::info!(mount = %mounted.dir.display(), "unmounted from outside: stopping");
            mounted.join().await
        }
    }
}

/// A bundle mounted and answering. Drop it only through [`Mounted::unmount`] or
/// [`Mounted::join`]; dropping it otherwise unmounts without a deadline.
pub struct Mounted {
    session: fuser::BackgroundSession,
    dir: PathBuf,
    /// The bundle served.
    pub bundle: crate::model::bundle::BundleDoc,
}

impl Mounted {
    /// Reads the bundle and its file lists, mounts it at `req.mount`, and returns once the
    /// mount has answered a first request. A missing repo, bundle or label fails before
    /// anything is mounted.
    pub async fn start(stores: &Stores, req: &MountRequest) -> Result<Self> {
        let doc = crate::bundle::resolve(stores, &req.repo, &req.bundle).await?;
        let leaf_size = LeafSize::new(doc.leaf_size)?;
        let entries = crate::bundle::entries(stores, &req.repo, &doc).await?;
        let files = entries.len();
        let tree = tree::Tree::build(entries)?;
        let dir = req.mount.clone();
        {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || check_mount_point(&dir)).await??;
        }
        // A cache directory that cannot be used fails before anything is mounted.
        let disk = match req.disk_cache.clone() {
            Some(config) => Some(
                tokio::task::spawn_blocking(move || disk::DiskCache::open(&config, leaf_size))
                    .await??,
            ),
            None => None,
        };
        let (uid, gid) = req.file_owner.ids();
        let owner = fs::Owner {
            uid,
            gid,
            time: SystemTime::from(doc.timestamp),
        };
        let filesystem = fs::BundleFs::new(
            tree,
            BlobReader::new(stores.blob.clone(), leaf_size),
            tokio::runtime::Handle::current(),
            owner,
            req.cache_bytes,
            disk,
        );
        let notifier = filesystem.notifier();
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("datamon".to_string()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        // Several threads, so that one slow leaf fetch does not stall every other request.
        config.n_threads = Some(SESSION_THREADS);
        config.acl = if req.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        if fusermount_available() {
            // fusermount3 stays behind and unmounts if this process dies (kill -9, OOM), so
            // the mount point never stays "Transport endpoint is not connected". It needs
            // the kernel's allow_other; fuser still answers only root and the owner.
            config.mount_options.push(MountOption::AutoUnmount);
            if !req.allow_other {
                config.acl = SessionACL::RootAndOwner;
            }
        } else {
            tracing::debug!(
                "no fusermount3 on PATH: no auto-unmount; a stale mount left by a dead \
                 process is repaired by the next mount"
            );
        }
        let session = {
            let target = dir.clone();
            tokio::task::spawn_blocking(move || fuser::spawn_mount(filesystem, &target, &config))
                .await?
                .map_err(|source| Error::Mount {
                    op: "mount the bundle on",
                    path: dir.clone(),
                    source,
                })?
        };
        // Cannot be set twice: this is the only place, and it runs once.
        let _ = notifier.set(session.notifier());
        // The first request through the mount proves it is served.
        let probe = {
            let dir = dir.clone();
            tokio::time::timeout(
                READY_DEADLINE,
                tokio::task::spawn_blocking(move || std::fs::metadata(&dir)),
            )
            .await
        };
        match probe {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(source))) => {
                let _ = tokio::task::spawn_blocking(move || session.umount_and_join()).await;
                return Err(Error::Mount {
                    op: "read the root of the mount",
                    path: dir,
                    source,
                });
            }
            Ok(Err(join)) => return Err(join.into()),
            Err(_) => {
                // Best effort: take the unresponsive mount out of the tree before failing.
                let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
                return Err(Error::Mount {
                    op: "get an answer from the mount",
                    path: dir,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {READY_DEADLINE:?}"),
                    ),
                });
            }
        }
        tracing::info!(
            repo = %req.repo,
            bundle = %doc.id,
            files,
            mount = %dir.display(),
            "mounted"
        );
        Ok(Self {
            session,
            dir,
            bundle: doc,
        })
    }

    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the file system stopped serving (unmounted from outside).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmounts (detaching it if busy) and waits for the session to stop.
    pub async fn unmount(self) -> Result<()> {
        unmount(self.session, &self.dir).await
    }

    /// Waits for a session that was unmounted from outside to stop.
    pub async fn join(self) -> Result<()> {
        join(self.session, &self.dir).await
    }
}

/// Waits for a session whose file system was unmounted to stop.
async fn join(session: fuser::BackgroundSession, dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    let joined = tokio::time::timeout(
        UNMOUNT_DEADLINE,
        tokio::task::spawn_blocking(move || session.join()),
    )
    .await;
    match joined {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(source))) => Err(Error::Mount {
            op: "serve",
            path: dir,
            source,
        }),
        Ok(Err(join)) => Err(join.into()),
        Err(_) => Err(Error::Mount {
            op: "stop serving",
            path: dir,
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the file system did not stop within {UNMOUNT_DEADLINE:?}"),
            ),
        }),
    }
}

/// Why serving ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// A signal asked for it: unmount.
    Signal(&'static str),
    /// Someone else unmounted the file system: nothing left to unmount.
    Unmounted,
}

/// Unmounts and waits for the session to stop. A mount still in use (an open file, a
/// working directory) is detached instead: it disappears from the tree at once, and the
/// files still open fail once this process exits.
async fn unmount(session: fuser::BackgroundSession, dir: &Path) -> Result<()> {
    let failed = |source| Error::Mount {
        op: "unmount",
        path: dir.to_path_buf(),
        source,
    };
    // Unmount directly first (as root): with auto-unmount, fuser only hands the unmount
    // to fusermount3 and would wait for a busy mount without knowing it is busy.
    let direct = {
        let dir = dir.to_path_buf();
        tokio::time::timeout(
            UNMOUNT_DEADLINE,
            tokio::task::spawn_blocking(move || {
                nix::mount::umount2(&dir, nix::mount::MntFlags::empty())
            }),
        )
        .await
    };
    match direct {
        Ok(Ok(Ok(()))) => {
            // The kernel ends the session: only its thread is left to wait for.
            join(session, dir).await?;
            tracing::info!(mount = %dir.display(), "unmounted");
            return Ok(());
        }
        Ok(Ok(Err(nix::errno::Errno::EBUSY))) => {
            nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|errno| failed(std::io::Error::from(errno)))?;
            tracing::warn!(
                mount = %dir.display(),
                "the mount was in use: detached it; files still open fail from now on"
            );
            // Not joined: the session serves the open files until this process exits.
            tokio::task::spawn_blocking(move || drop(session)).await?;
            return Ok(());
        }
        _ => {}
    }
    // Unmounted, or not ours to unmount directly (not root): fuser finishes the job.
    let unmounted = tokio::time::timeout(
        UNMOUNT_DEADLINE,
        tokio::task::spawn_blocking(move || session.umount_and_join()),
    )
    .await;
    match unmounted {
        Ok(Ok(Ok(()))) => {
            tracing::info!(mount = %dir.display(), "unmounted");
            Ok(())
        }
        Ok(Ok(Err(e))) if e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) => {
            nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|errno| failed(std::io::Error::from(errno)))?;
            tracing::warn!(
                mount = %dir.display(),
                "the mount was in use: detached it; files still open fail from now on"
            );
            Ok(())
        }
        Ok(Ok(Err(e))) => Err(failed(e)),
        Ok(Err(join)) => Err(join.into()),
        Err(_) => Err(failed(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the file system did not stop within {UNMOUNT_DEADLINE:?}"),
        ))),
    }
}

/// Waits for SIGTERM, SIGINT, or the end of the session (an unmount from outside).
async fn wait_for_end(session: &fuser::BackgroundSession, mut signals: Termination) -> Result<End> {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            name = signals.recv() => return Ok(End::Signal(name)),
            _ = tick.tick() => {
                if session.guard.is_finished() {
                    return Ok(End::Unmounted);
                }
            }
        }
    }
}

/// Whether fuser can mount through `fusermount3` (or `fusermount`), as auto-unmount
/// needs: `FUSERMOUNT_PATH`, else either name on `PATH`.
fn fusermount_available() -> bool {
    if let Some(path) = std::env::var_os("FUSERMOUNT_PATH") {
        return Path::new(&path).is_file();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            ["fusermount3", "fusermount"]
                .iter()
                .any(|name| dir.join(name).is_file())
        })
    })
}

/// The user and group of this process.
fn process_owner() -> (u32, u32) {
    (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
}

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
pub fn check_mount_point(dir: &Path) -> Result<()> {
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

/// A poisoned lock only means another thread panicked; the mount's caches and books stay
/// usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
    fn the_file_owner_defaults_to_this_process_per_id() {
        let (uid, gid) = process_owner();
        assert_eq!(FileOwner::default().ids(), (uid, gid));
        let only_uid = FileOwner {
            uid: Some(1234),
            gid: None,
        };
        assert_eq!(only_uid.ids(), (1234, gid));
        let both = FileOwner {
            uid: Some(1),
            gid: Some(2),
        };
        assert_eq!(both.ids(), (1, 2));
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
