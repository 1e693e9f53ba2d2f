//! PostgreSQL databases of the data plan, end to end through the real CLI: a plan file,
//! `datamon-agent sidecar` and `datamon-agent wrap -- sh -c SCRIPT` as real processes (as
//! a pod's containers would run them), real servers of the installed builds
//! (scripts/install-postgres.sh), the application a `psql` over TCP with the owner's
//! password. Each test checks rows, bundles, exit codes and the reasons the participants
//! give. As root, the servers run as the user `postgres`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use datamon_e2e::postgres as pg;
use datamon_e2e::{wait_until, World, DEADLINE};
use serde_json::{json, Value};

/// The build whose `psql` the application uses.
const CLIENT_BIN: &str = "/opt/datamon-postgres/18/bin";

/// Short deadlines, so that no failure test takes long.
fn deadlines() -> Value {
    json!({"ready": "60s", "start": "60s", "upload": "60s", "grace": "2s"})
}

/// `psql` of the newest build; fails (not skips) when it is missing.
fn psql() -> PathBuf {
    let p = Path::new(CLIENT_BIN).join("psql");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-postgres.sh",
        p.display()
    );
    p
}

/// A free TCP port on localhost (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A world whose scratch directory the server account may traverse.
fn world() -> World {
    let w = World::local();
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    psql();
    w
}

/// A database entry of the plan: `name` on `port`, its directory under the world, with the
/// fields of `extra`.
fn database(world: &World, name: &str, port: u16, extra: Value) -> Value {
    let mut d = json!({
        "name": name,
        "port": port,
        "dir": world.path(&format!("pg/{name}")),
    });
    d.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    d
}

/// `psql` as `role` on `port` to database `db` with the password in `$PW_<port>`, running
/// `sql`, tuples only (for the application's script).
fn psql_cmd(port: u16, role: &str, db: &str, sql: &str) -> String {
    format!(
        "PGPASSWORD=\"$PW_{port}\" {psql} -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {port} -U {role} -d {db} -c \"{sql}\"",
        psql = psql().display()
    )
}

/// Runs `plan` as `run` with an application that runs `sql` as the superuser on `port` to
/// database `db`, with the password the sidecar generated for database `name` (read from
/// its socket directory): how it ended, and what the query printed (trimmed; empty if it
/// did not run).
fn run_as_superuser(
    world: &World,
    run_name: &str,
    plan: &Value,
    (name, port): (&str, u16),
    db: &str,
    sql: &str,
) -> (Ended, String) {
    let sock = world.path(&format!("{run_name}/run/postgres/{name}"));
    let seen = world.path(&format!("{run_name}-seen.txt"));
    let script = format!(
        "export PW_{port}=$(cat {}/password) && {} > {}",
        sock.display(),
        psql_cmd(port, "postgres", db, sql),
        seen.display()
    );
    let e = run(world, run_name, plan, &[], &script);
    let out = std::fs::read_to_string(&seen).unwrap_or_default();
    (e, out.trim().to_string())
}

/// One run of a plan: the sidecar and the wrapped application.
struct Run {
    coordination: PathBuf,
    sidecar: Child,
    app: Child,
    logs: PathBuf,
}

/// What a run ended with.
struct Ended {
    sidecar_code: Option<i32>,
    app_code: Option<i32>,
    sidecar: Value,
    app: Value,
    logs: String,
    /// The sidecar's steps (`step` of its state file) seen while it ran, in order.
    steps: Vec<String>,
}

