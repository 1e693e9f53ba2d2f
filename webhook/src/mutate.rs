//! The pure core of the webhook: a pod and its namespace's defaults in, a verdict out.
//! (Interface fixed; the implementation is being written.)

use std::collections::BTreeMap;

/// What the namespace says: its annotations (defaults for its pods) and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceDefaults {
    /// The namespace's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The webhook's own settings (from its flags), which pods and namespaces may override
/// where the annotations allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The agent image injected when no annotation names one.
    pub image: String,
    /// Whether the cluster runs native sidecars (init containers with
    /// `restartPolicy: Always`, Kubernetes 1.29+); `auto` mode uses them only then.
    pub native_sidecars_supported: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/datamon-sidecar/datamon-agent:latest".to_string(),
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
    let _ = (pod, namespace, settings);
    Verdict::Deny("datamon-webhook: mutation is not implemented yet".into())
}
