//! HTTP concerns of the ingress: routing, method, content type, body limit and request id.
//! The body is forwarded to the worker unparsed; the worker decides whether it is valid.

use std::sync::Arc;

use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::protocol::headers;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::response::{self, Body};
use crate::worker_client::{WorkerClient, WorkerReply};

const CUSTOMERS_PATH: &str = "/api/v1/customers";
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_REQUEST_ID_LEN: usize = 200;

/// Headers copied from the HTTP request onto the NATS request when present.
const FORWARDED: [&str; 2] = [headers::TRACEPARENT, headers::IDEMPOTENCY_KEY];

/// The request handler, shared by every connection.
#[derive(Clone)]
pub struct App {
    worker: WorkerClient,
    max_body_bytes: usize,
    /// Bounds creates in flight, so an overload is refused instead of queued.
    in_flight: Arc<Semaphore>,
}

impl App {
    pub fn new(worker: WorkerClient, max_body_bytes: usize, max_in_flight: usize) -> Self {
        Self {
            worker,
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
            method = %request.method(),
            path = request.uri().path(),
        );
        let mut response = self.route(request, &request_id).instrument(span).await;
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        response
    }

    async fn route(&self, request: Request<Incoming>, request_id: &HeaderValue) -> Response<Body> {
        if request.uri().path() != CUSTOMERS_PATH {
            return response::problem(&ApiError::NotFound);
        }
        if request.method() != Method::POST {
            return response::problem(&ApiError::MethodNotAllowed { allow: "POST" });
        }
        let result = self.create(request, request_id).await;
        let response = result.unwrap_or_else(|e| response::problem(&e));
        if response.status().is_server_error() {
            tracing::warn!(status = response.status().as_u16(), "create failed");
        } else {
            tracing::debug!(status = response.status().as_u16(), "create answered");
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
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| ApiError::ServiceUnavailable {
                reason: "the ingress is overloaded",
                retry_after_secs: 1,
            })?;
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
        let mut nats_headers = async_nats::HeaderMap::new();
        if let Ok(id) = request_id.to_str() {
            nats_headers.insert(headers::REQUEST_ID, id);
        }
        for name in FORWARDED {
            if let Some(value) = request.headers().get(name).and_then(|v| v.to_str().ok()) {
                nats_headers.insert(name, value);
            }
        }
        let body = read_body(request.into_body(), self.max_body_bytes)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => too_large,
                BodyError::Read(detail) => ApiError::MalformedJson(detail),
            })?;
        Ok(match self.worker.create(body, nats_headers).await? {
            WorkerReply::Created { customer_id, body } => {
                let location =
                    HeaderValue::try_from(format!("{CUSTOMERS_PATH}/{customer_id}")).ok();
                response::created(location, body)
            }
            WorkerReply::Problem {
                status,
                retry_after,
                body,
            } => {
                let mut response = response::problem_body(status, body);
                if let Some(value) = retry_after.and_then(|v| HeaderValue::try_from(v).ok()) {
                    response.headers_mut().insert(RETRY_AFTER, value);
                }
                response
            }
        })
    }
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
            HeaderValue::try_from(uuid::Uuid::now_v7().to_string())
                .expect("a UUID is a valid header value")
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
