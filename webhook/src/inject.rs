//! `datamon-webhook inject -f FILE`: the webhook's mutation, offline, on workload files
//! (like `istioctl kube-inject`). Reads YAML (several documents too) or JSON, finds the pod
//! template of each Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob
//! (and of each item of a `List`), applies [`mutate_pod`] to it, and prints every object
//! as YAML; other kinds are printed unchanged. A denial names the object and the
//! annotation ([`InjectError::Denied`]; the binary exits 1).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use serde::Deserialize as _;
use serde_json::{json, Value};

use crate::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};

/// Arguments of `inject`.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// The workload file (YAML, several documents allowed, or JSON); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// A YAML or JSON mapping of the namespace's annotations (its datamon.io defaults).
    #[arg(long, value_name = "FILE")]
    pub namespace_annotations: Option<PathBuf>,
    /// Whether the target cluster runs native sidecars (Kubernetes 1.29+), for
    /// `datamon.io/native-sidecar: auto`.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub native_sidecars: bool,
    /// The agent image, when no annotation names one.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// The agent image with PostgreSQL, for pods with databases, when no annotation names
    /// one.
    #[arg(long, value_name = "IMAGE")]
    pub postgres_image: Option<String>,
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// A file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML or JSON.
    #[error("{what} is not valid YAML or JSON")]
    Parse {
        /// The file.
        what: String,
        /// Why.
        #[source]
        source: serde_norway::Error,
    },
    /// The namespace annotations are not a mapping of strings.
    #[error("{0}: give a mapping of annotation names to strings, such as `datamon.io/config: gs://bucket`")]
    NamespaceAnnotations(String),
    /// The webhook would deny an object.
    #[error("{object}: {message}")]
    Denied {
        /// `Kind/name` (and document number).
        object: String,
        /// The denial.
        message: String,
    },
    /// A patch did not apply (a bug).
    #[error("{object}: the patch does not apply (a bug of the webhook)")]
    Patch {
        /// `Kind/name`.
        object: String,
        /// Why.
        #[source]
        source: json_patch::PatchError,
    },
}

/// Runs `inject`: prints every object of the file, injected, on stdout.
pub fn main(args: InjectArgs) -> Result<(), InjectError> {
    print!("{}", run(&args)?);
    Ok(())
}

fn read(path: &PathBuf) -> Result<String, InjectError> {
    let err = |source| InjectError::Read {
        path: path.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(err)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(err)
    }
}

fn run(args: &InjectArgs) -> Result<String, InjectError> {
    let text = read(&args.file)?;
    let mut namespace = NamespaceDefaults::default();
    if let Some(p) = &args.namespace_annotations {
        let what = p.display().to_string();
        let ns_text = read(p)?;
        namespace.annotations = serde_norway::from_str::<BTreeMap<String, String>>(&ns_text)
            .map_err(|_| InjectError::NamespaceAnnotations(what))?;
    }
    let mut settings = WebhookSettings {
        native_sidecars_supported: args.native_sidecars,
        ..WebhookSettings::default()
    };
    if let Some(i) = &args.image {
        settings.image = i.clone();
    }
    if let Some(i) = &args.postgres_image {
        settings.postgres_image = i.clone();
    }
    inject_text(
        &text,
        &args.file.display().to_string(),
        &namespace,
        &settings,
    )
}

/// Injects every object of `text` (YAML documents or JSON); returns them as YAML
/// documents separated by `---`. `what` names the input in errors.
pub(crate) fn inject_text(
    text: &str,
    what: &str,
    namespace: &NamespaceDefaults,
    settings: &WebhookSettings,
) -> Result<String, InjectError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| InjectError::Parse {
            what: what.to_string(),
            source,
        })?;
        if value.is_null() {
            continue; // an empty document
        }
        let object = inject_object(value, namespace, settings, &format!("document {}", i + 1))?;
        out.push(crate::yaml::to_string(&object));
    }
    Ok(out.join("---\n"))
}

