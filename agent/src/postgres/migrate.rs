//! An old major's data directory moved to a newer major (the issue's point 5).
//!
//! - [`choose`] (pure): `pg_upgrade` when the old build is complete enough for it (postgres,
//!   pg_ctl, pg_controldata, pg_resetwal), else dump and restore when it can at least run
//!   its server; a newer old major is refused, and a missing old build named with what the
//!   image must contain.
//! - [`migrate`]: an unclean old cluster (datamon's old sidecar stopped with `-m immediate`)
//!   is first recovered by its own major (started and stopped); the new cluster is initdb'd
//!   with the old one's data checksums, WAL segment size, encoding and locale; then
//!   `pg_upgrade --check` and `pg_upgrade --copy` (the old directory stays valid), or the old
//!   server's `pg_dumpall` (by the NEW build) piped into the new server's `psql`; ANALYZE
//!   afterwards; the new cluster is left shut down cleanly.
//!
//! Every server runs on a Unix socket in a private directory under the scratch dir (no
//! TCP), with our own `hba_file` (trust on that socket) so the old cluster's access rules
//! neither block the migration nor change. A failure leaves the old data directory valid
//! and removes the new one; its error names both versions and the tail of the failing
//! program's output (and of the server's or pg_upgrade's log).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::binaries::Binaries;
use super::control::{self, ControlError};
use super::process::{self, Account, ProcessError};

/// How a cluster is moved to the new major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// `pg_upgrade --copy`.
    PgUpgrade,
    /// The old server's `pg_dumpall` into the new server's `psql`.
    DumpRestore,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::PgUpgrade => "pg_upgrade",
            Method::DumpRestore => "dump and restore",
        })
    }
}

/// A migration done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Migration {
    /// The old build's version ("12.22").
    pub from: String,
    /// The new build's version ("18.6").
    pub to: String,
    /// How.
    pub method: Method,
}

impl std::fmt::Display for Migration {
    /// "PostgreSQL 12.22 → 18.6 by dump and restore".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgreSQL {} → {} by {}",
            self.from, self.to, self.method
        )
    }
}

/// What a migration works on.
pub(crate) struct MigrateRequest<'a> {
    /// Restored data dir of the old major (owned by account, 0700, skeleton dirs recreated,
    /// stale postmaster.pid removed by the caller).
    pub old_data: &'a Path,
    /// The old major's build (may be server-only: npm 12).
    pub old: &'a Binaries,
    /// The server's build (full).
    pub new: &'a Binaries,
    /// Must not exist; the migrated cluster ends here, shut down cleanly.
    pub new_data: &'a Path,
    /// A writable dir for cwd, sockets, logs (short path!).
    pub scratch: &'a Path,
    /// The account the servers run as.
    pub account: &'a Account,
    /// Role to connect as ("postgres").
    pub superuser: &'a str,
    /// Deadline of the whole migration.
    pub deadline: Duration,
}

/// Programs the old build needs for pg_upgrade.
const UPGRADE_OLD: [&str; 4] = ["postgres", "pg_ctl", "pg_controldata", "pg_resetwal"];
/// Programs the old build needs for a dump and restore (its server, started and stopped).
const DUMP_OLD: [&str; 2] = ["postgres", "pg_ctl"];
/// Programs the new build needs for either.
const NEW_TOOLS: [&str; 6] = [
    "postgres",
    "pg_ctl",
    "initdb",
    "psql",
    "pg_dumpall",
    "vacuumdb",
];

/// The socket "port" of the old server and of the new one. Each migration has its own
/// socket directory and no TCP, so these names cannot collide with any other server.
const OLD_PORT: u16 = 50432;
const NEW_PORT: u16 = 50433;

/// Longest Unix socket path (sun_path less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Lines of a log kept for an error.
const LOG_TAIL: usize = 20;

/// Why a cluster could not be migrated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// The data is newer than the server.
    #[error("the data directory is PostgreSQL {old_major}, newer than the server's build (PostgreSQL {new}): a cluster cannot be moved to an older major; run a server of major {old_major} or newer")]
    Newer {
        /// The data's major.
        old_major: u32,
        /// The server's version.
        new: String,
    },
    /// Nothing to migrate.
    #[error(
        "the data directory is already PostgreSQL {major}, the server's major: nothing to migrate"
    )]
    SameMajor {
        /// The major.
        major: u32,
    },
    /// No build of the old major.
    #[error("PostgreSQL {old_major} data cannot be migrated to PostgreSQL {new}: no PostgreSQL {old_major} build is installed; the image must contain PostgreSQL {old_major}'s server (postgres, pg_ctl: dump and restore) or its full build (with pg_controldata and pg_resetwal: pg_upgrade), in /opt/datamon-postgres/{old_major}/bin or a directory of postgres.bin_dirs (DATAMON_POSTGRES__BIN_DIRS)")]
    NoOldBuild {
        /// The data's major.
        old_major: u32,
        /// The server's version.
        new: String,
    },
    /// The old build is not of the data's major.
    #[error("the data directory is PostgreSQL {data_major}, but the build given for it is {old}: migrate with the build of its own major")]
    WrongBuild {
        /// The data's major.
        data_major: u32,
        /// The build given.
        old: String,
    },
    /// A build lacks programs the migration needs.
    #[error("PostgreSQL {from} → {to}: the {which} build in {bin} lacks {missing}: the image must contain them")]
    Incomplete {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// "old" or "new".
        which: &'static str,
        /// Its bin dir.
        bin: PathBuf,
        /// The missing programs.
        missing: String,
    },
    /// The new data directory exists already.
    #[error("PostgreSQL {from} → {to}: {path} exists already; the migrated cluster needs a new directory")]
    NewDataExists {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// The directory.
        path: PathBuf,
    },
    /// The scratch directory is too deep for a Unix socket.
    #[error("PostgreSQL {from} → {to}: the scratch directory {path} is too long for a Unix socket path ({len} bytes of at most {MAX_SOCKET_PATH}): use a shorter one")]
    LongScratch {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// The socket directory.
        path: PathBuf,
        /// The socket path's length.
        len: usize,
    },
    /// A program of the migration failed. Its failure (which names the step) is said here
    /// with its own causes, then the log, and is not a `source`: a source would print after
    /// the log, and its text (the step and `failed`) twice.
    #[error("migrating PostgreSQL {from} → {to}: {}{log}", datamon_edge::chain(failure.as_ref()))]
    Step {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// Which step.
        step: String,
        /// The tail of the server's or pg_upgrade's log, introduced (or empty).
        log: String,
        /// The program's failure.
        failure: Box<ProcessError>,
    },
    /// The dump did not restore.
    #[error("migrating PostgreSQL {from} → {to}: restoring the dump into the new server failed:\n{errors}")]
    Restore {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// psql's errors (the last of them).
        errors: String,
    },
    /// An answer of the old server that could not be read.
    #[error(
        "migrating PostgreSQL {from} → {to}: cannot read the old cluster's {what} from {answer:?}"
    )]
    Answer {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// What was asked.
        what: &'static str,
        /// What came back.
        answer: String,
    },
    /// A data directory's files.
    #[error("migrating PostgreSQL {from} → {to}: the {which} data directory")]
    Control {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// "old" or "new".
        which: &'static str,
        /// Why.
        #[source]
        source: ControlError,
    },
    /// A cluster that did not end shut down cleanly.
    #[error("migrating PostgreSQL {from} → {to}: the {which} cluster did not shut down cleanly (pg_control says {state})")]
    Unclean {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// "old" or "new".
        which: &'static str,
        /// Its state.
        state: String,
    },
    /// The whole migration ran past its deadline.
    #[error("migrating PostgreSQL {from} → {to} did not finish within {deadline:?} (before: {step}): raise postgres.migrate_timeout_secs")]
    Deadline {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// The step that had no time left.
        step: String,
        /// The deadline.
        deadline: Duration,
    },
    /// A file or directory of the migration.
    #[error("migrating PostgreSQL {from} → {to}: cannot {op} {path}")]
    Io {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The account could not be given a directory.
    #[error("migrating PostgreSQL {from} → {to}")]
    Own {
        /// The old version.
        from: String,
        /// The new version.
        to: String,
        /// Why.
        #[source]
        source: Box<ProcessError>,
    },
}

