//! Databases with everything else, in one pod laid out by the webhook (`mutate_pod`, through
//! `datamon_e2e::injected`) and run on the pod runner: two PostgreSQL databases (a new
//! cluster saved as a bundle, and datamon's old PostgreSQL 12 bundle migrated to the newest
//! major, read-only), a FUSE-mounted input and an output. The application is a shell script
//! with the newest build's `psql`, connecting with the variables the webhook gives it; the
//! servers are real ones of the installed builds (scripts/install-postgres.sh), run as the
//! user `postgres` by the agent (root, as the FUSE sidecar is).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::collections::BTreeMap;

use datamon_e2e::injected::{self, Scratch, AGENT_IMAGE};
use datamon_e2e::pod::Phase;
use datamon_e2e::postgres::{self as pg, Build};
use datamon_e2e::{noise, World, DEADLINE, MIB};

/// Where the pods' volumes are mounted (inside each container's own mount namespace).
const ROOT: &str = "/mnt/datamon-e2e-pg";

fn p(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

/// `psql` of the newest build to the database `db` (by its `DATAMON_DB_<DB>_*` variables),
/// tuples only, running `sql`.
fn psql(db: &str, sql: &str) -> String {
    let psql = Build::client().tool("psql");
    format!(
        "PGPASSWORD=\"$(cat \"$DATAMON_DB_{db}_PASSWORD_FILE\")\" {} -X -q -t -A -v ON_ERROR_STOP=1 \
         -h 127.0.0.1 -p \"$DATAMON_DB_{db}_PORT\" -U \"$DATAMON_DB_{db}_USER\" -d \"$DATAMON_DB_{db}_DATABASE\" -c \"{sql}\"",
        psql.display()
    )
}

#[test]
fn two_databases_a_mounted_input_and_an_output_in_one_pod() {
    for native in ["on", "off"] {
        let world = World::local();
        // The inputs: a file to mount, and datamon's old PostgreSQL 12 bundle.
        let image = noise(3 * MIB, 7);
        world.seed("imagery", &[("img/a.bin", image.clone())]);
        let old = pg::tempdir();
        let old_dir = old.path().join("bundle");
        pg::old_datamon_bundle(&old_dir);
        world.create_repo("pg-ledger", "test");
        world.upload("pg-ledger", &old_dir, &[]);
        world.create_repo("pg-warehouse", "test");
        world.create_repo("results", "test");

        let annotations = BTreeMap::from([
            ("datamon.io/coordination".to_string(), p("run")),
            (
                "datamon.io/deadlines".into(),
                "{ready: 60s, start: 60s, upload: 60s, grace: 5s}".into(),
            ),
            ("datamon.io/image".into(), AGENT_IMAGE.into()),
            ("datamon.io/postgres-image".into(), AGENT_IMAGE.into()),
            ("datamon.io/native-sidecar".into(), native.into()),
            (
                "datamon.io/input.images".into(),
                format!("{{repo: imagery, path: {}, mode: mount}}", p("mnt/images")),
            ),
            (
                "datamon.io/output.result".into(),
                format!("{{repo: results, path: {}, message: run}}", p("out")),
            ),
            (
                "datamon.io/database.warehouse".into(),
                format!(
                    "{{port: {}, owner: {{role: app}}, output: {{repo: pg-warehouse, label: latest, message: nightly}}}}",
                    pg::free_port()
                ),
            ),
            (
                "datamon.io/database.ledger".into(),
                format!("{{port: {}, source: {{repo: pg-ledger}}}}", pg::free_port()),
            ),
        ]);
        let s = Scratch::new();
        let script = [
            format!("cp {}/img/a.bin {}/a.bin", p("mnt/images"), p("out")),
            psql(
                "WAREHOUSE",
                "CREATE TABLE seen (n bigint); INSERT INTO seen SELECT count(*) FROM generate_series(1, 321)",
            ),
            format!(
                "{} > {}/ledger-rows",
                psql("LEDGER", &format!("SELECT count(*) FROM {}", pg::OLD_TABLE)),
                p("seen")
            ),
            format!(
                "{} > {}/ledger-version",
                psql("LEDGER", "SHOW server_version_num"),
                p("seen")
            ),
        ]
        .join(" && ");
        let pod = injected::inject(&injected::user_pod(
            &annotations,
            &[("app", &script)],
            &s.seen,
            &p("seen"),
        ));
        let report = injected::runner(&world, &pod, &s.pod)
            .start()
            .unwrap()
            .wait(DEADLINE)
            .unwrap();
        assert_eq!(
            report.phase,
            Phase::Succeeded,
            "native {native}\n{}",
            report.logs()
        );

        // The application saw the migrated ledger, every row of it.
        let rows = std::fs::read_to_string(s.seen.join("ledger-rows")).unwrap();
        let all = pg::OLD_ROWS_BEFORE_CHECKPOINT + pg::OLD_ROWS_AFTER_CHECKPOINT;
        assert_eq!(rows.trim(), all.to_string());
        let version = std::fs::read_to_string(s.seen.join("ledger-version")).unwrap();
        let newest = Build::client().major;
        assert!(version.trim().starts_with(&newest.to_string()), "{version}");
        // The read-only ledger left no bundle; the output and the warehouse one each.
        assert_eq!(world.bundles("pg-ledger").len(), 1);
        let result = world.bundles("results");
        assert_eq!(result.len(), 1);
        let files = world.bundle_files("results", &result[0]);
        assert_eq!(files, vec![("a.bin".to_string(), image.clone())]);
        let saved = world.bundles("pg-warehouse");
        assert_eq!(saved.len(), 1, "{}", report.logs());

        // The saved warehouse restores with its row, on a cluster of our own.
        let work = pg::tempdir();
        let data = work.path().join("data");
        world.download("pg-warehouse", &data, &["--label", "latest"]);
        assert_eq!(
            std::fs::read_to_string(data.join("pg_version"))
                .unwrap()
                .trim(),
            newest.to_string()
        );
        std::fs::remove_file(data.join("pg_version")).unwrap();
        for d in pg::skeleton(newest) {
            std::fs::create_dir_all(data.join(d)).unwrap();
        }
        let sock = work.path().join("s");
        std::fs::create_dir_all(&sock).unwrap();
        pg::own(work.path());
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let cluster = pg::Cluster::on(&Build::major(newest), &data, &sock);
        cluster.start();
        assert_eq!(cluster.psql_in("warehouse", "SELECT n FROM seen"), "321");
        cluster.stop_fast();
    }
}
