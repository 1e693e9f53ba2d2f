//! `datamon-webhook serve`: the admission endpoint over HTTPS.
//!
//! | route | what |
//! |---|---|
//! | `POST /mutate` | AdmissionReview v1 in, AdmissionReview v1 out (`admission`) |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once a serving certificate is loaded, 503 while none is or once draining |
//! | `GET /metrics` | Prometheus/OpenMetrics text ([`metrics`]) |
//!
//! TLS 1.2 and 1.3 only (rustls), the certificate reloaded from its files when they change
//! ([`tls`]). On SIGTERM (or SIGINT): `/readyz` turns 503, the server keeps serving for
//! `--drain-delay` (so endpoints drop it), then stops accepting and lets in-flight requests
//! finish within `--shutdown-timeout`.
//!
//! - `config`: the flags ([`ServeArgs`]) and the checked settings ([`ServeConfig`]);
//! - `native`: whether the cluster runs native sidecars (`--native-sidecars auto`);
//! - `admission`: AdmissionReview in, AdmissionReview out, around [`mutate_pod`];
//! - [`tls`], [`namespace`], [`metrics`]: certificates, namespace defaults, counters;
//! - [`events`]: Kubernetes Events about admissions (`Injected`, `InjectionDenied`), posted
//!   in the background, never delaying an answer (`--events`, `--events-timeout`).
//!
//! [`main`] checks the flags before anything starts (a bad one is a
//! [`CommandError::Config`]: exit 64), then runs [`serve`], which tests call directly with
//! a bound listener and their own shutdown signal.
//!
//! [`mutate_pod`]: crate::mutate::mutate_pod

mod admission;
mod config;
pub mod events;
pub mod metrics;
pub mod namespace;
mod native;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::mutate::WebhookSettings;
use admission::{Answer, Decoded};
pub use config::{ConfigError, NativeSidecars, ServeArgs, ServeConfig};
use events::{Decision, EventsConfig, Recorder};
use metrics::{Metrics, Outcome};
use namespace::NamespaceLookup;
use native::{detect_native_sidecars, NativeSupport};
use tls::ReloadingResolver;

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

/// What to do when no Kubernetes client can be configured.
const KUBE_FIX: &str = "run in a cluster (service account), set KUBECONFIG, or pass --namespace-defaults false and --native-sidecars true|false (and --events false)";

/// Why `datamon-webhook serve` did not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A flag value cannot work; nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The flags ask for a Kubernetes client, and no configuration for one was found.
    #[error("cannot configure a Kubernetes client ({})", KUBE_FIX)]
    KubeConfig(#[source] kube::config::InferConfigError),
    /// The configuration found does not make a client.
    #[error("cannot configure a Kubernetes client ({})", KUBE_FIX)]
    KubeClient(#[source] kube::Error),
    /// The async runtime did not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The address cannot be listened on.
    #[error("cannot listen on {address}")]
    Listen {
        /// `--listen`.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error(transparent)]
    Serve(#[from] ServeError),
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
    /// Where Events about admissions go; `None`: none are posted.
    events: Option<Recorder>,
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
            let message = format!("{}\n", datamon_edge::chain(&e));
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
            if let (Some(recorder), Some(pod), false) =
                (&state.events, object.as_ref(), request.dry_run)
            {
                record(recorder, &answer, pod, &namespace);
            }
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
    // The same line at two levels: skips (most pods) at debug, the rest at info.
    macro_rules! admitted {
        ($level:ident) => {
            tracing::$level!(
                uid,
                namespace,
                pod = name,
                outcome,
                reason,
                dry_run,
                "pod admitted"
            )
        };
    }
    match answer.outcome {
        Outcome::Skipped => admitted!(debug),
        Outcome::Injected | Outcome::Denied | Outcome::Invalid => admitted!(info),
    }
}

/// Posts the Event about `answer` (injected or denied; nothing for the rest), without
/// waiting for it.
fn record(recorder: &Recorder, answer: &Answer, pod: &serde_json::Value, namespace: &str) {
    let decision = match answer.outcome {
        Outcome::Injected => Decision::Injected {
            patch: answer
                .review
                .response
                .as_ref()
                .and_then(|r| r.patch.as_deref())
                .unwrap_or_default(),
        },
        Outcome::Denied => Decision::Denied {
            message: &answer.reason,
        },
        Outcome::Skipped | Outcome::Invalid => return,
    };
    recorder.post(events::admission_event(
        decision,
        pod,
        namespace,
        std::time::SystemTime::now(),
    ));
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
/// both off (empty namespace defaults; `auto` means classic sidecars). Posts no Events
/// ([`serve_with_events`] does).
pub async fn serve(
    config: ServeConfig,
    listener: std::net::TcpListener,
    client: Option<kube::Client>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with_events(config, None, listener, client, shutdown).await
}

/// [`serve`], also posting an Event through `client` for each pod injected or denied when
/// `events` is given (and a client is).
pub async fn serve_with_events(
    config: ServeConfig,
    events: Option<EventsConfig>,
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
    let recorder = match (&events, &client) {
        (Some(events), Some(client)) => Some(Recorder::new(
            client.clone(),
            events.timeout,
            metrics.clone(),
        )),
        (Some(_), None) => {
            tracing::warn!("no Kubernetes client: no Events will be posted");
            None
        }
        (None, _) => None,
    };
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
            postgres_image: config.agent_postgres_image.clone(),
            ..WebhookSettings::default()
        },
        max_body_bytes: config.max_body_bytes,
        draining: AtomicBool::new(false),
        events: recorder,
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
        events = state.events.is_some(),
        image = %config.agent_image,
        postgres_image = %config.agent_postgres_image,
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

async fn kube_client() -> Result<kube::Client, CommandError> {
    tls::install_default_provider();
    let config = kube::Config::infer()
        .await
        .map_err(CommandError::KubeConfig)?;
    kube::Client::try_from(config).map_err(CommandError::KubeClient)
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

/// Runs `serve`: checks the flags (before anything starts), sets up logging, then serves
/// until SIGTERM or SIGINT.
pub fn main(args: ServeArgs) -> Result<(), CommandError> {
    let config = ServeConfig::from_args(&args)?;
    datamon_edge::logging::init(args.log_format, &args.loglevel);
    // One provider for every TLS use in the process (kube's client included).
    tls::install_default_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)?;
    // In a pod, the kubelet sets KUBERNETES_SERVICE_HOST: `--events auto` is on there.
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let events = args.events.enabled(in_cluster).then_some(EventsConfig {
        timeout: args.events_timeout,
    });
    runtime.block_on(async move {
        let client = if config.needs_client() || events.is_some() {
            Some(kube_client().await?)
        } else {
            None
        };
        let listener =
            std::net::TcpListener::bind(args.listen).map_err(|source| CommandError::Listen {
                address: args.listen,
                source,
            })?;
        serve_with_events(config, events, listener, client, shutdown_signal()).await?;
        Ok(())
    })
}
