//! The sidecar runtime end to end: pods laid out as the webhook lays them out (an install
//! init container, the agent as a native or classic sidecar, the application wrapped), run
//! by the pod runner as real processes with real mounts (FUSE included), against the local
//! store and the S3 server. Each test checks the bytes the application saw, the bundles
//! that exist afterwards, exit codes, and the reasons the participants give.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datamon_e2e::pod::{self, Phase, PodReport, PodRunner, RunningPod, Signal};
use datamon_e2e::{noise, read_tree, workspace_bin, write_file, World};
use serde_json::{json, Value};

/// Deadline of every pod: far above what any needs; a hang fails the test instead.
const DEADLINE: Duration = Duration::from_secs(90);
/// Where the pods' volumes are mounted (inside each container's own mount namespace).
const ROOT: &str = "/mnt/datamon-e2e";
/// Short deadlines, so that no failure test takes long.
fn deadlines() -> Value {
    json!({"ready": "20s", "start": "20s", "upload": "30s", "grace": "2s"})
}

fn p(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

/// How the agent runs in the pod.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// An init container with `restartPolicy: Always` and a startupProbe.
    Native,
    /// A regular container next to the application.
    Classic,
}

/// A pod with the agent laid out as `layout`, running `plan`, and the application running
/// `script` under the wrapper. The host directory `seen` is mounted at `ROOT/seen` in the
/// application, for it to leave what it saw.
fn datamon_pod(
    plan: &Value,
    layout: Layout,
    script: &str,
    seen: &Path,
) -> k8s_openapi::api::core::v1::Pod {
    let plan_text = plan.to_string();
    let env = json!([{"name": "DATAMON_PLAN", "value": plan_text}]);
    let agent_mounts = json!([
        {"name": "run", "mountPath": p("run")},
        {"name": "bin", "mountPath": p("bin"), "readOnly": true},
        {"name": "data", "mountPath": p("data"), "mountPropagation": "Bidirectional"},
    ]);
    let mut sidecar = json!({
        "name": "datamon", "image": "datamon-agent",
        "args": ["sidecar", "--participant", "datamon"],
        "env": env, "volumeMounts": agent_mounts,
    });
    if layout == Layout::Native {
        sidecar["restartPolicy"] = json!("Always");
        sidecar["startupProbe"] = json!({
            "exec": {"command": [p("bin/datamon-agent"), "probe", "--participant", "datamon"]},
            "periodSeconds": 1, "failureThreshold": 30,
        });
    }
    let install = json!({
        "name": "datamon-install", "image": "datamon-agent",
        "args": ["install", p("bin")],
        "volumeMounts": [{"name": "bin", "mountPath": p("bin")}],
    });
    let app = json!({
        "name": "app", "image": "shell",
        "command": [p("bin/datamon-agent"), "wrap", "--", "sh", "-c", script],
        "env": env,
        "volumeMounts": [
            {"name": "run", "mountPath": p("run")},
            {"name": "bin", "mountPath": p("bin"), "readOnly": true},
            {"name": "data", "mountPath": p("data"), "mountPropagation": "HostToContainer"},
            {"name": "seen", "mountPath": p("seen")},
        ],
    });
    let (init, containers) = match layout {
        Layout::Native => (json!([install, sidecar]), json!([app])),
        Layout::Classic => (json!([install]), json!([sidecar, app])),
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "job", "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "initContainers": init,
            "containers": containers,
            "volumes": [
                {"name": "run", "emptyDir": {}},
                {"name": "bin", "emptyDir": {}},
                {"name": "data", "emptyDir": {}},
                {"name": "seen", "hostPath": {"path": seen.display().to_string()}},
            ],
        },
    }))
    .unwrap()
}

/// A plan with the test deadlines; `sidecar` gives the one sidecar's lifecycle.
fn plan(inputs: Value, outputs: Value, layout: Layout) -> Value {
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    json!({
        "coordination": p("run"),
        "inputs": inputs,
        "outputs": outputs,
        "sidecars": [{
            "name": "datamon", "inputs": names(&inputs), "outputs": names(&outputs),
            "lifecycle": if layout == Layout::Native { "native" } else { "classic" },
        }],
        "deadlines": deadlines(),
    })
}

