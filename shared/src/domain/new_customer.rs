//! Parsing a create request. [`NewCustomer::parse`] takes the raw body bytes and either
//! returns a fully validated customer or an [`ApiError`](crate::ApiError) that lists every
//! broken rule of the request at once (malformed JSON and non-object bodies stop earlier, as
//! there are no fields to speak of).

use serde_json::{Map, Value};

use crate::domain::country::CountryCode;
use crate::domain::fields::{
    Address, City, CustomData, CustomerEmail, CustomerName, PaymentMethod, Phone, Status,
};
use crate::domain::violation::{BodyError, FieldError, FieldErrorCode, Violation, echoed};

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
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        Self::from_object(crate::domain::json::object(body)?)
    }

    /// Validates a body's top-level object (also a merged update's: `customer_patch`).
    pub(crate) fn from_object(object: Map<String, Value>) -> Result<Self, BodyError> {
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

        let name = errors.string_field("name", slots.name, true, CustomerName::parse);
        let email = errors.string_field("email", slots.email, true, CustomerEmail::parse);
        let phone = errors.string_field("phone", slots.phone, false, Phone::parse);
        let address = errors.address(slots.address);
        let payment_method = errors.string_field(
            "payment_method",
            slots.payment_method,
            false,
            PaymentMethod::parse,
        );
        let status = errors.string_field("status", slots.status, false, Status::parse);
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
            _ => Err(BodyError::InvalidFields(errors.0)),
        }
    }
}

/// A stored customer's fields, as a create would have given them.
impl From<crate::domain::customer::Customer> for NewCustomer {
    fn from(customer: crate::domain::customer::Customer) -> Self {
        Self {
            name: customer.name,
            email: customer.email,
            phone: customer.phone,
            address: customer.address,
            payment_method: customer.payment_method,
            status: customer.status,
            custom_data: customer.custom_data,
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

    /// A string field: `parse`d when present, an error when absent (or `null`) and
    /// `required`.
    fn string_field<T>(
        &mut self,
        path: &str,
        value: Option<Value>,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, Violation>,
    ) -> Option<T> {
        match value {
            None | Some(Value::Null) if required => {
                self.push(
                    path,
                    Violation::new(FieldErrorCode::Required, format!("{path} is required")),
                );
                None
            }
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
        let city = self.string_field("address.city", city, true, City::parse);
        let country = self.string_field("address.country", country, true, CountryCode::parse);
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