impl Ended {
    fn reason(&self, who: &str) -> (String, String) {
        let s = if who == "app" {
            &self.app
        } else {
            &self.sidecar
        };
        (
            s["reason"]["code"].as_str().unwrap_or_default().to_string(),
            s["reason"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

/// Starts the plan's sidecar `datamon` (with `env` too) and the application `script`
/// under `wrap`.
fn start(world: &World, run: &str, plan: &Value, env: &[(&str, &str)], script: &str) -> Run {
    let dir = world.path(run);
    std::fs::create_dir_all(&dir).unwrap();
    let coordination = dir.join("run");
    let mut plan = plan.clone();
    plan["coordination"] = json!(coordination);
    plan["termination_message"] = json!(dir.join("termination-log"));
    plan["deadlines"] = deadlines();
    let file = dir.join("plan.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let spawn = |name: &str, args: &[&str]| -> Child {
        let mut c: Command = world.agent();
        c.args(args)
            .arg("--plan")
            .arg(&file)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(logs.join(format!("{name}.err"))).unwrap());
        c.spawn().unwrap()
    };
    let sidecar = spawn("sidecar", &["sidecar", "--participant", "datamon"]);
    let mut app_args = vec!["wrap".to_string()];
    app_args.extend(["--plan".into(), file.display().to_string()]);
    app_args.extend(["--".into(), "sh".into(), "-c".into(), script.into()]);
    let mut c = world.agent();
    c.args(&app_args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(logs.join("app.out")).unwrap())
        .stderr(std::fs::File::create(logs.join("app.err")).unwrap());
    let app = c.spawn().unwrap();
    Run {
        coordination,
        sidecar,
        app,
        logs,
    }
}

impl Run {
    /// The participant's state file, once there.
    fn state(&self, who: &str) -> Option<Value> {
        let text = std::fs::read(self.coordination.join(format!("{who}.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Waits for both processes (at most [`DEADLINE`]: a hang fails the test).
    fn wait(mut self) -> Ended {
        let until = Instant::now() + DEADLINE;
        let (mut s, mut a) = (None, None);
        let mut steps: Vec<String> = Vec::new();
        while s.is_none() || a.is_none() {
            if let Some(step) = self
                .state("datamon")
                .and_then(|v| v["step"].as_str().map(String::from))
            {
                if steps.last() != Some(&step) {
                    steps.push(step);
                }
            }
            if s.is_none() {
                s = self.sidecar.try_wait().unwrap();
            }
            if a.is_none() {
                a = self.app.try_wait().unwrap();
            }
            if Instant::now() >= until {
                let _ = self.sidecar.kill();
                let _ = self.app.kill();
                panic!("the run did not end within {DEADLINE:?}:\n{}", self.logs());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ended {
            sidecar_code: s.unwrap().code(),
            app_code: a.unwrap().code(),
            sidecar: self.state("datamon").unwrap_or(Value::Null),
            app: self.state("app").unwrap_or(Value::Null),
            logs: self.logs(),
            steps,
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["sidecar.err", "app.out", "app.err"] {
            let text = std::fs::read_to_string(self.logs.join(f)).unwrap_or_default();
            out.push_str(&format!("--- {f}\n{text}\n"));
        }
        out
    }
}

/// Runs `plan` to its end.
fn run(world: &World, name: &str, plan: &Value, env: &[(&str, &str)], script: &str) -> Ended {
    start(world, name, plan, env, script).wait()
}

/// Asserts a run went well: both exit 0.
fn assert_ok(e: &Ended) {
    assert_eq!(e.app_code, Some(0), "app: {}\n{}", e.app, e.logs);
    assert_eq!(
        e.sidecar_code,
        Some(0),
        "sidecar: {}\n{}",
        e.sidecar,
        e.logs
    );
}

/// Asserts the sidecar failed before the application ran, with `code`, the wrapper 69.
fn assert_failed_before_app(e: &Ended, code: &str) -> String {
    assert_eq!(e.sidecar_code, Some(1), "{}\n{}", e.sidecar, e.logs);
    assert_eq!(e.app_code, Some(69), "{}\n{}", e.app, e.logs);
    let (c, message) = e.reason("datamon");
    assert_eq!(c, code, "{message}\n{}", e.logs);
    message
}

#[test]
fn a_database_saved_after_the_app_wrote_rows_restores_them_in_the_next_run() {
    let world = world();
    world.create_repo("pg", "warehouse");
    let port = free_port();
    let pw = format!("PW_{port}");
    let env = [
        (pw.as_str(), "s3cret-'\"pw"),
        ("WH_PASSWORD", "s3cret-'\"pw"),
    ];
    let owner = json!({"role": "app", "password_env": "WH_PASSWORD"});
    // A new cluster (no source), saved with a label.
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "owner": owner,
        "output": {"repo": "pg", "message": "nightly", "label": "current"},
    }))]});
    let script = [
        psql_cmd(
            port,
            "app",
            "warehouse",
            "create table t (i int primary key, s text)",
        ),
        psql_cmd(
            port,
            "app",
            "warehouse",
            "insert into t select g, md5(g::text) from generate_series(1, 1000) g",
        ),
    ]
    .join(" && ");
    let e = run(&world, "first", &plan, &env, &script);
    assert_ok(&e);
    let id = e.sidecar["outputs"]["warehouse"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(world.bundles("pg"), vec![id.clone()]);
    let files = world.bundle_files("pg", &id);
    let file = |n: &str| {
        files
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, b)| b.clone())
    };
    assert_eq!(file("pg_version").unwrap(), b"18\n");
    assert_eq!(file("PG_VERSION").unwrap(), b"18\n");
    assert!(
        file("postmaster.pid").is_none(),
        "a postmaster file was saved"
    );
    let wal: Vec<_> = files
        .iter()
        .filter(|(n, _)| n.starts_with("pg_wal/") && n.len() == "pg_wal/".len() + 24)
        .collect();
    assert_eq!(wal.len(), 1, "only the checkpoint's WAL segment is saved");
    let label = world.ok(&[
        "label", "get", "--repo", "pg", "--label", "current", "--output", "json",
    ]);
    assert!(label.contains(&id), "{label}");

    // The next run restores it by label, sees every row, and (read-only) saves nothing.
    let port = free_port();
    let pw = format!("PW_{port}");
    let env = [
        (pw.as_str(), "s3cret-'\"pw"),
        ("WH_PASSWORD", "s3cret-'\"pw"),
    ];
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "owner": owner,
        "source": {"repo": "pg", "label": "current"},
    }))]});
    let seen = world.path("seen.txt");
    let script = format!(
        "{} > {}",
        psql_cmd(port, "app", "warehouse", "select count(*), sum(i) from t"),
        seen.display()
    );
    let e = run(&world, "second", &plan, &env, &script);
    assert_ok(&e);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        "1000|500500"
    );
    assert_eq!(e.sidecar["inputs"]["warehouse"], id.as_str());
    assert!(
        e.sidecar["outputs"].get("warehouse").is_none(),
        "{}",
        e.sidecar
    );
    assert_eq!(
        world.bundles("pg"),
        vec![id],
        "a read-only database saved a bundle"
    );
}

