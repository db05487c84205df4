//! What is wrong with a field of a request: a [`Violation`] of one rule, attached to its path
//! as a [`FieldError`] with a stable [`FieldErrorCode`]. Text a violation quotes from the
//! request goes through [`echoed`], so an error never grows with its input: a message cannot
//! multiply a request's size, whatever the request.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a request body is refused, before any HTTP or NATS status is attached to it
/// (`crate::ApiError` maps each to its status and code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, or a key twice in an object: what and where (line and column).
    #[error("{0}")]
    Malformed(String),
    /// JSON, but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// An object whose fields break the rules: every broken rule.
    #[error("{} fields are invalid", .0.len())]
    InvalidFields(Vec<FieldError>),
}

/// Characters of a request's own text (a key, a value) echoed in an error at most.
pub const MAX_ECHOED_CHARS: usize = 64;

/// `text` as an error may quote it: at most [`MAX_ECHOED_CHARS`] characters (then `…`), with
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
