//! The plan document. Field names are snake_case in YAML and JSON; every field but an
//! input's or output's `name`, `repo` and `path` has a default, so a minimal plan is short:
//!
//! ```yaml
//! inputs:
//!   - { name: raw, repo: measurements, label: v3, path: /data/raw }
//! outputs:
//!   - { name: result, repo: results, path: /data/out, message: "nightly run" }
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Version of the coordination protocol and of this schema (`docs/protocol.md`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Participant name of the application wrapper; no sidecar may take it.
pub const APP: &str = "app";

/// Name of the one sidecar that does all the work when a plan names none.
pub const DEFAULT_SIDECAR: &str = "datamon";

/// A pod's data plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plan {
    /// Schema version; only [`PROTOCOL_VERSION`] is understood.
    pub version: u32,
    /// Directory shared by every participant (an emptyDir mounted in each container), where
    /// the state files and liveness locks live.
    pub coordination: PathBuf,
    /// Where each agent process writes its outcome for Kubernetes to show.
    pub termination_message: PathBuf,
    /// Which store; fields left out come from the agent's usual settings.
    pub store: Store,
    /// Bundles the application reads.
    pub inputs: Vec<Input>,
    /// Directories that become new bundles when the application is done.
    pub outputs: Vec<Output>,
    /// PostgreSQL servers the application uses, each restored from a bundle (or new and
    /// empty) and saved back as a new bundle when the plan says so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<Database>,
    /// Agent processes and the work each does; empty means one sidecar named
    /// [`DEFAULT_SIDECAR`] doing everything.
    pub sidecars: Vec<Sidecar>,
    /// Participant names of the wrapped application containers (`wrap --participant`);
    /// empty means one, named [`APP`]. Outputs are uploaded once every one has exited.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// How long each wait may last.
    pub deadlines: Deadlines,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            coordination: PathBuf::from("/var/run/datamon"),
            termination_message: PathBuf::from("/dev/termination-log"),
            store: Store::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            databases: Vec::new(),
            sidecars: Vec::new(),
            apps: Vec::new(),
            deadlines: Deadlines::default(),
        }
    }
}

/// The store, as in the agent's settings (`--config`, `--context`, `--s3-endpoint`,
/// `--gcs-endpoint`, `--gcs-anonymous`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// Config bucket URL (`gs://b`, `s3://b`, `file:///dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Context name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Endpoint of an S3-compatible server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// Endpoint of a GCS emulator (requests to it go unsigned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs_endpoint: Option<String>,
    /// GCS without credentials (a public bucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcs_anonymous: Option<bool>,
}

/// A bundle the application reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Name of the input in states and messages (lowercase letters, digits, `-`).
    pub name: String,
    /// Repository.
    pub repo: String,
    /// Bundle id; at most one of `bundle` and `label`; neither means the latest bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Label naming the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Where the application finds the files (absolute path).
    pub path: PathBuf,
    /// Download the files, or mount the bundle read-only.
    #[serde(default)]
    pub mode: InputMode,
    /// Only entries whose names match this regular expression (downloads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_filter: Option<String>,
}

/// How an input reaches the application.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// Every file is downloaded and verified before the application starts.
    #[default]
    Download,
    /// A read-only FUSE mount: bytes are fetched when read.
    Mount,
}

/// A directory that becomes a new bundle when the application is done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Name of the output in states and messages (lowercase letters, digits, `-`).
    pub name: String,
    /// Repository (must exist).
    pub repo: String,
    /// Directory the application writes (absolute path).
    pub path: PathBuf,
    /// Commit message of the new bundle.
    #[serde(default = "default_message")]
    pub message: String,
    /// Label set on the new bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Who is recorded as contributor; the agent's setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contributor: Option<Contributor>,
    /// When to upload.
    #[serde(default)]
    pub upload: UploadWhen,
}

fn default_message() -> String {
    "uploaded by datamon-sidecar".to_string()
}

/// Contributor of a new bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contributor {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// When an output is uploaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadWhen {
    /// Only when the application exits 0.
    #[default]
    OnSuccess,
    /// Whenever the application ran and exited, whatever its code (not when it never
    /// started or was stopped because a sidecar failed).
    Always,
}

/// An agent process (a container running `datamon-agent sidecar`) and its share of work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// Participant name (lowercase letters, digits, `-`; not `app`).
    pub name: String,
    /// Names of the inputs it provides.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Names of the outputs it uploads.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Names of the databases it runs (restores, serves, saves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// How the container runs.
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

