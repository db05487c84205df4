//! The list query (`GET /api/v1/customers?...`, `customers.v1.list`): Stripe-style cursors
//! over ids, newest first, an optional case-insensitive email filter, and the list body.
//! Over NATS the query is a JSON object; the ingress turns the HTTP query string into the same
//! object with string values, so `limit` is accepted as a number or a string of digits.

use std::str::FromStr;

use serde_json::{Map, Value};

use crate::domain::fields::CustomerEmail;
use crate::domain::id::CustomerId;
use crate::domain::violation::{FieldError, FieldErrorCode, Violation};
use crate::wire::error::ApiError;

/// Customers per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 10;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 100;

/// Where a page starts, relative to a customer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The page holds customers older than this one (the next page).
    StartingAfter(CustomerId),
    /// The page holds customers newer than this one (the previous page).
    EndingBefore(CustomerId),
}

/// A validated list query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// 1 to [`MAX_LIMIT`].
    pub limit: usize,
    pub cursor: Option<Cursor>,
    /// The lower-cased email to filter by (an index lookup, not a scan).
    pub email_key: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            cursor: None,
            email_key: None,
        }
    }
}

impl ListQuery {
    /// Parses a list request payload: empty (all defaults) or a JSON object with the keys
    /// `limit`, `starting_after`, `ending_before` and `email`; `null` means absent. Every
    /// invalid parameter is reported at once.
    pub fn parse(payload: &[u8]) -> Result<Self, ApiError> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        Self::from_object(crate::domain::json::object(payload)?)
    }

    fn from_object(object: Map<String, Value>) -> Result<Self, ApiError> {
        let mut query = Self::default();
        let mut errors = Vec::new();
        let (mut starting_after, mut ending_before) = (None, None);
        for (key, value) in object {
            if value.is_null() {
                continue;
            }
            let result = match key.as_str() {
                "limit" => parse_limit(&value).map(|limit| query.limit = limit),
                "starting_after" => parse_id(&value).map(|id| starting_after = Some(id)),
                "ending_before" => parse_id(&value).map(|id| ending_before = Some(id)),
                "email" => as_str(&value)
                    .and_then(CustomerEmail::parse)
                    .map(|email| query.email_key = Some(email.index_key())),
                _ => Err(Violation::new(
                    FieldErrorCode::UnknownField,
                    "unknown parameter; use limit, starting_after, ending_before or email",
                )),
            };
            if let Err(violation) = result {
                errors.push(violation.at(&key));
            }
        }
        query.cursor = match (starting_after, ending_before) {
            (Some(_), Some(_)) => {
                errors.push(FieldError {
                    field: "ending_before".to_owned(),
                    code: FieldErrorCode::Invalid,
                    message: "use either starting_after or ending_before, not both".to_owned(),
                });
                None
            }
            (Some(id), None) => Some(Cursor::StartingAfter(id)),
            (None, Some(id)) => Some(Cursor::EndingBefore(id)),
            (None, None) => None,
        };
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(ApiError::ValidationFailed(errors))
        }
    }
}

fn as_str(value: &Value) -> Result<&str, Violation> {
    value
        .as_str()
        .ok_or_else(|| Violation::new(FieldErrorCode::InvalidType, "must be a string"))
}

fn parse_limit(value: &Value) -> Result<usize, Violation> {
    let limit = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        Value::String(_) => None,
        _ => {
            return Err(Violation::new(
                FieldErrorCode::InvalidType,
                "limit must be an integer",
            ));
        }
    };
    limit
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            Violation::invalid(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
        })
}

fn parse_id(value: &Value) -> Result<CustomerId, Violation> {
    CustomerId::from_str(as_str(value)?).map_err(|_| {
        Violation::invalid("must be a customer id such as cus_01h3vjs3b16yc3f9q8q9pfrb80")
    })
}

