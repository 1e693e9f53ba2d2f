//! Kubernetes Events about the admissions the webhook decides: `Injected` (Normal) when a
//! pod got the agent, `InjectionDenied` (Warning) when it was refused, so that
//! `kubectl describe` of the pod's owner (or `kubectl get events`) says what the webhook did.
//!
//! At CREATE time a pod usually has no name and never a uid (the API server gives them
//! after admission), so, as Linkerd's proxy injector does, the Event is about the pod's
//! owner when it has one: the `ownerReferences` entry with `controller: true` (else the
//! first), which carries the owner's uid (a Job, a ReplicaSet). A pod without owner gets an
//! Event about `Pod/<name>` (its `generateName` when it has no name yet), without uid: it is
//! listed by `kubectl get events`, and a denied pod never exists anyway.
//!
//! Events are core/v1 (`POST /api/v1/namespaces/<ns>/events`): what `kubectl describe`
//! lists, what the agent writes too, and one RBAC rule (`""`/`events`: `create`, `patch`).
//!
//! Posting is fire-and-forget: a spawned task with a deadline (`--events-timeout`, 2 s by
//! default), at most [`MAX_IN_FLIGHT`] at once; the admission answer never waits for it.
//! A failed, late or dropped post is a warning in the log and a count in
//! `datamon_webhook_events_total{result}`. Dry-run requests post nothing.
//!
//! The Event itself is built by pure functions ([`admission_event`]) from the pod, the
//! patch and the decision.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datamon_plan::{InputMode, Lifecycle, Plan};
use k8s_openapi::api::core::v1::Event;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::metrics::Metrics;

/// Posts waiting for the API server at once; more are dropped (and counted).
pub const MAX_IN_FLIGHT: usize = 64;

/// The API server keeps at most this many bytes of a message (1 KiB for new-style Events;
/// the same bound here for every Event).
const MESSAGE_LIMIT: usize = 1024;

/// The Event's `source.component` and `reportingComponent`.
pub const COMPONENT: &str = "datamon-webhook";

/// Whether the webhook posts Events (`--events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsMode {
    /// On when running in a cluster (`KUBERNETES_SERVICE_HOST` is set), else off.
    Auto,
    /// Always (needs a Kubernetes client: in a cluster, or KUBECONFIG).
    #[value(alias = "on")]
    True,
    /// Never.
    #[value(alias = "off")]
    False,
}

impl EventsMode {
    /// Whether Events are posted, `in_cluster` telling whether the process runs in a pod.
    pub fn enabled(self, in_cluster: bool) -> bool {
        match self {
            EventsMode::Auto => in_cluster,
            EventsMode::True => true,
            EventsMode::False => false,
        }
    }
}

/// How Events are posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsConfig {
    /// Deadline of one post (`--events-timeout`).
    pub timeout: Duration,
}

/// What an admission decided, as far as Events go.
#[derive(Clone, Copy, Debug)]
pub enum Decision<'a> {
    /// Allowed with this patch (JSON Patch, as sent back to the API server).
    Injected {
        /// The patch's JSON bytes.
        patch: &'a [u8],
    },
    /// Refused with this message.
    Denied {
        /// The denial message.
        message: &'a str,
    },
}

/// The Event about `decision` on `pod` (as the API server sent it) in `namespace`, at `now`.
pub fn admission_event(
    decision: Decision<'_>,
    pod: &Value,
    namespace: &str,
    now: SystemTime,
) -> Event {
    let (type_, reason, message) = match decision {
        Decision::Injected { patch } => ("Normal", "Injected", injected_message(pod, patch)),
        Decision::Denied { message } => ("Warning", "InjectionDenied", message.to_string()),
    };
    let involved = involved_object(pod, namespace);
    let base = involved["name"]
        .as_str()
        .unwrap_or("pod")
        .trim_end_matches(['-', '.']);
    // The API server appends 5 characters; names are DNS subdomains (253 at most).
    let base: String = base.chars().take(240).collect();
    let base = if base.is_empty() { "pod".into() } else { base };
    let at = humantime::format_rfc3339_seconds(now).to_string();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{base}."), "namespace": namespace},
        "involvedObject": involved,
        "type": type_,
        "reason": reason,
        "message": bounded(&message),
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    });
    // Every field above is of the type k8s-openapi's Event has: this cannot fail; a
    // default Event (which the API server refuses, logged) would be the fallback anyway.
    serde_json::from_value(event).unwrap_or_default()
}

