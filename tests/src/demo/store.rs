//! The demo's local-directory store: the host's `datamon-agent` run with the store's
//! environment (config bucket, contributor, HOME) and nothing else of the caller's, for the
//! few store commands the demo needs (repos, uploads, labels, bundle lists, downloads).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::DemoError;

/// A `file://` store under a directory, and the agent that reads and writes it.
pub struct Store {
    agent: PathBuf,
    /// The directory holding the store's buckets (`<root>/store`) and the agent's HOME.
    pub root: PathBuf,
    env: Vec<(String, String)>,
}

impl Store {
    /// A store under `root` with context `dev` created by `agent`.
    pub fn create(agent: &Path, root: &Path) -> Result<Self, DemoError> {
        let config = format!("file://{}/store/config", root.display());
        let env = [
            ("DATAMON_GLOBAL_CONFIG", config.as_str()),
            ("HOME", &root.display().to_string()),
            ("DATAMON_CONTRIBUTOR__NAME", "Demo User"),
            ("DATAMON_CONTRIBUTOR__EMAIL", "demo@example.com"),
            ("DATAMON_RETRY_TIMEOUT_SECS", "5"),
            ("DATAMON_CONNECT_TIMEOUT_SECS", "2"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        let store = Self {
            agent: agent.to_path_buf(),
            root: root.to_path_buf(),
            env,
        };
        store.agent_ok(&["context", "create"])?;
        Ok(store)
    }

    /// The environment every container and agent run gets to reach the store.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Runs `datamon-agent args` with the store's environment: its stdout, or an error with
    /// its stderr.
    pub fn agent_ok(&self, args: &[&str]) -> Result<String, DemoError> {
        let mut c = Command::new(&self.agent);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(args);
        let out = c.output().map_err(|e| DemoError::Io {
            what: format!("run {}", self.agent.display()),
            source: e,
        })?;
        if !out.status.success() {
            return Err(DemoError::Step {
                step: format!("datamon-agent {}", args.join(" ")),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates the repo `repo`.
    pub fn create_repo(&self, repo: &str, description: &str) -> Result<(), DemoError> {
        let mut args = vec!["repo", "create", "--repo", repo];
        args.extend(["--description", description]);
        self.agent_ok(&args).map(drop)
    }

    /// Uploads `dir` to `repo` with `label`: the new bundle's id.
    pub fn upload(&self, repo: &str, dir: &Path, label: &str) -> Result<String, DemoError> {
        let path = dir.display().to_string();
        let out = self.agent_ok(&[
            "bundle",
            "upload",
            "--repo",
            repo,
            "--path",
            &path,
            "--message",
            "demo data",
            "--label",
            label,
        ])?;
        out.trim()
            .strip_prefix("Uploaded bundle id:")
            .map(str::to_string)
            .ok_or_else(|| DemoError::Step {
                step: format!("upload {path} to {repo}"),
                detail: format!("unexpected output {out:?}"),
            })
    }

    /// The ids of `repo`'s bundles.
    pub fn bundles(&self, repo: &str) -> Result<Vec<String>, DemoError> {
        let out = self.agent_ok(&["bundle", "list", "--repo", repo, "--output", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| DemoError::Step {
            step: format!("bundle list --repo {repo}"),
            detail: format!("not JSON ({e}): {out}"),
        })?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect())
    }

    /// Downloads bundle `id` of `repo` to `dest` (which must not exist or be empty).
    pub fn download(&self, repo: &str, id: &str, dest: &Path) -> Result<(), DemoError> {
        let d = dest.display().to_string();
        self.agent_ok(&[
            "bundle",
            "download",
            "--repo",
            repo,
            "--bundle",
            id,
            "--destination",
            &d,
        ])
        .map(drop)
    }

    /// `datamon-agent status --dir dir --output json`, parsed; `None` while it cannot say
    /// (the directory is not there yet).
    pub fn status(&self, dir: &Path) -> Option<serde_json::Value> {
        let d = dir.display().to_string();
        let out = self
            .agent_ok(&["status", "--dir", &d, "--output", "json"])
            .ok()?;
        serde_json::from_str(&out).ok()
    }
}
