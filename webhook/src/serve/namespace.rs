//! Namespace defaults: the annotations of the pod's namespace and the Pod Security level its
//! `pod-security.kubernetes.io/enforce` label names, read through the Kubernetes API and
//! cached.
//!
//! A lookup never holds an admission answer for long: it is cut after a short deadline
//! (1 s by default), and then the last known value is used if there is one (even past its
//! time to live), else empty defaults, so the pod is judged on what it says itself. Each
//! failure is logged as a warning and counted (`namespace_lookups_total{result="failed"}`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use super::metrics::Metrics;
use crate::mutate::NamespaceDefaults;

/// Where a lookup's answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Lookups are off (`--namespace-defaults false`): empty defaults.
    Disabled,
    /// From the cache, within its time to live.
    Cached,
    /// Just read from the API server.
    Fetched,
    /// The API server did not answer in time, or failed: the last known value, or empty.
    Failed,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Disabled => "disabled",
            Source::Cached => "cached",
            Source::Fetched => "fetched",
            Source::Failed => "failed",
        }
    }
}

/// Why a namespace could not be read.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    #[error("the API server refused or failed the request")]
    Api(#[source] kube::Error),
}

#[derive(Clone, Debug)]
struct Entry {
    at: Instant,
    defaults: NamespaceDefaults,
}

/// Reads namespace defaults through the API, with a cache.
pub struct NamespaceLookup {
    client: Option<kube::Client>,
    ttl: Duration,
    deadline: Duration,
    cache: Mutex<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for NamespaceLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceLookup")
            .field("enabled", &self.client.is_some())
            .field("ttl", &self.ttl)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl NamespaceLookup {
    /// Looks namespaces up through `client` (`None`: lookups are off), keeping answers `ttl`
    /// and waiting at most `deadline` for the API server.
    pub fn new(
        client: Option<kube::Client>,
        ttl: Duration,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            ttl,
            deadline,
            cache: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The defaults of `namespace`, and where they came from.
    pub async fn defaults(&self, namespace: &str) -> (NamespaceDefaults, Source) {
        let (defaults, source) = self.lookup(namespace).await;
        self.metrics.namespace_lookup(source.label());
        (defaults, source)
    }

    async fn lookup(&self, namespace: &str) -> (NamespaceDefaults, Source) {
        let Some(client) = &self.client else {
            return (NamespaceDefaults::default(), Source::Disabled);
        };
        let cached = self.cached(namespace);
        if let Some(entry) = &cached {
            if entry.at.elapsed() < self.ttl {
                return (entry.defaults.clone(), Source::Cached);
            }
        }
        match self.fetch(client, namespace).await {
            Ok(defaults) => {
                let entry = Entry {
                    at: Instant::now(),
                    defaults: defaults.clone(),
                };
                match self.cache.lock() {
                    Ok(mut cache) => cache.insert(namespace.to_string(), entry),
                    Err(poisoned) => poisoned.into_inner().insert(namespace.to_string(), entry),
                };
                (defaults, Source::Fetched)
            }
            Err(e) => {
                let error = datamon_edge::chain(&e);
                let stale = cached.is_some();
                tracing::warn!(
                    namespace,
                    %error,
                    using = if stale { "the last known defaults" } else { "no namespace defaults" },
                    "cannot read the namespace's defaults; answering with what the pod says"
                );
                (
                    cached.map(|e| e.defaults).unwrap_or_default(),
                    Source::Failed,
                )
            }
        }
    }

    fn cached(&self, namespace: &str) -> Option<Entry> {
        match self.cache.lock() {
            Ok(cache) => cache.get(namespace).cloned(),
            Err(poisoned) => poisoned.into_inner().get(namespace).cloned(),
        }
    }

    async fn fetch(
        &self,
        client: &kube::Client,
        namespace: &str,
    ) -> Result<NamespaceDefaults, LookupError> {
        let api: Api<Namespace> = Api::all(client.clone());
        let found = tokio::time::timeout(self.deadline, api.get_opt(namespace))
            .await
            .map_err(|_| LookupError::Timeout(self.deadline))?
            .map_err(LookupError::Api)?;
        // A namespace that does not exist (yet) has no defaults.
        let (annotations, labels) = found
            .map(|ns| {
                let meta = ns.metadata;
                (
                    meta.annotations.unwrap_or_default(),
                    meta.labels.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        Ok(NamespaceDefaults::from_metadata(annotations, &labels))
    }
}
