//! Parsing an update request: a JSON Merge Patch (RFC 7396) of a customer's fields.
//! [`CustomerPatch::parse`] reads the body as strictly as a create's (one object, no duplicate
//! member anywhere); [`CustomerPatch::apply`] merges it into the customer as it is and
//! validates the result with exactly the rules of a create, so an update can never store what
//! a create would refuse. A member set to `null` removes an optional field; `null` for `name`,
//! `email` or `status`, and any member naming `id`, `created_at`, `updated_at` or `deleted`,
//! is a field error; every broken rule is listed at once, as for a create.

use serde_json::{Map, Value};

use crate::domain::customer::Customer;
use crate::domain::new_customer::NewCustomer;
use crate::domain::violation::{BodyError, FieldError, FieldErrorCode};

/// The members a patch may not name: the server sets them.
const READ_ONLY: [&str; 4] = ["id", "created_at", "updated_at", "deleted"];
/// The members a customer always has: a patch may change them, never remove them.
const NOT_REMOVABLE: [&str; 3] = ["name", "email", "status"];

/// A syntactically valid merge patch: one JSON object, not yet checked against a customer.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerPatch(Map<String, Value>);

/// A patch applied to a customer: the customer's fields afterwards, validated, and the value
/// before of each field it changed (`null` where the field was absent), in the contract's
/// field order: what `customer.updated` reports as `previous_attributes`. None changed: the
/// patch makes no new version.
#[derive(Debug, Clone, PartialEq)]
pub struct Patched {
    pub fields: NewCustomer,
    pub previous: Map<String, Value>,
}

impl Patched {
    pub fn changed(&self) -> bool {
        !self.previous.is_empty()
    }
}

impl CustomerPatch {
    /// Reads a merge patch body: `malformed_json` or `invalid_body` as for a create.
    pub fn parse(body: &[u8]) -> Result<Self, BodyError> {
        crate::domain::json::object(body).map(Self)
    }

    /// Merges the patch into `current` (RFC 7396 §2) and validates the result as a create
    /// would; on success, the new fields and whether anything changed.
    pub fn apply(self, current: &Customer) -> Result<Patched, BodyError> {
        let before = NewCustomer::from(current.clone());
        let mut merged = fields_of(&before);
        let mut errors = Vec::new();
        for (key, value) in self.0 {
            if READ_ONLY.contains(&key.as_str()) {
                errors.push(FieldError {
                    message: format!("{key} is set by the service and cannot be changed"),
                    field: key,
                    code: FieldErrorCode::Invalid,
                });
            } else if value.is_null() && NOT_REMOVABLE.contains(&key.as_str()) {
                errors.push(FieldError {
                    message: format!("{key} is required and cannot be removed"),
                    field: key,
                    code: FieldErrorCode::Required,
                });
            } else {
                merge_member(&mut merged, key, value);
            }
        }
        match NewCustomer::from_object(merged) {
            Ok(fields) if errors.is_empty() => Ok(Patched {
                previous: previous_values(&before, &fields),
                fields,
            }),
            Ok(_) => Err(BodyError::InvalidFields(errors)),
            Err(BodyError::InvalidFields(more)) => {
                errors.extend(more);
                Err(BodyError::InvalidFields(errors))
            }
            Err(other) => Err(other),
        }
    }
}

/// Each field whose value differs between `before` and `after`, with its value before.
fn previous_values(before: &NewCustomer, after: &NewCustomer) -> Map<String, Value> {
    let (mut before, after) = (fields_of(before), fields_of(after));
    let mut previous = Map::new();
    for key in FIELDS {
        if before.get(key) != after.get(key) {
            previous.insert(key.to_owned(), before.remove(key).unwrap_or(Value::Null));
        }
    }
    previous
}

/// A customer's fields, in the contract's order.
const FIELDS: [&str; 7] = [
    "name",
    "email",
    "phone",
    "address",
    "payment_method",
    "status",
    "custom_data",
];