/// What the Event is about: the pod's controller (or first owner), else the pod itself.
pub fn involved_object(pod: &Value, namespace: &str) -> Value {
    let meta = &pod["metadata"];
    let owners = meta["ownerReferences"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let owner = owners
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
        .or_else(|| owners.first())
        .filter(|o| o["kind"].is_string() && o["name"].is_string());
    if let Some(o) = owner {
        let mut r = json!({
            "apiVersion": o["apiVersion"],
            "kind": o["kind"],
            "name": o["name"],
            "namespace": namespace,
        });
        if let Some(uid) = o["uid"].as_str() {
            r["uid"] = json!(uid);
        }
        return r;
    }
    let name = meta["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| meta["generateName"].as_str())
        .unwrap_or("");
    let mut r = json!({"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": namespace});
    if let Some(uid) = meta["uid"].as_str() {
        r["uid"] = json!(uid);
    }
    r
}

/// `Injected`'s message: the agent image, native or classic, inputs (with their mode),
/// outputs and databases, read from the pod as patched.
pub fn injected_message(pod: &Value, patch: &[u8]) -> String {
    let patched = serde_json::from_slice::<json_patch::Patch>(patch)
        .ok()
        .and_then(|p| {
            let mut out = pod.clone();
            json_patch::patch(&mut out, &p).ok().map(|()| out)
        });
    let Some((agent, init, plan)) = patched.as_ref().and_then(agent_of) else {
        return "datamon-webhook injected the datamon agent".into();
    };
    let image = agent["image"].as_str().unwrap_or("?");
    let native = plan
        .effective_sidecars()
        .iter()
        .any(|s| s.lifecycle == Lifecycle::Native);
    let how = if native {
        "a native sidecar"
    } else if init && plan.outputs.is_empty() && plan.databases.is_empty() && !mounts(&plan) {
        "an init container (downloads only)"
    } else {
        "a classic sidecar"
    };
    let mut parts = vec![format!("datamon agent {image} as {how}")];
    let list = |items: Vec<String>| items.join(", ");
    if !plan.inputs.is_empty() {
        let inputs = plan
            .inputs
            .iter()
            .map(|i| {
                let mode = match i.mode {
                    InputMode::Download => "download",
                    InputMode::Mount => "mount",
                };
                format!("{} ({mode})", i.name)
            })
            .collect();
        parts.push(format!("inputs: {}", list(inputs)));
    }
    if !plan.outputs.is_empty() {
        let outputs = plan.outputs.iter().map(|o| o.name.clone()).collect();
        parts.push(format!("outputs: {}", list(outputs)));
    }
    if !plan.databases.is_empty() {
        let dbs = plan.databases.iter().map(|d| d.name.clone()).collect();
        parts.push(format!("databases: {}", list(dbs)));
    }
    parts.join("; ")
}

fn mounts(plan: &Plan) -> bool {
    plan.inputs.iter().any(|i| i.mode == InputMode::Mount)
}

/// The agent container of a patched pod (the one running `sidecar` with a plan), whether
/// it is an init container, and its plan.
fn agent_of(pod: &Value) -> Option<(&Value, bool, Plan)> {
    for (key, init) in [("initContainers", true), ("containers", false)] {
        for c in pod["spec"][key].as_array().into_iter().flatten() {
            if c["args"][0].as_str() != Some("sidecar") {
                continue;
            }
            let plan = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "DATAMON_PLAN")
                .and_then(|e| e["value"].as_str())
                .and_then(|v| serde_json::from_str::<Plan>(v).ok());
            if let Some(plan) = plan {
                return Some((c, init, plan));
            }
        }
    }
    None
}

/// `message` cut to [`MESSAGE_LIMIT`] bytes on a character boundary, `…` marking a cut.
fn bounded(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let mut cut = MESSAGE_LIMIT - '…'.len_utf8();
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &message[..cut])
}

/// Posts Events through the API server, never waiting for it.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    deadline: Duration,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Why a post did not go through.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("no answer from the API server within {0:?} (--events-timeout)")]
    Timeout(Duration),
    #[error("the API server refused or failed the request (does the webhook's ClusterRole allow create on events?)")]
    Api(#[source] kube::Error),
}

