//! The user guide's YAML cannot rot: every fenced ```yaml block of `docs/guide/*.md` (and
//! of the README) is parsed, and every Pod or Job (Deployment, CronJob, ...) in it goes
//! through the webhook's own `mutate_pod`, as the API server would send it, and must come
//! out injected (the agent containers present, the application wrapped when the plan needs
//! it), or denied with the message the guide shows.
//!
//! HTML comments on the lines just before a block say how to read it:
//! - `<!-- not-injected -->`: parsed only (manifests, datamon's old pod specs, fragments);
//! - `<!-- denied: TEXT -->`: the webhook must deny it, with TEXT in its message;
//! - `<!-- namespace-labels: {k: v} -->`, `<!-- namespace-annotations: {k: v} -->`: the
//!   namespace the pod is created in (its Pod Security label, its `datamon.io/` defaults).
//!
//! A block with no comment must hold a kind with a pod template. The test fails when the
//! guide has no injected example, and when an annotation the webhook knows (as its denial
//! of an unknown one lists them) has no example.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use datamon_webhook::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};
use serde::Deserialize as _;
use serde_json::{json, Value};

/// The annotations the webhook knows, as its own denial of an unknown one lists them
/// (`datamon.io/input.<name>` as the prefix `datamon.io/input.`): each must have an
/// injected example in the guide.
fn known_annotations() -> Vec<String> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probe", "annotations": {
            "datamon.io/no-such-annotation": "x",
            "datamon.io/input.raw": "{repo: r, path: /data/raw}",
        }},
        "spec": {"containers": [{"name": "app", "image": "app", "command": ["run"]}]},
    });
    let settings = WebhookSettings::default();
    let Verdict::Deny(message) = mutate_pod(&pod, &NamespaceDefaults::default(), &settings) else {
        panic!("the webhook admits an unknown annotation");
    };
    let list = message
        .split_once("use one of ")
        .and_then(|(_, rest)| rest.split_once(", or remove it"))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("the denial no longer lists the annotations: {message}"));
    list.split(", ")
        .map(|a| {
            a.split_once('<')
                .map_or(a, |(prefix, _)| prefix)
                .to_string()
        })
        .collect()
}

/// One fenced yaml block of the guide.
struct Block {
    /// `file:line` of its opening fence.
    at: String,
    /// The HTML comments just before it, without `<!--` and `-->`.
    marks: Vec<String>,
    text: String,
}

impl Block {
    /// The value of the mark `key: value`, if the block has it.
    fn mark(&self, key: &str) -> Option<&str> {
        self.marks
            .iter()
            .find_map(|m| m.strip_prefix(key)?.strip_prefix(':').map(str::trim))
    }

    fn has_mark(&self, key: &str) -> bool {
        self.marks.iter().any(|m| m == key)
    }
}

fn guide_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/guide")
}

/// The guide's pages, sorted, then the README (its example is a Job too).
fn pages() -> Vec<PathBuf> {
    let dir = guide_dir();
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages.push(dir.join("../../README.md"));
    pages
}

/// The yaml blocks of a page (fences at the start of a line), with their marks.
fn blocks(page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(page).unwrap();
    let name = page.file_name().unwrap().to_string_lossy().to_string();
    let mut out = Vec::new();
    let mut marks: Vec<String> = Vec::new();
    let mut open: Option<Block> = None;
    let mut other_fence = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(block) = open.as_mut() {
            if line.trim_end() == "```" {
                out.push(open.take().unwrap());
            } else {
                block.text.push_str(line);
                block.text.push('\n');
            }
            continue;
        }
        if other_fence {
            other_fence = !line.starts_with("```");
            continue;
        }
        if line.trim_end() == "```yaml" {
            open = Some(Block {
                at: format!("{name}:{}", i + 1),
                marks: std::mem::take(&mut marks),
                text: String::new(),
            });
        } else if line.starts_with("```") {
            other_fence = true;
            marks.clear();
        } else if let Some(m) = line
            .trim()
            .strip_prefix("<!--")
            .and_then(|m| m.strip_suffix("-->"))
        {
            marks.push(m.trim().to_string());
        } else {
            marks.clear();
        }
    }
    assert!(open.is_none(), "{name}: a ```yaml block is never closed");
    out
}

