//! AdmissionReview in, AdmissionReview out: the thin layer between HTTP and [`mutate_pod`].
//!
//! The pod goes to `mutate_pod` exactly as the API server sent it (a JSON value taken out of
//! the request before the typed decoding), so no field is lost to a re-serialization through
//! older API types. Every request that decodes gets a well-formed answer echoing its `uid`;
//! a review without `request` gets a well-formed denial; only a body that is not an
//! AdmissionReview at all is refused at the HTTP level (400).

use std::panic::{catch_unwind, AssertUnwindSafe};

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde_json::Value;

use super::metrics::Outcome;
use crate::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};

/// Why a body is not an AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not JSON.
    #[error("the body is not JSON (expected an admission.k8s.io/v1 AdmissionReview)")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not shaped as an AdmissionReview.
    #[error("the body is not an admission.k8s.io/v1 AdmissionReview")]
    NotAReview(#[source] serde_json::Error),
}

/// A decoded review.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A request to answer, with the object as sent (`None` if it has none).
    Request {
        /// The request, its `object` and `oldObject` taken out.
        request: Box<AdmissionRequest<DynamicObject>>,
        /// The object, untouched.
        object: Option<Value>,
    },
    /// A review without `request`: the answer is ready (a denial).
    NoRequest(Box<Answer>),
}

/// An answer and how to count it.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The AdmissionReview to send back.
    pub review: AdmissionReview<DynamicObject>,
    /// How it was answered.
    pub outcome: Outcome,
    /// Why, in a few words (skip reason, denial message), for the logs.
    pub reason: String,
}

/// Encodes an answer as the API server reads it. kube's `AdmissionResponse` serializes its
/// `patch` (bytes) as an array of numbers (kube-rs/kube#1781); the API is a base64 string
/// (Go's `[]byte` in JSON), so the patch is rewritten as one here.
pub(crate) fn encode(
    review: &AdmissionReview<DynamicObject>,
) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine;
    let mut value = serde_json::to_value(review)?;
    if let (Some(patch), Some(slot)) = (
        review.response.as_ref().and_then(|r| r.patch.as_ref()),
        value.pointer_mut("/response/patch"),
    ) {
        *slot = Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    serde_json::to_vec(&value)
}

/// Decodes a body.
pub(crate) fn decode(body: &[u8]) -> Result<Decoded, DecodeError> {
    let mut value: Value = serde_json::from_slice(body).map_err(DecodeError::NotJson)?;
    let mut object = None;
    if let Some(request) = value.get_mut("request").and_then(Value::as_object_mut) {
        object = request.remove("object").filter(|o| !o.is_null());
        request.remove("oldObject");
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value).map_err(DecodeError::NotAReview)?;
    match TryInto::<AdmissionRequest<DynamicObject>>::try_into(review) {
        Ok(request) => Ok(Decoded::Request {
            request: Box::new(request),
            object,
        }),
        Err(_) => {
            let reason = "the AdmissionReview has no request";
            Ok(Decoded::NoRequest(Box::new(Answer {
                review: AdmissionResponse::invalid(reason).into_review(),
                outcome: Outcome::Invalid,
                reason: reason.into(),
            })))
        }
    }
}

/// The namespace a request is about: the request's, else the object's, else `default`.
pub(crate) fn namespace_of(
    request: &AdmissionRequest<DynamicObject>,
    object: Option<&Value>,
) -> String {
    request
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            object
                .and_then(|o| o.pointer("/metadata/namespace"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "default".to_string())
}

/// Whether the request is one the webhook mutates (a pod being created); if not, why.
pub(crate) fn not_ours(request: &AdmissionRequest<DynamicObject>) -> Option<String> {
    let kind = &request.kind;
    if !(kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod") {
        return Some(format!(
            "not a Pod ({}/{} {}): check the webhook's rules",
            kind.group, kind.version, kind.kind
        ));
    }
    if request.operation != Operation::Create {
        return Some(format!(
            "{:?} of a pod, only CREATE is mutated",
            request.operation
        ));
    }
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Some("a pod subresource".into());
    }
    None
}

