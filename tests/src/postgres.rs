//! PostgreSQL fixtures the database tests share: the installed builds, one per major
//! ([`Build::major`]: a missing one fails the test, saying to run
//! `scripts/install-postgres.sh`); a [`Cluster`] initdb'd, started on its own socket
//! directory and port, queried with `psql`, stopped fast or immediately, every program run
//! as the `postgres` user when the tests are root (PostgreSQL refuses root); and
//! [`old_datamon_bundle`], a PostgreSQL 12 data directory laid out exactly as datamon's old
//! sidecar left it.
//!
//! These fixtures are synchronous (std processes, each waited for within [`DEADLINE`]).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{within_deadline, DEADLINE};

/// Where builds are looked for, in order: `<root>/<major>/bin`.
const ROOTS: [&str; 2] = ["/opt/datamon-postgres", "/usr/lib/postgresql"];

/// The superuser role of every fixture cluster.
pub const SUPERUSER: &str = "postgres";

/// The table of [`old_datamon_bundle`]: `t (id int primary key, s text)`.
pub const OLD_TABLE: &str = "t";

/// Rows of [`OLD_TABLE`] written before the `CHECKPOINT` (ids 1..=this).
pub const OLD_ROWS_BEFORE_CHECKPOINT: i64 = 1000;

/// Rows written after it, which only crash recovery brings back (ids after those).
pub const OLD_ROWS_AFTER_CHECKPOINT: i64 = 5;

/// One installed PostgreSQL build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    /// Its major.
    pub major: u32,
    /// Its version (`postgres --version`: "18.6").
    pub version: String,
    /// Its bin directory.
    pub bin: PathBuf,
}

impl Build {
    /// The build of `major`: panics, saying to run scripts/install-postgres.sh, if none.
    pub fn major(major: u32) -> Build {
        Self::find(major).unwrap_or_else(|| {
            panic!(
                "no PostgreSQL {major} build in {}: run scripts/install-postgres.sh",
                ROOTS.map(|r| format!("{r}/{major}/bin")).join(" or ")
            )
        })
    }

    /// The build of `major`, if installed.
    pub fn find(major: u32) -> Option<Build> {
        ROOTS.iter().find_map(|root| {
            let bin = Path::new(root).join(major.to_string()).join("bin");
            let out = Command::new(bin.join("postgres"))
                .arg("--version")
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text.split_whitespace().nth(2)?.to_string();
            Some(Build {
                major,
                version,
                bin,
            })
        })
    }

    /// The newest installed full build (with psql): the client of every fixture.
    pub fn client() -> Build {
        [18, 17, 16, 15, 14]
            .into_iter()
            .filter_map(Self::find)
            .find(|b| b.has("psql"))
            .unwrap_or_else(|| {
                panic!("no full PostgreSQL build (with psql): run scripts/install-postgres.sh")
            })
    }

    /// A program of this build.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Whether it has program `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tool(name).is_file()
    }
}

/// The account PostgreSQL's programs run as: `postgres` when the tests are root, else
/// the current user (uid, gid).
pub fn account() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let u = nix::unistd::User::from_name("postgres")
        .expect("look up the user postgres")
        .expect("the tests run as root, so PostgreSQL runs as the user postgres: create it (useradd --system postgres)");
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

/// A command of PostgreSQL's that runs as [`account`], without the environment's `PG*`.
pub fn pg_command(program: &Path) -> Command {
    let mut c = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            c.env_remove(k);
        }
    }
    c.env("LC_ALL", "C").stdin(Stdio::null());
    if let Some((uid, gid)) = account() {
        c.uid(uid).gid(gid);
        c.env("HOME", "/tmp");
    }
    c
}

