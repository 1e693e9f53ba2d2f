//! The webhook's Prometheus metrics (`GET /metrics`, OpenMetrics text).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `datamon_webhook_admission_requests_total` | `outcome`: `injected`, `skipped`, `denied`, `invalid` | AdmissionReviews answered |
//! | `datamon_webhook_admission_duration_seconds` | | time from the body read to the answer |
//! | `datamon_webhook_namespace_lookups_total` | `result`: `cached`, `fetched`, `failed`, `disabled` | namespace-default lookups |
//! | `datamon_webhook_certificate_reloads_total` | `result`: `ok`, `error` | serving-certificate reloads |
//! | `datamon_webhook_events_total` | `result`: `posted`, `failed`, `timeout`, `dropped` | Kubernetes Events about admissions ([`super::events`]) |

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How an AdmissionReview was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Allowed with a patch.
    Injected,
    /// Allowed without a patch.
    Skipped,
    /// Refused (`mutate_pod` said no, or the patch could not be encoded).
    Denied,
    /// Not a usable AdmissionReview (malformed body, no `request`).
    Invalid,
}

impl Outcome {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];

/// Every metric the webhook exports, with the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Histogram,
    namespace_lookups: Family<Labels, Counter>,
    cert_reloads: Family<Labels, Counter>,
    events: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("datamon_webhook");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "admission_requests",
            "AdmissionReviews answered, by outcome",
            requests.clone(),
        );
        // 50 µs .. ~0.8 s
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 15));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview",
            duration.clone(),
        );
        let namespace_lookups = Family::<Labels, Counter>::default();
        registry.register(
            "namespace_lookups",
            "Namespace-default lookups, by result",
            namespace_lookups.clone(),
        );
        let cert_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving-certificate reloads, by result",
            cert_reloads.clone(),
        );
        let events = Family::<Labels, Counter>::default();
        registry.register(
            "events",
            "Kubernetes Events about admissions, by result",
            events.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            namespace_lookups,
            cert_reloads,
            events,
        }
    }

    /// Counts one answered AdmissionReview and its latency.
    pub(crate) fn observe_request(&self, outcome: Outcome, seconds: f64) {
        self.requests
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
        self.duration.observe(seconds);
    }

    /// Counts one namespace lookup (`cached`, `fetched`, `failed`, `disabled`).
    pub(crate) fn namespace_lookup(&self, result: &'static str) {
        self.namespace_lookups
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// Counts one certificate reload (`ok`, `error`).
    pub(crate) fn cert_reload(&self, result: &'static str) {
        self.cert_reloads.get_or_create(&[("result", result)]).inc();
    }

    /// Counts one Event post (`posted`, `failed`, `timeout`, `dropped`).
    pub(crate) fn event(&self, result: &'static str) {
        self.events.get_or_create(&[("result", result)]).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_text() {
        let m = Metrics::new();
        m.observe_request(Outcome::Injected, 0.001);
        m.observe_request(Outcome::Injected, 0.002);
        m.observe_request(Outcome::Denied, 0.001);
        m.namespace_lookup("failed");
        let text = m.encode();
        assert!(
            text.contains("datamon_webhook_admission_requests_total{outcome=\"injected\"} 2"),
            "{text}"
        );
        assert!(text.contains("datamon_webhook_admission_requests_total{outcome=\"denied\"} 1"));
        assert!(text.contains("datamon_webhook_admission_duration_seconds_count 3"));
        assert!(text.contains("datamon_webhook_namespace_lookups_total{result=\"failed\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
