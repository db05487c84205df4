//! Parsing a create request. [`NewCustomer::parse`] takes the raw body bytes and either
//! returns a fully validated customer or an [`ApiError`] that lists every broken rule of the
//! request at once (malformed JSON and non-object bodies stop earlier, as there are no
//! fields to speak of).

use serde_json::{Map, Value};

use crate::country::CountryCode;
use crate::error::ApiError;
use crate::fields::{
    Address, City, CustomData, CustomerEmail, CustomerName, PaymentMethod, Phone, Status,
};
use crate::problem::{FieldError, FieldErrorCode, Violation, echoed};

/// A validated request to create a customer. It cannot be built from invalid input.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCustomer {
    pub name: CustomerName,
    pub email: CustomerEmail,
    pub phone: Option<Phone>,
    pub address: Option<Address>,
    pub payment_method: Option<PaymentMethod>,
    pub status: Status,
    pub custom_data: Option<CustomData>,
}

impl NewCustomer {
    /// Parses and validates a JSON request body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        Self::from_object(crate::json::object(body)?)
    }

    fn from_object(object: Map<String, Value>) -> Result<Self, ApiError> {
        let mut slots = Slots::default();
        let mut errors = Errors::default();
        for (key, value) in object {
            match key.as_str() {
                "name" => slots.name = Some(value),
                "email" => slots.email = Some(value),
                "phone" => slots.phone = Some(value),
                "address" => slots.address = Some(value),
                "payment_method" => slots.payment_method = Some(value),
                "status" => slots.status = Some(value),
                "custom_data" => slots.custom_data = Some(value),
                _ => slots.unknown.push(key),
            }
        }

        let name = errors.required_string("name", slots.name, CustomerName::parse);
        let email = errors.required_string("email", slots.email, CustomerEmail::parse);
        let phone = errors.optional_string("phone", slots.phone, Phone::parse);
        let address = errors.address(slots.address);
        let payment_method =
            errors.optional_string("payment_method", slots.payment_method, PaymentMethod::parse);
        let status = errors.optional_string("status", slots.status, Status::parse);
        let custom_data = errors.custom_data(slots.custom_data);
        for key in slots.unknown {
            errors.unknown_field(key);
        }

        match (name, email) {
            (Some(name), Some(email)) if errors.0.is_empty() => Ok(Self {
                name,
                email,
                phone,
                address,
                payment_method,
                status: status.unwrap_or_default(),
                custom_data,
            }),
            _ => Err(ApiError::ValidationFailed(errors.0)),
        }
    }
}

/// The request's values, by field, in the order the contract lists them.
#[derive(Default)]
struct Slots {
    name: Option<Value>,
    email: Option<Value>,
    phone: Option<Value>,
    address: Option<Value>,
    payment_method: Option<Value>,
    status: Option<Value>,
    custom_data: Option<Value>,
    unknown: Vec<String>,
}

