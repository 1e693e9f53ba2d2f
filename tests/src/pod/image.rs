//! OCI images for the runner's image mode: an OCI archive (`oci-archive`, as `buildah push`
//! and scripts/build-images.sh write them) is copied into an OCI layout with `skopeo` and
//! unpacked with `umoci unpack`, once per archive and process (and kept in a cache directory
//! keyed by the archive's path, size and modification time, so later test processes reuse
//! it); its configuration (`Entrypoint`, `Cmd`, `Env`, `User`, `WorkingDir`) and its
//! `/etc/passwd` and `/etc/group` are read for the plan.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

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
/// once).
static UNPACK: Mutex<()> = Mutex::new(());

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
    /// The image of an OCI archive, unpacked now or earlier.
    pub fn load(archive: &Path) -> Result<Image, PodError> {
        let meta = std::fs::metadata(archive).map_err(|e| {
            PodError::io(
                format!(
                    "cannot read the image archive {} (run `just images` (scripts/build-images.sh) first)",
                    archive.display()
                ),
                e,
            )
        })?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        archive
            .canonicalize()
            .unwrap_or(archive.into())
            .hash(&mut h);
        meta.len().hash(&mut h);
        meta.modified().ok().hash(&mut h);
        let dir = std::env::temp_dir()
            .join("datamon-pod-images")
            .join(format!("{:016x}", h.finish()));
        let _guard = UNPACK.lock().unwrap_or_else(|p| p.into_inner());
        if !dir.join("done").exists() {
            unpack(archive, &dir)?;
        }
        read(&dir)
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
    std::fs::write(dir.join("done"), b"")
        .map_err(|e| PodError::io(format!("cannot write {}/done", dir.display()), e))
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
}
