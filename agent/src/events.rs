//! Kubernetes Events about a participant's end (opt-in: `events.enabled`,
//! `DATAMON_EVENTS__ENABLED=true`): `DataFailed` (Warning: the reason code and message),
//! `BundleSaved` (Normal: the new bundles' ids) or `DataReady` (Normal: the ids of the
//! inputs provided), each a core/v1 Event about the pod, posted to the in-cluster API server
//! with the pod's service-account token. `kubectl describe pod` lists them.
//!
//! [`crate::runtime::outcome::write`], where every end goes through, calls [`post_outcome`]
//! after the termination message is written. Failures come from every participant (the
//! application's wrapper included); successes from the sidecars only, so that a bundle is not
//! announced twice. A post has a deadline (`events.timeout_ms`, 2 s by default) and its
//! result never changes the outcome: a failure is one warning in the log.
//!
//! Where things come from (each overridable in `events:` / `DATAMON_EVENTS__*`, as the tests
//! do):
//! - the API server: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`;
//! - the token and the CA: the service account's files in
//!   `/var/run/secrets/kubernetes.io/serviceaccount/`;
//! - the pod: `POD_NAME` (else `HOSTNAME`, which is the pod's name unless the pod sets
//!   `hostname`), `POD_NAMESPACE` (else the service account's `namespace` file) and `POD_UID`
//!   (downward API; else read from the API server if the service account may `get` pods:
//!   without a uid the Event is not listed by `kubectl describe pod`, only by
//!   `kubectl get events`).
//!
//! The settings are read once, from the same sources as the agent's other settings (the
//! file of `DATAMON_CONFIG_FILE` or the default location, and the environment); the Event is
//! built by pure functions ([`outcome_event`], [`event_json`]), the I/O is [`post`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::runtime::outcome::Outcome;

/// The service account's directory, as the kubelet mounts it.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The API server keeps at most this many bytes of a message (new-style Events; the same
/// bound here).
const MESSAGE_LIMIT: usize = 1024;

/// The Event's `source.component` and `reportingComponent`.
pub const COMPONENT: &str = "datamon-agent";

/// The `events:` settings (`DATAMON_EVENTS__<FIELD>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// Post Events at each participant's end (needs RBAC: docs/events.md).
    pub enabled: bool,
    /// The API server's URL; default from `KUBERNETES_SERVICE_HOST` and `_PORT`.
    pub api_server: Option<String>,
    /// The bearer token file.
    pub token_file: PathBuf,
    /// The CA bundle (PEM) the API server's certificate is checked against.
    pub ca_file: PathBuf,
    /// The pod's namespace when `POD_NAMESPACE` is not set.
    pub namespace_file: PathBuf,
    /// Deadline of one post, in milliseconds (everything: connecting, the uid, the post).
    pub timeout_ms: u64,
}

impl Default for EventsSettings {
    fn default() -> Self {
        let sa = Path::new(SERVICE_ACCOUNT);
        Self {
            enabled: false,
            api_server: None,
            token_file: sa.join("token"),
            ca_file: sa.join("ca.crt"),
            namespace_file: sa.join("namespace"),
            timeout_ms: 2000,
        }
    }
}

impl EventsSettings {
    /// Checks ranges and formats.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let invalid = |name, reason: &str| crate::config::ConfigError::Invalid {
            name,
            reason: reason.to_string(),
        };
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(invalid(
                "events.timeout_ms",
                "must be between 1 and 60000 (milliseconds; default 2000)",
            ));
        }
        if let Some(url) = &self.api_server {
            if !url.starts_with("https://") {
                return Err(invalid(
                    "events.api_server",
                    "must be an https:// URL (the API server), e.g. https://10.0.0.1:443",
                ));
            }
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// An Event's kind, reason and message, before it is about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `DataReady`, `BundleSaved` or `DataFailed`.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// The Event a participant's end deserves, if any: a failure from anyone, a success (with
/// bundle ids) from a sidecar.
pub fn outcome_event(outcome: &Outcome) -> Option<Note> {
    let who = &outcome.participant;
    if let Some(reason) = &outcome.reason {
        return Some(Note {
            type_: "Warning",
            reason: "DataFailed",
            message: bounded(&format!("{who}: {reason}")),
        });
    }
    if outcome.exit_code.is_some() {
        // The application's wrapper: its sidecars announce the bundles.
        return None;
    }
    let ids = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(name, id)| format!("{name}={id}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !outcome.outputs.is_empty() {
        let mut message = format!("{who}: bundles saved: {}", ids(&outcome.outputs));
        if !outcome.inputs.is_empty() {
            message.push_str(&format!("; inputs: {}", ids(&outcome.inputs)));
        }
        return Some(Note {
            type_: "Normal",
            reason: "BundleSaved",
            message: bounded(&message),
        });
    }
    (!outcome.inputs.is_empty()).then(|| Note {
        type_: "Normal",
        reason: "DataReady",
        message: bounded(&format!("{who}: inputs provided: {}", ids(&outcome.inputs))),
    })
}

/// The pod an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid, when known.
    pub uid: Option<String>,
}

