//! The agent library's error type: every variant names the input at fault and says what
//! to do about it. The CLI prints it once as a chain (`datamon_edge::chain`: each source
//! after its error, each text said once) and turns it into an exit code (`cli::exit_code`).

use std::path::PathBuf;

use crate::cafs::key::InvalidKey;
use crate::cafs::leaf::InvalidLeafSize;
use crate::cafs::root::RootError;

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading or writing datamon repositories.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A store URL that cannot be used.
    #[error("invalid store URL {url:?}: {reason}")]
    StoreUrl {
        /// The URL as given.
        url: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A store operation failed (after retries, for remote stores).
    #[error("cannot {op} {location}")]
    Store {
        /// The operation (e.g. "read", "write").
        op: &'static str,
        /// `<bucket URL>/<key>`.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The store refused the credentials, or they lack a permission.
    #[error("permission denied to {op} {location}: the credentials need {permission} on the bucket (check which identity the pod runs as, and its IAM bindings)")]
    Denied {
        /// The operation (e.g. "read", "write").
        op: &'static str,
        /// `<bucket URL>/<key>`.
        location: String,
        /// The permission the operation needs.
        permission: &'static str,
        /// The store's error (boxed: it is large, and this variant rare).
        #[source]
        source: Box<object_store::Error>,
    },
    /// No usable Google credentials for a GCS bucket.
    #[error("cannot authenticate to gs://{bucket}: {reason}")]
    GcsCredentials {
        /// The bucket.
        bucket: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// No configuration bucket was given.
    #[error("no config bucket: pass --config URL (gs://bucket, s3://bucket or file:///dir), set DATAMON_GLOBAL_CONFIG, or set `config:` in the config file")]
    NoConfigBucket,
    /// The context does not exist in the config bucket.
    #[error("context {context:?} not found in config bucket {config}: create it with `datamon-agent context create --context {context}` or pass the right --context")]
    ContextNotFound {
        /// The context name.
        context: String,
        /// The config bucket URL.
        config: String,
    },
    /// The context already exists.
    #[error("context {context:?} already exists in config bucket {config}")]
    ContextExists {
        /// The context name.
        context: String,
        /// The config bucket URL.
        config: String,
    },
    /// The repository does not exist.
    #[error("repo {repo:?} not found: list repos with `datamon-agent repo list` or create it with `datamon-agent repo create --repo {repo} --description ...`")]
    RepoNotFound {
        /// The repository name.
        repo: String,
    },
    /// The repository already exists.
    #[error("repo {repo:?} already exists")]
    RepoExists {
        /// The repository name.
        repo: String,
    },
    /// The bundle does not exist (no committed bundle.yaml).
    #[error("bundle {bundle:?} not found in repo {repo:?}: list bundles with `datamon-agent bundle list --repo {repo}`")]
    BundleNotFound {
        /// The repository name.
        repo: String,
        /// The bundle id.
        bundle: String,
    },
    /// The repository has no bundle yet ("latest" asked for).
    #[error("repo {repo:?} has no bundle yet: upload one with `datamon-agent bundle upload --repo {repo} --path DIR --message ...`")]
    NoBundle {
        /// The repository name.
        repo: String,
    },
    /// The label does not exist.
    #[error("label {label:?} not found in repo {repo:?}: list labels with `datamon-agent label list --repo {repo}`")]
    LabelNotFound {
        /// The repository name.
        repo: String,
        /// The label name.
        label: String,
    },
    /// A name (repo, label, bundle id) that datamon would not accept.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// "repo", "label", "bundle id", "context".
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What is allowed.
        reason: String,
    },
    /// A metadata document that does not parse or does not make sense.
    #[error("invalid document {location}: {reason}")]
    Document {
        /// `<bucket URL>/<key>`.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A bundle entry whose name would escape the destination or is otherwise unsafe.
    #[error("bundle entry {name:?} is unsafe: {reason}; refusing to download it (the bundle was not written by datamon or has been tampered with)")]
    UnsafeEntry {
        /// The entry name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A leaf whose bytes do not hash to its key.
    #[error("leaf {key} of {file:?} is corrupt: its bytes hash to {computed}; the blob store is damaged (nothing was written for this file)")]
    LeafMismatch {
        /// The expected key.
        key: String,
        /// The computed key.
        computed: String,
        /// The file being read.
        file: String,
    },
    /// A leaf of the wrong length.
    #[error(
        "leaf {key} of {file:?} is {len} bytes, expected {expected}; the blob store is damaged"
    )]
    LeafLength {
        /// The leaf key.
        key: String,
        /// The file being read.
        file: String,
        /// Bytes found.
        len: usize,
        /// Bytes expected.
        expected: u64,
    },
    /// A leaf or root object that is missing from the blob bucket.
    #[error("{what} {key} of {file:?} is missing from the blob bucket {bucket}")]
    MissingBlob {
        /// "leaf" or "root object".
        what: &'static str,
        /// The key.
        key: String,
        /// The file.
        file: String,
        /// The blob bucket URL.
        bucket: String,
    },
    /// A root object that fails its checks.
    #[error("file {file:?}")]
    Root {
        /// The file.
        file: String,
        /// What is wrong with the root object.
        #[source]
        source: RootError,
    },
    /// An invalid key in a document.
    #[error("bad hash for {file:?}")]
    Key {
        /// The entry.
        file: String,
        /// The parse error.
        #[source]
        source: InvalidKey,
    },
    /// An invalid leaf size.
    #[error(transparent)]
    LeafSize(#[from] InvalidLeafSize),
    /// A non-empty download destination.
    #[error("destination {path} is not empty: choose an empty or new directory, or pass --force-dest to download into it anyway (existing files with the same names are replaced)")]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// A mount point that cannot be used.
    #[error("cannot mount on {path}: {reason}")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// Mounting, serving or unmounting a bundle failed.
    #[error("cannot {op} {path}")]
    Mount {
        /// The operation.
        op: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A local file-system operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data plan cannot be loaded or is not valid.
    #[error(transparent)]
    Plan(#[from] crate::runtime::PlanLoadError),
    /// A command that cannot run as given (a participant the plan does not name, no
    /// command after `--`): the message says what to pass instead.
    #[error("{0}")]
    Usage(String),
    /// A name filter that is not a valid regular expression.
    #[error("invalid --name-filter {pattern:?}")]
    NameFilter {
        /// The pattern.
        pattern: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// A document that cannot be written as YAML.
    #[error("cannot serialize {what} as YAML")]
    Serialize {
        /// What was being written.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_norway::Error,
    },
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
    /// An invariant of this program broke: a bug, not bad input.
    #[error("internal error (a bug in datamon-agent; please report it): {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