/// Collects field errors; each method returns the parsed value, or `None` when it recorded
/// an error (or the optional field was absent).
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: &str, violation: Violation) {
        self.0.push(violation.at(path));
    }

    fn required_string<T>(
        &mut self,
        path: &str,
        value: Option<Value>,
        parse: impl FnOnce(&str) -> Result<T, Violation>,
    ) -> Option<T> {
        match value {
            None | Some(Value::Null) => {
                self.push(
                    path,
                    Violation::new(FieldErrorCode::Required, format!("{path} is required")),
                );
                None
            }
            Some(value) => self.string(path, &value, parse),
        }
    }

    fn optional_string<T>(
        &mut self,
        path: &str,
        value: Option<Value>,
        parse: impl FnOnce(&str) -> Result<T, Violation>,
    ) -> Option<T> {
        match value {
            None | Some(Value::Null) => None,
            Some(value) => self.string(path, &value, parse),
        }
    }

    fn string<T>(
        &mut self,
        path: &str,
        value: &Value,
        parse: impl FnOnce(&str) -> Result<T, Violation>,
    ) -> Option<T> {
        let Value::String(text) = value else {
            self.push(path, wrong_type(path, "a string", value));
            return None;
        };
        parse(text).map_err(|v| self.push(path, v)).ok()
    }

    fn address(&mut self, value: Option<Value>) -> Option<Address> {
        let object = match value {
            None | Some(Value::Null) => return None,
            Some(Value::Object(object)) => object,
            Some(other) => {
                self.push("address", wrong_type("address", "an object", &other));
                return None;
            }
        };
        let (mut city, mut country) = (None, None);
        let mut unknown = Vec::new();
        for (key, value) in object {
            match key.as_str() {
                "city" => city = Some(value),
                "country" => country = Some(value),
                _ => unknown.push(key),
            }
        }
        let city = self.required_string("address.city", city, City::parse);
        let country = self.required_string("address.country", country, CountryCode::parse);
        for key in unknown {
            self.unknown_field(format!("address.{key}"));
        }
        Some(Address {
            city: city?,
            country: country?,
        })
    }

    fn custom_data(&mut self, value: Option<Value>) -> Option<CustomData> {
        match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => CustomData::parse(map)
                .map_err(|v| self.push("custom_data", v))
                .ok(),
            Some(other) => {
                self.push(
                    "custom_data",
                    wrong_type("custom_data", "an object", &other),
                );
                None
            }
        }
    }

    fn unknown_field(&mut self, path: String) {
        let field = echoed(&path);
        let message = format!("{field} is not a known field");
        self.0.push(FieldError {
            field,
            code: FieldErrorCode::UnknownField,
            message,
        });
    }
}

fn wrong_type(path: &str, expected: &str, got: &Value) -> Violation {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Violation::new(
        FieldErrorCode::InvalidType,
        format!("{path} must be {expected}, not {got}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{MAX_LISTED_FIELD_ERRORS, MAX_PROBLEM_BYTES};
    use crate::protocol::DEFAULT_MAX_BODY_BYTES;

    /// A JSON object of as many `"{key}{n}":0` members as fit in the default body limit.
    fn body_of_unknown_keys(key: &str, inside_address: bool) -> String {
        let mut members = Vec::new();
        let mut len = 64;
        for n in 0.. {
            let member = serde_json::to_string(&format!("{key}{n}")).unwrap() + ":0";
            len += member.len() + 1;
            if len > DEFAULT_MAX_BODY_BYTES {
                break;
            }
            members.push(member);
        }
        let members = members.join(",");
        if inside_address {
            format!(r#"{{"address":{{{members}}}}}"#)
        } else {
            format!("{{{members}}}")
        }
    }

    #[test]
    fn no_body_up_to_the_limit_makes_a_problem_over_the_bound() {
        let cases = [
            (
                "thousands of short unknown keys",
                body_of_unknown_keys("k", false),
            ),
            (
                "long keys of four-byte characters",
                body_of_unknown_keys(&"😀".repeat(500), false),
            ),
            (
                "keys of control characters, which JSON escapes six-fold",
                body_of_unknown_keys(&"\u{1}".repeat(500), false),
            ),
            (
                "unknown keys inside address",
                body_of_unknown_keys("zip", true),
            ),
        ];
        for (description, body) in cases {
            assert!(body.len() <= DEFAULT_MAX_BODY_BYTES, "{description}");
            let error = NewCustomer::parse(body.as_bytes()).expect_err(description);
            let ApiError::ValidationFailed(errors) = &error else {
                panic!("{description}: {error:?}");
            };
            let problem = error.problem();
            let listed = problem.errors.as_ref().map_or(0, Vec::len);
            assert_eq!(listed, MAX_LISTED_FIELD_ERRORS, "{description}");
            assert!(
                problem
                    .detail
                    .starts_with(&format!("{} fields are invalid", errors.len())),
                "{description}: the detail gives the true count: {}",
                problem.detail
            );
            let size = error.problem_json().len();
            assert!(size <= MAX_PROBLEM_BYTES, "{description}: {size} bytes");
        }
    }
}