#[test]
fn a_new_cluster_gets_its_database_and_a_generated_password() {
    let world = world();
    let port = free_port();
    let plan = json!({"databases": [database(&world, "scratch", port, json!({}))]});
    let sock = world.path("run/run/postgres/scratch");
    // The application reads the generated password from the socket directory.
    let sql = "create table x (i int); insert into x values (7); select current_database(), sum(i) from x";
    let (e, seen) = run_as_superuser(&world, "run", &plan, ("scratch", port), "scratch", sql);
    assert_ok(&e);
    assert_eq!(seen, "scratch|7");
    let mode = std::fs::metadata(sock.join("password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        std::fs::read_to_string(sock.join("password"))
            .unwrap()
            .len(),
        36
    );
}

#[test]
fn a_bundle_without_pg_version_fails_naming_the_database_and_the_bundle() {
    let world = world();
    let id = world.seed("notpg", &[("hello.txt", b"not a database".to_vec())]);
    let plan = json!({"databases": [database(&world, "warehouse", free_port(), json!({
        "source": {"repo": "notpg"},
    }))]});
    let e = run(&world, "run", &plan, &[], "echo the app ran");
    let m = assert_failed_before_app(&e, "database_failed");
    assert!(
        m.contains("database warehouse")
            && m.contains("notpg")
            && m.contains(&id)
            && m.contains("PG_VERSION"),
        "{m}"
    );
    assert!(!e.logs.contains("the app ran"));
}

#[test]
fn a_restored_cluster_without_the_apps_database_fails_listing_the_ones_it_has() {
    let world = world();
    let files = clean_cluster_files(&world, "files", 18, 3);
    upload_data_dir(&world, "pg", &files);
    let plan = json!({"databases": [database(&world, "warehouse", free_port(), json!({
        "source": {"repo": "pg"},
        "database": "analytics",
    }))]});
    let e = run(&world, "run", &plan, &[], "echo the app ran");
    let m = assert_failed_before_app(&e, "database_failed");
    assert!(
        m.contains("database warehouse")
            && m.contains("\"analytics\"")
            && m.contains("it has postgres")
            && m.contains("set `database`"),
        "{m}"
    );
    assert!(!e.logs.contains("the app ran"));
}

#[test]
fn a_port_in_use_fails_before_the_app_runs() {
    let world = world();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({}))]});
    let e = run(&world, "run", &plan, &[], "echo the app ran");
    let m = assert_failed_before_app(&e, "database_failed");
    assert!(
        m.contains("database warehouse") && m.contains(&format!("port {port}")),
        "{m}"
    );
    drop(taken);
}

