//! The webhook as a cluster runs it, on this machine: `datamon-webhook certs` writes a CA and
//! a serving certificate for its Service name, `datamon-webhook serve` listens on
//! 127.0.0.1 over HTTPS, and [`Webhook::post`] talks to it as the API server does (TLS
//! verified against the generated CA, for the Service's DNS name, HTTP/1.1).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use super::DemoError;
use crate::DEADLINE;

/// The Service name the certificate is for, as the API server calls the webhook.
pub const HOST: &str = "datamon-webhook.datamon-system.svc";

/// How long one request may take.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// A running `datamon-webhook serve`; killed when dropped.
pub struct Webhook {
    child: Child,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    rt: tokio::runtime::Runtime,
    /// Its log (stderr).
    pub log: PathBuf,
}

/// The images the webhook injects, by the names of the built archives.
pub struct Images<'a> {
    /// `--agent-image`.
    pub agent: &'a str,
    /// `--agent-postgres-image`.
    pub agent_postgres: &'a str,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

impl Webhook {
    /// `certs --out <dir>/certs`, then `serve` on a free port of 127.0.0.1 with native
    /// sidecars and no namespace defaults (there is no API server); waits for `/readyz`.
    pub fn start(bin: &Path, dir: &Path, images: &Images<'_>) -> Result<Self, DemoError> {
        let certs = dir.join("certs");
        let out = Command::new(bin)
            .args(["certs", "--out"])
            .arg(&certs)
            .output()
            .map_err(io(format!("run {} certs", bin.display())))?;
        if !out.status.success() {
            return Err(DemoError::Step {
                step: "datamon-webhook certs".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let ca = std::fs::read(certs.join("ca.crt")).map_err(io("read the generated ca.crt"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| DemoError::Step {
                step: "read ca.crt".into(),
                detail: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| DemoError::Step {
                step: "trust ca.crt".into(),
                detail: e.to_string(),
            })?;
        }
        let mut tls =
            rustls::ClientConfig::builder_with_provider(datamon_webhook::serve::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| DemoError::Step {
                    step: "configure TLS".into(),
                    detail: e.to_string(),
                })?
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("find a free port on 127.0.0.1"))?
            .port();
        let log = dir.join("webhook.log");
        let log_file = std::fs::File::create(&log).map_err(io("create webhook.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key")
            .arg(certs.join("tls.key"))
            .args(["--agent-image", images.agent])
            .args(["--agent-postgres-image", images.agent_postgres])
            .args(["--native-sidecars", "true", "--namespace-defaults", "false"])
            .args(["--log-format", "text"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(io(format!("start {} serve", bin.display())))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("start a tokio runtime"))?;
        let mut webhook = Self {
            child,
            port,
            tls: Arc::new(tls),
            rt,
            log,
        };
        webhook.wait_ready()?;
        Ok(webhook)
    }

    /// Its address, as printed.
    pub fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path} (127.0.0.1)", self.port)
    }

    fn wait_ready(&mut self) -> Result<(), DemoError> {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok((200, _)) = self.request("GET", "/readyz", None) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(&format!("exited ({status}) before /readyz said 200")));
            }
            if Instant::now() >= until {
                return Err(self.failed(&format!("/readyz not 200 within {DEADLINE:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn failed(&self, what: &str) -> DemoError {
        DemoError::Step {
            step: "datamon-webhook serve".into(),
            detail: format!(
                "{what}; its log ({}):\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    /// POSTs `review` to `/mutate`: the AdmissionReview it answers.
    pub fn mutate(&self, review: &Value) -> Result<Value, DemoError> {
        let (status, body) = self.request("POST", "/mutate", Some(review.to_string()))?;
        if status != 200 {
            return Err(self.failed(&format!("/mutate answered {status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| self.failed(&format!("/mutate: not JSON: {e}")))
    }

    /// One request over a new TLS connection: the status and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), DemoError> {
        let tls = self.tls.clone();
        let port = self.port;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{HOST}:{port}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| DemoError::Step {
                step: format!("{method} {path}"),
                detail: e.to_string(),
            })?;
        let exchange = async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from(HOST).map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            let response = sender
                .send_request(req)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok::<_, std::io::Error>((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        self.rt
            .block_on(async { tokio::time::timeout(REQUEST_DEADLINE, exchange).await })
            .map_err(|_| DemoError::Step {
                step: format!("{method} {path}"),
                detail: format!("no answer within {REQUEST_DEADLINE:?}"),
            })?
            .map_err(io(format!("{method} https://{HOST}:{port}{path}")))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An AdmissionReview of `pod` as the API server sends it for a CREATE in `namespace`.
pub fn review(uid: &str, namespace: &str, pod: &Value) -> Value {
    let gvk = |kind: &str| serde_json::json!({"group": "", "version": "v1", "kind": kind});
    let request = serde_json::json!({
        "uid": uid, "kind": gvk("Pod"), "requestKind": gvk("Pod"),
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace, "operation": "CREATE", "dryRun": false,
        "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
        "object": pod, "oldObject": null,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    });
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}
