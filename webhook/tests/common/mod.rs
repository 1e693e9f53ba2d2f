//! Helpers shared by the webhook's integration tests: applying a verdict to a pod and the
//! invariants every patched pod must satisfy.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashSet;

use datamon_webhook::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};
use serde_json::Value;

/// `pod` with `patch` applied.
pub fn apply(pod: &Value, patch: &json_patch::Patch) -> Result<Value, String> {
    let mut out = pod.clone();
    json_patch::patch(&mut out, patch).map_err(|e| format!("the patch does not apply: {e}"))?;
    Ok(out)
}

/// Checks what must hold for any pod the webhook patched; returns the first violation.
pub fn check_patched(
    original: &Value,
    patched: &Value,
    ns: &NamespaceDefaults,
    settings: &WebhookSettings,
) -> Result<(), String> {
    let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched.clone())
        .map_err(|e| format!("the patched pod is not a k8s-openapi Pod: {e}"))?;
    let spec = &patched["spec"];
    let volumes = names(&spec["volumes"]);
    unique("volume", &volumes)?;
    let mut containers = Vec::new();
    for key in ["initContainers", "containers"] {
        for c in spec[key].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("");
            containers.push(name);
            let mut paths = HashSet::new();
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let v = m["name"].as_str().unwrap_or("");
                if !volumes.contains(&v) {
                    return Err(format!(
                        "container {name} mounts volume {v:?}, which the pod does not have"
                    ));
                }
                let p = m["mountPath"].as_str().unwrap_or("");
                if !paths.insert(p) {
                    return Err(format!("container {name} mounts two volumes at {p}"));
                }
            }
            if c.get("env").is_some() {
                unique(&format!("env of {name}"), &names(&c["env"]))?;
            }
        }
    }
    unique("container", &containers)?;
    // What the user had is still there, in its place.
    for key in ["initContainers", "containers", "volumes"] {
        let before = original["spec"][key].as_array().map_or(0, Vec::len);
        for i in 0..before {
            let (a, b) = (&original["spec"][key][i], &patched["spec"][key][i]);
            if a["name"] != b["name"] {
                return Err(format!(
                    "{key}[{i}] moved: {} became {}",
                    a["name"], b["name"]
                ));
            }
        }
    }
    // A second pass changes nothing.
    match mutate_pod(patched, ns, settings) {
        Verdict::Skip { .. } => Ok(()),
        other => Err(format!("a second pass did not skip: {other:?}")),
    }
}

/// The `name` of each item of an array (volumes, env); none when `items` is not one.
fn names(items: &Value) -> Vec<&str> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["name"].as_str())
        .collect()
}

fn unique(what: &str, names: &[&str]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(format!("{what} name {n:?} is used twice"));
        }
    }
    Ok(())
}
