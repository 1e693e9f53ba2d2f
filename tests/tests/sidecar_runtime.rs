//! The sidecar runtime end to end: pods laid out by the webhook itself (`mutate_pod`,
//! through `datamon_e2e::injected`): an install init container, the agent as a native or
//! classic sidecar, the application wrapped. The pod runner runs them as real processes
//! with real mounts (FUSE included), against the local store, the S3 server and the GCS
//! emulator. Each test checks the bytes the application saw, the bundles that exist
//! afterwards, exit codes, and the reasons the participants give. Three tests change the webhook's pod where the
//! webhook cannot make what they need (a plan split between two participants, a
//! participant the pod lacks, an invalid plan); each says how.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::collections::BTreeMap;
use std::path::Path;

use datamon_e2e::injected::{self, Scratch, AGENT_IMAGE};
use datamon_e2e::pod::{Phase, PodReport, RunningPod, Signal};
use datamon_e2e::{noise, read_tree, wait_until, World, DEADLINE, MIB};
use serde_json::{json, Value};

/// Where the pods' volumes are mounted (inside each container's own mount namespace).
const ROOT: &str = "/mnt/datamon-e2e";
/// Short deadlines, so that no failure test takes long.
const DEADLINES: &str = "{ready: 20s, start: 20s, upload: 30s, grace: 2s}";

fn p(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

/// How the agent runs in the pod (`datamon.io/native-sidecar`).
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// An init container with `restartPolicy: Always` and a startupProbe.
    Native,
    /// A regular container next to the application.
    Classic,
}

