//! JSON Schemas of the wire bodies, generated from the Rust types with schemars. The
//! generated files are committed under `shared/schemas/`; the `schemas_match_committed_files`
//! test fails when they drift from the types (regenerate with `UPDATE_SCHEMAS=1 cargo test -p
//! customers-shared`).

use schemars::{JsonSchema, Schema, schema_for};
use serde_json::{Map, Value};

use crate::domain::customer::Customer;
use crate::domain::fields::Status;
use crate::wire::problem::Problem;

/// The body of `POST /api/v1/customers` and of a `customers.v1.create` request. Strings are
/// trimmed before the rules apply; this type documents the wire shape, while
/// [`crate::NewCustomer::parse`] enforces it and reports every violation.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
pub struct CreateCustomerRequest {
    #[schemars(length(min = 1, max = 200))]
    name: String,
    #[schemars(length(max = 254), email)]
    email: String,
    /// An optional `+` and 7 to 15 digits, optionally separated by spaces, `-`, `.`, `(`, `)`.
    #[schemars(length(max = 32), pattern(r"^\s*\+?[ ().-]*([0-9][ ().-]*){7,15}\s*$"))]
    phone: Option<String>,
    address: Option<AddressRequest>,
    #[schemars(length(min = 1, max = 255), pattern(r"^\s*\S+\s*$"))]
    payment_method: Option<String>,
    /// Defaults to `active`.
    status: Option<Status>,
    #[schemars(extend("maxProperties" = 50))]
    custom_data: Option<Map<String, Value>>,
}

/// A billing address in a request.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
pub struct AddressRequest {
    #[schemars(length(min = 1, max = 100))]
    city: String,
    /// An ISO 3166-1 alpha-2 code in any case, or the country's English name.
    #[schemars(length(min = 2))]
    country: String,
}

/// The payload of a `customers.v1.list` request (over HTTP, the same names are query
/// parameters). Empty payload or `{}`: the newest 10 customers.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
pub struct ListCustomersRequest {
    /// Customers per page, 1–100 (default 10); a string of digits is accepted too.
    #[schemars(range(min = 1, max = 100))]
    limit: Option<u32>,
    /// A customer id: the page holds the customers created before it (the next page).
    starting_after: Option<String>,
    /// A customer id: the page holds the customers created after it (the previous page).
    /// Not together with `starting_after`.
    ending_before: Option<String>,
    /// Only the customer with this email, compared case-insensitively.
    email: Option<String>,
}

/// A page of customers, newest first (`GET /api/v1/customers`, `customers.v1.list`).
#[derive(JsonSchema)]
#[allow(dead_code)] // never constructed: the worker writes the body from stored JSON
pub struct CustomerList {
    data: Vec<Customer>,
    /// Whether more customers lie beyond this page in the direction of the cursor.
    has_more: bool,
}

/// Every published schema, by file name.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "create_customer_request.json",
            schema_for!(CreateCustomerRequest),
        ),
        ("customer.json", schema_for!(Customer)),
        ("customer_list.json", schema_for!(CustomerList)),
        (
            "list_customers_request.json",
            schema_for!(ListCustomersRequest),
        ),
        ("problem.json", schema_for!(Problem)),
    ]
}

/// A generator whose definitions go under `#/components/schemas`, as both the OpenAPI and the
/// AsyncAPI documents keep them.
pub(crate) fn components_generator() -> schemars::SchemaGenerator {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    settings.into_generator()
}

/// Fails unless every local `$ref` in `document` points at something in it.
#[cfg(test)]
pub(crate) fn assert_references_resolve(document: &Value) {
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("not a local $ref: {target}"));
        assert!(
            document.pointer(pointer).is_some(),
            "{target} is not defined"
        );
    }
}

/// Fails when `generated` differs from the committed file at `path`; with `UPDATE_SCHEMAS`
/// set, writes it first.
#[cfg(test)]
pub(crate) fn assert_committed(path: &std::path::Path, generated: &str) {
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the Rust types; run \
         `UPDATE_SCHEMAS=1 cargo test -p customers-shared` and commit the result",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn schemas_match_committed_files() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for (file, schema) in super::all() {
            let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            super::assert_committed(&dir.join(file), &generated);
        }
    }
}
