//! The RFC 9457 problem body every error reply carries, over HTTP and NATS alike, and the
//! per-field errors of a `validation_failed` problem. Built only by [`crate::ApiError`].
//!
//! A problem body is bounded whatever the request: at most [`MAX_LISTED_FIELD_ERRORS`] field
//! errors are listed (the `detail` gives the true count) and text echoed from the request is
//! cut by [`echoed`], so a refusal never amplifies its request and always fits in a NATS
//! message and in one stored idempotency record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Field errors listed in one `validation_failed` body at most.
pub const MAX_LISTED_FIELD_ERRORS: usize = 20;

/// Characters of a request's own text (a key, a value) echoed in a problem at most.
pub const MAX_ECHOED_CHARS: usize = 64;

/// Upper bound of any problem body's size in bytes, whatever the request.
pub const MAX_PROBLEM_BYTES: usize = 16 * 1024;

/// `text` as a problem may quote it: at most [`MAX_ECHOED_CHARS`] characters (then `…`), with
/// control characters replaced by U+FFFD so that JSON escaping cannot multiply its size.
pub fn echoed(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(MAX_ECHOED_CHARS)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().nth(MAX_ECHOED_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

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

    /// Attaches the violation to the field at `path` (cut like any echoed text: a path can
    /// be a key the client made up).
    pub fn at(self, path: &str) -> FieldError {
        FieldError {
            field: echoed(path),
            code: self.code,
            message: self.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_text_is_cut_and_never_grows_when_escaped() {
        assert_eq!(echoed("zip"), "zip");
        let long = "k".repeat(MAX_ECHOED_CHARS + 1);
        assert_eq!(echoed(&long), format!("{}…", &long[..MAX_ECHOED_CHARS]));
        let controls = "\u{1}".repeat(100);
        let shown = echoed(&controls);
        assert_eq!(shown.chars().count(), MAX_ECHOED_CHARS + 1);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }
}