/// How a sidecar container ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// It exits by itself once its work is done (a regular container or a plain init
    /// container): downloads done, mounts no longer needed, outputs uploaded.
    #[default]
    Classic,
    /// A native sidecar (init container with `restartPolicy: Always`): after its work it
    /// stays until the kubelet sends SIGTERM, since exiting would restart it.
    Native,
}

/// How long each wait may last (`30s`, `10m`, `1h30m`, `500ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Deadlines {
    /// The wrapper waits this long for every sidecar to be ready (inputs downloaded or
    /// mounted) before it gives up without starting the application.
    #[serde(with = "humantime_serde")]
    pub ready: Duration,
    /// A sidecar with outputs or mounts waits this long for the wrapper to appear.
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// The application may run this long; none by default.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub app: Option<Duration>,
    /// After the application exits, the wrapper waits this long for the outputs.
    #[serde(with = "humantime_serde")]
    pub upload: Duration,
    /// Between SIGTERM and SIGKILL when the wrapper stops the application.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            ready: Duration::from_secs(3600),
            start: Duration::from_secs(3600),
            app: None,
            upload: Duration::from_secs(3600),
            grace: Duration::from_secs(10),
        }
    }
}

impl Plan {
    /// The sidecars, with the default one when the plan names none (and has work).
    pub fn effective_sidecars(&self) -> Vec<Sidecar> {
        if !self.sidecars.is_empty() {
            return self.sidecars.clone();
        }
        if self.inputs.is_empty() && self.outputs.is_empty() && self.databases.is_empty() {
            return Vec::new();
        }
        vec![Sidecar {
            name: DEFAULT_SIDECAR.to_string(),
            inputs: self.inputs.iter().map(|i| i.name.clone()).collect(),
            outputs: self.outputs.iter().map(|o| o.name.clone()).collect(),
            databases: self.databases.iter().map(|d| d.name.clone()).collect(),
            lifecycle: Lifecycle::Classic,
        }]
    }

    /// Whether `sidecar` uploads anything once the applications are done: it has outputs,
    /// or runs a database with an output (saved as a new bundle). The wrapper waits for
    /// these after the application exits; a sidecar of this plan that uploads nothing has
    /// no outcome to wait for.
    pub fn uploads(&self, sidecar: &Sidecar) -> bool {
        !sidecar.outputs.is_empty()
            || sidecar
                .databases
                .iter()
                .filter_map(|n| self.database(n))
                .any(|d| d.output.is_some())
    }

    /// The sidecars ([`Plan::effective_sidecars`]) that upload ([`Plan::uploads`]).
    pub fn sidecars_that_upload(&self) -> Vec<Sidecar> {
        self.effective_sidecars()
            .into_iter()
            .filter(|s| self.uploads(s))
            .collect()
    }

    /// The wrapped applications' participant names, with the default one when the plan
    /// names none.
    pub fn effective_apps(&self) -> Vec<String> {
        if self.apps.is_empty() {
            vec![APP.to_string()]
        } else {
            self.apps.clone()
        }
    }

    /// The input named `name`.
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The output named `name`.
    pub fn output(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// The database named `name`.
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
    }
}

/// A PostgreSQL server of the pod: its data directory restored from a bundle (or a new,
/// empty cluster), served on `localhost:<port>` and a Unix socket while the application
/// runs, then saved as a new bundle (unless it is read-only: no `output`).
///
/// ```yaml
/// databases:
///   - name: warehouse
///     source: { repo: pg-warehouse, label: latest-good }
///     port: 5432
///     output: { repo: pg-warehouse, label: latest-good, message: "nightly" }
///     owner: { role: app, password_env: WAREHOUSE_PASSWORD }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Name in states and messages (lowercase letters, digits, `-`); also the database the
    /// owner gets in a new cluster.
    pub name: String,
    /// The bundle holding the data directory; none: a new, empty cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DatabaseSource>,
    /// TCP port on localhost, unique in the pod.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Where the data directory is saved; none: read-only, never uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<DatabaseOutput>,
    /// When to save (`on_success` or `always`, as for outputs).
    #[serde(default)]
    pub upload: UploadWhen,
    /// The role the application connects as.
    #[serde(default)]
    pub owner: Owner,
    /// The database the application connects to (its `DATAMON_DB_<NAME>_DATABASE`); none:
    /// the database's `name` for a new cluster (which gets it), `postgres` for a restored
    /// one. A restored cluster without it fails before the application starts, with the
    /// databases it does have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// PostgreSQL major version of the server; none: the newest the agent finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    /// Server settings (`postgres -c name=value`), e.g. `shared_buffers: 256MB`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
    /// Parent of the data directory (an emptyDir); the data directory is `<dir>/data`.
    /// None: `<DATABASE_ROOT>/<name>` ([`Database::dir_or_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Directory of the server's Unix socket (a volume shared with the application);
    /// none: `<coordination>/postgres/<name>` ([`Database::socket_dir_or_default`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_dir: Option<PathBuf>,
}

