//! The ingress's Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format:
//! requests by operation and status, a latency histogram per operation, requests in flight,
//! whether the NATS connection is up, authentication failures, rate-limit refusals, reloads
//! and active credentials. Operations, not raw paths, label the series, so
//! customer ids never become label values. Every series whose labels are known in advance
//! (operations, failure reasons, reload sources, credentials in force) exists from the start
//! at zero, so that a rate or an alert on it works before its first event.

use std::time::Duration;

use customers_shared::runtime::metrics;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The route a request took, as the `operation` label's value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are written as the variants' names
pub(crate) enum Route {
    create,
    get,
    list,
    search,
    update,
    delete,
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
pub(crate) enum ReloadSource {
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
    operation: Route,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Route,
}

type DurationFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

pub(crate) struct Metrics {
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
            "Requests refused 401, by reason (missing, not_bearer, malformed, invalid, revoked, expired, certificate_not_granted), and 400 for an Authorization header given more than once (repeated)",
            metrics.auth_failures.clone(),
        );
        metrics.registry.register(
            "rate_limited",
            "Requests refused 429 (rate limit, or too many in flight), by credential id (key id, client certificate id or anonymous)",
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
        metrics.start_at_zero();
        metrics
    }
}

/// Each operation with the status its requests are usually answered with.
const USUAL_ANSWERS: [(Route, u16); 9] = [
    (Route::create, 201),
    (Route::get, 200),
    (Route::list, 200),
    (Route::healthz, 200),
    (Route::readyz, 200),
    (Route::metrics, 200),
    (Route::openapi, 200),
    (Route::asyncapi, 200),
    (Route::other, 404),
];

/// The reason label of a repeated `Authorization` header (a 400, not an
/// [`AuthFailure`](crate::auth::AuthFailure)).
pub(crate) const REPEATED_AUTHORIZATION: &str = "repeated";

impl Metrics {
    /// Makes every series whose labels are known now.
    fn start_at_zero(&self) {
        for (operation, status) in USUAL_ANSWERS {
            drop(
                self.requests
                    .get_or_create(&RequestLabels { operation, status }),
            );
            drop(self.duration.get_or_create(&OperationLabels { operation }));
        }
        let reasons = crate::auth::AuthFailure::ALL.map(crate::auth::AuthFailure::label);
        for reason in reasons.into_iter().chain([REPEATED_AUTHORIZATION]) {
            drop(self.auth_failures.get_or_create(&ReasonLabels { reason }));
        }
        for source in [ReloadSource::keys, ReloadSource::tls] {
            for result in ["ok", "error"] {
                drop(self.reloads.get_or_create(&ReloadLabels { source, result }));
            }
        }
    }

    /// Counts a request as in flight until the guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub(crate) fn observe(&self, operation: Route, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { operation, status })
            .inc();
        self.duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn rate_limited(&self, credential: &str) {
        self.rate_limited
            .get_or_create(&CredentialLabels {
                credential: credential.to_owned(),
            })
            .inc();
    }

    pub(crate) fn reloaded(&self, source: ReloadSource, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads
            .get_or_create(&ReloadLabels { source, result })
            .inc();
    }

    /// The credentials in force: how many are active, and the ids whose 429s are counted
    /// (from zero).
    pub(crate) fn set_credentials<'a>(&self, active: usize, ids: impl Iterator<Item = &'a str>) {
        self.active_credentials.set(active as i64);
        for credential in ids {
            drop(self.rate_limited.get_or_create(&CredentialLabels {
                credential: credential.to_owned(),
            }));
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub(crate) fn render(&self, nats_connected: bool) -> String {
        self.nats_connected.set(i64::from(nats_connected));
        metrics::encode(&self.registry)
    }
}

pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
