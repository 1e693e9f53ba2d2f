//! Restore: one database of the plan from its bundle (downloaded and verified like any
//! input) or a new cluster (initdb), made startable (the skeleton of empty directories,
//! no stale postmaster files, owned 0700 by the server account), migrated when its major
//! is older than the server's, started, ready, and its owner role ensured with its
//! password.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datamon_plan::schema::PASSWORD_FILE;
use datamon_plan::{Database, DatabaseSource};

use super::binaries::{Binaries, Installed};
use super::migrate::{self, MigrateRequest, Migration};
use super::process::{self, Account};
use super::server::{Server, ServerError, ServerSpec};
use super::{control, datadir, DatabaseError};
use crate::bundle::download::{download, DownloadRequest};
use crate::bundle::BundleRef;
use crate::context::Stores;
use crate::progress::human;
use crate::tuning::Tuning;

/// How often the restore says how far its download is.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Where one database's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Paths {
    /// The database's own directory (`dir`).
    pub dir: PathBuf,
    /// The data directory, `<dir>/data`.
    pub data: PathBuf,
    /// Our access files and the server log, `<dir>/conf`.
    pub conf: PathBuf,
    /// Scratch of a migration (cwd, sockets, logs), `<dir>/m`.
    pub scratch: PathBuf,
    /// The migrated cluster before it replaces the data directory, `<dir>/data.new`.
    pub migrated: PathBuf,
    /// The socket directory (shared with the application).
    pub socket_dir: PathBuf,
}

impl Paths {
    /// The paths of `db` in a plan coordinated in `coordination` (pure).
    pub(crate) fn of(db: &Database, coordination: &Path) -> Paths {
        let dir = db.dir_or_default();
        Paths {
            data: dir.join("data"),
            conf: dir.join("conf"),
            scratch: dir.join("m"),
            migrated: dir.join("data.new"),
            socket_dir: db.socket_dir_or_default(coordination),
            dir,
        }
    }
}

/// What every restore shares.
pub(crate) struct Context<'a> {
    /// The store.
    pub stores: &'a Stores,
    /// Transfer tuning.
    pub tuning: Tuning,
    /// The builds found.
    pub installed: &'a Installed,
    /// The server account.
    pub account: &'a Account,
    /// The role the agent connects as.
    pub superuser: &'a str,
    /// The plan's coordination directory.
    pub coordination: &'a Path,
    /// Deadline of initdb and of a server's start until it is ready.
    pub start_deadline: Duration,
    /// Deadline of a migration.
    pub migrate_deadline: Duration,
    /// Reports a step (the sidecar's state file).
    pub tell: &'a (dyn Fn(String) + Sync),
    /// Called once the data directory is downloaded (at once for a new cluster, which has
    /// nothing to download): the restore's transfer ends there, so that its rate is the
    /// download's; the migration and the start that follow are steps of their own.
    pub fetched: &'a (dyn Fn() + Sync),
}

/// A database served to the application.
#[derive(Debug)]
pub(crate) struct Served {
    /// The plan's database.
    pub db: Database,
    /// Its files.
    pub paths: Paths,
    /// The running server.
    pub server: Server,
    /// The server's build.
    pub build: Binaries,
    /// The bundle it was restored from (none: a new cluster).
    pub source_bundle: Option<String>,
    /// The migration done on the way, if any.
    pub migration: Option<Migration>,
}

/// The owner's password: from the environment variable the plan names, else generated
/// (and later written for the application). Checked before any work.
pub(crate) fn owner_password(db: &Database) -> Result<(String, bool), DatabaseError> {
    match &db.owner.password_env {
        Some(var) => match std::env::var(var) {
            Ok(p) if !p.is_empty() => Ok((p, false)),
            _ => Err(DatabaseError::NoPassword {
                var: var.clone(),
                role: db.owner.role.clone(),
            }),
        },
        None => Ok((generate_password()?, true)),
    }
}

