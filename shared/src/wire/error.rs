//! The one mapping from an error to its HTTP status, stable `code`, title and problem body.
//! The worker sends it over NATS (status in `Nats-Service-Error-Code`), the ingress over HTTP
//! for the errors it detects itself; so both transports give identical answers.

use crate::domain::id::CustomerId;
use crate::domain::violation::{BodyError, FieldError};
use crate::wire::problem::{MAX_LISTED_FIELD_ERRORS, Problem};

/// Every error a client can receive.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON; the message says where (line and column).
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body must be a JSON object")]
    InvalidBody,
    #[error("{}", validation_detail(.0))]
    ValidationFailed(Vec<FieldError>),
    /// A search query that does not parse: where it stopped and what was expected there.
    #[error("the search query is not valid {0}")]
    InvalidQuery(crate::wire::search::QueryError),
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("no customer has this id")]
    CustomerNotFound,
    /// The customer was deleted: its id is never served (or reused) again.
    #[error("this customer was deleted")]
    CustomerDeleted,
    /// `If-Match` named another version than the customer's current one (its entity tag
    /// travels with the reply as `ETag`).
    #[error(
        "the customer is at version {version} (ETag \"{version}\"), not the one If-Match names"
    )]
    PreconditionFailed { version: u64 },
    /// `--require-if-match`: a change must say which version it changes.
    #[error(
        "this service requires If-Match on changes: send the ETag of the version you change, or *"
    )]
    PreconditionRequired,
    /// No credential, or one that is not valid: the reason says which, never whether an
    /// unknown key id exists. `credential_presented` tells "none sent" (RFC 6750: no error
    /// code in the challenge) from "not valid" (`error="invalid_token"`).
    #[error("{reason}")]
    Unauthorized {
        reason: &'static str,
        credential_presented: bool,
    },
    /// An `Authorization` header given more than once: a proxy that checks the last one
    /// would see another credential than the one that decides here (RFC 6750 §3.1:
    /// `invalid_request`).
    #[error("send one Authorization header, not {count}")]
    RepeatedAuthorization { count: usize },
    /// A valid credential without the scope the operation needs.
    #[error("this credential lacks the {scope} scope")]
    Forbidden { scope: &'static str },
    #[error("rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u32 },
    /// The credential already has as many requests in flight as it may: one caller cannot
    /// take the capacity that every other caller shares.
    #[error(
        "this credential has {limit} requests in flight, the most it may have at once; retry after 1 s"
    )]
    TooManyInFlight { limit: usize },
    /// The body did not arrive within the time it is allowed (in all, and at a minimum rate).
    #[error(
        "the request body did not arrive in time (all of it within {total_ms} ms, at least {min_rate} bytes/s after the first second)"
    )]
    BodyTimeout { total_ms: u64, min_rate: u64 },
    /// A part of HTTP this server does not implement, such as a transfer coding other than
    /// `chunked` (RFC 9112 §6.1).
    #[error("{what}")]
    NotImplemented { what: String },
    #[error("a customer with this email already exists: {customer_id}")]
    EmailAlreadyExists { customer_id: CustomerId },
    #[error(
        "a request with this Idempotency-Key is still being processed; retry after {retry_after_secs} s"
    )]
    IdempotencyKeyInUse { retry_after_secs: u32 },
    #[error("this Idempotency-Key was first used with a different request body")]
    IdempotencyKeyReused,
    #[error("the body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("content type must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("an internal error occurred; it has been logged")]
    Internal,
    #[error("{reason}; retry after {retry_after_secs} s")]
    ServiceUnavailable {
        reason: &'static str,
        retry_after_secs: u32,
    },
    #[error("the worker did not reply within {timeout_ms} ms")]
    WorkerTimeout { timeout_ms: u64 },
    /// nats-server refuses this service's NATS user a permission it needs: the operator's
    /// grants are wrong, not the worker.
    #[error(
        "nats-server refused this service's NATS user a permission ({refused}); its grants and --nats-inbox-prefix must allow it"
    )]
    NatsPermissionDenied { refused: String },
}