#[test]
fn a_missing_password_variable_fails_naming_it() {
    let world = world();
    let plan = json!({"databases": [database(&world, "warehouse", free_port(), json!({
        "owner": {"role": "app", "password_env": "NO_SUCH_PASSWORD_VAR"},
    }))]});
    let e = run(&world, "run", &plan, &[], "echo the app ran");
    let m = assert_failed_before_app(&e, "database_failed");
    assert!(
        m.contains("database warehouse") && m.contains("NO_SUCH_PASSWORD_VAR"),
        "{m}"
    );
    // Nothing was started: no data directory was made.
    assert!(!world.path("pg/warehouse/data").exists());
}

#[test]
fn the_apps_open_session_is_ended_and_the_save_succeeds() {
    let world = world();
    world.create_repo("pg", "warehouse");
    let port = free_port();
    let pw = format!("PW_{port}");
    let env = [(pw.as_str(), "pw"), ("WH_PASSWORD", "pw")];
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "owner": {"role": "app", "password_env": "WH_PASSWORD"},
        "output": {"repo": "pg"},
    }))]});
    // A session left behind by the application (a psql sleeping in the background), still
    // there when the save starts.
    let script = format!(
        "{} && ({} >/dev/null 2>&1 &) && sleep 1",
        psql_cmd(port, "app", "warehouse", "create table t as select 42 as i"),
        psql_cmd(port, "app", "warehouse", "select pg_sleep(600)"),
    );
    let e = run(&world, "run", &plan, &env, &script);
    assert_ok(&e);
    let id = e.sidecar["outputs"]["warehouse"].as_str().unwrap();
    assert_eq!(world.bundles("pg"), vec![id.to_string()]);
    assert!(
        e.logs.contains("ended the application's sessions"),
        "{}",
        e.logs
    );
}

#[test]
fn a_server_killed_while_the_app_runs_stops_the_app_and_saves_nothing() {
    let world = world();
    world.create_repo("pg", "warehouse");
    let port = free_port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "output": {"repo": "pg"},
        "upload": "always",
    }))]});
    let r = start(&world, "run", &plan, &[], "sleep 120");
    wait_until("the application runs", || {
        r.state("app").is_some_and(|s| s["phase"] == "running")
    });
    let pid_file = world.path("pg/warehouse/data/postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    let e = r.wait();
    assert_eq!(e.app_code, Some(69), "{}\n{}", e.app, e.logs);
    assert_eq!(e.sidecar_code, Some(1), "{}\n{}", e.sidecar, e.logs);
    let (code, m) = e.reason("datamon");
    assert_eq!(code, "database_crashed", "{m}");
    assert!(m.contains("database warehouse") && m.contains(&pid), "{m}");
    assert_eq!(e.reason("app").0, "sidecar_failed");
    assert!(world.bundles("pg").is_empty());
}