/// 36 hexadecimal characters from the kernel's random source.
fn generate_password() -> Result<String, DatabaseError> {
    use std::io::Read;
    let mut bytes = [0u8; 18];
    let path = Path::new("/dev/urandom");
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(DatabaseError::io("read", path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The build `db` runs on: its `major`, else the newest installed.
pub(crate) fn server_build<'a>(
    db: &Database,
    installed: &'a Installed,
) -> Result<&'a Binaries, DatabaseError> {
    let found = match db.major {
        Some(m) => installed.major(m),
        None => installed.newest(),
    };
    found.ok_or_else(|| DatabaseError::NoBuild {
        major: db.major,
        found: installed.describe(),
    })
}

/// Restores, starts and readies `db`. On a failure nothing half-restored is left (the
/// data directory, a migration's cluster and scratch are removed; the server's log in
/// `<dir>/conf` stays), and a full disk is said as such, naming the directory.
pub(crate) async fn restore(db: &Database, cx: &Context<'_>) -> Result<Served, DatabaseError> {
    let paths = Paths::of(db, cx.coordination);
    let err = match restore_in(db, &paths, cx).await {
        Ok(served) => return Ok(served),
        Err(e) => e,
    };
    // The server, if one was started, was killed when dropped with the failed attempt.
    for d in [&paths.data, &paths.migrated, &paths.scratch] {
        if let Err(e) = remove_dir_if_present(d) {
            tracing::warn!(database = %db.name, error = %datamon_edge::chain(&e), "cannot remove what the failed restore left");
        }
    }
    Err(match err {
        e @ DatabaseError::NoSpace { .. } => e,
        e if super::is_no_space(&e) => DatabaseError::NoSpace {
            dir: paths.dir.clone(),
            detail: String::new(),
            source: Some(Box::new(e)),
        },
        e => e,
    })
}

/// Starts the server of `db` on its data directory and waits until it is ready.
async fn start_server(
    db: &Database,
    build: &Binaries,
    paths: &Paths,
    cx: &Context<'_>,
) -> Result<Server, ServerError> {
    let mut server = Server::start(&ServerSpec {
        build,
        account: cx.account,
        data: &paths.data,
        socket_dir: &paths.socket_dir,
        conf_dir: &paths.conf,
        port: db.port,
        settings: &db.settings,
        superuser: cx.superuser,
    })
    .await?;
    server.ready(cx.start_deadline).await?;
    Ok(server)
}

/// The bytes free for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Result<u64, DatabaseError> {
    let s = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| DatabaseError::io("read the free space of", dir)(e.into()))?;
    Ok(s.blocks_available().saturating_mul(s.fragment_size()))
}

/// Fails, before anything is written, when a bundle of `total` bytes cannot fit in `dir`.
fn check_room(dir: &Path, total: u64) -> Result<(), DatabaseError> {
    let free = free_bytes(dir)?;
    if free < total {
        return Err(DatabaseError::NoSpace {
            dir: dir.to_path_buf(),
            detail: format!(" (the bundle holds {}, {} free)", human(total), human(free)),
            source: None,
        });
    }
    Ok(())
}

