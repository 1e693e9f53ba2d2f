//! `datamon-webhook serve`: the admission endpoint over HTTPS.
//!
//! | route | what |
//! |---|---|
//! | `POST /mutate` | AdmissionReview v1 in, AdmissionReview v1 out ([`crate::admission`]) |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once a serving certificate is loaded, 503 while none is or once draining |
//! | `GET /metrics` | Prometheus/OpenMetrics text ([`crate::metrics`]) |
//!
//! TLS 1.2 and 1.3 only (rustls), the certificate reloaded from its files when they change
//! ([`crate::tls`]). On SIGTERM (or SIGINT): `/readyz` turns 503, the server keeps serving for
//! `--drain-delay` (so endpoints drop it), then stops accepting and lets in-flight requests
//! finish within `--shutdown-timeout`.
//!
//! `main` validates the flags before anything starts (exit 64 on a bad one), then runs
//! [`serve`], which tests call directly with a bound listener and their own shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::admission::{self, Answer, Decoded};
use crate::metrics::{Metrics, Outcome};
use crate::mutate::WebhookSettings;
use crate::namespace::NamespaceLookup;
use crate::tls::{self, CertFiles, ReloadingResolver};

/// Exit code for bad flags or configuration (as the agent's).
const EXIT_USAGE: u8 = 64;

/// Whether injected sidecars are native sidecars (init containers with
/// `restartPolicy: Always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecars {
    /// Ask the API server its version: native from Kubernetes 1.29 on. Until it has
    /// answered, classic sidecars (they work on every version).
    Auto,
    /// Always native.
    #[value(alias = "on")]
    True,
    /// Never native: classic sidecar containers.
    #[value(alias = "off")]
    False,
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON inside Kubernetes (`KUBERNETES_SERVICE_HOST` set), text elsewhere.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DATAMON_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM chain, leaf first); reloaded when it changes.
    #[arg(
        long,
        env = "DATAMON_WEBHOOK_TLS_CERT",
        default_value = "/etc/datamon-webhook/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// Its private key (PEM); reloaded when it changes.
    #[arg(
        long,
        env = "DATAMON_WEBHOOK_TLS_KEY",
        default_value = "/etc/datamon-webhook/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// How often to look for a new certificate (e.g. 5s, 500ms).
    #[arg(long, env = "DATAMON_WEBHOOK_CERT_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// The agent image injected when no annotation names one.
    #[arg(
        long,
        env = "DATAMON_WEBHOOK_AGENT_IMAGE",
        default_value = "ghcr.io/datamon-sidecar/datamon-agent:latest"
    )]
    pub agent_image: String,
    /// Native sidecars: auto (from the API server's version, 1.29+), true|on, false|off.
    #[arg(
        long,
        env = "DATAMON_WEBHOOK_NATIVE_SIDECARS",
        value_enum,
        default_value = "auto"
    )]
    pub native_sidecars: NativeSidecars,
    /// Read namespace annotations as defaults for their pods (needs get on namespaces).
    #[arg(long, env = "DATAMON_WEBHOOK_NAMESPACE_DEFAULTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub namespace_defaults: bool,
    /// How long a namespace's defaults are kept.
    #[arg(long, env = "DATAMON_WEBHOOK_NAMESPACE_CACHE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub namespace_cache_ttl: Duration,
    /// How long to wait for the API server before answering without namespace defaults.
    #[arg(long, env = "DATAMON_WEBHOOK_NAMESPACE_LOOKUP_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub namespace_lookup_timeout: Duration,
    /// Largest AdmissionReview accepted, in bytes (413 beyond).
    #[arg(long, env = "DATAMON_WEBHOOK_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// After SIGTERM, keep serving (with /readyz at 503) this long before closing the listener.
    #[arg(long, env = "DATAMON_WEBHOOK_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// Then give in-flight requests this long to finish.
    #[arg(long, env = "DATAMON_WEBHOOK_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Log format.
    #[arg(long, env = "DATAMON_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    /// Log filter (error, warn, info, debug, or a tracing directive).
    #[arg(long, env = "DATAMON_LOGLEVEL", default_value = "info")]
    pub loglevel: String,
}