/// Pure: which way, or why none (new older than old: refused; old build missing entirely:
/// error naming both versions and what the image must contain).
pub(crate) fn choose(
    old_major: u32,
    old: Option<&Binaries>,
    new: &Binaries,
) -> Result<Method, MigrateError> {
    if old_major > new.major {
        return Err(MigrateError::Newer {
            old_major,
            new: new.version.clone(),
        });
    }
    if old_major == new.major {
        return Err(MigrateError::SameMajor { major: old_major });
    }
    let Some(old) = old else {
        return Err(MigrateError::NoOldBuild {
            old_major,
            new: new.version.clone(),
        });
    };
    let incomplete = |which, b: &Binaries, missing: Vec<&str>| MigrateError::Incomplete {
        from: old.version.clone(),
        to: new.version.clone(),
        which,
        bin: b.bin.clone(),
        missing: missing.join(", "),
    };
    let new_missing = new.missing(&NEW_TOOLS);
    if !new_missing.is_empty() {
        return Err(incomplete("new", new, new_missing));
    }
    if old.missing(&UPGRADE_OLD).is_empty() && new.has("pg_upgrade") {
        return Ok(Method::PgUpgrade);
    }
    let old_missing = old.missing(&DUMP_OLD);
    if old_missing.is_empty() {
        Ok(Method::DumpRestore)
    } else {
        Err(incomplete("old", old, old_missing))
    }
}

/// What the new cluster must match of the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterSettings {
    /// Whether data checksums are on.
    pub checksums: bool,
    /// The WAL segment size in bytes.
    pub wal_segment_bytes: u64,
    /// Encoding and locale, when read from the old server (`None`: pg_upgrade 16+ carries
    /// each database's own over, so the new cluster's are free).
    pub locale: Option<Locale>,
}

/// A cluster's encoding and locale (template0's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Locale {
    /// "UTF8", "SQL_ASCII", ...
    pub encoding: String,
    /// LC_COLLATE.
    pub collate: String,
    /// LC_CTYPE.
    pub ctype: String,
    /// The locale provider: 'c' libc, 'i' ICU, 'b' builtin.
    pub provider: char,
    /// The ICU or builtin locale (empty with libc).
    pub provider_locale: String,
}

/// The query of the old server for its [`ClusterSettings`], for its major (the locale
/// provider's columns came with 15 and were renamed in 17).
pub(crate) fn settings_query(old_major: u32) -> String {
    let provider = if old_major >= 15 {
        "d.datlocprovider::text"
    } else {
        "'c'"
    };
    let provider_locale = match old_major {
        ..=14 => "''",
        15 | 16 => "coalesce(d.daticulocale, '')",
        _ => "coalesce(d.datlocale, '')",
    };
    format!(
        "SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {provider}, \
         {provider_locale}, current_setting('data_checksums'), s.setting, coalesce(s.unit, '') \
         FROM pg_database d, pg_settings s \
         WHERE d.datname = 'template0' AND s.name = 'wal_segment_size'"
    )
}

/// The answer to [`settings_query`] (psql `-A -t -F '|'`), `None` if it is not one.
pub(crate) fn parse_settings(answer: &str) -> Option<ClusterSettings> {
    let line = answer.lines().find(|l| !l.trim().is_empty())?;
    let f: Vec<&str> = line.split('|').collect();
    let [encoding, collate, ctype, provider, provider_locale, checksums, seg, unit] = f[..] else {
        return None;
    };
    let seg: u64 = seg.trim().parse().ok()?;
    let unit_bytes = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1024,
        "8kB" => 8192,
        "MB" => 1 << 20,
        _ => return None,
    };
    Some(ClusterSettings {
        checksums: checksums.trim() == "on",
        wal_segment_bytes: seg * unit_bytes,
        locale: Some(Locale {
            encoding: encoding.to_string(),
            collate: collate.to_string(),
            ctype: ctype.to_string(),
            provider: provider.trim().chars().next()?,
            provider_locale: provider_locale.to_string(),
        }),
    })
}

/// The checksum setting and WAL segment size of `pg_controldata`'s output.
pub(crate) fn parse_controldata(out: &str) -> Option<ClusterSettings> {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches(':').trim())
    };
    let checksum: u32 = field("Data page checksum version")?.parse().ok()?;
    let seg: u64 = field("Bytes per WAL segment")?.parse().ok()?;
    Some(ClusterSettings {
        checksums: checksum != 0,
        wal_segment_bytes: seg,
        locale: None,
    })
}

/// initdb's arguments after `-D <dir>` for a new cluster of `new_major` matching `s`.
pub(crate) fn initdb_args(s: &ClusterSettings, new_major: u32, superuser: &str) -> Vec<String> {
    let mut a: Vec<String> = vec!["-U".into(), superuser.into(), "--auth=trust".into()];
    match &s.locale {
        None => a.extend(["-E".into(), "UTF8".into(), "--no-locale".into()]),
        Some(l) => {
            a.extend([
                "-E".into(),
                l.encoding.clone(),
                format!("--lc-collate={}", l.collate),
                format!("--lc-ctype={}", l.ctype),
            ]);
            match l.provider {
                'i' => a.extend([
                    "--locale-provider=icu".into(),
                    format!("--icu-locale={}", l.provider_locale),
                ]),
                'b' => a.extend([
                    "--locale-provider=builtin".into(),
                    format!("--builtin-locale={}", l.provider_locale),
                ]),
                _ => {}
            }
        }
    }
    a.push(format!("--wal-segsize={}", s.wal_segment_bytes >> 20));
    if s.checksums {
        a.push("--data-checksums".into());
    } else if new_major >= 18 {
        // 18 turned checksums on by default; pg_upgrade refuses a mismatch.
        a.push("--no-data-checksums".into());
    }
    a
}

/// psql's error lines of a restore, less the one every dump of a cluster gives (its
/// superuser exists already in the new cluster).
pub(crate) fn restore_errors(stderr: &str, superuser: &str) -> Vec<String> {
    let harmless = format!("role \"{superuser}\" already exists");
    stderr
        .lines()
        .filter(|l| l.contains("ERROR:") || l.contains("FATAL:"))
        .filter(|l| !l.contains(&harmless))
        .map(str::to_string)
        .collect()
}

/// Migrates `req.old_data` to `req.new_data` (see the module's doc).
pub(crate) async fn migrate(req: &MigrateRequest<'_>) -> Result<Migration, MigrateError> {
    let method = choose(req.old.major, Some(req.old), req.new)?;
    let data_major = control::data_major(req.old_data).map_err(|source| MigrateError::Control {
        from: req.old.version.clone(),
        to: req.new.version.clone(),
        which: "old",
        source,
    })?;
    if data_major != req.old.major {
        return Err(MigrateError::WrongBuild {
            data_major,
            old: req.old.to_string(),
        });
    }
    let job = Job::new(req)?;
    tracing::info!(from = %req.old.version, to = %req.new.version, %method, "migrating a PostgreSQL cluster");
    let result = match method {
        Method::PgUpgrade => job.upgrade().await,
        Method::DumpRestore => job.dump_restore().await,
    };
    if result.is_err() {
        job.clean_up_failure().await;
    }
    let _ = std::fs::remove_dir_all(&job.work);
    result?;
    Ok(Migration {
        from: req.old.version.clone(),
        to: req.new.version.clone(),
        method,
    })
}

