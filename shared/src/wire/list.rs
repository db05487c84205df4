//! The list query (`GET /api/v1/customers?...`, `customers.v1.list`) and its bodies. Two
//! orders: newest first by id (the default; Stripe-style cursors over ids) and the change
//! feed (`order=updated_asc`: oldest change first by (`updated_at`, id), paged by an opaque
//! [`FeedPosition`]). Filters combine with either (AND): email, status, country, `created` and
//! `updated` ranges, `custom_data[KEY]=VALUE`. Over NATS the query is a JSON object; the
//! ingress turns the HTTP query string into the same object with string values, so numbers
//! and booleans are accepted as JSON values or as strings.

use std::str::FromStr;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::country::CountryCode;
use crate::domain::fields::{CustomData, CustomerEmail, Status, scalar_text};
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

/// The order of a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Newest first by id (creation order), the default.
    #[default]
    CreatedDesc,
    /// The change feed: oldest change first by (`updated_at`, id); a tombstone is placed by
    /// its deletion time.
    UpdatedAsc,
}

/// A position in the change feed: the (`updated_at` in ms, id) of the last item delivered;
/// the feed goes on strictly after it. As the `cursor` parameter it is opaque: `f1` and 48
/// hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedPosition {
    pub at_ms: u64,
    /// The id's 16 bytes (all zero before the first id of `at_ms`).
    pub id: [u8; 16],
}

impl FeedPosition {
    /// Just before everything changed at or after `at_ms`.
    pub fn before(at_ms: u64) -> Self {
        Self { at_ms, id: [0; 16] }
    }

    /// The position of `id` changed at `at_ms`.
    pub fn of(at_ms: u64, id: CustomerId) -> Self {
        Self {
            at_ms,
            id: id.to_bytes(),
        }
    }

    /// The opaque text of the `cursor` parameter and of `next_cursor`.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(50);
        text.push_str("f1");
        for byte in self.at_ms.to_be_bytes().iter().chain(&self.id) {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }

    pub fn decode(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("f1")?;
        if hex.len() != 48 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 24];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        let (at, id) = bytes.split_at(8);
        Some(Self {
            at_ms: u64::from_be_bytes(at.try_into().ok()?),
            id: id.try_into().ok()?,
        })
    }
}

/// An inclusive range of Unix milliseconds (everything when unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsRange {
    pub min: u64,
    pub max: u64,
}

impl Default for MsRange {
    fn default() -> Self {
        Self {
            min: 0,
            max: u64::MAX,
        }
    }
}

impl MsRange {
    pub fn contains(&self, ms: u64) -> bool {
        (self.min..=self.max).contains(&ms)
    }

    pub fn is_everything(&self) -> bool {
        *self == Self::default()
    }

    /// Narrows the range by `bound` (`gte`, `gt`, `lte` or `lt`) at `nanos` since the epoch.
    fn narrow(&mut self, bound: &str, nanos: i128) {
        const NS_PER_MS: i128 = 1_000_000;
        let floor = nanos.div_euclid(NS_PER_MS);
        let ceil = floor + i128::from(nanos.rem_euclid(NS_PER_MS) != 0);
        let (min, max) = match bound {
            "gte" => (ceil, i128::MAX),
            "gt" => (floor + 1, i128::MAX),
            "lte" => (i128::MIN, floor),
            _ => (i128::MIN, ceil - 1),
        };
        if max < 0 {
            // Before the epoch: nothing is that old.
            (self.min, self.max) = (1, 0);
            return;
        }
        let ms = |ms: i128| u64::try_from(ms.max(0)).unwrap_or(u64::MAX);
        self.min = self.min.max(ms(min));
        self.max = self.max.min(ms(max));
    }
}