/// [`restore`] itself.
async fn restore_in(
    db: &Database,
    paths: &Paths,
    cx: &Context<'_>,
) -> Result<Served, DatabaseError> {
    let name = &db.name;
    let (password, generated) = owner_password(db)?;
    let build = server_build(db, cx.installed)?.clone();
    super::server::check_port_free(db.port)?;
    let paths = paths.clone();
    fresh_dirs(&paths)?;
    own_socket_dir(&paths.socket_dir, cx.account)?;
    let mut source_bundle = None;
    let mut migration = None;
    match &db.source {
        Some(src) => {
            let id = fetch(db, src, &paths, cx).await?;
            (cx.fetched)();
            let major = control::data_major(&paths.data).map_err(|e| match e {
                control::ControlError::NotDataDir(_) => DatabaseError::NotDataDir {
                    repo: src.repo.clone(),
                    bundle: id.clone(),
                },
                control::ControlError::BadVersion { content, .. } => DatabaseError::BadVersion {
                    repo: src.repo.clone(),
                    bundle: id.clone(),
                    content: content.trim().to_string(),
                    installed: cx.installed.describe(),
                },
                e => e.into(),
            })?;
            datadir::prepare_restored(&paths.data, major)?;
            cx.account.own(&paths.data)?;
            if major > build.major {
                return Err(DatabaseError::Newer {
                    repo: src.repo.clone(),
                    bundle: id,
                    data: major,
                    server: build.version.clone(),
                    installed: cx.installed.describe(),
                });
            }
            if major < build.major {
                let m = migrate_to(db, major, &build, &paths, cx).await;
                migration = Some(m.map_err(|e| match e {
                    e @ DatabaseError::Migrate(migrate::MigrateError::NoOldBuild { .. }) => {
                        DatabaseError::Foreign {
                            repo: src.repo.clone(),
                            bundle: id.clone(),
                            found: control::pg_version_text(&paths.data),
                            installed: cx.installed.describe(),
                            source: Box::new(e),
                        }
                    }
                    e => e,
                })?);
            }
            source_bundle = Some(id);
        }
        None => {
            (cx.fetched)();
            (cx.tell)(format!(
                "creating database {name}: a new PostgreSQL {} cluster",
                build.version
            ));
            init_cluster(&build, &paths.data, cx).await?;
        }
    }
    (cx.tell)(format!(
        "starting database {name}: PostgreSQL {} on port {}",
        build.version, db.port
    ));
    let started = start_server(db, &build, &paths, cx).await;
    let server = started.map_err(|e| match (e, &db.source, &source_bundle) {
        (e @ ServerError::Exited { .. }, Some(src), Some(bundle)) => DatabaseError::Unstartable {
            repo: src.repo.clone(),
            bundle: bundle.clone(),
            complaint: e.complaint(),
            source: Box::new(e.into()),
        },
        (e, ..) => e.into(),
    })?;
    let client = server.admin().await?;
    ensure_owner(&client, &db.owner.role, &password).await?;
    if db.source.is_none() {
        create_database(&client, db.database_name(), &db.owner.role).await?;
    } else {
        database_exists(&client, name, db.database_name()).await?;
    }
    if generated {
        write_password(&paths.socket_dir, &password)?;
    }
    tracing::info!(database = %name, port = db.port, pid = server.pid(), version = %build.version, bundle = ?source_bundle, migration = ?migration.as_ref().map(|m| m.to_string()), "database ready");
    Ok(Served {
        db: db.clone(),
        paths,
        server,
        build,
        source_bundle,
        migration,
    })
}

/// Removes the directory `d` and what it holds, if it is there.
fn remove_dir_if_present(d: &Path) -> Result<(), DatabaseError> {
    match std::fs::remove_dir_all(d) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(DatabaseError::io("remove the earlier", d)(e))
        }
        _ => Ok(()),
    }
}

/// Removes what an earlier attempt left (a data directory a server may have changed), and
/// creates the database's and the socket's directories.
fn fresh_dirs(paths: &Paths) -> Result<(), DatabaseError> {
    for d in [&paths.data, &paths.migrated, &paths.scratch] {
        remove_dir_if_present(d)?;
    }
    for d in [&paths.dir, &paths.socket_dir] {
        std::fs::create_dir_all(d).map_err(DatabaseError::io("create", d))?;
    }
    Ok(())
}

/// The socket directory: the server account writes its socket there, the application
/// (any user) reaches it and reads the password file (0755).
fn own_socket_dir(dir: &Path, account: &Account) -> Result<(), DatabaseError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |op| DatabaseError::io(op, dir);
    if process::is_root() {
        std::os::unix::fs::chown(dir, Some(account.uid), Some(account.gid)).map_err(io("chown"))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod"))
}