/// `500ms`, `5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: write e.g. 500ms, 5s or 2m"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

/// A flag value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// Validated settings of the server (everything but where it listens and how it logs).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Certificate and key files, and how often to look at them.
    pub cert_files: CertFiles,
    /// The agent image injected when no annotation names one.
    pub agent_image: String,
    /// Native sidecar mode.
    pub native_sidecars: NativeSidecars,
    /// Whether namespace annotations are looked up.
    pub namespace_defaults: bool,
    /// How long namespace defaults are cached.
    pub namespace_cache_ttl: Duration,
    /// Deadline of one namespace lookup.
    pub namespace_lookup_timeout: Duration,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Time serving with /readyz at 503 after the shutdown signal.
    pub drain_delay: Duration,
    /// Time given to in-flight requests after that.
    pub shutdown_timeout: Duration,
}

impl ServeConfig {
    /// Checks the flags.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        if args.cert_reload_interval < Duration::from_millis(10) {
            return Err(ConfigError(
                "--cert-reload-interval must be at least 10ms".into(),
            ));
        }
        if args.namespace_lookup_timeout.is_zero() {
            return Err(ConfigError(
                "--namespace-lookup-timeout must be more than 0 (the webhook's own timeoutSeconds bounds it from above)".into(),
            ));
        }
        if args.max_body_bytes < 4096 {
            return Err(ConfigError(
                "--max-body-bytes must be at least 4096 (pods are often tens of KiB)".into(),
            ));
        }
        if args.agent_image.trim().is_empty() {
            return Err(ConfigError("--agent-image must name an image".into()));
        }
        Ok(Self {
            cert_files: CertFiles {
                cert: args.tls_cert.clone(),
                key: args.tls_key.clone(),
                interval: args.cert_reload_interval,
            },
            agent_image: args.agent_image.clone(),
            native_sidecars: args.native_sidecars,
            namespace_defaults: args.namespace_defaults,
            namespace_cache_ttl: args.namespace_cache_ttl,
            namespace_lookup_timeout: args.namespace_lookup_timeout,
            max_body_bytes: args.max_body_bytes,
            drain_delay: args.drain_delay,
            shutdown_timeout: args.shutdown_timeout,
        })
    }

    /// Whether the server needs a Kubernetes client.
    pub fn needs_client(&self) -> bool {
        self.namespace_defaults || self.native_sidecars == NativeSidecars::Auto
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listener failed.
    #[error("the HTTPS listener failed")]
    Io(#[from] std::io::Error),
}

/// Native sidecar support as known now: unknown (0), yes (1), no (2).
#[derive(Debug, Default)]
struct NativeSupport(AtomicU8);

impl NativeSupport {
    fn set(&self, supported: bool) {
        self.0
            .store(if supported { 1 } else { 2 }, Ordering::Relaxed);
    }
    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 1
    }
}

/// Whether a server version (`major`, `minor` as the API server writes them, e.g. "1",
/// "29+") runs native sidecars by default (1.29 and later).
pub fn supports_native_sidecars(major: &str, minor: &str) -> Option<bool> {
    let digits = |s: &str| -> Option<u32> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let (major, minor) = (digits(major)?, digits(minor)?);
    Some(major > 1 || (major == 1 && minor >= 29))
}

