//! The search query language (`GET /api/v1/customers/search?query=…`), Stripe's, so that
//! users who know it need nothing new: clauses `field:value` (exact; `email` compared
//! case-insensitively), `field~value` (substring of at least 3 characters, case-insensitive:
//! `name`, `email`, `phone`), `-` before a clause to negate it, `created`/`updated` with `>`,
//! `>=`, `<`, `<=` or `:` (Unix seconds or RFC 3339), `status`, `country`,
//! `custom_data['key']:'value'`, `field:null` for a missing optional field; values bare or in
//! single or double quotes with `\` escapes; clauses joined with `AND` or with `OR`, not both,
//! at most [`MAX_CLAUSES`]. [`SearchQuery::parse`] reads a query into its clauses, or says at
//! which character it stopped and what it expected there; [`SearchRequest::parse`] reads the
//! whole request (`query`, `limit`, `page`), and [`search_body`] writes the reply.

use std::fmt;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::country::CountryCode;
use crate::domain::fields::Status;
use crate::domain::id::CustomerId;
use crate::domain::violation::{FieldErrorCode, Violation};
use crate::wire::error::ApiError;
use crate::wire::list::{DEFAULT_LIMIT, as_str, parse_limit};

/// Most clauses a query may join.
pub const MAX_CLAUSES: usize = 10;
/// Shortest substring a `~` clause may look for, in characters.
pub const MIN_SUBSTRING_CHARS: usize = 3;

/// How a query's clauses combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Join {
    /// Every clause holds (also a query of one clause).
    #[default]
    And,
    /// At least one holds.
    Or,
}

/// A text field a clause can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    Name,
    Email,
    Phone,
}

/// A field that may be missing (`field:null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalField {
    Phone,
    Address,
    Country,
    PaymentMethod,
    CustomData,
}

/// A time field (`created_at`, `updated_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    Created,
    Updated,
}

/// A comparison of a time field with an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `:` — the same millisecond.
    Equal,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// What one clause tests, before any negation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `name:'Ada Lovelace'`; an email is lower-cased.
    Equals {
        field: TextField,
        value: String,
    },
    /// `name~'love'`, lower-cased.
    Contains {
        field: TextField,
        value: String,
    },
    Status(Status),
    Country(CountryCode),
    /// `created>1700000000`: the instant in nanoseconds since the epoch.
    Time {
        field: TimeField,
        comparison: Comparison,
        nanos: i128,
    },
    /// `custom_data['tier']:'gold'`: a string, or a number or boolean written as it.
    CustomData {
        key: String,
        value: String,
    },
    /// `phone:null`.
    Missing(OptionalField),
}

/// One clause: its test, negated with a leading `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub negated: bool,
    pub test: Test,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub join: Join,
    pub clauses: Vec<Clause>,
}

/// Where a query stopped making sense: the character (counted from 0) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {position}: expected {expected}")]
pub struct QueryError {
    pub position: usize,
    pub expected: String,
}

impl SearchQuery {
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let mut parser = Parser {
            chars: query.chars().collect(),
            at: 0,
        };
        parser.query()
    }
}

/// A validated search request: the query, the page size and where the page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub query: SearchQuery,
    /// 1 to [`crate::wire::list::MAX_LIMIT`].
    pub limit: usize,
    /// The page after the one that ended with this customer (a `next_page` given back).
    pub after: Option<CustomerId>,
}

/// The `next_page` token of a page that ended with customer `last`: opaque to clients.
pub fn page_token(last: CustomerId) -> String {
    format!("p1{:032x}", last.uuid().as_u128())
}

fn parse_page_token(text: &str) -> Option<CustomerId> {
    let hex = text.strip_prefix("p1").filter(|hex| hex.len() == 32)?;
    let number = u128::from_str_radix(hex, 16).ok()?;
    Some(CustomerId::from_uuid(uuid::Uuid::from_u128(number)))
}

