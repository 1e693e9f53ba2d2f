//! The pure core of the webhook: a pod and its namespace's defaults in, a verdict out.
//! (Interface fixed; the implementation is being written.)

use std::collections::BTreeMap;

/// What the namespace says: its annotations (defaults for its pods) and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceDefaults {
    /// The namespace's annotations.
    pub annotations: BTreeMap<String, String>,
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
pub fn mutate_pod(pod: &serde_json::Value, namespace: &NamespaceDefaults) -> Verdict {
    let _ = (pod, namespace);
    Verdict::Deny("datamon-webhook: mutation is not implemented yet".into())
}
