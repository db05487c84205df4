//! Building HTTP responses: the one place where an [`ApiError`] becomes an HTTP problem
//! response, and where a worker reply (success or problem) becomes the HTTP answer.

use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::wire::conditional::Condition;
use customers_shared::wire::problem::PROBLEM_CONTENT_TYPE;
use customers_shared::wire::protocol::headers;
use http::header::{
    ALLOW, CONNECTION, CONTENT_TYPE, ETAG, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::paths::CUSTOMERS_PATH;
use crate::rate_limit::{Decision, Policy};
use crate::worker_client::{Operation, WorkerReply};

pub(crate) type Body = Full<Bytes>;

/// An error answered as `application/problem+json`, with `Allow`, `WWW-Authenticate` or
/// `Retry-After` where the error calls for them, and `Connection: close` where the request's
/// body was not read to its end (the connection cannot carry another request after it).
pub(crate) fn problem(error: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = problem_body(status, Bytes::from(error.problem_json()));
    let headers = response.headers_mut();
    match error {
        ApiError::MethodNotAllowed { allow } => {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        // RFC 6750 §3: no error code when no credential was sent.
        ApiError::Unauthorized {
            credential_presented: false,
            ..
        } => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
        }
        ApiError::Unauthorized { .. } => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="customers", error="invalid_token""#),
            );
        }
        ApiError::RepeatedAuthorization { .. } => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="customers", error="invalid_request""#),
            );
        }
        ApiError::BodyTimeout { .. } | ApiError::NotImplemented { .. } => {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        ApiError::Forbidden { scope } => {
            let challenge = format!(r#"{CHALLENGE}, error="insufficient_scope", scope="{scope}""#);
            if let Ok(value) = HeaderValue::try_from(challenge) {
                headers.insert(WWW_AUTHENTICATE, value);
            }
        }
        _ => {}
    }
    if let Some(secs) = error.retry_after_secs() {
        response.headers_mut().insert(RETRY_AFTER, secs.into());
    }
    response
}

/// The `WWW-Authenticate` challenge of the customer endpoints.
const CHALLENGE: &str = r#"Bearer realm="customers""#;

/// The IETF `RateLimit-Policy` and `RateLimit` fields: the credential's policy and what
/// `decision` left of it.
pub(crate) fn add_rate_limit(response: &mut Response<Body>, policy: &Policy, decision: &Decision) {
    let headers = response.headers_mut();
    for (name, value) in [
        (&*RATE_LIMIT_POLICY, policy.header_value()),
        (&*RATE_LIMIT, decision.header_value()),
    ] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name.clone(), value);
        }
    }
}

static RATE_LIMIT_POLICY: std::sync::LazyLock<HeaderName> =
    std::sync::LazyLock::new(|| HeaderName::from_static("ratelimit-policy"));
static RATE_LIMIT: std::sync::LazyLock<HeaderName> =
    std::sync::LazyLock::new(|| HeaderName::from_static("ratelimit"));

/// A problem body the worker already rendered, with its status.
pub(crate) fn problem_body(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

/// `200 OK` with a JSON body (a customer or a page).
pub(crate) fn ok(json: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(json));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The HTTP answer to a worker's reply to `operation`: `201 Created` with its `Location` for
/// a create, `200` for the rest, the problem with its status (and `Retry-After`) for an
/// error, the customer's `ETag` where the reply carries it, and `Idempotent-Replayed: true`
/// on a stored reply sent again. A get whose `If-None-Match` (`if_none_match`) names the
/// customer's version is `304 Not Modified`, without the body.
pub(crate) fn from_worker(
    operation: Operation,
    reply: WorkerReply,
    if_none_match: Option<&Condition>,
) -> Result<Response<Body>, ApiError> {
    let (mut response, replayed, etag) = match reply {
        WorkerReply::Success {
            customer_id,
            etag,
            replayed,
            body,
        } => {
            let version = etag.as_deref().and_then(version_of);
            if let (Some(condition), Some(version)) = (if_none_match, version)
                && condition.matches_weakly(version)
            {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                add_etag(&mut response, etag.as_deref());
                return Ok(response);
            }
            let mut response = ok(body);
            if operation == Operation::Create {
                let Some(customer_id) = customer_id else {
                    tracing::error!("create reply without a customer id");
                    return Err(ApiError::Internal);
                };
                *response.status_mut() = StatusCode::CREATED;
                if let Ok(location) =
                    HeaderValue::try_from(format!("{CUSTOMERS_PATH}/{customer_id}"))
                {
                    response.headers_mut().insert(LOCATION, location);
                }
            }
            (response, replayed, etag)
        }
        WorkerReply::Problem {
            status,
            retry_after,
            etag,
            replayed,
            body,
        } => {
            let mut response = problem_body(status, body);
            if let Some(value) = retry_after.and_then(|v| HeaderValue::try_from(v).ok()) {
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            (response, replayed, etag)
        }
    };
    add_etag(&mut response, etag.as_deref());
    if replayed {
        response.headers_mut().insert(
            header_name(headers::IDEMPOTENT_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

fn add_etag(response: &mut Response<Body>, etag: Option<&str>) {
    if let Some(value) = etag.and_then(|etag| HeaderValue::try_from(etag).ok()) {
        response.headers_mut().insert(ETAG, value);
    }
}

/// The version a worker's `ETag` names (`"3"` → 3).
fn version_of(etag: &str) -> Option<u64> {
    etag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// One of the protocol's header names (`customers_shared::wire::protocol::headers`) as http
/// writes header names.
pub(crate) fn header_name(name: &'static str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).expect("the protocol's header names are valid")
}