fn validation_detail(errors: &[FieldError]) -> String {
    match errors.len() {
        1 => "1 field is invalid".to_owned(),
        n if n > MAX_LISTED_FIELD_ERRORS => {
            format!("{n} fields are invalid; the first {MAX_LISTED_FIELD_ERRORS} are listed")
        }
        n => format!("{n} fields are invalid"),
    }
}

/// A refused body is a 400: `malformed_json`, `invalid_body` or `validation_failed`.
impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::Malformed(detail) => Self::MalformedJson(detail),
            BodyError::NotAnObject => Self::InvalidBody,
            BodyError::InvalidFields(errors) => Self::ValidationFailed(errors),
        }
    }
}

impl ApiError {
    /// The HTTP status code (and NATS `Nats-Service-Error-Code`).
    pub fn status(&self) -> u16 {
        match self {
            Self::MalformedJson(_)
            | Self::InvalidBody
            | Self::ValidationFailed(_)
            | Self::InvalidQuery(_)
            | Self::RepeatedAuthorization { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::Forbidden { .. } => 403,
            Self::NotFound | Self::CustomerNotFound => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::BodyTimeout { .. } => 408,
            Self::EmailAlreadyExists { .. } | Self::IdempotencyKeyInUse { .. } => 409,
            Self::CustomerDeleted => 410,
            Self::PreconditionFailed { .. } => 412,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType { .. } => 415,
            Self::IdempotencyKeyReused => 422,
            Self::PreconditionRequired => 428,
            Self::RateLimited { .. } | Self::TooManyInFlight { .. } => 429,
            Self::Internal => 500,
            Self::NotImplemented { .. } => 501,
            Self::ServiceUnavailable { .. } | Self::NatsPermissionDenied { .. } => 503,
            Self::WorkerTimeout { .. } => 504,
        }
    }

    /// The stable machine key (and NATS `Nats-Service-Error`).
    pub fn code(&self) -> &'static str {
        self.code_and_title().0
    }

