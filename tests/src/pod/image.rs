//! OCI images for the runner's image mode: an OCI archive (`oci-archive`, as `buildah push`
//! and scripts/build-images.sh write them) is copied into an OCI layout with `skopeo` and
//! unpacked with `umoci unpack`; its configuration (`Entrypoint`, `Cmd`, `Env`, `User`,
//! `WorkingDir`) and its `/etc/passwd` and `/etc/group` are read for the plan.
//!
//! The unpacked images are kept in a cache shared by every test process,
//! `$TMPDIR/datamon-pod-images/sha256-<hex>/`, keyed by the image's manifest digest (the
//! archive's `index.json`), so an archive rebuilt with the same content is not unpacked
//! again and a changed one never reuses a stale tree. Unpacking, and pruning, happen under an
//! exclusive `flock` of `datamon-pod-images/.lock`; each process that uses an entry holds a
//! shared `flock` of its `in-use` file until it exits. After a new entry is unpacked, the
//! others go if they were last loaded from the same archive path (a rebuilt image) or were last
//! used more than a day ago, unless some process holds them in use (their root file system
//! may be the lower layer of a running container's overlay); so do the temporary
//! directories of unpackers that died.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use super::PodError;

/// One entry of an image's `/etc/passwd` or `/etc/group`: name and numeric id (and, for
/// a user, the primary group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Account {
    pub name: String,
    pub id: u32,
    pub gid: u32,
}

/// An image, unpacked: its root file system and what the plan needs of its configuration.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    /// The unpacked root file system (shared by every container of the image, read only:
    /// containers get an overlay over it).
    pub rootfs: PathBuf,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `User` as written (`""`, `uid`, `uid:gid`, `name`, `name:group`).
    pub user: String,
    pub working_dir: String,
    pub passwd: Vec<Account>,
    pub groups: Vec<Account>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<Config>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Config {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
}

/// Serializes unpacking within the process (two tests asking for the same image unpack it
/// once), before the cache's lock serializes it between processes.
static UNPACK: Mutex<()> = Mutex::new(());

/// The shared locks of the cache entries this process uses, held until it exits, and the
/// entries they are of.
static IN_USE: Mutex<Vec<(PathBuf, Flock<File>)>> = Mutex::new(Vec::new());

/// An entry not used for this long is pruned when another is unpacked.
const KEEP_UNUSED: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a process waits for another's unpacking (the agent-postgres image takes about
/// half a minute on a loaded machine).
const LOCK_DEADLINE: Duration = Duration::from_secs(600);
/// Files of a cache entry: the archive it was last loaded from, its marker of completion, the
/// file whose mtime is its last use, and the file processes lock while they use it.
const SOURCE: &str = "source";
const DONE: &str = "done";
const USED: &str = "used";
const IN_USE_FILE: &str = "in-use";

/// What to run for the image tools (`skopeo`, `umoci`).
fn tool(name: &str) -> Result<PathBuf, PodError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| PodError::MissingTool {
            tool: format!("{name} (apt-get install skopeo umoci runc)"),
        })
}

