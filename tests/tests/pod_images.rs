//! The pod runner's image mode: containers run from OCI images with runc, as a kubelet
//! runs them. The agent's image is the one scripts/build-images.sh writes
//! (target/images/datamon-agent-<version>.oci.tar); the application's image is not ours:
//! Debian's busybox-static, made into an image here with umoci. Checked: the kubelet's
//! command/args rules over the image's Entrypoint and Cmd, the securityContext as runc
//! applies it (runAsNonRoot refused, runAsUser, readOnlyRootFilesystem, capabilities), and
//! pods laid out by the webhook: the wrapper installed into the application's image,
//! downloads and outputs, a FUSE mount served by the privileged agent, and the fault matrix
//! in both layouts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use datamon_e2e::app_image::AppImage;
use datamon_e2e::injected::{self, Scratch, AGENT_IMAGE};
use datamon_e2e::pod::{Phase, PodReport, PodRunner, RunningPod, Signal};
use datamon_e2e::{noise, wait_until, World, DEADLINE, MIB};
use serde_json::{json, Value};

/// The application image's name in the pods.
const SHELL_IMAGE: &str = "shell";
/// Where the pods' volumes are mounted.
const ROOT: &str = "/mnt/datamon-e2e";
/// Short deadlines, so that no failure test takes long.
const DEADLINES: &str = "{ready: 20s, start: 20s, upload: 30s, grace: 2s}";

fn p(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

/// An archive scripts/build-images.sh writes, which must exist.
fn built_image(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root
        .join("target/images")
        .join(format!("{name}-{}.oci.tar", env!("CARGO_PKG_VERSION")));
    assert!(
        path.is_file(),
        "{} is missing: run `just images` (scripts/build-images.sh) first",
        path.display()
    );
    path
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image that is not ours: Debian's busybox-static as `/bin/busybox` with its applets
/// linked in `/bin`, `/tmp`, Entrypoint `["/bin/echo", "entrypoint"]` and Cmd `["cmd"]`,
/// user root; an OCI archive made with umoci and skopeo, once per test process, always
/// with the same digest, at `$TMPDIR/datamon-e2e-shell.oci.tar`.
fn shell_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            // Built in a scratch directory, then renamed into one path that every test
            // process shares: the bytes are the same each time, so the runner's cache
            // keeps one entry for it, and nothing is left behind per process.
            let scratch = tempfile::tempdir().unwrap();
            let built = build_shell_image(scratch.path(), "PATH=/bin");
            let shared = std::env::temp_dir().join("datamon-e2e-shell.oci.tar");
            std::fs::rename(&built, &shared).unwrap();
            shared
        })
        .clone()
}

/// The shell image's archive, made in `dir` with the environment `env` (`K=V`).
fn build_shell_image(dir: &Path, env: &str) -> PathBuf {
    AppImage {
        entrypoint: &["/bin/echo", "entrypoint"],
        cmd: &["cmd"],
        env: &[env],
    }
    .build(dir)
    .unwrap()
}

/// Makes every directory under `dir` writable by anyone and every file readable, so that
/// the non-root agent (65532) can use a store the test (root) made.
fn open_up(dir: &Path) {
    sh(Command::new("chmod").args(["-R", "a+rwX"]).arg(dir));
}

/// A runner of `pod` (JSON) whose images are the agent's and the shell's.
fn runner(pod: &Value, workdir: &Path) -> PodRunner {
    let pod = serde_json::from_value(pod.clone()).unwrap();
    PodRunner::new(pod)
        .workdir(workdir)
        .oci_image(AGENT_IMAGE, built_image("datamon-agent"))
        .oci_image(SHELL_IMAGE, shell_image())
        .grace(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(200))
}

/// A one-container pod of the shell image with `container` (fields of a Container) and
/// the pod's `securityContext`, and the host directory `seen` at /seen (hostPath) and an
/// emptyDir at /scratch.
fn shell_pod(container: Value, pod_security: Value, seen: &Path) -> Value {
    let mut c = json!({
        "name": "app", "image": SHELL_IMAGE,
        "volumeMounts": [{"name": "seen", "mountPath": "/seen"},
                         {"name": "scratch", "mountPath": "/scratch"}],
    });
    c.as_object_mut()
        .unwrap()
        .extend(container.as_object().unwrap().clone());
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "shell", "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": pod_security,
            "containers": [c],
            "volumes": [{"name": "seen", "hostPath": {"path": seen.display().to_string()}},
                        {"name": "scratch", "emptyDir": {}}],
        },
    })
}

