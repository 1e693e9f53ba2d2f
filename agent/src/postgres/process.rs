//! PostgreSQL's programs run as the server's account, with deadlines.
//!
//! PostgreSQL refuses to run as root, so when the agent is root every program of a
//! server (initdb, pg_ctl, postgres, pg_upgrade, ...) runs as a named non-root user
//! ([`Account::resolve`], default `postgres`) and the directories it needs are handed to
//! that user ([`Account::own`]). [`command`] builds the command (no `PG*` variables from the
//! agent's environment, `LC_ALL=C` so that messages can be read, killed when dropped);
//! [`run`] runs it to its end within a deadline and keeps the tail of its output for the
//! error.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::unistd::{Uid, User};

/// Lines of a failed program's output kept for its error.
pub(crate) const TAIL_LINES: usize = 20;

/// The default server account when the agent runs as root.
pub(crate) const DEFAULT_USER: &str = "postgres";

/// A PostgreSQL program that could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessError {
    /// The named server account does not exist.
    #[error(
        "the PostgreSQL server account {name:?} does not exist: create it (useradd --system \
         {name}) or set DATAMON_POSTGRES__USER (postgres.user) to an existing non-root user"
    )]
    NoSuchUser {
        /// The user name.
        name: String,
    },
    /// The account would be root, which PostgreSQL refuses.
    #[error(
        "the PostgreSQL server account {name:?} is root (uid 0), which PostgreSQL refuses: set \
         DATAMON_POSTGRES__USER (postgres.user) to a non-root user"
    )]
    Root {
        /// The user name.
        name: String,
    },
    /// The user database could not be read.
    #[error("cannot look up the PostgreSQL server account {name:?}")]
    Lookup {
        /// The user name (or uid).
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A directory could not be handed to the account.
    #[error("cannot give {path} to the PostgreSQL server account {user} (chown/chmod 0700)")]
    Own {
        /// The file or directory.
        path: PathBuf,
        /// The account's name.
        user: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("cannot run {what} ({program}): is the PostgreSQL build complete?")]
    Spawn {
        /// What the program was to do.
        what: String,
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading its output or waiting for it failed.
    #[error("{what}: waiting for the program failed")]
    Wait {
        /// What the program was to do.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ended with a failure.
    #[error("{what} failed ({status}); its last output:\n{tail}")]
    Failed {
        /// What the program was to do.
        what: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its stdout then stderr.
        tail: String,
    },
    /// The program did not end within its deadline and was killed.
    #[error("{what} did not finish within {deadline:?} and was killed; its last output:\n{tail}")]
    Timeout {
        /// What the program was to do.
        what: String,
        /// The deadline.
        deadline: Duration,
        /// The last lines of its output so far (empty: none was read).
        tail: String,
    },
}

impl ProcessError {
    /// The tail of the program's output, when it ran.
    // For callers that show the output apart; only the tests do yet.
    #[allow(dead_code)]
    pub(crate) fn tail(&self) -> Option<&str> {
        match self {
            ProcessError::Failed { tail, .. } | ProcessError::Timeout { tail, .. } => Some(tail),
            _ => None,
        }
    }
}

/// The account PostgreSQL's programs run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Account {
    /// Its user id (never 0).
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
    /// Its name.
    pub name: String,
}

/// Whether the agent runs as root (then programs switch to the account).
pub(crate) fn is_root() -> bool {
    Uid::effective().is_root()
}

impl Account {
    /// The account the servers run as: the current user when not root; as root, the named
    /// user (setting postgres.user, default "postgres"), which must exist (clear error:
    /// name it, say to create it or set DATAMON_POSTGRES__USER). Refuses uid 0.
    pub(crate) fn resolve(user: Option<&str>) -> Result<Account, ProcessError> {
        if !is_root() {
            let uid = Uid::effective();
            let name = match User::from_uid(uid) {
                Ok(Some(u)) => u.name,
                // A uid without a passwd entry (containers with runAsUser): its number.
                _ => uid.to_string(),
            };
            if user.is_some_and(|u| u != name) {
                tracing::debug!(user = ?user, current = %name, "not root: PostgreSQL runs as the current user");
            }
            return Ok(Account {
                uid: uid.as_raw(),
                gid: nix::unistd::Gid::effective().as_raw(),
                name,
            });
        }
        let name = user.unwrap_or(DEFAULT_USER).to_string();
        let found = User::from_name(&name).map_err(|source| ProcessError::Lookup {
            name: name.clone(),
            source,
        })?;
        let u = found.ok_or_else(|| ProcessError::NoSuchUser { name: name.clone() })?;
        if u.uid.is_root() {
            return Err(ProcessError::Root { name });
        }
        Ok(Account {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            name,
        })
    }

    /// chown -R (only when we are root) and chmod 0700 of a directory we created for it.
    pub(crate) fn own(&self, dir: &Path) -> Result<(), ProcessError> {
        use std::os::unix::fs::PermissionsExt;
        let err = |path: &Path, source| ProcessError::Own {
            path: path.to_path_buf(),
            user: self.name.clone(),
            source,
        };
        if is_root() {
            for entry in walkdir::WalkDir::new(dir).follow_links(false) {
                let entry = entry.map_err(|e| {
                    let path = e.path().unwrap_or(dir).to_path_buf();
                    err(&path, e.into())
                })?;
                std::os::unix::fs::lchown(entry.path(), Some(self.uid), Some(self.gid))
                    .map_err(|e| err(entry.path(), e))?;
            }
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(dir, e))
    }
}

/// A tokio Command for `program` that runs as `account` (uid/gid set when we are root),
/// with PG* variables removed from its environment, LC_ALL=C, kill_on_drop.
pub(crate) fn command(program: &Path, account: &Account) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if is_root() {
        // std drops the supplementary groups of root when a uid is set.
        cmd.uid(account.uid).gid(account.gid);
        // HOME of root would not be readable by the account (psql reads ~/.psqlrc).
        if let Ok(Some(u)) = User::from_uid(Uid::from_raw(account.uid)) {
            cmd.env("HOME", u.dir);
        }
    }
    cmd
}

