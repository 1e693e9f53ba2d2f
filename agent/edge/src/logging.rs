//! One `tracing` setup for both binaries: logs on stderr, filtered by a directive
//! (`info`, `datamon_agent=debug`), JSON lines inside Kubernetes and text elsewhere.

use serde::{Deserialize, Serialize};

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON inside Kubernetes (`KUBERNETES_SERVICE_HOST` set), text elsewhere.
    #[default]
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Whether logs are JSON, given whether the process runs in a Kubernetes pod.
    pub fn is_json(self, in_kubernetes: bool) -> bool {
        match self {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => in_kubernetes,
        }
    }
}

/// Installs the process's subscriber (once; a second call changes nothing). An invalid
/// filter falls back to `info`.
pub fn init(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let in_kubernetes = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // An Err only says a subscriber is installed already (tests that run commands twice).
    let _ = if format.is_json(in_kubernetes) {
        builder.json().try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_json_only_in_kubernetes() {
        assert!(LogFormat::Auto.is_json(true));
        assert!(!LogFormat::Auto.is_json(false));
        assert!(LogFormat::Json.is_json(false));
        assert!(!LogFormat::Text.is_json(true));
    }
}
