//! The RFC 9457 problem body every error reply carries, over HTTP and NATS alike, and the
//! per-field errors of a `validation_failed` problem. Built only by [`crate::ApiError`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// `/problems/{code}`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code (also sent as `Nats-Service-Error-Code` over NATS).
    pub status: u16,
    /// Stable machine-readable key, e.g. `email_already_exists`.
    pub code: String,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// The invalid fields; present on `validation_failed` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// The customer that already holds the email; present on `email_already_exists` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `address.city`.
    pub field: String,
    pub code: FieldErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

/// Why a field was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldErrorCode {
    /// A required key is missing or null.
    Required,
    /// The value has the wrong JSON type.
    InvalidType,
    /// The value is empty after trimming.
    TooShort,
    /// The value is over its maximum length.
    TooLong,
    /// Any other rule of the field.
    Invalid,
    /// A key that is not part of the contract.
    UnknownField,
}

/// A rule broken by one value, before it is attached to a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: FieldErrorCode,
    pub message: String,
}

impl Violation {
    pub fn new(code: FieldErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(FieldErrorCode::Invalid, message)
    }

    /// Attaches the violation to the field at `path`.
    pub fn at(self, path: impl Into<String>) -> FieldError {
        FieldError {
            field: path.into(),
            code: self.code,
            message: self.message,
        }
    }
}
