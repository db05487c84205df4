//! The RFC 9457 problem body every error reply carries, over HTTP and NATS alike. Built only
//! by [`crate::ApiError`]; its `errors` are the request's [`FieldError`]s.
//!
//! A problem body is bounded whatever the request: at most [`MAX_LISTED_FIELD_ERRORS`] field
//! errors are listed (the `detail` gives the true count) and text echoed from the request is
//! cut (`crate::domain::violation::echoed`), so a refusal never amplifies its request and
//! always fits in a NATS message and in one stored idempotency record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::violation::FieldError;

/// Media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Field errors listed in one `validation_failed` body at most.
pub const MAX_LISTED_FIELD_ERRORS: usize = 20;

/// Upper bound of any problem body's size in bytes, whatever the request.
pub const MAX_PROBLEM_BYTES: usize = 16 * 1024;

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
    /// Where a search query stopped parsing, in characters from 0; `invalid_query` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<usize>,
    /// What the query should have had at `position`; `invalid_query` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}
