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

/// The body of `PATCH /api/v1/customers/{id}` and of a `customers.v1.update` request: a JSON
/// Merge Patch (RFC 7396) of the customer's fields. A member left out stays as it is; `null`
/// removes an optional field (or a key of `custom_data`); objects merge member by member. The
/// merged customer must then pass every rule of a create, which
/// [`crate::CustomerPatch::apply`] enforces.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = members_without_defaults)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
pub struct UpdateCustomerRequest {
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    name: String,
    #[serde(default)]
    #[schemars(length(max = 254), email)]
    email: String,
    /// An optional `+` and 7 to 15 digits; `null` removes it.
    #[schemars(length(max = 32), pattern(r"^\s*\+?[ ().-]*([0-9][ ().-]*){7,15}\s*$"))]
    phone: Option<String>,
    /// Merged into the address; `null` removes it.
    address: Option<AddressPatch>,
    /// `null` removes it.
    #[schemars(length(min = 1, max = 255), pattern(r"^\s*\S+\s*$"))]
    payment_method: Option<String>,
    #[serde(default)]
    status: Status,
    /// Merged into `custom_data` key by key (a key set to `null` is removed); `null` removes
    /// it all.
    custom_data: Option<Map<String, Value>>,
}

/// A billing address in an update: merged into the current one.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = members_without_defaults)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
pub struct AddressPatch {
    #[serde(default)]
    #[schemars(length(min = 1, max = 100))]
    city: String,
    /// An ISO 3166-1 alpha-2 code in any case, or the country's English name.
    #[serde(default)]
    #[schemars(length(min = 2))]
    country: String,
}

/// A patch's members are optional (`#[serde(default)]` says so to schemars) but have no
/// default: one left out stays as it is, so the `default` schemars writes is dropped.
fn members_without_defaults(schema: &mut Schema) {
    let properties = schema.get_mut("properties").and_then(Value::as_object_mut);
    for property in properties.into_iter().flat_map(|p| p.values_mut()) {
        if let Some(property) = property.as_object_mut() {
            property.remove("default");
        }
    }
}

/// The body of a delete's `200` (`DELETE /api/v1/customers/{id}`, `customers.v1.delete`).
#[derive(JsonSchema)]
#[allow(dead_code)] // never constructed: the worker writes the body
pub struct DeletedCustomer {
    id: crate::domain::id::CustomerId,
    #[schemars(extend("const" = true))]
    deleted: bool,
}

/// The payload of a `customers.v1.list` request (over HTTP, the same names are query
/// parameters). Empty payload or `{}`: the newest 10 customers. `custom_data[KEY]`: only
/// customers whose `custom_data` holds this string at the top-level key KEY, or a number or
/// boolean written as it; one per key.
#[derive(JsonSchema)]
#[schemars(
    deny_unknown_fields,
    extend("patternProperties" = {
        "^custom_data\\[.{1,64}\\]$": {"type": ["string", "number", "boolean"]}
    })
)]
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
    /// Only customers with this status.
    status: Option<crate::domain::fields::Status>,
    /// Only customers whose address is in this country: an ISO 3166-1 alpha-2 code or a
    /// country's name, normalised as the field is.
    country: Option<String>,
    /// Created at or after this instant: Unix seconds or RFC 3339.
    #[serde(rename = "created[gte]")]
    created_gte: Option<String>,
    /// Created after this instant.
    #[serde(rename = "created[gt]")]
    created_gt: Option<String>,
    /// Created at or before this instant.
    #[serde(rename = "created[lte]")]
    created_lte: Option<String>,
    /// Created before this instant.
    #[serde(rename = "created[lt]")]
    created_lt: Option<String>,
    /// Last changed at or after this instant (`updated_at`).
    #[serde(rename = "updated[gte]")]
    updated_gte: Option<String>,
    /// Last changed after this instant.
    #[serde(rename = "updated[gt]")]
    updated_gt: Option<String>,
    /// Last changed at or before this instant.
    #[serde(rename = "updated[lte]")]
    updated_lte: Option<String>,
    /// Last changed before this instant.
    #[serde(rename = "updated[lt]")]
    updated_lt: Option<String>,
    /// `created_desc` (the default: newest first) or `updated_asc` (the change feed: oldest
    /// change first by `updated_at` and id, paged with `cursor`).
    #[schemars(extend("enum" = ["created_desc", "updated_asc"]))]
    order: Option<String>,
    /// The change feed only: the `next_cursor` of the page before.
    cursor: Option<String>,
    /// The change feed only: deleted customers too, as tombstones placed at their deletion
    /// time.
    include_deleted: Option<bool>,
}