impl SearchRequest {
    /// Parses a search payload: a JSON object with `query` (required), `limit` and `page`
    /// (`null` means absent). Bad parameters are `validation_failed`, naming each; a query
    /// that does not parse is `invalid_query`, with its position.
    pub fn parse(payload: &[u8]) -> Result<Self, ApiError> {
        let object = crate::domain::json::object(payload)?;
        let (mut query, mut limit, mut after) = (None, DEFAULT_LIMIT, None);
        let mut errors = Vec::new();
        for (key, value) in object {
            if value.is_null() {
                continue;
            }
            let result = match key.as_str() {
                "query" => as_str(&value).map(|text| query = Some(text.to_owned())),
                "limit" => parse_limit(&value).map(|n| limit = n),
                "page" => as_str(&value).and_then(|text| {
                    parse_page_token(text)
                        .map(|id| after = Some(id))
                        .ok_or_else(|| {
                            Violation::invalid("must be a next_page this service returned")
                        })
                }),
                _ => Err(Violation::new(
                    FieldErrorCode::UnknownField,
                    "unknown parameter; use query, limit or page",
                )),
            };
            if let Err(violation) = result {
                errors.push(violation.at(&key));
            }
        }
        if query.is_none() && !errors.iter().any(|e| e.field == "query") {
            errors.push(
                Violation::new(
                    FieldErrorCode::Required,
                    "query is required, e.g. name~'ada'",
                )
                .at("query"),
            );
        }
        if !errors.is_empty() {
            return Err(ApiError::ValidationFailed(errors));
        }
        let query =
            SearchQuery::parse(&query.unwrap_or_default()).map_err(ApiError::InvalidQuery)?;
        Ok(Self {
            query,
            limit,
            after,
        })
    }
}