    /// Each error's code and its problem title, side by side so neither is forgotten.
    fn code_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::MalformedJson(_) => ("malformed_json", "The request body is not valid JSON"),
            Self::InvalidBody => ("invalid_body", "The request body is not a JSON object"),
            Self::ValidationFailed(_) => ("validation_failed", "The request has invalid fields"),
            Self::InvalidQuery(_) => ("invalid_query", "The search query is not valid"),
            Self::NotFound => ("not_found", "Not found"),
            Self::MethodNotAllowed { .. } => ("method_not_allowed", "Method not allowed"),
            Self::CustomerNotFound => ("customer_not_found", "Customer not found"),
            Self::CustomerDeleted => ("customer_deleted", "Customer deleted"),
            Self::PreconditionFailed { .. } => (
                "precondition_failed",
                "The customer is not at the version If-Match names",
            ),
            Self::PreconditionRequired => ("precondition_required", "If-Match is required"),
            Self::Unauthorized { .. } => ("unauthorized", "Authentication required"),
            Self::RepeatedAuthorization { .. } => (
                "invalid_authorization",
                "The Authorization header is given more than once",
            ),
            Self::Forbidden { .. } => ("forbidden", "The credential lacks a scope"),
            Self::RateLimited { .. } | Self::TooManyInFlight { .. } => {
                ("rate_limited", "Too many requests")
            }
            Self::BodyTimeout { .. } => {
                ("request_timeout", "The request body did not arrive in time")
            }
            Self::NotImplemented { .. } => ("not_implemented", "Not implemented"),
            Self::EmailAlreadyExists { .. } => (
                "email_already_exists",
                "A customer with this email already exists",
            ),
            Self::IdempotencyKeyInUse { .. } => {
                ("idempotency_key_in_use", "The idempotency key is in use")
            }
            Self::IdempotencyKeyReused => (
                "idempotency_key_reused",
                "The idempotency key was used with another body",
            ),
            Self::PayloadTooLarge { .. } => ("payload_too_large", "The request body is too large"),
            Self::UnsupportedMediaType { .. } => {
                ("unsupported_media_type", "Unsupported media type")
            }
            Self::Internal => ("internal_error", "Internal error"),
            Self::ServiceUnavailable { .. } | Self::NatsPermissionDenied { .. } => {
                ("service_unavailable", "Service unavailable")
            }
            Self::WorkerTimeout { .. } => ("worker_timeout", "The worker did not reply in time"),
        }
    }

    /// Seconds a client should wait before retrying, for errors that invite a retry.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            Self::ServiceUnavailable {
                retry_after_secs, ..
            }
            | Self::IdempotencyKeyInUse { retry_after_secs }
            | Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::TooManyInFlight { .. } => Some(1),
            Self::NatsPermissionDenied { .. } => Some(5),
            _ => None,
        }
    }

    /// The version whose entity tag a reply with this error carries as `ETag`: the
    /// customer's current one, after a failed `If-Match`.
    pub fn current_version(&self) -> Option<u64> {
        match self {
            Self::PreconditionFailed { version } => Some(*version),
            _ => None,
        }
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        let code = self.code();
        Problem {
            problem_type: format!("/problems/{code}"),
            title: self.code_and_title().1.to_owned(),
            status: self.status(),
            code: code.to_owned(),
            detail: self.to_string(),
            errors: match self {
                Self::ValidationFailed(errors) => Some(
                    errors
                        .iter()
                        .take(MAX_LISTED_FIELD_ERRORS)
                        .cloned()
                        .collect(),
                ),
                _ => None,
            },
            customer_id: match self {
                Self::EmailAlreadyExists { customer_id } => Some(customer_id.to_string()),
                _ => None,
            },
            position: match self {
                Self::InvalidQuery(e) => Some(e.position),
                _ => None,
            },
            expected: match self {
                Self::InvalidQuery(e) => Some(e.expected.clone()),
                _ => None,
            },
        }
    }

    /// The problem body serialised as JSON.
    pub fn problem_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.problem()).expect("a problem always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::new_customer::NewCustomer;
    use crate::wire::problem::MAX_PROBLEM_BYTES;
    use crate::wire::protocol::DEFAULT_MAX_BODY_BYTES;

    /// A JSON object of as many `"{key}{n}":0` members as fit in the default body limit.
    fn body_of_unknown_keys(key: &str, inside_address: bool) -> String {
        let mut members = Vec::new();
        let mut len = 64;
        for n in 0.. {
            let member = serde_json::to_string(&format!("{key}{n}")).unwrap() + ":0";
            len += member.len() + 1;
            if len > DEFAULT_MAX_BODY_BYTES {
                break;
            }
            members.push(member);
        }
        let members = members.join(",");
        if inside_address {
            format!(r#"{{"address":{{{members}}}}}"#)
        } else {
            format!("{{{members}}}")
        }
    }

    #[test]
    fn no_body_up_to_the_limit_makes_a_problem_over_the_bound() {
        let cases = [
            (
                "thousands of short unknown keys",
                body_of_unknown_keys("k", false),
            ),
            (
                "long keys of four-byte characters",
                body_of_unknown_keys(&"😀".repeat(500), false),
            ),
            (
                "keys of control characters, which JSON escapes six-fold",
                body_of_unknown_keys(&"\u{1}".repeat(500), false),
            ),
            (
                "unknown keys inside address",
                body_of_unknown_keys("zip", true),
            ),
        ];
        for (description, body) in cases {
            assert!(body.len() <= DEFAULT_MAX_BODY_BYTES, "{description}");
            let error = ApiError::from(NewCustomer::parse(body.as_bytes()).expect_err(description));
            let ApiError::ValidationFailed(errors) = &error else {
                panic!("{description}: {error:?}");
            };
            let problem = error.problem();
            let listed = problem.errors.as_ref().map_or(0, Vec::len);
            assert_eq!(listed, MAX_LISTED_FIELD_ERRORS, "{description}");
            assert!(
                problem
                    .detail
                    .starts_with(&format!("{} fields are invalid", errors.len())),
                "{description}: the detail gives the true count: {}",
                problem.detail
            );
            let size = error.problem_json().len();
            assert!(size <= MAX_PROBLEM_BYTES, "{description}: {size} bytes");
        }
    }
}