fn run_shell(container: Value, pod_security: Value) -> (PodReport, Scratch) {
    let s = Scratch::new();
    std::fs::set_permissions(&s.seen, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pod = shell_pod(container, pod_security, &s.seen);
    let report = runner(&pod, &s.pod)
        .start()
        .unwrap()
        .wait(DEADLINE)
        .unwrap();
    (report, s)
}

fn log(report: &PodReport, container: &str) -> String {
    std::fs::read_to_string(&report.container(container).unwrap().log).unwrap_or_default()
}

fn seen(s: &Scratch, file: &str) -> String {
    std::fs::read_to_string(s.seen.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn command_and_args_replace_the_images_entrypoint_and_cmd_as_the_kubelet_does() {
    for (container, printed) in [
        (json!({}), "entrypoint cmd"),
        (json!({"args": ["mine"]}), "entrypoint mine"),
        (json!({"command": ["/bin/echo", "own"]}), "own"),
        (
            json!({"command": ["/bin/echo", "own"], "args": ["args"]}),
            "own args",
        ),
    ] {
        let (report, _s) = run_shell(container.clone(), json!({}));
        assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
        assert_eq!(log(&report, "app").trim(), printed, "{container}");
    }
}

#[test]
fn run_as_non_root_with_a_root_image_user_is_never_started_with_the_kubelets_reason() {
    let script = json!({"command": ["sh", "-c", "touch /seen/ran"]});
    for (pod_sc, c_sc, says) in [
        (
            json!({"runAsNonRoot": true}),
            json!({}),
            "container has runAsNonRoot and image will run as root",
        ),
        (
            json!({"runAsNonRoot": true, "runAsUser": 1000}),
            json!({"runAsUser": 0}),
            "container's runAsUser breaks non-root policy",
        ),
    ] {
        let mut c = script.clone();
        c["securityContext"] = c_sc;
        // The kubelet keeps the pod Pending and retries the container for ever; the
        // runner, with nothing else running, stops watching at once.
        let (report, s) = run_shell(c, pod_sc);
        assert_eq!(report.phase, Phase::Pending, "{}", report.logs());
        assert_eq!(
            (report.reason.clone(), report.message.clone()),
            (None, None)
        );
        let app = report.container("app").unwrap();
        assert!(!app.started, "{}", report.logs());
        assert_eq!(app.exit_code, None);
        let (reason, message) = app.waiting.clone().unwrap();
        assert_eq!(reason, "CreateContainerConfigError");
        assert!(message.starts_with(says), "{message}");
        assert!(!s.seen.join("ran").exists());
    }
    // The pod's other container is started as the kubelet starts it, runs and exits 0;
    // the pod stays Pending all the same (getPhase: a container waiting that never ran).
    let s = Scratch::new();
    std::fs::set_permissions(&s.seen, std::fs::Permissions::from_mode(0o777)).unwrap();
    let root =
        json!({"command": ["sh", "-c", "touch /seen/ran"], "securityContext": {"runAsUser": 0}});
    let mut pod = shell_pod(
        root,
        json!({"runAsNonRoot": true, "runAsUser": 1000}),
        &s.seen,
    );
    let mut other = pod["spec"]["containers"][0].clone();
    other["name"] = json!("other");
    other["command"] = json!(["sh", "-c", "id -u > /seen/other"]);
    other["securityContext"] = json!({});
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(other);
    let report = runner(&pod, &s.pod)
        .start()
        .unwrap()
        .wait(DEADLINE)
        .unwrap();
    assert_eq!(report.phase, Phase::Pending, "{}", report.logs());
    assert_eq!(report.exit_code("other"), Some(0), "{}", report.logs());
    assert_eq!(seen(&s, "other"), "1000");
    let app = report.container("app").unwrap();
    assert!(!app.started && app.waiting.is_some(), "{}", report.logs());
    assert!(!s.seen.join("ran").exists());
    // The pod's runAsNonRoot with a non-root runAsUser starts.
    let (report, s) = run_shell(
        json!({"command": ["sh", "-c", "id -u > /seen/uid"]}),
        json!({"runAsNonRoot": true, "runAsUser": 1000}),
    );
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(seen(&s, "uid"), "1000");
}

#[test]
fn run_as_user_group_and_fs_group_are_the_processs_and_own_its_files() {
    let script = "id -u > /seen/uid && id -g > /seen/gid && id -G > /seen/groups && \
                  echo x > /scratch/f && ls -ln /scratch/f > /seen/owner && ls -lnd /scratch > /seen/dir";
    let (report, s) = run_shell(
        json!({"command": ["sh", "-c", script], "securityContext": {"runAsUser": 4242}}),
        json!({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}),
    );
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(seen(&s, "uid"), "4242", "the container's runAsUser wins");
    assert_eq!(seen(&s, "gid"), "3000", "the pod's runAsGroup is inherited");
    assert_eq!(seen(&s, "groups"), "3000 2000");
    // The emptyDir is the fsGroup's, setgid: a new file gets the group.
    let owner = seen(&s, "owner");
    let f: Vec<&str> = owner.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("4242", "2000"), "{owner}");
    assert!(
        seen(&s, "dir").starts_with("drwxrwsrwx"),
        "{}",
        seen(&s, "dir")
    );
}

#[test]
fn read_only_root_file_system_refuses_writes_to_the_root_but_not_to_volumes() {
    let script = "(touch /x 2>/dev/null && echo rw || echo ro) > /seen/root && \
                  echo v > /scratch/f && cat /scratch/f > /seen/volume";
    let (report, s) = run_shell(
        json!({"command": ["sh", "-c", script], "securityContext": {"readOnlyRootFilesystem": true}}),
        json!({}),
    );
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(seen(&s, "root"), "ro");
    assert_eq!(seen(&s, "volume"), "v");
    // Without it, the root is the container's own overlay: writable.
    let (report, s) = run_shell(json!({"command": ["sh", "-c", script]}), json!({}));
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(seen(&s, "root"), "rw");
}

/// The effective capabilities of a root process in a container with `security`.
fn effective_caps(security: Value) -> String {
    let (report, s) = run_shell(
        json!({"command": ["sh", "-c", "grep CapEff /proc/self/status > /seen/caps"],
               "securityContext": security}),
        json!({}),
    );
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    seen(&s, "caps")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn capabilities_are_the_runtimes_defaults_minus_drop_plus_add_or_all_when_privileged() {
    // containerd's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(effective_caps(json!({})), "00000000a80425fb");
    assert_eq!(
        effective_caps(json!({"capabilities": {"drop": ["ALL"]}})),
        "0000000000000000"
    );
    // NET_ADMIN is bit 12.
    assert_eq!(
        effective_caps(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}})),
        "0000000000001000"
    );
    // Privileged: every capability the runner has (this machine's root lacks SYS_RESOURCE).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert_eq!(effective_caps(json!({"privileged": true})), bounding);
}

