//! A mount's life: [`Mounted::start`] reads the bundle and its file lists (so a missing
//! repo, bundle or label fails before anything is mounted; what they count is kept for
//! the caller's report, [`Mounted::files`] and [`Mounted::bytes`]), checks the mount
//! point, mounts the [`FuseFs`] and waits for its first answer; [`mount`] then serves
//! until SIGTERM or SIGINT (or an unmount from outside), and unmounts (detaching a mount
//! still in use) before it returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fuser::{Config, MountOption, SessionACL};

use super::disk;
use super::fs::{Owner, Setup};
use super::fuse::FuseFs;
use super::mountinfo::check_mount_point;
use super::tree::Tree;
use super::MountRequest;
use crate::cafs::reader::BlobReader;
use crate::cafs::LeafSize;
use crate::context::Stores;
use crate::error::{Error, Result};
use crate::signals::Termination;

/// How long the mount may take to answer its first request before the command gives up.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// How long unmounting may take.
const UNMOUNT_DEADLINE: Duration = Duration::from_secs(30);

/// Threads answering the kernel.
const SESSION_THREADS: usize = 4;

/// Mounts the bundle, prints `mounted <DIR>` once the mount answers, and serves it until
/// SIGTERM or SIGINT (or until someone else unmounts it).
pub(crate) async fn mount(stores: &Stores, req: &MountRequest) -> Result<()> {
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
pub(crate) struct Mounted {
    session: fuser::BackgroundSession,
    dir: PathBuf,
    /// The bundle served.
    pub bundle: crate::model::bundle::BundleDoc,
    /// Files in the bundle's file lists.
    files: u64,
    /// Bytes of those files.
    bytes: u64,
}

impl Mounted {
    /// Reads the bundle and its file lists, mounts it at `req.mount`, and returns once the
    /// mount has answered a first request. A missing repo, bundle or label fails before
    /// anything is mounted.
    pub async fn start(stores: &Stores, req: &MountRequest) -> Result<Self> {
        let doc = crate::bundle::resolve(stores, &req.repo, &req.bundle).await?;
        let leaf_size = LeafSize::new(doc.leaf_size)?;
        let entries = crate::bundle::entries(stores, &req.repo, &doc).await?;
        let files = entries.len() as u64;
        let bytes: u64 = entries.iter().map(|e| e.size).sum();
        let tree = Tree::build(entries)?;
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
        let owner = Owner {
            uid,
            gid,
            time: SystemTime::from(doc.timestamp),
        };
        let filesystem = FuseFs::new(Setup {
            tree,
            reader: BlobReader::new(stores.blob.clone(), leaf_size),
            runtime: tokio::runtime::Handle::current(),
            owner,
            memory_bytes: req.cache_bytes,
            disk,
        });
        let notifier = filesystem.notifier();
        let config = session_config(req.allow_other);
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
        let session = first_answer(session, &dir).await?;
        tracing::info!(
            repo = %req.repo,
            bundle = %doc.id,
            files,
            bytes,
            mount = %dir.display(),
            "mounted"
        );
        Ok(Self {
            session,
            dir,
            bundle: doc,
            files,
            bytes,
        })
    }

    /// How many files the bundle serves (from the file lists read to mount it).
    pub fn files(&self) -> u64 {
        self.files
    }

    /// How many bytes those files hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
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

/// The session's settings: read-only, several threads, and who may use the mount
/// (everyone with `allow_other`, else its owner; root too with auto-unmount).
fn session_config(allow_other: bool) -> Config {
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
    config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    if fusermount_available() {
        // fusermount3 stays behind and unmounts if this process dies (kill -9, OOM), so
        // the mount point never stays "Transport endpoint is not connected". It needs
        // the kernel's allow_other; fuser still answers only root and the owner.
        config.mount_options.push(MountOption::AutoUnmount);
        if !allow_other {
            config.acl = SessionACL::RootAndOwner;
        }
    } else {
        tracing::debug!(
            "no fusermount3 on PATH: no auto-unmount; a stale mount left by a dead \
             process is repaired by the next mount"
        );
    }
    config
}

/// Waits for the first answer of the mount at `dir`, which proves it is served; unmounts
/// it if it fails or does not answer within [`READY_DEADLINE`].
async fn first_answer(
    session: fuser::BackgroundSession,
    dir: &Path,
) -> Result<fuser::BackgroundSession> {
    let probe = {
        let dir = dir.to_path_buf();
        tokio::time::timeout(
            READY_DEADLINE,
            tokio::task::spawn_blocking(move || std::fs::metadata(&dir)),
        )
        .await
    };
    match probe {
        Ok(Ok(Ok(_))) => Ok(session),
        Ok(Ok(Err(source))) => {
            let _ = tokio::task::spawn_blocking(move || session.umount_and_join()).await;
            Err(Error::Mount {
                op: "read the root of the mount",
                path: dir.to_path_buf(),
                source,
            })
        }
        Ok(Err(join)) => Err(join.into()),
        Err(_) => {
            // Best effort: take the unresponsive mount out of the tree before failing.
            let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            Err(Error::Mount {
                op: "get an answer from the mount",
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {READY_DEADLINE:?}"),
                ),
            })
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::{BucketUrl, StoreOptions};
    use crate::bundle::upload::{upload, UploadRequest};
    use crate::bundle::BundleRef;
    use crate::model::Contributor;

    /// A real FUSE mount (root and /dev/fuse, as the sidecar has) of a bundle uploaded to
    /// a `file://` store: its counts are the bundle's, and its files read back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mount_counts_the_files_and_bytes_it_serves() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::write(src.join("hello.txt"), b"hello world\n").unwrap();
        std::fs::write(src.join("a/big"), vec![7u8; 3000]).unwrap();
        std::fs::write(src.join("a/empty"), b"").unwrap();
        let config = BucketUrl::File(tmp.path().join("config"));
        let opts = StoreOptions::default();
        let names = Default::default();
        crate::context::create(&config, "t", &names, &opts)
            .await
            .unwrap();
        let stores = Stores::open(&config, "t", &opts).await.unwrap();
        let nobody = Contributor::default();
        crate::repo::create(&stores, "r", "data", &nobody)
            .await
            .unwrap();
        let req = UploadRequest {
            repo: "r".into(),
            source: src,
            message: "m".into(),
            label: None,
            contributor: nobody,
            leaf_size: LeafSize::new(1024).unwrap(),
        };
        let report = upload(&stores, &req, &Default::default()).await.unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let req = MountRequest {
            repo: "r".into(),
            bundle: BundleRef::from_flags(Some(report.bundle.id.clone()), None),
            mount: dir.clone(),
            allow_other: false,
            cache_bytes: 1 << 20,
            disk_cache: None,
            file_owner: Default::default(),
        };
        let m = Mounted::start(&stores, &req).await.unwrap();
        let read = tokio::task::spawn_blocking(move || std::fs::read(dir.join("a/big")))
            .await
            .unwrap();
        let counts = (m.files(), m.bytes());
        m.unmount().await.unwrap();
        assert_eq!(read.unwrap(), vec![7u8; 3000]);
        assert_eq!(counts, (3, 3012));
        assert_eq!(counts, (report.files, report.bytes));
    }
}