fn default_port() -> u16 {
    5432
}

/// Where a database's directory is when the plan gives no `dir`: `<this>/<name>` (the
/// webhook mounts an emptyDir here in the agent container).
pub const DATABASE_ROOT: &str = "/var/lib/datamon/postgres";

/// The file in a database's socket directory holding the owner's generated password (when
/// `owner.password_env` is not set).
pub const PASSWORD_FILE: &str = "password";

impl Database {
    /// The database the application connects to: `database`, else the name for a new
    /// cluster and `postgres` for a restored one.
    pub fn database_name(&self) -> &str {
        match (&self.database, &self.source) {
            (Some(d), _) => d,
            (None, None) => &self.name,
            (None, Some(_)) => "postgres",
        }
    }

    /// The parent of the data directory: `dir`, else `<DATABASE_ROOT>/<name>`.
    pub fn dir_or_default(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| std::path::Path::new(DATABASE_ROOT).join(&self.name))
    }

    /// The directory of the server's Unix socket: `socket_dir`, else
    /// `<coordination>/postgres/<name>`.
    pub fn socket_dir_or_default(&self, coordination: &std::path::Path) -> PathBuf {
        self.socket_dir
            .clone()
            .unwrap_or_else(|| coordination.join("postgres").join(&self.name))
    }

    /// The server's Unix socket: `<socket dir>/.s.PGSQL.<port>`, as libpq names it.
    pub fn socket_path(&self, coordination: &std::path::Path) -> PathBuf {
        self.socket_dir_or_default(coordination)
            .join(format!(".s.PGSQL.{}", self.port))
    }
}

/// Which bundle a database is restored from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSource {
    /// Repository.
    pub repo: String,
    /// Bundle id; at most one of `bundle` and `label`; neither means the latest bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Label naming the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Where a database is saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseOutput {
    /// Repository (must exist).
    pub repo: String,
    /// Commit message of the new bundle (a migration adds what it did).
    #[serde(default = "default_message")]
    pub message: String,
    /// Label set on the new bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Who is recorded as contributor; the agent's setting when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contributor: Option<Contributor>,
}

/// The role the application connects as, and its password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Owner {
    /// Role name; created (LOGIN) if the cluster lacks it.
    pub role: String,
    /// Environment variable of the agent holding the password (the webhook fills it from a
    /// Secret key); none: the agent generates one and writes it to
    /// `<socket_dir>/password` for the application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl Default for Owner {
    fn default() -> Self {
        Self {
            role: "postgres".to_string(),
            password_env: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Plan {
        serde_norway::from_str(yaml).unwrap()
    }

    fn names(sidecars: Vec<Sidecar>) -> Vec<String> {
        sidecars.into_iter().map(|s| s.name).collect()
    }

    #[test]
    fn a_sidecar_uploads_with_an_output_or_a_database_saved() {
        let plan = parse(
            r#"
inputs: [{name: raw, repo: r, path: /in, mode: mount}]
outputs: [{name: out, repo: r, path: /out}]
databases:
  - {name: saved, output: {repo: pg}}
  - {name: read-only, port: 5433}
sidecars:
  - {name: mounts, inputs: [raw]}
  - {name: writes, outputs: [out]}
  - {name: saves, databases: [saved]}
  - {name: serves, databases: [read-only]}
  - {name: both, databases: [read-only, saved]}
"#,
        );
        let uploads: Vec<bool> = plan.sidecars.iter().map(|s| plan.uploads(s)).collect();
        assert_eq!(uploads, [false, true, true, false, true]);
        assert_eq!(
            names(plan.sidecars_that_upload()),
            ["writes", "saves", "both"]
        );
    }

    #[test]
    fn the_default_sidecar_uploads_what_the_plan_saves() {
        let inputs_only = parse("inputs: [{name: raw, repo: r, path: /in}]");
        assert!(inputs_only.sidecars_that_upload().is_empty());
        let read_only_db = parse("databases: [{name: ledger}]");
        assert!(read_only_db.sidecars_that_upload().is_empty());
        let saved_db = parse("databases: [{name: ledger, output: {repo: pg}}]");
        assert_eq!(names(saved_db.sidecars_that_upload()), [DEFAULT_SIDECAR]);
        assert!(parse("{}").sidecars_that_upload().is_empty());
    }
}
