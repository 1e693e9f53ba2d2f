//! The webhook served for real: HTTPS on 127.0.0.1 with certificates from `certs`, clients
//! that verify the CA, certificate reloads under traffic, limits, metrics, graceful shutdown,
//! and namespace defaults read from a fake API server.
//!
//! The fake API server (plain HTTP, answering `GET /api/v1/namespaces/<ns>` and
//! `GET /version`) is the one stand-in here: no kube-apiserver can run on these machines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test stops at its first failed step

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datamon_webhook::certs::{issue, Issued};
use datamon_webhook::serve::tls::CertFiles;
use datamon_webhook::serve::{serve, NativeSidecars, ServeConfig, ServeError};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const HOST: &str = "datamon-webhook.datamon-system.svc";

fn new_certs() -> Issued {
    issue("datamon-webhook", "datamon-system", 1).unwrap()
}

fn write_certs(dir: &Path, certs: &Issued) {
    std::fs::write(dir.join("tls.crt"), &certs.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &certs.key_pem).unwrap();
}

fn config(dir: &Path) -> ServeConfig {
    ServeConfig {
        cert_files: CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            interval: Duration::from_millis(50),
        },
        agent_image: "example.com/datamon-agent:test".into(),
        agent_postgres_image: "example.com/datamon-agent-postgres:test".into(),
        native_sidecars: NativeSidecars::True,
        namespace_defaults: false,
        namespace_cache_ttl: Duration::from_secs(30),
        namespace_lookup_timeout: Duration::from_secs(1),
        max_body_bytes: 64 * 1024,
        drain_delay: Duration::ZERO,
        shutdown_timeout: Duration::from_secs(5),
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    /// The certificate files, when the server owns them ([`Served`]).
    dir: Option<tempfile::TempDir>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.addr.port())
    }

    /// Where `tls.crt` and `tls.key` are.
    fn cert_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("a server started by Served")
            .path()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

async fn start(config: ServeConfig, kube: Option<kube::Client>) -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(serve(config, listener, kube, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        shutdown: Some(tx),
        task,
        dir: None,
    }
}

/// A server on fresh certificates (in a directory of its own), and a client that trusts
/// their CA and has seen /readyz say 200.
struct Served {
    running: Running,
    client: reqwest::Client,
    certs: Issued,
}

impl Served {
    /// Starts the test configuration ([`config`]) as changed by `adjust`; `kube` reaches
    /// the fake API server.
    async fn start(kube: Option<kube::Client>, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = new_certs();
        write_certs(dir.path(), &certs);
        let mut config = config(dir.path());
        adjust(&mut config);
        let mut running = start(config, kube).await;
        running.dir = Some(dir);
        let client = client(running.addr, &[&certs.ca_pem]);
        ready(&running, &client).await;
        Self {
            running,
            client,
            certs,
        }
    }
}

/// A client that trusts exactly `cas` (PEM), reaching `HOST` at `addr`.
fn client(addr: SocketAddr, cas: &[&str]) -> reqwest::Client {
    client_with(
        addr,
        cas,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        true,
    )
}

fn client_with(
    addr: SocketAddr,
    cas: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
    keep_alive: bool,
) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let mut tls =
        rustls::ClientConfig::builder_with_provider(datamon_webhook::serve::tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    // As the API server: HTTP/2 when offered. TLS 1.2-only clients stay on HTTP/1.1, so
    // both are exercised.
    tls.alpn_protocols = if versions.contains(&&rustls::version::TLS13) {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(HOST, addr)
        .timeout(Duration::from_secs(10));
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

/// Waits for /readyz to say 200 through `client`.
async fn ready(running: &Running, client: &reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.get(running.url("/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn review(uid: &str, namespace: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// A pod without any datamon annotation: allowed as it is, whatever the mutation does.
fn plain_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["true"]}]}
    })
}

