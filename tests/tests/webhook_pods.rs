//! The webhook end to end: a user's pod with datamon.io annotations goes through
//! `mutate_pod`, the patch is applied, and the pod runner runs the result as real
//! processes (the install init container, the agent as a native or classic sidecar with
//! its FUSE mount, the application wrapped). The application must see the downloaded and
//! mounted bytes, and its output must become a labelled bundle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::collections::BTreeMap;

use datamon_e2e::injected::{self, Scratch, AGENT_IMAGE};
use datamon_e2e::pod::Phase;
use datamon_e2e::{noise, write_file, World, DEADLINE, MIB};
use serde_json::Value;

/// Where the pod's volumes are mounted (inside each container's own mount namespace).
const ROOT: &str = "/mnt/datamon-webhook-e2e";

fn p(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

/// The annotations a user writes: two inputs (one mounted), an output, and the agent as a
/// native sidecar or not (`native`: `on` or `off`).
fn annotations(native: &str) -> BTreeMap<String, String> {
    [
        (
            "datamon.io/input.raw",
            format!("{{repo: raw, label: v1, path: {}}}", p("raw")),
        ),
        (
            "datamon.io/input.img",
            format!("{{repo: img, path: {}, mode: mount}}", p("fuse/img")),
        ),
        (
            "datamon.io/output.result",
            format!(
                "{{repo: results, path: {}, message: e2e run, label: run-1}}",
                p("out")
            ),
        ),
        ("datamon.io/coordination", p("run")),
        (
            "datamon.io/deadlines",
            "{ready: 20s, start: 20s, upload: 30s, grace: 2s}".to_string(),
        ),
        ("datamon.io/image", AGENT_IMAGE.to_string()),
        ("datamon.io/native-sidecar", native.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn an_annotated_pod_mutated_by_the_webhook_reads_its_inputs_and_uploads_its_output() {
    for native in ["on", "off"] {
        let world = World::local();
        // The inputs.
        let raw = noise(2 * MIB + 7, 11);
        let img = noise(3 * MIB + 1, 12);
        for repo in ["raw", "img", "results"] {
            world.create_repo(repo, "test");
        }
        let dir = world.path("seed-raw");
        write_file(&dir.join("a.txt"), b"hello\n");
        write_file(&dir.join("deep/raw.bin"), &raw);
        let raw_id = world.upload("raw", &dir, &["--label", "v1"]);
        let dir = world.path("seed-img");
        write_file(&dir.join("b.bin"), &img);
        let img_id = world.upload("img", &dir, &[]);

        // The user's pod, through the webhook.
        let s = Scratch::new();
        let seen = &s.seen;
        let script = format!(
            "cp -r {raw} {seen}/raw && cp {img}/b.bin {seen}/b.bin && mkdir -p {out}/sub && cat {raw}/a.txt {img}/b.bin > {out}/sub/joined.bin && printf done > {out}/status.txt",
            raw = p("raw"), img = p("fuse/img"), out = p("out"), seen = p("seen"),
        );
        let pod = injected::user_pod(&annotations(native), &[("app", &script)], seen, &p("seen"));
        let mutated = injected::inject(&pod);
        let init = mutated["spec"]["initContainers"].as_array().unwrap().len();
        let containers = mutated["spec"]["containers"].as_array().unwrap().len();
        assert_eq!(
            (init, containers),
            if native == "on" { (2, 1) } else { (1, 2) },
            "{mutated:#}"
        );

        // Run it: the agent image's entrypoint is the agent; its probe finds `datamon-agent`
        // in PATH.
        let runner = injected::runner(&world, &mutated, &s.pod);
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
        let mut joined = b"hello\n".to_vec();
        joined.extend_from_slice(&img);
        let files = world.bundle_files("results", &id);
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