/// The filters a page's customers all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub status: Option<Status>,
    pub country: Option<CountryCode>,
    /// `created[gte|gt|lte|lt]`.
    pub created: MsRange,
    /// `updated[gte|gt|lte|lt]`.
    pub updated: MsRange,
    /// `custom_data[KEY]=VALUE`: the key and the value's text (`fields::scalar_text`), sorted
    /// by key.
    pub custom_data: Vec<(String, String)>,
}

impl Filters {
    /// Whether a filter needs the customer's stored JSON (not only its id).
    pub fn reads_fields(&self) -> bool {
        self.status.is_some()
            || self.country.is_some()
            || !self.updated.is_everything()
            || !self.custom_data.is_empty()
    }
}

/// A validated list query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// 1 to [`MAX_LIMIT`].
    pub limit: usize,
    pub order: Order,
    /// Newest first only.
    pub cursor: Option<Cursor>,
    /// The change feed only: where the page starts (after it).
    pub feed_cursor: Option<FeedPosition>,
    /// The lower-cased email to filter by (an index lookup, not a scan).
    pub email_key: Option<String>,
    pub filters: Filters,
    /// The change feed only: tombstones too.
    pub include_deleted: bool,
}

impl ListQuery {
    /// The newest [`DEFAULT_LIMIT`] customers.
    pub fn newest() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            ..Self::default()
        }
    }

    /// Parses a list request payload: empty (all defaults) or a JSON object with the keys
    /// of `docs/API.md` §4; `null` means absent. Every invalid parameter is reported at once.
    pub fn parse(payload: &[u8]) -> Result<Self, ApiError> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::newest());
        }
        Self::from_object(crate::domain::json::object(payload)?)
    }

    /// Where the change feed starts: after the cursor, or just before the `updated` range.
    pub fn feed_start(&self) -> FeedPosition {
        let start = FeedPosition::before(self.filters.updated.min);
        self.feed_cursor.map_or(start, |cursor| cursor.max(start))
    }

    fn from_object(object: Map<String, Value>) -> Result<Self, ApiError> {
        let mut query = Self::newest();
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
                "status" => as_str(&value)
                    .and_then(Status::parse)
                    .map(|status| query.filters.status = Some(status)),
                "country" => as_str(&value)
                    .and_then(CountryCode::parse)
                    .map(|country| query.filters.country = Some(country)),
                "order" => parse_order(&value).map(|order| query.order = order),
                "cursor" => parse_feed_cursor(&value).map(|c| query.feed_cursor = Some(c)),
                "include_deleted" => {
                    parse_bool(&value).map(|include| query.include_deleted = include)
                }
                other => match range_key(other) {
                    Some((field, bound)) => parse_instant(&value).map(|nanos| {
                        let range = match field {
                            "created" => &mut query.filters.created,
                            _ => &mut query.filters.updated,
                        };
                        range.narrow(bound, nanos);
                    }),
                    None => match custom_data_key(other) {
                        Some(Ok(name)) => parse_scalar(&value)
                            .map(|text| query.filters.custom_data.push((name.to_owned(), text))),
                        Some(Err(violation)) => Err(violation),
                        None => Err(Violation::new(
                            FieldErrorCode::UnknownField,
                            "unknown parameter; use limit, starting_after, ending_before, email, status, country, created[gte|gt|lte|lt], updated[gte|gt|lte|lt], custom_data[KEY], order, cursor or include_deleted",
                        )),
                    },
                },
            };
            if let Err(violation) = result {
                errors.push(violation.at(&key));
            }
        }
        query.filters.custom_data.sort();
        let conflict = |field: &str, message: &str| FieldError {
            field: field.to_owned(),
            code: FieldErrorCode::Invalid,
            message: message.to_owned(),
        };
        query.cursor = match (starting_after, ending_before) {
            (Some(_), Some(_)) => {
                errors.push(conflict(
                    "ending_before",
                    "use either starting_after or ending_before, not both",
                ));
                None
            }
            (Some(id), None) => Some(Cursor::StartingAfter(id)),
            (None, Some(id)) => Some(Cursor::EndingBefore(id)),
            (None, None) => None,
        };
        match query.order {
            Order::CreatedDesc => {
                if query.feed_cursor.is_some() {
                    let message = "cursor pages the change feed (order=updated_asc); newest-first pages use starting_after or ending_before";
                    errors.push(conflict("cursor", message));
                }
                if query.include_deleted {
                    let message = "tombstones are only in the change feed (order=updated_asc)";
                    errors.push(conflict("include_deleted", message));
                }
            }
            Order::UpdatedAsc => {
                if query.cursor.is_some() {
                    let field = if starting_after.is_some() {
                        "starting_after"
                    } else {
                        "ending_before"
                    };
                    let message = "the change feed (order=updated_asc) pages with cursor";
                    errors.push(conflict(field, message));
                }
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(ApiError::ValidationFailed(errors))
        }
    }
}