/// Downloads the source bundle into the data directory (verified, as inputs are), once
/// its size is known to fit, telling how far it is; the bundle's id.
async fn fetch(
    db: &Database,
    src: &DatabaseSource,
    paths: &Paths,
    cx: &Context<'_>,
) -> Result<String, DatabaseError> {
    let data = &paths.data;
    let bundle = BundleRef::from_flags(src.bundle.clone(), src.label.clone());
    let download_err = |source| DatabaseError::Download {
        repo: src.repo.clone(),
        source: Box::new(source),
    };
    let doc = crate::bundle::resolve(cx.stores, &src.repo, &bundle)
        .await
        .map_err(download_err)?;
    let total: u64 = crate::bundle::entries(cx.stores, &src.repo, &doc)
        .await
        .map_err(download_err)?
        .iter()
        .map(|e| e.size)
        .sum();
    check_room(&paths.dir, total)?;
    std::fs::create_dir_all(data).map_err(DatabaseError::io("create", data))?;
    let req = DownloadRequest {
        repo: src.repo.clone(),
        bundle: BundleRef::from_flags(Some(doc.id.clone()), None),
        destination: data.to_path_buf(),
        name_filter: None,
        force_dest: true,
    };
    let started = Instant::now();
    let tell = |done: u64| {
        (cx.tell)(format!(
            "restoring database {}: {} of {} (bundle {} of repo {})",
            db.name,
            human(done),
            human(total),
            doc.id,
            src.repo
        ))
    };
    tell(0);
    let work = download(cx.stores, &req, &cx.tuning);
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    let report = loop {
        tokio::select! {
            r = &mut work => break r.map_err(download_err)?,
            _ = tick.tick() => {
                let d = data.to_path_buf();
                if let Ok(done) = tokio::task::spawn_blocking(move || datadir::tree_bytes(&d)).await {
                    tell(done.min(total));
                }
            }
        }
    };
    tracing::info!(database = %db.name, bundle = %report.bundle.id, files = report.files, bytes = report.bytes, secs = started.elapsed().as_secs_f64(), "data directory downloaded");
    Ok(report.bundle.id)
}

/// A new cluster in `data`: the superuser, trust inside (our hba file is what is used),
/// UTF-8 without a locale (no collation tied to the C library).
async fn init_cluster(
    build: &Binaries,
    data: &Path,
    cx: &Context<'_>,
) -> Result<(), DatabaseError> {
    std::fs::create_dir_all(data).map_err(DatabaseError::io("create", data))?;
    cx.account.own(data)?;
    let mut cmd = process::command(&build.tool("initdb"), cx.account);
    cmd.arg("-D")
        .arg(data)
        .args([
            "-U",
            cx.superuser,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ])
        .current_dir(data);
    process::run(cmd, "initdb of a new cluster", cx.start_deadline).await?;
    Ok(())
}

/// Migrates the restored `<data>` of `old_major` to `build`, then puts the migrated cluster
/// in its place.
async fn migrate_to(
    db: &Database,
    old_major: u32,
    build: &Binaries,
    paths: &Paths,
    cx: &Context<'_>,
) -> Result<Migration, DatabaseError> {
    let old = cx.installed.major(old_major);
    migrate::choose(old_major, old, build)?;
    let old = old.ok_or_else(|| DatabaseError::NoBuild {
        major: Some(old_major),
        found: cx.installed.describe(),
    })?;
    (cx.tell)(format!(
        "migrating database {}: PostgreSQL {} → {}",
        db.name, old.version, build.version
    ));
    std::fs::create_dir_all(&paths.scratch).map_err(DatabaseError::io("create", &paths.scratch))?;
    cx.account.own(&paths.scratch)?;
    let started = Instant::now();
    let m = migrate::migrate(&MigrateRequest {
        old_data: &paths.data,
        old,
        new: build,
        new_data: &paths.migrated,
        scratch: &paths.scratch,
        account: cx.account,
        superuser: cx.superuser,
        deadline: cx.migrate_deadline,
    })
    .await?;
    let io = DatabaseError::io;
    std::fs::remove_dir_all(&paths.data).map_err(io("remove", &paths.data))?;
    std::fs::rename(&paths.migrated, &paths.data).map_err(io("rename", &paths.migrated))?;
    let _ = std::fs::remove_dir_all(&paths.scratch);
    tracing::info!(database = %db.name, migration = %m, secs = started.elapsed().as_secs_f64(), "migrated");
    Ok(m)
}