/// The environment variable that makes [`child_runs_a_pod_of_the_shell_archive`] run:
/// the archive to register as the shell image.
const CHILD_ARCHIVE: &str = "DATAMON_E2E_CHILD_ARCHIVE";

/// Run in a child process by
/// [`the_image_cache_is_shared_by_parallel_processes_and_pruned_on_a_rebuild`]: one pod of
/// the archive named by [`CHILD_ARCHIVE`] (with the child's own `TMPDIR`, so its own cache).
#[test]
#[ignore = "run in child processes by the image cache test"]
fn child_runs_a_pod_of_the_shell_archive() {
    let Some(archive) = std::env::var_os(CHILD_ARCHIVE) else {
        return;
    };
    let s = Scratch::new();
    let pod = shell_pod(
        json!({"command": ["sh", "-c", "echo ran > /seen/ran"]}),
        json!({}),
        &s.seen,
    );
    let report = PodRunner::new(serde_json::from_value(pod).unwrap())
        .workdir(&s.pod)
        .oci_image(SHELL_IMAGE, PathBuf::from(archive))
        .start()
        .unwrap()
        .wait(DEADLINE)
        .unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(seen(&s, "ran"), "ran");
}

/// Runs `n` child processes of [`child_runs_a_pod_of_the_shell_archive`] at once with
/// `tmp` as `TMPDIR`, and checks that each ran its pod.
fn children_run_pods(n: usize, tmp: &Path, archive: &Path) {
    let test = "child_runs_a_pod_of_the_shell_archive";
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", test, "--test-threads", "1"])
                .env("TMPDIR", tmp)
                .env(CHILD_ARCHIVE, archive)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        let status = wait_until("a child's pod to end", || child.try_wait().unwrap());
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert!(
            status.success() && out.contains("1 passed"),
            "{status}: {out}"
        );
    }
}

/// The directories of the image cache under `tmp` (not its lock file).
fn cache_entries(tmp: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(tmp.join("datamon-pod-images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn the_image_cache_is_shared_by_parallel_processes_and_pruned_on_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("shell.oci.tar");
    std::fs::copy(shell_image(), &archive).unwrap();
    // Three processes at once unpack the image once, under the cache's lock.
    children_run_pods(3, tmp.path(), &archive);
    let first = cache_entries(tmp.path());
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("sha256-"), "{first:?}");
    let entry = tmp.path().join("datamon-pod-images").join(&first[0]);
    assert!(entry.join("done").is_file());
    // Another image at the same path (rebuilt): its entry replaces the old one, which no
    // process holds any more.
    let rebuilt = tempfile::tempdir().unwrap();
    let other = build_shell_image(rebuilt.path(), "PATH=/bin:/usr/bin");
    std::fs::copy(other, &archive).unwrap();
    children_run_pods(2, tmp.path(), &archive);
    let second = cache_entries(tmp.path());
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first, "the rebuilt image reused the old entry");
}

/// How the agent runs in the pod (`datamon.io/native-sidecar`).
#[derive(Clone, Copy, Debug)]
enum Layout {
    Native,
    Classic,
}

