//! The one mapping from an error to its HTTP status, stable `code`, title and problem body.
//! The worker sends it over NATS (status in `Nats-Service-Error-Code`), the ingress over HTTP
//! for the errors it detects itself; so both transports give identical answers.

use crate::customer::CustomerId;
use crate::problem::{FieldError, MAX_LISTED_FIELD_ERRORS, Problem};

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
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("no customer has this id")]
    CustomerNotFound,
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
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("an internal error occurred; it has been logged")]
    Internal,
    #[error("{reason}; retry after {retry_after_secs} s")]
    ServiceUnavailable {
        reason: &'static str,
        retry_after_secs: u32,
    },
    #[error("the worker did not reply within {timeout_ms} ms")]
    WorkerTimeout { timeout_ms: u64 },
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

impl ApiError {
    /// The HTTP status code (and NATS `Nats-Service-Error-Code`).
    pub fn status(&self) -> u16 {
        match self {
            Self::MalformedJson(_) | Self::InvalidBody | Self::ValidationFailed(_) => 400,
            Self::NotFound | Self::CustomerNotFound => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::EmailAlreadyExists { .. } | Self::IdempotencyKeyInUse { .. } => 409,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::IdempotencyKeyReused => 422,
            Self::Internal => 500,
            Self::ServiceUnavailable { .. } => 503,
            Self::WorkerTimeout { .. } => 504,
        }
    }

    /// The stable machine key (and NATS `Nats-Service-Error`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidBody => "invalid_body",
            Self::ValidationFailed(_) => "validation_failed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::CustomerNotFound => "customer_not_found",
            Self::EmailAlreadyExists { .. } => "email_already_exists",
            Self::IdempotencyKeyInUse { .. } => "idempotency_key_in_use",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Internal => "internal_error",
            Self::ServiceUnavailable { .. } => "service_unavailable",
            Self::WorkerTimeout { .. } => "worker_timeout",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "The request body is not valid JSON",
            Self::InvalidBody => "The request body is not a JSON object",
            Self::ValidationFailed(_) => "The request body has invalid fields",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed { .. } => "Method not allowed",
            Self::CustomerNotFound => "Customer not found",
            Self::EmailAlreadyExists { .. } => "A customer with this email already exists",
            Self::IdempotencyKeyInUse { .. } => "The idempotency key is in use",
            Self::IdempotencyKeyReused => "The idempotency key was used with another body",
            Self::PayloadTooLarge { .. } => "The request body is too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Internal => "Internal error",
            Self::ServiceUnavailable { .. } => "Service unavailable",
            Self::WorkerTimeout { .. } => "The worker did not reply in time",
        }
    }

    /// Seconds a client should wait before retrying, for errors that invite a retry.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            Self::ServiceUnavailable {
                retry_after_secs, ..
            }
            | Self::IdempotencyKeyInUse { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        let code = self.code();
        Problem {
            problem_type: format!("/problems/{code}"),
            title: self.title().to_owned(),
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
        }
    }

    /// The problem body serialised as JSON.
    pub fn problem_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.problem()).expect("a problem always serialises")
    }
}
