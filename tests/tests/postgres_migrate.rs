//! The PostgreSQL fixtures of `datamon_e2e::postgres` against the installed builds
//! (scripts/install-postgres.sh; a missing build fails, never skips): every major the
//! image carries starts and answers, and the old-datamon PostgreSQL 12 bundle is laid out
//! as datamon's old sidecar left it and needs what the restorer does (the skeleton, crash
//! recovery by its own major) to give every row back. The migrations themselves are tested
//! inside the agent (agent/src/postgres/migrate.rs), and whole pods by the database tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::path::Path;

use datamon_e2e::postgres::{
    control_state, old_datamon_bundle, own, skeleton, tempdir, Build, Cluster,
    OLD_ROWS_AFTER_CHECKPOINT, OLD_ROWS_BEFORE_CHECKPOINT, OLD_TABLE,
};

/// pg_control's state of a clean shutdown, and of a server that was running.
const SHUT_DOWN: u32 = 1;
const IN_PRODUCTION: u32 = 6;

#[test]
fn every_installed_major_starts_answers_and_stops_cleanly() {
    for major in [12, 14, 15, 18] {
        let build = Build::major(major);
        let dir = tempdir();
        let c = Cluster::init(&build, dir.path());
        c.start();
        assert_eq!(c.psql("SHOW server_version_num")[..2], major.to_string());
        assert_eq!(c.psql("SELECT 6 * 7"), "42");
        assert_eq!(c.control_state(), IN_PRODUCTION);
        c.stop_fast();
        assert_eq!(c.control_state(), SHUT_DOWN, "PostgreSQL {}", build.version);
    }
}

/// Every directory under `root` that holds nothing.
fn empty_dirs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap()).collect();
        if entries.is_empty() {
            out.push(d.display().to_string());
        }
        stack.extend(
            entries
                .iter()
                .filter(|e| e.file_type().unwrap().is_dir())
                .map(|e| e.path()),
        );
    }
    out
}

#[test]
fn the_old_datamon_bundle_is_pg12_files_only_unclean_with_pg_version() {
    let dir = tempdir();
    let bundle = dir.path().join("bundle");
    old_datamon_bundle(&bundle);
    assert_eq!(
        std::fs::read_to_string(bundle.join("pg_version")).unwrap(),
        "12"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("PG_VERSION"))
            .unwrap()
            .trim(),
        "12"
    );
    assert_eq!(empty_dirs(&bundle), Vec::<String>::new());
    for lost in ["pg_tblspc", "pg_replslot", "pg_wal/archive_status"] {
        assert!(
            !bundle.join(lost).exists(),
            "{lost} is an empty dir, which a bundle loses"
        );
    }
    assert!(
        !bundle.join("postmaster.pid").exists(),
        "-m immediate removes it"
    );
    assert_eq!(
        control_state(&bundle),
        IN_PRODUCTION,
        "stopped with -m immediate"
    );
}

#[test]
fn the_old_bundle_gives_every_row_back_once_its_skeleton_is_recreated_and_pg12_recovers_it() {
    let build = Build::major(12);
    let dir = tempdir();
    let data = dir.path().join("data");
    old_datamon_bundle(&data);
    for d in skeleton(12) {
        std::fs::create_dir_all(data.join(d)).unwrap();
    }
    own(&data);
    let c = Cluster::on(&build, &data, &dir.path().join("sock"));
    c.start();
    let total = OLD_ROWS_BEFORE_CHECKPOINT + OLD_ROWS_AFTER_CHECKPOINT;
    assert_eq!(
        c.psql(&format!("SELECT count(*), max(id) FROM {OLD_TABLE}")),
        format!("{total}|{total}")
    );
    assert_eq!(
        c.psql(&format!(
            "SELECT count(*) FROM {OLD_TABLE} WHERE s = 'after the checkpoint'"
        )),
        OLD_ROWS_AFTER_CHECKPOINT.to_string()
    );
    let log = std::fs::read_to_string(c.log()).unwrap();
    assert!(log.contains("automatic recovery in progress"), "{log}");
    c.stop_fast();
    assert_eq!(c.control_state(), SHUT_DOWN);
}
