//! The ingress's Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format:
//! requests by operation and status, a latency histogram per operation, requests in flight,
//! whether the NATS connection is up, authentication failures, rate-limit refusals, reloads
//! and active credentials. Operations, not raw paths, label the series, so
//! customer ids never become label values.

use std::time::Duration;

use customers_shared::runtime::metrics;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What a request asked for, as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are written as the variants' names
pub enum Operation {
    create,
    get,
    list,
    healthz,
    readyz,
    metrics,
    openapi,
    asyncapi,
    /// Unknown paths and methods (404, 405).
    other,
}

/// What a reload read again.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are written as the variants' names
pub enum ReloadSource {
    keys,
    tls,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    source: ReloadSource,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: Operation,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Operation,
}

type DurationFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: DurationFamily,
    in_flight: Gauge,
    nats_connected: Gauge<i64, std::sync::atomic::AtomicI64>,
    auth_failures: Family<ReasonLabels, Counter>,
    rate_limited: Family<CredentialLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    active_credentials: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("customers_ingress"),
            requests: Family::default(),
            duration: DurationFamily::new_with_constructor(metrics::latency_histogram),
            in_flight: Gauge::default(),
            nats_connected: Gauge::default(),
            auth_failures: Family::default(),
            rate_limited: Family::default(),
            reloads: Family::default(),
            active_credentials: Gauge::default(),
        };
        metrics.registry.register(
            "http_requests",
            "HTTP requests answered, by operation and status",
            metrics.requests.clone(),
        );
        metrics.registry.register(
            "http_request_duration_seconds",
            "Time from the request head to the response, by operation",
            metrics.duration.clone(),
        );
        metrics.registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled",
            metrics.in_flight.clone(),
        );
        metrics.registry.register(
            "nats_connected",
            "1 while the NATS connection is up",
            metrics.nats_connected.clone(),
        );
        metrics.registry.register(
            "auth_failures",
            "Requests refused 401, by reason (missing, not_bearer, malformed, invalid, revoked, expired, certificate_not_granted)",
            metrics.auth_failures.clone(),
        );
        metrics.registry.register(
            "rate_limited",
            "Requests refused 429, by credential id (key id, client certificate id or anonymous)",
            metrics.rate_limited.clone(),
        );
        metrics.registry.register(
            "reloads",
            "Reloads of the keys file or TLS files, by source and result (ok, error)",
            metrics.reloads.clone(),
        );
        metrics.registry.register(
            "active_credentials",
            "API keys neither revoked nor expired plus granted client certificates, as of the last load",
            metrics.active_credentials.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub fn observe(&self, operation: Operation, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { operation, status })
            .inc();
        self.duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn rate_limited(&self, credential: &str) {
        self.rate_limited
            .get_or_create(&CredentialLabels {
                credential: credential.to_owned(),
            })
            .inc();
    }

    pub fn reloaded(&self, source: ReloadSource, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ReloadLabels { source, result })
            .inc();
    }

    pub fn set_active_credentials(&self, active: usize) {
        self.active_credentials.set(active as i64);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self, nats_connected: bool) -> String {
        self.nats_connected.set(i64::from(nats_connected));
        metrics::encode(&self.registry)
    }
}

pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
