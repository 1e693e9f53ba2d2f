//! Tests of the pod runner (`datamon_e2e::pod`): real processes, real mount namespaces and
//! real mounts, with shell commands as containers. Order is asserted through files the
//! containers write, never through wall-clock timing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::path::{Path, PathBuf};
use std::time::Duration;

use datamon_e2e::pod::{self, Phase, PodError, PodReport, PodRunner, RunningPod, Signal};
use datamon_e2e::{wait_until, DEADLINE};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

/// Mount points inside the containers (created on the host, left empty there).
const MNT: &str = "/mnt/pod-runner-test";

/// A pod with `spec`; `restartPolicy: Never` (a Job's) unless the spec says otherwise.
fn pod(mut spec: Value) -> Pod {
    if spec.get("restartPolicy").is_none() {
        spec["restartPolicy"] = json!("Never");
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "test-pod", "namespace": "ns1",
                     "labels": {"app": "demo"}, "annotations": {"example.com/note": "hello"}},
        "spec": spec,
    }))
    .unwrap()
}

/// A container running a shell script.
fn sh(name: &str, script: &str, mounts: Value) -> Value {
    json!({"name": name, "image": "shell", "command": ["sh", "-c", script], "volumeMounts": mounts})
}

/// A native sidecar: an init container with `restartPolicy: Always`, running a script.
fn native_sidecar(name: &str, script: &str, mounts: Value) -> Value {
    let mut c = sh(name, script, mounts);
    c["restartPolicy"] = json!("Always");
    c
}

/// A pod with the emptyDir volume `v`, the native sidecar `sidecar` and `containers`.
fn sidecar_pod(sidecar: Value, containers: Value) -> Pod {
    pod(json!({
        "volumes": [{"name": "v", "emptyDir": {}}],
        "initContainers": [sidecar],
        "containers": containers,
    }))
}

fn start(p: Pod, dir: &Path) -> RunningPod {
    PodRunner::new(p)
        .workdir(dir)
        .grace(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(100))
        .start()
        .unwrap()
}

fn run(p: Pod, dir: &Path) -> PodReport {
    start(p, dir).wait(DEADLINE).unwrap()
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Mount points of the test process's (the host's) mount namespace.
fn host_mount_points() -> Vec<PathBuf> {
    read("/proc/self/mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

#[test]
fn containers_share_an_empty_dir_at_different_mount_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = format!("{MNT}/shared-w");
    let reader = format!("{MNT}/shared-r");
    let r = run(
        pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                sh("writer", &format!("echo from-writer > {writer}/hello"),
                   json!([{"name": "data", "mountPath": writer}])),
                sh("reader", &format!(
                    "i=0; while [ ! -s {reader}/hello ] && [ $i -lt 500 ]; do sleep 0.02; i=$((i+1)); done; \
                     cat {reader}/hello > {reader}/copy"),
                   json!([{"name": "data", "mountPath": reader}])),
            ],
        })),
        tmp.path(),
    );
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    let vol = tmp.path().join("volumes/data");
    assert_eq!(read(vol.join("copy")), "from-writer\n");
    // The bind mounts lived only in the containers' namespaces.
    assert!(!Path::new(&writer).join("hello").exists());
    assert!(!host_mount_points().iter().any(|m| m.starts_with(MNT)));
}

#[test]
fn host_path_volume_is_the_host_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host-data");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in"), "from-host").unwrap();
    let m = format!("{MNT}/host-path");
    let running = start(
        pod(json!({
            "volumes": [{"name": "h", "hostPath": {"path": host}}],
            "containers": [sh("c", &format!("cat {m}/in > {m}/out"),
                              json!([{"name": "h", "mountPath": m}]))],
        })),
        tmp.path(),
    );
    assert_eq!(running.volume_dir("h"), Some(host.clone()));
    let r = running.wait(DEADLINE).unwrap();
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!(read(host.join("out")), "from-host");
}

