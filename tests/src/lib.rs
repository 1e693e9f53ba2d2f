//! Helpers for the end-to-end tests: the `datamon-agent` binary run as a user would run
//! it, a store (local directory, the in-process S3 server, or the GCS emulator behind its
//! proxy: [`gcs`]), and the independent Python
//! implementation of the datamon format in `tests/interop/`; pods as the webhook lays them
//! out ([`injected`]), the pod runner that runs them ([`pod`]) and an application image not
//! ours for it ([`app_image`]); and the plumbing every
//! test binary shares: one [`DEADLINE`] for every wait, [`wait_until`] and [`within`] to
//! wait with it, [`sample_tree`], [`MIB`].

// Test support: a failed setup step must stop the test at once, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app_image;
pub mod demo;
pub mod gcs;
pub mod injected;
pub mod pod;
pub mod postgres;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any wait of the tests may take (a pod to finish, a mount to come up, a
/// condition to hold): far above what any needs, so that a hang fails the test instead of
/// stalling it, and a slow shared machine does not.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// One mebibyte.
pub const MIB: usize = 1024 * 1024;

/// How often [`poll`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What a polled condition gives: `true`, or `Some(value)`, once it holds.
pub trait Outcome {
    /// What the wait returns.
    type Value;
    /// The value, once the condition holds.
    fn value(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn value(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn value(self) -> Option<T> {
        self
    }
}

/// Looks at `f` until it holds (every 10 ms) or `limit` has passed: its value, or `None`.
/// `f` is looked at once more after the limit, so a condition that holds by then counts.
pub fn poll<O: Outcome>(limit: Duration, mut f: impl FnMut() -> O) -> Option<O::Value> {
    let until = Instant::now() + limit;
    loop {
        let past = Instant::now() >= until;
        if let Some(v) = f().value() {
            return Some(v);
        }
        if past {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits for `f` to hold, at most [`DEADLINE`] (a wait, not a timing assertion): its value;
/// panics naming `what` and the deadline.
pub fn wait_until<O: Outcome>(what: &str, f: impl FnMut() -> O) -> O::Value {
    poll(DEADLINE, f).unwrap_or_else(|| panic!("{what}: not within {DEADLINE:?}"))
}

/// Runs `work` on a thread and waits for it at most `limit`: its result, or `None` when it
/// has not returned by then (the thread is left behind).
pub fn within<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(limit).ok()
}

/// Runs `work` on a thread and waits for it at most [`DEADLINE`]: a hang fails the test,
/// naming `what`, instead of stalling it.
pub fn within_deadline<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    within(DEADLINE, work).unwrap_or_else(|| panic!("{what}: not done within {DEADLINE:?}"))
}

/// Path of a workspace binary built next to the running test (`cargo test --workspace`
/// builds every binary of the workspace first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("target/debug"));
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests (the justfile's `test` recipe does)",
        bin.display()
    );
    bin
}

/// The Python reference implementation of the datamon format.
pub fn python_reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/datamon_ref.py")
}

/// Where a test's repositories live.
pub enum Backend {
    /// `file://` buckets under a directory.
    Local,
    /// The in-process S3 server.
    S3(s3::S3Server),
    /// The GCS emulator behind the test proxy.
    Gcs(gcs::GcsServer),
}

/// A store with a `dev` context, and the agent configured for it.
pub struct World {
    /// Scratch directory of the test (removed on drop).
    pub tmp: tempfile::TempDir,
    /// Directory holding one directory per bucket (the S3 server's and the GCS emulator's root,
    /// too).
    pub buckets: PathBuf,
    /// The backend.
    pub backend: Backend,
    env: Vec<(String, String)>,
}

impl World {
    /// The world of `backend`, whose buckets are under `buckets`, with context `dev`
    /// created by the agent run with `env`.
    fn with_context(
        tmp: tempfile::TempDir,
        buckets: PathBuf,
        backend: Backend,
        env: Vec<(String, String)>,
    ) -> Self {
        let w = Self {
            tmp,
            buckets,
            backend,
            env,
        };
        w.ok(&["context", "create"]);
        w
    }

    /// A local-directory store with context `dev` created.
    pub fn local() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let buckets = tmp.path().join("store");
        let config = format!("file://{}/config", buckets.display());
        let env = base_env(&config, &tmp);
        Self::with_context(tmp, buckets, Backend::Local, env)
    }

    /// An S3 store (in-process server) with context `dev` and its buckets created.
    pub fn s3() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let buckets = tmp.path().join("s3");
        let server = s3::S3Server::start(&buckets, 0).expect("start S3 server");
        for b in BUCKETS {
            server.create_bucket(b).expect("create bucket");
        }
        let mut env = base_env("s3://config", &tmp);
        env.extend([
            ("DATAMON_S3_ENDPOINT".to_string(), server.endpoint()),
            ("AWS_ACCESS_KEY_ID".to_string(), s3::ACCESS_KEY.to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                s3::SECRET_KEY.to_string(),
            ),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ]);
        Self::with_context(tmp, buckets, Backend::S3(server), env)
    }

    /// A GCS store (fake-gcs-server behind the test proxy, see [`gcs`]) with context `dev`
    /// and its buckets created, reached as an emulator (`STORAGE_EMULATOR_HOST`, so
    /// unsigned). The metadata server's addresses are a closed loopback port and every
    /// other address is kept from the agent ([`gcs::safe_env`]); tests that change them
    /// stay on loopback ([`World::agent`] checks).
    pub fn gcs() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let buckets = tmp.path().join("gcs");
        let server = gcs::GcsServer::start(&buckets, &BUCKETS, &tmp.path().join("gcs.log"))
            .expect("start the GCS emulator");
        let mut env = base_env("gs://config", &tmp);
        let metadata = format!("127.0.0.1:{}", gcs::closed_port());
        env.extend(gcs::safe_env(&metadata, &server.endpoint()));
        env.push(("STORAGE_EMULATOR_HOST".to_string(), server.host()));
        Self::with_context(tmp, buckets, Backend::Gcs(server), env)
    }

    /// The GCS server of a [`World::gcs`].
    pub fn gcs_server(&mut self) -> &mut gcs::GcsServer {
        match &mut self.backend {
            Backend::Gcs(s) => s,
            _ => panic!("not a GCS world"),
        }
    }

    /// Every backend, for tests that must pass on each.
    pub fn each() -> [Self; 3] {
        [Self::local(), Self::s3(), Self::gcs()]
    }

    /// A short name of the backend for assertion messages.
    pub fn name(&self) -> &'static str {
        match self.backend {
            Backend::Local => "local",
            Backend::S3(_) => "s3",
            Backend::Gcs(_) => "gcs",
        }
    }

    /// The environment every agent run gets (store, credentials, context); on GCS, checked
    /// to keep the agent on loopback ([`gcs::assert_local`]).
    pub fn env_vars(&self) -> &[(String, String)] {
        if let Backend::Gcs(_) = self.backend {
            gcs::assert_local(&self.env);
        }
        &self.env
    }

    /// Sets an environment variable for later agent runs.
    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.to_string(), v.to_string()));
    }

    /// Removes an environment variable from later agent runs.
    pub fn unset_env(&mut self, k: &str) {
        self.env.retain(|(key, _)| key != k);
    }

    /// The agent command with this world's environment (and nothing from the test's).
    pub fn agent(&self) -> Command {
        let mut c = Command::new(workspace_bin("datamon-agent"));
        c.env_clear();
        c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        c.envs(
            self.env_vars()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        c
    }

    /// Runs the agent.
    pub fn run(&self, args: &[&str]) -> Output {
        self.agent().args(args).output().expect("run datamon-agent")
    }

    /// Runs the agent, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "[{}] datamon-agent {args:?} failed ({}):\n{}",
            self.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the agent, asserts failure, returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "[{}] datamon-agent {args:?} should have failed; stdout:\n{}",
            self.name(),
            String::from_utf8_lossy(&out.stdout)
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The bundles of `repo` (ids), as `bundle list` gives them.
    pub fn bundles(&self, repo: &str) -> Vec<String> {
        let out = self.ok(&["bundle", "list", "--repo", repo, "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Creates the repo `repo`.
    pub fn create_repo(&self, repo: &str, description: &str) {
        self.ok(&[
            "repo",
            "create",
            "--repo",
            repo,
            "--description",
            description,
        ]);
    }

    /// Downloads the bundle of `repo` that `extra` names (the latest without) to `dest`;
    /// returns the agent's output.
    pub fn download(&self, repo: &str, dest: &Path, extra: &[&str]) -> String {
        let d = dest.to_string_lossy();
        self.ok(&download_args(repo, &d, extra))
    }

    /// The files of bundle `id` of `repo`, downloaded to a fresh directory.
    pub fn bundle_files(&self, repo: &str, id: &str) -> Vec<(String, Vec<u8>)> {
        let dest = self.path(&format!("check-{repo}-{id}"));
        self.download(repo, &dest, &["--bundle", id]);
        read_tree(&dest)
    }

    /// Creates the repo `repo` and uploads a bundle of `files` (name, bytes) to it; returns
    /// its id.
    pub fn seed(&self, repo: &str, files: &[(&str, Vec<u8>)]) -> String {
        self.create_repo(repo, "test");
        let dir = self.path(&format!("seed-{repo}"));
        for (name, bytes) in files {
            write_file(&dir.join(name), bytes);
        }
        self.upload(repo, &dir, &[])
    }

    /// Uploads `dir` to `repo` and returns the new bundle id.
    pub fn upload(&self, repo: &str, dir: &Path, extra: &[&str]) -> String {
        let mut args = vec![
            "bundle",
            "upload",
            "--repo",
            repo,
            "--message",
            "test",
            "--path",
        ];
        let p = dir.to_string_lossy().into_owned();
        args.push(&p);
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        out.trim()
            .strip_prefix("Uploaded bundle id:")
            .unwrap_or_else(|| panic!("unexpected upload output {out:?}"))
            .to_string()
    }

    /// The blob bucket directory (same layout on every backend).
    pub fn blob_dir(&self) -> PathBuf {
        self.buckets.join("dev-blob")
    }

    /// The first blob of `len` bytes in the blob bucket (a leaf of a known size), which
    /// must be there (`what` says which).
    pub fn blob_of_len(&self, len: usize, what: &str) -> PathBuf {
        list_files(&self.blob_dir())
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == len as u64))
            .unwrap_or_else(|| panic!("no blob of {len} bytes: {what}"))
    }

    /// The metadata bucket directory.
    pub fn metadata_dir(&self) -> PathBuf {
        self.buckets.join("dev-metadata")
    }

    /// A fresh directory path under the scratch directory (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// The buckets of a remote world: the config bucket and context `dev`'s.
const BUCKETS: [&str; 6] = [
    "config",
    "dev-blob",
    "dev-metadata",
    "dev-v-metadata",
    "dev-wal",
    "dev-read-log",
];

fn base_env(config: &str, tmp: &tempfile::TempDir) -> Vec<(String, String)> {
    vec![
        ("DATAMON_GLOBAL_CONFIG".into(), config.into()),
        ("HOME".into(), tmp.path().display().to_string()),
        ("DATAMON_CONTRIBUTOR__NAME".into(), "Test Runner".into()),
        (
            "DATAMON_CONTRIBUTOR__EMAIL".into(),
            "tests@example.com".into(),
        ),
        ("DATAMON_RETRY_TIMEOUT_SECS".into(), "5".into()),
        ("DATAMON_CONNECT_TIMEOUT_SECS".into(), "2".into()),
    ]
}

/// The arguments of `bundle download --repo <repo> --destination <dest>`, then `extra`.
pub fn download_args<'a>(repo: &'a str, dest: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["bundle", "download", "--repo", repo, "--destination", dest];
    args.extend_from_slice(extra);
    args
}

/// A tree of edge cases under `dir`: empty, one-byte and small files; files of exactly one
/// leaf (2 MiB, the default leaf size), one byte more, and several leaves with a short
/// last one, at several depths.
pub fn sample_tree(dir: &Path) {
    write_file(&dir.join("empty"), b"");
    write_file(&dir.join("one-byte"), b"x");
    write_file(&dir.join("hello.txt"), b"hello world\n");
    write_file(&dir.join("a/b/c/deep.txt"), b"deep");
    write_file(&dir.join("a/big"), &noise(5 * MIB + 3, 11));
    write_file(&dir.join("sizes/2mib"), &noise(2 * MIB, 1));
    write_file(&dir.join("sizes/2mib+1"), &noise(2 * MIB + 1, 2));
    write_file(&dir.join("sizes/deep/er/5mib+3"), &noise(5 * MIB + 3, 3));
}

/// Deterministic bytes: byte i is (i * 31 + 7) % 251 (the pattern of the test vectors).
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

/// Pseudo-random bytes from a seed (xorshift), for content that must not dedup.
pub fn noise(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Writes a file, creating parent directories.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, bytes).expect("write");
}

/// Every regular file under `root`, relative name → bytes, sorted.
pub fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(e.path()).expect("read")));
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` recursively (paths), sorted.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}