/// The webhook's pod (`mutate_pod`) for a user's pod of the shell image with
/// `annotations`, whose application container `app` runs `script` and sees `seen` at
/// `ROOT/seen`; the agent's containers (and the application's) also see the world's
/// directory (its store and HOME) at the same path, a hostPath as a cluster's store would
/// be a network address.
fn injected_pod(
    world: &World,
    annotations: &[(String, String)],
    layout: Layout,
    script: &str,
    seen: &Path,
) -> Value {
    let native = match layout {
        Layout::Native => "on",
        Layout::Classic => "off",
    };
    let mut all: BTreeMap<String, String> = [
        ("datamon.io/coordination", p("run")),
        ("datamon.io/deadlines", DEADLINES.to_string()),
        ("datamon.io/image", AGENT_IMAGE.to_string()),
        ("datamon.io/native-sidecar", native.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    all.extend(annotations.iter().cloned());
    let mut user = injected::user_pod(&all, &[("app", script)], seen, &p("seen"));
    user["spec"]["containers"][0]["image"] = json!(SHELL_IMAGE);
    let mut pod = injected::inject(&user);
    let world_dir = world.tmp.path().display().to_string();
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "world", "hostPath": {"path": world_dir}}));
    for key in ["initContainers", "containers"] {
        for c in pod["spec"][key].as_array_mut().into_iter().flatten() {
            c["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "world", "mountPath": world_dir}));
        }
    }
    open_up(world.tmp.path());
    std::fs::set_permissions(seen, std::fs::Permissions::from_mode(0o777)).unwrap();
    pod
}

/// A runner for an injected pod: the world's environment in every container.
fn injected_runner(world: &World, pod: &Value, workdir: &Path) -> PodRunner {
    let mut r = runner(pod, workdir);
    for (k, v) in world.env_vars() {
        r = r.env(k.clone(), v.clone());
    }
    r
}

fn start(world: &World, pod: &Value, dir: &Path) -> RunningPod {
    injected_runner(world, pod, dir).start().unwrap()
}

fn run(world: &World, pod: &Value, dir: &Path) -> PodReport {
    start(world, pod, dir).wait(DEADLINE).unwrap()
}

fn annotation(key: &str, value: String) -> (String, String) {
    (key.to_string(), value)
}

fn input(name: &str, repo: &str, path: &str, extra: &str) -> (String, String) {
    let sep = if extra.is_empty() { "" } else { ", " };
    annotation(
        &format!("datamon.io/input.{name}"),
        format!("{{repo: {repo}, path: {}{sep}{extra}}}", p(path)),
    )
}

/// The output `result`: `ROOT/data/out` uploaded to the repo `results` (created).
fn results_output(world: &World) -> (String, String) {
    world.create_repo("results", "test");
    annotation(
        "datamon.io/output.result",
        format!("{{repo: results, path: {}}}", p("data/out")),
    )
}