/// `created[gte]` → `("created", "gte")`.
fn range_key(key: &str) -> Option<(&str, &str)> {
    let (field, rest) = key.split_once('[')?;
    let bound = rest.strip_suffix(']')?;
    let known_field = matches!(field, "created" | "updated");
    let known_bound = matches!(bound, "gte" | "gt" | "lte" | "lt");
    (known_field && known_bound).then_some((field, bound))
}

/// `custom_data[tier]` → `tier`; `None` for a key of another shape.
fn custom_data_key(key: &str) -> Option<Result<&str, Violation>> {
    let name = key.strip_prefix("custom_data[")?.strip_suffix(']')?;
    let valid = !name.is_empty() && name.chars().count() <= CustomData::MAX_KEY_CHARS;
    Some(if valid {
        Ok(name)
    } else {
        Err(Violation::invalid(format!(
            "custom_data keys are 1 to {} characters",
            CustomData::MAX_KEY_CHARS
        )))
    })
}

fn parse_order(value: &Value) -> Result<Order, Violation> {
    match as_str(value)? {
        "created_desc" => Ok(Order::CreatedDesc),
        "updated_asc" => Ok(Order::UpdatedAsc),
        _ => Err(Violation::invalid(
            "order must be created_desc (the default) or updated_asc",
        )),
    }
}

fn parse_feed_cursor(value: &Value) -> Result<FeedPosition, Violation> {
    FeedPosition::decode(as_str(value)?).ok_or_else(|| {
        Violation::invalid("must be a next_cursor this service returned for order=updated_asc")
    })
}

fn parse_bool(value: &Value) -> Result<bool, Violation> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::String(text) if text == "true" => Ok(true),
        Value::String(text) if text == "false" => Ok(false),
        _ => Err(Violation::invalid("must be true or false")),
    }
}

/// An instant as Unix seconds (digits, or a JSON integer) or RFC 3339, in nanoseconds.
fn parse_instant(value: &Value) -> Result<i128, Violation> {
    let refused = || Violation::invalid("must be Unix seconds or an RFC 3339 instant");
    let seconds = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse().ok()
        }
        Value::String(text) => {
            let instant = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| refused())?;
            return Ok(instant.unix_timestamp_nanos());
        }
        _ => None,
    };
    seconds
        .map(|s| i128::from(s) * 1_000_000_000)
        .ok_or_else(refused)
}

/// A `custom_data` filter's value: a string, a number or a boolean, as its text.
fn parse_scalar(value: &Value) -> Result<String, Violation> {
    scalar_text(value).ok_or_else(|| {
        Violation::new(
            FieldErrorCode::InvalidType,
            "must be a string, a number or a boolean",
        )
    })
}

pub(crate) fn as_str(value: &Value) -> Result<&str, Violation> {
    value
        .as_str()
        .ok_or_else(|| Violation::new(FieldErrorCode::InvalidType, "must be a string"))
}