/// Asks the API server its version until it answers (every 10 s).
async fn detect_native_sidecars(client: kube::Client, support: Arc<NativeSupport>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
            Ok(Ok(info)) => match supports_native_sidecars(&info.major, &info.minor) {
                Some(supported) => {
                    support.set(supported);
                    tracing::info!(
                        version = %info.git_version,
                        native_sidecars = supported,
                        "API server version known"
                    );
                    return;
                }
                None => {
                    support.set(false);
                    tracing::warn!(major = %info.major, minor = %info.minor, "unreadable API server version: classic sidecars");
                    return;
                }
            },
            Ok(Err(e)) => {
                let error = tls::error_chain(&e);
                tracing::warn!(%error, "cannot read the API server's version yet: classic sidecars until it answers");
            }
            Err(_) => tracing::warn!(
                "the API server's version did not come within 5s: classic sidecars until it answers"
            ),
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[derive(Debug)]
struct AppState {
    metrics: Arc<Metrics>,
    namespaces: NamespaceLookup,
    resolver: Arc<ReloadingResolver>,
    native: Arc<NativeSupport>,
    /// The settings from the flags; `native_sidecars_supported` is set per request.
    settings: WebhookSettings,
    max_body_bytes: usize,
    draining: AtomicBool,
}

impl AppState {
    fn settings(&self) -> WebhookSettings {
        WebhookSettings {
            native_sidecars_supported: self.native.get(),
            ..self.settings.clone()
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn mutate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "the AdmissionReview is larger than {} bytes (--max-body-bytes)\n",
                    state.max_body_bytes
                )
            } else {
                format!("cannot read the request body: {}\n", rejection.body_text())
            };
            state
                .metrics
                .observe_request(Outcome::Invalid, started.elapsed().as_secs_f64());
            tracing::warn!(status = status.as_u16(), "{}", message.trim_end());
            return (status, message).into_response();
        }
    };
    let answer = match admission::decode(&body) {
        Err(e) => {
            let message = format!("{}\n", tls::error_chain(&e));
            state
                .metrics
                .observe_request(Outcome::Invalid, started.elapsed().as_secs_f64());
            tracing::warn!("malformed request: {}", message.trim_end());
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
        Ok(Decoded::NoRequest(answer)) => *answer,
        Ok(Decoded::Request { request, object }) => {
            let namespace = admission::namespace_of(&request, object.as_ref());
            let defaults = if admission::not_ours(&request).is_none() {
                state.namespaces.defaults(&namespace).await.0
            } else {
                Default::default()
            };
            let answer = admission::decide(&request, object.as_ref(), &defaults, &state.settings());
            log_answer(
                &answer,
                &request.uid,
                &namespace,
                object.as_ref(),
                request.dry_run,
            );
            answer
        }
    };
    let Answer {
        review, outcome, ..
    } = answer;
    let response = match admission::encode(&review) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            // Not expected: the review is plain data.
            tracing::error!(error = %e, "cannot encode the AdmissionReview");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the answer\n",
            )
                .into_response();
        }
    };
    state
        .metrics
        .observe_request(outcome, started.elapsed().as_secs_f64());
    response
}