/// An SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal (standard_conforming_strings is on in every supported major).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The owner role exists, may log in, and has `password`.
async fn ensure_owner(
    client: &tokio_postgres::Client,
    role: &str,
    password: &str,
) -> Result<(), DatabaseError> {
    let sql = |what: String| move |source| ServerError::Sql { what, source };
    let exists = client
        .query_opt("select 1 from pg_roles where rolname = $1", &[&role])
        .await
        .map_err(sql(format!("look up the role {role}")))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    client
        .batch_execute(&format!(
            "{verb} ROLE {} LOGIN PASSWORD {}",
            ident(role),
            literal(password)
        ))
        .await
        .map_err(sql(format!(
            "{} the owner role {role}",
            verb.to_lowercase()
        )))?;
    Ok(())
}

/// A restored cluster has the database the application is told to use; else an error
/// listing the ones it has.
async fn database_exists(
    client: &tokio_postgres::Client,
    name: &str,
    database: &str,
) -> Result<(), DatabaseError> {
    let rows = client
        .query(
            "select datname from pg_database where not datistemplate order by 1",
            &[],
        )
        .await
        .map_err(|source| ServerError::Sql {
            what: "list the databases".into(),
            source,
        })?;
    let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if have.iter().any(|d| d == database) {
        return Ok(());
    }
    Err(DatabaseError::NoSuchDatabase {
        name: name.to_string(),
        database: database.to_string(),
        have,
    })
}

/// The application's database, owned by the owner (a new cluster).
async fn create_database(
    client: &tokio_postgres::Client,
    name: &str,
    owner: &str,
) -> Result<(), DatabaseError> {
    let exists = client
        .query_opt("select 1 from pg_database where datname = $1", &[&name])
        .await
        .map_err(|source| ServerError::Sql {
            what: format!("look up the database {name}"),
            source,
        })?
        .is_some();
    if exists {
        return Ok(());
    }
    client
        .batch_execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            ident(name),
            ident(owner)
        ))
        .await
        .map_err(|source| ServerError::Sql {
            what: format!("create the database {name}"),
            source,
        })?;
    Ok(())
}

/// `<socket dir>/password` (0644: the application may run as any user), replaced whole.
fn write_password(socket_dir: &Path, password: &str) -> Result<(), DatabaseError> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_dir.join(PASSWORD_FILE);
    let tmp = socket_dir.join(format!(".{PASSWORD_FILE}.tmp"));
    let io = || DatabaseError::io("write", &path);
    std::fs::write(&tmp, password).map_err(io())?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(io())?;
    std::fs::rename(&tmp, &path).map_err(io())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn generated_passwords_differ() {
        let a = generate_password().unwrap();
        assert_eq!(a.len(), 36);
        assert_ne!(a, generate_password().unwrap());
    }

    #[test]
    fn paths_of_a_database() {
        let db: Database =
            serde_json::from_value(serde_json::json!({"name": "w", "dir": "/v/w"})).unwrap();
        let p = Paths::of(&db, Path::new("/run/dm"));
        assert_eq!(p.data, Path::new("/v/w/data"));
        assert_eq!(p.socket_dir, Path::new("/run/dm/postgres/w"));
    }
}
