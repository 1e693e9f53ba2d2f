//! The pure core of the webhook: a pod and its namespace's defaults in, a verdict out.
//! No I/O, no Kubernetes client, no HTTP: the server (`crate::serve`) and `inject` both
//! call [`mutate_pod`].
//!
//! The steps: skip pods that did not opt in or were already injected ([`annotations`]
//! names the marks), parse the annotations, render and validate the plan (`render`), lay
//! the agent out as a JSON Patch (`layout`, with `patch`; [`database`] parses the database
//! annotations and gives the containers their variables; [`security`] gives the injected
//! containers their `securityContext` and refuses mounted inputs where the namespace's Pod
//! Security level or the pod forbids the privileged agent they need). `k8s_names` holds the
//! checks Kubernetes itself would make of names and quantities.

pub mod annotations;
pub mod database;
pub(crate) mod k8s_names;
mod layout;
mod patch;
mod render;
pub mod security;

use std::collections::BTreeMap;

use serde_json::Value;

use annotations::{Problem, INJECT, STATUS};
use layout::PLAN_ENV;
pub use security::PodSecurityLevel;

/// What the namespace says: its annotations (defaults for its pods) and the Pod Security
/// level it enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceDefaults {
    /// The namespace's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The level of its label `pod-security.kubernetes.io/enforce`, if it has one (the
    /// `warn` and `audit` labels refuse nothing and are not read).
    pub pod_security_enforce: Option<PodSecurityLevel>,
}

impl NamespaceDefaults {
    /// The defaults of a namespace with these annotations and labels.
    pub fn from_metadata(
        annotations: BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        Self {
            annotations,
            pod_security_enforce: labels
                .get(security::ENFORCE_LABEL)
                .map(|v| PodSecurityLevel::from_label(v)),
        }
    }
}

/// The webhook's own settings (from its flags), which pods and namespaces may override
/// where the annotations allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The agent image injected when no annotation names one.
    pub image: String,
    /// The agent image of pods with databases (the agent with PostgreSQL), when no
    /// annotation names one.
    pub postgres_image: String,
    /// Whether the cluster runs native sidecars (init containers with
    /// `restartPolicy: Always`, Kubernetes 1.29+); `auto` mode uses them only then.
    pub native_sidecars_supported: bool,
}

/// The agent image of this release, as `just images` tags it (`serve --agent-image`'s
/// default too).
pub const DEFAULT_AGENT_IMAGE: &str = concat!(
    "ghcr.io/datamon-sidecar/datamon-agent:",
    env!("CARGO_PKG_VERSION")
);

/// The agent image with PostgreSQL of this release (`serve --agent-postgres-image`'s
/// default), for pods with databases.
pub const DEFAULT_AGENT_POSTGRES_IMAGE: &str = concat!(
    "ghcr.io/datamon-sidecar/datamon-agent-postgres:",
    env!("CARGO_PKG_VERSION")
);

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_AGENT_IMAGE.to_string(),
            postgres_image: DEFAULT_AGENT_POSTGRES_IMAGE.to_string(),
            native_sidecars_supported: true,
        }
    }
}

/// What to do with a pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Allowed as it is, without a patch (not opted in, or already injected).
    Skip {
        /// Why, for logs and metrics.
        reason: String,
    },
    /// Allowed with this patch.
    Patch(json_patch::Patch),
    /// Refused: the message names the annotation, the problem and the fix.
    Deny(String),
}

/// Decides what to do with `pod` (a Pod as JSON, as the API server sent it).
pub fn mutate_pod(
    pod: &serde_json::Value,
    namespace: &NamespaceDefaults,
    settings: &WebhookSettings,
) -> Verdict {
    let pod_annotations = string_map(&pod["metadata"]["annotations"]);
    let labels = string_map(&pod["metadata"]["labels"]);
    let opted_out = [labels.get(INJECT), pod_annotations.get(INJECT)]
        .into_iter()
        .flatten()
        .any(|v| annotations::opt_in_value(v) == Some(false));
    if opted_out {
        return skip(format!("{INJECT} is \"false\""));
    }
    if let Some(status) = pod_annotations.get(STATUS) {
        return skip(format!("already injected ({STATUS}: {status})"));
    }
    if !annotations::asks_for_injection(&pod_annotations) {
        return skip("no datamon.io annotation");
    }
    if has_agent(pod) {
        return skip(format!(
            "a container already has {PLAN_ENV} (the agent is already there)"
        ));
    }
    if !pod["spec"]["containers"].is_array() {
        return Verdict::Deny(deny_message(&[Problem::new(
            "datamon.io",
            "the object has datamon.io annotations but is not a pod with `spec.containers`",
        )]));
    }
    // Every problem at once: the annotations', then the plan's (with what parsed).
    let (req, mut problems) = annotations::parse(&pod_annotations, &namespace.annotations);
    let native = match req.native {
        annotations::NativeMode::On => true,
        annotations::NativeMode::Off => false,
        annotations::NativeMode::Auto => settings.native_sidecars_supported,
    };
    let plan = match render::render(&req, native) {
        Ok(p) => Some(p),
        Err(more) => {
            problems.extend(more);
            None
        }
    };
    let Some(plan) = plan.filter(|_| problems.is_empty()) else {
        return Verdict::Deny(deny_message(&problems));
    };
    // A pod with databases needs the agent image that carries PostgreSQL.
    let image = if req.databases.is_empty() {
        req.image.as_deref().unwrap_or(&settings.image)
    } else {
        req.postgres_image
            .as_deref()
            .unwrap_or(&settings.postgres_image)
    };
    let inputs = layout::Inputs {
        req: &req,
        plan: &plan,
        image,
        native,
        enforce: namespace.pod_security_enforce,
    };
    match layout::build(pod, &inputs) {
        Ok(patch) => Verdict::Patch(patch),
        Err(problems) => Verdict::Deny(deny_message(&problems)),
    }
}

fn skip(reason: impl Into<String>) -> Verdict {
    Verdict::Skip {
        reason: reason.into(),
    }
}

/// The string members of a JSON object (annotations, labels); anything else is ignored.
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// Whether a container of the pod already carries a plan (our agent or a wrapper).
fn has_agent(pod: &Value) -> bool {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .filter_map(|c| c["env"].as_array())
        .flatten()
        .any(|e| e["name"].as_str() == Some(PLAN_ENV))
}

/// One message for every problem: the annotation, the problem, the fix.
fn deny_message(problems: &[Problem]) -> String {
    let n = problems.len();
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!(
        "datamon: {n} problem{} with the pod's datamon.io annotations: {}",
        if n == 1 { "" } else { "s" },
        list.join("; ")
    )
}