/// Answers `request` about `object` (a pod), given its namespace's defaults.
pub(crate) fn decide(
    request: &AdmissionRequest<DynamicObject>,
    object: Option<&Value>,
    namespace: &NamespaceDefaults,
    settings: &WebhookSettings,
) -> Answer {
    let response = AdmissionResponse::from(request);
    if let Some(reason) = not_ours(request) {
        return allowed(response, reason);
    }
    let Some(pod) = object else {
        return allowed(response, "the request carries no object".into());
    };
    // mutate_pod is pure and fuzzed; a panic would still be a bug, and must not leave the
    // API server without an answer.
    let verdict = catch_unwind(AssertUnwindSafe(|| mutate_pod(pod, namespace, settings)))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Verdict::Deny(format!(
                "datamon-webhook: internal error while mutating the pod ({what}); this is a bug, please report it with the pod's annotations"
            ))
        });
    match verdict {
        Verdict::Skip { reason } => allowed(response, reason),
        Verdict::Deny(message) => Answer {
            review: response.deny(&message).into_review(),
            outcome: Outcome::Denied,
            reason: message,
        },
        Verdict::Patch(patch) => match response.clone().with_patch(patch) {
            Ok(response) => Answer {
                review: response.into_review(),
                outcome: Outcome::Injected,
                reason: "injected".into(),
            },
            Err(e) => {
                let message = format!(
                    "datamon-webhook: cannot encode the patch ({}); this is a bug, please report it",
                    datamon_edge::chain(&e)
                );
                Answer {
                    review: response.deny(&message).into_review(),
                    outcome: Outcome::Denied,
                    reason: message,
                }
            }
        },
    }
}

fn allowed(response: AdmissionResponse, reason: String) -> Answer {
    Answer {
        review: response.into_review(),
        outcome: Outcome::Skipped,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(kind: &str, operation: &str) -> Value {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "team",
                "operation": operation,
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "v1", "kind": kind, "metadata": {"name": "p"}},
                "oldObject": null,
                "dryRun": false
            }
        })
    }

    fn decoded(v: &Value) -> (Box<AdmissionRequest<DynamicObject>>, Option<Value>) {
        match decode(&serde_json::to_vec(v).unwrap()).unwrap() {
            Decoded::Request { request, object } => (request, object),
            Decoded::NoRequest(a) => panic!("{a:?}"),
        }
    }

    #[test]
    fn the_object_is_kept_as_sent() {
        let mut v = review("Pod", "CREATE");
        v["request"]["object"]["metadata"]["futureField"] = serde_json::json!({"x": 1});
        let (request, object) = decoded(&v);
        assert_eq!(object.unwrap(), v["request"]["object"]);
        assert_eq!(request.uid, "u-1");
        assert_eq!(namespace_of(&request, None), "team");
    }

    #[test]
    fn other_kinds_and_operations_are_allowed_untouched() {
        for (kind, op) in [("Deployment", "CREATE"), ("Pod", "UPDATE")] {
            let (request, object) = decoded(&review(kind, op));
            let answer = decide(
                &request,
                object.as_ref(),
                &NamespaceDefaults::default(),
                &WebhookSettings::default(),
            );
            assert_eq!(answer.outcome, Outcome::Skipped);
            let response = answer.review.response.unwrap();
            assert!(response.allowed && response.patch.is_none());
            assert_eq!(response.uid, "u-1");
        }
    }

    #[test]
    fn a_review_without_request_is_denied_well_formed() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        let Decoded::NoRequest(answer) = decode(body).unwrap() else {
            panic!("decoded a request");
        };
        let json = serde_json::to_value(&answer.review).unwrap();
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(json["response"]["allowed"], false);
    }

    #[test]
    fn the_patch_goes_out_in_base64() {
        use base64::Engine;
        let (request, _) = decoded(&review("Pod", "CREATE"));
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
        ]))
        .unwrap();
        let review = AdmissionResponse::from(&*request)
            .with_patch(patch)
            .unwrap()
            .into_review();
        let json: Value = serde_json::from_slice(&encode(&review).unwrap()).unwrap();
        let b64 = json["response"]["patch"].as_str().unwrap();
        let ops: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        assert_eq!(json["response"]["uid"], "u-1");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(decode(b"{"), Err(DecodeError::NotJson(_))));
        assert!(matches!(
            decode(br#"{"request": 3}"#),
            Err(DecodeError::NotAReview(_))
        ));
    }
}