/// Where the pod template of `kind` is.
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn inject_object(
    mut object: Value,
    namespace: &NamespaceDefaults,
    settings: &WebhookSettings,
    doc: &str,
) -> Result<Value, InjectError> {
    let kind = object["kind"].as_str().unwrap_or("").to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let label = format!("{kind}/{name} ({doc})");
    if kind == "List" {
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for (j, item) in items.iter_mut().enumerate() {
                let taken = std::mem::take(item);
                *item = inject_object(
                    taken,
                    namespace,
                    settings,
                    &format!("{doc}, item {}", j + 1),
                )?;
            }
        }
        return Ok(object);
    }
    let Some(path) = template_path(&kind) else {
        return Ok(object);
    };
    let Some(template) = object.pointer_mut(path) else {
        return Ok(object);
    };
    // The template seen as a pod: its metadata (annotations, labels) and spec.
    let pod = if path.is_empty() {
        template.clone()
    } else {
        json!({
            "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "spec": template.get("spec").cloned().unwrap_or(Value::Null),
        })
    };
    match mutate_pod(&pod, namespace, settings) {
        Verdict::Skip { reason } => {
            tracing::debug!(object = %label, %reason, "unchanged");
        }
        Verdict::Deny(message) => {
            return Err(InjectError::Denied {
                object: label,
                message,
            })
        }
        Verdict::Patch(patch) => {
            let mut patched = pod;
            json_patch::patch(&mut patched, &patch).map_err(|source| InjectError::Patch {
                object: label,
                source,
            })?;
            if path.is_empty() {
                *template = patched;
            } else {
                template["metadata"] = patched["metadata"].take();
                template["spec"] = patched["spec"].take();
            }
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = "datamon.io/input.raw: \"{repo: raw, path: /data/raw}\"";

    /// `text` injected with default namespace defaults and settings.
    fn inject(text: &str) -> Result<String, InjectError> {
        inject_text(
            text,
            "t",
            &NamespaceDefaults::default(),
            &WebhookSettings::default(),
        )
    }

    fn docs(text: &str) -> Vec<Value> {
        serde_norway::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }

    #[test]
    fn templates_of_every_kind_are_injected_and_others_kept() {
        let text = format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: d}}
spec:
  template:
    metadata:
      annotations: {{{INPUT}}}
    spec:
      containers: [{{name: app, image: busybox, command: [ls]}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: c}}
data: {{k: "off"}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: cj}}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            datamon.io/output.out: "{{repo: r, path: /data/out}}"
        spec:
          restartPolicy: Never
          containers: [{{name: app, image: busybox, command: [ls]}}]
---
{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"}}, "spec": {{"containers": [{{"name": "x", "image": "y"}}]}}}}
"#
        );
        let out = inject(&text).unwrap();
        let d = docs(&out);
        assert_eq!(d.len(), 4);
        let t = &d[0]["spec"]["template"];
        assert_eq!(
            t["metadata"]["annotations"]["datamon.io/status"],
            "injected"
        );
        assert_eq!(t["spec"]["initContainers"][0]["name"], "datamon");
        assert_eq!(d[1], docs(&text)[1]);
        let cj = &d[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(cj["initContainers"][1]["restartPolicy"], "Always");
        assert_eq!(cj["containers"][0]["command"][1], "wrap");
        assert_eq!(d[3], docs(&text)[3]);
        // A second pass changes nothing.
        let again = inject(&out).unwrap();
        assert_eq!(docs(&again), d);
    }

    #[test]
    fn a_denial_names_the_object_and_the_annotation() {
        let text = "kind: Job\nmetadata: {name: j}\nspec:\n  template:\n    metadata:\n      annotations: {datamon.io/native-sidecar: sometimes, datamon.io/input.a: \"{repo: r, path: /a}\"}\n    spec: {containers: [{name: app, image: x, command: [ls]}]}\n";
        let e = inject(text).unwrap_err().to_string();
        assert!(e.contains("Job/j (document 1)"), "{e}");
        assert!(e.contains("datamon.io/native-sidecar"), "{e}");
    }
}