#[test]
fn sub_path_and_read_only_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let ro = format!("{MNT}/ro");
    let sub = format!("{MNT}/sub");
    let r = run(
        pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [sh("c", &format!(
                "echo in-sub > {sub}/f; if echo x > {ro}/nope 2>/dev/null; then exit 1; fi; \
                 test -f {ro}/part/f"),
                json!([{"name": "data", "mountPath": sub, "subPath": "part"},
                       {"name": "data", "mountPath": ro, "readOnly": true}]))],
        })),
        tmp.path(),
    );
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!(read(tmp.path().join("volumes/data/part/f")), "in-sub\n");
    assert!(!tmp.path().join("volumes/data/nope").exists());
}

#[test]
fn init_container_runs_first_and_its_failure_fails_the_pod() {
    let v = format!("{MNT}/init");
    let mounts = json!([{"name": "v", "emptyDir": {}}]);
    let vm = json!([{"name": "v", "mountPath": v}]);

    let tmp = tempfile::tempdir().unwrap();
    let r = run(
        pod(json!({
            "volumes": mounts,
            "initContainers": [sh("init", &format!("echo ran > {v}/init-done"), vm.clone())],
            "containers": [sh("main", &format!("cat {v}/init-done > {v}/main-saw"), vm.clone())],
        })),
        tmp.path(),
    );
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!(read(tmp.path().join("volumes/v/main-saw")), "ran\n");

    let tmp = tempfile::tempdir().unwrap();
    let r = run(
        pod(json!({
            "volumes": mounts,
            "initContainers": [sh("init", "exit 7", vm.clone()), sh("init2", &format!("touch {v}/init2"), vm.clone())],
            "containers": [sh("main", &format!("touch {v}/main"), vm)],
        })),
        tmp.path(),
    );
    assert_eq!(r.phase, Phase::Failed, "{}", r.logs());
    assert_eq!(r.container("init").unwrap().exit_code, Some(7));
    assert!(!r.container("init2").unwrap().started);
    assert!(!r.container("main").unwrap().started);
    assert!(!tmp.path().join("volumes/v/main").exists());
    assert!(!tmp.path().join("volumes/v/init2").exists());
}

#[test]
fn native_sidecar_startup_probe_gates_main_and_sidecar_gets_sigterm_after() {
    let tmp = tempfile::tempdir().unwrap();
    let s = format!("{MNT}/sidecar");
    let mut sidecar = native_sidecar(
        "sidecar",
        &format!(
            "trap 'date +%s%N > {s}/sidecar-termed; exit 0' TERM; \
             sleep 0.3; date +%s%N > {s}/ready-at; touch {s}/ready; \
             while true; do sleep 0.05; done"
        ),
        json!([{"name": "v", "mountPath": s}]),
    );
    sidecar["startupProbe"] = json!({"exec": {"command": ["test", "-f", format!("{s}/ready")]},
                                     "periodSeconds": 1, "failureThreshold": 30});
    let r = run(
        sidecar_pod(
            sidecar,
            json!([sh(
                "main",
                &format!(
                    "date +%s%N > {s}/main-at; test -f {s}/ready; test ! -e {s}/sidecar-termed"
                ),
                json!([{"name": "v", "mountPath": s}])
            )]),
        ),
        tmp.path(),
    );
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    let v = tmp.path().join("volumes/v");
    let num = |f: &str| read(v.join(f)).trim().parse::<u128>().unwrap();
    assert!(
        num("ready-at") <= num("main-at"),
        "main started before the sidecar was ready"
    );
    assert!(
        num("main-at") <= num("sidecar-termed"),
        "sidecar terminated before main ran"
    );
    let side = r.container("sidecar").unwrap();
    assert_eq!(
        (side.exit_code, side.signal),
        (Some(0), None),
        "{}",
        r.logs()
    );
}

