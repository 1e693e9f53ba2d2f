//! PostgreSQL databases of a pod's data plan: a data directory restored from a bundle (or
//! a new cluster), migrated to the server's major when it is older, served to the
//! application on localhost and a Unix socket, then saved back as a datamon-compatible
//! bundle (the raw data directory with `pg_version` at its root).
//!
//! - `binaries`: which PostgreSQL builds are installed, one per major;
//! - `control`: `PG_VERSION` and `global/pg_control`, read without the server (pure);
//! - `process`: PostgreSQL's programs run as the server's non-root account, with deadlines;
//! - `migrate`: an old major's data directory moved to a newer one (pg_upgrade, or dump
//!   and restore);
//! - `datadir`: what a restored copy lacks and a saved one need not carry (pure rules);
//! - `server`: one server started as the agent's child, its access rules (the agent by
//!   peer authentication, the application by password), ready, watched, stopped;
//! - `restore` and `save`: the steps the sidecar runs before and after the application.

pub(crate) mod binaries;
pub(crate) mod control;
pub(crate) mod datadir;
pub(crate) mod migrate;
pub(crate) mod process;
pub(crate) mod restore;
pub(crate) mod save;
pub(crate) mod server;

use std::path::{Path, PathBuf};

impl DatabaseError {
    /// Wraps an I/O error on `path` with what was being done.
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| DatabaseError::Io { op, path, source }
    }
}

/// Whether `e` or an error in its chain says the disk is full: an I/O error ENOSPC, or a
/// program's or server's output quoting it ("No space left on device").
pub(crate) fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        let io_full = c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull);
        if io_full || c.to_string().contains("No space left on device") {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Why a database could not be restored, served or saved; the sidecar names the database
/// before it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DatabaseError {
    /// A PostgreSQL program failed.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// The data directory cannot be read.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The data directory cannot be prepared or pruned.
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    /// The migration failed.
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// A file or directory of the database.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The owner's password variable is missing.
    #[error("the environment variable {var} (owner.password_env) holding the password of role {role} is not set or empty: set it in the agent's container (the webhook fills it from the Secret key), or leave password_env out to have one generated")]
    NoPassword {
        /// The variable.
        var: String,
        /// The role.
        role: String,
    },
    /// The build the database needs is missing.
    #[error("{}: the image must contain it (set postgres.bin_dirs / DATAMON_POSTGRES__BIN_DIRS to where it is), or choose an installed `major` (installed: {found})", match major { Some(m) => format!("no PostgreSQL {m} build is installed"), None => "no PostgreSQL build is installed".to_string() })]
    NoBuild {
        /// The major asked for (none: any).
        major: Option<u32>,
        /// What was found.
        found: String,
    },
    /// The source bundle could not be downloaded.
    #[error("cannot restore the source from repo {repo}")]
    Download {
        /// The repo.
        repo: String,
        /// Why (boxed: it is large).
        #[source]
        source: Box<crate::Error>,
    },
    /// The restored cluster lacks the application's database.
    #[error("the restored cluster has no database {database:?} for the application (it has {}): set `database` to one of them in the database's entry (datamon.io/database.{name}), or restore a bundle that has it", have.join(", "))]
    NoSuchDatabase {
        /// The plan's database.
        name: String,
        /// The database the application was to use.
        database: String,
        /// The databases the cluster has.
        have: Vec<String>,
    },
    /// The source bundle is not a data directory.
    #[error("bundle {bundle} of repo {repo} is not a PostgreSQL data directory (no PG_VERSION at its root): give a bundle saved from a data directory as the source, or no source for a new cluster")]
    NotDataDir {
        /// The repo.
        repo: String,
        /// The bundle id.
        bundle: String,
    },
    /// The server will not start on the restored data directory.
    #[error("the server cannot start on bundle {bundle} of repo {repo}{}: its data directory is corrupt or of another PostgreSQL build; restore another bundle (an earlier one, or the one its label named before), or none for a new cluster", match complaint { Some(c) => format!(" ({c})"), None => String::new() })]
    Unstartable {
        /// The repo.
        repo: String,
        /// The bundle id.
        bundle: String,
        /// The server's FATAL or PANIC line.
        complaint: Option<String>,
        /// The server's failure, with its log.
        #[source]
        source: Box<DatabaseError>,
    },
    /// The source bundle's PG_VERSION is no version.
    #[error("bundle {bundle} of repo {repo} is no PostgreSQL data directory of a known version: its PG_VERSION holds {content:?} (the image's builds: {installed}); the data directory is corrupt or foreign: restore a bundle saved from a PostgreSQL data directory")]
    BadVersion {
        /// The repo.
        repo: String,
        /// The bundle id.
        bundle: String,
        /// PG_VERSION's start.
        content: String,
        /// The builds installed.
        installed: String,
    },
    /// The source bundle's major is one this image can neither run nor migrate.
    #[error("bundle {bundle} of repo {repo} holds PostgreSQL {found} data, which this image can neither run nor migrate (its builds: {installed})")]
    Foreign {
        /// The repo.
        repo: String,
        /// The bundle id.
        bundle: String,
        /// PG_VERSION as found ("9.6").
        found: String,
        /// The builds installed.
        installed: String,
        /// Why (what the image must contain).
        #[source]
        source: Box<DatabaseError>,
    },
    /// The source bundle is of a newer major than the server.
    #[error("bundle {bundle} of repo {repo} holds PostgreSQL {data} data, newer than the server (PostgreSQL {server}): a cluster cannot be moved to an older major; run a server of major {data} or newer (`major`, and its build in the image; the image's builds: {installed})")]
    Newer {
        /// The repo.
        repo: String,
        /// The bundle id.
        bundle: String,
        /// The data's major.
        data: u32,
        /// The server's version.
        server: String,
        /// The builds installed.
        installed: String,
    },
    /// The server did not stop cleanly, so its files are no consistent copy.
    #[error("the server did not shut down cleanly ({status}; pg_control says {state}): the data directory is not saved; the last lines of its log:\n{tail}")]
    Unclean {
        /// The postmaster's exit status.
        status: String,
        /// pg_control's state.
        state: String,
        /// The log's last lines.
        tail: String,
    },
    /// The disk of the database's directory filled up while it was restored (the partial
    /// copy is removed).
    #[error("no space left on the disk of {dir}{detail}: give the database more room (a bigger emptyDir `sizeLimit` or volume, or the plan's `dir` on a larger one); what was restored so far is removed, the next attempt starts afresh")]
    NoSpace {
        /// The database's directory.
        dir: PathBuf,
        /// What was needed and free, when known (" (the bundle holds 40 MiB, 7.9 MiB free)").
        detail: String,
        /// The step that failed, when the disk filled during one.
        #[source]
        source: Option<Box<DatabaseError>>,
    },
    /// A disk filled up while the database was saved (nothing was committed).
    #[error("no space left {place} while saving: nothing was committed (no new bundle; a label still names the bundle it named before): free space there or give it a larger volume, then run the job again")]
    SaveNoSpace {
        /// Where: "in the store of repo pg", "on the disk of <data dir>".
        place: String,
        /// The step that failed.
        #[source]
        source: Box<DatabaseError>,
    },
    /// The upload failed (nothing was committed).
    #[error("cannot save the data directory to repo {repo}")]
    Upload {
        /// The repo.
        repo: String,
        /// Why (boxed: it is large).
        #[source]
        source: Box<crate::Error>,
    },
}
