//! The demo's chain as a test (`datamon_e2e::demo`, what `./dev.sh demo` prints): the
//! webhook served over HTTPS with certificates from `datamon-webhook certs`, a Job's pod
//! admitted through `/mutate` and patched, run from the built images on the pod runner
//! (a downloaded input, a mounted one, a PostgreSQL 12 bundle migrated to 18, an output),
//! the bundles read back from the store; then its two failures: an annotation denied, and
//! a missing label that fails the pod before the application. Needs root, the workspace
//! built and the images (`just images`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use datamon_e2e::demo::{self, Options};
use datamon_e2e::pod::Phase;

#[test]
fn the_demo_runs_the_whole_system_and_shows_its_two_failures() {
    let summary = demo::run(&Options::default()).unwrap_or_else(|e| panic!("the demo: {e}"));

    // The Job's pod: every participant succeeded, and the store has what it made.
    let job = &summary.job;
    assert_eq!(job.report.phase, Phase::Succeeded, "{}", job.report.logs());
    assert!(job.output.is_some(), "{}", job.report.logs());
    assert!(!job.wrote.is_empty(), "the app's output was not seen");
    assert!(
        job.saved == job.wrote,
        "the output bundle holds {:?}, the app wrote {:?}",
        job.saved.iter().map(|f| &f.0).collect::<Vec<_>>(),
        job.wrote.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let names: Vec<&str> = job.saved.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["image-count", "index.csv", "photo.bin"]);
    assert_eq!(job.results_after, job.results_before + 1);
    assert!(job.database.is_some(), "{}", job.report.logs());
    assert_eq!(job.database_pg_version.as_deref(), Some("18"));
    let timeline = job.timeline.join("\n");
    assert!(
        timeline.contains("migrating database ledger: PostgreSQL 12."),
        "{timeline}"
    );
    assert!(timeline.contains("report: made bundle"), "{timeline}");

    // A bad annotation: denied, naming the annotation and the value at fault.
    assert!(
        summary.denied.contains("datamon.io/input.tables"),
        "{}",
        summary.denied
    );
    assert!(summary.denied.contains("stream"), "{}", summary.denied);

    // A missing label: the pod failed before the application, with the reason, and no
    // bundle was made.
    let failed = &summary.missing_label;
    assert_eq!(
        failed.report.phase,
        Phase::Failed,
        "{}",
        failed.report.logs()
    );
    assert_eq!(
        failed.report.message("datamon")["reason"]["code"],
        "input_failed"
    );
    assert_eq!(failed.report.exit_code("report"), Some(69));
    assert!(!failed.app_ran, "the application must not run");
    assert_eq!(failed.results_after, failed.results_before);
    assert!(failed.output.is_none());
}
