//! HTTP concerns of the ingress: routing, method, content type, body limit, query string and
//! request id. `POST /api/v1/customers` forwards the body unparsed, `GET /api/v1/customers`
//! the query parameters as a JSON object of strings, `GET /api/v1/customers/{id}` the id;
//! the worker decides whether any of it is valid.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::problem::Violation;
use customers_shared::protocol::headers;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::metrics::{self, Metrics};
use crate::response::{self, Body};
use crate::worker_client::{Operation, WorkerClient, WorkerReply};

const CUSTOMERS_PATH: &str = "/api/v1/customers";
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const MAX_REQUEST_ID_LEN: usize = 200;

/// Headers copied from the HTTP request onto the NATS request when present.
const FORWARDED: [&str; 2] = [headers::TRACEPARENT, headers::IDEMPOTENCY_KEY];

/// The request handler, shared by every connection.
#[derive(Clone)]
pub struct App {
    worker: WorkerClient,
    metrics: Arc<Metrics>,
    /// The OpenAPI document, rendered once.
    openapi: Bytes,
    max_body_bytes: usize,
    /// Bounds requests in flight to the worker, so an overload is refused instead of queued.
    in_flight: Arc<Semaphore>,
}

impl App {
    pub fn new(worker: WorkerClient, max_body_bytes: usize, max_in_flight: usize) -> Self {
        Self {
            worker,
            metrics: Arc::default(),
            openapi: Bytes::from(customers_shared::openapi::document().to_string()),
            max_body_bytes,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Answers one request; every response carries the request id.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
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
        );
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight();
        let operation = operation(request.method(), Route::of(request.uri().path()));
        let mut response = self.route(request, &request_id).instrument(span).await;
        self.metrics
            .observe(operation, response.status().as_u16(), started.elapsed());
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        response
    }