/// Runs `c` to its end within [`DEADLINE`]; panics with its output unless it succeeds.
/// Its stdout.
pub fn run_ok(mut c: Command, what: &str) -> String {
    let label = what.to_string();
    let out = within_deadline(what, move || c.output())
        .unwrap_or_else(|e| panic!("cannot run {label}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives `path` (recursively) to [`account`], mode 0700 at the top.
pub fn own(path: &Path) {
    if let Some((uid, gid)) = account() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(p) = stack.pop() {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).expect("chown");
            if p.is_dir() && !p.is_symlink() {
                stack.extend(
                    std::fs::read_dir(&p)
                        .expect("read_dir")
                        .map(|e| e.expect("entry").path()),
                );
            }
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
}

/// A scratch directory the server account can traverse (0755), removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("pg")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    t
}

/// A free TCP port on 127.0.0.1 (for a server's socket name, or its TCP port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A fixture cluster: its data directory, socket directory and port.
pub struct Cluster {
    /// The build that runs it.
    pub build: Build,
    /// The build whose psql talks to it.
    pub client: Build,
    /// The data directory.
    pub data: PathBuf,
    /// The socket directory (owned by the server account).
    pub socket_dir: PathBuf,
    /// Its port (the socket's name; TCP only when started so).
    pub port: u16,
}

impl Cluster {
    /// initdb of a new cluster of `build` in `<dir>/data` (UTF8, C locale, no checksums,
    /// trust), socket dir `<dir>/sock`. `dir` must be traversable by the account
    /// ([`tempdir`]).
    pub fn init(build: &Build, dir: &Path) -> Cluster {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("mkdir data");
        own(&data);
        let mut c = pg_command(&build.tool("initdb"));
        c.arg("-D").arg(&data).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        if build.major >= 18 {
            c.arg("--no-data-checksums");
        }
        run_ok(c, &format!("initdb of PostgreSQL {}", build.version));
        Self::on(build, &data, &dir.join("sock"))
    }

    /// A cluster of `build` on an existing data directory, socket dir `socket_dir`
    /// (created and owned).
    pub fn on(build: &Build, data: &Path, socket_dir: &Path) -> Cluster {
        std::fs::create_dir_all(socket_dir).expect("mkdir sock");
        own(socket_dir);
        Cluster {
            build: build.clone(),
            client: Build::client(),
            data: data.to_path_buf(),
            socket_dir: socket_dir.to_path_buf(),
            port: free_port(),
        }
    }

    /// The server's log file.
    pub fn log(&self) -> PathBuf {
        self.socket_dir.join(format!("server-{}.log", self.port))
    }

    /// Starts it on its socket only (no TCP).
    pub fn start(&self) {
        self.start_with("-c listen_addresses=''");
    }

    /// Starts it with more server options (`-c listen_addresses=127.0.0.1` for TCP).
    pub fn start_with(&self, options: &str) {
        let opts = format!(
            "-k '{}' -p {} {options}",
            self.socket_dir.display(),
            self.port
        );
        let mut c = pg_command(&self.build.tool("pg_ctl"));
        c.arg("-D").arg(&self.data).arg("-l").arg(self.log()).args([
            "-w",
            "-t",
            &DEADLINE.as_secs().to_string(),
            "-o",
            &opts,
            "start",
        ]);
        let out = c.output().expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start of PostgreSQL {} failed: {}\nlog:\n{}",
            self.build.version,
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Runs `sql` as the superuser in database `postgres` (unaligned, tuples only,
    /// stopping at the first error): its output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// [`Cluster::psql`] in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let mut c = pg_command(&self.client.tool("psql"));
        c.arg("-X")
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db])
            .args(["-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run_ok(c, &format!("psql {sql:?}")).trim().to_string()
    }

    /// Stops it with `pg_ctl -m fast` (a clean shutdown).
    pub fn stop_fast(&self) {
        self.stop("fast");
    }

    /// Stops it with `pg_ctl -m immediate` (as datamon's old sidecar did: needs recovery).
    pub fn stop_immediate(&self) {
        self.stop("immediate");
    }

    fn stop(&self, mode: &str) {
        let mut c = pg_command(&self.build.tool("pg_ctl"));
        c.arg("-D").arg(&self.data).args([
            "-m",
            mode,
            "-w",
            "-t",
            &DEADLINE.as_secs().to_string(),
            "stop",
        ]);
        run_ok(c, &format!("pg_ctl -m {mode} stop"));
    }

    /// The state pg_control records (byte 16: 1 shut down, 6 in production).
    pub fn control_state(&self) -> u32 {
        control_state(&self.data)
    }
}

/// The state of `data`'s pg_control (byte 16, little-endian u32).
pub fn control_state(data: &Path) -> u32 {
    let b = std::fs::read(data.join("global/pg_control")).expect("read pg_control");
    u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"))
}

/// Writes into `dir` (which must not exist yet) a PostgreSQL 12 data directory laid out
/// exactly as datamon's old sidecar left it: [`OLD_TABLE`] with
/// [`OLD_ROWS_BEFORE_CHECKPOINT`] rows, `VACUUM; CHECKPOINT;`, then
/// [`OLD_ROWS_AFTER_CHECKPOINT`] more, `pg_ctl -m immediate stop`, then a copy of the files
/// only (no empty directories) plus a `pg_version` file holding "12" at the root. The
/// files belong to the tests' user (as a download leaves them).
pub fn old_datamon_bundle(dir: &Path) {
    let build = Build::major(12);
    let work = tempdir();
    let live = Cluster::init(&build, work.path());
    live.start();
    live.psql(&format!(
        "CREATE TABLE {OLD_TABLE} (id int PRIMARY KEY, s text); \
         INSERT INTO {OLD_TABLE} SELECT i, 'row ' || i FROM generate_series(1, {OLD_ROWS_BEFORE_CHECKPOINT}) i"
    ));
    live.psql("VACUUM");
    live.psql("CHECKPOINT");
    live.psql(&format!(
        "INSERT INTO {OLD_TABLE} SELECT i, 'after the checkpoint' \
         FROM generate_series({}, {}) i",
        OLD_ROWS_BEFORE_CHECKPOINT + 1,
        OLD_ROWS_BEFORE_CHECKPOINT + OLD_ROWS_AFTER_CHECKPOINT
    ));
    live.stop_immediate();
    assert!(!dir.exists(), "{} exists already", dir.display());
    copy_files_only(&live.data, dir);
    std::fs::write(dir.join("pg_version"), "12").expect("write pg_version");
}

/// Copies the regular files under `from` to `to`, creating only the directories they
/// need (a bundle keeps no empty directory).
pub fn copy_files_only(from: &Path, to: &Path) {
    for f in regular_files(from) {
        let dest = to.join(f.strip_prefix(from).expect("under from"));
        std::fs::create_dir_all(dest.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&f, &dest).expect("copy");
    }
}

/// The regular files under `root` (at any depth).
pub fn regular_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The directories a stopped cluster of `major` has empty, which a files-only bundle
/// loses and PostgreSQL needs (for tests that restore a bundle by hand).
///
/// A copy, on purpose, of the part of the agent's `skeleton` (agent/src/postgres/datadir.rs)
/// that can be empty: this crate cannot link the agent's library, and no crate both link
/// is the place for PostgreSQL's on-disk layout (datamon-plan is the plan's schema,
/// datamon-edge the binaries' edge). Nor can it be read from a real cluster: which of
/// these hold files depends on the cluster's history (a new PostgreSQL 12 cluster has a
/// file in `pg_notify` after initdb as after a clean stop, and one in `pg_stat` after a
/// clean stop only), so the list is every one some stopped cluster has empty. The
/// agent's own list is checked by the tests that restore through the agent; this one by
/// the test below, against real clusters of the oldest and newest builds.
pub fn skeleton(major: u32) -> Vec<&'static str> {
    let mut dirs = vec![
        "pg_commit_ts",
        "pg_dynshmem",
        "pg_logical/mappings",
        "pg_logical/snapshots",
        "pg_notify",
        "pg_replslot",
        "pg_serial",
        "pg_snapshots",
        "pg_stat",
        "pg_stat_tmp",
        "pg_tblspc",
        "pg_twophase",
        "pg_wal/archive_status",
    ];
    if major >= 17 {
        dirs.push("pg_wal/summaries");
    }
    dirs
}

/// A tmpfs of a fixed size mounted at a directory (created, 0755: the server account
/// traverses it), unmounted when dropped: a disk that fills up. Needs root.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, like "8m") at `dir`.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "mounting a tmpfs needs root"
        );
        std::fs::create_dir_all(dir).expect("mkdir the tmpfs mount point");
        let mut c = Command::new("mount");
        c.args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0755"),
            "tmpfs",
        ])
        .arg(dir);
        run_ok(c, &format!("mount a tmpfs of {size} at {}", dir.display()));
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Mounts a tmpfs at the existing directory `dir` holding what `dir` held, with
    /// `spare` bytes free beyond it.
    pub fn mount_keeping(dir: &Path, spare: u64) -> Tmpfs {
        let keep = tempdir();
        let copy = |from: &Path, to: &Path| {
            let mut c = Command::new("cp");
            c.arg("-a").arg(from.join(".")).arg(to);
            run_ok(c, &format!("cp -a {} {}", from.display(), to.display()));
        };
        copy(dir, keep.path());
        let used = tree_bytes(dir);
        let disk = Tmpfs::mount(dir, &(used + spare).to_string());
        copy(keep.path(), dir);
        disk
    }

    /// Gives it another size, keeping its files (`mount -o remount,size=`).
    pub fn resize(&self, size: &str) {
        let mut c = Command::new("mount");
        c.args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir);
        run_ok(c, &format!("resize the tmpfs at {}", self.dir.display()));
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        s.blocks_available() * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a server killed with its test may still hold a file there.
        let _ = Command::new("umount").arg("--lazy").arg(&self.dir).status();
    }
}

