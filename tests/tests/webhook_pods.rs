//! The webhook end to end: a user's pod with datamon.io annotations goes through
//! `mutate_pod`, the patch is applied, and the pod runner runs the result as real
//! processes (the install init container, the agent as a native or classic sidecar with
//! its FUSE mount, the application wrapped). The application must see the downloaded and
//! mounted bytes, and its output must become a labelled bundle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::path::Path;
use std::time::Duration;

use datamon_e2e::pod::{Phase, PodRunner};
use datamon_e2e::{noise, read_tree, workspace_bin, write_file, World};
use datamon_webhook::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};
use serde_json::{json, Value};

/// Deadline of the pod: far above what it needs; a hang fails the test instead.
const DEADLINE: Duration = Duration::from_secs(90);
/// Where the pod's volumes are mounted (inside each container's own mount namespace).
const ROOT: &str = "/mnt/datamon-webhook-e2e";
/// The agent image's name, as the runner knows it.
const AGENT_IMAGE: &str = "datamon-agent";

fn p(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

/// A pod as a user writes it: annotations, an application, nothing of the agent.
fn user_pod(native: &str, script: &str, seen: &Path) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "job", "namespace": "default",
            "labels": {"datamon.io/inject": "true"},
            "annotations": {
                "datamon.io/input.raw": format!("{{repo: raw, label: v1, path: {}}}", p("raw")),
                "datamon.io/input.img": format!("{{repo: img, path: {}, mode: mount}}", p("fuse/img")),
                "datamon.io/output.result": format!("{{repo: results, path: {}, message: e2e run, label: run-1}}", p("out")),
                "datamon.io/coordination": p("run"),
                "datamon.io/deadlines": "{ready: 20s, start: 20s, upload: 30s, grace: 2s}",
                "datamon.io/image": AGENT_IMAGE,
                "datamon.io/native-sidecar": native,
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "app", "image": "shell",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "seen", "mountPath": p("seen")}],
            }],
            "volumes": [{"name": "seen", "hostPath": {"path": seen.display().to_string()}}],
        },
    })
}

#[test]
fn an_annotated_pod_mutated_by_the_webhook_reads_its_inputs_and_uploads_its_output() {
    for native in ["on", "off"] {
        let world = World::local();
        // The inputs.
        let raw = noise(2 * 1024 * 1024 + 7, 11);
        let img = noise(3 * 1024 * 1024 + 1, 12);
        for repo in ["raw", "img", "results"] {
            world.ok(&["repo", "create", "--repo", repo, "--description", "test"]);
        }
        let dir = world.tmp.path().join("seed-raw");
        write_file(&dir.join("a.txt"), b"hello\n");
        write_file(&dir.join("deep/raw.bin"), &raw);
        let raw_id = world.upload("raw", &dir, &["--label", "v1"]);
        let dir = world.tmp.path().join("seed-img");
        write_file(&dir.join("b.bin"), &img);
        let img_id = world.upload("img", &dir, &[]);

        // The user's pod, through the webhook.
        let tmp = tempfile::tempdir().unwrap();
        let seen = tmp.path().join("seen");
        let workdir = tmp.path().join("pod");
        std::fs::create_dir_all(&seen).unwrap();
        std::fs::create_dir_all(&workdir).unwrap();
        let script = format!(
            "cp -r {raw} {seen}/raw && cp {img}/b.bin {seen}/b.bin && mkdir -p {out}/sub && cat {raw}/a.txt {img}/b.bin > {out}/sub/joined.bin && printf done > {out}/status.txt",
            raw = p("raw"), img = p("fuse/img"), out = p("out"), seen = p("seen"),
        );
        let pod = user_pod(native, &script, &seen);
        let patch = match mutate_pod(
            &pod,
            &NamespaceDefaults::default(),
            &WebhookSettings::default(),
        ) {
            Verdict::Patch(patch) => patch,
            other => panic!("not patched: {other:?}"),
        };
        let mut mutated = pod.clone();
        json_patch::patch(&mut mutated, &patch).unwrap();
        let init = mutated["spec"]["initContainers"].as_array().unwrap().len();
        let containers = mutated["spec"]["containers"].as_array().unwrap().len();
        assert_eq!(
            (init, containers),
            if native == "on" { (2, 1) } else { (1, 2) },
            "{mutated:#}"
        );

        // Run it: the agent image's entrypoint is the agent; its probe finds `datamon-agent`
        // in PATH.
        let agent = workspace_bin("datamon-agent");
        let path = format!(
            "{}:{}",
            agent.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut runner = PodRunner::new(serde_json::from_value(mutated.clone()).unwrap())
            .workdir(&workdir)
            .image(AGENT_IMAGE, vec![agent.display().to_string()])
            .grace(Duration::from_secs(5))
            .restart_backoff(Duration::from_millis(200));
        for (k, v) in world.env_vars() {
            runner = runner.env(k.clone(), v.clone());
        }
        runner = runner.env("PATH", path);
        let report = runner.start().unwrap().wait(DEADLINE).unwrap();
        assert_eq!(
            report.phase,
            Phase::Succeeded,
            "native {native}: {}",
            report.logs()
        );

        // The application saw the downloaded and the mounted bytes.
        assert_eq!(std::fs::read(seen.join("raw/a.txt")).unwrap(), b"hello\n");
        assert!(
            std::fs::read(seen.join("raw/deep/raw.bin")).unwrap() == raw,
            "downloaded bytes differ"
        );
        assert!(
            std::fs::read(seen.join("b.bin")).unwrap() == img,
            "mounted bytes differ"
        );

        // Its output is a new bundle, labelled, holding what it wrote.
        let app = report.container("app").unwrap();
        let message: Value = serde_json::from_str(&app.termination_message)
            .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", app.termination_message, report.logs()));
        assert_eq!(message["exit_code"], 0);
        assert_eq!(message["inputs"]["raw"], raw_id.as_str());
        assert_eq!(message["inputs"]["img"], img_id.as_str());
        let id = message["outputs"]["result"].as_str().unwrap().to_string();
        let label: Value = serde_json::from_str(&world.ok(&[
            "label", "get", "--repo", "results", "--label", "run-1", "--output", "json",
        ]))
        .unwrap();
        assert_eq!(label[0]["id"], id.as_str());
        let dest = world.tmp.path().join("check");
        world.ok(&[
            "bundle",
            "download",
            "--repo",
            "results",
            "--bundle",
            &id,
            "--destination",
            &dest.display().to_string(),
        ]);
        let mut joined = b"hello\n".to_vec();
        joined.extend_from_slice(&img);
        let files = read_tree(&dest);
        assert_eq!(
            files,
            vec![
                ("status.txt".to_string(), b"done".to_vec()),
                ("sub/joined.bin".to_string(), joined),
            ],
            "native {native}"
        );
    }
}