/// Runs it to its end within `deadline` (killed after): stdout on success; else an error
/// naming `what`, the exit status and the last ~20 lines of stdout+stderr (stderr last:
/// the error is kept when the progress is long).
pub(crate) async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
    deadline: Duration,
) -> Result<String, ProcessError> {
    let program = PathBuf::from(cmd.as_std().get_program());
    // A group of its own: past the deadline its children (initdb's bootstrap backend,
    // pg_upgrade's pg_dump) are killed with it, not left writing where the caller cleans up.
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    tracing::debug!(what, program = %program.display(), "running");
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        what: what.to_string(),
        program: program.clone(),
        source,
    })?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = {
        let both = async {
            let (o, e) = tokio::join!(read_all(stdout, &mut out), read_all(stderr, &mut err));
            o?;
            e?;
            child.wait().await
        };
        // On timeout the reads stop; what they read so far stays in the buffers.
        tokio::time::timeout(deadline, both).await
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match finished {
        Err(_) => {
            kill_group(&mut child, what).await;
            Err(ProcessError::Timeout {
                what: what.to_string(),
                deadline,
                tail: tail(&[&text(&out), &text(&err)], TAIL_LINES),
            })
        }
        Ok(Err(source)) => Err(ProcessError::Wait {
            what: what.to_string(),
            source,
        }),
        Ok(Ok(status)) if status.success() => Ok(text(&out)),
        Ok(Ok(status)) => Err(ProcessError::Failed {
            what: what.to_string(),
            status,
            tail: tail(&[&text(&out), &text(&err)], TAIL_LINES),
        }),
    }
}