/// The core/v1 Event of `note` about `pod`, at `now` (RFC 3339).
pub fn event_json(note: &Note, pod: &PodRef, now: &str) -> Value {
    let mut involved = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod.name,
        "namespace": pod.namespace,
    });
    if let Some(uid) = &pod.uid {
        involved["uid"] = json!(uid);
    }
    // Names are DNS subdomains; the API server appends 5 characters to generateName.
    let base: String = pod.name.chars().take(240).collect();
    // The API server refuses a reportingInstance over 128 characters.
    let instance: String = pod.name.chars().take(128).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{base}."), "namespace": pod.namespace},
        "involvedObject": involved,
        "type": note.type_,
        "reason": note.reason,
        "message": note.message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// `message` cut to [`MESSAGE_LIMIT`] bytes on a character boundary, `…` marking a cut.
fn bounded(message: &str) -> String {
    let mut text = message.to_string();
    if crate::runtime::outcome::cut(&mut text, MESSAGE_LIMIT - '…'.len_utf8()) {
        text.push('…');
    }
    text
}

/// Why an Event was not posted.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Neither `events.api_server` nor `KUBERNETES_SERVICE_HOST` is set.
    #[error("no API server: KUBERNETES_SERVICE_HOST is not set (not in a pod?): set events.api_server (DATAMON_EVENTS__API_SERVER) or turn events off")]
    NoApiServer,
    /// A file could not be read.
    #[error("cannot read the {what} {path} (set events.{setting}, or run with a service account token mounted)")]
    Read {
        /// What the file is.
        what: &'static str,
        /// The setting naming it.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pod's name is unknown.
    #[error("the pod's name is unknown: give the agent POD_NAME from the downward API (fieldRef metadata.name)")]
    NoPodName,
    /// The CA file is not PEM.
    #[error("the CA file {path} holds no PEM certificate: fix events.ca_file")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTPS client could not be set up, or the request failed.
    #[error("cannot reach the API server at {url}")]
    Http {
        /// Where.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The API server refused the Event.
    #[error("the API server answered {status} to the Event (does the pod's service account have a Role with create on events? docs/events.md): {body}")]
    Refused {
        /// Its status.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The deadline passed.
    #[error("no answer from the API server within {0:?} (events.timeout_ms)")]
    Timeout(Duration),
    /// The thread that posts could not be started.
    #[error("cannot start the thread that posts Events")]
    Thread(#[source] std::io::Error),
}

/// The settings the Events use, once per process.
static SETTINGS: OnceLock<EventsSettings> = OnceLock::new();

/// Gives the Events the settings the command loaded (flags, `--config-file`, environment);
/// the first call wins. Without it, they are read again at the first post, from
/// `DATAMON_CONFIG_FILE` or the default file and the environment.
pub fn configure(settings: EventsSettings) {
    let _ = SETTINGS.set(settings);
}

/// The settings: those given to [`configure`], else read again.
fn settings() -> &'static EventsSettings {
    SETTINGS.get_or_init(|| {
        #[derive(Serialize)]
        struct NoFlags {}
        let file = std::env::var_os("DATAMON_CONFIG_FILE").map(PathBuf::from);
        match crate::config::config_file(file.as_deref())
            .and_then(|f| crate::config::load(f.as_deref(), &NoFlags {}))
        {
            Ok(s) => s.events,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the settings again: no Events");
                EventsSettings::default()
            }
        }
    })
}

/// Posts the Event `outcome` deserves, if Events are on; waits at most the deadline.
pub fn post_outcome(outcome: &Outcome) {
    let settings = settings();
    if !settings.enabled {
        return;
    }
    let Some(note) = outcome_event(outcome) else {
        return;
    };
    match post(settings, &note) {
        Ok(()) => tracing::info!(reason = note.reason, "Event posted"),
        Err(e) => tracing::warn!(
            reason = note.reason,
            error = %datamon_edge::chain(&e),
            "cannot post the Event; the outcome is not affected"
        ),
    }
}

/// Posts `note` about this pod with `settings`, on a thread of its own (the callers are in
/// async code and sync code alike), waiting at most the deadline.
pub fn post(settings: &EventsSettings, note: &Note) -> Result<(), EventsError> {
    let deadline = settings.timeout();
    let (tx, rx) = std::sync::mpsc::channel();
    let (settings, note) = (settings.clone(), note.clone());
    std::thread::Builder::new()
        .name("datamon-events".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(EventsError::Thread)
                .and_then(|rt| {
                    rt.block_on(async {
                        tokio::time::timeout(deadline, send(&settings, &note))
                            .await
                            .unwrap_or(Err(EventsError::Timeout(deadline)))
                    })
                });
            let _ = tx.send(result);
        })
        .map_err(EventsError::Thread)?;
    // The thread ends itself at the deadline; a little more here for it to say so.
    rx.recv_timeout(deadline + Duration::from_millis(200))
        .unwrap_or(Err(EventsError::Timeout(deadline)))
}