#[test]
fn two_databases_on_two_ports_are_saved_side_by_side() {
    let world = world();
    world.create_repo("pg-a", "a");
    world.create_repo("pg-b", "b");
    let (pa, pb) = (free_port(), free_port());
    let (wa, wb) = (format!("PW_{pa}"), format!("PW_{pb}"));
    let env = [
        (wa.as_str(), "pa"),
        (wb.as_str(), "pb"),
        ("PA", "pa"),
        ("PB", "pb"),
    ];
    let plan = json!({"databases": [
        database(&world, "alpha", pa, json!({"owner": {"role": "app", "password_env": "PA"}, "output": {"repo": "pg-a"}})),
        database(&world, "beta", pb, json!({"owner": {"role": "app", "password_env": "PB"}, "output": {"repo": "pg-b"}})),
    ]});
    let script = [
        psql_cmd(pa, "app", "alpha", "create table t as select 1 as i"),
        psql_cmd(pb, "app", "beta", "create table t as select 2 as i"),
    ]
    .join(" && ");
    let e = run(&world, "run", &plan, &env, &script);
    assert_ok(&e);
    let a = e.sidecar["outputs"]["alpha"].as_str().unwrap();
    let b = e.sidecar["outputs"]["beta"].as_str().unwrap();
    assert_eq!(world.bundles("pg-a"), vec![a.to_string()]);
    assert_eq!(world.bundles("pg-b"), vec![b.to_string()]);
}

/// Uploads the data directory `data` (files only, `pg_version` at the root) as a bundle of
/// `repo`: its id.
fn upload_data_dir(world: &World, repo: &str, data: &Path) -> String {
    world.create_repo(repo, "a data directory");
    world.upload(repo, data, &[])
}

/// A cluster of `major` with table `t` of `rows` rows, stopped cleanly, copied as a
/// bundle would hold it into `<world>/<name>`.
fn clean_cluster_files(world: &World, name: &str, major: u32, rows: u32) -> PathBuf {
    let work = pg::tempdir();
    let c = pg::Cluster::init(&pg::Build::major(major), work.path());
    c.start();
    c.psql(&format!(
        "create extension if not exists hstore; create table t as select g as id, 'k=>v'::hstore as h from generate_series(1, {rows}) g"
    ));
    c.stop_fast();
    let files = world.path(name);
    pg::copy_files_only(&c.data, &files);
    std::fs::write(files.join("pg_version"), format!("{major}\n")).unwrap();
    files
}

/// The message of bundle `id` of `repo`.
fn bundle_message(world: &World, repo: &str, id: &str) -> String {
    let out = world.ok(&["bundle", "list", "--repo", repo, "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| b["message"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no bundle {id} in {out}"))
}

#[test]
fn an_old_datamon_postgresql_12_bundle_is_migrated_to_18_with_every_row() {
    let world = world();
    let files = world.path("old");
    pg::old_datamon_bundle(&files);
    let old = upload_data_dir(&world, "pg", &files);
    let port = free_port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "source": {"repo": "pg", "bundle": old},
        "output": {"repo": "pg", "message": "nightly"},
    }))]});
    let rows = pg::OLD_ROWS_BEFORE_CHECKPOINT + pg::OLD_ROWS_AFTER_CHECKPOINT;
    // The old cluster's table belongs to the superuser, the default owner: the
    // application reads it with the generated password, over TCP.
    let sql = "select current_setting('server_version_num')::int / 10000, count(*) from t";
    let (e, seen) = run_as_superuser(&world, "run", &plan, ("warehouse", port), "postgres", sql);
    assert_ok(&e);
    assert_eq!(seen, format!("18|{rows}"));
    let new = e.sidecar["outputs"]["warehouse"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        bundle_message(&world, "pg", &new),
        "nightly (PostgreSQL 12.22 → 18.6 by dump and restore)"
    );
    // The state file said what the sidecar did, step by step.
    eprintln!("steps: {:#?}", e.steps);
    let said = |start: &str| e.steps.iter().any(|s| s.starts_with(start));
    assert!(
        said("migrating database warehouse: PostgreSQL 12.22 → 18.6")
            && said("saving database warehouse: uploading"),
        "{:?}",
        e.steps
    );
    // The saved bundle restores on 18 without migrating, with every row of the old one.
    let port = free_port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "source": {"repo": "pg", "bundle": new},
    }))]});
    let sql = "select count(*) from t";
    let (e, seen) = run_as_superuser(&world, "again", &plan, ("warehouse", port), "postgres", sql);
    assert_ok(&e);
    assert_eq!(seen, rows.to_string());
}

