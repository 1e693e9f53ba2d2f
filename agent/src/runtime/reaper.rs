//! The wrapper reaps the application's orphans. It is PID 1 of the application's container
//! (the webhook makes it the container's command), and it also asks to be the child
//! subreaper (`PR_SET_CHILD_SUBREAPER`) for when it is not: either way the kernel hands it
//! every process the application leaves behind when their parents exit (a daemonised
//! helper, a shell's background job). Nobody else waits for those, so without this they
//! stay zombies for the pod's life.
//!
//! The application itself is waited for by the wrapper (its exit code is the outcome), so
//! the reaper leaves that one pid alone and reaps only the other zombie children, found in
//! `/proc`, one `waitpid(pid)` each: never `waitpid(-1)`, which could take the
//! application's status from the wrapper.

use std::path::Path;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

/// How often the reaper looks even without SIGCHLD (a signal can coalesce with another).
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The pid, state and parent pid of a `/proc/<pid>/stat` line (`None` if malformed). The
/// command name in parentheses may itself hold spaces and parentheses: the fields after
/// the last `)` are the ones read.
pub fn parse_stat(line: &str) -> Option<(i32, char, i32)> {
    let (head, tail) = line.rsplit_once(')')?;
    let pid = head.split_once(' ')?.0.trim().parse().ok()?;
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((pid, state, ppid))
}

/// The zombies among `stats` whose parent is `parent`, except `keep`.
pub fn orphaned_zombies<'a>(
    stats: impl IntoIterator<Item = &'a str>,
    parent: i32,
    keep: i32,
) -> Vec<i32> {
    stats
        .into_iter()
        .filter_map(parse_stat)
        .filter(|&(pid, state, ppid)| state == 'Z' && ppid == parent && pid != keep)
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Asks the kernel to hand this process its descendants' orphans. A refusal is logged:
/// as PID 1 the wrapper gets them anyway.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!(error = %e, "cannot become the child subreaper");
    }
}

/// Reaps orphaned zombie children of this process, except `app`, until the task is
/// dropped.
pub async fn run(app: i32) {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGCHLD; orphans are reaped every {LOOK_EVERY:?}");
            None
        }
    };
    loop {
        reap(me, app);
        match sigchld.as_mut() {
            Some(s) => {
                let _ = tokio::time::timeout(LOOK_EVERY, s.recv()).await;
            }
            None => tokio::time::sleep(LOOK_EVERY).await,
        }
    }
}

fn reap(me: i32, app: i32) {
    reap_pids(&zombies_of(me, app));
}

/// The zombie children of `me` other than `app`, as `/proc` shows them now.
fn zombies_of(me: i32, app: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let stats: Vec<String> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            std::fs::read_to_string(Path::new("/proc").join(e.file_name()).join("stat")).ok()
        })
        .collect();
    orphaned_zombies(stats.iter().map(String::as_str), me, app)
}

fn reap_pids(pids: &[i32]) {
    for &pid in pids {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => tracing::debug!(pid, ?status, "reaped an orphan of the application"),
            Err(e) => tracing::debug!(pid, error = %e, "cannot reap"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_command_name() {
        assert_eq!(parse_stat("42 (sleep) Z 1 42 42 0"), Some((42, 'Z', 1)));
        assert_eq!(parse_stat("7 (my (odd) name) S 3 7 7 0"), Some((7, 'S', 3)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("x (a) Z 1"), None);
    }

    #[test]
    fn only_other_zombie_children_are_reaped() {
        let stats = [
            "10 (app) Z 1 10 10 0",     // the application: the wrapper waits for it
            "11 (daemon) Z 1 11 11 0",  // an orphan: reaped
            "12 (running) S 1 12 12 0", // alive
            "13 (other) Z 5 13 13 0",   // someone else's child
        ];
        assert_eq!(orphaned_zombies(stats, 1, 10), vec![11]);
    }

    #[tokio::test]
    async fn a_zombie_child_that_is_not_the_app_is_reaped() {
        // A direct child of the test process that nobody waits for.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let stat = format!("/proc/{pid}/stat");
        for _ in 0..200 {
            if std::fs::read_to_string(&stat)
                .is_ok_and(|s| parse_stat(&s).is_some_and(|p| p.1 == 'Z'))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let me = i32::try_from(std::process::id()).unwrap();
        let found = zombies_of(me, -1);
        assert!(
            found.contains(&pid),
            "{pid} not among the zombies {found:?}"
        );
        // Only this test's own child: other tests' children are theirs to wait for.
        reap_pids(&[pid]);
        assert!(
            !Path::new(&stat).exists(),
            "the zombie {pid} is still there"
        );
        drop(child);
    }
}