/// The YAML documents of a block, as JSON.
fn documents(block: &Block) -> Vec<Value> {
    serde_norway::Deserializer::from_str(&block.text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", block.at)))
        .filter(|v| !v.is_null())
        .collect()
}

/// Where the pod template of `kind` is, as a JSON pointer.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Job" | "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// The object's pod template as a pod (its metadata and spec), checked against the
/// Kubernetes API types first.
fn pod_of(doc: &Value, at: &str) -> Option<Value> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let pointer = template_pointer(kind)?;
    let typed = match kind {
        "Pod" => serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(doc.clone()).err(),
        "Job" => serde_json::from_value::<k8s_openapi::api::batch::v1::Job>(doc.clone()).err(),
        "CronJob" => {
            serde_json::from_value::<k8s_openapi::api::batch::v1::CronJob>(doc.clone()).err()
        }
        _ => None,
    };
    if let Some(e) = typed {
        panic!("{at}: not a valid {kind}: {e}");
    }
    let template = doc
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{at}: a {kind} without its pod template"));
    Some(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": template["metadata"],
        "spec": template["spec"],
    }))
}

/// The namespace a block's pods are created in.
fn namespace_of(block: &Block) -> NamespaceDefaults {
    let map = |key: &str| -> BTreeMap<String, String> {
        block.mark(key).map_or_else(BTreeMap::new, |v| {
            serde_norway::from_str(v).unwrap_or_else(|e| panic!("{}: {key}: {e}", block.at))
        })
    };
    NamespaceDefaults::from_metadata(map("namespace-annotations"), &map("namespace-labels"))
}

fn env_names(c: &Value) -> Vec<&str> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .collect()
}