fn log_answer(
    answer: &Answer,
    uid: &str,
    namespace: &str,
    pod: Option<&serde_json::Value>,
    dry_run: bool,
) {
    let meta = pod.and_then(|p| p.get("metadata"));
    let name = meta
        .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let outcome = answer.outcome.as_str();
    let reason = answer.reason.as_str();
    match answer.outcome {
        Outcome::Skipped => {
            tracing::debug!(
                uid,
                namespace,
                pod = name,
                outcome,
                reason,
                dry_run,
                "pod admitted"
            )
        }
        _ => tracing::info!(
            uid,
            namespace,
            pod = name,
            outcome,
            reason,
            dry_run,
            "pod admitted"
        ),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !state.resolver.is_loaded() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate loaded\n",
        )
            .into_response()
    } else {
        "ok\n".into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serves on `listener` until `shutdown` completes, then drains and stops gracefully.
/// `client` reaches the API server (namespace defaults, `auto` native sidecars); `None` turns
/// both off (empty namespace defaults; `auto` means classic sidecars).
pub async fn serve(
    config: ServeConfig,
    listener: std::net::TcpListener,
    client: Option<kube::Client>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let resolver = Arc::new(ReloadingResolver::default());
    let mut watcher =
        tls::Watcher::new(config.cert_files.clone(), resolver.clone(), metrics.clone());
    watcher.check().await;
    let tls_config = RustlsConfig::from_config(Arc::new(tls::server_config(resolver.clone())?));
    let watch_task = tokio::spawn(watcher.run());

    let native = Arc::new(NativeSupport::default());
    let mut detect_task = None;
    match (config.native_sidecars, &client) {
        (NativeSidecars::True, _) => native.set(true),
        (NativeSidecars::False, _) | (NativeSidecars::Auto, None) => native.set(false),
        (NativeSidecars::Auto, Some(client)) => {
            detect_task = Some(tokio::spawn(detect_native_sidecars(
                client.clone(),
                native.clone(),
            )));
        }
    }
    let namespace_client = if config.namespace_defaults {
        client
    } else {
        None
    };
    let state = Arc::new(AppState {
        metrics: metrics.clone(),
        namespaces: NamespaceLookup::new(
            namespace_client,
            config.namespace_cache_ttl,
            config.namespace_lookup_timeout,
            metrics,
        ),
        resolver,
        native,
        settings: WebhookSettings {
            image: config.agent_image.clone(),
            ..WebhookSettings::default()
        },
        max_body_bytes: config.max_body_bytes,
        draining: AtomicBool::new(false),
    });

    let handle = axum_server::Handle::new();
    let local = listener.local_addr()?;
    let server = axum_server::from_tcp(listener)?
        .acceptor(RustlsAcceptor::new(tls_config))
        .handle(handle.clone());
    {
        let state = state.clone();
        let (drain, grace) = (config.drain_delay, config.shutdown_timeout);
        tokio::spawn(async move {
            shutdown.await;
            state.draining.store(true, Ordering::Relaxed);
            tracing::info!(
                drain_delay = ?drain,
                "shutting down: /readyz now says not ready"
            );
            tokio::time::sleep(drain).await;
            tracing::info!(connections = handle.connection_count(), timeout = ?grace, "closing the listener; waiting for in-flight requests");
            handle.graceful_shutdown(Some(grace));
        });
    }
    tracing::info!(
        address = %local,
        native_sidecars = ?config.native_sidecars,
        namespace_defaults = config.namespace_defaults,
        image = %config.agent_image,
        "serving admission reviews over HTTPS"
    );
    let result = server.serve(router(state).into_make_service()).await;
    watch_task.abort();
    if let Some(task) = detect_task {
        task.abort();
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

async fn kube_client() -> Result<kube::Client, String> {
    tls::install_default_provider();
    let config = kube::Config::infer()
        .await
        .map_err(|e| tls::error_chain(&e))?;
    kube::Client::try_from(config).map_err(|e| tls::error_chain(&e))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot catch SIGTERM; only SIGINT stops the server gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs `serve`.
pub fn main(args: ServeArgs) -> ExitCode {
    let config = match ServeConfig::from_args(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("datamon-webhook serve: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(args.log_format, &args.loglevel);
    // One provider for every TLS use in the process (kube's client included).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("datamon-webhook serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let client = if config.needs_client() {
            match kube_client().await {
                Ok(client) => Some(client),
                Err(error) => {
                    tracing::error!(
                        %error,
                        "cannot configure a Kubernetes client: run in a cluster (service account), set KUBECONFIG, or pass --namespace-defaults false and --native-sidecars true|false"
                    );
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        } else {
            None
        };
        let listener = match std::net::TcpListener::bind(args.listen) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, address = %args.listen, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        match serve(config, listener, client, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let error = tls::error_chain(&e);
                tracing::error!(%error, "the server failed");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn native_sidecars_from_1_29() {
        assert_eq!(supports_native_sidecars("1", "28"), Some(false));
        assert_eq!(supports_native_sidecars("1", "29+"), Some(true));
        assert_eq!(supports_native_sidecars("1", "35"), Some(true));
        assert_eq!(supports_native_sidecars("", "x"), None);
    }
}