/// Posts `body` to /mutate; the answer, which must come with a 200.
async fn post(client: &reqwest::Client, running: &Running, body: &Value) -> Value {
    let response = client
        .post(running.url("/mutate"))
        .json_body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

/// Posts a review of [`plain_pod`] in namespace `team`.
async fn post_review(client: &reqwest::Client, running: &Running, uid: &str) -> Value {
    post(client, running, &review(uid, "team", plain_pod())).await
}

fn assert_allowed_untouched(answer: &Value, uid: &str) {
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    assert_eq!(answer["response"]["uid"], uid, "{answer}");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(answer["response"].get("patch").is_none(), "{answer}");
}

/// reqwest's `json` feature is not needed for this: bodies are serialized here.
trait JsonBody {
    fn json_body(self, v: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }
}

#[tokio::test]
async fn answers_over_https_to_a_client_that_verifies_the_ca() {
    let Served {
        running,
        client,
        certs,
    } = Served::start(None, |_| {}).await;

    for i in 0..3 {
        let uid = format!("uid-{i}");
        let answer = post_review(&client, &running, &uid).await;
        assert_allowed_untouched(&answer, &uid);
    }
    let health = client.get(running.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_2);

    // A client that does not trust this CA cannot talk to the server.
    let other = new_certs();
    let stranger = client_with(
        running.addr,
        &[&other.ca_pem],
        &[&rustls::version::TLS13],
        true,
    );
    let err = stranger
        .get(running.url("/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // TLS 1.2 alone is accepted.
    let tls12 = client_with(
        running.addr,
        &[&certs.ca_pem],
        &[&rustls::version::TLS12],
        true,
    );
    let health = tls12.get(running.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_11);
    running.stop().await;
}

/// An opted-in pod gets its patch as the API server reads it: a base64 string holding a JSON
/// Patch that applies to the pod as sent.
#[tokio::test]
async fn an_injected_pod_gets_a_base64_json_patch_that_applies() {
    use base64::Engine;
    let Served {
        running, client, ..
    } = Served::start(None, |_| {}).await;

    let mut pod = plain_pod();
    pod["metadata"]["labels"]["datamon.io/inject"] = json!("true");
    pod["metadata"]["annotations"] = json!({
        "datamon.io/config": "gs://team-config",
        "datamon.io/input.raw": "{repo: measurements, label: v3, path: /data/raw}",
        "datamon.io/output.result": "{repo: results, path: /data/out, message: run}"
    });
    let answer = post(&client, &running, &review("inj", "team", pod.clone())).await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "inj");
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .expect("patch is a base64 string"),
        )
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["datamon.io/status"],
        "injected"
    );
    running.stop().await;
}

/// A ClientHello for `version` (no supported_versions extension), with a cipher suite, group
/// and signature scheme the server has.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend([7u8; 32]); // random
    body.push(0); // no session id
    body.extend([0x00, 0x02, 0xc0, 0x2b]); // ECDHE-ECDSA-AES128-GCM-SHA256
    body.extend([0x01, 0x00]); // null compression
    let extensions = [
        &[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d][..], // groups: x25519
        &[0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03][..], // ecdsa_secp256r1_sha256
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00][..],             // point formats
    ]
    .concat();
    body.extend((extensions.len() as u16).to_be_bytes());
    body.extend(extensions);
    let mut handshake = vec![0x01, 0];
    handshake.extend((body.len() as u16).to_be_bytes());
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

async fn first_reply(addr: SocketAddr, hello: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut reply = vec![0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut reply))
        .await
        .expect("an answer")
        .expect("7 bytes");
    reply
}