/// The fields of `customer` as the JSON object a create would have sent, nulls left out.
fn fields_of(customer: &NewCustomer) -> Map<String, Value> {
    let members = [
        ("name", json(&customer.name)),
        ("email", json(&customer.email)),
        ("phone", json(&customer.phone)),
        ("address", json(&customer.address)),
        ("payment_method", json(&customer.payment_method)),
        ("status", json(&customer.status)),
        ("custom_data", json(&customer.custom_data)),
    ];
    members
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

fn json(field: &impl serde::Serialize) -> Value {
    serde_json::to_value(field).expect("a field always serialises")
}

/// RFC 7396 §2 for one member of the patch's top-level object.
fn merge_member(target: &mut Map<String, Value>, key: String, patch: Value) {
    if patch.is_null() {
        target.remove(&key);
        return;
    }
    let slot = target.entry(key).or_insert(Value::Null);
    merge(slot, patch);
}

/// RFC 7396 §2: an object patch merges member by member (`null` removes), anything else
/// replaces the target.
fn merge(target: &mut Value, patch: Value) {
    let Value::Object(members) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in members {
            merge_member(target, key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::id::CustomerId;

    fn customer(body: &str) -> Customer {
        let id: CustomerId = "cus_01jd4z3qfce1q8p2m7v6w4x9ab".parse().unwrap();
        Customer::create(id, NewCustomer::parse(body.as_bytes()).unwrap())
    }

    const FULL: &str = r#"{"name":"Ada Lovelace","email":"ada@example.com","phone":"+44 20 7946 0958",
        "address":{"city":"London","country":"GB"},"payment_method":"card",
        "status":"active","custom_data":{"tier":"gold","seats":3}}"#;

    fn apply(current: &str, patch: &str) -> Result<Patched, BodyError> {
        CustomerPatch::parse(patch.as_bytes())?.apply(&customer(current))
    }

    fn fields_json(patched: &Patched) -> Value {
        Value::Object(fields_of(&patched.fields))
    }

    #[test]
    fn a_patch_merges_as_rfc_7396_says() {
        type Edit = fn(&mut Map<String, Value>);
        let cases: [(&str, &str, Edit); 5] = [
            (
                "a top-level member replaces",
                r#"{"name":"Ada King"}"#,
                |f| {
                    f.insert("name".into(), "Ada King".into());
                },
            ),
            (
                "an object merges member by member",
                r#"{"address":{"city":"Arusha","country":"Tanzania"}}"#,
                |f| {
                    f.insert(
                        "address".into(),
                        serde_json::json!({"city":"Arusha","country":"TZ"}),
                    );
                },
            ),
            (
                "a nested member alone changes only itself",
                r#"{"address":{"city":"Leeds"}}"#,
                |f| {
                    f.insert(
                        "address".into(),
                        serde_json::json!({"city":"Leeds","country":"GB"}),
                    );
                },
            ),
            (
                "null inside custom_data removes one key",
                r#"{"custom_data":{"tier":null}}"#,
                |f| {
                    f.insert("custom_data".into(), serde_json::json!({"seats":3}));
                },
            ),
            (
                "null removes an optional field",
                r#"{"phone":null,"payment_method":null}"#,
                |f| {
                    f.remove("phone");
                    f.remove("payment_method");
                },
            ),
        ];
        for (description, patch, edit) in cases {
            let patched = apply(FULL, patch).unwrap_or_else(|e| panic!("{description}: {e:?}"));
            assert!(patched.changed(), "{description}");
            let mut expected = fields_of(&NewCustomer::parse(FULL.as_bytes()).unwrap());
            edit(&mut expected);
            assert_eq!(
                fields_json(&patched),
                Value::Object(expected),
                "{description}"
            );
        }
    }

    #[test]
    fn the_previous_values_are_those_of_the_changed_fields_only() {
        let patched = apply(
            FULL,
            r#"{"name":"Ada King","phone":null,"status":"active","custom_data":{"tier":"silver"}}"#,
        )
        .unwrap();
        assert_eq!(
            Value::Object(patched.previous),
            serde_json::json!({
                "name": "Ada Lovelace",
                "phone": "+44 20 7946 0958",
                "custom_data": {"tier": "gold", "seats": 3},
            }),
            "status was already active; the custom_data before is the whole object"
        );
        let added = apply(
            r#"{"name":"Ada","email":"ada@example.com"}"#,
            r#"{"phone":"+44 20 7946 0958"}"#,
        )
        .unwrap();
        assert_eq!(
            Value::Object(added.previous),
            serde_json::json!({"phone": null}),
            "a field that was absent was null"
        );
    }

    #[test]
    fn a_patch_that_changes_nothing_says_so() {
        let cases = [
            ("an empty patch", "{}"),
            (
                "the same values",
                r#"{"name":"Ada Lovelace","status":"active"}"#,
            ),
            (
                "a country written another way",
                r#"{"address":{"country":"United Kingdom"}}"#,
            ),
            (
                "removing what is absent",
                r#"{"custom_data":{"absent":null}}"#,
            ),
        ];
        for (description, patch) in cases {
            let patched = apply(FULL, patch).unwrap_or_else(|e| panic!("{description}: {e:?}"));
            assert!(!patched.changed(), "{description}");
        }
    }

    #[test]
    fn an_emails_letter_case_is_a_change() {
        let patched = apply(FULL, r#"{"email":"Ada@Example.com"}"#).unwrap();
        assert!(patched.changed());
        assert_eq!(patched.fields.email.as_str(), "Ada@Example.com");
    }

    #[test]
    fn every_broken_rule_is_listed() {
        /// What the patch is, the customer, the patch, and the errors expected in order.
        type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, FieldErrorCode)]);
        let cases: [Case; 6] = [
            (
                "removing a required field",
                FULL,
                r#"{"name":null,"email":null,"status":null}"#,
                &[
                    ("name", FieldErrorCode::Required),
                    ("email", FieldErrorCode::Required),
                    ("status", FieldErrorCode::Required),
                ],
            ),
            (
                "members the service sets",
                FULL,
                r#"{"id":"cus_x","created_at":"2024-01-01T00:00:00.000Z","updated_at":1,"deleted":true}"#,
                &[
                    ("id", FieldErrorCode::Invalid),
                    ("created_at", FieldErrorCode::Invalid),
                    ("updated_at", FieldErrorCode::Invalid),
                    ("deleted", FieldErrorCode::Invalid),
                ],
            ),
            (
                "an unknown member",
                FULL,
                r#"{"nickname":"Ada"}"#,
                &[("nickname", FieldErrorCode::UnknownField)],
            ),
            (
                "a merged address must still be whole",
                r#"{"name":"Ada","email":"ada@example.com"}"#,
                r#"{"address":{"city":"Arusha"}}"#,
                &[("address.country", FieldErrorCode::Required)],
            ),
            (
                "the merged values obey the create's rules",
                FULL,
                r#"{"email":"not an email","status":"asleep","phone":7}"#,
                &[
                    ("email", FieldErrorCode::Invalid),
                    ("phone", FieldErrorCode::InvalidType),
                    ("status", FieldErrorCode::Invalid),
                ],
            ),
            (
                "errors of the patch and of the merge together",
                FULL,
                r#"{"id":"cus_x","name":""}"#,
                &[
                    ("id", FieldErrorCode::Invalid),
                    ("name", FieldErrorCode::TooShort),
                ],
            ),
        ];
        for (description, current, patch, expected) in cases {
            let Err(BodyError::InvalidFields(errors)) = apply(current, patch) else {
                panic!("{description}: accepted");
            };
            let got: Vec<(&str, FieldErrorCode)> =
                errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
            assert_eq!(got, expected, "{description}");
        }
    }

    #[test]
    fn a_patch_is_read_as_strictly_as_a_create() {
        let cases = [
            ("not JSON", "{", "malformed"),
            ("not an object", "[1]", "not an object"),
            (
                "a duplicate member",
                r#"{"name":"A","name":"B"}"#,
                "malformed",
            ),
        ];
        for (description, patch, expected) in cases {
            let error = CustomerPatch::parse(patch.as_bytes()).unwrap_err();
            let matches = match error {
                BodyError::Malformed(_) => expected == "malformed",
                BodyError::NotAnObject => expected == "not an object",
                BodyError::InvalidFields(_) => false,
            };
            assert!(matches, "{description}: {error:?}");
        }
    }
}