/// Lines in the file `name` of the pod's volume `v` (how often a container appended to it).
fn lines_in(running: &RunningPod, name: &str) -> usize {
    let vol = running.volume_dir("v").unwrap();
    std::fs::read_to_string(vol.join(name))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn failing_startup_probe_restarts_the_sidecar_and_the_pod_stays_in_init() {
    // As a kubelet does: the sidecar is killed after failureThreshold failures and
    // restarted with the backoff; the pod neither fails nor starts its main container.
    let tmp = tempfile::tempdir().unwrap();
    let v = format!("{MNT}/probe-fail");
    let vm = json!([{"name": "v", "mountPath": v}]);
    let mut sidecar = native_sidecar(
        "sidecar",
        &format!("echo run >> {v}/runs; while true; do sleep 0.05; done"),
        vm.clone(),
    );
    sidecar["startupProbe"] =
        json!({"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2});
    let running = start(
        sidecar_pod(sidecar, json!([sh("main", &format!("touch {v}/main"), vm)])),
        tmp.path(),
    );
    wait_until("the sidecar's third run", || {
        lines_in(&running, "runs") >= 3
    });
    running.terminate().unwrap();
    let r = running.wait(DEADLINE).unwrap();
    assert!(!r.container("main").unwrap().started, "{}", r.logs());
    assert!(
        r.container("sidecar").unwrap().restarts >= 2,
        "{}",
        r.logs()
    );
    assert_ne!(r.phase, Phase::Succeeded);
    assert!(!tmp.path().join("volumes/v/main").exists());
}

#[test]
fn restart_policy_on_failure_retries_init_and_main_containers_never_does_not() {
    let v = format!("{MNT}/on-failure");
    let vm = json!([{"name": "v", "mountPath": v}]);
    // Each fails on its first run and succeeds on its second.
    let flaky = |name: &str| {
        sh(
            name,
            &format!("echo run >> {v}/{name}; [ $(wc -l < {v}/{name}) -ge 2 ]"),
            vm.clone(),
        )
    };
    let spec = |policy: &str| {
        json!({
            "restartPolicy": policy,
            "volumes": [{"name": "v", "emptyDir": {}}],
            "initContainers": [flaky("init")],
            "containers": [flaky("main")],
        })
    };
    let tmp = tempfile::tempdir().unwrap();
    let r = run(pod(spec("OnFailure")), tmp.path());
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!(r.container("init").unwrap().restarts, 1);
    assert_eq!(r.container("main").unwrap().restarts, 1);
    assert_eq!(read(tmp.path().join("volumes/v/main")), "run\nrun\n");

    // Under Always an init container that succeeded is not run again, and under Never the
    // first failure is final.
    let tmp = tempfile::tempdir().unwrap();
    let r = run(pod(spec("Never")), tmp.path());
    assert_eq!(r.phase, Phase::Failed, "{}", r.logs());
    assert_eq!(r.container("init").unwrap().restarts, 0);
    assert!(!r.container("main").unwrap().started);
}

#[test]
fn exit_code_sets_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(
        pod(
            json!({"containers": [sh("ok", "exit 0", json!([])), sh("bad", "echo failing; exit 3", json!([]))]}),
        ),
        tmp.path(),
    );
    assert_eq!(r.phase, Phase::Failed);
    assert_eq!(r.container("bad").unwrap().exit_code, Some(3));
    assert!(r.container("bad").unwrap().started);
    assert_eq!(r.container("ok").unwrap().exit_code, Some(0));
    assert_eq!(read(&r.container("bad").unwrap().log), "failing\n");
    assert!(r.logs().contains("failing"));
}

#[test]
fn sidecar_ignoring_sigterm_is_killed_after_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let sidecar = native_sidecar(
        "stubborn",
        "trap '' TERM; while true; do sleep 0.05; done",
        json!([]),
    );
    let r = PodRunner::new(pod(json!({
        "initContainers": [sidecar],
        "containers": [sh("main", "true", json!([]))],
    })))
    .workdir(tmp.path())
    .grace(Duration::from_millis(500))
    .start()
    .unwrap()
    .wait(DEADLINE)
    .unwrap();
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    let s = r.container("stubborn").unwrap();
    assert_eq!((s.exit_code, s.signal), (None, Some(9)));
    assert_eq!(s.restarts, 0);
}

#[test]
fn env_expansion_and_field_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let c = json!({
        "name": "env", "image": "shell",
        "command": ["sh", "-c", "printf '%s\\n' \"$B\" \"$POD\" \"$NS\" \"$APP\" \"$NOTE\" \"$FROM_RUNNER\" \"$1\" > /dev/termination-log", "$(A)"],
        "args": ["$(A)/$(B)"],
        "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "value": "$(A)-$(FROM_RUNNER)-$$(A)-$(NOPE)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NOTE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['example.com/note']"}}},
            {"name": "OVERRIDE", "value": "container"},
        ],
    });
    let r = PodRunner::new(pod(json!({"containers": [c]})))
        .workdir(tmp.path())
        .env("FROM_RUNNER", "r")
        .env("OVERRIDE", "runner")
        .start()
        .unwrap()
        .wait(DEADLINE)
        .unwrap();
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!(
        r.containers[0].termination_message,
        "a-r-$(A)-$(NOPE)\ntest-pod\nns1\ndemo\nhello\nr\na/a-r-$(A)-$(NOPE)\n"
    );
}