fn run(cmd: &mut Command, what: &str) -> Result<(), PodError> {
    let out = cmd
        .output()
        .map_err(|e| PodError::io(format!("cannot run {what}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(PodError::Image {
        what: format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

impl Image {
    /// The image of an OCI archive, unpacked now or earlier (by this or another process).
    pub fn load(archive: &Path) -> Result<Image, PodError> {
        let archive = archive.canonicalize().map_err(|e| {
            PodError::io(
                format!(
                    "cannot read the image archive {} (run `just images` (scripts/build-images.sh) first)",
                    archive.display()
                ),
                e,
            )
        })?;
        let digest = archive_digest(&archive)?;
        let root = std::env::temp_dir().join("datamon-pod-images");
        std::fs::create_dir_all(&root)
            .map_err(|e| PodError::io(format!("cannot create {}", root.display()), e))?;
        let dir = root.join(digest.replace(':', "-"));
        let _guard = UNPACK.lock().unwrap_or_else(|p| p.into_inner());
        let _cache = lock_cache(&root)?;
        if !dir.join(DONE).exists() {
            unpack(&archive, &dir)?;
            prune(&root, &dir, &archive);
        }
        mark_used(&dir, &archive)?;
        read(&dir)
    }
}

/// The manifest digest (`sha256:<hex>`) of an OCI archive: its `index.json`'s first
/// manifest, read with `tar` (no unpacking).
fn archive_digest(archive: &Path) -> Result<String, PodError> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg("index.json")
        .output()
        .map_err(|e| PodError::io("cannot run tar", e))?;
    let bad = |why: String| {
        PodError::Image {
        what: format!(
            "{} is not an OCI archive ({why}): write it with `buildah push ... oci-archive:` or `skopeo copy ... oci-archive:`",
            archive.display()
        ),
    }
    };
    if !out.status.success() {
        return Err(bad(format!(
            "tar -xOf ... index.json: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let index: Index =
        serde_json::from_slice(&out.stdout).map_err(|e| bad(format!("its index.json: {e}")))?;
    let digest = index
        .manifests
        .first()
        .map(|m| m.digest.clone())
        .ok_or_else(|| bad("its index.json lists no manifest".into()))?;
    valid_digest(&digest)
        .then_some(digest.clone())
        .ok_or_else(|| bad(format!("manifest digest {digest:?}")))
}

/// `sha256:` and 64 lowercase hex digits (a digest safe as a directory name).
fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The cache's exclusive lock, waited for at most [`LOCK_DEADLINE`].
fn lock_cache(root: &Path) -> Result<Flock<File>, PodError> {
    let path = root.join(".lock");
    let deadline = Instant::now() + LOCK_DEADLINE;
    loop {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PodError::io(format!("cannot open {}", path.display()), e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err((_, e)) => {
                return Err(PodError::io(
                    format!(
                        "cannot lock {} within {LOCK_DEADLINE:?} (another process unpacking an image holds it: see `fuser {}`)",
                        path.display(),
                        path.display()
                    ),
                    e.into(),
                ))
            }
        }
    }
}

/// Records a use of the entry `dir` now, from `archive` (the archive it was last loaded
/// from is its `source`), and holds its `in-use` lock (shared) until the process exits.
/// Called under the cache's lock, so no pruner holds it exclusively.
fn mark_used(dir: &Path, archive: &Path) -> Result<(), PodError> {
    let io = |p: &Path, e| PodError::io(format!("cannot write {}", p.display()), e);
    let source = dir.join(SOURCE);
    std::fs::write(&source, archive.as_os_str().as_encoded_bytes()).map_err(|e| io(&source, e))?;
    let used = dir.join(USED);
    File::create(&used)
        .and_then(|f| f.set_modified(SystemTime::now()))
        .map_err(|e| io(&used, e))?;
    let mut held = IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    if held.iter().any(|(d, _)| d == dir) {
        return Ok(());
    }
    let path = dir.join(IN_USE_FILE);
    let file = File::create(&path).map_err(|e| io(&path, e))?;
    let lock = Flock::lock(file, FlockArg::LockSharedNonblock)
        .map_err(|(_, e)| PodError::io(format!("cannot lock {}", path.display()), e.into()))?;
    held.push((dir.to_path_buf(), lock));
    Ok(())
}

/// What to do with one directory of the cache, `keep` being the entry just unpacked from
/// `archive`: whether it goes (before the check that no process uses it).
fn stale(name: &str, source: Option<&Path>, last_use: SystemTime, archive: &Path) -> bool {
    if let Some((_, pid)) = name.split_once(".tmp") {
        // An unpacker's temporary directory: stale once its process is gone.
        return pid.parse::<i32>().is_ok_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(Errno::ESRCH)
        });
    }
    let old = SystemTime::now()
        .duration_since(last_use)
        .is_ok_and(|age| age > KEEP_UNUSED);
    old || source == Some(archive)
}

/// Removes the stale entries of the cache (see the module doc), under the cache's lock.
/// A failure to remove one only leaves it for the next prune: it is said on stderr (the
/// tests crate has no tracing subscriber; the test harness shows a failed test's stderr).
fn prune(root: &Path, keep: &Path, archive: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if dir == keep || name.starts_with('.') || !dir.is_dir() {
            continue;
        }
        let source = std::fs::read_to_string(dir.join(SOURCE))
            .ok()
            .map(PathBuf::from);
        let last_use = [USED, DONE, ""]
            .iter()
            .find_map(|f| {
                std::fs::metadata(dir.join(f))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if !stale(&name, source.as_deref(), last_use, archive) {
            continue;
        }
        // In use by a live process (its shared lock): left alone.
        let _unused = match File::open(dir.join(IN_USE_FILE)) {
            Ok(f) => match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Some(lock),
                Err(_) => continue,
            },
            Err(_) => None,
        };
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!(
                "pod runner: cannot prune the unpacked image {}: {e}",
                dir.display()
            );
        }
    }
}

/// skopeo copy oci-archive → `<dir>.tmp/layout:img`, umoci unpack → `<dir>.tmp/bundle`,
/// then the rename to `dir` and the `done` marker.
fn unpack(archive: &Path, dir: &Path) -> Result<(), PodError> {
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| PodError::io(format!("cannot create {}", tmp.display()), e))?;
    let policy = tmp.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .map_err(|e| PodError::io(format!("cannot write {}", policy.display()), e))?;
    let layout = tmp.join("layout");
    run(
        Command::new(tool("skopeo")?)
            .arg("--policy")
            .arg(&policy)
            .args(["copy", "--quiet"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:img", layout.display())),
        &format!("skopeo copy of {}", archive.display()),
    )?;
    run(
        Command::new(tool("umoci")?)
            .args(["unpack", "--image"])
            .arg(format!("{}:img", layout.display()))
            .arg(tmp.join("bundle")),
        &format!("umoci unpack of {}", archive.display()),
    )?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| {
        PodError::io(
            format!("cannot rename {} to {}", tmp.display(), dir.display()),
            e,
        )
    })?;
    std::fs::write(dir.join(DONE), b"")
        .map_err(|e| PodError::io(format!("cannot write {}/{DONE}", dir.display()), e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, PodError> {
    let text = std::fs::read(path)
        .map_err(|e| PodError::io(format!("cannot read {}", path.display()), e))?;
    serde_json::from_slice(&text).map_err(|e| PodError::Image {
        what: format!("{} is not what an OCI layout holds: {e}", path.display()),
    })
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(alg).join(hex)
}

fn read(dir: &Path) -> Result<Image, PodError> {
    let layout = dir.join("layout");
    let index: Index = read_json(&layout.join("index.json"))?;
    let first = index.manifests.first().ok_or_else(|| PodError::Image {
        what: format!("{} has no manifest", layout.display()),
    })?;
    let manifest: Manifest = read_json(&blob(&layout, &first.digest))?;
    let file: ConfigFile = read_json(&blob(&layout, &manifest.config.digest))?;
    let c = file.config.unwrap_or_default();
    let rootfs = dir.join("bundle").join("rootfs");
    let accounts = |name: &str| {
        std::fs::read_to_string(rootfs.join("etc").join(name))
            .map(|t| parse_accounts(&t))
            .unwrap_or_default()
    };
    Ok(Image {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c
            .env
            .unwrap_or_default()
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect(),
        user: c.user.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        passwd: accounts("passwd"),
        groups: accounts("group"),
        rootfs,
    })
}

/// The entries of a `passwd` (`name:x:uid:gid:...`) or `group` (`name:x:gid:...`) file;
/// for a group, `gid` is its id too.
pub(crate) fn parse_accounts(text: &str) -> Vec<Account> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let id = f.get(2)?.parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
            Some(Account {
                name: f.first()?.to_string(),
                id,
                gid,
            })
        })
        .collect()
}

/// Registered images by name, loaded on first use.
pub(crate) fn load_all(
    archives: &HashMap<String, PathBuf>,
) -> Result<HashMap<String, Image>, PodError> {
    archives
        .iter()
        .map(|(name, path)| Ok((name.clone(), Image::load(path)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts() {
        let p = parse_accounts("root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999::/:/x\nbad\n");
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[1].name.as_str(), p[1].id, p[1].gid),
            ("postgres", 999, 999)
        );
        let g = parse_accounts("wheel:x:10:a,b\n");
        assert_eq!((g[0].id, g[0].gid), (10, 10));
    }

    #[test]
    fn digests_that_name_a_directory() {
        assert!(valid_digest(&format!("sha256:{}", "ab12".repeat(16))));
        for bad in [
            "sha256:../../etc".to_string(),
            format!("sha256:{}", "AB12".repeat(16)),
            format!("sha512:{}", "ab12".repeat(16)),
            "sha256:abc".to_string(),
        ] {
            assert!(!valid_digest(&bad), "{bad}");
        }
    }

    #[test]
    fn what_the_prune_removes() {
        let now = SystemTime::now();
        let day_ago = now - KEEP_UNUSED - Duration::from_secs(60);
        let mine = Path::new("/images/agent.oci.tar");
        let other = Path::new("/images/webhook.oci.tar");
        // The same archive, another digest: a rebuilt image.
        assert!(stale("sha256-1", Some(mine), now, mine));
        // Another archive's image, used lately: kept; unused for a day: removed.
        assert!(!stale("sha256-2", Some(other), now, mine));
        assert!(stale("sha256-2", Some(other), day_ago, mine));
        // An entry of the older layout (no source): by age only.
        assert!(!stale("0123456789abcdef", None, now, mine));
        assert!(stale("0123456789abcdef", None, day_ago, mine));
        // A temporary directory: kept while its unpacker lives.
        assert!(!stale(
            &format!("sha256-3.tmp{}", std::process::id()),
            None,
            day_ago,
            mine
        ));
        assert!(stale("sha256-3.tmp2147483646", None, now, mine));
    }
}