#[test]
fn the_wrapper_installed_into_an_image_not_ours_downloads_and_uploads() {
    for layout in [Layout::Native, Layout::Classic] {
        let world = World::local();
        let raw = noise(2 * MIB + 7, 3);
        let raw_id = world.seed(
            "raw",
            &[("a.txt", b"hello\n".to_vec()), ("d/raw.bin", raw.clone())],
        );
        let annotations = [input("raw", "raw", "data/raw", ""), results_output(&world)];
        let s = Scratch::new();
        let script = format!(
            "cp -r {raw} {seen}/raw && mkdir -p {out}/sub && printf result > {out}/r.txt && cp {raw}/d/raw.bin {out}/sub/copy.bin && id -u > {seen}/uid",
            raw = p("data/raw"), out = p("data/out"), seen = p("seen"),
        );
        let pod = injected_pod(&world, &annotations, layout, &script, &s.seen);
        let report = run(&world, &pod, &s.pod);
        assert_eq!(
            report.phase,
            Phase::Succeeded,
            "{layout:?}: {}",
            report.logs()
        );
        assert_eq!(report.exit_code("datamon-install"), Some(0));
        assert_eq!(report.exit_code("app"), Some(0));
        assert_eq!(report.exit_code("datamon"), Some(0), "{}", report.logs());
        assert_eq!(std::fs::read(s.seen.join("raw/a.txt")).unwrap(), b"hello\n");
        assert!(
            std::fs::read(s.seen.join("raw/d/raw.bin")).unwrap() == raw,
            "downloaded bytes differ"
        );
        let m = report.message("app");
        assert_eq!(m["exit_code"], 0, "{m}");
        assert_eq!(m["inputs"]["raw"], raw_id.as_str(), "{m}");
        let id = m["outputs"]["result"].as_str().unwrap().to_string();
        assert_eq!(world.bundles("results"), vec![id.clone()]);
        let files = world.bundle_files("results", &id);
        let want = vec![
            ("r.txt".to_string(), b"result".to_vec()),
            ("sub/copy.bin".to_string(), raw.clone()),
        ];
        assert!(
            files == want,
            "the saved bundle holds {:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert_eq!(report.message("datamon")["outputs"]["result"], id.as_str());
        assert_eq!(world.bundles("raw"), vec![raw_id]);
    }
}

#[test]
fn a_mounted_input_is_served_by_the_privileged_agent_image_over_fuse() {
    let world = World::local();
    let img = noise(3 * MIB + 1, 4);
    let img_id = world.seed(
        "img",
        &[("b.bin", img.clone()), ("c/small.txt", b"small\n".to_vec())],
    );
    let annotations = [input("img", "img", "fuse/img", "mode: mount")];
    let s = Scratch::new();
    let script = format!(
        "cp {img}/b.bin {seen}/b.bin && cp {img}/c/small.txt {seen}/small.txt && (touch {img}/x 2>/dev/null && echo writable || echo read-only) > {seen}/mode",
        img = p("fuse/img"), seen = p("seen"),
    );
    let pod = injected_pod(&world, &annotations, Layout::Native, &script, &s.seen);
    let report = run(&world, &pod, &s.pod);
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert!(
        std::fs::read(s.seen.join("b.bin")).unwrap() == img,
        "mounted bytes differ"
    );
    assert_eq!(std::fs::read(s.seen.join("small.txt")).unwrap(), b"small\n");
    assert_eq!(
        std::fs::read_to_string(s.seen.join("mode")).unwrap().trim(),
        "read-only"
    );
    let m = report.message("app");
    assert_eq!(m["inputs"]["img"], img_id.as_str(), "{m}");
    assert_eq!(report.exit_code("datamon"), Some(0), "{}", report.logs());
    assert_eq!(world.bundles("img"), vec![img_id]);
}

#[test]
fn fault_an_input_label_that_does_not_exist_ends_the_pod_before_the_app_with_no_bundle() {
    for layout in [Layout::Native, Layout::Classic] {
        let world = World::local();
        let raw_id = world.seed("raw", &[("a.txt", b"a".to_vec())]);
        let annotations = [
            input("raw", "raw", "data/raw", "label: no-such-label"),
            results_output(&world),
        ];
        let s = Scratch::new();
        let script = format!("touch {seen}/ran", seen = p("seen"));
        let pod = injected_pod(&world, &annotations, layout, &script, &s.seen);
        let report = run(&world, &pod, &s.pod);
        assert_input_fault(layout, &report, &s, &world, &raw_id, &["no-such-label"]);
    }
}

#[test]
fn fault_the_app_exiting_3_fails_the_pod_with_3_and_uploads_nothing() {
    for layout in [Layout::Native, Layout::Classic] {
        let world = World::local();
        let annotations = [results_output(&world)];
        let s = Scratch::new();
        let script = format!(
            "mkdir -p {out} && echo partial > {out}/r.txt && exit 3",
            out = p("data/out")
        );
        let pod = injected_pod(&world, &annotations, layout, &script, &s.seen);
        let report = run(&world, &pod, &s.pod);
        assert_eq!(report.phase, Phase::Failed, "{layout:?}: {}", report.logs());
        assert_eq!(report.exit_code("app"), Some(3), "{}", report.logs());
        assert_eq!(report.exit_code("datamon"), Some(0), "{}", report.logs());
        assert_eq!(report.message("datamon")["reason"]["code"], "app_failed");
        assert_eq!(report.message("app")["exit_code"], 3);
        assert!(world.bundles("results").is_empty(), "no bundle may be made");
    }
}

#[test]
fn fault_the_sidecar_killed_while_the_app_runs_stops_the_app_and_fails_the_pod() {
    for layout in [Layout::Native, Layout::Classic] {
        let world = World::local();
        world.seed("raw", &[("a.txt", b"a".to_vec())]);
        let annotations = [input("raw", "raw", "data/raw", ""), results_output(&world)];
        let s = Scratch::new();
        let script = format!("touch {seen}/running && sleep 300", seen = p("seen"));
        let pod = injected_pod(&world, &annotations, layout, &script, &s.seen);
        let running = start(&world, &pod, &s.pod);
        wait_until("the app to run", || s.seen.join("running").exists());
        running.signal("datamon", Signal::SIGKILL).unwrap();
        let report = running.wait(DEADLINE).unwrap();
        assert_eq!(report.phase, Phase::Failed, "{layout:?}: {}", report.logs());
        assert_eq!(
            report.container("datamon").unwrap().signal,
            Some(9),
            "{}",
            report.logs()
        );
        assert_eq!(report.exit_code("app"), Some(69), "{}", report.logs());
        let m = report.message("app");
        assert_eq!(m["reason"]["code"], "sidecar_died", "{m}");
        assert!(world.bundles("results").is_empty(), "no bundle may be made");
    }
}

/// The name of the volume the agent's container `datamon` mounts at `path`.
fn volume_at(pod: &Value, path: &str) -> String {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .filter(|c| c["name"] == "datamon")
        .filter_map(|c| c["volumeMounts"].as_array())
        .flatten()
        .find(|m| m["mountPath"] == path)
        .and_then(|m| m["name"].as_str())
        .unwrap_or_else(|| panic!("the agent mounts nothing at {path}:\n{pod:#}"))
        .to_string()
}

/// The checks every data fault of an input shares: the pod failed before the application
/// started (`ran` never touched), the wrapper said 69 and `sidecar_failed`, the agent 1 and
/// `input_failed` with no restart, its message naming the input `raw` and holding each of
/// `says` (case-insensitive); no bundle in `results`, and the input's bundle still the one.
fn assert_input_fault(
    layout: Layout,
    report: &PodReport,
    s: &Scratch,
    world: &World,
    raw_id: &str,
    says: &[&str],
) {
    let side =
        report.assert_failed_before_the_app("datamon", &s.seen.join("ran"), &format!("{layout:?}"));
    assert_eq!(side["reason"]["code"], "input_failed", "{layout:?}: {side}");
    let message = side["reason"]["message"].as_str().unwrap().to_lowercase();
    for want in ["raw"].iter().chain(says) {
        assert!(message.contains(want), "{layout:?}: no {want:?} in {side}");
    }
    assert!(world.bundles("results").is_empty(), "no bundle may be made");
    assert_eq!(world.bundles("raw"), vec![raw_id.to_string()]);
}

#[test]
fn fault_a_corrupt_leaf_fails_the_input_before_the_app_and_leaves_no_file() {
    for layout in [Layout::Native, Layout::Classic] {
        let world = World::local();
        let big = noise(3 * MIB, 11);
        let raw_id = world.seed("raw", &[("big.bin", big), ("good.txt", b"good".to_vec())]);
        // The first leaf of big.bin is the one 2 MiB object of the blob bucket: other bytes
        // of the same size, as a damaged disk or a bad copy would leave them.
        let leaf = world.blob_of_len(2 * MIB, "big.bin's first leaf");
        let mut bytes = std::fs::read(&leaf).unwrap();
        bytes[777] ^= 0x55;
        std::fs::write(&leaf, &bytes).unwrap();
        let annotations = [input("raw", "raw", "data/raw", ""), results_output(&world)];
        let s = Scratch::new();
        let script = format!("touch {seen}/ran", seen = p("seen"));
        let pod = injected_pod(&world, &annotations, layout, &script, &s.seen);
        let volume = volume_at(&pod, &p("data/raw"));
        let report = run(&world, &pod, &s.pod);
        assert_input_fault(
            layout,
            &report,
            &s,
            &world,
            &raw_id,
            &["big.bin", "corrupt"],
        );
        // No half file in place: neither big.bin nor a temporary file of the download.
        let input_dir = s.pod.join("volumes").join(&volume);
        assert!(input_dir.is_dir(), "{}", input_dir.display());
        let left: Vec<String> = datamon_e2e::list_files(&input_dir)
            .iter()
            .map(|f| f.display().to_string())
            .filter(|f| f.contains("big.bin") || f.contains("partial"))
            .collect();
        assert!(left.is_empty(), "{layout:?}: left in the input: {left:?}");
    }
}

/// A world whose repo `raw` holds a 6 MiB file, and the webhook's pod (in `layout`) that
/// downloads it into an emptyDir of `empty_dir` (its fields, with a 4 MiB `sizeLimit`), uploads
/// `results`, and whose app runs `script`: the world, the input's bundle, the scratch
/// directories, the pod and the input volume's name.
fn big_input_pod(
    layout: Layout,
    empty_dir: &Value,
    script: &str,
) -> (World, String, Scratch, Value, String) {
    let world = World::local();
    let raw_id = world.seed("raw", &[("big.bin", noise(6 * MIB, 12))]);
    let annotations = [input("raw", "raw", "data/raw", ""), results_output(&world)];
    let s = Scratch::new();
    let mut pod = injected_pod(&world, &annotations, layout, script, &s.seen);
    let volume = volume_at(&pod, &p("data/raw"));
    for v in pod["spec"]["volumes"].as_array_mut().unwrap() {
        if v["name"] == volume.as_str() {
            v["emptyDir"] = empty_dir.clone();
        }
    }
    (world, raw_id, s, pod, volume)
}

#[test]
fn fault_the_inputs_memory_empty_dir_full_fails_the_input_before_the_app() {
    // medium: Memory is the kubelet's tmpfs of its sizeLimit: the download sees ENOSPC.
    for layout in [Layout::Native, Layout::Classic] {
        let memory = json!({"medium": "Memory", "sizeLimit": "4Mi"});
        let script = format!("touch {seen}/ran", seen = p("seen"));
        let (world, raw_id, s, pod, _) = big_input_pod(layout, &memory, &script);
        let report = run(&world, &pod, &s.pod);
        assert_input_fault(layout, &report, &s, &world, &raw_id, &["no space left"]);
    }
}

#[test]
fn fault_the_inputs_disk_empty_dir_past_its_size_limit_evicts_the_pod_and_uploads_nothing() {
    // A kubelet does not limit the writes to a disk-backed emptyDir: the download goes on
    // past 4 MiB, and its eviction manager evicts the pod at its next pass (every 500 ms
    // here), during the download or after it. The app would sleep past the test's
    // deadline: only the eviction ends the pod.
    for layout in [Layout::Native, Layout::Classic] {
        let script = format!("touch {seen}/ran && sleep 300", seen = p("seen"));
        let disk = json!({"sizeLimit": "4Mi"});
        let (world, raw_id, s, pod, volume) = big_input_pod(layout, &disk, &script);
        let report = injected_runner(&world, &pod, &s.pod)
            .eviction_period(Duration::from_millis(500))
            .start()
            .unwrap()
            .wait(DEADLINE)
            .unwrap();
        let logs = || report.logs();
        assert_eq!(report.phase, Phase::Failed, "{layout:?}: {}", logs());
        assert_eq!(report.reason.as_deref(), Some("Evicted"), "{}", logs());
        let message = format!("Usage of EmptyDir volume {volume:?} exceeds the limit \"4Mi\". ");
        assert_eq!(report.message.as_deref(), Some(message.as_str()));
        assert_ne!(report.exit_code("app"), Some(0), "{}", logs());
        assert!(
            !logs().to_lowercase().contains("no space left"),
            "{}",
            logs()
        );
        // Nothing uploaded and nothing half made: the pod was evicted before any output.
        assert!(world.bundles("results").is_empty(), "no bundle may be made");
        assert_eq!(world.bundles("raw"), vec![raw_id]);
    }
}

/// A free TCP port on localhost (the containers share the host's network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pod with the database `warehouse` on `port` from the agent image with PostgreSQL;
/// `source`/`output` fields of the annotation; the application (the same image, for its
/// psql and dash) runs `sql` statements with the generated password.
fn database_pod(world: &World, port: u16, fields: &str, sql: &[&str], seen: &Path) -> Value {
    // `read` fails at a last line without a newline, having set the variable.
    let password = "{ read -r PGPASSWORD < \"$DATAMON_DB_WAREHOUSE_PASSWORD_FILE\" || [ -n \"$PGPASSWORD\" ]; } && export PGPASSWORD";
    let statements: Vec<String> = sql
        .iter()
        .map(|s| {
            format!(
                "psql -X -A -t -v ON_ERROR_STOP=1 -c \"{s}\" >> {}/out",
                p("seen")
            )
        })
        .collect();
    let script = format!("{password} && {}", statements.join(" && "));
    let annotations = [
        annotation(
            "datamon.io/database.warehouse",
            format!("{{port: {port}, owner: {{role: app}}, {fields}}}"),
        ),
        annotation("datamon.io/postgres-image", POSTGRES_IMAGE.to_string()),
    ];
    let mut pod = injected_pod(world, &annotations, Layout::Native, &script, seen);
    pod["spec"]["containers"][0]["image"] = json!(POSTGRES_IMAGE);
    pod
}

/// The agent image with PostgreSQL, as pods name it.
const POSTGRES_IMAGE: &str = "datamon-agent-postgres";

#[test]
fn a_database_from_the_postgres_image_runs_as_non_root_and_its_rows_are_saved() {
    let world = World::local();
    world.create_repo("pg", "warehouse");
    let s = Scratch::new();
    let pod = database_pod(
        &world,
        free_port(),
        "output: {repo: pg, label: current}",
        &[
            "create table t (i int primary key, s text)",
            "insert into t select g, md5(g::text) from generate_series(1, 1000) g",
        ],
        &s.seen,
    );
    let running = injected_runner(&world, &pod, &s.pod)
        .oci_image(POSTGRES_IMAGE, built_image(POSTGRES_IMAGE))
        .start()
        .unwrap();
    let data = running.volume_dir("datamon-postgres").unwrap();
    let report = running.wait(DEADLINE).unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    // The server ran as the agent's user (65532, the image's nonroot): its files are its.
    let meta = std::fs::metadata(data.join("warehouse/data/PG_VERSION")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65532);
    let id = report.message("datamon")["outputs"]["warehouse"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", report.logs()))
        .to_string();
    assert_eq!(world.bundles("pg"), vec![id.clone()]);

    // The next pod restores the saved bundle by its label and sees every row.
    let s2 = Scratch::new();
    let pod = database_pod(
        &world,
        free_port(),
        "source: {repo: pg, label: current}, database: warehouse",
        &["select count(*), sum(i) from t"],
        &s2.seen,
    );
    let report = injected_runner(&world, &pod, &s2.pod)
        .oci_image(POSTGRES_IMAGE, built_image(POSTGRES_IMAGE))
        .start()
        .unwrap()
        .wait(DEADLINE)
        .unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(
        std::fs::read_to_string(s2.seen.join("out")).unwrap().trim(),
        "1000|500500"
    );
    assert_eq!(
        report.message("datamon")["inputs"]["warehouse"],
        id.as_str()
    );
    assert_eq!(
        world.bundles("pg"),
        vec![id],
        "a read-only database saved a bundle"
    );
}

#[test]
fn a_hardened_pod_with_a_mounted_input_and_an_output_runs_as_its_user() {
    // The pod sets runAsNonRoot and runAsUser 1000: the application (a root image) runs as
    // 1000, the install container too, the agent as root by its own explicit context.
    let world = World::local();
    let img = noise(MIB + 9, 5);
    let img_id = world.seed("img", &[("b.bin", img.clone())]);
    let annotations = [
        input("img", "img", "fuse/img", "mode: mount"),
        results_output(&world),
    ];
    let s = Scratch::new();
    let script = format!(
        "id -u > {seen}/uid && mkdir -p {out} && cp {img}/b.bin {out}/b.bin",
        img = p("fuse/img"),
        out = p("data/out"),
        seen = p("seen"),
    );
    let mut pod = injected_pod(&world, &annotations, Layout::Native, &script, &s.seen);
    pod["spec"]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000});
    let report = run(&world, &pod, &s.pod);
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    assert_eq!(seen(&s, "uid"), "1000");
    let id = report.message("app")["outputs"]["result"]
        .as_str()
        .unwrap()
        .to_string();
    let files = world.bundle_files("results", &id);
    assert!(
        files == vec![("b.bin".to_string(), img)],
        "the saved bundle differs"
    );
    assert_eq!(world.bundles("img"), vec![img_id]);
}