/// A change-feed page (`GET /api/v1/customers?order=updated_asc`): customers, and with
/// `include_deleted` tombstones, oldest change first.
#[derive(JsonSchema)]
#[allow(dead_code)] // never constructed: the worker writes the body from stored JSON
pub struct CustomerFeedPage {
    data: Vec<FeedItem>,
    /// Whether more changes lie beyond this page now.
    has_more: bool,
    /// Where the next page starts (the position of this page's last item); pass it back as
    /// `cursor`, now or later.
    next_cursor: String,
}

/// A customer, or a deleted customer's tombstone.
#[derive(JsonSchema)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
#[serde(untagged)]
pub enum FeedItem {
    Customer(Box<Customer>),
    Deleted(Tombstone),
}

/// What remains of a deleted customer.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
pub struct Tombstone {
    id: crate::domain::id::CustomerId,
    #[schemars(extend("const" = true))]
    deleted: bool,
    deleted_at: crate::domain::timestamp::Timestamp,
}

/// A page of customers, newest first (`GET /api/v1/customers`, `customers.v1.list`).
#[derive(JsonSchema)]
#[allow(dead_code)] // never constructed: the worker writes the body from stored JSON
pub struct CustomerList {
    data: Vec<Customer>,
    /// Whether more customers lie beyond this page in the direction of the cursor.
    has_more: bool,
}

/// The payload of a `customers.v1.search` request (over HTTP, the same names are query
/// parameters of `GET /api/v1/customers/search`).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)] // never constructed: it exists to describe the wire shape
pub struct SearchCustomersRequest {
    /// The query, in Stripe's search language (docs/API.md §4, "Search"), e.g.
    /// `name~'ada' AND status:'active'`.
    query: String,
    /// Customers per page, 1–100 (default 10); a string of digits is accepted too.
    #[schemars(range(min = 1, max = 100))]
    limit: Option<u32>,
    /// The `next_page` of the page before.
    page: Option<String>,
}

/// A page of search results, newest first (`GET /api/v1/customers/search`,
/// `customers.v1.search`).
#[derive(JsonSchema)]
#[allow(dead_code)] // never constructed: the worker writes the body from stored JSON
pub struct CustomerSearchPage {
    data: Vec<Customer>,
    /// Whether more customers match beyond this page.
    has_more: bool,
    /// The `page` that asks for the next page; `null` on the last.
    next_page: Option<String>,
    /// How many customers match in all, on every page.
    total_count: u64,
}

/// Every published schema, by file name.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "create_customer_request.json",
            schema_for!(CreateCustomerRequest),
        ),
        ("customer.json", schema_for!(Customer)),
        ("deleted_customer.json", schema_for!(DeletedCustomer)),
        (
            "update_customer_request.json",
            schema_for!(UpdateCustomerRequest),
        ),
        ("customer_list.json", schema_for!(CustomerList)),
        ("customer_feed_page.json", schema_for!(CustomerFeedPage)),
        (
            "list_customers_request.json",
            schema_for!(ListCustomersRequest),
        ),
        ("customer_search_page.json", schema_for!(CustomerSearchPage)),
        (
            "search_customers_request.json",
            schema_for!(SearchCustomersRequest),
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