#[test]
fn a_postgresql_14_bundle_is_upgraded_to_18_and_a_newer_one_is_refused() {
    let world = world();
    let files = clean_cluster_files(&world, "old14", 14, 2000);
    let old = upload_data_dir(&world, "pg", &files);
    let port = free_port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "source": {"repo": "pg", "bundle": old},
        "output": {"repo": "pg", "message": "upgraded"},
    }))]});
    let sql = "select count(*), min(h -> 'k') from t";
    let (e, seen) = run_as_superuser(&world, "run", &plan, ("warehouse", port), "postgres", sql);
    assert_ok(&e);
    assert_eq!(seen, "2000|v");
    let new = e.sidecar["outputs"]["warehouse"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        bundle_message(&world, "pg", &new),
        "upgraded (PostgreSQL 14.23 → 18.6 by pg_upgrade)"
    );

    // The 18 bundle on a 15 server: refused before the application runs.
    let plan = json!({"databases": [database(&world, "warehouse", free_port(), json!({
        "source": {"repo": "pg", "bundle": new},
        "major": 15,
    }))]});
    let e = run(&world, "older", &plan, &[], "echo the app ran");
    let m = assert_failed_before_app(&e, "database_failed");
    assert!(
        m.contains("database warehouse") && m.contains("PostgreSQL 18") && m.contains("15."),
        "{m}"
    );
}

#[test]
fn a_server_that_will_not_start_fails_with_its_log() {
    let world = world();
    let plan = json!({"databases": [database(&world, "warehouse", free_port(), json!({
        "settings": {"shared_buffers": "lots"},
    }))]});
    let e = run(&world, "run", &plan, &[], "echo the app ran");
    let m = assert_failed_before_app(&e, "database_failed");
    assert!(
        m.contains("database warehouse")
            && m.contains("exited while starting")
            && m.contains("shared_buffers"),
        "{m}"
    );
}

#[test]
fn sigterm_during_the_save_does_not_stop_it() {
    let world = world();
    world.create_repo("pg", "warehouse");
    let port = free_port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "output": {"repo": "pg", "label": "saved"},
    }))]});
    let r = start(&world, "run", &plan, &[], "true");
    let pid = r.sidecar.id().to_string();
    wait_until("the save starts", || {
        r.state("datamon")
            .is_some_and(|s| s["phase"] == "uploading")
    });
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let e = r.wait();
    assert_ok(&e);
    assert!(e.logs.contains("finishing it first"), "{}", e.logs);
    let id = e.sidecar["outputs"]["warehouse"].as_str().unwrap();
    assert_eq!(world.bundles("pg"), vec![id.to_string()]);
    let label = world.ok(&[
        "label", "get", "--repo", "pg", "--label", "saved", "--output", "json",
    ]);
    assert!(label.contains(id), "{label}");
}

#[test]
fn a_disk_that_fills_during_the_restore_fails_naming_the_directory_and_a_bigger_one_restores_it() {
    let world = world();
    world.create_repo("pg", "data directories");
    // (database, the bundle's major, the disk's room beyond the bundle): an empty
    // PostgreSQL 18 cluster (~40 MB) on 8 MiB fails before the download; a PostgreSQL 14
    // one fits, but its migration to 18 (a second cluster in data.new) does not.
    let cases = [
        ("small", 18, None),
        ("migrated", 14, Some(12 * 1024 * 1024)),
    ];
    for (name, major, spare) in cases {
        let files = clean_cluster_files(&world, &format!("files{major}"), major, 3);
        let id = world.upload("pg", &files, &[]);
        let dir = world.path(&format!("pg/{name}"));
        let size = match spare {
            None => "8m".to_string(),
            Some(spare) => (pg::tree_bytes(&files) + spare).to_string(),
        };
        let disk = pg::Tmpfs::mount(&dir, &size);
        let port = free_port();
        let plan = json!({"databases": [database(&world, name, port, json!({
            "source": {"repo": "pg", "bundle": id},
        }))]});
        let e = run(
            &world,
            &format!("{name}-full"),
            &plan,
            &[],
            "echo the app ran",
        );
        let m = assert_failed_before_app(&e, "database_failed");
        assert!(
            m.contains(&format!("database {name}"))
                && m.contains(&format!("no space left on the disk of {}", dir.display()))
                && m.contains("sizeLimit")
                && m.contains("`dir`"),
            "{m}"
        );
        assert!(!e.logs.contains("the app ran"));
        // Nothing half-restored is left to be taken for a data directory.
        for left in ["data", "data.new", "m"] {
            assert!(
                !dir.join(left).exists(),
                "{left} left behind in {}",
                dir.display()
            );
        }
        // The same directory with room enough: the next pod restores it on 18.
        disk.resize("512m");
        let sql = "select current_setting('server_version_num')::int / 10000, count(*) from t";
        let (e, seen) = run_as_superuser(
            &world,
            &format!("{name}-room"),
            &plan,
            (name, port),
            "postgres",
            sql,
        );
        assert_ok(&e);
        assert_eq!(seen, "18|3", "{name}");
    }
}