/// An annotation of the user's pod.
fn annotation(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

/// `datamon.io/<kind>.<name>: {repo: <repo>, path: ROOT/<path>, <extra>}`.
fn entry(kind: &str, name: &str, repo: &str, path: &str, extra: &str) -> (String, String) {
    let sep = if extra.is_empty() { "" } else { ", " };
    annotation(
        &format!("datamon.io/{kind}.{name}"),
        &format!("{{repo: {repo}, path: {}{sep}{extra}}}", p(path)),
    )
}

/// The input `name`: `repo` at `ROOT/<path>`, with the fields of `extra` (`, `-separated).
fn input(name: &str, repo: &str, path: &str, extra: &str) -> (String, String) {
    entry("input", name, repo, path, extra)
}

/// The output `name`: `ROOT/<path>` uploaded to `repo`, with the fields of `extra`.
fn output(name: &str, repo: &str, path: &str, extra: &str) -> (String, String) {
    entry("output", name, repo, path, extra)
}

/// The output `result`: `data/out` uploaded to the repo `results`, with the fields of
/// `extra` too.
fn result_output(extra: &str) -> (String, String) {
    output("result", "results", "data/out", extra)
}

/// Creates the repo `results` in `world` and returns [`result_output`]`(extra)`.
fn results_output(world: &World, extra: &str) -> (String, String) {
    world.create_repo("results", "test");
    result_output(extra)
}

/// The webhook's pod for a user's pod with `annotations` (over the coordination
/// directory, the test deadlines, the agent image and `layout`), whose application
/// containers `apps` (name, script) see the host directory `seen` at `ROOT/seen`.
fn injected_pod(
    annotations: &[(String, String)],
    layout: Layout,
    apps: &[(&str, &str)],
    seen: &Path,
) -> Value {
    let native = match layout {
        Layout::Native => "on",
        Layout::Classic => "off",
    };
    let mut all: BTreeMap<String, String> = BTreeMap::from([
        annotation("datamon.io/coordination", &p("run")),
        annotation("datamon.io/deadlines", DEADLINES),
        annotation("datamon.io/image", AGENT_IMAGE),
        annotation("datamon.io/native-sidecar", native),
    ]);
    all.extend(annotations.iter().cloned());
    injected::inject(&injected::user_pod(&all, apps, seen, &p("seen")))
}

/// [`injected_pod`] with one application container, `app`, running `script`.
fn datamon_pod(
    annotations: &[(String, String)],
    layout: Layout,
    script: &str,
    seen: &Path,
) -> Value {
    injected_pod(annotations, layout, &[("app", script)], seen)
}

fn start(world: &World, pod: &Value, dir: &Path) -> RunningPod {
    injected::runner(world, pod, dir).start().unwrap()
}

fn run(world: &World, pod: &Value, dir: &Path) -> PodReport {
    start(world, pod, dir).wait(DEADLINE).unwrap()
}

#[test]
fn read_only_pod_sees_downloaded_and_mounted_bytes_and_writes_nothing() {
    for layout in [Layout::Native, Layout::Classic] {
        let world = World::local();
        let raw = noise(3 * MIB + 5, 1);
        let img = noise(5 * MIB + 3, 2);
        let raw_id = world.seed(
            "raw",
            &[
                ("a.txt", b"hello\n".to_vec()),
                ("deep/raw.bin", raw.clone()),
            ],
        );
        let img_id = world.seed("img", &[("b.bin", img.clone())]);
        // The webhook serves a mounted input from a volume at its parent directory, which
        // holds no other datamon directory: `fuse/`.
        let annotations = [
            input("raw", "raw", "data/raw", ""),
            input("img", "img", "fuse/img", "mode: mount"),
        ];
        let s = Scratch::new();
        let script = format!(
            "cp -r {raw} {seen}/raw && cp {img}/b.bin {seen}/b.bin && (touch {img}/x 2>/dev/null && echo writable || echo read-only) > {seen}/mount-mode",
            raw = p("data/raw"), img = p("fuse/img"), seen = p("seen"),
        );
        let pod = datamon_pod(&annotations, layout, &script, &s.seen);
        let report = run(&world, &pod, &s.pod);
        assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
        assert_eq!(report.exit_code("app"), Some(0));
        assert_eq!(std::fs::read(s.seen.join("raw/a.txt")).unwrap(), b"hello\n");
        assert!(
            std::fs::read(s.seen.join("raw/deep/raw.bin")).unwrap() == raw,
            "downloaded bytes differ"
        );
        assert!(
            std::fs::read(s.seen.join("b.bin")).unwrap() == img,
            "mounted bytes differ"
        );
        assert_eq!(
            std::fs::read_to_string(s.seen.join("mount-mode"))
                .unwrap()
                .trim(),
            "read-only"
        );
        let m = report.message("app");
        assert_eq!(m["exit_code"], 0);
        assert_eq!(m["inputs"]["raw"], raw_id.as_str());
        assert_eq!(m["inputs"]["img"], img_id.as_str());
        // Nothing was uploaded.
        assert_eq!(world.bundles("raw"), vec![raw_id]);
        assert_eq!(world.bundles("img"), vec![img_id]);
        // The sidecar exited cleanly (classic: by itself; native: on the kubelet's SIGTERM).
        assert_eq!(report.exit_code("datamon"), Some(0), "{}", report.logs());
    }
}

#[test]
fn write_only_pod_uploads_its_output_with_label_on_every_store() {
    for world in World::each() {
        let out = results_output(
            &world,
            "message: nightly, label: latest-run, contributor: {name: Job, email: job@example.com}",
        );
        let s = Scratch::new();
        let script = format!(
            "mkdir -p {out}/sub && printf result > {out}/r.txt && head -c 2500000 /dev/urandom > {out}/sub/big.bin && cp -r {out} {seen}/out",
            out = p("data/out"), seen = p("seen"),
        );
        let pod = datamon_pod(&[out], Layout::Native, &script, &s.seen);
        let report = run(&world, &pod, &s.pod);
        assert_eq!(
            report.phase,
            Phase::Succeeded,
            "{}: {}",
            world.name(),
            report.logs()
        );
        let m = report.message("app");
        let id = m["outputs"]["result"].as_str().unwrap().to_string();
        assert_eq!(world.bundles("results"), vec![id.clone()]);
        let label: Value = serde_json::from_str(&world.ok(&[
            "label",
            "get",
            "--repo",
            "results",
            "--label",
            "latest-run",
            "--output",
            "json",
        ]))
        .unwrap();
        assert_eq!(label[0]["id"], id.as_str());
        assert_eq!(
            world.bundle_files("results", &id),
            read_tree(&s.seen.join("out")),
            "{}",
            world.name()
        );
        assert_eq!(report.message("datamon")["outputs"]["result"], id.as_str());
    }
}

#[test]
fn read_update_pod_uploads_the_updated_input() {
    read_update_pod(&mut World::local(), &[], &[]);
}

#[test]
fn a_pod_on_gcs_reads_and_updates_its_input_through_the_endpoint_annotation() {
    let mut world = World::gcs();
    let host = world.gcs_server().host();
    // The pod knows the emulator only from `datamon.io/gcs-endpoint` (host:port, as
    // STORAGE_EMULATOR_HOST is written): the variable is kept from its containers.
    read_update_pod(
        &mut world,
        &[annotation("datamon.io/gcs-endpoint", &host)],
        &["STORAGE_EMULATOR_HOST"],
    );
}

/// A pod (with `store` annotations too) whose application appends to a file of its
/// input `db` and whose output is the same directory, uploaded as the new bundle of
/// `db`; the containers run without the world's variables `hidden`. Checks the bytes
/// the application saw and the bundle it made.
fn read_update_pod(world: &mut World, store: &[(String, String)], hidden: &[&str]) {
    let v1 = world.seed(
        "db",
        &[
            ("data.txt", b"one\n".to_vec()),
            ("keep.bin", noise(100_000, 3)),
        ],
    );
    let db = p("data/db");
    let mut annotations = vec![
        input("db-in", "db", "data/db", ""),
        output(
            "db-out",
            "db",
            "data/db",
            "message: updated, label: current",
        ),
    ];
    annotations.extend_from_slice(store);
    let s = Scratch::new();
    let script = format!(
        "echo two >> {db}/data.txt && cp -r {db} {seen}/db",
        seen = p("seen")
    );
    let pod = datamon_pod(&annotations, Layout::Classic, &script, &s.seen);
    let kept: Vec<(String, String)> = world
        .env_vars()
        .iter()
        .filter(|(k, _)| hidden.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in hidden {
        world.unset_env(k);
    }
    let report = run(world, &pod, &s.pod);
    for (k, v) in &kept {
        world.set_env(k, v);
    }
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    let v2 = report.message("app")["outputs"]["db-out"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1, v2);
    let files = world.bundle_files("db", &v2);
    assert_eq!(files, read_tree(&s.seen.join("db")));
    assert!(
        files
            .iter()
            .any(|(n, b)| n == "data.txt" && b == b"one\ntwo\n"),
        "{files:?}"
    );
    assert_eq!(world.bundles("db").len(), 2);
}

#[test]
fn several_inputs_and_outputs_split_between_an_init_container_and_a_native_sidecar() {
    let world = World::s3();
    let a = world.seed("in-a", &[("a.bin", noise(2 * MIB + 1, 4))]);
    let b = world.seed("in-b", &[("b.txt", b"bee".to_vec())]);
    world.ok(&[
        "label", "set", "--repo", "in-b", "--label", "v1", "--bundle", &b,
    ]);
    world.seed("in-c", &[("c.bin", noise(1_000_000, 5))]);
    for r in ["out-x", "out-y"] {
        world.create_repo(r, "test");
    }
    let annotations = [
        input("a", "in-a", "data/a", &format!("bundle: {a}")),
        input("b", "in-b", "data/b", "label: v1, name_filter: txt$"),
        input("c", "in-c", "fuse/c", "mode: mount"),
        output("x", "out-x", "data/x", ""),
        output("y", "out-y", "data/y", "label: y1"),
    ];
    let s = Scratch::new();
    let script = format!(
        "mkdir -p {d}/x {d}/y && cat {d}/a/a.bin {d}/b/b.txt > {d}/x/ab.bin && cp {fuse}/c/c.bin {d}/y/c.bin && cp -r {d}/x {d}/y {seen}/",
        d = p("data"), fuse = p("fuse"), seen = p("seen"),
    );
    let mut pod = datamon_pod(&annotations, Layout::Native, &script, &s.seen);
    // The webhook gives one agent everything. Here the downloads run first, in a plain
    // init container `fetch` of their own: the plan split between the two participants,
    // and a copy of the agent's container with the coordination and download volumes.
    let mut plan = injected::plan_of(&pod);
    plan["sidecars"] = json!([
        {"name": "fetch", "inputs": ["a", "b"]},
        {"name": "datamon", "inputs": ["c"], "outputs": ["x", "y"], "lifecycle": "native"},
    ]);
    injected::set_plan(&mut pod, &plan);
    let init = pod["spec"]["initContainers"].as_array_mut().unwrap();
    let mut fetch = init
        .iter()
        .find(|c| c["name"] == "datamon")
        .unwrap()
        .clone();
    fetch["name"] = json!("fetch");
    fetch["args"] = json!(["sidecar", "--participant", "fetch"]);
    for field in ["restartPolicy", "startupProbe"] {
        fetch.as_object_mut().unwrap().remove(field);
    }
    let keep = [p("run"), p("data/a"), p("data/b")];
    fetch["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| keep.iter().any(|k| m["mountPath"] == k.as_str()));
    assert_eq!(
        fetch["volumeMounts"].as_array().unwrap().len(),
        3,
        "{fetch:#}"
    );
    init.insert(1, fetch);
    let report = run(&world, &pod, &s.pod);
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(report.exit_code("fetch"), Some(0));
    let m = report.message("app");
    let x = m["outputs"]["x"].as_str().unwrap();
    let y = m["outputs"]["y"].as_str().unwrap();
    let mut ab = noise(2 * MIB + 1, 4);
    ab.extend_from_slice(b"bee");
    assert_eq!(
        world.bundle_files("out-x", x),
        vec![("ab.bin".to_string(), ab)]
    );
    assert_eq!(
        world.bundle_files("out-y", y),
        vec![("c.bin".to_string(), noise(1_000_000, 5))]
    );
    assert_eq!(m["inputs"].as_object().unwrap().len(), 3, "{m}");
}

#[test]
fn app_exit_3_uploads_nothing_and_fails_the_pod_with_3() {
    let world = World::local();
    let out = results_output(&world, "");
    let s = Scratch::new();
    let script = format!(
        "mkdir -p {out} && echo partial > {out}/r.txt && exit 3",
        out = p("data/out")
    );
    let report = run(
        &world,
        &datamon_pod(&[out], Layout::Native, &script, &s.seen),
        &s.pod,
    );
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(report.exit_code("app"), Some(3), "{}", report.logs());
    assert_eq!(report.exit_code("datamon"), Some(0), "{}", report.logs());
    assert!(world.bundles("results").is_empty());
    let m = report.message("datamon");
    assert_eq!(m["reason"]["code"], "app_failed", "{m}");
    assert_eq!(report.message("app")["exit_code"], 3);
}

#[test]
fn kill_9_of_the_sidecar_stops_the_app_and_fails_the_pod() {
    let world = World::local();
    world.seed("img", &[("b.bin", noise(100_000, 6))]);
    let img = input("img", "img", "fuse/img", "mode: mount");
    let s = Scratch::new();
    // The app marks that it runs, then would run for 5 minutes.
    let script = format!("touch {seen}/running && sleep 300", seen = p("seen"));
    let pod = start(
        &world,
        &datamon_pod(&[img], Layout::Native, &script, &s.seen),
        &s.pod,
    );
    wait_until("the app to run", || s.seen.join("running").exists());
    pod.signal("datamon", Signal::SIGKILL).unwrap();
    let report = pod.wait(DEADLINE).unwrap();
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(report.exit_code("app"), Some(69), "{}", report.logs());
    let m = report.message("app");
    assert_eq!(m["reason"]["code"], "sidecar_died", "{m}");
    assert!(
        m["reason"]["message"].as_str().unwrap().contains("datamon"),
        "{m}"
    );
}

/// A sidecar that fails before it is ready ends the pod in both layouts: the app never
/// starts, the wrapper exits 69 with `sidecar_failed`, the sidecar says why. As a native
/// sidecar it is not restarted: its startupProbe passes a failed participant (a kubelet
/// would otherwise kill and restart it while the pod stays in `Init`).
fn failing_sidecar_ends_the_pod(
    world: &World,
    annotations: &[(String, String)],
    code: &str,
    says: &str,
) {
    for layout in [Layout::Native, Layout::Classic] {
        let s = Scratch::new();
        let script = format!("touch {seen}/ran", seen = p("seen"));
        let report = run(
            world,
            &datamon_pod(annotations, layout, &script, &s.seen),
            &s.pod,
        );
        let side = report.assert_failed_before_the_app(
            "datamon",
            &s.seen.join("ran"),
            &format!("{layout:?}"),
        );
        assert_eq!(side["reason"]["code"], code, "{side}");
        let text = side["reason"]["message"].as_str().unwrap();
        assert!(text.contains(says), "{side}");
    }
}

#[test]
fn unreachable_store_at_start_never_starts_the_app() {
    let mut world = World::local();
    world.set_env("DATAMON_GLOBAL_CONFIG", "s3://config");
    world.set_env("DATAMON_S3_ENDPOINT", "http://127.0.0.1:9");
    world.set_env("DATAMON_RETRIES", "1");
    world.set_env("DATAMON_RETRY_TIMEOUT_SECS", "2");
    world.set_env("AWS_ACCESS_KEY_ID", "k");
    world.set_env("AWS_SECRET_ACCESS_KEY", "s");
    world.set_env("AWS_REGION", "us-east-1");
    // An output too: the webhook runs a download-only pod in one init container, without
    // a wrapper, and this test is about a wrapped app that never starts.
    let annotations = [input("raw", "raw", "data/raw", ""), result_output("")];
    failing_sidecar_ends_the_pod(&world, &annotations, "store_unreachable", "127.0.0.1:9");
}

#[test]
fn an_input_label_that_does_not_exist_ends_the_pod_with_the_reason_and_no_bundle() {
    let world = World::local();
    world.seed("raw", &[("a.txt", b"a".to_vec())]);
    let annotations = [
        input("raw", "raw", "data/raw", "label: no-such-label"),
        results_output(&world, ""),
    ];
    failing_sidecar_ends_the_pod(&world, &annotations, "input_failed", "no-such-label");
    assert!(world.bundles("results").is_empty(), "no bundle may be made");
}

#[test]
fn deadlines_end_waits_with_a_reason() {
    let world = World::local();
    // A sidecar the plan names but the pod never runs: the ready deadline passes. The
    // webhook names only the sidecar it lays out, so its plan is changed (no input or
    // output, the one sidecar `ghost`) and its sidecar taken out of the pod.
    let s = Scratch::new();
    let script = format!("touch {seen}/ran", seen = p("seen"));
    let mut pod = datamon_pod(&[result_output("")], Layout::Classic, &script, &s.seen);
    let mut ghost = injected::plan_of(&pod);
    ghost["inputs"] = json!([]);
    ghost["outputs"] = json!([]);
    ghost["sidecars"] = json!([{"name": "ghost"}]);
    ghost["deadlines"]["ready"] = json!("1s");
    injected::set_plan(&mut pod, &ghost);
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] == "app");
    let report = run(&world, &pod, &s.pod);
    assert_eq!(report.phase, Phase::Failed);
    assert!(!s.seen.join("ran").exists());
    assert_eq!(report.exit_code("app"), Some(124), "{}", report.logs());
    let m = report.message("app");
    assert_eq!(m["reason"]["code"], "deadline", "{m}");
    assert!(
        m["reason"]["message"].as_str().unwrap().contains("ghost"),
        "{m}"
    );

    // The application's own deadline.
    let slow = [
        results_output(&world, ""),
        annotation(
            "datamon.io/deadlines",
            "{ready: 20s, start: 20s, upload: 30s, grace: 2s, app: 1s}",
        ),
    ];
    let s = Scratch::new();
    let report = run(
        &world,
        &datamon_pod(&slow, Layout::Native, "sleep 300", &s.seen),
        &s.pod,
    );
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(report.exit_code("app"), Some(124), "{}", report.logs());
    assert_eq!(report.message("app")["reason"]["code"], "deadline");
    assert!(world.bundles("results").is_empty());
}

#[test]
fn bad_plan_is_refused_before_any_work_with_the_field_named() {
    let world = World::local();
    // The webhook refuses to render such a plan: its layout (classic, with an output so
    // that the app is wrapped), with the bad plan put in.
    let annotations = [input("raw", "raw", "data/raw", ""), result_output("")];
    let s = Scratch::new();
    let mut pod = datamon_pod(&annotations, Layout::Classic, "true", &s.seen);
    let mut bad = injected::plan_of(&pod);
    bad["inputs"] = json!([{"name": "raw", "repo": "raw", "path": "relative"}]);
    bad["outputs"] = json!([]);
    bad["sidecars"] = json!([]);
    injected::set_plan(&mut pod, &bad);
    let report = run(&world, &pod, &s.pod);
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(report.exit_code("datamon"), Some(64));
    assert_eq!(report.exit_code("app"), Some(64));
    let log = std::fs::read_to_string(&report.container("app").unwrap().log).unwrap();
    assert!(log.contains("inputs[0].path"), "{log}");
}

#[test]
fn a_plan_the_native_sidecar_cannot_read_ends_the_pod_with_the_reason_not_a_restart_loop() {
    // A webhook newer than the agent image: the plan has a field this agent does not know.
    // The sidecar says `failed` where the raw plan points and stays (exiting would restart
    // it with its startupProbe never passing: the pod would stay in Init); its probe
    // passes, the wrapper cannot read the plan either and exits 64: the pod fails.
    let world = World::local();
    let annotations = [input("raw", "raw", "data/raw", ""), result_output("")];
    let s = Scratch::new();
    let mut pod = datamon_pod(&annotations, Layout::Native, "true", &s.seen);
    let mut newer = injected::plan_of(&pod);
    newer["a_future_field"] = json!(true);
    injected::set_plan(&mut pod, &newer);
    let report = run(&world, &pod, &s.pod);
    assert_eq!(report.phase, Phase::Failed, "{}", report.logs());
    assert_eq!(report.exit_code("app"), Some(64), "{}", report.logs());
    let sidecar = report.container("datamon").unwrap();
    assert_eq!(sidecar.restarts, 0, "{}", report.logs());
    let m = report.message("datamon");
    assert_eq!(m["reason"]["code"], "invalid_plan", "{m}");
    assert!(
        m["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("a_future_field"),
        "{m}"
    );
}

#[test]
fn failed_upload_is_retried_then_fails_the_pod_with_the_reason_and_commits_nothing() {
    let mut world = World::s3();
    let out = results_output(&world, "");
    world.set_env("DATAMON_RETRIES", "2");
    world.set_env("DATAMON_RETRY_TIMEOUT_SECS", "3");
    let s = Scratch::new();
    // The app writes its output, then waits for the test to take the store away.
    let script = format!(
        "mkdir -p {out} && head -c 3000000 /dev/urandom > {out}/r.bin && touch {seen}/running && i=0; while [ ! -e {seen}/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        out = p("data/out"), seen = p("seen"),
    );
    let pod = start(
        &world,
        &datamon_pod(&[out], Layout::Native, &script, &s.seen),
        &s.pod,
    );
    wait_until("the app to run", || s.seen.join("running").exists());
    if let datamon_e2e::Backend::S3(server) = &mut world.backend {
        server.stop();
    }
    std::fs::write(s.seen.join("go"), b"").unwrap();
    let report = pod.wait(DEADLINE).unwrap();
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(report.exit_code("app"), Some(69), "{}", report.logs());
    let m = report.message("app");
    assert_eq!(m["reason"]["code"], "upload_failed", "{m}");
    assert!(
        m["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("output result"),
        "{m}"
    );
    assert!(m["outputs"].is_null(), "{m}");
    // The store back: no bundle is visible.
    let server = datamon_e2e::s3::S3Server::start(&world.buckets, 0).unwrap();
    world.set_env("DATAMON_S3_ENDPOINT", &server.endpoint());
    assert!(world.bundles("results").is_empty());
}

#[test]
fn sigterm_to_the_pod_during_the_upload_leaves_a_whole_bundle_or_none() {
    let world = World::local();
    let out = results_output(&world, "label: done");
    let s = Scratch::new();
    let size = 192 * MIB;
    let script = format!(
        "mkdir -p {out} && head -c {size} /dev/urandom > {out}/big.bin",
        out = p("data/out")
    );
    let pod = start(
        &world,
        &datamon_pod(&[out], Layout::Native, &script, &s.seen),
        &s.pod,
    );
    // The webhook's coordination volume.
    let state = pod.volume_dir("datamon-run").unwrap().join("datamon.json");
    wait_until("the sidecar to start uploading", || {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        assert!(
            !text.contains("\"done\""),
            "the upload ended before the test saw it: make the file bigger"
        );
        text.contains("\"uploading\"")
    });
    pod.terminate().unwrap();
    let report = pod.wait(DEADLINE).unwrap();
    let listed = world.bundles("results");
    let side = report.container("datamon").unwrap();
    match listed.as_slice() {
        [] => assert_eq!(
            side.signal,
            Some(9),
            "no bundle, so the upload must have been killed\n{}",
            report.logs()
        ),
        [id] => {
            let files = world.bundle_files("results", id);
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].1.len(), size);
            assert_eq!(
                report.message("datamon")["outputs"]["result"],
                id.as_str(),
                "{}",
                report.logs()
            );
            let label: Value = serde_json::from_str(&world.ok(&[
                "label", "get", "--repo", "results", "--label", "done", "--output", "json",
            ]))
            .unwrap();
            assert_eq!(label[0]["id"], id.as_str());
        }
        more => panic!("one upload made {} bundles", more.len()),
    }
    let log = std::fs::read_to_string(&side.log).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

/// A pod whose annotations wrap two application containers, `app-a` and `app-b` (their
/// participants, as the webhook names them: `app-app-a` and `app-app-b`); `b_script` is
/// the second one's.
fn two_apps_pod(world: &World, s: &Scratch, b_script: &str) -> PodReport {
    let annotations = [
        results_output(world, ""),
        annotation("datamon.io/wrap", "app-a,app-b"),
    ];
    let a_script = format!(
        "mkdir -p {out} && echo a > {out}/a.txt",
        out = p("data/out")
    );
    let apps = [("app-a", a_script.as_str()), ("app-b", b_script)];
    let pod = injected_pod(&annotations, Layout::Native, &apps, &s.seen);
    run(world, &pod, &s.pod)
}

#[test]
fn two_wrapped_containers_upload_once_both_succeeded() {
    let world = World::local();
    let s = Scratch::new();
    // The second app finishes after the first has exited, so the upload must wait for it.
    let b = format!(
        "i=0; while [ ! -e {run}/app-app-a.json ] || ! grep -q exited {run}/app-app-a.json; do sleep 0.05; i=$((i+1)); [ $i -lt 600 ] || exit 9; done; mkdir -p {out} && echo b > {out}/b.txt",
        run = p("run"), out = p("data/out"),
    );
    let report = two_apps_pod(&world, &s, &b);
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    let id = report.message("app-b")["outputs"]["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(report.message("app-a")["outputs"]["result"], id.as_str());
    let files = world.bundle_files("results", &id);
    assert_eq!(
        files,
        vec![
            ("a.txt".to_string(), b"a\n".to_vec()),
            ("b.txt".to_string(), b"b\n".to_vec())
        ]
    );
}

#[test]
fn one_of_two_wrapped_containers_failing_uploads_nothing() {
    let world = World::local();
    let s = Scratch::new();
    let report = two_apps_pod(&world, &s, "exit 3");
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(report.exit_code("app-a"), Some(0), "{}", report.logs());
    assert_eq!(report.exit_code("app-b"), Some(3));
    assert!(world.bundles("results").is_empty());
    assert_eq!(report.message("datamon")["reason"]["code"], "app_failed");
}
