//! `manifests/`: every kustomization renders with `kubectl kustomize` and every document passes
//! `kubernetes-validate --strict` (the official schemas, unknown fields rejected), plus the
//! properties the install promises (selectors, failure policy, least privilege, hardening).
//!
//! The self-signed overlay is rendered from a copy of `manifests/` with certificates made by
//! the real `datamon-webhook certs`. cert-manager's kinds (`cert-manager.io/v1` Issuer and
//! Certificate) are CRDs that kubernetes-validate does not know: they are skipped by name
//! and checked here by hand instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::Value;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            // Certificates someone generated in the source tree are not the test's.
            if entry.file_name() != "certs" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn kustomizations(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.join("kustomization.yaml").exists() {
        out.push(dir.to_owned());
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            kustomizations(&entry.path(), out);
        }
    }
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: run ./dev.sh test (it installs kubectl and kubernetes-validate)"
    );
    Command::new(name)
}

/// Renders `dir`, validates every document but cert-manager's, returns them all.
fn render_and_validate(dir: &Path, scratch: &Path) -> Vec<Value> {
    let out = tool("kubectl").arg("kustomize").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    let mut validated = String::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        if !api_version.starts_with("cert-manager.io/") {
            validated.push_str("---\n");
            validated.push_str(&serde_norway::to_string(&value).unwrap());
        }
        docs.push(value);
    }
    let file = scratch.join("rendered.yaml");
    std::fs::write(&file, &validated).unwrap();
    let check = tool("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "kubernetes-validate --strict failed for {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn check_base(docs: &[Value]) {
    let webhook = &find(docs, "MutatingWebhookConfiguration", "datamon-webhook")["webhooks"][0];
    assert_eq!(
        webhook["admissionReviewVersions"],
        serde_json::json!(["v1"])
    );
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");
    assert!(webhook["timeoutSeconds"].as_i64().unwrap() <= 10);
    assert_eq!(
        webhook["clientConfig"]["service"]["namespace"],
        "datamon-system"
    );
    let ns = &webhook["namespaceSelector"];
    assert_eq!(ns["matchLabels"]["datamon.io/inject"], "enabled");
    let excluded = &ns["matchExpressions"][0];
    assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
    assert_eq!(excluded["operator"], "NotIn");
    for name in ["kube-system", "datamon-system"] {
        assert!(excluded["values"]
            .as_array()
            .unwrap()
            .contains(&Value::from(name)));
    }
    assert_eq!(
        webhook["objectSelector"]["matchLabels"]["datamon.io/inject"],
        "true"
    );
    assert_eq!(
        webhook["rules"][0]["operations"],
        serde_json::json!(["CREATE"])
    );
    assert_eq!(
        webhook["rules"][0]["resources"],
        serde_json::json!(["pods"])
    );

    // Least privilege: namespaces, read-only, nothing else.
    let role = find(docs, "ClusterRole", "datamon-webhook");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}])
    );
    assert!(!docs.iter().any(|d| d["kind"] == "Role"));

    let deployment = find(docs, "Deployment", "datamon-webhook");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container["resources"]["requests"].is_object());
    assert!(docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    let service = find(docs, "Service", "datamon-webhook");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
}

#[test]
fn every_kustomization_renders_and_validates() {
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("manifests");
    copy_dir(&manifests(), &tree);

    let certs_dir = tree.join("overlays/self-signed/certs");
    let made = Command::new(env!("CARGO_BIN_EXE_datamon-webhook"))
        .args(["certs", "--out"])
        .arg(&certs_dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");

    let mut dirs = Vec::new();
    kustomizations(&tree, &mut dirs);
    dirs.sort();
    let names: Vec<String> = dirs
        .iter()
        .map(|d| d.strip_prefix(&tree).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["base", "overlays/cert-manager", "overlays/self-signed"]
    );

    for dir in &dirs {
        let docs = render_and_validate(dir, scratch.path());
        check_base(&docs);
        let webhook = &find(&docs, "MutatingWebhookConfiguration", "datamon-webhook");
        let name = dir.strip_prefix(&tree).unwrap().to_str().unwrap();
        match name {
            "overlays/cert-manager" => {
                assert_eq!(
                    webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                    "datamon-system/datamon-webhook-tls"
                );
                let cert = find(&docs, "Certificate", "datamon-webhook-tls");
                assert_eq!(cert["spec"]["secretName"], "datamon-webhook-tls");
                let names = cert["spec"]["dnsNames"].as_array().unwrap();
                assert!(names.contains(&Value::from("datamon-webhook.datamon-system.svc")));
                find(&docs, "Issuer", "datamon-webhook-ca");
            }
            "overlays/self-signed" => {
                let bundle = webhook["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .unwrap()
                    .replace('\n', "");
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(bundle)
                    .unwrap();
                assert_eq!(
                    decoded,
                    std::fs::read(certs_dir.join("ca-bundle.crt")).unwrap()
                );
                let secret = find(&docs, "Secret", "datamon-webhook-tls");
                assert_eq!(secret["type"], "kubernetes.io/tls");
                assert!(secret["data"]["tls.key"].is_string());
                // The bundle's carrier is local to kustomize.
                assert!(!docs
                    .iter()
                    .any(|d| d["metadata"]["name"] == "datamon-webhook-ca-bundle"));
            }
            _ => {}
        }
    }
}
