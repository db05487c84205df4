//! One type per customer field. Each `parse` trims the raw string and checks the field's rule
//! from docs/API.md §2, so holding a value of one of these types proves it is valid. They serialise
//! as plain JSON strings (or objects) in the stored record.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::violation::{FieldErrorCode, Violation};

/// U+0000–U+001F and U+007F–U+009F, rejected in every string field.
fn has_control_chars(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Trims, then checks length in Unicode scalar values and control characters.
fn bounded_text<'a>(raw: &'a str, field: &str, max: usize) -> Result<&'a str, Violation> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(Violation::new(
            FieldErrorCode::TooShort,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(Violation::new(
            FieldErrorCode::TooLong,
            format!("{field} must be at most {max} characters"),
        ));
    }
    if has_control_chars(value) {
        return Err(Violation::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value)
}

/// The customer's full name (a person or an organisation): 1–200 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct CustomerName(String);

impl CustomerName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, Violation> {
        bounded_text(raw, "name", Self::MAX_CHARS).map(|v| Self(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address in the contract's `local@domain` shape, ASCII only, case kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct CustomerEmail(String);

impl CustomerEmail {
    pub const MAX_CHARS: usize = 254;
    pub const MAX_LOCAL_CHARS: usize = 64;
    const SHAPE: &str = "email must look like name@example.com";

    pub fn parse(raw: &str) -> Result<Self, Violation> {
        let value = raw.trim();
        if value.chars().count() > Self::MAX_CHARS {
            return Err(Violation::new(
                FieldErrorCode::TooLong,
                format!("email must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if !value.is_ascii() {
            return Err(Violation::invalid(
                "email must contain ASCII characters only",
            ));
        }
        let Some((local, domain)) = value.split_once('@') else {
            return Err(Violation::invalid(Self::SHAPE));
        };
        if local.len() > Self::MAX_LOCAL_CHARS {
            return Err(Violation::invalid(format!(
                "the part of email before @ must be at most {} characters",
                Self::MAX_LOCAL_CHARS
            )));
        }
        if !is_local_part(local) || !is_domain(domain) {
            return Err(Violation::invalid(Self::SHAPE));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of the uniqueness index: emails compare case-insensitively.
    pub fn index_key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

fn is_local_part(local: &str) -> bool {
    const SPECIALS: &[u8] = b".!#$%&'*+/=?^_`{|}~-";
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || SPECIALS.contains(&b))
}

fn is_domain(domain: &str) -> bool {
    let mut labels = 0;
    for label in domain.split('.') {
        let ok = (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return false;
        }
        labels += 1;
    }
    labels >= 2
}

/// A phone number: optional leading `+`, digits and the separators ` -.()`, 7–15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub const MAX_CHARS: usize = 32;
    pub const DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

    pub fn parse(raw: &str) -> Result<Self, Violation> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(Violation::invalid(
                "phone must not be empty; send null or leave it out instead",
            ));
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(Violation::invalid(format!(
                "phone must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        let rest = value.strip_prefix('+').unwrap_or(value);
        let allowed = |c: char| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')');
        let digits = rest.chars().filter(char::is_ascii_digit).count();
        if !rest.chars().all(allowed) || !Self::DIGITS.contains(&digits) {
            return Err(Violation::invalid(
                "phone must be an optional + followed by 7 to 15 digits, \
                 optionally separated by spaces, '-', '.', '(' or ')'",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The city of a billing address: 1–100 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct City(String);

impl City {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, Violation> {
        bounded_text(raw, "city", Self::MAX_CHARS).map(|v| Self(v.to_owned()))
    }
}

/// A billing address; the country is normalised to its alpha-2 code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Address {
    pub city: City,
    pub country: crate::domain::country::CountryCode,
}

/// An opaque payment method reference: 1–255 characters, no white space, kept as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(raw: &str) -> Result<Self, Violation> {
        let value = bounded_text(raw, "payment_method", Self::MAX_CHARS)?;
        if value.chars().any(char::is_whitespace) {
            return Err(Violation::invalid(
                "payment_method must not contain white space",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// The state of the customer's account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    Inactive,
    Suspended,
}

impl Status {
    /// The status as the contract writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Suspended => "suspended",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Violation> {
        match raw.trim() {
            "active" => Ok(Self::Active),
            "inactive" => Ok(Self::Inactive),
            "suspended" => Ok(Self::Suspended),
            _ => Err(Violation::invalid(
                "status must be one of active, inactive, suspended",
            )),
        }
    }
}

/// Free-form key/value data, bounded so one customer cannot bloat the database.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct CustomData(Map<String, Value>);

impl CustomData {
    pub const MAX_KEYS: usize = 50;
    pub const MAX_KEY_CHARS: usize = 64;
    /// Containers (objects or arrays) allowed below the `custom_data` object itself.
    pub const MAX_NESTING: usize = 8;
    pub const MAX_BYTES: usize = 8 * 1024;

    pub fn parse(map: Map<String, Value>) -> Result<Self, Violation> {
        if map.len() > Self::MAX_KEYS {
            return Err(Violation::invalid(format!(
                "custom_data must have at most {} keys",
                Self::MAX_KEYS
            )));
        }
        if map
            .keys()
            .any(|k| k.is_empty() || k.chars().count() > Self::MAX_KEY_CHARS)
        {
            return Err(Violation::invalid(format!(
                "custom_data keys must be 1 to {} characters",
                Self::MAX_KEY_CHARS
            )));
        }
        if map.values().map(nesting).max().unwrap_or(0) > Self::MAX_NESTING {
            return Err(Violation::invalid(format!(
                "custom_data must not nest more than {} levels",
                Self::MAX_NESTING
            )));
        }
        let mut size = ByteCounter(0);
        serde_json::to_writer(&mut size, &map).expect("writing to a counter cannot fail");
        if size.0 > Self::MAX_BYTES {
            return Err(Violation::new(
                FieldErrorCode::TooLong,
                format!(
                    "custom_data must be at most {} bytes when serialised",
                    Self::MAX_BYTES
                ),
            ));
        }
        Ok(Self(map))
    }

    /// Each top-level key holding a string, a number or a boolean, with that value as a
    /// filter compares it ([`scalar_text`]): what `custom_data[KEY]=VALUE` can find.
    pub fn scalars(&self) -> impl Iterator<Item = (&str, String)> {
        self.0
            .iter()
            .filter_map(|(key, value)| Some((key.as_str(), scalar_text(value)?)))
    }
}

/// A string as it is, a number or a boolean as JSON writes it (`3`, `2.5`, `true`); `None`
/// for `null`, arrays and objects. A `custom_data` filter's value matches a stored value with
/// the same text, so `custom_data[seats]=3` finds both `3` and `"3"`.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// How many containers deep a value goes (a scalar is 0, `[1]` is 1, `{"a":[1]}` is 2).
fn nesting(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        let valid = [
            "a@b.co",
            "first.last+tag@sub.example.com",
            "x!#$%&'*+/=?^_`{|}~-y@ex-ample.org",
            "  padded@example.com\t",
        ];
        for email in valid {
            assert!(
                CustomerEmail::parse(email).is_ok(),
                "{email:?} should be valid"
            );
        }
        let invalid = [
            ("", "empty"),
            ("plain", "no @"),
            ("@example.com", "empty local part"),
            ("a@localhost", "single-label domain"),
            (".a@example.com", "local part starts with a dot"),
            ("a.@example.com", "local part ends with a dot"),
            ("a..b@example.com", "double dot"),
            ("a@-example.com", "label starts with a hyphen"),
            ("a@example-.com", "label ends with a hyphen"),
            ("a@exa_mple.com", "underscore in domain"),
            ("a@@example.com", "two @"),
            ("a b@example.com", "space in local part"),
            ("jos\u{e9}@example.com", "non-ASCII"),
            ("a@example..com", "empty label"),
        ];
        for (email, why) in invalid {
            let err = CustomerEmail::parse(email).expect_err(why);
            assert_eq!(err.code, FieldErrorCode::Invalid, "{why}");
        }
    }

    #[test]
    fn email_index_key_ignores_case() {
        let a = CustomerEmail::parse("A@X.com").unwrap();
        let b = CustomerEmail::parse("a@x.COM").unwrap();
        assert_eq!(a.index_key(), b.index_key());
        assert_eq!(a.as_str(), "A@X.com");
    }

    #[test]
    fn nesting_counts_containers() {
        assert_eq!(nesting(&serde_json::json!(1)), 0);
        assert_eq!(nesting(&serde_json::json!([1])), 1);
        assert_eq!(nesting(&serde_json::json!({"a": [1, {"b": {}}]})), 4);
    }
}