impl Recorder {
    /// Posts through `client`, each post cut after `deadline`, counting in `metrics`.
    pub fn new(client: kube::Client, deadline: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            deadline,
            metrics,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Posts `event` in the background; returns at once.
    pub fn post(&self, event: Event) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.metrics.event("dropped");
            tracing::warn!(
                reason = event.reason.as_deref().unwrap_or(""),
                in_flight = MAX_IN_FLIGHT,
                "too many Events waiting for the API server: this one is dropped"
            );
            return;
        };
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let (deadline, metrics) = (self.deadline, self.metrics.clone());
        let span = tracing::info_span!(
            "event",
            namespace,
            reason = event.reason.as_deref().unwrap_or(""),
            object = event.involved_object.name.as_deref().unwrap_or(""),
        );
        tokio::spawn(
            async move {
                let _slot = slot;
                let result = tokio::time::timeout(deadline, api.create(&PostParams::default(), &event))
                    .await
                    .map_err(|_| PostError::Timeout(deadline))
                    .and_then(|r| r.map_err(PostError::Api));
                match result {
                    Ok(_) => {
                        metrics.event("posted");
                        tracing::debug!("Event posted");
                    }
                    Err(e) => {
                        metrics.event(match e {
                            PostError::Timeout(_) => "timeout",
                            PostError::Api(_) => "failed",
                        });
                        tracing::warn!(error = %datamon_edge::chain(&e), "cannot post the Event; the admission is not affected");
                    }
                }
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn the_owner_is_the_involved_object_when_there_is_one() {
        let pod = json!({"metadata": {"generateName": "train-", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "1"},
            {"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u-9", "controller": true}
        ]}});
        let r = involved_object(&pod, "team");
        assert_eq!(
            r,
            json!({"apiVersion": "batch/v1", "kind": "Job", "name": "train", "namespace": "team", "uid": "u-9"})
        );
    }

    #[test]
    fn without_owner_the_pod_by_name_or_generate_name() {
        let pod = json!({"metadata": {"generateName": "job-"}});
        let r = involved_object(&pod, "team");
        assert_eq!(r["kind"], "Pod");
        assert_eq!(r["name"], "job-");
        assert!(r.get("uid").is_none());
        let pod = json!({"metadata": {"name": "p1", "generateName": "job-"}});
        assert_eq!(involved_object(&pod, "team")["name"], "p1");
    }

    #[test]
    fn a_denial_is_a_warning_with_the_message() {
        let pod = json!({"metadata": {"generateName": "job-"}});
        let e = admission_event(
            Decision::Denied {
                message: "datamon.io/input.x: bad",
            },
            &pod,
            "team",
            at(),
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("InjectionDenied"));
        assert_eq!(e.message.as_deref(), Some("datamon.io/input.x: bad"));
        assert_eq!(e.metadata.generate_name.as_deref(), Some("job."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("team"));
        assert_eq!(e.count, Some(1));
        assert!(e.first_timestamp.is_some());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(2000);
        let b = bounded(&long);
        assert!(b.len() <= MESSAGE_LIMIT && b.ends_with('…'), "{}", b.len());
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn the_injected_message_reads_the_patched_pod() {
        use crate::mutate::{mutate_pod, NamespaceDefaults, Verdict, WebhookSettings};
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {
                "datamon.io/config": "gs://c",
                "datamon.io/input.raw": "{repo: raw, path: /data/raw}",
                "datamon.io/output.out": "{repo: results, path: /data/out}"
            }},
            "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["true"]}]}
        });
        let settings = WebhookSettings {
            image: "registry.example/agent:1".into(),
            ..WebhookSettings::default()
        };
        let Verdict::Patch(patch) = mutate_pod(&pod, &NamespaceDefaults::default(), &settings)
        else {
            panic!("not injected");
        };
        let bytes = serde_json::to_vec(&patch).unwrap();
        assert_eq!(
            injected_message(&pod, &bytes),
            "datamon agent registry.example/agent:1 as a native sidecar; inputs: raw (download); outputs: out"
        );
        // Downloads only, classic: the agent is a plain init container.
        let mut pod = pod;
        let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
        annotations.remove("datamon.io/output.out");
        let classic = WebhookSettings {
            native_sidecars_supported: false,
            ..settings
        };
        let Verdict::Patch(patch) = mutate_pod(&pod, &NamespaceDefaults::default(), &classic)
        else {
            panic!("not injected");
        };
        let m = injected_message(&pod, &serde_json::to_vec(&patch).unwrap());
        assert_eq!(
            m,
            "datamon agent registry.example/agent:1 as an init container (downloads only); inputs: raw (download)"
        );
    }

    #[test]
    fn an_unreadable_patch_still_says_injected() {
        let m = injected_message(&json!({}), b"not json");
        assert_eq!(m, "datamon-webhook injected the datamon agent");
    }

    #[test]
    fn auto_means_in_a_cluster() {
        assert!(EventsMode::Auto.enabled(true));
        assert!(!EventsMode::Auto.enabled(false));
        assert!(EventsMode::True.enabled(false));
        assert!(!EventsMode::False.enabled(true));
    }
}