#[test]
fn a_store_that_fills_up_during_the_save_keeps_the_old_bundle_and_label() {
    let world = world();
    world.create_repo("pg", "warehouse");
    let port = free_port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "output": {"repo": "pg", "label": "current"},
    }))]});
    let sql = "create table t as select 1 as i";
    let (e, _) = run_as_superuser(
        &world,
        "first",
        &plan,
        ("warehouse", port),
        "warehouse",
        sql,
    );
    assert_ok(&e);
    let old = e.sidecar["outputs"]["warehouse"]
        .as_str()
        .unwrap()
        .to_string();
    // The store's blob bucket (a local directory store) moved onto a disk with 8 MiB to
    // spare, then the application writes ~40 MB of rows that do not compress.
    let blob = world.buckets.join("dev-blob");
    let _disk = pg::Tmpfs::mount_keeping(&blob, 8 * 1024 * 1024);
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "source": {"repo": "pg", "label": "current"},
        "output": {"repo": "pg", "label": "current"},
    }))]});
    let sql = "create table big as select g, md5(random()::text) || md5(random()::text) as s from generate_series(1, 400000) g";
    let (e, _) = run_as_superuser(
        &world,
        "second",
        &plan,
        ("warehouse", port),
        "warehouse",
        sql,
    );
    assert_eq!(e.sidecar_code, Some(1), "{}\n{}", e.sidecar, e.logs);
    // The application's container fails too: the wrapper waits for the database's save.
    assert_eq!(e.app_code, Some(69), "{}", e.logs);
    let (code, m) = e.reason("datamon");
    assert_eq!(code, "database_save_failed", "{m}\n{}", e.logs);
    assert!(
        m.contains("database warehouse")
            && m.contains("no space left in the store of repo pg")
            && m.contains(&blob.display().to_string())
            && m.contains("nothing was committed")
            && m.contains("larger volume"),
        "{m}"
    );
    assert_eq!(
        world.bundles("pg"),
        vec![old.clone()],
        "a bundle was committed"
    );
    let label = world.ok(&[
        "label", "get", "--repo", "pg", "--label", "current", "--output", "json",
    ]);
    assert!(label.contains(&old), "{label}");
    // The termination message (the pod's status) says so.
    let term = std::fs::read_to_string(world.path("second/termination-log")).unwrap();
    assert!(
        term.contains("database warehouse")
            && term.contains("no space left in the store of repo pg"),
        "{term}"
    );
}

/// A data directory made bad in one way, and what the failure must say besides the
/// database's name.
struct BadDataDir {
    what: &'static str,
    /// Changes the clean PostgreSQL 18 files in the directory given; the second one holds
    /// a clean PostgreSQL 14 cluster's files.
    damage: fn(&Path, &Path),
    says: &'static [&'static str],
}

fn set_pg_version(files: &Path, text: &str) {
    std::fs::write(files.join("PG_VERSION"), text).unwrap();
    std::fs::write(files.join("pg_version"), text).unwrap();
}

