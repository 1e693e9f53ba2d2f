//! Kubernetes Events from the served webhook: an injected pod and a denied pod each get
//! their Event (reason, type, message, involvedObject) at a fake API server, and an API
//! server that never answers a post does not hold the admission answer.
//!
//! The fake API server (plain HTTP on 127.0.0.1, recording `POST
//! /api/v1/namespaces/<ns>/events`; in namespace `hang` it never answers) is the one
//! stand-in here: no kube-apiserver can run on these machines. The webhook itself is the
//! real server, over HTTPS with certificates from `certs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datamon_webhook::serve::events::EventsConfig;
use datamon_webhook::serve::tls::CertFiles;
use datamon_webhook::serve::{serve_with_events, NativeSidecars, ServeConfig};
use serde_json::{json, Value};

const AGENT: &str = "example.com/datamon-agent:events-test";
const SNI: &str = "datamon-webhook.datamon-system.svc";

/// The Events the fake API server received, in order.
type Received = Arc<Mutex<Vec<Value>>>;

/// Starts the fake API server; returns its address and what it receives.
async fn fake_api_server() -> (SocketAddr, Received) {
    use axum::extract::{Path, State};
    let received: Received = Arc::default();
    let app =
        axum::Router::new()
            .route(
                "/api/v1/namespaces/{ns}/events",
                axum::routing::post(
                    |State(got): State<Received>,
                     Path(ns): Path<String>,
                     body: axum::body::Bytes| async move {
                        if ns == "hang" {
                            // Longer than any test: the post's deadline must end it.
                            tokio::time::sleep(Duration::from_secs(120)).await;
                        }
                        let mut event: Value = serde_json::from_slice(&body).unwrap();
                        got.lock().unwrap().push(event.clone());
                        event["metadata"]["name"] = json!("created.1");
                        (
                            axum::http::StatusCode::CREATED,
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            serde_json::to_vec(&event).unwrap(),
                        )
                    },
                ),
            )
            .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

/// The webhook serving with Events on, reaching the API server at `api`; the URL of its
/// `/mutate`, its `/metrics`, and an HTTPS client trusting its CA.
struct Webhook {
    base: String,
    https: reqwest::Client,
    _certs: tempfile::TempDir,
}

impl Webhook {
    async fn start(api: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let issued = datamon_webhook::certs::issue("datamon-webhook", "datamon-system", 1).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &issued.key_pem).unwrap();
        let config = ServeConfig {
            cert_files: CertFiles {
                cert: dir.path().join("tls.crt"),
                key: dir.path().join("tls.key"),
                interval: Duration::from_secs(5),
            },
            agent_image: AGENT.into(),
            agent_postgres_image: "example.com/datamon-agent-postgres:events-test".into(),
            native_sidecars: NativeSidecars::False,
            namespace_defaults: false,
            namespace_cache_ttl: Duration::from_secs(30),
            namespace_lookup_timeout: Duration::from_secs(1),
            max_body_bytes: 1 << 20,
            drain_delay: Duration::ZERO,
            shutdown_timeout: Duration::from_secs(5),
        };
        datamon_webhook::serve::tls::install_default_provider();
        let kube =
            kube::Client::try_from(kube::Config::new(format!("http://{api}").parse().unwrap()))
                .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let events = EventsConfig {
            timeout: Duration::from_millis(500),
        };
        tokio::spawn(serve_with_events(
            config,
            Some(events),
            listener,
            Some(kube),
            std::future::pending(),
        ));
        let mut tls =
            rustls::ClientConfig::builder_with_provider(datamon_webhook::serve::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates({
                    use rustls::pki_types::pem::PemObject;
                    let mut roots = rustls::RootCertStore::empty();
                    for c in
                        rustls::pki_types::CertificateDer::pem_slice_iter(issued.ca_pem.as_bytes())
                    {
                        roots.add(c.unwrap()).unwrap();
                    }
                    roots
                })
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let https = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .resolve(SNI, addr)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let hook = Self {
            base: format!("https://{SNI}:{}", addr.port()),
            https,
            _certs: dir,
        };
        let started = Instant::now();
        while hook.get("/readyz").await.is_none_or(|(s, _)| s != 200) {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hook
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self
            .https
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }

    /// Admits `pod` (CREATE in `namespace`); the AdmissionReview's `response`.
    async fn admit(&self, namespace: &str, pod: Value) -> Value {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": format!("uid-{namespace}"),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
                "object": pod,
                "dryRun": false
            }
        });
        let r = self
            .https
            .post(format!("{}/mutate", self.base))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&review).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let answer: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        answer["response"].clone()
    }

    /// Waits (10 s at most) until `/metrics` has `line`.
    async fn metrics_show(&self, line: &str) {
        let started = Instant::now();
        loop {
            let (_, text) = self.get("/metrics").await.unwrap();
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no {line:?} in\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits (10 s at most) for the `n`th Event received.
async fn nth_event(received: &Received, n: usize) -> Value {
    let started = Instant::now();
    loop {
        if let Some(e) = received.lock().unwrap().get(n) {
            return e.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no Event {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pod of the Job `train` (as the job controller creates it: generateName, an owner
/// reference, no uid yet) with a downloaded input.
fn job_pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "train-",
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": "train",
                "uid": "0b9c5bb2-0000-4000-8000-00000000a11c",
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "busybox", "command": ["ls", "/data/raw"]}]
        }
    })
}

#[tokio::test]
async fn an_injected_pod_and_a_denied_pod_each_get_their_event() {
    let (api, received) = fake_api_server().await;
    let hook = Webhook::start(api).await;

    let injected = hook
        .admit(
            "team",
            job_pod(json!({
                "datamon.io/config": "gs://team-config",
                "datamon.io/input.raw": "{repo: raw, path: /data/raw}",
                "datamon.io/input.images": "{repo: images, path: /mnt/datamon/images, mode: mount}",
                "datamon.io/output.model": "{repo: models, path: /data/model}"
            })),
        )
        .await;
    assert_eq!(injected["allowed"], true, "{injected}");
    assert!(injected["patch"].is_string(), "{injected}");
    let event = nth_event(&received, 0).await;
    assert_eq!(event["reason"], "Injected", "{event}");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["metadata"]["namespace"], "team");
    assert_eq!(event["metadata"]["generateName"], "train.");
    assert_eq!(
        event["involvedObject"],
        json!({
            "apiVersion": "batch/v1", "kind": "Job", "name": "train", "namespace": "team",
            "uid": "0b9c5bb2-0000-4000-8000-00000000a11c"
        })
    );
    assert_eq!(
        event["message"],
        format!(
            "datamon agent {AGENT} as a classic sidecar; inputs: images (mount), raw (download); outputs: model"
        )
    );
    assert_eq!(event["source"]["component"], "datamon-webhook");
    assert_eq!(event["count"], 1);

    // A pod of nobody's, refused: the Event is about its generateName, with the denial.
    let denied = hook
        .admit(
            "team",
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "adhoc-",
                    "annotations": {"datamon.io/input.raw": "{repo: raw}"}
                },
                "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["true"]}]}
            }),
        )
        .await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let event = nth_event(&received, 1).await;
    assert_eq!(event["reason"], "InjectionDenied", "{event}");
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "adhoc-", "namespace": "team"})
    );
    assert_eq!(event["message"], denied["status"]["message"]);
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("datamon.io/input.raw"),
        "{event}"
    );

    // A pod without datamon annotations: no Event (its post would be the third).
    let skipped = hook.admit("team", job_pod(json!({"team": "x"}))).await;
    assert_eq!(skipped["allowed"], true);
    hook.metrics_show(r#"datamon_webhook_events_total{result="posted"} 2"#)
        .await;
    assert_eq!(received.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_api_server_that_never_answers_does_not_hold_the_admission() {
    let (api, received) = fake_api_server().await;
    let hook = Webhook::start(api).await;
    let pod = job_pod(json!({"datamon.io/input.raw": "{repo: raw, path: /data/raw}"}));
    // Answered, although the Event's post gets no answer at all.
    let answer = hook.admit("hang", pod.clone()).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(answer["patch"].is_string());
    // The post is given up at its deadline and counted; nothing was recorded.
    hook.metrics_show(r#"datamon_webhook_events_total{result="timeout"} 1"#)
        .await;
    assert!(received.lock().unwrap().is_empty());
    // And the next admission, elsewhere, still gets its Event.
    assert_eq!(hook.admit("team", pod).await["allowed"], true);
    assert_eq!(nth_event(&received, 0).await["reason"], "Injected");
}
