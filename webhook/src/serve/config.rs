//! The flags of `serve` ([`ServeArgs`], each also an environment variable), and the
//! settings the server runs with ([`ServeConfig`]): checked at once, before anything starts,
//! so that a bad value is a usage error (exit 64) that names the flag and the fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use datamon_edge::LogFormat;

use super::tls::CertFiles;

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
        default_value = crate::mutate::DEFAULT_AGENT_IMAGE
    )]
    pub agent_image: String,
    /// The agent image with PostgreSQL, injected into pods with databases when no
    /// annotation names one.
    #[arg(
        long,
        env = "DATAMON_WEBHOOK_AGENT_POSTGRES_IMAGE",
        default_value = crate::mutate::DEFAULT_AGENT_POSTGRES_IMAGE
    )]
    pub agent_postgres_image: String,
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
    /// Kubernetes Events about admissions (`Injected`, `InjectionDenied`): auto (on in a
    /// cluster), true|on, false|off. Needs create on events (manifests/base/rbac.yaml).
    #[arg(
        long,
        env = "DATAMON_WEBHOOK_EVENTS",
        value_enum,
        default_value = "auto"
    )]
    pub events: super::events::EventsMode,
    /// How long one Event post may wait for the API server (it never delays an answer).
    #[arg(long, env = "DATAMON_WEBHOOK_EVENTS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub events_timeout: Duration,
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

/// A duration flag: `500ms`, `5s`, `2m`, `1h 30m` (humantime's units), or a bare number
/// of seconds (`3`, `0.5`). Clap names the flag in front of the error.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bare = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let parsed = if bare {
        humantime::parse_duration(&format!("{s}s"))
    } else {
        humantime::parse_duration(s)
    };
    parsed.map_err(|e| format!("{s:?} is not a duration ({e}): write e.g. 500ms, 5s or 2m"))
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
    /// The agent image of pods with databases, when no annotation names one.
    pub agent_postgres_image: String,
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
    pub(crate) fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
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
        if args.events_timeout.is_zero() {
            return Err(ConfigError(
                "--events-timeout must be more than 0 (e.g. 2s), or pass --events false".into(),
            ));
        }
        if args.max_body_bytes < 4096 {
            return Err(ConfigError(
                "--max-body-bytes must be at least 4096 (pods are often tens of KiB)".into(),
            ));
        }
        for (flag, image) in [
            ("--agent-image", &args.agent_image),
            ("--agent-postgres-image", &args.agent_postgres_image),
        ] {
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(ConfigError(format!(
                    "{flag} must name an image, e.g. registry.example.com/datamon-agent:1.2"
                )));
            }
        }
        Ok(Self {
            cert_files: CertFiles {
                cert: args.tls_cert.clone(),
                key: args.tls_key.clone(),
                interval: args.cert_reload_interval,
            },
            agent_image: args.agent_image.clone(),
            agent_postgres_image: args.agent_postgres_image.clone(),
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
    pub(crate) fn needs_client(&self) -> bool {
        self.namespace_defaults || self.native_sidecars == NativeSidecars::Auto
    }
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
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("x").is_err());
        let e = parse_duration("5 parsecs").unwrap_err();
        assert!(e.contains("write e.g. 500ms"), "{e}");
    }
}
