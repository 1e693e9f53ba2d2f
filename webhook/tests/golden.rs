//! Golden files: every pod under `tests/golden/<case>.in.yaml` (with optional
//! `<case>.env.yaml`: the namespace's annotations and labels, and the webhook's settings) is
//! mutated, and the result compared with `<case>.out.yaml` (the patched pod),
//! `<case>.deny.txt` (the denial) or `<case>.skip.txt` (the reason). `UPDATE_GOLDEN=1 cargo
//! test -p datamon-webhook --test golden` rewrites them; review the diff.
//!
//! Every patched pod also deserializes as a k8s-openapi Pod, mounts only existing volumes,
//! has unique names, keeps the user's containers and volumes in place, is skipped by a
//! second pass, and passes `kubernetes-validate --strict`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datamon_webhook::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};
use serde::Deserialize;
use serde_json::Value;

/// The Kubernetes version the patched pods are validated against (native sidecars are
/// GA there).
const KUBERNETES_VERSION: &str = "1.33.0";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// `<case>.env.yaml`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Env {
    namespace_annotations: BTreeMap<String, String>,
    namespace_labels: BTreeMap<String, String>,
    native_sidecars_supported: Option<bool>,
    image: Option<String>,
}

fn cases() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".in.yaml").map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

fn env_of(case: &str) -> (NamespaceDefaults, WebhookSettings) {
    let path = dir().join(format!("{case}.env.yaml"));
    let env: Env = if path.exists() {
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    } else {
        Env::default()
    };
    let mut settings = WebhookSettings::default();
    if let Some(n) = env.native_sidecars_supported {
        settings.native_sidecars_supported = n;
    }
    if let Some(i) = env.image {
        settings.image = i;
    }
    (
        NamespaceDefaults::from_metadata(env.namespace_annotations, &env.namespace_labels),
        settings,
    )
}

/// Compares `actual` with the golden file `name` (or rewrites it).
fn golden(name: &str, actual: &str, same: impl Fn(&str, &str) -> bool) -> Result<(), String> {
    let path = dir().join(name);
    if updating() {
        std::fs::write(&path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path)
        .map_err(|e| format!("{name}: {e} (run with UPDATE_GOLDEN=1 to create it)"))?;
    if same(&expected, actual) {
        Ok(())
    } else {
        Err(format!(
            "{name} differs (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}"
        ))
    }
}

fn remove_stale(case: &str, keep: &str) {
    if updating() {
        for ext in ["out.yaml", "deny.txt", "skip.txt"] {
            if ext != keep {
                let _ = std::fs::remove_file(dir().join(format!("{case}.{ext}")));
            }
        }
    }
}

fn run_case(case: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(dir().join(format!("{case}.in.yaml"))).unwrap();
    let pod: Value = serde_norway::from_str(&text).map_err(|e| format!("{case}.in.yaml: {e}"))?;
    let (ns, settings) = env_of(case);
    match mutate_pod(&pod, &ns, &settings) {
        Verdict::Patch(patch) => {
            remove_stale(case, "out.yaml");
            let patched = common::apply(&pod, &patch)?;
            common::check_patched(&pod, &patched, &ns, &settings)?;
            let yaml = datamon_webhook::yaml::to_string(&patched);
            golden(&format!("{case}.out.yaml"), &yaml, |a, b| {
                serde_norway::from_str::<Value>(a).ok() == serde_norway::from_str::<Value>(b).ok()
            })
        }
        Verdict::Deny(msg) => {
            remove_stale(case, "deny.txt");
            golden(&format!("{case}.deny.txt"), &format!("{msg}\n"), |a, b| {
                a == b
            })
        }
        Verdict::Skip { reason } => {
            remove_stale(case, "skip.txt");
            golden(
                &format!("{case}.skip.txt"),
                &format!("{reason}\n"),
                |a, b| a == b,
            )
        }
    }
}

#[test]
fn golden_pods() {
    let cases = cases();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("case {c}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn patched_golden_pods_pass_kubernetes_validate_strict() {
    let tool = ["/root/.pyenv/shims/kubernetes-validate", "kubernetes-validate"]
        .into_iter()
        .find(|t| {
            std::process::Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("kubernetes-validate is not installed: `./dev.sh test` installs it (pip install kubernetes-validate)");
    let mut files: Vec<PathBuf> = cases()
        .iter()
        .map(|c| dir().join(format!("{c}.out.yaml")))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "only {} patched pods", files.len());
    let out = std::process::Command::new(tool)
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