/// How long a program killed past its deadline may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Kills `child` and its process group, and waits (at most [`KILL_WAIT`]) until it is
/// gone, so that nothing of it writes on after its caller's cleanup.
async fn kill_group(child: &mut tokio::process::Child, what: &str) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let group = nix::unistd::Pid::from_raw(pid);
        if let Err(e) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
            tracing::debug!(what, error = %e, "killing a program's group past its deadline");
        }
    }
    // An error means it has just exited, which is as good.
    if let Err(e) = child.start_kill() {
        tracing::debug!(what, error = %e, "killing a program past its deadline");
    }
    if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
        tracing::warn!(
            what,
            "a program killed past its deadline has not exited yet"
        );
    }
}

/// Reads `pipe` (if any) to its end into `buf`; cancelled, `buf` keeps what was read.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    match pipe {
        Some(mut p) => tokio::io::AsyncReadExt::read_to_end(&mut p, buf)
            .await
            .map(drop),
        None => Ok(()),
    }
}

/// The last `n` non-empty lines of `texts` taken one after the other.
pub(crate) fn tail(texts: &[&str], n: usize) -> String {
    let mut last: VecDeque<&str> = VecDeque::with_capacity(n + 1);
    for line in texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| !l.trim().is_empty())
    {
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(line);
    }
    last.into_iter().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Account {
        Account::resolve(None).unwrap()
    }

    #[test]
    fn tail_keeps_the_last_lines_of_both_streams() {
        assert_eq!(tail(&["a\nb\n", "\nc\n"], 2), "b\nc");
        assert_eq!(tail(&["a"], 20), "a");
        assert_eq!(tail(&["", ""], 20), "");
    }

    #[test]
    fn the_account_is_never_root() {
        let a = me();
        assert_ne!(a.uid, 0);
        assert!(!a.name.is_empty());
    }

    #[test]
    fn a_missing_account_is_named_with_the_fix() {
        if !is_root() {
            // Not root: the current user is the account whatever the setting says.
            assert_eq!(Account::resolve(Some("no-such-user-xyz")).unwrap(), me());
            return;
        }
        let e = Account::resolve(Some("no-such-user-xyz"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-such-user-xyz") && e.contains("DATAMON_POSTGRES__USER"),
            "{e}"
        );
        let e = Account::resolve(Some("root")).unwrap_err().to_string();
        assert!(e.contains("root") && e.contains("refuses"), "{e}");
    }

    #[test]
    fn own_hands_a_tree_to_the_account() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let a = me();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), b"x").unwrap();
        a.own(&dir).unwrap();
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(dir.join("sub/f")).unwrap().uid(), a.uid);
    }

    #[tokio::test]
    async fn run_gives_stdout_or_the_tail_and_status() {
        let a = me();
        let mut c = command(Path::new("/bin/sh"), &a);
        c.args([
            "-c",
            "echo out; echo \"$LC_ALL\"; env | grep -c '^PG' || true",
        ]);
        let out = run(c, "echo", Duration::from_secs(30)).await.unwrap();
        assert_eq!(out, "out\nC\n0\n");

        let mut c = command(Path::new("/bin/sh"), &a);
        c.args([
            "-c",
            "for i in $(seq 1 30); do echo line$i; done; echo bad >&2; exit 3",
        ]);
        let e = run(c, "the failing step", Duration::from_secs(30))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("the failing step") && msg.contains("exit status: 3"),
            "{msg}"
        );
        let t = e.tail().unwrap();
        assert!(
            t.starts_with("line12\n") && t.ends_with("line30\nbad"),
            "{t}"
        );
        assert_eq!(t.lines().count(), TAIL_LINES);
    }

    #[tokio::test]
    async fn run_kills_a_program_past_its_deadline() {
        let mut c = command(Path::new("/bin/sh"), &me());
        c.args(["-c", "echo started; exec sleep 30"]);
        let e = run(c, "sleeping", Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(e, ProcessError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("sleeping"));
        assert_eq!(e.tail(), Some("started"), "the output so far is kept");
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let c = command(Path::new("/nonexistent/postgres"), &me());
        let e = run(c, "starting", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/postgres"), "{e}");
    }
}
