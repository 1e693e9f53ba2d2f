//! One PostgreSQL server of the plan: started as a child of the agent (`postgres -D`, run as
//! the server account, so that its exit is noticed at once), ready once a real connection
//! answers out of recovery, watched while the application runs, stopped with a deadline.
//!
//! Access (our own `hba_file` and `ident_file`, outside the data directory, so a restored
//! cluster's own `pg_hba.conf` is never used and never changed):
//! - the agent connects over the Unix socket as the superuser (`postgres.superuser`) with
//!   `peer` authentication and an ident map (`datamon`) from its own OS user and the
//!   server account to that superuser: no password of the restored cluster is needed;
//! - everyone else (the application) authenticates with a password (`scram-sha-256`), on
//!   the socket and on `localhost` TCP alike. When the owner role is the superuser itself,
//!   the application reaches it over TCP (on the socket, that role is the agent's).
//!
//! While saving, the files are rewritten to admit the agent only and reloaded, so that no
//! new session starts while the agent ends the application's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::binaries::Binaries;
use super::process::{self, Account, ProcessError};

/// The ident map of the agent's peer authentication.
const IDENT_MAP: &str = "datamon";

/// Lines of the server log kept in errors.
const LOG_TAIL_LINES: usize = 20;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Between two readiness attempts: an attempt is a connection on a Unix socket (well
/// under a millisecond when refused), and a restored server is usually up in 0.1–0.2 s,
/// so a short pause costs nothing and does not add half of itself to every restore.
const RETRY_EVERY: Duration = Duration::from_millis(10);

/// After an immediate shutdown, how long the postmaster may take before SIGKILL.
const IMMEDIATE_GRACE: Duration = Duration::from_secs(5);

/// A server that cannot be started, reached or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    /// Something else listens on the port.
    #[error("port {port} on localhost is already in use: give the database another `port`, or stop what listens there")]
    PortInUse {
        /// The port.
        port: u16,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the server could not be written.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error(transparent)]
    Spawn(#[from] ProcessError),
    /// The server exited before it was ready.
    #[error(
        "the server exited while starting ({status}); the last lines of its log {log}:\n{tail}"
    )]
    Exited {
        /// Its exit status.
        status: String,
        /// The log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// It did not accept connections in time.
    #[error("the server did not accept connections out of recovery within {deadline:?} (last: {last}); the last lines of its log {log}:\n{tail}")]
    NotReady {
        /// The deadline.
        deadline: Duration,
        /// The last connection error.
        last: String,
        /// The log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The agent's own connection was refused.
    #[error("the agent cannot connect to the server as {superuser} (peer authentication on the socket in {socket_dir}): the cluster must have that superuser role (postgres.superuser)")]
    Admin {
        /// The role.
        superuser: String,
        /// The socket directory.
        socket_dir: PathBuf,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },
    /// An SQL statement of the agent failed.
    #[error("cannot {what}")]
    Sql {
        /// What the statement was to do.
        what: String,
        /// The server's answer.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server did not stop in time (it was then stopped with `immediate`, or killed).
    #[error("the server did not shut down within {deadline:?}: stopped immediately instead (the data directory is not saved); the last lines of its log {log}:\n{tail}")]
    StopTimeout {
        /// The deadline.
        deadline: Duration,
        /// The log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
}

impl ServerError {
    /// The server's own complaint (its first FATAL or PANIC line) when it exited while
    /// starting.
    pub(crate) fn complaint(&self) -> Option<String> {
        match self {
            ServerError::Exited { tail, .. } => complaint(tail),
            _ => None,
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServerError {
    let path = path.to_path_buf();
    move |source| ServerError::Io { op, path, source }
}

/// Who may connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The agent (peer) and the application (password).
    Open,
    /// The agent only (while saving).
    AgentOnly,
}

/// A role or user name as pg_hba.conf and pg_ident.conf quote it.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The `hba_file` for `access` (pure).
pub(crate) fn hba_text(superuser: &str, access: Access) -> String {
    let mut s = format!(
        "# Written by datamon-agent (docs: agent/src/postgres/server.rs).\n\
         local all {su} peer map={IDENT_MAP}\n",
        su = quoted(superuser)
    );
    if access == Access::Open {
        s.push_str(
            "local all all scram-sha-256\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\n",
        );
    }
    s
}

/// The `ident_file`: each of `os_users` may be `superuser` (pure).
pub(crate) fn ident_text(superuser: &str, os_users: &[String]) -> String {
    let mut s = String::from("# Written by datamon-agent: who the agent is on the socket.\n");
    let mut seen = Vec::new();
    for u in os_users {
        if !seen.contains(&u) {
            seen.push(u);
            s.push_str(&format!(
                "{IDENT_MAP} {} {}\n",
                quoted(u),
                quoted(superuser)
            ));
        }
    }
    s
}

/// The `-c` settings of the server: the plan's, then ours (which win).
pub(crate) fn server_args(
    port: u16,
    socket_dir: &Path,
    conf_dir: &Path,
    settings: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut ours = vec![
        ("listen_addresses", "localhost".to_string()),
        ("port", port.to_string()),
        ("unix_socket_directories", socket_dir.display().to_string()),
        (
            "hba_file",
            conf_dir.join("pg_hba.conf").display().to_string(),
        ),
        (
            "ident_file",
            conf_dir.join("pg_ident.conf").display().to_string(),
        ),
        // PostgreSQL 12 still stores md5 by default, which scram lines refuse.
        ("password_encryption", "scram-sha-256".to_string()),
        // The log goes to the agent's file (stderr), which it reads on failures.
        ("logging_collector", "off".to_string()),
    ];
    let mut args = Vec::new();
    for (k, v) in settings {
        args.push("-c".to_string());
        args.push(format!("{k}={v}"));
    }
    for (k, v) in ours.drain(..) {
        args.push("-c".to_string());
        args.push(format!("{k}={v}"));
    }
    args
}

/// Fails when something listens on `port` of localhost already (PostgreSQL would only
/// warn and run on the other address).
pub(crate) fn check_port_free(port: u16) -> Result<(), ServerError> {
    for addr in [
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ] {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(ServerError::PortInUse { port, source: e })
            }
            // No IPv6 loopback here: nothing can listen there either.
            Err(_) => {}
        }
    }
    Ok(())
}

/// What a server is started with.
pub(crate) struct ServerSpec<'a> {
    /// The build.
    pub build: &'a Binaries,
    /// The account it runs as.
    pub account: &'a Account,
    /// The data directory (owned by the account, 0700).
    pub data: &'a Path,
    /// The socket directory.
    pub socket_dir: &'a Path,
    /// Where our hba and ident files and the server's log are.
    pub conf_dir: &'a Path,
    /// The TCP port on localhost.
    pub port: u16,
    /// The plan's settings.
    pub settings: &'a BTreeMap<String, String>,
    /// The role the agent connects as.
    pub superuser: &'a str,
}

/// A running server, the agent's child.
#[derive(Debug)]
pub(crate) struct Server {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    /// Where this server's lines start in the log (earlier attempts' lines come before).
    log_start: u64,
    conf_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    superuser: String,
    os_users: Vec<String>,
}

impl Server {
    /// Writes the access files and starts `postgres -D` (not yet ready: see
    /// [`Server::ready`]).
    pub(crate) async fn start(spec: &ServerSpec<'_>) -> Result<Server, ServerError> {
        check_port_free(spec.port)?;
        let me = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| nix::unistd::Uid::effective().to_string());
        let os_users = vec![me, spec.account.name.clone()];
        std::fs::create_dir_all(spec.conf_dir).map_err(io("create", spec.conf_dir))?;
        let log = spec.conf_dir.join("postgres.log");
        // The log is kept across attempts in the same directory; errors quote this one's.
        let log_start = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let server = |child: tokio::process::Child, pid| Server {
            child,
            pid,
            log: log.clone(),
            log_start,
            conf_dir: spec.conf_dir.to_path_buf(),
            socket_dir: spec.socket_dir.to_path_buf(),
            port: spec.port,
            superuser: spec.superuser.to_string(),
            os_users: os_users.clone(),
        };
        write_access(spec.conf_dir, spec.superuser, &os_users, Access::Open)?;
        // The server reads the access files as its account; the agent alone writes them.
        own_readable(spec.conf_dir, spec.account)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("open the server log", &log))?;
        let err = out.try_clone().map_err(io("open the server log", &log))?;
        let mut cmd = process::command(&spec.build.tool("postgres"), spec.account);
        cmd.arg("-D")
            .arg(spec.data)
            .args(server_args(
                spec.port,
                spec.socket_dir,
                spec.conf_dir,
                spec.settings,
            ))
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            what: "the PostgreSQL server".into(),
            program: spec.build.tool("postgres"),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(pid, port = spec.port, data = %spec.data.display(), build = %spec.build, "server started");
        Ok(server(child, pid))
    }

    /// The postmaster's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// What this server wrote to its log (not the lines of earlier attempts).
    fn own_log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(self.log_start)
            .unwrap_or(usize::MAX)
            .min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// The last lines of the server's log.
    pub(crate) fn log_tail(&self) -> String {
        process::tail(&[&self.own_log()], LOG_TAIL_LINES)
    }

    /// One connection as the superuser on the socket, to `dbname`.
    async fn connect(&self, dbname: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(&self.superuser)
            .dbname(dbname)
            .application_name("datamon-agent")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect(NoTls)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
        Ok(client)
    }

    /// The agent's connection (to `postgres`, else `template1` in a cluster without it).
    pub(crate) async fn admin(&self) -> Result<Client, ServerError> {
        let admin_err = |source| ServerError::Admin {
            superuser: self.superuser.clone(),
            socket_dir: self.socket_dir.clone(),
            source,
        };
        match self.connect("postgres").await {
            Ok(c) => Ok(c),
            Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
                self.connect("template1").await.map_err(admin_err)
            }
            Err(e) => Err(admin_err(e)),
        }
    }

    /// Waits until a connection answers and the server is out of recovery (retrying while
    /// the socket is not there or the server says it is starting), at most `deadline`.
    pub(crate) async fn ready(&mut self, deadline: Duration) -> Result<(), ServerError> {
        let until = Instant::now() + deadline;
        let mut last;
        loop {
            if let Some(status) = self.child.try_wait().map_err(io("wait for", &self.log))? {
                return Err(ServerError::Exited {
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            match self.admin().await {
                Ok(c) => match c.query_one("select pg_is_in_recovery()", &[]).await {
                    Ok(row) if !row.get::<_, bool>(0) => return Ok(()),
                    Ok(_) => last = "the server is in recovery".into(),
                    Err(e) => last = e.to_string(),
                },
                Err(ServerError::Admin { source, .. })
                    if source.as_db_error().is_none()
                        || source.code() == Some(&SqlState::CANNOT_CONNECT_NOW) =>
                {
                    last = datamon_edge::chain(&source);
                }
                Err(e) => return Err(e),
            }
            if Instant::now() >= until {
                return Err(ServerError::NotReady {
                    deadline,
                    last,
                    log: self.log.clone(),
                    tail: self.log_tail(),
                });
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Resolves when the server has exited (cancel-safe): how it ended.
    pub(crate) async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        }
    }

    /// Lets only the agent connect from now on (new sessions of the application are
    /// refused), then ends every other session.
    pub(crate) async fn close_to_others(&self, client: &Client) -> Result<u64, ServerError> {
        write_access(
            &self.conf_dir,
            &self.superuser,
            &self.os_users,
            Access::AgentOnly,
        )?;
        let sql = |what: &str| {
            let what = what.to_string();
            move |source| ServerError::Sql { what, source }
        };
        client
            .execute("select pg_reload_conf()", &[])
            .await
            .map_err(sql("reload the access rules"))?;
        let rows = client
            .query(
                "select pg_terminate_backend(pid) from pg_stat_activity \
                 where pid <> pg_backend_pid() and backend_type = 'client backend'",
                &[],
            )
            .await
            .map_err(sql("end the application's sessions"))?;
        Ok(rows.len() as u64)
    }

    /// A fast shutdown (SIGINT: sessions ended, a shutdown checkpoint), waited for at most
    /// `deadline`; past it, an immediate one and an error.
    pub(crate) async fn stop(&mut self, deadline: Duration) -> Result<ExitStatus, ServerError> {
        if let Some(s) = self.child.try_wait().map_err(io("wait for", &self.log))? {
            return Ok(s);
        }
        self.signal(Signal::SIGINT);
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(r) => r.map_err(io("wait for", &self.log)),
            Err(_) => {
                self.signal(Signal::SIGQUIT);
                if tokio::time::timeout(IMMEDIATE_GRACE, self.child.wait())
                    .await
                    .is_err()
                {
                    // kill_on_drop would too; say so now.
                    let _ = self.child.start_kill();
                }
                Err(ServerError::StopTimeout {
                    deadline,
                    log: self.log.clone(),
                    tail: self.log_tail(),
                })
            }
        }
    }

    fn signal(&self, sig: Signal) {
        let Ok(pid) = i32::try_from(self.pid) else {
            return;
        };
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig) {
            tracing::warn!(pid, signal = %sig, error = %e, "cannot signal the server");
        }
    }
}

/// The first FATAL or PANIC line of a server log, from its severity on (without the
/// timestamp and pid prefix), with the DETAIL line after it when there is one (pure).
pub(crate) fn complaint(log: &str) -> Option<String> {
    let strip = |l: &str, tag: &str| {
        l.find(tag)
            .map(|at| l[at..].split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let mut lines = log.lines();
    let first = lines
        .by_ref()
        .find_map(|l| strip(l, "FATAL:").or_else(|| strip(l, "PANIC:")))?;
    match lines.next().and_then(|l| strip(l, "DETAIL:")) {
        Some(detail) => Some(format!("{first} {detail}")),
        None => Some(first),
    }
}

/// Writes the hba and ident files for `access` (replacing them whole).
fn write_access(
    conf_dir: &Path,
    superuser: &str,
    os_users: &[String],
    access: Access,
) -> Result<(), ServerError> {
    for (name, text) in [
        ("pg_hba.conf", hba_text(superuser, access)),
        ("pg_ident.conf", ident_text(superuser, os_users)),
    ] {
        let path = conf_dir.join(name);
        let tmp = conf_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("write", &path))?;
    }
    Ok(())
}

/// The server account may read what is in `dir` (0755 dir, 0644 files): chown when root.
fn own_readable(dir: &Path, account: &Account) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", dir))?;
    if process::is_root() {
        std::os::unix::fs::chown(dir, Some(account.uid), Some(account.gid))
            .map_err(io("chown", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_a_peer_and_everyone_else_gives_a_password() {
        let open = hba_text("postgres", Access::Open);
        let lines: Vec<_> = open.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines[0], "local all \"postgres\" peer map=datamon");
        assert!(lines[1..].iter().all(|l| l.ends_with("scram-sha-256")));
        assert!(lines.iter().any(|l| l.contains("127.0.0.1/32")));
        let closed = hba_text("postgres", Access::AgentOnly);
        assert_eq!(closed.lines().filter(|l| !l.starts_with('#')).count(), 1);
        let ident = ident_text(
            "postgres",
            &["root".into(), "postgres".into(), "root".into()],
        );
        assert_eq!(
            ident.lines().skip(1).collect::<Vec<_>>(),
            [
                "datamon \"root\" \"postgres\"",
                "datamon \"postgres\" \"postgres\""
            ]
        );
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn our_settings_come_last_and_win() {
        let plan = BTreeMap::from([
            ("shared_buffers".to_string(), "64MB".to_string()),
            ("port".to_string(), "1".to_string()),
        ]);
        let args = server_args(5433, Path::new("/s"), Path::new("/c"), &plan);
        let pos = |a: &str| args.iter().rposition(|x| x == a).unwrap();
        assert!(pos("port=5433") > pos("port=1"));
        assert!(args.contains(&"shared_buffers=64MB".to_string()));
        assert!(args.contains(&"hba_file=/c/pg_hba.conf".to_string()));
        assert!(args.contains(&"unix_socket_directories=/s".to_string()));
        assert!(args.contains(&"listen_addresses=localhost".to_string()));
    }

    #[test]
    fn the_servers_complaint_is_its_first_fatal_or_panic_line() {
        let log = "2026-12-01 16:27:59.647 UTC [17763] LOG:  starting\n\
                   2026-12-01 16:27:59.647 UTC [17763] FATAL:  database files are incompatible with server\n\
                   2026-12-01 16:27:59.647 UTC [17763] DETAIL:  The database cluster was initialized with PG_CONTROL_VERSION 1300.\n\
                   2026-12-01 16:27:59.651 UTC [17763] LOG:  database system is shut down\n";
        assert_eq!(
            complaint(log).unwrap(),
            "FATAL: database files are incompatible with server DETAIL: The database cluster was initialized with PG_CONTROL_VERSION 1300."
        );
        assert_eq!(
            complaint("x [1] PANIC:  could not read file \"global/pg_control\": read 100 of 296\nx [1] LOG:  aborted\n").unwrap(),
            "PANIC: could not read file \"global/pg_control\": read 100 of 296"
        );
        assert_eq!(complaint("x LOG:  ready\n"), None);
    }

    #[test]
    fn a_port_in_use_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = check_port_free(port).unwrap_err().to_string();
        assert!(
            e.contains(&port.to_string()) && e.contains("another `port`"),
            "{e}"
        );
        drop(l);
        check_port_free(port).unwrap();
    }
}
