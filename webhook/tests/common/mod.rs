//! Helpers shared by the webhook's integration tests: applying a verdict to a pod and the
//! invariants every patched pod must satisfy, among them the Pod Security Standards
//! ([`pss`]).

#![allow(dead_code)] // each test binary uses its own subset

pub mod pss;

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
    check_pod_security(original, patched)?;
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

/// What the webhook adds keeps the pod within the Pod Security Standards: every injected
/// container passes `restricted` on its own, except the privileged agent of a FUSE mount,
/// which breaks `baseline` only by being privileged; the pod's own fields and the user's
/// containers break no rule they did not break before.
pub fn check_pod_security(original: &Value, patched: &Value) -> Result<(), String> {
    let before: HashSet<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| names(&original["spec"][k]))
        .collect();
    let injected: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| patched["spec"][k].as_array())
        .flatten()
        .filter(|c| !before.contains(c["name"].as_str().unwrap_or("")))
        .collect();
    let fuse: Vec<String> = injected
        .iter()
        .filter(|c| c["securityContext"]["privileged"] == Value::Bool(true))
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    let new_violations = |level| {
        let mut old = pss::violations(original, level);
        let mut new = Vec::new();
        for v in pss::violations(patched, level) {
            match old.iter().position(|o| *o == v) {
                Some(i) => {
                    old.remove(i);
                }
                None => new.push(v),
            }
        }
        new
    };
    let list = |vs: &[pss::Violation]| -> String {
        vs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    // Restricted: only the FUSE agent may break it.
    let restricted: Vec<pss::Violation> = new_violations(pss::Level::Restricted)
        .into_iter()
        .filter(|v| v.container.as_ref().is_none_or(|c| !fuse.contains(c)))
        .collect();
    if !restricted.is_empty() {
        return Err(format!(
            "the patch breaks Pod Security `restricted`: {}",
            list(&restricted)
        ));
    }
    // Baseline: the FUSE agent, only for being privileged.
    let baseline = new_violations(pss::Level::Baseline);
    let expected: Vec<pss::Violation> = fuse
        .iter()
        .map(|name| pss::Violation {
            check: "privileged",
            container: Some(name.clone()),
            detail: "privileged is true".to_string(),
        })
        .collect();
    if baseline != expected {
        return Err(format!(
            "the patch breaks Pod Security `baseline` with [{}], expected [{}]",
            list(&baseline),
            list(&expected)
        ));
    }
    Ok(())
}