#[test]
fn termination_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let custom = format!("{MNT}/term/message");
    let mut c2 = sh(
        "custom",
        &format!("{{ printf head; head -c 5000 /dev/zero | tr '\\0' x; printf tail; }} > {custom}"),
        json!([]),
    );
    c2["terminationMessagePath"] = json!(custom);
    let r = run(
        pod(
            json!({"containers": [sh("default", "printf 'all done' > /dev/termination-log; exit 1", json!([])), c2]}),
        ),
        tmp.path(),
    );
    assert_eq!(
        r.container("default").unwrap().termination_message,
        "all done"
    );
    assert_eq!(r.container("default").unwrap().exit_code, Some(1));
    // The kubelet reads the last 4096 bytes of the file.
    assert_eq!(
        r.container("custom").unwrap().termination_message,
        "x".repeat(4092) + "tail"
    );
    // The host's file at that path is only the (empty) mount point.
    assert_eq!(std::fs::metadata(&custom).unwrap().len(), 0);

    // The pod's status keeps 12 KiB of messages, split evenly: 2048 bytes each of six.
    let write = "head -c 3000 /dev/zero | tr '\\0' y > /dev/termination-log";
    let six: Vec<Value> = (0..6)
        .map(|i| sh(&format!("c{i}"), write, json!([])))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let r = run(pod(json!({ "containers": six })), tmp.path());
    for c in &r.containers {
        assert_eq!(c.termination_message, "y".repeat(2048), "{}", c.name);
    }
}

