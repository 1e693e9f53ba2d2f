//! `datamon-agent status` and the progress in the state files (`transfers`), end to end:
//! the real agent binary as a sidecar and a wrapper (two processes sharing a coordination
//! directory, as in a pod), a local-directory store, real files. After a run, every
//! transfer is complete and its counters are the bundles'; while a download runs, the state
//! file says how far it is. The download is held still, without any timing, by one blob of
//! the store replaced with a FIFO: the store's read blocks opening it until the test opens
//! it for writing, and then reads no bytes, so that download fails (a transfer that ends
//! short of its total).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};

use datamon_e2e::{noise, read_tree, wait_until, World, MIB};
use serde_json::Value;

/// A plan (YAML) over the scratch directory `dir`: the input `tables` of the repo `tables`
/// downloaded to `dir/in`, and, when `full`, the input `images` of the repo `images`
/// mounted at `dir/images` and the output `result` (`dir/out` to the repo `results`), all
/// for the sidecar `datamon`.
fn plan(dir: &Path, full: bool) -> PathBuf {
    let d = dir.display();
    let (more, outputs, mine) = if full {
        (
            format!("  - {{name: images, repo: images, path: {d}/images, mode: mount}}\n"),
            format!("outputs:\n  - {{name: result, repo: results, path: {d}/out}}\n"),
            ", images], outputs: [result",
        )
    } else {
        (String::new(), String::new(), "")
    };
    write_plan(
        dir,
        &format!(
            "inputs:\n  - {{name: tables, repo: tables, path: {d}/in}}\n\
             {more}\
             {outputs}\
             sidecars:\n  - {{name: datamon, inputs: [tables{mine}]}}\n"
        ),
    )
}