fn start(world: &World, pod: k8s_openapi::api::core::v1::Pod, dir: &Path) -> RunningPod {
    let mut runner = PodRunner::new(pod)
        .workdir(dir)
        .image(
            "datamon-agent",
            vec![workspace_bin("datamon-agent").display().to_string()],
        )
        .grace(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(200));
    for (k, v) in world.env_vars() {
        runner = runner.env(k.clone(), v.clone());
    }
    runner.start().unwrap()
}

fn run(world: &World, pod: k8s_openapi::api::core::v1::Pod, dir: &Path) -> PodReport {
    start(world, pod, dir).wait(DEADLINE).unwrap()
}

/// A scratch directory for one pod: `seen` (the app's window) and `pod` (the runner's).
struct Scratch {
    _tmp: tempfile::TempDir,
    seen: PathBuf,
    pod: PathBuf,
}

fn scratch() -> Scratch {
    let tmp = tempfile::tempdir().unwrap();
    let seen = tmp.path().join("seen");
    let pod = tmp.path().join("pod");
    std::fs::create_dir_all(&seen).unwrap();
    std::fs::create_dir_all(&pod).unwrap();
    Scratch {
        seen,
        pod,
        _tmp: tmp,
    }
}

/// Creates the repo `results` in `world` and returns a plan (native sidecar, no input)
/// whose one output, `result`, uploads `data/out` there, with the fields of `extra` too.
fn results_plan(world: &World, extra: Value) -> Value {
    world.ok(&[
        "repo",
        "create",
        "--repo",
        "results",
        "--description",
        "test",
    ]);
    let mut output = json!({"name": "result", "repo": "results", "path": p("data/out")});
    if let (Some(o), Some(e)) = (output.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    plan(json!([]), json!([output]), Layout::Native)
}

/// The JSON termination message of a container.
fn message(report: &PodReport, container: &str) -> Value {
    let c = report.container(container).unwrap();
    serde_json::from_str(&c.termination_message).unwrap_or_else(|e| {
        panic!(
            "{container}'s termination message {:?}: {e}\n{}",
            c.termination_message,
            report.logs()
        )
    })
}

fn exit_code(report: &PodReport, container: &str) -> Option<i32> {
    report.container(container).unwrap().exit_code
}

/// Uploads a bundle made of `files` to a new repo `repo`; returns its id.
fn seed(world: &World, repo: &str, files: &[(&str, Vec<u8>)]) -> String {
    world.ok(&["repo", "create", "--repo", repo, "--description", "test"]);
    let dir = world.tmp.path().join(format!("seed-{repo}"));
    for (name, bytes) in files {
        write_file(&dir.join(name), bytes);
    }
    world.upload(repo, &dir, &[])
}

/// The bundles of `repo` (ids).
fn bundles(world: &World, repo: &str) -> Vec<String> {
    let out = world.ok(&["bundle", "list", "--repo", repo, "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// The files of bundle `id` of `repo`, downloaded.
fn bundle_files(world: &World, repo: &str, id: &str) -> Vec<(String, Vec<u8>)> {
    let dest = world.tmp.path().join(format!("check-{repo}-{id}"));
    world.ok(&[
        "bundle",
        "download",
        "--repo",
        repo,
        "--bundle",
        id,
        "--destination",
        &dest.display().to_string(),
    ]);
    read_tree(&dest)
}

#[test]
fn read_only_pod_sees_downloaded_and_mounted_bytes_and_writes_nothing() {
    for layout in [Layout::Native, Layout::Classic] {
        let world = World::local();
        let raw = noise(3 * 1024 * 1024 + 5, 1);
        let img = noise(5 * 1024 * 1024 + 3, 2);
        let raw_id = seed(
            &world,
            "raw",
            &[
                ("a.txt", b"hello\n".to_vec()),
                ("deep/raw.bin", raw.clone()),
            ],
        );
        let img_id = seed(&world, "img", &[("b.bin", img.clone())]);
        let plan = plan(
            json!([
                {"name": "raw", "repo": "raw", "path": p("data/raw")},
                {"name": "img", "repo": "img", "path": p("data/img"), "mode": "mount"},
            ]),
            json!([]),
            layout,
        );
        let s = scratch();
        let script = format!(
            "cp -r {raw} {seen}/raw && cp {img}/b.bin {seen}/b.bin && (touch {img}/x 2>/dev/null && echo writable || echo read-only) > {seen}/mount-mode",
            raw = p("data/raw"), img = p("data/img"), seen = p("seen"),
        );
        let report = run(&world, datamon_pod(&plan, layout, &script, &s.seen), &s.pod);
        assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
        assert_eq!(exit_code(&report, "app"), Some(0));
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
        let m = message(&report, "app");
        assert_eq!(m["exit_code"], 0);
        assert_eq!(m["inputs"]["raw"], raw_id.as_str());
        assert_eq!(m["inputs"]["img"], img_id.as_str());
        // Nothing was uploaded.
        assert_eq!(bundles(&world, "raw"), vec![raw_id]);
        assert_eq!(bundles(&world, "img"), vec![img_id]);
        // The sidecar exited cleanly (classic: by itself; native: on the kubelet's SIGTERM).
        assert_eq!(exit_code(&report, "datamon"), Some(0), "{}", report.logs());
    }
}

#[test]
fn write_only_pod_uploads_its_output_with_label_on_both_stores() {
    for world in World::each() {
        let plan = results_plan(
            &world,
            json!({"message": "nightly", "label": "latest-run",
                   "contributor": {"name": "Job", "email": "job@example.com"}}),
        );
        let s = scratch();
        let script = format!(
            "mkdir -p {out}/sub && printf result > {out}/r.txt && head -c 2500000 /dev/urandom > {out}/sub/big.bin && cp -r {out} {seen}/out",
            out = p("data/out"), seen = p("seen"),
        );
        let report = run(
            &world,
            datamon_pod(&plan, Layout::Native, &script, &s.seen),
            &s.pod,
        );
        assert_eq!(
            report.phase,
            Phase::Succeeded,
            "{}: {}",
            world.name(),
            report.logs()
        );
        let m = message(&report, "app");
        let id = m["outputs"]["result"].as_str().unwrap().to_string();
        assert_eq!(bundles(&world, "results"), vec![id.clone()]);
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
            bundle_files(&world, "results", &id),
            read_tree(&s.seen.join("out")),
            "{}",
            world.name()
        );
        assert_eq!(
            message(&report, "datamon")["outputs"]["result"],
            id.as_str()
        );
    }
}

#[test]
fn read_update_pod_uploads_the_updated_input() {
    let world = World::local();
    let v1 = seed(
        &world,
        "db",
        &[
            ("data.txt", b"one\n".to_vec()),
            ("keep.bin", noise(100_000, 3)),
        ],
    );
    let plan = plan(
        json!([{"name": "db-in", "repo": "db", "path": p("data/db")}]),
        json!([{"name": "db-out", "repo": "db", "path": p("data/db"), "message": "updated", "label": "current"}]),
        Layout::Classic,
    );
    let s = scratch();
    let script = format!(
        "echo two >> {db}/data.txt && cp -r {db} {seen}/db",
        db = p("data/db"),
        seen = p("seen")
    );
    let report = run(
        &world,
        datamon_pod(&plan, Layout::Classic, &script, &s.seen),
        &s.pod,
    );
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    let v2 = message(&report, "app")["outputs"]["db-out"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1, v2);
    let files = bundle_files(&world, "db", &v2);
    assert_eq!(files, read_tree(&s.seen.join("db")));
    assert!(
        files
            .iter()
            .any(|(n, b)| n == "data.txt" && b == b"one\ntwo\n"),
        "{files:?}"
    );
    assert_eq!(bundles(&world, "db").len(), 2);
}

#[test]
fn several_inputs_and_outputs_split_between_an_init_container_and_a_native_sidecar() {
    let world = World::s3();
    let a = seed(&world, "in-a", &[("a.bin", noise(2 * 1024 * 1024 + 1, 4))]);
    let _b = seed(&world, "in-b", &[("b.txt", b"bee".to_vec())]);
    world.ok(&[
        "label", "set", "--repo", "in-b", "--label", "v1", "--bundle", &_b,
    ]);
    let _c = seed(&world, "in-c", &[("c.bin", noise(1_000_000, 5))]);
    for r in ["out-x", "out-y"] {
        world.ok(&["repo", "create", "--repo", r, "--description", "test"]);
    }
    let plan = json!({
        "coordination": p("run"),
        "inputs": [
            {"name": "a", "repo": "in-a", "bundle": a, "path": p("data/a")},
            {"name": "b", "repo": "in-b", "label": "v1", "path": p("data/b"), "name_filter": "txt$"},
            {"name": "c", "repo": "in-c", "path": p("data/c"), "mode": "mount"},
        ],
        "outputs": [
            {"name": "x", "repo": "out-x", "path": p("data/x")},
            {"name": "y", "repo": "out-y", "path": p("data/y"), "label": "y1"},
        ],
        "sidecars": [
            {"name": "fetch", "inputs": ["a", "b"]},
            {"name": "datamon", "inputs": ["c"], "outputs": ["x", "y"], "lifecycle": "native"},
        ],
        "deadlines": deadlines(),
    });
    let s = scratch();
    let script = format!(
        "mkdir -p {d}/x {d}/y && cat {d}/a/a.bin {d}/b/b.txt > {d}/x/ab.bin && cp {d}/c/c.bin {d}/y/c.bin && cp -r {d}/x {d}/y {seen}/",
        d = p("data"), seen = p("seen"),
    );
    let mut pod = datamon_pod(&plan, Layout::Native, &script, &s.seen);
    // The downloads run first, in a plain init container.
    let mut fetch: k8s_openapi::api::core::v1::Container = serde_json::from_value(json!({
        "name": "fetch", "image": "datamon-agent", "args": ["sidecar", "--participant", "fetch"],
        "env": [{"name": "DATAMON_PLAN", "value": plan.to_string()}],
        "volumeMounts": [{"name": "run", "mountPath": p("run")}, {"name": "data", "mountPath": p("data")}],
    })).unwrap();
    fetch.termination_message_path = Some("/dev/termination-log".into());
    pod.spec
        .as_mut()
        .unwrap()
        .init_containers
        .as_mut()
        .unwrap()
        .insert(1, fetch);
    let report = run(&world, pod, &s.pod);
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(exit_code(&report, "fetch"), Some(0));
    let m = message(&report, "app");
    let x = m["outputs"]["x"].as_str().unwrap();
    let y = m["outputs"]["y"].as_str().unwrap();
    let mut ab = noise(2 * 1024 * 1024 + 1, 4);
    ab.extend_from_slice(b"bee");
    assert_eq!(
        bundle_files(&world, "out-x", x),
        vec![("ab.bin".to_string(), ab)]
    );
    assert_eq!(
        bundle_files(&world, "out-y", y),
        vec![("c.bin".to_string(), noise(1_000_000, 5))]
    );
    assert_eq!(m["inputs"].as_object().unwrap().len(), 3, "{m}");
}

#[test]
fn app_exit_3_uploads_nothing_and_fails_the_pod_with_3() {
    let world = World::local();
    let plan = results_plan(&world, json!({}));
    let s = scratch();
    let script = format!(
        "mkdir -p {out} && echo partial > {out}/r.txt && exit 3",
        out = p("data/out")
    );
    let report = run(
        &world,
        datamon_pod(&plan, Layout::Native, &script, &s.seen),
        &s.pod,
    );
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(exit_code(&report, "app"), Some(3), "{}", report.logs());
    assert_eq!(exit_code(&report, "datamon"), Some(0), "{}", report.logs());
    assert!(bundles(&world, "results").is_empty());
    let m = message(&report, "datamon");
    assert_eq!(m["reason"]["code"], "app_failed", "{m}");
    assert_eq!(message(&report, "app")["exit_code"], 3);
}

#[test]
fn kill_9_of_the_sidecar_stops_the_app_and_fails_the_pod() {
    let world = World::local();
    seed(&world, "img", &[("b.bin", noise(100_000, 6))]);
    let plan = plan(
        json!([{"name": "img", "repo": "img", "path": p("data/img"), "mode": "mount"}]),
        json!([]),
        Layout::Native,
    );
    let s = scratch();
    // The app marks that it runs, then would run for 5 minutes.
    let script = format!("touch {seen}/running && sleep 300", seen = p("seen"));
    let pod = start(
        &world,
        datamon_pod(&plan, Layout::Native, &script, &s.seen),
        &s.pod,
    );
    wait_for_file(&s.seen.join("running"));
    pod.signal("datamon", Signal::SIGKILL).unwrap();
    let report = pod.wait(DEADLINE).unwrap();
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(exit_code(&report, "app"), Some(69), "{}", report.logs());
    let m = message(&report, "app");
    assert_eq!(m["reason"]["code"], "sidecar_died", "{m}");
    assert!(
        m["reason"]["message"].as_str().unwrap().contains("datamon"),
        "{m}"
    );
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
    let plan = plan(
        json!([{"name": "raw", "repo": "raw", "path": p("data/raw")}]),
        json!([]),
        Layout::Classic,
    );
    let s = scratch();
    let script = format!("touch {seen}/ran", seen = p("seen"));
    let report = run(
        &world,
        datamon_pod(&plan, Layout::Classic, &script, &s.seen),
        &s.pod,
    );
    assert_eq!(report.phase, Phase::Failed);
    assert!(!s.seen.join("ran").exists(), "the app must not start");
    assert_eq!(exit_code(&report, "app"), Some(69), "{}", report.logs());
    assert_eq!(exit_code(&report, "datamon"), Some(1));
    let m = message(&report, "app");
    assert_eq!(m["reason"]["code"], "sidecar_failed", "{m}");
    let side = message(&report, "datamon");
    assert_eq!(side["reason"]["code"], "store_unreachable", "{side}");
    assert!(
        side["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:9"),
        "{side}"
    );
}

#[test]
fn deadlines_end_waits_with_a_reason() {
    let world = World::local();
    // A sidecar the plan names but the pod never runs: the ready deadline passes.
    let mut ghost = plan(json!([]), json!([]), Layout::Classic);
    ghost["sidecars"] = json!([{"name": "ghost"}]);
    ghost["deadlines"]["ready"] = json!("1s");
    let s = scratch();
    let script = format!("touch {seen}/ran", seen = p("seen"));
    let mut pod = datamon_pod(&ghost, Layout::Classic, &script, &s.seen);
    pod.spec
        .as_mut()
        .unwrap()
        .containers
        .retain(|c| c.name == "app");
    let report = run(&world, pod, &s.pod);
    assert_eq!(report.phase, Phase::Failed);
    assert!(!s.seen.join("ran").exists());
    assert_eq!(exit_code(&report, "app"), Some(124), "{}", report.logs());
    let m = message(&report, "app");
    assert_eq!(m["reason"]["code"], "deadline", "{m}");
    assert!(
        m["reason"]["message"].as_str().unwrap().contains("ghost"),
        "{m}"
    );

    // The application's own deadline.
    let mut slow = results_plan(&world, json!({}));
    slow["deadlines"]["app"] = json!("1s");
    let s = scratch();
    let report = run(
        &world,
        datamon_pod(&slow, Layout::Native, "sleep 300", &s.seen),
        &s.pod,
    );
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(exit_code(&report, "app"), Some(124), "{}", report.logs());
    assert_eq!(message(&report, "app")["reason"]["code"], "deadline");
    assert!(bundles(&world, "results").is_empty());
}

/// Waits (with a deadline) for a file to appear.
fn wait_for_file(path: &Path) {
    let until = Instant::now() + DEADLINE;
    while !path.exists() {
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_plan_is_refused_before_any_work_with_the_field_named() {
    let world = World::local();
    let mut bad = plan(
        json!([{"name": "raw", "repo": "raw", "path": "relative"}]),
        json!([]),
        Layout::Classic,
    );
    bad["sidecars"] = json!([]);
    let s = scratch();
    let report = run(
        &world,
        datamon_pod(&bad, Layout::Classic, "true", &s.seen),
        &s.pod,
    );
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(exit_code(&report, "datamon"), Some(64));
    assert_eq!(exit_code(&report, "app"), Some(64));
    let log = std::fs::read_to_string(&report.container("app").unwrap().log).unwrap();
    assert!(log.contains("inputs[0].path"), "{log}");
    let _ = pod::parse; // the runner's parser is covered by its own tests
}

#[test]
fn failed_upload_is_retried_then_fails_the_pod_with_the_reason_and_commits_nothing() {
    let mut world = World::s3();
    let plan = results_plan(&world, json!({}));
    world.set_env("DATAMON_RETRIES", "2");
    world.set_env("DATAMON_RETRY_TIMEOUT_SECS", "3");
    let s = scratch();
    // The app writes its output, then waits for the test to take the store away.
    let script = format!(
        "mkdir -p {out} && head -c 3000000 /dev/urandom > {out}/r.bin && touch {seen}/running && i=0; while [ ! -e {seen}/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        out = p("data/out"), seen = p("seen"),
    );
    let pod = start(
        &world,
        datamon_pod(&plan, Layout::Native, &script, &s.seen),
        &s.pod,
    );
    wait_for_file(&s.seen.join("running"));
    if let datamon_e2e::Backend::S3(server) = &mut world.backend {
        server.stop();
    }
    std::fs::write(s.seen.join("go"), b"").unwrap();
    let report = pod.wait(DEADLINE).unwrap();
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(exit_code(&report, "app"), Some(69), "{}", report.logs());
    let m = message(&report, "app");
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
    assert!(bundles(&world, "results").is_empty());
}

#[test]
fn sigterm_to_the_pod_during_the_upload_leaves_a_whole_bundle_or_none() {
    let world = World::local();
    let plan = results_plan(&world, json!({"label": "done"}));
    let s = scratch();
    let size = 192 * 1024 * 1024;
    let script = format!(
        "mkdir -p {out} && head -c {size} /dev/urandom > {out}/big.bin",
        out = p("data/out")
    );
    let pod = start(
        &world,
        datamon_pod(&plan, Layout::Native, &script, &s.seen),
        &s.pod,
    );
    let state = pod.volume_dir("run").unwrap().join("datamon.json");
    let until = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        if text.contains("\"uploading\"") {
            break;
        }
        assert!(
            !text.contains("\"done\""),
            "the upload ended before the test saw it: make the file bigger"
        );
        assert!(
            Instant::now() < until,
            "the sidecar never started uploading"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    pod.terminate().unwrap();
    let report = pod.wait(DEADLINE).unwrap();
    let listed = bundles(&world, "results");
    let side = report.container("datamon").unwrap();
    match listed.as_slice() {
        [] => assert_eq!(
            side.signal,
            Some(9),
            "no bundle, so the upload must have been killed\n{}",
            report.logs()
        ),
        [id] => {
            let files = bundle_files(&world, "results", id);
            assert_eq!(files.len(), 1);
            assert_eq!(files[0].1.len(), size);
            assert_eq!(
                message(&report, "datamon")["outputs"]["result"],
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

/// A pod whose plan wraps two application containers, `app-a` and `app-b`; `b_script` is
/// the second one's.
fn two_apps_pod(world: &World, s: &Scratch, b_script: &str) -> PodReport {
    let mut plan = results_plan(world, json!({}));
    plan["apps"] = json!(["app-a", "app-b"]);
    let a_script = format!(
        "mkdir -p {out} && echo a > {out}/a.txt",
        out = p("data/out")
    );
    let mut pod =
        serde_json::to_value(datamon_pod(&plan, Layout::Native, &a_script, &s.seen)).unwrap();
    let containers = pod["spec"]["containers"].as_array_mut().unwrap();
    let mut b = containers[0].clone();
    for (c, name, script) in [
        (&mut containers[0], "app-a", a_script.as_str()),
        (&mut b, "app-b", b_script),
    ] {
        c["name"] = json!(name);
        c["command"] = json!([
            p("bin/datamon-agent"),
            "wrap",
            "--participant",
            name,
            "--",
            "sh",
            "-c",
            script
        ]);
    }
    containers.push(b);
    run(world, serde_json::from_value(pod).unwrap(), &s.pod)
}

#[test]
fn two_wrapped_containers_upload_once_both_succeeded() {
    let world = World::local();
    let s = scratch();
    // The second app finishes after the first has exited, so the upload must wait for it.
    let b = format!(
        "i=0; while [ ! -e {run}/app-a.json ] || ! grep -q exited {run}/app-a.json; do sleep 0.05; i=$((i+1)); [ $i -lt 600 ] || exit 9; done; mkdir -p {out} && echo b > {out}/b.txt",
        run = p("run"), out = p("data/out"),
    );
    let report = two_apps_pod(&world, &s, &b);
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    let id = message(&report, "app-b")["outputs"]["result"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(message(&report, "app-a")["outputs"]["result"], id.as_str());
    let files = bundle_files(&world, "results", &id);
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
    let s = scratch();
    let report = two_apps_pod(&world, &s, "exit 3");
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(exit_code(&report, "app-a"), Some(0), "{}", report.logs());
    assert_eq!(exit_code(&report, "app-b"), Some(3));
    assert!(bundles(&world, "results").is_empty());
    assert_eq!(message(&report, "datamon")["reason"]["code"], "app_failed");
}