/// A directory made a shared mount of its own in the host namespace (as `/` is on a
/// systemd host), so that a mount that leaks out of a container would show up under it.
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(p: PathBuf) -> Self {
        std::fs::create_dir_all(&p).unwrap();
        for args in [
            &["--bind", "DIR", "DIR"][..],
            &["--make-private", "DIR"],
            &["--make-shared", "DIR"],
        ] {
            let args: Vec<&str> = args
                .iter()
                .map(|a| if *a == "DIR" { p.to_str().unwrap() } else { a })
                .collect();
            let st = std::process::Command::new("mount")
                .args(&args)
                .status()
                .unwrap();
            assert!(st.success(), "mount {args:?}");
        }
        Self(p)
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn bidirectional_mount_reaches_host_to_container_mounts_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let shared_root = SharedDir::new(tmp.path().join("shared-root"));
    let side = shared_root.0.join("side");
    let side = side.to_str().unwrap();
    let app = format!("{MNT}/bidir-app");
    let out = format!("{MNT}/bidir-out");
    let mut sidecar = native_sidecar(
        "fuse",
        &format!(
            "mount -t tmpfs sidecar-tmpfs {side} && echo served > {side}/hello && exec sleep 1000"
        ),
        json!([{"name": "data", "mountPath": side, "mountPropagation": "Bidirectional"}]),
    );
    sidecar["startupProbe"] =
        json!({"exec": {"command": ["test", "-f", format!("{side}/hello")]}, "periodSeconds": 1});
    let running = start(
        pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "out", "emptyDir": {}}],
            "initContainers": [sidecar],
            "containers": [sh("app", &format!(
                "cat {app}/hello > {out}/seen; \
                 i=0; while [ ! -e {out}/go ] && [ $i -lt 1000 ]; do sleep 0.02; i=$((i+1)); done"),
                json!([{"name": "data", "mountPath": app, "mountPropagation": "HostToContainer"},
                       {"name": "out", "mountPath": out}]))],
        })),
        tmp.path(),
    );
    let vol = running.volume_dir("data").unwrap();
    let out_dir = running.volume_dir("out").unwrap();
    wait_until("the app to read the file", || out_dir.join("seen").exists());
    // The tmpfs is visible in the host's volume directory...
    assert_eq!(read(vol.join("hello")), "served\n");
    let mounts = host_mount_points();
    // ...and nowhere else on the host: not at the sidecar's nor the app's mount paths.
    assert!(
        !mounts
            .iter()
            .any(|m| m.starts_with(&shared_root.0) && *m != shared_root.0),
        "{mounts:?}"
    );
    assert!(!mounts.iter().any(|m| m.starts_with(MNT)), "{mounts:?}");
    std::fs::write(out_dir.join("go"), "").unwrap();
    let r = running.wait(DEADLINE).unwrap();
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!(read(out_dir.join("seen")), "served\n");
    // Every mount is gone once the pod has ended.
    let mounts = host_mount_points();
    assert!(!mounts.contains(&vol), "{mounts:?}");
    assert!(!vol.join("hello").exists());
}

#[test]
fn terminate_stops_a_running_pod() {
    let tmp = tempfile::tempdir().unwrap();
    let v = format!("{MNT}/term");
    let vm = json!([{"name": "v", "mountPath": v}]);
    let sidecar = native_sidecar(
        "sidecar",
        &format!("trap 'touch {v}/sidecar-termed; exit 0' TERM; while true; do sleep 0.05; done"),
        vm.clone(),
    );
    let running = start(
        sidecar_pod(sidecar, json!([
                sh("polite", &format!("trap 'touch {v}/polite-termed; exit 0' TERM; while true; do sleep 0.05; done"), vm),
                sh("plain", "exec sleep 1000", json!([])),
            ])),
        tmp.path(),
    );
    running.wait_running("polite", DEADLINE).unwrap();
    running.wait_running("plain", DEADLINE).unwrap();
    running.terminate().unwrap();
    let r = running.wait(DEADLINE).unwrap();
    assert_eq!(r.phase, Phase::Failed, "{}", r.logs());
    assert_eq!(r.container("polite").unwrap().exit_code, Some(0));
    assert_eq!(r.container("plain").unwrap().signal, Some(15));
    assert_eq!(r.container("sidecar").unwrap().exit_code, Some(0));
    assert!(tmp.path().join("volumes/v/polite-termed").exists());
    assert!(tmp.path().join("volumes/v/sidecar-termed").exists());
}

