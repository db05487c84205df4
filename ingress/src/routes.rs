//! HTTP concerns of the ingress: routing, authentication, scopes and rate limits, method,
//! content type, body limit and pace, query string and request id. A request to a customer
//! endpoint is authenticated (401), checked for its scope (403), its credential's rate limit
//! and requests in flight (429) before anything else about it; health, readiness, metrics
//! and the OpenAPI document need no credential. `POST /api/v1/customers` forwards the body
//! unparsed, once it has arrived within its deadline (408 otherwise), and so do `PATCH` and
//! `DELETE /api/v1/customers/{id}` with the id and `If-Match` as headers; `GET
//! /api/v1/customers` forwards the query parameters as a JSON object of strings, `GET
//! /api/v1/customers/{id}` the id (and answers `304` itself when `If-None-Match` names the
//! version the worker replied with); the worker decides whether any of it is valid. `HEAD` is
//! answered wherever `GET` is, without the body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::domain::violation::Violation;
use customers_shared::runtime::clock::unix_ms;
use customers_shared::wire::conditional::Condition;
use customers_shared::wire::idempotency::IdempotencyKey;
use customers_shared::wire::protocol::headers;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::auth::keys_file::Scope;
use crate::auth::{Authenticator, Caller, Credential};
use crate::body::{BodyError, BodyPace, read_body};
use crate::metrics::{self, Metrics};
use crate::paths::{CUSTOMERS_PATH, SEARCH_PATH};
use crate::rate_limit::{Decision, ceil_secs};
use crate::response::{self, Body};
use crate::worker_client::{Operation, WorkerClient};

const MAX_REQUEST_ID_LEN: usize = 200;

/// `X-Request-Id`, as http spells header names (lower case).
static X_REQUEST_ID: std::sync::LazyLock<HeaderName> =
    std::sync::LazyLock::new(|| response::header_name(headers::REQUEST_ID));

/// Headers copied from the HTTP request onto the NATS request when present.
const FORWARDED: [&str; 2] = [headers::TRACEPARENT, headers::IDEMPOTENCY_KEY];

/// The request handler, shared by every connection.
#[derive(Clone)]
pub(crate) struct App {
    worker: WorkerClient,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    /// The OpenAPI document, rendered once.
    openapi: Bytes,
    asyncapi: Bytes,
    limits: RequestLimits,
    /// Bounds requests in flight to the worker, so an overload is refused instead of queued.
    in_flight: Arc<Semaphore>,
}

/// What the handler knows about a request's connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    pub(crate) peer: SocketAddr,
    /// DNS and URI names of the verified client certificate; empty without one.
    pub(crate) certificate_names: Arc<[String]>,
}

/// What one request may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimits {
    pub(crate) max_body_bytes: usize,
    pub(crate) body_pace: BodyPace,
    /// Requests to the worker at once, from everyone.
    pub(crate) max_in_flight: usize,
    /// Requests of one credential at once, their bodies being read included.
    pub(crate) max_in_flight_per_credential: usize,
}