/// One migration under way: its request, deadline and private directory.
struct Job<'a> {
    req: &'a MigrateRequest<'a>,
    until: Instant,
    /// Private dir under scratch: cwd, sockets, logs, our hba file.
    work: PathBuf,
}

/// Which cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
        }
    }
}

impl<'a> Job<'a> {
    /// Checks the request and makes the private dir and the (empty) new data dir.
    fn new(req: &'a MigrateRequest<'a>) -> Result<Self, MigrateError> {
        let v = || (req.old.version.clone(), req.new.version.clone());
        if req.new_data.exists() {
            let (from, to) = v();
            return Err(MigrateError::NewDataExists {
                from,
                to,
                path: req.new_data.to_path_buf(),
            });
        }
        let io = |op, path: &Path| {
            let (from, to) = v();
            let path = path.to_path_buf();
            move |source| MigrateError::Io {
                from,
                to,
                op,
                path,
                source,
            }
        };
        let work = tempfile::Builder::new()
            .prefix("m")
            .tempdir_in(req.scratch)
            .map_err(io("create a directory in", req.scratch))?
            .keep();
        let len = work.join(format!(".s.PGSQL.{NEW_PORT}")).as_os_str().len();
        let own = |dir: &Path| {
            req.account.own(dir).map_err(|source| {
                let (from, to) = v();
                MigrateError::Own {
                    from,
                    to,
                    source: Box::new(source),
                }
            })
        };
        let setup = || -> Result<(), MigrateError> {
            if len > MAX_SOCKET_PATH {
                let (from, to) = v();
                return Err(MigrateError::LongScratch {
                    from,
                    to,
                    path: work.clone(),
                    len,
                });
            }
            let hba = work.join("hba.conf");
            std::fs::write(&hba, "local all all trust\n").map_err(io("write", &hba))?;
            own(&work)?;
            std::fs::create_dir(req.new_data).map_err(io("create", req.new_data))?;
            own(req.new_data)
        };
        if let Err(e) = setup() {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
        Ok(Job {
            req,
            until: Instant::now() + req.deadline,
            work,
        })
    }

    fn versions(&self) -> (String, String) {
        (self.req.old.version.clone(), self.req.new.version.clone())
    }

    fn build(&self, side: Side) -> &'a Binaries {
        match side {
            Side::Old => self.req.old,
            Side::New => self.req.new,
        }
    }