#[test]
fn killed_native_sidecar_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let v = format!("{MNT}/restart");
    let vm = json!([{"name": "v", "mountPath": v}]);
    let sidecar = native_sidecar(
        "sidecar",
        &format!("echo run >> {v}/runs; while true; do sleep 0.05; done"),
        vm.clone(),
    );
    let running = start(
        sidecar_pod(sidecar, json!([sh("main", &format!("i=0; while [ ! -e {v}/go ] && [ $i -lt 1000 ]; do sleep 0.02; i=$((i+1)); done"), vm)])),
        tmp.path(),
    );
    running.wait_running("sidecar", DEADLINE).unwrap();
    running.signal("sidecar", Signal::SIGKILL).unwrap();
    let vol = running.volume_dir("v").unwrap();
    wait_until("the sidecar's second run", || {
        std::fs::read_to_string(vol.join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
    });
    std::fs::write(vol.join("go"), "").unwrap();
    let r = running.wait(DEADLINE).unwrap();
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert!(
        r.container("sidecar").unwrap().restarts >= 1,
        "{}",
        r.logs()
    );
    assert!(matches!(
        running_signal_unknown(),
        PodError::NoSuchContainer(_)
    ));
}

/// `signal` of a container the pod does not have.
fn running_signal_unknown() -> PodError {
    let tmp = tempfile::tempdir().unwrap();
    let running = start(
        pod(json!({"containers": [sh("c", "true", json!([]))]})),
        tmp.path(),
    );
    running.signal("nope", Signal::SIGTERM).unwrap_err()
}

#[test]
fn timeout_kills_everything_and_reports_log_tails() {
    let tmp = tempfile::tempdir().unwrap();
    let running = start(
        pod(
            json!({"containers": [sh("sleepy", "echo $$ > /dev/termination-log; echo about to sleep; exec sleep 1000", json!([]))]}),
        ),
        tmp.path(),
    );
    running.wait_running("sleepy", DEADLINE).unwrap();
    let term = tmp.path().join("termination/sleepy");
    wait_until("the pid", || {
        std::fs::read_to_string(&term)
            .unwrap_or_default()
            .ends_with('\n')
    });
    let pid = read(&term).trim().to_string();
    let err = running.wait(Duration::from_millis(300)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PodError::Timeout { .. }), "{msg}");
    assert!(msg.contains("about to sleep"), "{msg}");
    assert!(
        !Path::new("/proc").join(pid).exists(),
        "the container survived the timeout"
    );
}

#[test]
fn image_entrypoint_and_bad_pods() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pod::parse(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: tool:dev\n    args: [\"arg1\"]\n",
    )
    .unwrap();
    let r = PodRunner::new(p.clone())
        .workdir(tmp.path())
        .image(
            "tool:dev",
            vec!["sh".into(), "-c".into(), "echo entry $0".into()],
        )
        .start()
        .unwrap()
        .wait(DEADLINE)
        .unwrap();
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!(read(&r.containers[0].log), "entry arg1\n");

    let err = PodRunner::new(p)
        .workdir(tmp.path())
        .start()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"c\" has no command") && err.contains("tool:dev"),
        "{err}"
    );

    let err = PodRunner::new(pod(json!({
        "volumes": [{"name": "cfg", "configMap": {"name": "x"}}],
        "containers": [sh("c", "true", json!([{"name": "cfg", "mountPath": "/cfg"}]))],
    })))
    .workdir(tmp.path())
    .start()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("\"cfg\"") && err.contains("configMap"),
        "{err}"
    );

    let mut c = sh("c", "true", json!([]));
    c["env"] = json!([{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]);
    let err = PodRunner::new(pod(json!({"containers": [c]})))
        .workdir(tmp.path())
        .start()
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"S\"") && err.contains("fieldRef"), "{err}");

    assert!(matches!(pod::parse("spec: [oops"), Err(PodError::Parse(_))));
}