    async fn route(&self, request: Request<Incoming>, request_id: &HeaderValue) -> Response<Body> {
        let method = request.method().clone();
        let result = match (Route::of(request.uri().path()), &method) {
            (None, _) => Err(ApiError::NotFound),
            (Some(Route::Health), &Method::GET) => {
                Ok(response::ok(Bytes::from_static(br#"{"status":"ok"}"#)))
            }
            (Some(Route::Ready), &Method::GET) => self.readiness().await,
            (Some(Route::Metrics), &Method::GET) => {
                let text = self.metrics.render(self.worker.is_connected());
                let mut response = response::ok(Bytes::from(text));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(customers_shared::metrics::CONTENT_TYPE),
                );
                Ok(response)
            }
            (Some(Route::OpenApi), &Method::GET) => Ok(response::ok(self.openapi.clone())),
            (Some(Route::Health | Route::Ready | Route::Metrics | Route::OpenApi), _) => {
                Err(ApiError::MethodNotAllowed { allow: "GET" })
            }
            (Some(Route::Collection), &Method::POST) => self.create(request, request_id).await,
            (Some(Route::Collection), &Method::GET) => self.list(&request, request_id).await,
            (Some(Route::Collection), _) => Err(ApiError::MethodNotAllowed { allow: "GET, POST" }),
            (Some(Route::Customer(id)), &Method::GET) => self.get(&request, id, request_id).await,
            (Some(Route::Customer(_)), _) => Err(ApiError::MethodNotAllowed { allow: "GET" }),
        };
        let response = result.unwrap_or_else(|e| response::problem(&e));
        if response.status().is_server_error() {
            tracing::warn!(status = response.status().as_u16(), "request failed");
        } else {
            tracing::debug!(status = response.status().as_u16(), "request answered");
        }
        response
    }

    async fn create(
        &self,
        request: Request<Incoming>,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, ApiError> {
        if !is_json(request.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let too_large = ApiError::PayloadTooLarge {
            limit_bytes: self.max_body_bytes,
        };
        let declared_length = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared_length.is_some_and(|n| n > self.max_body_bytes as u64) {
            return Err(too_large);
        }
        let nats_headers = nats_headers(&request, request_id);
        let _permit = self.permit()?;
        let body = read_body(request.into_body(), self.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => too_large,
                BodyError::Read(detail) => ApiError::MalformedJson(detail),
            })?;
        self.forward(Operation::Create, body, nats_headers).await
    }

    async fn get(
        &self,
        request: &Request<Incoming>,
        id: &str,
        request_id: &HeaderValue,
    ) -> Result<Response<Body>, ApiError> {
        let payload = Bytes::copy_from_slice(id.as_bytes());
        let _permit = self.permit()?;
        self.forward(Operation::Get, payload, nats_headers(request, request_id))
            .await
    }

    /// The query string becomes the list endpoint's JSON payload, each parameter a string;
    /// the worker validates the values.
    async fn list(
        &self,
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
        self.forward(Operation::List, payload, nats_headers(request, request_id))
            .await
    }

    /// Ready when connected to NATS and some worker answers `$SRV.PING.customers` now
    /// (within a second); otherwise the 503 that explains why.
    async fn readiness(&self) -> Result<Response<Body>, ApiError> {
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

    /// Sends one request to the worker and turns its reply into the HTTP response. The
    /// caller holds a [`App::permit`].
    async fn forward(
        &self,
        operation: Operation,
        payload: Bytes,
        nats_headers: async_nats::HeaderMap,
    ) -> Result<Response<Body>, ApiError> {
        let reply = self
            .worker
            .request(operation, payload, nats_headers)
            .await?;
        let (mut response, replayed) = match reply {
            WorkerReply::Success {
                customer_id,
                replayed,
                body,
            } => match operation {
                Operation::Create => {
                    let Some(customer_id) = customer_id else {
                        tracing::error!("create reply without a customer id");
                        return Err(ApiError::Internal);
                    };
                    let location =
                        HeaderValue::try_from(format!("{CUSTOMERS_PATH}/{customer_id}")).ok();
                    (response::created(location, body), replayed)
                }
                Operation::Get | Operation::List | Operation::Ping => {
                    (response::ok(body), replayed)
                }
            },
            WorkerReply::Problem {
                status,
                retry_after,
                replayed,
                body,
            } => {
                let mut response = response::problem_body(status, body);
                if let Some(value) = retry_after.and_then(|v| HeaderValue::try_from(v).ok()) {
                    response.headers_mut().insert(RETRY_AFTER, value);
                }
                (response, replayed)
            }
        };
        if replayed {
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        Ok(response)
    }
}

/// The paths the ingress serves.
enum Route<'a> {
    /// `/healthz`: the process is up.
    Health,
    /// `/readyz`: connected to NATS and a worker answers.
    Ready,
    /// `/metrics`: Prometheus metrics.
    Metrics,
    /// `/api/v1/openapi.json`: the OpenAPI document.
    OpenApi,
    /// `/api/v1/customers`
    Collection,
    /// `/api/v1/customers/{id}`
    Customer(&'a str),
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Option<Self> {
        match path {
            CUSTOMERS_PATH => return Some(Self::Collection),
            "/healthz" => return Some(Self::Health),
            "/readyz" => return Some(Self::Ready),
            "/metrics" => return Some(Self::Metrics),
            "/api/v1/openapi.json" => return Some(Self::OpenApi),
            _ => {}
        }
        let id = path.strip_prefix(CUSTOMERS_PATH)?.strip_prefix('/')?;
        (!id.is_empty() && !id.contains('/')).then_some(Self::Customer(id))
    }
}

/// The metrics label of a request.
fn operation(method: &Method, route: Option<Route<'_>>) -> metrics::Operation {
    match (route, method) {
        (Some(Route::Collection), &Method::POST) => metrics::Operation::create,
        (Some(Route::Collection), &Method::GET) => metrics::Operation::list,
        (Some(Route::Customer(_)), &Method::GET) => metrics::Operation::get,
        (Some(Route::Health), &Method::GET) => metrics::Operation::healthz,
        (Some(Route::Ready), &Method::GET) => metrics::Operation::readyz,
        (Some(Route::Metrics), &Method::GET) => metrics::Operation::metrics,
        (Some(Route::OpenApi), &Method::GET) => metrics::Operation::openapi,
        _ => metrics::Operation::other,
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

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most `limit` bytes; never buffers an unbounded body.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Read(format!("the body could not be read: {e}"))),
    }
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The client's `X-Request-Id` when it is 1–200 visible ASCII characters; a new UUIDv7
/// otherwise, so that every request can be traced.
fn request_id<B>(request: &Request<B>) -> HeaderValue {
    request
        .headers()
        .get(X_REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
                && bytes.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| {
            // A UUIDv7 whose random bits come from a thread's seeded generator, not a system
            // call per request: request ids need to be unique, not secret.
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let id = uuid::Builder::from_unix_timestamp_millis(
                millis,
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

    #[test]
    fn json_content_types() {
        let accepted = [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON ;charset=UTF-8",
        ];
        for ct in accepted {
            assert!(is_json(Some(&HeaderValue::from_static(ct))), "{ct}");
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
    }
}
