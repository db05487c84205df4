//! The `Idempotency-Key` header (docs/API.md §5): 1–255 printable ASCII characters (space
//! included), checked the same way for HTTP and NATS; anything else is a `validation_failed`
//! naming the header.

use crate::domain::violation::{FieldErrorCode, Violation};
use crate::wire::error::ApiError;
use crate::wire::protocol::headers::IDEMPOTENCY_KEY;

/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A valid idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let violation = if raw.is_empty() {
            Violation::new(
                FieldErrorCode::TooShort,
                "Idempotency-Key must not be empty",
            )
        } else if raw.len() > MAX_KEY_LEN {
            Violation::new(
                FieldErrorCode::TooLong,
                format!("Idempotency-Key must be at most {MAX_KEY_LEN} characters"),
            )
        } else if !raw.iter().all(|b| (b' '..=b'~').contains(b)) {
            Violation::invalid("Idempotency-Key must be printable ASCII characters")
        } else {
            return Ok(Self(String::from_utf8_lossy(raw).into_owned()));
        };
        Err(ApiError::ValidationFailed(vec![
            violation.at(IDEMPOTENCY_KEY),
        ]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        let long = "k".repeat(MAX_KEY_LEN);
        for (description, key) in [
            ("a UUID", "0b5bd1d4-8e16-4c42-9a6b-7a3c5e1b7a10"),
            ("one character", "a"),
            ("255 characters", long.as_str()),
            ("spaces and symbols", "order 42 / retry #1 ~"),
        ] {
            assert!(
                IdempotencyKey::parse(key.as_bytes()).is_ok(),
                "{description}"
            );
        }
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        for (description, key, code) in [
            ("empty", "", FieldErrorCode::TooShort),
            ("256 characters", too_long.as_str(), FieldErrorCode::TooLong),
            ("a tab", "a\tb", FieldErrorCode::Invalid),
            ("non-ASCII", "clé", FieldErrorCode::Invalid),
            ("DEL", "a\u{7f}", FieldErrorCode::Invalid),
        ] {
            let Err(ApiError::ValidationFailed(errors)) = IdempotencyKey::parse(key.as_bytes())
            else {
                panic!("{description}: accepted");
            };
            assert_eq!(errors.len(), 1, "{description}");
            assert_eq!(errors[0].field, "Idempotency-Key", "{description}");
            assert_eq!(errors[0].code, code, "{description}");
        }
    }
}