    fn data(&self, side: Side) -> &'a Path {
        match side {
            Side::Old => self.req.old_data,
            Side::New => self.req.new_data,
        }
    }

    fn port(side: Side) -> u16 {
        match side {
            Side::Old => OLD_PORT,
            Side::New => NEW_PORT,
        }
    }

    fn log(&self, side: Side) -> PathBuf {
        self.work.join(format!("{}.log", side.name()))
    }

    /// The time left for `step`, or the deadline error.
    fn left(&self, step: &str) -> Result<Duration, MigrateError> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let (from, to) = self.versions();
            return Err(MigrateError::Deadline {
                from,
                to,
                step: step.to_string(),
                deadline: self.req.deadline,
            });
        }
        Ok(left)
    }

    /// A command of `side`'s build, cwd in the private dir.
    fn command(&self, side: Side, program: &str) -> tokio::process::Command {
        let mut cmd = process::command(&self.build(side).tool(program), self.req.account);
        cmd.current_dir(&self.work);
        cmd
    }

    /// Runs `cmd` for `step`; a failure carries the tail of `log` when given.
    async fn run(
        &self,
        cmd: tokio::process::Command,
        step: &str,
        log: Option<&Path>,
    ) -> Result<String, MigrateError> {
        let left = self.left(step)?;
        let started = Instant::now();
        let result = process::run(cmd, step, left).await;
        tracing::debug!(step, elapsed = ?started.elapsed(), ok = result.is_ok(), "migration step");
        result.map_err(|source| {
            let (from, to) = self.versions();
            let log = log
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|t| process::tail(&[&t], LOG_TAIL))
                .filter(|t| !t.is_empty())
                .map(|t| format!("; the log ends:\n{t}\n"))
                .unwrap_or_default();
            MigrateError::Step {
                from,
                to,
                step: step.to_string(),
                log,
                failure: Box::new(source),
            }
        })
    }

    /// psql of the new build on `side`'s server, as the superuser.
    fn psql(&self, side: Side, db: &str) -> tokio::process::Command {
        let mut cmd = self.command(Side::New, "psql");
        cmd.arg("-X")
            .args(self.conn(side))
            .args(["-d", db, "-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    /// The connection options of a client of `side`'s server.
    fn conn(&self, side: Side) -> Vec<String> {
        vec![
            "-h".into(),
            self.work.display().to_string(),
            "-p".into(),
            Self::port(side).to_string(),
            "-U".into(),
            self.req.superuser.into(),
        ]
    }

    /// Starts `side`'s server on its socket only, with our hba file.
    async fn start(&self, side: Side) -> Result<(), MigrateError> {
        let step = format!(
            "starting the {} server (PostgreSQL {})",
            side.name(),
            self.build(side).version
        );
        let left = self.left(&step)?;
        let opts = format!(
            "-k '{}' -p {} -c listen_addresses='' -c hba_file='{}' -c archive_mode=off",
            self.work.display(),
            Self::port(side),
            self.work.join("hba.conf").display()
        );
        let log = self.log(side);
        let mut cmd = self.command(side, "pg_ctl");
        cmd.arg("-D")
            .arg(self.data(side))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", &left.as_secs().max(1).to_string(), "-o", &opts])
            .arg("start");
        self.run(cmd, &step, Some(&log)).await.map(drop)
    }

    /// Stops `side`'s server (`mode` fast or immediate).
    async fn stop(&self, side: Side, mode: &str) -> Result<(), MigrateError> {
        let step = format!(
            "stopping the {} server (PostgreSQL {})",
            side.name(),
            self.build(side).version
        );
        let left = self.left(&step)?;
        let mut cmd = self.command(side, "pg_ctl");
        cmd.arg("-D")
            .arg(self.data(side))
            .args(["-m", mode, "-w", "-t", &left.as_secs().max(1).to_string()])
            .arg("stop");
        self.run(cmd, &step, Some(&self.log(side))).await.map(drop)
    }

    /// Checks that `side`'s pg_control says shut down.
    fn check_clean(&self, side: Side) -> Result<(), MigrateError> {
        let (from, to) = self.versions();
        let c = control::read_control(self.data(side)).map_err(|source| MigrateError::Control {
            from: from.clone(),
            to: to.clone(),
            which: side.name(),
            source,
        })?;
        if c.clean() {
            Ok(())
        } else {
            Err(MigrateError::Unclean {
                from,
                to,
                which: side.name(),
                state: c.state.to_string(),
            })
        }
    }

    /// Whether the old cluster was shut down cleanly.
    fn old_clean(&self) -> Result<bool, MigrateError> {
        match self.check_clean(Side::Old) {
            Ok(()) => Ok(true),
            Err(MigrateError::Unclean { state, .. }) => {
                tracing::info!(%state, version = %self.req.old.version, "the old cluster was not shut down cleanly: recovering it with its own major first");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The old server's settings (it must be running).
    async fn query_settings(&self) -> Result<ClusterSettings, MigrateError> {
        let mut cmd = self.psql(Side::Old, "template1");
        cmd.args(["-A", "-t", "-F", "|", "-c"])
            .arg(settings_query(self.req.old.major));
        let answer = self
            .run(cmd, "reading the old cluster's settings", None)
            .await?;
        parse_settings(&answer).ok_or_else(|| {
            let (from, to) = self.versions();
            MigrateError::Answer {
                from,
                to,
                what: "encoding, locale, checksums and WAL segment size",
                answer,
            }
        })
    }

    /// initdb of the new cluster matching `s`; `sync: false` when pg_upgrade will sync
    /// the whole new cluster at its end anyway.
    async fn initdb(&self, s: &ClusterSettings, sync: bool) -> Result<(), MigrateError> {
        let mut cmd = self.command(Side::New, "initdb");
        cmd.arg("-D").arg(self.req.new_data).args(initdb_args(
            s,
            self.req.new.major,
            self.req.superuser,
        ));
        if !sync {
            cmd.arg("--no-sync");
        }
        let step = format!(
            "initdb of the new cluster (PostgreSQL {})",
            self.req.new.version
        );
        self.run(cmd, &step, None).await.map(drop)
    }

    /// ANALYZE of every database of the new server (running); after pg_upgrade to 18+,
    /// which carries the statistics over, only what they lack.
    async fn analyze(&self, method: Method) -> Result<(), MigrateError> {
        let mut cmd = self.command(Side::New, "vacuumdb");
        cmd.args(self.conn(Side::New))
            .args(["--all", "--analyze-only"]);
        if method == Method::PgUpgrade && self.req.new.major >= 18 {
            cmd.arg("--missing-stats-only");
        }
        self.run(
            cmd,
            "ANALYZE of the new cluster (vacuumdb)",
            Some(&self.log(Side::New)),
        )
        .await
        .map(drop)
    }

    /// Starts the new server, ANALYZE, stops it and checks it shut down cleanly.
    async fn analyze_and_stop(&self, method: Method) -> Result<(), MigrateError> {
        if method == Method::PgUpgrade {
            self.start(Side::New).await?;
            self.update_extensions().await?;
        }
        self.analyze(method).await?;
        self.stop(Side::New, "fast").await?;
        self.check_clean(Side::New)
    }

    /// Runs the `update_extensions.sql` pg_upgrade writes into its cwd when extensions of
    /// the old cluster are older than the new build's (`ALTER EXTENSION ... UPDATE`).
    async fn update_extensions(&self) -> Result<(), MigrateError> {
        let script = self.work.join("update_extensions.sql");
        if !script.is_file() {
            return Ok(());
        }
        tracing::info!(to = %self.req.new.version, "updating the extensions pg_upgrade names");
        let mut cmd = self.psql(Side::New, "postgres");
        cmd.arg("-q").arg("-f").arg(&script);
        self.run(
            cmd,
            "updating extensions (pg_upgrade's update_extensions.sql)",
            None,
        )
        .await
        .map(drop)
    }

    /// pg_upgrade --check, then --copy.
    async fn upgrade(&self) -> Result<(), MigrateError> {
        let clean = self.old_clean()?;
        // Before 16 pg_upgrade needs the new cluster's locale and encoding to be the old
        // one's, which only the old server can tell; from 16 on it carries them over.
        let settings = if !clean || self.req.new.major < 16 {
            self.start(Side::Old).await?;
            let s = self.query_settings().await;
            self.stop(Side::Old, "fast").await?;
            self.check_clean(Side::Old)?;
            let mut s = s?;
            if self.req.new.major >= 16 {
                s.locale = None;
            }
            s
        } else {
            let mut cmd = self.command(Side::Old, "pg_controldata");
            cmd.arg("-D").arg(self.req.old_data);
            let out = self
                .run(cmd, "pg_controldata of the old cluster", None)
                .await?;
            parse_controldata(&out).ok_or_else(|| {
                let (from, to) = self.versions();
                MigrateError::Answer {
                    from,
                    to,
                    what: "checksum version and WAL segment size (pg_controldata)",
                    answer: out,
                }
            })?
        };
        self.initdb(&settings, false).await?;
        self.pg_upgrade(true).await?;
        self.pg_upgrade(false).await?;
        self.analyze_and_stop(Method::PgUpgrade).await
    }

    /// One run of pg_upgrade (`check`: `--check` only).
    async fn pg_upgrade(&self, check: bool) -> Result<(), MigrateError> {
        let mut cmd = self.command(Side::New, "pg_upgrade");
        let hba = format!("-c hba_file='{}'", self.work.join("hba.conf").display());
        cmd.arg("-b")
            .arg(&self.req.old.bin)
            .arg("-B")
            .arg(&self.req.new.bin)
            .arg("-d")
            .arg(self.req.old_data)
            .arg("-D")
            .arg(self.req.new_data)
            .args(["-U", self.req.superuser])
            .arg(format!("--socketdir={}", self.work.display()))
            .args(["-p", &OLD_PORT.to_string(), "-P", &NEW_PORT.to_string()])
            // The old cluster's own settings stay, but for archiving (its archive_command
            // belongs to where it ran).
            .args(["-o", &format!("{hba} -c archive_mode=off"), "-O", &hba]);
        // --copy is the default; 16 named it.
        if self.req.new.major >= 16 {
            cmd.arg("--copy");
        }
        if check {
            cmd.arg("--check");
        }
        let step = if check {
            "pg_upgrade --check"
        } else {
            "pg_upgrade --copy"
        };
        // Its own output names a log under the new data dir, which a failure removes: the
        // error carries that log's tail instead.
        match self.run(cmd, step, None).await {
            Ok(_) => Ok(()),
            Err(MigrateError::Step {
                from,
                to,
                step,
                failure,
                ..
            }) => Err(MigrateError::Step {
                from,
                to,
                step,
                log: upgrade_log(self.req.new_data)
                    .map(|(p, t)| {
                        let name = p.file_name().unwrap_or_default().to_string_lossy();
                        format!("; its {name} (removed with the new directory) ends:\n{t}\n")
                    })
                    .unwrap_or_default(),
                failure,
            }),
            Err(e) => Err(e),
        }
    }

    /// The old server's pg_dumpall into the new server's psql.
    async fn dump_restore(&self) -> Result<(), MigrateError> {
        self.start(Side::Old).await?;
        let settings = self.query_settings().await?;
        self.initdb(&settings, true).await?;
        self.start(Side::New).await?;
        self.pipe_dump().await?;
        self.stop(Side::Old, "fast").await?;
        self.check_clean(Side::Old)?;
        self.analyze_and_stop(Method::DumpRestore).await
    }

    /// `pg_dumpall | psql`, within the deadline; psql's errors other than the superuser
    /// existing fail it.
    async fn pipe_dump(&self) -> Result<(), MigrateError> {
        use std::process::Stdio;
        let step = "pg_dumpall of the old server into the new one";
        let left = self.left(step)?;
        let (from, to) = self.versions();
        let fail = |what: &str, source| MigrateError::Step {
            from: from.clone(),
            to: to.clone(),
            step: what.to_string(),
            log: String::new(),
            failure: Box::new(source),
        };
        let spawn_err = |what: &str, program: PathBuf, source| {
            fail(
                what,
                ProcessError::Spawn {
                    what: what.to_string(),
                    program,
                    source,
                },
            )
        };
        let mut dump = self.command(Side::New, "pg_dumpall");
        dump.args(self.conn(Side::Old))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut dump = dump
            .spawn()
            .map_err(|e| spawn_err("pg_dumpall", self.req.new.tool("pg_dumpall"), e))?;
        // Proven: stdout was piped just above.
        let Some(out) = dump.stdout.take() else {
            unreachable!("pg_dumpall's stdout is piped");
        };
        let out: Stdio = out
            .try_into()
            .map_err(|e| spawn_err("pg_dumpall", self.req.new.tool("pg_dumpall"), e))?;
        let mut restore = self.command(Side::New, "psql");
        restore
            .arg("-X")
            .arg("-q")
            .args(self.conn(Side::New))
            .args(["-d", "postgres"])
            .stdin(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let restore = restore
            .spawn()
            .map_err(|e| spawn_err("psql", self.req.new.tool("psql"), e))?;
        let both = async { tokio::join!(dump.wait_with_output(), restore.wait_with_output()) };
        let (dumped, restored) = match tokio::time::timeout(left, both).await {
            Ok(r) => r,
            Err(_) => {
                return Err(fail(
                    step,
                    ProcessError::Timeout {
                        what: step.to_string(),
                        deadline: left,
                        tail: String::new(),
                    },
                ))
            }
        };
        let wait_err = |source| {
            fail(
                step,
                ProcessError::Wait {
                    what: step.to_string(),
                    source,
                },
            )
        };
        let dumped = dumped.map_err(wait_err)?;
        let restored = restored.map_err(wait_err)?;
        let dump_err = String::from_utf8_lossy(&dumped.stderr).into_owned();
        if !dumped.status.success() {
            return Err(fail(
                "pg_dumpall of the old server",
                ProcessError::Failed {
                    what: "pg_dumpall".into(),
                    status: dumped.status,
                    tail: process::tail(&[&dump_err], process::TAIL_LINES),
                },
            ));
        }
        let psql_err = String::from_utf8_lossy(&restored.stderr).into_owned();
        if !restored.status.success() {
            return Err(fail(
                "psql into the new server",
                ProcessError::Failed {
                    what: "psql".into(),
                    status: restored.status,
                    tail: process::tail(&[&psql_err], process::TAIL_LINES),
                },
            ));
        }
        let errors = restore_errors(&psql_err, self.req.superuser);
        if !errors.is_empty() {
            let (from, to) = self.versions();
            let shown = errors.len().min(process::TAIL_LINES);
            return Err(MigrateError::Restore {
                from,
                to,
                errors: errors[errors.len() - shown..].join("\n"),
            });
        }
        Ok(())
    }

    /// After a failure: servers we (or pg_upgrade) left running are stopped, the new data
    /// directory removed; the old one stays as it is (valid: pg_upgrade --copy and a dump
    /// leave it so).
    async fn clean_up_failure(&self) {
        for side in [Side::New, Side::Old] {
            if self.data(side).join("postmaster.pid").exists() {
                let mode = if side == Side::Old {
                    "fast"
                } else {
                    "immediate"
                };
                let mut cmd = self.command(side, "pg_ctl");
                cmd.arg("-D")
                    .arg(self.data(side))
                    .args(["-m", mode, "-w", "stop"]);
                if let Err(e) =
                    process::run(cmd, "stopping a server after a failure", STOP_AFTER_FAILURE).await
                {
                    tracing::warn!(error = %e, side = side.name(), "cannot stop a server after a failed migration");
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(self.req.new_data) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.req.new_data.display(), error = %e, "cannot remove the new data directory of a failed migration");
            }
        }
    }
}

/// How long stopping a server after a failure may take (the migration's own deadline may
/// be spent).
const STOP_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The file of pg_upgrade's under `<new_data>/pg_upgrade_output.d` that tells most, and
/// its tail: the newest list of problems (`*.txt`, which its output points to), else the
/// newest log.
fn upgrade_log(new_data: &Path) -> Option<(PathBuf, String)> {
    let files: Vec<(bool, std::time::SystemTime, PathBuf)> =
        walkdir::WalkDir::new(new_data.join("pg_upgrade_output.d"))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                let path = e.into_path();
                let list = path.extension().is_some_and(|x| x == "txt");
                Some((list, modified, path))
            })
            .collect();
    let newest = files.into_iter().max()?.2;
    let text = std::fs::read_to_string(&newest).ok()?;
    let tail = process::tail(&[&text], LOG_TAIL);
    (!tail.is_empty()).then_some((newest, tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::binaries::Installed;

    fn fake_build(dir: &Path, major: u32, tools: &[&str]) -> Binaries {
        std::fs::create_dir_all(dir).unwrap();
        for t in tools {
            std::fs::write(dir.join(t), b"").unwrap();
        }
        Binaries {
            major,
            version: format!("{major}.9"),
            bin: dir.to_path_buf(),
        }
    }

    #[test]
    fn the_migration_names_its_versions_and_way() {
        let m = Migration {
            from: "12.22".into(),
            to: "18.6".into(),
            method: Method::DumpRestore,
        };
        assert_eq!(m.to_string(), "PostgreSQL 12.22 → 18.6 by dump and restore");
        let m = Migration {
            from: "14.23".into(),
            to: "18.6".into(),
            method: Method::PgUpgrade,
        };
        assert_eq!(m.to_string(), "PostgreSQL 14.23 → 18.6 by pg_upgrade");
    }

    #[test]
    fn a_failed_step_is_said_once_in_the_printed_chain_then_its_log() {
        use std::os::unix::process::ExitStatusExt;
        let step = MigrateError::Step {
            from: "14.23".into(),
            to: "18.6".into(),
            step: "pg_upgrade --copy".into(),
            log: "; the log ends:\nFATAL:  could not create the new cluster\n".into(),
            failure: Box::new(ProcessError::Failed {
                what: "pg_upgrade --copy".into(),
                status: std::process::ExitStatus::from_raw(1 << 8),
                tail: "Performing Consistency Checks".into(),
            }),
        };
        // As the sidecar prints it: through the database's error.
        let printed = datamon_edge::chain(&crate::postgres::DatabaseError::from(step));
        assert_eq!(printed.matches("pg_upgrade --copy").count(), 1, "{printed}");
        assert_eq!(printed.matches("failed").count(), 1, "{printed}");
        assert_eq!(printed.matches("Performing Consistency Checks").count(), 1);
        assert!(
            printed.starts_with("migrating PostgreSQL 14.23 → 18.6: pg_upgrade --copy failed")
                && printed.ends_with("could not create the new cluster\n"),
            "{printed}"
        );
        // A program that could not be started keeps its cause (the I/O error) in the text.
        let spawn = MigrateError::Step {
            from: "12.22".into(),
            to: "18.6".into(),
            step: "pg_dumpall".into(),
            log: String::new(),
            failure: Box::new(ProcessError::Spawn {
                what: "pg_dumpall".into(),
                program: "/opt/pg/bin/pg_dumpall".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        };
        let printed = datamon_edge::chain(&spawn);
        assert_eq!(printed.matches("pg_dumpall (").count(), 1, "{printed}");
        assert!(printed.ends_with(": entity not found"), "{printed}");
    }

    #[test]
    fn choose_prefers_pg_upgrade_and_refuses_what_cannot_be() {
        let tmp = tempfile::tempdir().unwrap();
        let full: Vec<&str> = NEW_TOOLS.iter().chain(&UPGRADE_OLD).copied().collect();
        let mut full = full;
        full.push("pg_upgrade");
        let new = fake_build(&tmp.path().join("18"), 18, &full);
        let old14 = fake_build(&tmp.path().join("14"), 14, &full);
        let old12 = fake_build(
            &tmp.path().join("12"),
            12,
            &["initdb", "pg_ctl", "postgres"],
        );
        let bare = fake_build(&tmp.path().join("13"), 13, &["postgres"]);
        assert_eq!(choose(14, Some(&old14), &new).unwrap(), Method::PgUpgrade);
        assert_eq!(choose(12, Some(&old12), &new).unwrap(), Method::DumpRestore);

        let e = choose(19, None, &new).unwrap_err().to_string();
        assert!(
            e.contains("PostgreSQL 19") && e.contains("18.9") && e.contains("older major"),
            "{e}"
        );
        let e = choose(18, Some(&new), &new).unwrap_err().to_string();
        assert!(e.contains("nothing to migrate"), "{e}");
        let e = choose(13, None, &new).unwrap_err().to_string();
        assert!(
            e.contains("PostgreSQL 13 data cannot be migrated to PostgreSQL 18.9")
                && e.contains("/opt/datamon-postgres/13/bin")
                && e.contains("postgres, pg_ctl"),
            "{e}"
        );
        let e = choose(13, Some(&bare), &new).unwrap_err().to_string();
        assert!(e.contains("old build") && e.contains("lacks pg_ctl"), "{e}");
        let client_less = fake_build(
            &tmp.path().join("18b"),
            18,
            &["postgres", "pg_ctl", "initdb"],
        );
        let e = choose(14, Some(&old14), &client_less)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("new build") && e.contains("psql, pg_dumpall, vacuumdb"),
            "{e}"
        );
    }

    #[test]
    fn the_old_servers_settings_and_controldata_parse() {
        let s = parse_settings("UTF8|C|C|c||off|16777216|B\n").unwrap();
        assert!(!s.checksums);
        assert_eq!(s.wal_segment_bytes, 16 << 20);
        let l = s.locale.clone().unwrap();
        assert_eq!(
            (l.encoding.as_str(), l.collate.as_str(), l.provider),
            ("UTF8", "C", 'c')
        );
        let s = parse_settings("SQL_ASCII|C.UTF-8|C.UTF-8|i|und|on|2048|8kB").unwrap();
        assert!(s.checksums);
        assert_eq!(s.wal_segment_bytes, 16 << 20);
        assert_eq!(s.locale.unwrap().provider_locale, "und");
        assert_eq!(parse_settings("UTF8|C|C"), None);
        assert_eq!(parse_settings("UTF8|C|C|c||off|x|B"), None);

        let out = "pg_control version number:            1300\n\
                   Bytes per WAL segment:                33554432\n\
                   Data page checksum version:           1\n";
        let s = parse_controldata(out).unwrap();
        assert!(s.checksums && s.wal_segment_bytes == 32 << 20 && s.locale.is_none());
        assert_eq!(parse_controldata("nothing"), None);
        assert!(settings_query(12).contains("'c'"));
        assert!(settings_query(16).contains("daticulocale"));
        assert!(settings_query(17).contains("datlocale"));
    }

    #[test]
    fn initdb_matches_the_old_cluster() {
        let mut s = parse_settings("LATIN1|C|C|c||off|16777216|B").unwrap();
        let a = initdb_args(&s, 18, "postgres");
        for want in [
            "-E",
            "LATIN1",
            "--lc-collate=C",
            "--wal-segsize=16",
            "--no-data-checksums",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} in {a:?}");
        }
        assert!(!initdb_args(&s, 17, "postgres")
            .iter()
            .any(|x| x.contains("checksums")));
        s.checksums = true;
        s.locale = None;
        let a = initdb_args(&s, 18, "su");
        assert!(a.contains(&"--data-checksums".into()) && a.contains(&"--no-locale".into()));
        assert_eq!(&a[..2], ["-U", "su"]);
        let icu = parse_settings("UTF8|en_US.UTF-8|en_US.UTF-8|i|en-US|off|16777216|B").unwrap();
        let a = initdb_args(&icu, 18, "postgres");
        assert!(
            a.contains(&"--locale-provider=icu".into()) && a.contains(&"--icu-locale=en-US".into())
        );
    }

    #[test]
    fn only_the_superusers_own_role_is_a_harmless_restore_error() {
        let err = "psql:<stdin>:14: ERROR:  role \"postgres\" already exists\n\
                   NOTICE: whatever\n\
                   psql:<stdin>:99: ERROR:  relation \"t\" does not exist\n";
        assert_eq!(
            restore_errors(err, "postgres"),
            ["psql:<stdin>:99: ERROR:  relation \"t\" does not exist"]
        );
        assert_eq!(restore_errors(err, "admin").len(), 2);
        assert!(restore_errors("NOTICE: x\n", "postgres").is_empty());
    }

    // ---- real servers ----

    /// The installed builds; a missing major fails the test.
    async fn build(major: u32) -> Binaries {
        let installed = Installed::discover(&[]).await;
        installed.major(major).cloned().unwrap_or_else(|| {
            panic!(
                "no PostgreSQL {major} build (found: {}): run scripts/install-postgres.sh",
                installed.describe()
            )
        })
    }

    const DEADLINE: Duration = Duration::from_secs(120);

    /// A test's directories, traversable by the server account: `old` (data), `new` (not
    /// created), `scratch`, and `sock` for the fixture's own servers.
    struct Dirs {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        account: Account,
    }

    impl Dirs {
        fn new() -> Self {
            use std::os::unix::fs::PermissionsExt;
            let tmp = tempfile::Builder::new().prefix("pgm").tempdir().unwrap();
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let account = Account::resolve(None).unwrap();
            for d in ["scratch", "sock"] {
                let p = tmp.path().join(d);
                std::fs::create_dir(&p).unwrap();
                account.own(&p).unwrap();
            }
            Dirs {
                root: tmp.path().to_path_buf(),
                _tmp: tmp,
                account,
            }
        }

        fn p(&self, name: &str) -> PathBuf {
            self.root.join(name)
        }

        fn request<'a>(
            &'a self,
            old: &'a Binaries,
            new: &'a Binaries,
            old_data: &'a Path,
            new_data: &'a Path,
            scratch: &'a Path,
        ) -> MigrateRequest<'a> {
            MigrateRequest {
                old_data,
                old,
                new,
                new_data,
                scratch,
                account: &self.account,
                superuser: "postgres",
                deadline: DEADLINE,
            }
        }
    }

    /// A fixture server of `build` on `data`, socket in `<root>/sock`.
    struct Server<'a> {
        dirs: &'a Dirs,
        build: &'a Binaries,
        client: &'a Binaries,
        data: PathBuf,
        port: u16,
    }

    impl<'a> Server<'a> {
        /// initdb of a new cluster (C locale, UTF8, no checksums).
        async fn init(
            dirs: &'a Dirs,
            build: &'a Binaries,
            client: &'a Binaries,
            name: &str,
            port: u16,
        ) -> Self {
            let mut args = vec!["-E", "UTF8", "--no-locale"];
            if build.major >= 18 {
                args.push("--no-data-checksums");
            }
            Self::init_with(dirs, build, client, name, port, &args).await
        }

        /// initdb of a new cluster with `args` (encoding, locale, checksums).
        async fn init_with(
            dirs: &'a Dirs,
            build: &'a Binaries,
            client: &'a Binaries,
            name: &str,
            port: u16,
            args: &[&str],
        ) -> Self {
            let data = dirs.p(name);
            std::fs::create_dir(&data).unwrap();
            dirs.account.own(&data).unwrap();
            let mut c = process::command(&build.tool("initdb"), &dirs.account);
            c.arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--no-sync"])
                .args(args);
            process::run(c, "initdb", DEADLINE).await.unwrap();
            Server {
                dirs,
                build,
                client,
                data,
                port,
            }
        }

        fn on(
            dirs: &'a Dirs,
            build: &'a Binaries,
            client: &'a Binaries,
            data: &Path,
            port: u16,
        ) -> Self {
            Server {
                dirs,
                build,
                client,
                data: data.to_path_buf(),
                port,
            }
        }

        async fn start(&self) {
            let opts = format!(
                "-k {} -p {} -c listen_addresses=''",
                self.dirs.p("sock").display(),
                self.port
            );
            let mut c = process::command(&self.build.tool("pg_ctl"), &self.dirs.account);
            c.arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.dirs.p(&format!("sock/{}.log", self.port)))
                .args(["-w", "-o", &opts, "start"]);
            process::run(c, "pg_ctl start", DEADLINE).await.unwrap();
        }

        async fn stop(&self, mode: &str) {
            let mut c = process::command(&self.build.tool("pg_ctl"), &self.dirs.account);
            c.arg("-D").arg(&self.data).args(["-m", mode, "-w", "stop"]);
            process::run(c, "pg_ctl stop", DEADLINE).await.unwrap();
        }

        /// Runs `sql` (unaligned, tuples only): its output, trimmed.
        async fn psql(&self, sql: &str) -> String {
            let mut c = process::command(&self.client.tool("psql"), &self.dirs.account);
            c.arg("-X").arg("-h").arg(self.dirs.p("sock")).args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]);
            process::run(c, "psql", DEADLINE)
                .await
                .unwrap()
                .trim()
                .to_string()
        }
    }

    /// Copies the regular files of `from` to `to`, no empty directories (as a datamon
    /// bundle holds them).
    fn copy_files_only(from: &Path, to: &Path) {
        for e in walkdir::WalkDir::new(from) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let dest = to.join(e.path().strip_prefix(from).unwrap());
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(e.path(), &dest).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn pg_upgrade_14_to_18_keeps_rows_sums_and_hstore() {
        let (b14, b18) = (build(14).await, build(18).await);
        let dirs = Dirs::new();
        let old = Server::init(&dirs, &b14, &b18, "old", 5414).await;
        old.start().await;
        old.psql("CREATE EXTENSION hstore; \
                  CREATE TABLE t (id int PRIMARY KEY, v bigint, h hstore); \
                  INSERT INTO t SELECT i, i * 3, hstore('k', i::text) FROM generate_series(1, 100000) i; \
                  CREATE VIEW big AS SELECT * FROM t WHERE v > 150000").await;
        let hstore_version = old
            .psql("SELECT extversion FROM pg_extension WHERE extname = 'hstore'")
            .await;
        old.stop("fast").await;

        let new_data = dirs.p("new");
        let scratch = dirs.p("scratch");
        let t0 = Instant::now();
        let m = migrate(&dirs.request(&b14, &b18, &old.data, &new_data, &scratch))
            .await
            .unwrap();
        eprintln!("{m} in {:?}", t0.elapsed());
        assert_eq!(m.method, Method::PgUpgrade);
        assert_eq!(
            m.to_string(),
            format!("PostgreSQL {} → {} by pg_upgrade", b14.version, b18.version)
        );
        assert!(control::read_control(&new_data).unwrap().clean());
        assert_eq!(control::data_major(&new_data).unwrap(), 18);
        assert!(!new_data.join("pg_upgrade_output.d").exists());
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "the private dir is removed"
        );

        let new = Server::on(&dirs, &b18, &b18, &new_data, 5418);
        new.start().await;
        assert_eq!(
            new.psql("SELECT count(*), sum(v) FROM t").await,
            "100000|15000150000"
        );
        assert_eq!(
            new.psql("SELECT h -> 'k' FROM t WHERE id = 77777").await,
            "77777"
        );
        assert_eq!(new.psql("SELECT count(*) FROM big").await, "50000");
        assert_eq!(
            new.psql("SELECT extversion FROM pg_extension WHERE extname = 'hstore'")
                .await,
            hstore_version
        );
        assert_eq!(new.psql("SHOW data_checksums").await, "off");
        new.stop("fast").await;

        // --copy left the old cluster valid: it starts again with its own major.
        old.start().await;
        assert_eq!(old.psql("SELECT count(*) FROM t").await, "100000");
        old.stop("fast").await;
    }

    #[tokio::test]
    async fn an_old_datamon_pg12_bundle_moves_to_18_by_dump_and_restore_with_every_row() {
        let (b12, b18) = (build(12).await, build(18).await);
        let dirs = Dirs::new();
        let live = Server::init(&dirs, &b12, &b18, "live", 5412).await;
        live.start().await;
        live.psql(
            "CREATE TABLE t (id int PRIMARY KEY, s text); \
                   INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 20000) i",
        )
        .await;
        live.psql("VACUUM").await;
        live.psql("CHECKPOINT").await;
        live.psql("INSERT INTO t VALUES (20001, 'after the checkpoint'); CREATE ROLE app LOGIN")
            .await;
        // As datamon's old sidecar stopped it, then saved the files only.
        live.stop("immediate").await;
        let old_data = dirs.p("restored");
        copy_files_only(&live.data, &old_data);
        std::fs::write(old_data.join("pg_version"), "12").unwrap();
        assert!(!control::read_control(&old_data).unwrap().clean());
        // The restorer's part: the skeleton, no postmaster.pid, owned 0700.
        crate::postgres::datadir::prepare_restored(&old_data, 12).unwrap();
        dirs.account.own(&old_data).unwrap();

        let new_data = dirs.p("new");
        let t0 = Instant::now();
        let m = migrate(&dirs.request(&b12, &b18, &old_data, &new_data, &dirs.p("scratch")))
            .await
            .unwrap();
        eprintln!("{m} in {:?}", t0.elapsed());
        assert_eq!(m.method, Method::DumpRestore);
        assert_eq!(
            m.to_string(),
            format!(
                "PostgreSQL {} → {} by dump and restore",
                b12.version, b18.version
            )
        );
        assert!(control::read_control(&new_data).unwrap().clean());
        assert!(
            control::read_control(&old_data).unwrap().clean(),
            "the old cluster was recovered and stopped cleanly"
        );

        let new = Server::on(&dirs, &b18, &b18, &new_data, 5418);
        new.start().await;
        assert_eq!(
            new.psql("SELECT count(*), max(id) FROM t").await,
            "20001|20001"
        );
        assert_eq!(
            new.psql("SELECT s FROM t WHERE id = 20001").await,
            "after the checkpoint"
        );
        assert_eq!(
            new.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'app'")
                .await,
            "1"
        );
        // ANALYZE ran: the planner's statistics are there.
        assert_eq!(
            new.psql("SELECT count(*) > 0 FROM pg_stats WHERE tablename = 't'")
                .await,
            "t"
        );
        new.stop("fast").await;
    }

    #[tokio::test]
    async fn a_newer_data_directory_and_a_missing_old_build_are_refused() {
        let (b15, b18) = (build(15).await, build(18).await);
        let dirs = Dirs::new();
        let d18 = Server::init(&dirs, &b18, &b18, "d18", 5518).await;
        let new_data = dirs.p("new");
        let major = control::data_major(&d18.data).unwrap();
        let e = choose(major, Some(&b18), &b15).unwrap_err().to_string();
        assert!(
            e.contains("PostgreSQL 18") && e.contains(&b15.version) && e.contains("older major"),
            "{e}"
        );
        let e = migrate(&dirs.request(&b18, &b15, &d18.data, &new_data, &dirs.p("scratch")))
            .await
            .unwrap_err();
        assert!(
            matches!(e, MigrateError::Newer { old_major: 18, .. }),
            "{e}"
        );
        assert!(!new_data.exists());
        let b14 = build(14).await;
        let e = migrate(&dirs.request(&b14, &b18, &d18.data, &new_data, &dirs.p("scratch")))
            .await
            .unwrap_err();
        assert!(
            matches!(e, MigrateError::WrongBuild { data_major: 18, .. }),
            "{e}"
        );
        assert!(!new_data.exists());
        let e = choose(13, None, &b18).unwrap_err().to_string();
        assert!(
            e.contains("no PostgreSQL 13 build is installed") && e.contains(&b18.version),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failing_pg_upgrade_check_leaves_the_old_cluster_usable() {
        let (b14, b18) = (build(14).await, build(18).await);
        let dirs = Dirs::new();
        let old = Server::init(&dirs, &b14, &b18, "old", 5614).await;
        old.start().await;
        // pg_upgrade cannot carry reg* types (other than a few) in user tables.
        old.psql("CREATE TABLE r (id int, f regproc); INSERT INTO r VALUES (1, 'now'::regproc)")
            .await;
        old.stop("fast").await;

        let new_data = dirs.p("new");
        let e = migrate(&dirs.request(&b14, &b18, &old.data, &new_data, &dirs.p("scratch")))
            .await
            .unwrap_err();
        let msg = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        eprintln!("{msg}");
        assert!(
            msg.contains("pg_upgrade --check failed")
                && msg.contains(&b14.version)
                && msg.contains(&b18.version),
            "{msg}"
        );
        assert!(msg.contains("reg*"), "the tail names the problem: {msg}");
        assert!(!new_data.exists(), "the new data directory is removed");
        assert!(control::read_control(&old.data).unwrap().clean());
        old.start().await;
        assert_eq!(old.psql("SELECT count(*) FROM r").await, "1");
        old.stop("fast").await;
    }

    /// Every file under `root` but the postmaster's own (`postmaster.opts`, which any start
    /// attempt writes) and the relcache caches (`pg_internal.init`, which crash recovery
    /// removes, and no backup carries), with a hash of its bytes, sorted (to see that no data changed).
    fn files(root: &Path) -> Vec<(PathBuf, u64)> {
        use std::hash::{Hash, Hasher};
        let mut out: Vec<_> = walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| {
                e.file_type().is_file()
                    && !e.file_name().to_string_lossy().starts_with("postmaster.")
                    && e.file_name() != "pg_internal.init"
            })
            .map(|e| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(e.path()).unwrap().hash(&mut h);
                (e.path().to_path_buf(), h.finish())
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_old_server_that_will_not_start_fails_with_its_log_and_touches_nothing() {
        let (b12, b18) = (build(12).await, build(18).await);
        let dirs = Dirs::new();
        let live = Server::init(&dirs, &b12, &b18, "live", 5712).await;
        live.start().await;
        live.psql("CREATE TABLE t (id int)").await;
        live.stop("immediate").await;
        // A files-only copy whose skeleton was not recreated: PostgreSQL 12 will not start.
        let old_data = dirs.p("restored");
        copy_files_only(&live.data, &old_data);
        dirs.account.own(&old_data).unwrap();
        let before = files(&old_data);

        let new_data = dirs.p("new");
        let e = migrate(&dirs.request(&b12, &b18, &old_data, &new_data, &dirs.p("scratch")))
            .await
            .unwrap_err();
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(
            msg.contains(&format!("PostgreSQL {} → {}", b12.version, b18.version))
                && msg.contains("starting the old server")
                && msg.contains("pg_"),
            "{msg}"
        );
        assert!(
            matches!(e, MigrateError::Step { ref log, .. } if log.contains("the log ends")),
            "{msg}"
        );
        assert!(!new_data.exists());
        let after = files(&old_data);
        let changed: Vec<_> = after
            .iter()
            .filter(|f| !before.contains(f))
            .chain(before.iter().filter(|f| !after.contains(f)))
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert!(
            changed.is_empty(),
            "the old data directory is untouched: {changed:?}"
        );
    }

    #[tokio::test]
    async fn a_migration_past_its_deadline_is_killed_and_leaves_the_old_cluster_usable() {
        let (b14, b18) = (build(14).await, build(18).await);
        let dirs = Dirs::new();
        let old = Server::init(&dirs, &b14, &b18, "old", 5814).await;
        old.start().await;
        old.psql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
            .await;
        old.stop("fast").await;
        let new_data = dirs.p("new");
        let scratch = dirs.p("scratch");
        let mut req = dirs.request(&b14, &b18, &old.data, &new_data, &scratch);
        req.deadline = Duration::from_millis(500);
        let e = migrate(&req).await.unwrap_err();
        let msg = datamon_edge::chain(&e);
        assert!(
            matches!(&e, MigrateError::Deadline { .. })
                || matches!(&e, MigrateError::Step { failure, .. } if matches!(**failure, ProcessError::Timeout { .. })),
            "{msg}"
        );
        assert!(!new_data.exists());
        assert!(control::read_control(&old.data).unwrap().clean());
        old.start().await;
        assert_eq!(old.psql("SELECT count(*) FROM t").await, "1000");
        old.stop("fast").await;
    }

    #[tokio::test]
    async fn an_unclean_cluster_moves_to_a_pre_16_major_with_its_locale_and_checksums() {
        let (b14, b15) = (build(14).await, build(15).await);
        let dirs = Dirs::new();
        // Before 16, pg_upgrade needs the new cluster's locale, encoding and checksums to
        // be the old one's; this one was also stopped as datamon's old sidecar did.
        let old = Server::init_with(
            &dirs,
            &b14,
            &b15,
            "old",
            5914,
            &["-E", "UTF8", "--locale=C.UTF-8", "--data-checksums"],
        )
        .await;
        old.start().await;
        old.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS id")
            .await;
        old.psql("CHECKPOINT").await;
        old.psql("INSERT INTO t VALUES (5001)").await;
        old.stop("immediate").await;
        assert!(!control::read_control(&old.data).unwrap().clean());

        let new_data = dirs.p("new");
        let scratch = dirs.p("scratch");
        let m = migrate(&dirs.request(&b14, &b15, &old.data, &new_data, &scratch))
            .await
            .unwrap();
        assert_eq!(m.method, Method::PgUpgrade);
        let new = Server::on(&dirs, &b15, &b15, &new_data, 5915);
        new.start().await;
        assert_eq!(
            new.psql("SELECT count(*), max(id) FROM t").await,
            "5001|5001"
        );
        assert_eq!(new.psql("SHOW data_checksums").await, "on");
        assert_eq!(
            new.psql("SELECT datcollate || ' ' || pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'template0'").await,
            "C.UTF-8 UTF8"
        );
        new.stop("fast").await;
    }

    #[tokio::test]
    async fn extensions_older_than_the_new_builds_are_updated() {
        let (b14, b18) = (build(14).await, build(18).await);
        let dirs = Dirs::new();
        let old = Server::init(&dirs, &b14, &b18, "old", 6014).await;
        old.start().await;
        old.psql("CREATE EXTENSION hstore VERSION '1.4'; CREATE TABLE t (h hstore); INSERT INTO t VALUES ('a=>1')").await;
        old.stop("fast").await;
        let new_data = dirs.p("new");
        let scratch = dirs.p("scratch");
        migrate(&dirs.request(&b14, &b18, &old.data, &new_data, &scratch))
            .await
            .unwrap();
        let new = Server::on(&dirs, &b18, &b18, &new_data, 6018);
        new.start().await;
        assert_eq!(
            new.psql("SELECT e.extversion = a.default_version, e.extversion <> '1.4' FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'hstore'").await,
            "t|t"
        );
        assert_eq!(new.psql("SELECT h -> 'a' FROM t").await, "1");
        new.stop("fast").await;
    }
}