/// The list body `{"data": [...], "has_more": bool}` from stored customer JSON documents,
/// newest first, without parsing them again.
pub fn list_body<'a>(customers: impl IntoIterator<Item = &'a [u8]>, has_more: bool) -> Vec<u8> {
    let mut body = b"{\"data\":[".to_vec();
    for (i, customer) in customers.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(customer);
    }
    body.extend_from_slice(if has_more {
        b"],\"has_more\":true}"
    } else {
        b"],\"has_more\":false}"
    });
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_queries() {
        let id = CustomerId::from_uuid(uuid::Uuid::now_v7());
        let cases = [
            (
                "empty payload: defaults",
                String::new(),
                ListQuery::default(),
            ),
            (
                "empty object: defaults",
                "{}".to_owned(),
                ListQuery::default(),
            ),
            (
                "limit as a number, email lower-cased",
                r#"{"limit": 100, "email": " Ann@Example.COM "}"#.to_owned(),
                ListQuery {
                    limit: 100,
                    cursor: None,
                    email_key: Some("ann@example.com".to_owned()),
                },
            ),
            (
                "limit as a string (from a query string), starting_after",
                format!(r#"{{"limit": "1", "starting_after": "{id}"}}"#),
                ListQuery {
                    limit: 1,
                    cursor: Some(Cursor::StartingAfter(id)),
                    email_key: None,
                },
            ),
            (
                "ending_before, null means absent",
                format!(r#"{{"ending_before": "{id}", "limit": null}}"#),
                ListQuery {
                    limit: DEFAULT_LIMIT,
                    cursor: Some(Cursor::EndingBefore(id)),
                    email_key: None,
                },
            ),
        ];
        for (description, payload, expected) in cases {
            assert_eq!(
                ListQuery::parse(payload.as_bytes()),
                Ok(expected),
                "{description}"
            );
        }
    }

    #[test]
    fn invalid_queries_name_every_bad_parameter() {
        let id = CustomerId::from_uuid(uuid::Uuid::now_v7());
        type Case = (
            &'static str,
            String,
            &'static [(&'static str, FieldErrorCode)],
        );
        let cases: [Case; 9] = [
            (
                "limit zero",
                r#"{"limit": 0}"#.into(),
                &[("limit", FieldErrorCode::Invalid)],
            ),
            (
                "limit over 100",
                r#"{"limit": "101"}"#.into(),
                &[("limit", FieldErrorCode::Invalid)],
            ),
            (
                "limit negative",
                r#"{"limit": -1}"#.into(),
                &[("limit", FieldErrorCode::Invalid)],
            ),
            (
                "limit not digits",
                r#"{"limit": "ten"}"#.into(),
                &[("limit", FieldErrorCode::Invalid)],
            ),
            (
                "limit a fraction",
                r#"{"limit": 2.5}"#.into(),
                &[("limit", FieldErrorCode::Invalid)],
            ),
            (
                "limit a boolean",
                r#"{"limit": true}"#.into(),
                &[("limit", FieldErrorCode::InvalidType)],
            ),
            (
                "cursor not an id, email not an email, unknown key",
                r#"{"starting_after": "cus_nope", "email": "nope", "offset": 3}"#.into(),
                &[
                    ("starting_after", FieldErrorCode::Invalid),
                    ("email", FieldErrorCode::Invalid),
                    ("offset", FieldErrorCode::UnknownField),
                ],
            ),
            (
                "both cursors",
                format!(r#"{{"starting_after": "{id}", "ending_before": "{id}"}}"#),
                &[("ending_before", FieldErrorCode::Invalid)],
            ),
            (
                "cursor of another type",
                r#"{"ending_before": "ord_01h3vjs3b16yc3f9q8q9pfrb80"}"#.into(),
                &[("ending_before", FieldErrorCode::Invalid)],
            ),
        ];
        for (description, payload, expected) in cases {
            let Err(ApiError::ValidationFailed(errors)) = ListQuery::parse(payload.as_bytes())
            else {
                panic!("{description}: accepted");
            };
            let got: Vec<(&str, FieldErrorCode)> =
                errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
            assert_eq!(got, expected, "{description}");
        }
        assert_eq!(ListQuery::parse(b"[1]"), Err(ApiError::InvalidBody));
        assert!(matches!(
            ListQuery::parse(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn list_body_joins_stored_documents() {
        let docs: [&[u8]; 2] = [br#"{"id":"a"}"#, br#"{"id":"b"}"#];
        assert_eq!(
            list_body(docs, true),
            br#"{"data":[{"id":"a"},{"id":"b"}],"has_more":true}"#
        );
        assert_eq!(list_body([], false), br#"{"data":[],"has_more":false}"#);
    }
}