const BAD_DATA_DIRS: &[BadDataDir] = &[
    BadDataDir {
        what: "pg_control overwritten with garbage",
        damage: |f, _| std::fs::write(f.join("global/pg_control"), [0xab; 8192]).unwrap(),
        says: &["FATAL", "PG_CONTROL_VERSION", "restore another bundle"],
    },
    BadDataDir {
        what: "pg_control truncated",
        damage: |f, _| {
            let p = f.join("global/pg_control");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..100]).unwrap();
        },
        says: &["PANIC", "pg_control", "restore another bundle"],
    },
    BadDataDir {
        what: "a PostgreSQL 14 pg_control under PG_VERSION 18",
        damage: |f, old| {
            std::fs::copy(old.join("global/pg_control"), f.join("global/pg_control")).unwrap();
        },
        says: &["FATAL", "1300", "1800", "restore another bundle"],
    },
    BadDataDir {
        what: "PG_VERSION abc",
        damage: |f, _| set_pg_version(f, "abc\n"),
        says: &["\"abc\"", "18.6", "the image"],
    },
    BadDataDir {
        what: "PG_VERSION 99",
        damage: |f, _| set_pg_version(f, "99\n"),
        says: &["PostgreSQL 99", "18.6", "the image"],
    },
    BadDataDir {
        what: "PG_VERSION 9.6",
        damage: |f, _| set_pg_version(f, "9.6\n"),
        says: &["PostgreSQL 9.6", "18.6", "the image must contain"],
    },
];

#[test]
fn corrupt_and_foreign_data_directories_are_refused_naming_what_is_wrong_and_the_fix() {
    let world = world();
    let clean = clean_cluster_files(&world, "clean", 18, 3);
    let old = clean_cluster_files(&world, "old14", 14, 3);
    world.create_repo("pg", "bad data directories");
    let mut failures = Vec::new();
    for (i, case) in BAD_DATA_DIRS.iter().enumerate() {
        let files = world.path(&format!("bad{i}"));
        pg::copy_files_only(&clean, &files);
        (case.damage)(&files, &old);
        let id = world.upload("pg", &files, &[]);
        let plan = json!({"databases": [database(&world, "warehouse", free_port(), json!({
            "source": {"repo": "pg", "bundle": id},
        }))]});
        let e = run(&world, &format!("run{i}"), &plan, &[], "echo the app ran");
        let m = assert_failed_before_app(&e, "database_failed");
        let missing: Vec<_> = ["database warehouse"]
            .iter()
            .chain(case.says)
            .filter(|s| !m.contains(*s))
            .collect();
        if !missing.is_empty() {
            failures.push(format!("{}: lacks {missing:?} in:\n{m}", case.what));
        }
        assert!(!world.path("pg/warehouse/data").exists(), "{}", case.what);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_damaged_table_fails_the_apps_query_and_nothing_is_saved() {
    let world = world();
    let files = clean_cluster_files(&world, "files", 18, 3);
    // The first page of every user relation of database postgres (oid 5) overwritten: the
    // server starts (pg_control and the catalogs are intact), the table cannot be read.
    for f in std::fs::read_dir(files.join("base/5")).unwrap() {
        let p = f.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.parse::<u32>().is_ok_and(|oid| oid >= 16384) {
            let mut b = std::fs::read(&p).unwrap();
            let n = b.len().min(8192);
            b[..n].fill(0xab);
            std::fs::write(&p, b).unwrap();
        }
    }
    let old = upload_data_dir(&world, "pg", &files);
    let port = free_port();
    let plan = json!({"databases": [database(&world, "warehouse", port, json!({
        "source": {"repo": "pg", "bundle": old},
        "output": {"repo": "pg"},
    }))]});
    let sql = "select count(*) from t";
    let (e, seen) = run_as_superuser(&world, "run", &plan, ("warehouse", port), "postgres", sql);
    assert_eq!(seen, "");
    assert_ne!(e.app_code, Some(0), "{}", e.logs);
    assert!(e.logs.contains("invalid page"), "{}", e.logs);
    // The application failed: the database is not saved (upload: on_success).
    assert_eq!(e.sidecar_code, Some(0), "{}\n{}", e.sidecar, e.logs);
    assert_eq!(world.bundles("pg"), vec![old]);
}