/// `dir/plan.yaml`: `body` (YAML) with the coordination directory `dir/run`, the
/// termination message in `dir`, and short deadlines.
fn write_plan(dir: &Path, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.display();
    let text = format!(
        "version: 1\n\
         coordination: {d}/run\n\
         termination_message: {d}/termination-log\n\
         deadlines: {{ready: 60s, start: 60s, upload: 60s, grace: 2s}}\n\
         {body}"
    );
    let path = dir.join("plan.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An agent process, killed if the test lets go of it before it ended (a failed step), so
/// that nothing it runs outlives the test.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(world: &World, args: &[&str]) -> Proc {
    let child = world
        .agent()
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start datamon-agent");
    Proc(child)
}

/// Waits for `p` to end (at most the tests' deadline).
fn wait(mut p: Proc, what: &str) -> ExitStatus {
    wait_until(what, || p.0.try_wait().unwrap())
}

/// `status --plan PLAN --output json`, once it answers (the sidecar may not have made the
/// coordination directory yet).
fn try_status_json(world: &World, plan: &Path) -> Option<Value> {
    let p = plan.to_string_lossy();
    let out = world.run(&["status", "--plan", &p, "--output", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// `status --plan PLAN --output json`.
fn status_json(world: &World, plan: &Path) -> Value {
    let p = plan.to_string_lossy();
    let out = world.ok(&["status", "--plan", &p, "--output", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status json {out:?}: {e}"))
}

/// The participant `name` of a `status --output json`.
fn participant<'a>(status: &'a Value, name: &str) -> &'a Value {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no participant {name} in {status:#}"))
}

fn count(t: &Value, field: &str) -> u64 {
    t[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {t:#}"))
}

fn time(t: &Value, field: &str) -> chrono::DateTime<chrono::FixedOffset> {
    let s = t[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {t:#}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{field} {s:?}: {e}"))
}

/// A finished transfer of `kind` whose counters are all of `files` files of `bytes` bytes.
fn assert_complete(t: &Value, kind: &str, files: u64, bytes: u64) {
    assert_eq!(t["kind"], kind, "{t:#}");
    assert_eq!(count(t, "bytes_total"), bytes, "{t:#}");
    assert_eq!(count(t, "bytes_done"), bytes, "{t:#}");
    assert_eq!(count(t, "files_total"), files, "{t:#}");
    assert_eq!(count(t, "files_done"), files, "{t:#}");
    assert!(time(t, "started") <= time(t, "finished"), "{t:#}");
}

#[test]
fn after_a_run_the_download_mount_and_upload_are_complete_in_status() {
    let world = World::local();
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("part-{i}.bin"), noise(MIB + 1000 * i, i as u64 + 1)))
        .collect();
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    world.seed("tables", &named);
    let image = noise(2 * MIB + 17, 9);
    world.seed(
        "images",
        &[("x/one.img", image.clone()), ("two.img", b"tiny".to_vec())],
    );
    world.create_repo("results", "test");
    let in_bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();

    let dir = world.path("pod");
    std::fs::create_dir_all(&dir).unwrap();
    let plan = plan(&dir, true);
    let p = plan.to_string_lossy().into_owned();
    let sidecar = spawn(&world, &["sidecar", "--plan", &p]);
    // The application writes its output: the downloaded files and the first 4321 bytes of
    // a mounted one.
    let d = dir.display();
    let script = format!("mkdir -p {d}/out && cp {d}/in/* {d}/out/ && head -c 4321 {d}/images/x/one.img > {d}/out/extra.bin");
    let wrapper = spawn(&world, &["wrap", "--plan", &p, "--", "sh", "-c", &script]);
    assert!(wait(wrapper, "the wrapper").success());
    assert!(wait(sidecar, "the sidecar").success());

    let status = status_json(&world, &plan);
    let datamon = participant(&status, "datamon");
    assert_eq!(datamon["phase"], "done", "{status:#}");
    let result = datamon["outputs"]["result"].as_str().unwrap().to_string();
    assert_eq!(world.bundles("results"), std::slice::from_ref(&result));
    let transfers = datamon["transfers"].as_object().unwrap();
    assert_eq!(transfers.len(), 3, "{status:#}");
    assert_complete(&transfers["tables"], "download", 5, in_bytes);
    // The mount's counters are its bundle's, done once it served.
    assert_complete(&transfers["images"], "mount", 2, image.len() as u64 + 4);
    // The upload's counters are those of the new bundle's files.
    let out_files = world.bundle_files("results", &result);
    let out_bytes: u64 = out_files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(out_files.len(), 6);
    assert_eq!(out_bytes, in_bytes + 4321);
    let extra = out_files.iter().find(|(n, _)| n == "extra.bin").unwrap();
    assert_eq!(extra.1, image[..4321], "the app read the mounted bytes");
    assert_complete(&transfers["result"], "upload", 6, out_bytes);
    // The upload came after the download.
    assert!(time(&transfers["tables"], "finished") <= time(&transfers["result"], "started"));
    // The application saw the input's bytes.
    assert_eq!(read_tree(&dir.join("in")), files);
    // The wrapper has no transfers.
    assert!(
        participant(&status, "app").get("transfers").is_none(),
        "{status:#}"
    );

    let text = world.ok(&["status", "--plan", &p]);
    // The transfer's line, not the bundle's (`input tables: bundle ...`).
    let line = |what: &str| {
        text.lines()
            .find(|l| l.contains(what) && !l.contains(": bundle"))
            .unwrap_or_else(|| panic!("no line with {what:?} in\n{text}"))
            .to_string()
    };
    let download = line("input tables");
    assert!(
        download.contains("download  5.0 MiB  5 files  in "),
        "{download}"
    );
    let mount = line("input images");
    assert!(mount.contains("mount     2.0 MiB  2 files  in "), "{mount}");
    let upload = line("output result");
    assert!(
        upload.contains("upload    5.0 MiB  6 files  in "),
        "{upload}"
    );
}

/// Replaces the blob file at `blob` with a FIFO; returns the bytes it held.
fn fifo_instead_of(blob: &Path) -> Vec<u8> {
    let bytes = std::fs::read(blob).unwrap();
    std::fs::remove_file(blob).unwrap();
    nix::unistd::mkfifo(blob, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    bytes
}

/// How the held download of [`held_download`] ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// The FIFO is opened: the read gets no bytes, the download fails.
    Unblocked,
    /// SIGTERM while it is held: the sidecar gives up the inputs (`terminated`) and its
    /// process ends, the read still blocked (it does not wait for the kubelet's SIGKILL).
    Terminated,
}

#[test]
fn while_a_download_runs_the_state_file_says_how_far_it_is() {
    held_download(End::Unblocked);
}

#[test]
fn a_download_stopped_by_sigterm_is_finished_short_of_its_total() {
    held_download(End::Terminated);
}

/// A download of two files, one held on a FIFO: the state file says how far it is, then
/// (ended as `end` says) that it finished short of its total.
fn held_download(end: End) {
    let world = World::local();
    let (a, b) = (noise(3 * MIB, 1), noise(300_001, 2));
    world.seed("tables", &[("a.bin", a.clone()), ("b.bin", b.clone())]);
    // b.bin is one leaf: its blob, a FIFO, holds its download still.
    let blob = world.blob_of_len(b.len(), "b.bin's only leaf");
    fifo_instead_of(&blob);
    let total = (a.len() + b.len()) as u64;

    let dir = world.path("pod");
    std::fs::create_dir_all(&dir).unwrap();
    let plan = plan(&dir, false);
    let p = plan.to_string_lossy().into_owned();
    let mut sidecar = spawn(&world, &["sidecar", "--plan", &p]);
    // a.bin arrives, b.bin waits on the FIFO: the state file shows a.bin's bytes done.
    let running = wait_until("the download's progress in the state file", || {
        let status = try_status_json(&world, &plan)?;
        let t = participant(&status, "datamon")["transfers"]["tables"].clone();
        // a.bin's bytes are counted as they are written, the file once it is in place.
        (t.is_object()
            && t["bytes_done"].as_u64() == Some(a.len() as u64)
            && t["files_done"].as_u64() == Some(1))
        .then_some(t)
    });
    assert_eq!(running["kind"], "download", "{running:#}");
    assert_eq!(count(&running, "bytes_total"), total, "{running:#}");
    assert_eq!(count(&running, "files_total"), 2, "{running:#}");
    assert_eq!(count(&running, "files_done"), 1, "{running:#}");
    assert!(running.get("finished").is_none(), "{running:#}");
    let text = world.ok(&["status", "--plan", &p]);
    assert!(
        text.contains("input tables  download  3.0 MiB / 3.3 MiB  1 / 2 files  91%"),
        "{text}"
    );

    let reason = match end {
        End::Unblocked => "input_failed",
        End::Terminated => {
            let pid = nix::unistd::Pid::from_raw(sidecar.0.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            // Its final state comes first, then its end.
            wait_until("the sidecar's final state after SIGTERM", || {
                let status = status_json(&world, &plan);
                participant(&status, "datamon")["phase"] == "failed"
            });
            "terminated"
        }
    };
    let status = status_json(&world, &plan);
    // Unblocked: let the blocked read go: it opens the FIFO, reads nothing, and the download
    // fails. Terminated: the process ends by itself, the read still blocked.
    let code = wait_until("the sidecar's end", || {
        // Opening for writing without blocking succeeds only while a reader waits.
        if end == End::Unblocked {
            if let Ok(f) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(&blob)
            {
                drop(f);
            }
        }
        sidecar.0.try_wait().unwrap().map(|s| s.code())
    });
    assert_eq!(code, Some(1), "the sidecar fails ({end:?})");
    let status = match end {
        End::Unblocked => status_json(&world, &plan),
        // Nothing changed since its final state.
        End::Terminated => {
            assert_eq!(status_json(&world, &plan), status);
            status
        }
    };
    let datamon = participant(&status, "datamon");
    assert_eq!(datamon["phase"], "failed", "{status:#}");
    assert_eq!(datamon["reason"]["code"], reason, "{status:#}");
    let t = &datamon["transfers"]["tables"];
    assert!(time(t, "started") <= time(t, "finished"), "{t:#}");
    assert!(count(t, "bytes_done") < total, "{t:#}");
    let text = world.ok(&["status", "--plan", &p]);
    assert!(text.contains("1 / 2 files  stopped after "), "{text}");
    // Nothing of b.bin was put in place.
    assert!(!dir.join("in/b.bin").exists());
}

#[test]
fn a_databases_save_then_its_restore_count_the_bundles_bytes() {
    let world = World::local();
    // The server account (`postgres`, as the tests run as root) traverses the scratch dir.
    std::fs::set_permissions(world.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    world.create_repo("pg", "warehouse");
    let port = datamon_e2e::postgres::free_port();
    let db_dir = world.path("pg/warehouse");
    let db = |extra: &str| {
        format!(
            "databases:\n  - {{name: warehouse, port: {port}, dir: {}{extra}}}\n",
            db_dir.display()
        )
    };

    // A new cluster, saved: its save is the upload of the data directory.
    let dir = world.path("first");
    let plan = write_plan(&dir, &db(", output: {repo: pg, message: first}"));
    let p = plan.to_string_lossy().into_owned();
    let sidecar = spawn(&world, &["sidecar", "--plan", &p]);
    let wrapper = spawn(&world, &["wrap", "--plan", &p, "--", "true"]);
    assert!(wait(wrapper, "the wrapper").success());
    assert!(wait(sidecar, "the sidecar").success());
    let status = status_json(&world, &plan);
    let datamon = participant(&status, "datamon");
    let id = datamon["outputs"]["warehouse"]
        .as_str()
        .unwrap()
        .to_string();
    let saved = world.bundle_files("pg", &id);
    let (files, bytes) = (
        saved.len() as u64,
        saved.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
    );
    assert!(files > 100, "a data directory has many files: {files}");
    // The restore of the new cluster came first; the save replaced it under the name.
    assert_complete(&datamon["transfers"]["warehouse"], "save", files, bytes);

    // Restored from that bundle, read-only: the application waits for the test to see it.
    std::fs::remove_dir_all(&db_dir).unwrap();
    let dir = world.path("second");
    let plan = write_plan(&dir, &db(", source: {repo: pg}"));
    let p = plan.to_string_lossy().into_owned();
    let go = dir.join("go");
    let script = format!(
        "i=0; while [ ! -e {0} ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done; [ -e {0} ]",
        go.display()
    );
    let sidecar = spawn(&world, &["sidecar", "--plan", &p]);
    let wrapper = spawn(&world, &["wrap", "--plan", &p, "--", "sh", "-c", &script]);
    let restore = wait_until("the database ready, its restore finished", || {
        let status = try_status_json(&world, &plan)?;
        let datamon = participant(&status, "datamon");
        let t = datamon["transfers"]["warehouse"].clone();
        (datamon["phase"] == "ready" && t.get("finished").is_some()).then_some(t)
    });
    std::fs::write(&go, b"").unwrap();
    assert!(wait(wrapper, "the wrapper").success());
    assert!(wait(sidecar, "the sidecar").success());
    assert_complete(&restore, "restore", files, bytes);
    let text = world.ok(&["status", "--plan", &p]);
    assert!(text.contains("database warehouse  restore   "), "{text}");
}