/// The search body `{"data": [...], "has_more", "next_page", "total_count"}` from stored
/// customer JSON documents, newest first; `next_page` is `null` on the last page.
pub fn search_body<'a>(
    customers: impl IntoIterator<Item = &'a [u8]>,
    next_page: Option<CustomerId>,
    total_count: usize,
) -> Vec<u8> {
    let mut body = crate::wire::list::list_body(customers, next_page.is_some());
    body.pop();
    let next = match next_page {
        Some(last) => Value::String(page_token(last)),
        None => Value::Null,
    };
    body.extend_from_slice(
        format!(",\"next_page\":{next},\"total_count\":{total_count}}}").as_bytes(),
    );
    body
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

/// A clause's field, as written.
enum Field {
    Text(TextField),
    Status,
    Country,
    Time(TimeField),
    CustomData(String),
    Address,
    PaymentMethod,
}

impl Parser {
    fn query(&mut self) -> Result<SearchQuery, QueryError> {
        let mut query = SearchQuery {
            join: Join::And,
            clauses: vec![self.clause()?],
        };
        let mut join = None;
        loop {
            let spaced = self.skip_spaces();
            if self.at == self.chars.len() {
                return Ok(query);
            }
            let word_at = self.at;
            let next = match self.word().as_str() {
                "AND" if spaced => Join::And,
                "OR" if spaced => Join::Or,
                _ => return Err(self.expected_at(word_at, "AND, OR or the end of the query")),
            };
            if join.is_some_and(|join| join != next) {
                return Err(self.expected_at(
                    word_at,
                    "the same join as before (AND and OR cannot be mixed)",
                ));
            }
            join = Some(next);
            query.join = next;
            if !self.skip_spaces() {
                return Err(self.expected("a space after AND or OR"));
            }
            if query.clauses.len() == MAX_CLAUSES {
                return Err(self.expected(&format!(
                    "the end of the query (at most {MAX_CLAUSES} clauses)"
                )));
            }
            query.clauses.push(self.clause()?);
        }
    }

    fn clause(&mut self) -> Result<Clause, QueryError> {
        self.skip_spaces();
        let negated = self.eat('-');
        let field_at = self.at;
        let field = self.field()?;
        let operator_at = self.at;
        let operator: String = match self.peek() {
            Some(':') | Some('~') => self.next().into_iter().collect(),
            Some('>') | Some('<') => {
                let mut op: String = self.next().into_iter().collect();
                if self.eat('=') {
                    op.push('=');
                }
                op
            }
            _ => return Err(self.expected("an operator: ':', '~', '>', '>=', '<' or '<='")),
        };
        let value_at = self.at;
        let (value, quoted) = self.value()?;
        let test = match (field, operator.as_str()) {
            (_, ":") if !quoted && value == "null" => {
                let Some(optional) = self.optional_field(field_at) else {
                    return Err(self.expected_at(value_at, "a value (this field is never missing)"));
                };
                Test::Missing(optional)
            }
            (Field::Text(field), ":") => Test::Equals {
                value: match field {
                    TextField::Email => value.to_lowercase(),
                    _ => value,
                },
                field,
            },
            (Field::Text(field), "~") => {
                if value.chars().count() < MIN_SUBSTRING_CHARS {
                    return Err(self.expected_at(
                        value_at,
                        &format!("at least {MIN_SUBSTRING_CHARS} characters to look for"),
                    ));
                }
                Test::Contains {
                    field,
                    value: value.to_lowercase(),
                }
            }
            (Field::Status, ":") => Test::Status(
                Status::parse(&value)
                    .map_err(|_| self.expected_at(value_at, "active, inactive or suspended"))?,
            ),
            (Field::Country, ":") => Test::Country(CountryCode::parse(&value).map_err(|_| {
                self.expected_at(
                    value_at,
                    "a country: an ISO 3166-1 alpha-2 code or its name",
                )
            })?),
            (Field::Time(field), op) if op != "~" => Test::Time {
                field,
                comparison: match op {
                    ":" => Comparison::Equal,
                    ">" => Comparison::Greater,
                    ">=" => Comparison::GreaterOrEqual,
                    "<" => Comparison::Less,
                    _ => Comparison::LessOrEqual,
                },
                nanos: instant(&value).ok_or_else(|| {
                    self.expected_at(value_at, "Unix seconds or an RFC 3339 instant")
                })?,
            },
            (Field::CustomData(key), _) if key.is_empty() => {
                return Err(self.expected_at(
                    value_at,
                    "null (custom_data without a key is searched only for being missing)",
                ));
            }
            (Field::CustomData(key), ":") => Test::CustomData { key, value },
            (Field::Address | Field::PaymentMethod, _) => {
                return Err(self.expected_at(
                    value_at,
                    "null (this field is searched only for being missing)",
                ));
            }
            _ => {
                let allowed = self.operators_of(field_at);
                return Err(
                    self.expected_at(operator_at, &format!("one of {allowed} for this field"))
                );
            }
        };
        Ok(Clause { negated, test })
    }

    /// The operators the field at `at` takes, for an error.
    fn operators_of(&self, at: usize) -> &'static str {
        let name: String = self.chars[at..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        match name.as_str() {
            "name" | "email" | "phone" => "':' or '~'",
            "created" | "updated" => "':', '>', '>=', '<' or '<='",
            _ => "':'",
        }
    }

    /// The field named at `at`, if it may be missing.
    fn optional_field(&self, at: usize) -> Option<OptionalField> {
        let name: String = self.chars[at..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        match name.as_str() {
            "phone" => Some(OptionalField::Phone),
            "address" => Some(OptionalField::Address),
            "country" => Some(OptionalField::Country),
            "payment_method" => Some(OptionalField::PaymentMethod),
            "custom_data" if self.chars.get(at + name.len()) != Some(&'[') => {
                Some(OptionalField::CustomData)
            }
            _ => None,
        }
    }

    fn field(&mut self) -> Result<Field, QueryError> {
        let at = self.at;
        let name = self.word();
        Ok(match name.as_str() {
            "name" => Field::Text(TextField::Name),
            "email" => Field::Text(TextField::Email),
            "phone" => Field::Text(TextField::Phone),
            "status" => Field::Status,
            "country" => Field::Country,
            "created" => Field::Time(TimeField::Created),
            "updated" => Field::Time(TimeField::Updated),
            "address" => Field::Address,
            "payment_method" => Field::PaymentMethod,
            "custom_data" if self.peek() == Some('[') => {
                self.next();
                let key_at = self.at;
                let (key, quoted) = self.value()?;
                if !quoted || key.is_empty() {
                    return Err(self.expected_at(key_at, "a quoted key, as in custom_data['tier']"));
                }
                if !self.eat(']') {
                    return Err(self.expected("']'"));
                }
                Field::CustomData(key)
            }
            "custom_data" => Field::CustomData(String::new()),
            _ => {
                return Err(self.expected_at(at, "a field: name, email, phone, status, country, created, updated, address, payment_method or custom_data['key']"));
            }
        })
        .and_then(|field| match field {
            // `custom_data:null` is the only clause of bare custom_data.
            Field::CustomData(key) if key.is_empty() && self.peek() != Some(':') => {
                Err(self.expected("'[' and a quoted key, as in custom_data['tier']"))
            }
            field => Ok(field),
        })
    }

    /// A value: bare (up to a space or the end) or quoted with `'` or `"` and `\` escapes;
    /// and whether it was quoted.
    fn value(&mut self) -> Result<(String, bool), QueryError> {
        match self.peek() {
            Some(quote @ ('\'' | '"')) => {
                let opened = self.at;
                self.next();
                let mut value = String::new();
                loop {
                    match self.next() {
                        None => {
                            return Err(self.expected_at(
                                opened,
                                &format!("a closing {quote} for the quote opened here"),
                            ));
                        }
                        Some('\\') => match self.next() {
                            Some(escaped) => value.push(escaped),
                            None => return Err(self.expected("a character after '\\'")),
                        },
                        Some(c) if c == quote => return Ok((value, true)),
                        Some(c) => value.push(c),
                    }
                }
            }
            _ => {
                let value: String = std::iter::from_fn(|| {
                    self.peek()
                        .filter(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | ']'))
                        .inspect(|_| self.at += 1)
                })
                .collect();
                if value.is_empty() {
                    return Err(self.expected("a value"));
                }
                Ok((value, false))
            }
        }
    }

    fn word(&mut self) -> String {
        std::iter::from_fn(|| {
            self.peek()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .inspect(|_| self.at += 1)
        })
        .collect()
    }

    /// Skips white space; whether there was any.
    fn skip_spaces(&mut self) -> bool {
        let from = self.at;
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
        self.at > from
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let matched = self.peek() == Some(c);
        if matched {
            self.at += 1;
        }
        matched
    }

    fn expected(&self, what: &str) -> QueryError {
        self.expected_at(self.at, what)
    }

    fn expected_at(&self, position: usize, what: &str) -> QueryError {
        QueryError {
            position,
            expected: what.to_owned(),
        }
    }
}

/// Unix seconds (digits) or an RFC 3339 instant, in nanoseconds since the epoch.
fn instant(text: &str) -> Option<i128> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .map(|s| i128::from(s) * 1_000_000_000);
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(|at| at.unix_timestamp_nanos())
}

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::And => "AND",
            Self::Or => "OR",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(negated: bool, test: Test) -> Clause {
        Clause { negated, test }
    }

    #[test]
    fn queries_read_into_their_clauses() {
        let cases = [
            (
                "one exact clause, an email lower-cased",
                "email:'Ada@Example.com'",
                Join::And,
                vec![clause(
                    false,
                    Test::Equals {
                        field: TextField::Email,
                        value: "ada@example.com".into(),
                    },
                )],
            ),
            (
                "substring, negation, AND",
                r#"name~"love" AND -status:suspended"#,
                Join::And,
                vec![
                    clause(
                        false,
                        Test::Contains {
                            field: TextField::Name,
                            value: "love".into(),
                        },
                    ),
                    clause(true, Test::Status(Status::Suspended)),
                ],
            ),
            (
                "OR of a country by name, a custom_data value and a missing phone",
                "country:'tanzania' OR custom_data['tier']:'gold' OR phone:null",
                Join::Or,
                vec![
                    clause(false, Test::Country(CountryCode::parse("TZ").unwrap())),
                    clause(
                        false,
                        Test::CustomData {
                            key: "tier".into(),
                            value: "gold".into(),
                        },
                    ),
                    clause(false, Test::Missing(OptionalField::Phone)),
                ],
            ),
            (
                "times in seconds and RFC 3339, escapes in a quoted value",
                r#"created>=1700000000 AND updated<'2024-01-01T00:00:00Z' AND name:'O\'Brien'"#,
                Join::And,
                vec![
                    clause(
                        false,
                        Test::Time {
                            field: TimeField::Created,
                            comparison: Comparison::GreaterOrEqual,
                            nanos: 1_700_000_000_000_000_000,
                        },
                    ),
                    clause(
                        false,
                        Test::Time {
                            field: TimeField::Updated,
                            comparison: Comparison::Less,
                            nanos: 1_704_067_200_000_000_000,
                        },
                    ),
                    clause(
                        false,
                        Test::Equals {
                            field: TextField::Name,
                            value: "O'Brien".into(),
                        },
                    ),
                ],
            ),
            (
                "a quoted null is a value, custom_data:null a missing field",
                "name:'null' AND custom_data:null AND -address:null",
                Join::And,
                vec![
                    clause(
                        false,
                        Test::Equals {
                            field: TextField::Name,
                            value: "null".into(),
                        },
                    ),
                    clause(false, Test::Missing(OptionalField::CustomData)),
                    clause(true, Test::Missing(OptionalField::Address)),
                ],
            ),
        ];
        for (description, query, join, clauses) in cases {
            assert_eq!(
                SearchQuery::parse(query),
                Ok(SearchQuery { join, clauses }),
                "{description}"
            );
        }
    }

    #[test]
    fn a_syntax_error_says_where_and_what_was_expected() {
        let ten = ["status:active"; MAX_CLAUSES].join(" AND ");
        let eleven = format!("{ten} AND status:active");
        let cases: [(&str, &str, usize, &str); 14] = [
            ("empty", "", 0, "a field"),
            ("unknown field", "colour:red", 0, "a field"),
            ("no operator", "name", 4, "an operator"),
            ("no value", "name:", 5, "a value"),
            ("an unclosed quote", "name:'Ada", 5, "a closing '"),
            ("a short substring", "email~ab", 6, "at least 3 characters"),
            ("a substring of a status", "status~act", 6, "one of ':'"),
            (
                "mixed joins",
                "name:a AND email:b OR phone:c",
                19,
                "the same join",
            ),
            ("a lower-case join", "name:a and email:b", 7, "AND, OR"),
            (
                "too many clauses",
                &eleven,
                eleven.len() - "status:active".len(),
                "at most 10 clauses",
            ),
            ("a bad instant", "created>yesterday", 8, "Unix seconds"),
            (
                "a field that is never missing",
                "name:null",
                5,
                "never missing",
            ),
            (
                "custom_data without a key",
                "custom_data:'gold'",
                12,
                "without a key",
            ),
            (
                "a custom_data key unquoted",
                "custom_data[tier]:'gold'",
                12,
                "a quoted key",
            ),
        ];
        for (description, query, position, expected) in cases {
            let error = SearchQuery::parse(query).expect_err(description);
            assert_eq!(error.position, position, "{description}: {error}");
            assert!(error.expected.contains(expected), "{description}: {error}");
        }
        assert!(SearchQuery::parse(&ten).is_ok(), "ten clauses are allowed");
    }
}