/// Bytes of the regular files under `dir`.
pub fn tree_bytes(dir: &Path) -> u64 {
    regular_files(dir)
        .iter()
        .map(|f| std::fs::metadata(f).expect("metadata").len())
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The directories under `root`, relative to it.
    fn dirs(root: &Path) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
                if e.file_type().unwrap().is_dir() {
                    out.insert(e.path().strip_prefix(root).unwrap().to_path_buf());
                    stack.push(e.path());
                }
            }
        }
        out
    }

    /// For the oldest and the newest build: a files-only copy of a cluster given its
    /// skeleton has every directory of the cluster again, and starts with its rows.
    #[test]
    fn a_files_only_copy_given_the_skeleton_has_every_directory_and_starts() {
        for major in [12, 18] {
            let skeleton = skeleton(major);
            let build = Build::major(major);
            let dir = tempdir();
            let live = Cluster::init(&build, &dir.path().join("live"));
            live.start();
            live.psql("CREATE TABLE t AS SELECT generate_series(1, 10) AS id");
            live.stop_fast();
            let copy = dir.path().join("copy");
            copy_files_only(&live.data, &copy);
            for d in &skeleton {
                std::fs::create_dir_all(copy.join(d)).unwrap();
            }
            assert_eq!(dirs(&copy), dirs(&live.data), "PostgreSQL {major}");
            own(&copy);
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700)).unwrap();
            let restored = Cluster::on(&build, &copy, &dir.path().join("sock2"));
            restored.start();
            assert_eq!(restored.psql("SELECT count(*) FROM t"), "10");
            restored.stop_fast();
        }
    }
}
