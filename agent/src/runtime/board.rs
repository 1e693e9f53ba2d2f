//! The coordination directory (an emptyDir shared by every container of the pod): each
//! participant's state file, written atomically, and its liveness lock, an `flock` that the
//! kernel releases when the process dies however it dies (`kill -9`, OOM). Changes are
//! noticed through inotify, so waiting costs no polling.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};
use crate::runtime::state::{State, Status};

/// How long taking one's own lock may be delayed by another participant looking at it.
const HOLD_RETRY: Duration = Duration::from_secs(2);

/// Even without a change notice, participants are looked at again this often (a safety
/// net; inotify normally wakes waiters at once).
pub const RECHECK: Duration = Duration::from_secs(1);

/// The coordination directory.
#[derive(Clone, Debug)]
pub struct Board {
    dir: PathBuf,
}

/// A participant's liveness lock, held until dropped (or until the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
}

impl Board {
    /// Opens (and creates if needed) the coordination directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(Error::io("create the coordination directory", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn state_path(&self, participant: &str) -> PathBuf {
        self.dir.join(format!("{participant}.json"))
    }

    fn lock_path(&self, participant: &str) -> PathBuf {
        self.dir.join(format!("{participant}.lock"))
    }

    /// Takes `participant`'s liveness lock; fails if a live process holds it.
    pub fn hold(&self, participant: &str) -> Result<Lock> {
        let path = self.lock_path(participant);
        let deadline = std::time::Instant::now() + HOLD_RETRY;
        loop {
            // Opened for writing: its close, at exit or death, is an inotify
            // IN_CLOSE_WRITE that wakes the other participants.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o666)
                .open(&path)
                .map_err(Error::io("open the liveness lock", &path))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(file) => return Ok(Lock { _file: file }),
                Err((_, nix::errno::Errno::EWOULDBLOCK))
                    if std::time::Instant::now() < deadline =>
                {
                    // Possibly another participant checking whether we live: it lets go at once.
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, errno)) => {
                    return Err(Error::Io {
                        op: "take the liveness lock (is another process already this participant?)",
                        path,
                        source: std::io::Error::from(errno),
                    })
                }
            }
        }
    }

    /// Whether a live process holds `participant`'s lock.
    pub fn lock_held(&self, participant: &str) -> Result<bool> {
        let path = self.lock_path(participant);
        // Read-only: looking does not wake anyone (only closes after writing do).
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io("open the liveness lock", &path)(e)),
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_released_on_drop) => Ok(false),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
            Err((_, errno)) => Err(Error::Io {
                op: "check the liveness lock",
                path,
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// Writes `state` atomically (a temporary file renamed over the old one).
    pub fn write(&self, state: &State) -> Result<()> {
        let path = self.state_path(&state.participant);
        let tmp = self.dir.join(format!(
            ".{}.json.{}.tmp",
            state.participant,
            std::process::id()
        ));
        let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other);
        text.and_then(|t| {
            let mut f = File::create(&tmp)?;
            f.write_all(&t)?;
            f.write_all(b"\n")
        })
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(Error::io("write the state file", &path))?;
        tracing::debug!(participant = %state.participant, phase = ?state.phase, "state written");
        Ok(())
    }

    /// Reads `participant`'s state, if it wrote one.
    pub fn read(&self, participant: &str) -> Result<Option<State>> {
        let path = self.state_path(participant);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::io("parse the state file", &path)(std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read the state file", &path)(e)),
        }
    }

    /// What can be told about `participant` now.
    pub fn status(&self, participant: &str) -> Result<Status> {
        // The lock first: a lock found free means the final state, if any, is already
        // written. Read the other way round, a state read just before the final one and a
        // lock checked just after the exit would look like a death.
        let held = self.lock_held(participant)?;
        let state = self.read(participant)?;
        Ok(Status::judge(state, held))
    }

    /// A watcher of this directory.
    pub fn watch(&self) -> Result<Watcher> {
        Watcher::new(&self.dir)
    }
}

/// Wakes up when a state file is replaced or a lock holder exits.
pub struct Watcher {
    fd: AsyncFd<OwnedInotify>,
}

/// The inotify instance, owned (its descriptor lives exactly as long as the registration).
struct OwnedInotify(Inotify);

impl std::os::fd::AsRawFd for OwnedInotify {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl Watcher {
    fn new(dir: &Path) -> Result<Self> {
        let errno = |e: nix::errno::Errno| {
            Error::io("watch the coordination directory", dir)(std::io::Error::from(e))
        };
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(errno)?;
        inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_DELETE,
            )
            .map_err(errno)?;
        // Deprecated for descriptors the AsyncFd does not own; this one owns its instance.
        #[allow(deprecated)]
        let fd = AsyncFd::new(OwnedInotify(inotify))
            .map_err(Error::io("watch the coordination directory", dir))?;
        Ok(Self { fd })
    }

    /// Returns after the next change in the directory (true), or after [`RECHECK`]
    /// without one (false).
    pub async fn changed(&mut self) -> bool {
        let wait = async {
            loop {
                let Ok(mut guard) = self.fd.readable().await else {
                    // The watch broke: fall back to rechecking on the timer.
                    std::future::pending::<()>().await;
                    return;
                };
                match guard.get_inner().0.read_events() {
                    Ok(events) if !events.is_empty() => {
                        // Drain what else is queued, then report one change.
                        while matches!(guard.get_inner().0.read_events(), Ok(ev) if !ev.is_empty())
                        {
                        }
                        guard.clear_ready();
                        return;
                    }
                    _ => guard.clear_ready(),
                }
            }
        };
        tokio::time::timeout(RECHECK, wait).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::Phase;

    #[test]
    fn lock_is_seen_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let board = Board::open(dir.path()).unwrap();
        assert!(!board.lock_held("s").unwrap());
        let lock = board.hold("s").unwrap();
        assert!(board.lock_held("s").unwrap());
        assert!(board.hold("s").is_err(), "a second holder must be refused");
        drop(lock);
        assert!(!board.lock_held("s").unwrap());
    }

    #[test]
    fn state_round_trip_and_death() {
        let dir = tempfile::tempdir().unwrap();
        let board = Board::open(dir.path()).unwrap();
        assert_eq!(board.status("s").unwrap(), Status::Absent);
        let lock = board.hold("s").unwrap();
        let st = State::new("s", Phase::Ready);
        board.write(&st).unwrap();
        assert_eq!(board.status("s").unwrap(), Status::Known(st.clone()));
        drop(lock);
        assert_eq!(board.status("s").unwrap(), Status::Dead(st));
        // No temporary file is left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[tokio::test]
    async fn a_write_wakes_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let board = Board::open(dir.path()).unwrap();
        let mut w = board.watch().unwrap();
        let b2 = board.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b2.write(&State::new("x", Phase::Ready)).unwrap();
        });
        assert!(
            w.changed().await,
            "the write must be noticed, not only rechecked"
        );
        writer.await.unwrap();
        assert!(board.read("x").unwrap().is_some());
    }
}