/// A pod whose one container `writer` runs `script` under `restartPolicy` with the
/// emptyDir `data` (`data` holds its fields) at MNT/data and the memory-backed emptyDir
/// `mem` (`sizeLimit: 1Mi`) at MNT/mem; the eviction manager passes every 100 ms.
fn run_with_limits(data: Value, script: &str, restart: &str, dir: &Path) -> PodReport {
    let p = pod(json!({
        "restartPolicy": restart,
        "volumes": [{"name": "data", "emptyDir": data},
                    {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}],
        "containers": [sh("writer", script, json!([
            {"name": "data", "mountPath": format!("{MNT}/data")},
            {"name": "mem", "mountPath": format!("{MNT}/mem")},
        ]))],
    }));
    PodRunner::new(p)
        .workdir(dir)
        .grace(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(100))
        .eviction_period(Duration::from_millis(100))
        .start()
        .unwrap()
        .wait(DEADLINE)
        .unwrap()
}

#[test]
fn a_disk_backed_empty_dir_past_its_size_limit_takes_the_writes_and_the_pod_is_evicted() {
    // The writes are not limited (no ENOSPC at 1 MiB, as a tmpfs would give); the pod is
    // evicted at the next pass, its container killed and, whatever the policy, not
    // restarted. The container would sleep past the test's deadline if it were not.
    let script = format!("dd if=/dev/zero of={MNT}/data/big bs=1M count=3 && exec sleep 300",);
    for restart in ["Always", "Never"] {
        let tmp = tempfile::tempdir().unwrap();
        let r = run_with_limits(json!({"sizeLimit": "1024Ki"}), &script, restart, tmp.path());
        assert_eq!(r.phase, Phase::Failed, "{restart}: {}", r.logs());
        assert_eq!(r.reason.as_deref(), Some("Evicted"), "{}", r.logs());
        assert_eq!(
            r.message.as_deref(),
            Some("Usage of EmptyDir volume \"data\" exceeds the limit \"1Mi\". ")
        );
        let w = r.container("writer").unwrap();
        assert!(w.signal.is_some() && w.exit_code.is_none(), "{}", r.logs());
        assert_eq!(w.restarts, 0, "{restart}: {}", r.logs());
        assert!(!read(&w.log).contains("No space left"), "{}", r.logs());
        // The volume is a plain directory of the pod's, no tmpfs.
        let volume = tmp.path().join("volumes/data");
        assert!(!host_mount_points().contains(&volume));
    }
}

#[test]
fn usage_is_counted_as_du_counts_it_and_a_memory_empty_dir_is_a_tmpfs_of_its_limit() {
    // An 8 MiB sparse file and three links to one 600 KiB file use about 600 KiB: no
    // eviction under 1Mi. The memory-backed emptyDir refuses the write past 1 MiB.
    let script = format!(
        "cd {MNT}/data && truncate -s 8M sparse && dd if=/dev/zero of=a bs=1K count=600 && ln a b && ln a c && sync \
         && (dd if=/dev/zero of={MNT}/mem/f bs=1M count=3 2> {MNT}/data/mem.err; echo $? > {MNT}/data/mem.status) \
         && sleep 1"
    );
    let tmp = tempfile::tempdir().unwrap();
    let r = run_with_limits(json!({"sizeLimit": "1Mi"}), &script, "Never", tmp.path());
    assert_eq!(r.phase, Phase::Succeeded, "{}", r.logs());
    assert_eq!((r.reason, r.message), (None, None));
    let data = tmp.path().join("volumes/data");
    assert_ne!(read(data.join("mem.status")).trim(), "0");
    assert!(read(data.join("mem.err")).contains("No space left"));
}

#[test]
fn pod_run_binary_prints_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("pod.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: x\n    command: [sh, -c, 'echo $GREETING; exit 4']\n",
    )
    .unwrap();
    let work = tmp.path().join("work");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pod-run"))
        .arg(&manifest)
        .args([
            "--workdir",
            work.to_str().unwrap(),
            "--env",
            "GREETING=hi",
            "--grace-secs",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["phase"], "Failed");
    assert_eq!(report["containers"][0]["exit_code"], 4);
    assert_eq!(read(work.join("logs/c.log")), "hi\n");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pod-run"))
        .arg(tmp.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