pub(crate) fn parse_limit(value: &Value) -> Result<usize, Violation> {
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

/// A change-feed page `{"data": [...], "has_more": bool, "next_cursor": "…"}` from stored
/// customer JSON documents and tombstone bodies, oldest change first.
pub fn feed_body<'a>(
    items: impl IntoIterator<Item = &'a [u8]>,
    has_more: bool,
    next: FeedPosition,
) -> Vec<u8> {
    let mut body = list_body(items, has_more);
    body.pop();
    body.extend_from_slice(b",\"next_cursor\":\"");
    body.extend_from_slice(next.encode().as_bytes());
    body.extend_from_slice(b"\"}");
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
                ListQuery::newest(),
            ),
            (
                "empty object: defaults",
                "{}".to_owned(),
                ListQuery::newest(),
            ),
            (
                "limit as a number, email lower-cased",
                r#"{"limit": 100, "email": " Ann@Example.COM "}"#.to_owned(),
                ListQuery {
                    limit: 100,
                    email_key: Some("ann@example.com".to_owned()),
                    ..ListQuery::newest()
                },
            ),
            (
                "limit as a string (from a query string), starting_after",
                format!(r#"{{"limit": "1", "starting_after": "{id}"}}"#),
                ListQuery {
                    limit: 1,
                    cursor: Some(Cursor::StartingAfter(id)),
                    ..ListQuery::newest()
                },
            ),
            (
                "ending_before, null means absent",
                format!(r#"{{"ending_before": "{id}", "limit": null}}"#),
                ListQuery {
                    cursor: Some(Cursor::EndingBefore(id)),
                    ..ListQuery::newest()
                },
            ),
            (
                "every filter: country by name, ranges from seconds and RFC 3339, custom_data sorted by key",
                r#"{"status": "suspended", "country": "tanzania", "created[gte]": "1700000000",
                    "created[lt]": "2024-01-01T00:00:00.0005Z", "updated[gt]": 1700000000,
                    "custom_data[tier]": "gold", "custom_data[seats]": 3}"#
                    .to_owned(),
                ListQuery {
                    filters: Filters {
                        status: Some(Status::Suspended),
                        country: Some(CountryCode::parse("TZ").unwrap()),
                        created: MsRange {
                            min: 1_700_000_000_000,
                            max: 1_704_067_200_000,
                        },
                        updated: MsRange {
                            min: 1_700_000_000_001,
                            max: u64::MAX,
                        },
                        custom_data: vec![
                            ("seats".to_owned(), "3".to_owned()),
                            ("tier".to_owned(), "gold".to_owned()),
                        ],
                    },
                    ..ListQuery::newest()
                },
            ),
            (
                "the change feed, with a cursor and tombstones",
                format!(
                    r#"{{"order": "updated_asc", "cursor": "{}", "include_deleted": "true"}}"#,
                    FeedPosition::of(42, id).encode()
                ),
                ListQuery {
                    order: Order::UpdatedAsc,
                    feed_cursor: Some(FeedPosition::of(42, id)),
                    include_deleted: true,
                    ..ListQuery::newest()
                },
            ),
            (
                "a range before the epoch holds nothing",
                r#"{"updated[lt]": "1969-12-31T23:59:59Z"}"#.to_owned(),
                ListQuery {
                    filters: Filters {
                        updated: MsRange { min: 1, max: 0 },
                        ..Filters::default()
                    },
                    ..ListQuery::newest()
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
        let cases: [Case; 16] = [
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
            (
                "bad filter values",
                r#"{"status": "gone", "country": "Atlantis", "created[gte]": "yesterday",
                    "updated[lt]": true}"#
                    .into(),
                &[
                    ("status", FieldErrorCode::Invalid),
                    ("country", FieldErrorCode::Invalid),
                    ("created[gte]", FieldErrorCode::Invalid),
                    ("updated[lt]", FieldErrorCode::Invalid),
                ],
            ),
            (
                "unknown range bounds and fields",
                r#"{"created[eq]": "1", "deleted[gte]": "1", "created": "1"}"#.into(),
                &[
                    ("created[eq]", FieldErrorCode::UnknownField),
                    ("deleted[gte]", FieldErrorCode::UnknownField),
                    ("created", FieldErrorCode::UnknownField),
                ],
            ),
            (
                "custom_data: an empty key, a nested value",
                r#"{"custom_data[]": "x", "custom_data[tier]": {"a": 1}}"#.into(),
                &[
                    ("custom_data[]", FieldErrorCode::Invalid),
                    ("custom_data[tier]", FieldErrorCode::InvalidType),
                ],
            ),
            (
                "a feed cursor on a newest-first list, tombstones too",
                format!(
                    r#"{{"cursor": "{}", "include_deleted": "true"}}"#,
                    FeedPosition::before(1).encode()
                ),
                &[
                    ("cursor", FieldErrorCode::Invalid),
                    ("include_deleted", FieldErrorCode::Invalid),
                ],
            ),
            (
                "an id cursor on the change feed",
                format!(r#"{{"order": "updated_asc", "starting_after": "{id}"}}"#),
                &[("starting_after", FieldErrorCode::Invalid)],
            ),
            (
                "a malformed feed cursor, an unknown order, include_deleted not a boolean",
                r#"{"order": "name_asc", "cursor": "f1zz", "include_deleted": "yes"}"#.into(),
                &[
                    ("order", FieldErrorCode::Invalid),
                    ("cursor", FieldErrorCode::Invalid),
                    ("include_deleted", FieldErrorCode::Invalid),
                ],
            ),
            (
                "an id as a feed cursor",
                format!(r#"{{"order": "updated_asc", "cursor": "{id}"}}"#),
                &[("cursor", FieldErrorCode::Invalid)],
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
    fn feed_positions_round_trip_and_refuse_anything_else() {
        let id = CustomerId::from_uuid(uuid::Uuid::now_v7());
        let position = FeedPosition::of(1_700_000_000_123, id);
        assert_eq!(FeedPosition::decode(&position.encode()), Some(position));
        assert!(FeedPosition::before(5) < FeedPosition::of(5, id));
        for bad in [
            "",
            "f1",
            "f2000000000000000000000000000000000000000000000000",
            "f1xyz",
        ] {
            assert_eq!(FeedPosition::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges_round_sub_millisecond_bounds_inwards() {
        let range = |bound: &str, nanos: i128| {
            let mut range = MsRange::default();
            range.narrow(bound, nanos);
            range
        };
        assert_eq!(range("gte", 1_500_000).min, 2, "1.5 ms: from 2 ms");
        assert_eq!(range("gt", 1_500_000).min, 2);
        assert_eq!(range("gt", 1_000_000).min, 2, "after 1 ms exactly");
        assert_eq!(range("lte", 1_500_000).max, 1);
        assert_eq!(range("lt", 1_500_000).max, 1);
        assert_eq!(range("lt", 1_000_000).max, 0, "before 1 ms exactly");
        assert!(!range("lt", 0).contains(0), "nothing before the epoch");
    }

    #[test]
    fn list_body_joins_stored_documents() {
        let docs: [&[u8]; 2] = [br#"{"id":"a"}"#, br#"{"id":"b"}"#];
        assert_eq!(
            list_body(docs, true),
            br#"{"data":[{"id":"a"},{"id":"b"}],"has_more":true}"#
        );
        assert_eq!(list_body([], false), br#"{"data":[],"has_more":false}"#);
        let next = FeedPosition::before(0);
        assert_eq!(
            String::from_utf8(feed_body(docs, false, next)).unwrap(),
            format!(
                r#"{{"data":[{{"id":"a"}},{{"id":"b"}}],"has_more":false,"next_cursor":"{}"}}"#,
                next.encode()
            )
        );
    }
}