/// Milliseconds from `start()` to the application's first command, for a pod with a
/// one-file input: the time a user waits before their code runs.
fn pod_start_to_app_start(image_mode: bool) -> f64 {
    let world = World::local();
    world.seed("raw", &[("one.bin", noise(MIB, 7))]);
    let annotations = [input("raw", "raw", "data/raw", "")];
    let s = Scratch::new();
    let script = format!("touch {seen}/started", seen = p("seen"));
    let pod = injected_pod(&world, &annotations, Layout::Native, &script, &s.seen);
    let started = s.seen.join("started");
    let t0 = std::time::Instant::now();
    let running = if image_mode {
        start(&world, &pod, &s.pod)
    } else {
        injected::runner(&world, &pod, &s.pod).start().unwrap()
    };
    let deadline = t0 + DEADLINE;
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the app never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let report = running.wait(DEADLINE).unwrap();
    assert_eq!(report.phase, Phase::Succeeded, "{}", report.logs());
    ms
}

/// scripts/bench-pod.sh: `BENCH_POD_RUNS` (5) pods of each mode after a warm-up each;
/// prints the medians and their ratio.
#[test]
#[ignore = "a benchmark: scripts/bench-pod.sh"]
fn bench_pod_start_to_app_start() {
    let runs: usize = std::env::var("BENCH_POD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let median = |image_mode: bool| {
        pod_start_to_app_start(image_mode);
        let mut v: Vec<f64> = (0..runs)
            .map(|_| pod_start_to_app_start(image_mode))
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let host = median(false);
    let image = median(true);
    println!(
        "pod start -> app start, one 1 MiB file downloaded, native sidecar, median of {runs}:"
    );
    println!("  host binaries: {host:.0} ms");
    println!("  images (runc): {image:.0} ms");
    println!("  ratio images/host: {:.2}", image / host);
}

#[test]
fn fault_an_unreachable_store_ends_the_pod_before_the_app() {
    for layout in [Layout::Native, Layout::Classic] {
        let mut world = World::local();
        for (k, v) in [
            ("DATAMON_GLOBAL_CONFIG", "s3://config"),
            ("DATAMON_S3_ENDPOINT", "http://127.0.0.1:9"),
            ("DATAMON_RETRIES", "1"),
            ("DATAMON_RETRY_TIMEOUT_SECS", "2"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_REGION", "us-east-1"),
        ] {
            world.set_env(k, v);
        }
        let annotations = [
            input("raw", "raw", "data/raw", ""),
            annotation(
                "datamon.io/output.result",
                format!("{{repo: results, path: {}}}", p("data/out")),
            ),
        ];
        let s = Scratch::new();
        let script = format!("touch {seen}/ran", seen = p("seen"));
        let pod = injected_pod(&world, &annotations, layout, &script, &s.seen);
        let report = run(&world, &pod, &s.pod);
        assert_eq!(report.phase, Phase::Failed, "{layout:?}: {}", report.logs());
        assert!(!s.seen.join("ran").exists(), "the app must not start");
        assert_eq!(report.exit_code("app"), Some(69), "{}", report.logs());
        assert_eq!(report.exit_code("datamon"), Some(1), "{}", report.logs());
        assert_eq!(report.container("datamon").unwrap().restarts, 0);
        let side = report.message("datamon");
        assert_eq!(side["reason"]["code"], "store_unreachable", "{side}");
        assert!(
            side["reason"]["message"]
                .as_str()
                .unwrap()
                .contains("127.0.0.1:9"),
            "{side}"
        );
    }
}
