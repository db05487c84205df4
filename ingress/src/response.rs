//! Building HTTP responses: the one place where an [`ApiError`] becomes an HTTP problem
//! response, and where a worker reply (success or problem) becomes the HTTP answer.

use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::problem::PROBLEM_CONTENT_TYPE;
use http::header::{ALLOW, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

pub type Body = Full<Bytes>;

/// An error answered as `application/problem+json`, with `Allow` or `Retry-After` where the
/// error calls for them.
pub fn problem(error: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = problem_body(status, Bytes::from(error.problem_json()));
    if let ApiError::MethodNotAllowed { allow } = error {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(secs) = error.retry_after_secs() {
        response.headers_mut().insert(RETRY_AFTER, secs.into());
    }
    response
}

/// A problem body the worker already rendered, with its status.
pub fn problem_body(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

/// `200 OK` with a JSON body (a customer or a page).
pub fn ok(json: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(json));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `201 Created` with the stored customer and its `Location`.
pub fn created(location: Option<HeaderValue>, customer_json: Bytes) -> Response<Body> {
    let mut response = ok(customer_json);
    *response.status_mut() = StatusCode::CREATED;
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}