/// The same hello gets a ServerHello as TLS 1.2 and a fatal alert as TLS 1.1.
#[tokio::test]
async fn tls_1_1_is_refused() {
    let Served { running, .. } = Served::start(None, |_| {}).await;

    let tls12 = first_reply(running.addr, &client_hello([0x03, 0x03])).await;
    assert_eq!(
        tls12[0], 0x16,
        "expected a handshake record, got {tls12:02x?}"
    );
    assert_eq!(tls12[5], 0x02, "expected a ServerHello, got {tls12:02x?}");

    let tls11 = first_reply(running.addr, &client_hello([0x03, 0x02])).await;
    assert_eq!(tls11[0], 0x15, "expected an alert record, got {tls11:02x?}");
    assert_eq!(tls11[5], 2, "expected a fatal alert, got {tls11:02x?}");
    running.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_answers_and_metrics_count_them() {
    let Served {
        running, client, ..
    } = Served::start(None, |_| {}).await;

    // Not JSON: 400 with a clear text.
    let r = client
        .post(running.url("/mutate"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("not JSON"), "{text}");

    // JSON but not a review: 400.
    let r = client
        .post(running.url("/mutate"))
        .json_body(&json!({"hello": "world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("AdmissionReview"));

    // A review without request: a well-formed denial.
    let answer = post(
        &client,
        &running,
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
    )
    .await;
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(answer["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("no request"));

    // Larger than the limit (64 KiB here): 413.
    let mut pod = plain_pod();
    pod["metadata"]["annotations"] = json!({"filler": "x".repeat(100 * 1024)});
    let r = client
        .post(running.url("/mutate"))
        .json_body(&review("big", "team", pod))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("--max-body-bytes"));

    assert_allowed_untouched(&post_review(&client, &running, "ok").await, "ok");

    let metrics = client
        .get(running.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"datamon_webhook_admission_requests_total{outcome="invalid"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"datamon_webhook_admission_requests_total{outcome="skipped"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("datamon_webhook_admission_duration_seconds_count 5"));
    assert!(metrics.contains(r#"datamon_webhook_certificate_reloads_total{result="ok"} 1"#));
    assert!(metrics.contains(r#"datamon_webhook_namespace_lookups_total{result="disabled"} 1"#));
    running.stop().await;
}

/// Cert files are replaced (cert first, then key: in between the pair does not match and
/// must be refused) by a certificate from a new CA while clients keep sending; no request
/// fails, and afterwards a client that trusts only the new CA gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_under_traffic_fails_no_request() {
    let Served {
        running,
        certs: old,
        ..
    } = Served::start(None, |_| {}).await;
    let running = Arc::new(running);
    let new = new_certs();
    let both = [old.ca_pem.as_str(), new.ca_pem.as_str()];

    let only_new = client(running.addr, &[&new.ca_pem]);
    assert!(only_new.get(running.url("/healthz")).send().await.is_err());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for worker in 0..4 {
        // Half the workers open a new connection (a new handshake) per request.
        let client = client_with(
            running.addr,
            &both,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            worker % 2 == 0,
        );
        let (running, stop, sent) = (running.clone(), stop.clone(), sent.clone());
        loops.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let uid = format!("w{worker}-{i}");
                let answer = post_review(&client, &running, &uid).await;
                assert_allowed_untouched(&answer, &uid);
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Non-atomic replacement: a mismatched pair is visible for a while.
    std::fs::write(running.cert_dir().join("tls.crt"), &new.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(running.cert_dir().join("tls.key"), &new.key_pem).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while only_new.get(running.url("/healthz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate never came into service"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("a request failed during the reload");
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 20, "only {sent} requests were sent");

    let metrics = only_new
        .get(running.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"datamon_webhook_certificate_reloads_total{result="ok"} 2"#),
        "{metrics}"
    );
    // The mismatched pair was seen and refused (more than once if a poll also caught the
    // certificate file half written).
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"datamon_webhook_certificate_reloads_total{result="error"} "#)
        })
        .expect("a refused reload")
        .parse()
        .unwrap();
    assert!(refused >= 1, "{metrics}");
    Arc::into_inner(running).unwrap().stop().await;
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_old_one() {
    let Served { running, certs, .. } = Served::start(None, |_| {}).await;
    // A new connection (a new handshake) per request.
    let client = client_with(
        running.addr,
        &[&certs.ca_pem],
        &[&rustls::version::TLS13],
        false,
    );
    std::fs::write(
        running.cert_dir().join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    std::fs::remove_file(running.cert_dir().join("tls.key")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections still get the old certificate; still ready.
    assert_eq!(
        client
            .get(running.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_allowed_untouched(&post_review(&client, &running, "after").await, "after");
    running.stop().await;
}

#[tokio::test]
async fn not_ready_until_a_certificate_loads() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path()), None).await;
    let certs = new_certs();
    let client = client(running.addr, &[&certs.ca_pem]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(client.get(running.url("/readyz")).send().await.is_err());
    write_certs(dir.path(), &certs);
    ready(&running, &client).await;
    running.stop().await;
}

// ---- the fake API server -------------------------------------------------------------

struct FakeApi {
    addr: SocketAddr,
    namespace_gets: Arc<AtomicUsize>,
}

/// Serves `GET /api/v1/namespaces/<ns>` (labelled to enforce the Pod Security level
/// `baseline`; namespace `slow` answers after 600 ms, `hang` after 10 s, `missing` is 404)
/// and `GET /version` (1.30).
async fn fake_api() -> FakeApi {
    use axum::extract::{Path, State};
    use axum::routing::get;
    let gets = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/api/v1/namespaces/{name}",
            get(
                |State(gets): State<Arc<AtomicUsize>>, Path(name): Path<String>| async move {
                    gets.fetch_add(1, Ordering::SeqCst);
                    match name.as_str() {
                        "slow" => tokio::time::sleep(Duration::from_millis(600)).await,
                        "hang" => tokio::time::sleep(Duration::from_secs(10)).await,
                        "missing" => {
                            return json_response(
                                axum::http::StatusCode::NOT_FOUND,
                                json!({
                                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404,
                                    "message": format!("namespaces \"{name}\" not found")
                                }),
                            )
                        }
                        _ => {}
                    }
                    json_response(
                        axum::http::StatusCode::OK,
                        json!({
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {
                                "name": name,
                                "labels": {
                                    "datamon.io/inject": "enabled",
                                    "pod-security.kubernetes.io/enforce": "baseline",
                                    "pod-security.kubernetes.io/warn": "restricted",
                                },
                                "annotations": {"datamon.io/config": "gs://team-config"}
                            }
                        }),
                    )
                },
            ),
        )
        .route(
            "/version",
            get(|| async {
                json_response(
                    axum::http::StatusCode::OK,
                    json!({
                        "major": "1", "minor": "30", "gitVersion": "v1.30.2",
                        "gitCommit": "", "gitTreeState": "", "buildDate": "",
                        "goVersion": "", "compiler": "", "platform": "linux/amd64"
                    }),
                )
            }),
        )
        .with_state(gets.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeApi {
        addr,
        namespace_gets: gets,
    }
}

fn json_response(status: axum::http::StatusCode, v: Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&v).unwrap(),
    )
        .into_response()
}

fn kube_client(addr: SocketAddr) -> kube::Client {
    datamon_webhook::serve::tls::install_default_provider();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn namespace_defaults_are_cached_and_never_block_the_answer() {
    use datamon_webhook::serve::metrics::Metrics;
    use datamon_webhook::serve::namespace::{NamespaceLookup, Source};
    let api = fake_api().await;
    let metrics = Arc::new(Metrics::new());
    let lookup = NamespaceLookup::new(
        Some(kube_client(api.addr)),
        Duration::from_millis(300),
        Duration::from_millis(300),
        metrics.clone(),
    );

    let (defaults, source) = lookup.defaults("team").await;
    assert_eq!(source, Source::Fetched);
    assert_eq!(
        defaults.annotations["datamon.io/config"],
        "gs://team-config"
    );
    // The Pod Security level it enforces, from its label (`warn` is not read).
    assert_eq!(
        defaults.pod_security_enforce,
        Some(datamon_webhook::mutate::PodSecurityLevel::Baseline)
    );
    let (_, source) = lookup.defaults("team").await;
    assert_eq!(source, Source::Cached);
    assert_eq!(api.namespace_gets.load(Ordering::SeqCst), 1);

    // Past the time to live: read again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(lookup.defaults("team").await.1, Source::Fetched);
    assert_eq!(api.namespace_gets.load(Ordering::SeqCst), 2);

    // A namespace that does not exist has no defaults.
    let (defaults, source) = lookup.defaults("missing").await;
    assert_eq!(source, Source::Fetched);
    assert!(defaults.annotations.is_empty());
    assert_eq!(defaults.pod_security_enforce, None);

    // An API server slower than the deadline: empty defaults, within the deadline.
    let started = Instant::now();
    let (defaults, source) = lookup.defaults("hang").await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(source, Source::Failed);
    assert!(defaults.annotations.is_empty());

    // An API server that cannot be reached at all.
    let gone = NamespaceLookup::new(
        Some(kube_client("127.0.0.1:9".parse().unwrap())),
        Duration::from_secs(30),
        Duration::from_millis(300),
        metrics.clone(),
    );
    assert_eq!(gone.defaults("team").await.1, Source::Failed);

    let text = metrics.encode();
    assert!(
        text.contains(r#"datamon_webhook_namespace_lookups_total{result="failed"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"datamon_webhook_namespace_lookups_total{result="cached"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn the_webhook_answers_when_the_api_server_hangs() {
    let api = fake_api().await;
    let Served {
        running, client, ..
    } = Served::start(Some(kube_client(api.addr)), |config| {
        config.namespace_defaults = true;
        config.native_sidecars = NativeSidecars::Auto;
        config.namespace_lookup_timeout = Duration::from_millis(300);
    })
    .await;

    let started = Instant::now();
    let answer = post(&client, &running, &review("h", "hang", plain_pod())).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_allowed_untouched(&answer, "h");
    running.stop().await;
}

/// An in-flight request (its namespace lookup takes 600 ms) completes after the shutdown
/// signal; /readyz says 503 while draining; the server then stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let api = fake_api().await;
    let Served {
        mut running,
        client,
        ..
    } = Served::start(Some(kube_client(api.addr)), |config| {
        config.namespace_defaults = true;
        config.drain_delay = Duration::from_millis(300);
    })
    .await;

    let in_flight = {
        let client = client.clone();
        let url = running.url("/mutate");
        tokio::spawn(async move {
            client
                .post(url)
                .json_body(&review("slow-1", "slow", plain_pod()))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = running.shutdown.take().unwrap().send(());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let readyz = client.get(running.url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    let answer: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_allowed_untouched(&answer, "slow-1");

    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(running.addr).await.is_err());
}

/// The binary: bad flags exit 64 before anything starts; SIGTERM stops it with 0.
#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let bin = env!("CARGO_BIN_EXE_datamon-webhook");
    let bad = std::process::Command::new(bin)
        .args(["serve", "--namespace-lookup-timeout", "0s"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");

    let dir = tempfile::tempdir().unwrap();
    let certs = new_certs();
    write_certs(dir.path(), &certs);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--listen", &addr.to_string()])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .args(["--namespace-defaults", "false", "--native-sidecars", "true"])
        .env("DATAMON_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = Running {
        addr,
        shutdown: None,
        task: tokio::spawn(async { Ok(()) }),
        dir: None,
    };
    let client = client(addr, &[&certs.ca_pem]);
    ready(&running, &client).await;
    assert_allowed_untouched(&post_review(&client, &running, "bin").await, "bin");

    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the binary stops on SIGTERM")
        .unwrap();
    assert_eq!(out.code(), Some(0));
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let first: Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert!(first["fields"]["message"].is_string(), "{stderr}");
}

/// The image flags for pods with databases: `inject --postgres-image` names the image of a
/// database pod's agent (and not of others); `serve --agent-postgres-image` with no image is
/// a usage error (64) before anything starts.
#[test]
fn the_binary_takes_the_postgres_image_flags() {
    let bin = env!("CARGO_BIN_EXE_datamon-webhook");
    let bad = std::process::Command::new(bin)
        .args(["serve", "--agent-postgres-image", " "])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("--agent-postgres-image"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pods.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: with-db
  annotations: {datamon.io/database.pg: "{port: 5433}"}
spec: {containers: [{name: app, image: busybox, command: [ls]}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: without
  annotations: {datamon.io/output.out: "{repo: r, path: /out}"}
spec: {containers: [{name: app, image: busybox, command: [ls]}]}
"#,
    )
    .unwrap();
    let out = std::process::Command::new(bin)
        .args([
            "inject",
            "--image",
            "ex/agent:1",
            "--postgres-image",
            "ex/agent-pg:1",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pods: Vec<Value> =
        serde_norway::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
    let images = |pod: &Value| -> Vec<String> {
        pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["image"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(images(&pods[0]), ["ex/agent-pg:1"; 2]);
    assert_eq!(images(&pods[1]), ["ex/agent:1"; 2]);
    let env = pods[0]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "PGPORT" && e["value"] == "5433"),
        "{env:?}"
    );
}