fn read(what: &'static str, setting: &'static str, path: &Path) -> Result<String, EventsError> {
    std::fs::read_to_string(path).map_err(|source| EventsError::Read {
        what,
        setting,
        path: path.to_path_buf(),
        source,
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The API server's URL from the settings or the in-cluster variables.
fn api_server(settings: &EventsSettings) -> Result<String, EventsError> {
    if let Some(url) = &settings.api_server {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let host = env("KUBERNETES_SERVICE_HOST").ok_or(EventsError::NoApiServer)?;
    let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
    Ok(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

async fn send(settings: &EventsSettings, note: &Note) -> Result<(), EventsError> {
    let base = api_server(settings)?;
    let token = read("service account token", "token_file", &settings.token_file)?;
    let ca = read("CA bundle", "ca_file", &settings.ca_file)?;
    let name = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .ok_or(EventsError::NoPodName)?;
    let namespace = match env("POD_NAMESPACE") {
        Some(ns) => ns,
        None => read("namespace file", "namespace_file", &settings.namespace_file)?
            .trim()
            .to_string(),
    };
    let certs = reqwest::Certificate::from_pem_bundle(ca.as_bytes()).map_err(|source| {
        EventsError::BadCa {
            path: settings.ca_file.clone(),
            source,
        }
    })?;
    let http = |source| EventsError::Http {
        url: base.clone(),
        source,
    };
    let client = reqwest::Client::builder()
        .tls_certs_only(certs)
        .build()
        .map_err(http)?;
    let auth = format!("Bearer {}", token.trim());
    let mut pod = PodRef {
        uid: env("POD_UID"),
        name,
        namespace,
    };
    if pod.uid.is_none() {
        pod.uid = pod_uid(&client, &base, &auth, &pod).await;
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = event_json(note, &pod, &now);
    let response = client
        .post(format!("{base}/api/v1/namespaces/{}/events", pod.namespace))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(http)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(EventsError::Refused {
        status: status.as_u16(),
        body: text.chars().take(300).collect(),
    })
}

/// The pod's uid from the API server, if the service account may read the pod.
async fn pod_uid(client: &reqwest::Client, base: &str, auth: &str, pod: &PodRef) -> Option<String> {
    let url = format!(
        "{base}/api/v1/namespaces/{}/pods/{}",
        pod.namespace, pod.name
    );
    let response = client.get(url).header("authorization", auth).send().await;
    let found: Option<Value> = match response {
        Ok(r) if r.status().is_success() => json_body(r).await,
        Ok(r) => {
            tracing::debug!(status = r.status().as_u16(), "cannot read the pod's uid: the Event goes without it (set POD_UID from the downward API)");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the pod's uid");
            None
        }
    };
    found?["metadata"]["uid"].as_str().map(str::to_string)
}

/// The body as JSON (reqwest's `json` feature is not in the agent's tree).
async fn json_body(response: reqwest::Response) -> Option<Value> {
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::{Reason, ReasonCode};

    fn outcome(participant: &str) -> Outcome {
        Outcome {
            participant: participant.into(),
            ..Outcome::default()
        }
    }

    #[test]
    fn a_failure_is_a_warning_with_code_and_message() {
        let mut o = outcome("datamon");
        o.reason = Some(Reason::new(
            ReasonCode::InputFailed,
            "input raw: no label v9",
        ));
        let n = outcome_event(&o).unwrap();
        assert_eq!(n.type_, "Warning");
        assert_eq!(n.reason, "DataFailed");
        assert_eq!(n.message, "datamon: input_failed: input raw: no label v9");
        // The wrapper's failures too.
        let mut app = outcome("app");
        app.exit_code = Some(3);
        app.reason = Some(Reason::new(ReasonCode::AppFailed, "exited 3"));
        assert_eq!(outcome_event(&app).unwrap().reason, "DataFailed");
    }

    #[test]
    fn successes_name_the_bundles_and_come_from_sidecars() {
        let mut o = outcome("datamon");
        o.inputs.insert("raw".into(), "A1".into());
        let n = outcome_event(&o).unwrap();
        assert_eq!((n.type_, n.reason), ("Normal", "DataReady"));
        assert_eq!(n.message, "datamon: inputs provided: raw=A1");
        o.outputs.insert("model".into(), "B2".into());
        let n = outcome_event(&o).unwrap();
        assert_eq!(n.reason, "BundleSaved");
        assert_eq!(
            n.message,
            "datamon: bundles saved: model=B2; inputs: raw=A1"
        );
        let mut app = o.clone();
        app.exit_code = Some(0);
        assert_eq!(outcome_event(&app), None);
        assert_eq!(outcome_event(&outcome("datamon")), None);
    }

    #[test]
    fn the_event_is_about_the_pod() {
        let note = Note {
            type_: "Normal",
            reason: "DataReady",
            message: "m".into(),
        };
        let pod = PodRef {
            name: "train-x7".into(),
            namespace: "team".into(),
            uid: Some("u1".into()),
        };
        let e = event_json(&note, &pod, "2026-12-01T10:00:00Z");
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "train-x7", "namespace": "team", "uid": "u1"})
        );
        assert_eq!(e["metadata"]["generateName"], "train-x7.");
        assert_eq!(e["metadata"]["namespace"], "team");
        assert_eq!(e["source"]["component"], COMPONENT);
        assert_eq!(
            (&e["type"], &e["reason"]),
            (&json!("Normal"), &json!("DataReady"))
        );
        assert_eq!(e["firstTimestamp"], "2026-12-01T10:00:00Z");
        let long = PodRef {
            name: "p".repeat(253),
            ..pod
        };
        let e = event_json(&note, &long, "2026-12-01T10:00:00Z");
        assert_eq!(e["reportingInstance"].as_str().unwrap().len(), 128);
        assert_eq!(e["metadata"]["generateName"].as_str().unwrap().len(), 241);
    }

    #[test]
    fn long_messages_are_cut() {
        let mut o = outcome("datamon");
        o.reason = Some(Reason::new(ReasonCode::Internal, "é".repeat(3000)));
        let n = outcome_event(&o).unwrap();
        assert!(n.message.len() <= MESSAGE_LIMIT && n.message.ends_with('…'));
    }

    #[test]
    fn settings_are_checked() {
        let mut s = EventsSettings::default();
        assert!(s.validate().is_ok());
        s.timeout_ms = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("events.timeout_ms"));
        s.timeout_ms = 2000;
        s.api_server = Some("http://x".into());
        assert!(s.validate().unwrap_err().to_string().contains("https://"));
    }
}
