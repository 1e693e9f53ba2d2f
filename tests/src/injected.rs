//! Pods as the webhook lays them out: a user's pod with `datamon.io/` annotations goes
//! through the webhook's own `mutate_pod` (so the tests and the webhook cannot drift apart),
//! the patch is applied, and the pod runner runs the result with the agent binary as the
//! agent image, against a [`World`]'s store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use datamon_webhook::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};
use serde_json::{json, Value};

use crate::pod::PodRunner;
use crate::{workspace_bin, World};

/// The agent image's name, as the runner knows it (pods name it in `datamon.io/image`).
pub const AGENT_IMAGE: &str = "datamon-agent";

/// The environment variable that carries the plan in every container of ours.
const PLAN_ENV: &str = "DATAMON_PLAN";

/// `pod` (a Pod as JSON) after the webhook: `mutate_pod` with its default settings must
/// patch it.
pub fn inject(pod: &Value) -> Value {
    let patch = match mutate_pod(
        pod,
        &NamespaceDefaults::default(),
        &WebhookSettings::default(),
    ) {
        Verdict::Patch(patch) => patch,
        other => panic!("not patched: {other:?}\n{pod:#}"),
    };
    let mut mutated = pod.clone();
    json_patch::patch(&mut mutated, &patch).expect("apply the webhook's patch");
    mutated
}

/// The plan the webhook gave `pod` (from its agent container).
pub fn plan_of(pod: &Value) -> Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .filter_map(|c| c["env"].as_array())
        .flatten()
        .find(|e| e["name"] == PLAN_ENV)
        .and_then(|e| e["value"].as_str())
        .map(|text| serde_json::from_str(text).expect("the plan is JSON"))
        .unwrap_or_else(|| panic!("no container has {PLAN_ENV}:\n{pod:#}"))
}

/// Puts `plan` in place of the plan in every container of `pod`: the webhook's layout
/// with a plan it would not render (a split between participants, a participant the pod
/// lacks, an invalid field).
pub fn set_plan(pod: &mut Value, plan: &Value) {
    let text = plan.to_string();
    let mut replaced = 0;
    let spec = &mut pod["spec"];
    for k in ["initContainers", "containers"] {
        let containers = spec.get_mut(k).and_then(Value::as_array_mut);
        let envs = containers
            .into_iter()
            .flatten()
            .filter_map(|c| c.get_mut("env"));
        for e in envs.filter_map(Value::as_array_mut).flatten() {
            if e["name"] == PLAN_ENV {
                e["value"] = Value::String(text.clone());
                replaced += 1;
            }
        }
    }
    assert!(replaced > 0, "no container has {PLAN_ENV}");
}

/// A runner for `pod` with `workdir`: the agent binary is the agent image (and in `PATH`,
/// where the startup probe finds `datamon-agent`), the world's store environment is every
/// container's, the grace period 5 s and the sidecar restart backoff 200 ms.
pub fn runner(world: &World, pod: &Value, workdir: &Path) -> PodRunner {
    let agent = workspace_bin("datamon-agent");
    let path = format!(
        "{}:{}",
        agent.parent().expect("the agent's directory").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pod = serde_json::from_value(pod.clone()).expect("the mutated pod is a Pod");
    let mut runner = PodRunner::new(pod)
        .workdir(workdir)
        .image(AGENT_IMAGE, vec![agent.display().to_string()])
        .grace(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(200));
    for (k, v) in world.env_vars() {
        runner = runner.env(k.clone(), v.clone());
    }
    runner.env("PATH", path)
}

/// A scratch directory for one pod: `seen` (a host directory the application leaves what
/// it saw in) and `pod` (the runner's work directory); removed on drop.
pub struct Scratch {
    _tmp: tempfile::TempDir,
    /// The application's window.
    pub seen: PathBuf,
    /// The runner's work directory.
    pub pod: PathBuf,
}

impl Scratch {
    /// Both directories, created.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let seen = tmp.path().join("seen");
        let pod = tmp.path().join("pod");
        std::fs::create_dir_all(&seen).expect("mkdir seen");
        std::fs::create_dir_all(&pod).expect("mkdir pod");
        Self {
            seen,
            pod,
            _tmp: tmp,
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// A pod as a user writes it: opted in (`datamon.io/inject: "true"`), with `annotations`,
/// and the application containers `apps` (name, shell script), each with the host
/// directory `seen` mounted at `seen_at`; nothing of the agent.
pub fn user_pod(
    annotations: &BTreeMap<String, String>,
    apps: &[(&str, &str)],
    seen: &Path,
    seen_at: &str,
) -> Value {
    let containers: Vec<Value> = apps
        .iter()
        .map(|(name, script)| {
            json!({
                "name": name, "image": "shell",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "seen", "mountPath": seen_at}],
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "job", "namespace": "default",
            "labels": {"datamon.io/inject": "true"},
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": containers,
            "volumes": [{"name": "seen", "hostPath": {"path": seen.display().to_string()}}],
        },
    })
}