/// Checks that `mutated` (the pod after the patch) is injected: the webhook's mark, an
/// agent container with the plan, laid out as `native` says (a native sidecar, or a
/// container after the application's; a plain init container for a download-only plan),
/// and each application container the plan has a wrapper for running `datamon-agent wrap`.
fn assert_injected(mutated: &Value, native: bool, at: &str) {
    assert_eq!(
        mutated["metadata"]["annotations"]["datamon.io/status"], "injected",
        "{at}: no datamon.io/status mark:\n{mutated:#}"
    );
    let spec = &mutated["spec"];
    let all = |k: &str| spec[k].as_array().cloned().unwrap_or_default();
    let init = all("initContainers");
    let containers = all("containers");
    let is_agent = |c: &Value| c["args"][0] == "sidecar";
    let agent = init
        .iter()
        .chain(&containers)
        .find(|c| is_agent(c))
        .unwrap_or_else(|| panic!("{at}: no agent container (args: [sidecar, ...]):\n{mutated:#}"));
    let plan_text = agent["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "DATAMON_PLAN")
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{at}: the agent has no DATAMON_PLAN"));
    let plan: Value = serde_json::from_str(plan_text).unwrap();
    let none = |k: &str| plan[k].as_array().is_none_or(Vec::is_empty);
    let download_only = none("outputs")
        && none("databases")
        && plan["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|i| i["mode"] != "mount");
    let in_init = init.iter().any(&is_agent);
    let restarts = agent["restartPolicy"] == "Always";
    let (laid_out, expected) = match (download_only, native) {
        (true, _) => (in_init && !restarts, "a plain init container"),
        (false, true) => (in_init && restarts, "a native sidecar"),
        (false, false) => (!in_init, "a container after the application's"),
    };
    assert!(laid_out, "{at}: the agent is not {expected}:\n{mutated:#}");
    let wrapped: Vec<&Value> = containers
        .iter()
        .filter(|c| !is_agent(c) && env_names(c).contains(&"DATAMON_PLAN"))
        .collect();
    if download_only {
        assert!(
            wrapped.is_empty(),
            "{at}: a download-only plan wraps nothing"
        );
        return;
    }
    assert!(
        init.iter().any(|c| c["args"][0] == "install"),
        "{at}: no datamon-install init container:\n{mutated:#}"
    );
    assert!(
        !wrapped.is_empty(),
        "{at}: no application container is wrapped"
    );
    for c in wrapped {
        let cmd: Vec<&str> = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            cmd.first().is_some_and(|c| c.ends_with("/datamon-agent"))
                && cmd.get(1) == Some(&"wrap"),
            "{at}: container {} is not wrapped: {cmd:?}",
            c["name"]
        );
    }
}

/// Whether the agent of `pod` should be a native sidecar on a cluster that does
/// (`supported`) or does not run them: `datamon.io/native-sidecar` of the pod, else of the
/// namespace, else the cluster.
fn expect_native(pod: &Value, namespace: &NamespaceDefaults, supported: bool) -> bool {
    let key = "datamon.io/native-sidecar";
    let mode = pod["metadata"]["annotations"][key]
        .as_str()
        .or(namespace.annotations.get(key).map(String::as_str));
    match mode {
        Some("on" | "true") => true,
        Some("off" | "false") => false,
        _ => supported,
    }
}

#[test]
fn every_yaml_example_of_the_guide_is_injected_or_denied_as_documented() {
    let pages = pages();
    assert!(pages.len() > 1, "docs/guide/ has no page");
    // Each example on a cluster with native sidecars (1.29+) and on one without.
    let clusters = [true, false].map(|native| WebhookSettings {
        native_sidecars_supported: native,
        ..WebhookSettings::default()
    });
    let mut injected = 0;
    let mut denied = 0;
    let mut parsed_only = 0;
    let mut used: BTreeSet<String> = BTreeSet::new();
    for page in &pages {
        for block in blocks(page) {
            let docs = documents(&block);
            assert!(!docs.is_empty(), "{}: an empty yaml block", block.at);
            if block.has_mark("not-injected") {
                parsed_only += 1;
                continue;
            }
            let namespace = namespace_of(&block);
            let pods: Vec<Value> = docs
                .iter()
                .enumerate()
                .filter_map(|(i, d)| pod_of(d, &format!("{} (document {})", block.at, i + 1)))
                .collect();
            assert!(
                !pods.is_empty(),
                "{}: no Pod, Job or other pod template in it: mark it <!-- not-injected --> if it is not meant for the webhook",
                block.at
            );
            let runs = pods
                .iter()
                .flat_map(|p| clusters.iter().map(move |c| (p, c)));
            for (pod, settings) in runs {
                let verdict = mutate_pod(pod, &namespace, settings);
                match (block.mark("denied"), verdict) {
                    (None, Verdict::Patch(patch)) => {
                        let mut mutated = pod.clone();
                        json_patch::patch(&mut mutated, &patch).unwrap();
                        let supported = settings.native_sidecars_supported;
                        let native = expect_native(pod, &namespace, supported);
                        assert_injected(&mutated, native, &block.at);
                        let keys = pod["metadata"]["annotations"]
                            .as_object()
                            .into_iter()
                            .flatten();
                        let labels = pod["metadata"]["labels"].as_object().into_iter().flatten();
                        used.extend(keys.chain(labels).map(|(k, _)| k.clone()));
                        injected += 1;
                    }
                    (Some(text), Verdict::Deny(message)) => {
                        assert!(
                            message.contains(text),
                            "{}: denied, but the message does not say {text:?}:\n{message}",
                            block.at
                        );
                        denied += 1;
                    }
                    (None, other) => panic!("{}: not injected: {other:?}", block.at),
                    (Some(text), other) => {
                        panic!(
                            "{}: documented as denied ({text:?}) but: {other:?}",
                            block.at
                        )
                    }
                }
            }
        }
    }
    eprintln!("guide, on clusters with and without native sidecars: {injected} injected, {denied} denied; {parsed_only} blocks parsed only");
    assert!(injected > 0, "the guide has no injected example");
    let known = known_annotations();
    assert!(known.len() > 10, "too few annotations read: {known:?}");
    let missing: Vec<&String> = known
        .iter()
        .filter(|a| {
            !used
                .iter()
                .any(|k| k == *a || (a.ends_with('.') && k.starts_with(a.as_str())))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "annotations without an injected example in the guide: {missing:?}"
    );
}

/// The variants of the agent's `ReasonCode` (read from its source, `snake_case` as they are
/// serialized): the codes a termination message can carry.
fn reason_codes() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src/runtime/state.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let body = text
        .split_once("pub enum ReasonCode {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(body, _)| body)
        .unwrap_or_else(|| panic!("{}: no `pub enum ReasonCode`", path.display()));
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let variant = l.trim_end_matches(',');
            let mut code = String::new();
            for (i, ch) in variant.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    code.push('_');
                }
                code.push(ch.to_ascii_lowercase());
            }
            code
        })
        .collect()
}

#[test]
fn every_reason_code_has_a_row_in_the_troubleshooting_page() {
    let codes = reason_codes();
    assert!(codes.len() > 10, "too few reason codes read: {codes:?}");
    let page = std::fs::read_to_string(guide_dir().join("troubleshoot.md")).unwrap();
    let missing: Vec<&String> = codes
        .iter()
        .filter(|c| !page.lines().any(|l| l.starts_with(&format!("| `{c}` |"))))
        .collect();
    assert!(
        missing.is_empty(),
        "reason codes without a row in docs/guide/troubleshoot.md: {missing:?}"
    );
}