impl App {
    pub(crate) fn new(
        worker: WorkerClient,
        authenticator: Arc<Authenticator>,
        limits: RequestLimits,
    ) -> Self {
        Self {
            worker,
            authenticator,
            metrics: Arc::default(),
            openapi: Bytes::from(customers_shared::wire::openapi::document().to_string()),
            asyncapi: Bytes::from(customers_shared::wire::asyncapi::document().to_string()),
            limits,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        }
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers one request; every response carries the request id.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<Body> {
        let request_id = request_id(&request);
        let span = tracing::info_span!(
            "http",
            request_id = request_id.to_str().unwrap_or(""),
            traceparent = request
                .headers()
                .get(headers::TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            method = %request.method(),
            path = request.uri().path(),
            credential = tracing::field::Empty,
        );
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight();
        let endpoint = Endpoint::of(request.method(), request.uri().path());
        let operation = endpoint.metrics_label();
        let mut response = self
            .route(endpoint, request, &request_id, connection)
            .instrument(span)
            .await;
        self.metrics
            .observe(operation, response.status().as_u16(), started.elapsed());
        response
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id);
        response
    }

    async fn route(
        &self,
        endpoint: Endpoint,
        request: Request<Incoming>,
        request_id: &HeaderValue,
        connection: &ConnectionInfo,
    ) -> Response<Body> {
        let response = if let Err(refusal) = check_transfer_coding(request.headers()) {
            response::problem(&refusal)
        } else {
            match endpoint {
                Endpoint::Customers(endpoint) => {
                    self.customers(endpoint, request, request_id, connection)
                        .await
                }
                Endpoint::Public(endpoint) => self
                    .public(endpoint)
                    .await
                    .unwrap_or_else(|e| response::problem(&e)),
            }
        };
        if response.status().is_server_error() {
            tracing::warn!(status = response.status().as_u16(), "request failed");
        } else {
            tracing::debug!(status = response.status().as_u16(), "request answered");
        }
        response
    }

    /// The endpoints anyone may call.
    async fn public(&self, endpoint: PublicEndpoint) -> Result<Response<Body>, ApiError> {
        match endpoint {
            PublicEndpoint::Health => Ok(response::ok(Bytes::from_static(br#"{"status":"ok"}"#))),
            PublicEndpoint::Ready => self.readiness().await,
            PublicEndpoint::Metrics => {
                let text = self.metrics.render(self.worker.is_connected());
                let mut response = response::ok(Bytes::from(text));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(customers_shared::runtime::metrics::CONTENT_TYPE),
                );
                Ok(response)
            }
            PublicEndpoint::OpenApi => Ok(response::ok(self.openapi.clone())),
            PublicEndpoint::AsyncApi => Ok(response::ok(self.asyncapi.clone())),
            PublicEndpoint::NotAllowed { allow } => Err(ApiError::MethodNotAllowed { allow }),
            PublicEndpoint::NotFound => Err(ApiError::NotFound),
        }
    }

    /// A customer endpoint: authenticated, within its scope and rate limit, then forwarded.
    /// Every answer to an authenticated request reports the credential's rate limit.
    async fn customers(
        &self,
        endpoint: CustomerEndpoint,
        request: Request<Incoming>,
        request_id: &HeaderValue,
        connection: &ConnectionInfo,
    ) -> Response<Body> {
        let credential = match self.authenticate(&request, connection) {
            Ok(credential) => credential,
            Err(e) => return response::problem(&e),
        };
        tracing::Span::current().record("credential", &*credential.id);
        let scope = endpoint.scope();
        if !credential.allows(scope) {
            return response::problem(&ApiError::Forbidden {
                scope: scope.as_str(),
            });
        }
        let decision = credential.bucket.check();
        let limit = self.limits.max_in_flight_per_credential;
        let result = match decision {
            Decision::Denied { retry_after, .. } => {
                self.metrics.rate_limited(&credential.id);
                Err(ApiError::RateLimited {
                    retry_after_secs: ceil_secs(retry_after).clamp(1, u64::from(u32::MAX)) as u32,
                })
            }
            Decision::Allowed { .. } => match credential.bucket.enter(limit) {
                None => {
                    self.metrics.rate_limited(&credential.id);
                    Err(ApiError::TooManyInFlight { limit })
                }
                Some(_in_flight) => match endpoint {
                    CustomerEndpoint::Create => {
                        self.write(Operation::Create, request, None, request_id)
                            .await
                    }
                    CustomerEndpoint::Update(id) => {
                        self.write(Operation::Update, request, Some(id), request_id)
                            .await
                    }
                    CustomerEndpoint::Delete(id) => {
                        self.write(Operation::Delete, request, Some(id), request_id)
                            .await
                    }
                    CustomerEndpoint::List => {
                        self.query(Operation::List, &request, request_id).await
                    }
                    CustomerEndpoint::Search => {
                        self.query(Operation::Search, &request, request_id).await
                    }
                    CustomerEndpoint::Get(id) => self.get(&request, id, request_id).await,
                },
            },
        };
        let mut response = result.unwrap_or_else(|e| response::problem(&e));
        response::add_rate_limit(&mut response, credential.bucket.policy(), &decision);
        response
    }

    fn authenticate(
        &self,
        request: &Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Result<Arc<Credential>, ApiError> {
        let count = request.headers().get_all(AUTHORIZATION).iter().count();
        if count > 1 {
            self.metrics.auth_failed(metrics::REPEATED_AUTHORIZATION);
            return Err(ApiError::RepeatedAuthorization { count });
        }
        let caller = Caller {
            authorization: request.headers().get(AUTHORIZATION),
            certificate_names: &connection.certificate_names,
            address: connection.peer.ip(),
        };
        self.authenticator.authenticate(&caller).map_err(|failure| {
            self.metrics.auth_failed(failure.label());
            tracing::debug!(reason = failure.label(), "not authenticated");
            ApiError::from(failure)
        })
    }

    /// A create, update or delete (of customer `id`): its media type (415), its key's syntax
    /// and its body's size checked before the body is read at its pace; then forwarded.
    async fn write(
        &self,
        operation: Operation,
        request: Request<Incoming>,
        id: Option<Bytes>,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, ApiError> {
        let media_types: &[&str] = match operation {
            Operation::Create => &["application/json"],
            Operation::Update => &["application/merge-patch+json", "application/json"],
            _ => &[],
        };
        if !media_types.is_empty() && !is_one_of(media_types, request.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType {
                expected: match operation {
                    Operation::Update => "application/merge-patch+json or application/json",
                    _ => "application/json",
                },
            });
        }
        // Checked here as well as by the worker: a key that is not ASCII cannot be forwarded
        // as a NATS header, and dropping it would turn a retry-safe write into a plain one.
        if let Some(key) = request.headers().get(headers::IDEMPOTENCY_KEY) {
            IdempotencyKey::parse(key.as_bytes())?;
        }
        let limit = self.limits.max_body_bytes;
        let too_large = ApiError::PayloadTooLarge { limit_bytes: limit };
        let declared_length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared_length.is_some_and(|n| n > limit as u64) {
            return Err(too_large);
        }
        let mut nats_headers = nats_headers(&request, request_id);
        if let Some(id) = id.as_ref().and_then(|id| std::str::from_utf8(id).ok()) {
            nats_headers.insert(headers::CUSTOMER_ID, id);
        }
        let if_match = request.headers().get_all(IF_MATCH);
        // Checked here too: the worker reads the lines again, as they came.
        Condition::parse(
            headers::IF_MATCH,
            if_match.iter().map(HeaderValue::as_bytes),
        )?;
        for line in if_match {
            // A tag of obs-text can only fail to match, whatever it reads as.
            nats_headers.append(
                headers::IF_MATCH,
                &*String::from_utf8_lossy(line.as_bytes()),
            );
        }
        let pace = self.limits.body_pace;
        // The shared slot is taken only once the body is here: a slow body holds only its
        // own credential's.
        let body = read_body(request.into_body(), limit, pace)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => too_large,
                BodyError::TooSlow => pace.timeout(),
                BodyError::Read(detail) => ApiError::MalformedJson(detail),
            })?;
        let _permit = self.permit()?;
        self.forward(operation, body, nats_headers, None).await
    }

    async fn get(
        &self,
        request: &Request<Incoming>,
        id: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, ApiError> {
        let lines = request.headers().get_all(IF_NONE_MATCH);
        let if_none_match =
            Condition::parse("If-None-Match", lines.iter().map(HeaderValue::as_bytes))?;
        let _permit = self.permit()?;
        let headers = nats_headers(request, request_id);
        self.forward(Operation::Get, id, headers, if_none_match.as_ref())
            .await
    }

    /// The query string becomes the list or search endpoint's JSON payload, each parameter a
    /// string; the worker validates the values.
    async fn query(
        &self,
        operation: Operation,
        request: &Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, ApiError> {
        let query = request.uri().query().unwrap_or_default();
        let mut parameters = serde_json::Map::new();
        let mut repeated = Vec::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let name = name.into_owned();
            if parameters.contains_key(&name) {
                repeated.push(Violation::invalid("given more than once").at(&name));
            } else {
                parameters.insert(name, value.into_owned().into());
            }
        }
        if !repeated.is_empty() {
            return Err(ApiError::ValidationFailed(repeated));
        }
        let payload = Bytes::from(serde_json::Value::Object(parameters).to_string());
        let _permit = self.permit()?;
        self.forward(operation, payload, nats_headers(request, request_id), None)
            .await
    }

    /// Ready when connected to NATS and some worker answers `$SRV.PING.customers` now
    /// (within a second); otherwise the 503 that explains why.
    async fn readiness(&self) -> Result<Response<Body>, ApiError> {
        // Which side is at fault: this ingress's NATS grants, or no worker answering.
        if let Some(refusal) = self.worker.refused() {
            return Err(refusal);
        }
        self.worker
            .request(Operation::Ping, Bytes::new(), async_nats::HeaderMap::new())
            .await
            .map_err(|e| match e {
                ApiError::WorkerTimeout { .. } => ApiError::ServiceUnavailable {
                    reason: "no worker answered a ping within a second",
                    retry_after_secs: 1,
                },
                other => other,
            })?;
        Ok(response::ok(Bytes::from_static(br#"{"status":"ready"}"#)))
    }

    /// Bounds requests in flight to the worker, so an overload is refused instead of queued.
    fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.in_flight
            .try_acquire()
            .map_err(|_| ApiError::ServiceUnavailable {
                reason: "the ingress is overloaded",
                retry_after_secs: 1,
            })
    }

    /// Sends one request to the worker and turns its reply into the HTTP response (`304`
    /// where `if_none_match` names the version it carries). The caller holds a
    /// [`App::permit`].
    async fn forward(
        &self,
        operation: Operation,
        payload: Bytes,
        nats_headers: async_nats::HeaderMap,
        if_none_match: Option<&Condition>,
    ) -> Result<Response<Body>, ApiError> {
        let reply = self
            .worker
            .request(operation, payload, nats_headers)
            .await?;
        response::from_worker(operation, reply, if_none_match)
    }
}

/// What a request asks for: the ingress's one route table, from path and method.
enum Endpoint {
    Customers(CustomerEndpoint),
    Public(PublicEndpoint),
}

/// The endpoints that need a credential.
enum CustomerEndpoint {
    /// `POST /api/v1/customers`
    Create,
    /// `GET /api/v1/customers`
    List,
    /// `GET /api/v1/customers/search`
    Search,
    /// `GET /api/v1/customers/{id}`, with the id.
    Get(Bytes),
    /// `PATCH /api/v1/customers/{id}`, with the id.
    Update(Bytes),
    /// `DELETE /api/v1/customers/{id}`, with the id.
    Delete(Bytes),
}

/// The endpoints anyone may call, and the answers to requests for no endpoint.
enum PublicEndpoint {
    /// `GET /healthz`: the process is up.
    Health,
    /// `GET /readyz`: connected to NATS and a worker answers.
    Ready,
    /// `GET /metrics`: Prometheus metrics.
    Metrics,
    /// `GET /api/v1/openapi.json`: the OpenAPI document.
    OpenApi,
    /// `GET /api/v1/asyncapi.json`: the AsyncAPI document of the NATS interface.
    AsyncApi,
    /// A known path with another method.
    NotAllowed {
        allow: &'static str,
    },
    NotFound,
}

impl Endpoint {
    /// `HEAD` goes where `GET` goes (RFC 9110 §9.3.2); hyper leaves the body out.
    fn of(method: &Method, path: &str) -> Self {
        use PublicEndpoint::{AsyncApi, Health, Metrics, NotAllowed, NotFound, OpenApi, Ready};
        let get_only = |endpoint| match *method {
            Method::GET | Method::HEAD => endpoint,
            _ => Self::Public(NotAllowed { allow: "GET, HEAD" }),
        };
        match path {
            CUSTOMERS_PATH => match *method {
                Method::POST => Self::Customers(CustomerEndpoint::Create),
                Method::GET | Method::HEAD => Self::Customers(CustomerEndpoint::List),
                _ => Self::Public(NotAllowed {
                    allow: "GET, HEAD, POST",
                }),
            },
            SEARCH_PATH => get_only(Self::Customers(CustomerEndpoint::Search)),
            "/healthz" => get_only(Self::Public(Health)),
            "/readyz" => get_only(Self::Public(Ready)),
            "/metrics" => get_only(Self::Public(Metrics)),
            "/api/v1/openapi.json" => get_only(Self::Public(OpenApi)),
            "/api/v1/asyncapi.json" => get_only(Self::Public(AsyncApi)),
            _ => match path
                .strip_prefix(CUSTOMERS_PATH)
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|id| !id.is_empty() && !id.contains('/'))
            {
                Some(id) => {
                    let id = Bytes::copy_from_slice(id.as_bytes());
                    match *method {
                        Method::GET | Method::HEAD => Self::Customers(CustomerEndpoint::Get(id)),
                        Method::PATCH => Self::Customers(CustomerEndpoint::Update(id)),
                        Method::DELETE => Self::Customers(CustomerEndpoint::Delete(id)),
                        _ => Self::Public(NotAllowed {
                            allow: "GET, HEAD, PATCH, DELETE",
                        }),
                    }
                }
                None => Self::Public(NotFound),
            },
        }
    }

    /// The metrics label of a request to this endpoint.
    fn metrics_label(&self) -> metrics::Route {
        match self {
            Self::Customers(CustomerEndpoint::Create) => metrics::Route::create,
            Self::Customers(CustomerEndpoint::List) => metrics::Route::list,
            Self::Customers(CustomerEndpoint::Search) => metrics::Route::search,
            Self::Customers(CustomerEndpoint::Get(_)) => metrics::Route::get,
            Self::Customers(CustomerEndpoint::Update(_)) => metrics::Route::update,
            Self::Customers(CustomerEndpoint::Delete(_)) => metrics::Route::delete,
            Self::Public(PublicEndpoint::Health) => metrics::Route::healthz,
            Self::Public(PublicEndpoint::Ready) => metrics::Route::readyz,
            Self::Public(PublicEndpoint::Metrics) => metrics::Route::metrics,
            Self::Public(PublicEndpoint::OpenApi) => metrics::Route::openapi,
            Self::Public(PublicEndpoint::AsyncApi) => metrics::Route::asyncapi,
            Self::Public(PublicEndpoint::NotAllowed { .. } | PublicEndpoint::NotFound) => {
                metrics::Route::other
            }
        }
    }
}

impl CustomerEndpoint {
    /// The scope a credential needs for this endpoint.
    fn scope(&self) -> Scope {
        match self {
            Self::Create | Self::Update(_) | Self::Delete(_) => Scope::Write,
            Self::List | Self::Search | Self::Get(_) => Scope::Read,
        }
    }
}

/// The NATS headers of a request to the worker: the request id and the forwarded headers.
fn nats_headers<B>(request: &Request<B>, request_id: &HeaderValue) -> async_nats::HeaderMap {
    let mut nats_headers = async_nats::HeaderMap::new();
    if let Ok(id) = request_id.to_str() {
        nats_headers.insert(headers::REQUEST_ID, id);
    }
    for name in FORWARDED {
        if let Some(value) = request.headers().get(name).and_then(|v| v.to_str().ok()) {
            nats_headers.insert(name, value);
        }
    }
    nats_headers
}

/// Only `chunked` is implemented (RFC 9112 §6.1): a body in any other transfer coding would
/// be read as something it is not, and one chunked twice is not a body hyper decodes.
fn check_transfer_coding(headers: &HeaderMap) -> Result<(), ApiError> {
    let codings: Vec<&str> = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("(not ASCII)").split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty())
        .collect();
    match codings.as_slice() {
        [] => Ok(()),
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(()),
        _ => {
            let listed: String = codings.join(", ").chars().take(64).collect();
            Err(ApiError::NotImplemented {
                what: format!(
                    "the transfer coding {listed:?} is not implemented: send the body with a Content-Length or chunked, nothing else"
                ),
            })
        }
    }
}

/// One of `media_types`, with or without parameters such as `charset=utf-8`.
fn is_one_of(media_types: &[&str], content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| {
            let essence = essence.trim();
            media_types.iter().any(|t| essence.eq_ignore_ascii_case(t))
        })
}

/// The client's `X-Request-Id` when it is 1–200 visible ASCII characters; a new UUIDv7
/// otherwise, so that every request can be traced.
fn request_id<B>(request: &Request<B>) -> HeaderValue {
    request
        .headers()
        .get(&*X_REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
                && bytes.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| {
            // A UUIDv7 whose random bits come from a thread's seeded generator, not a system
            // call per request: request ids need to be unique, not secret.
            let id = uuid::Builder::from_unix_timestamp_millis(
                unix_ms(),
                &fastrand::u128(..).to_le_bytes()[..10]
                    .try_into()
                    .expect("10 bytes"),
            )
            .into_uuid();
            HeaderValue::try_from(id.to_string()).expect("a UUID is a valid header value")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_json(content_type: Option<&HeaderValue>) -> bool {
        is_one_of(&["application/json"], content_type)
    }

    #[test]
    fn json_content_types() {
        let accepted = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON ;charset=UTF-8",
        ];
        for ct in accepted {
            assert!(is_json(Some(&HeaderValue::from_static(ct))), "{ct}");
            assert!(
                is_one_of(
                    &["application/merge-patch+json", "application/json"],
                    Some(&HeaderValue::from_static(ct))
                ),
                "{ct} for an update"
            );
        }
        let rejected = [
            "text/plain",
            "application/jsonx",
            "application/problem+json",
            "",
            "multipart/form-data",
        ];
        for ct in rejected {
            assert!(!is_json(Some(&HeaderValue::from_static(ct))), "{ct}");
        }
        assert!(!is_json(None));
        let patch = HeaderValue::from_static("application/merge-patch+json; charset=utf-8");
        assert!(!is_json(Some(&patch)), "a merge patch is no create");
    }
}
