//! The OpenAPI 3.1 description of the HTTP API, built from the same schemars types as the
//! JSON Schemas (no hand-kept copy of any body). The ingress serves it at
//! `GET /api/v1/openapi.json`; `docs/openapi.json` is the committed copy, and
//! `openapi_matches_committed_file` fails when the two drift (regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p customers-shared`).

use serde_json::{Value, json};

use crate::domain::customer::Customer;
use crate::wire::problem::{PROBLEM_CONTENT_TYPE, Problem};
use crate::wire::schema::{
    CreateCustomerRequest, CustomerFeedPage, CustomerList, CustomerSearchPage, DeletedCustomer,
    UpdateCustomerRequest,
};

/// The OpenAPI document.
pub fn document() -> Value {
    let mut generator = crate::wire::schema::components_generator();
    let create = generator.subschema_for::<CreateCustomerRequest>();
    let update = generator.subschema_for::<UpdateCustomerRequest>();
    let deleted = generator.subschema_for::<DeletedCustomer>();
    let customer = generator.subschema_for::<Customer>();
    let list = generator.subschema_for::<CustomerList>();
    let feed = generator.subschema_for::<CustomerFeedPage>();
    let search_page = generator.subschema_for::<CustomerSearchPage>();
    let problem = generator.subschema_for::<Problem>();
    let schemas = generator.take_definitions(true);

    let request_id = json!({
        "name": "X-Request-Id", "in": "header", "required": false,
        "description": "Echoed on the response when it is 1–200 visible ASCII characters; any other value (or none) is replaced by a new UUIDv7, never refused.",
        "schema": {"type": "string"}
    });
    let echo = json!({"X-Request-Id": {"schema": {"type": "string"}}});
    let problem_response = |description: &str| {
        json!({
            "description": description,
            "headers": echo,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": problem}}
        })
    };
    let retry_problem = |description: &str| {
        let mut response = problem_response(description);
        response["headers"]["Retry-After"] = json!({"schema": {"type": "integer"}});
        response
    };
    let json_response = |description: &str, schema: &schemars::Schema| {
        json!({
            "description": description,
            "headers": echo,
            "content": {"application/json": {"schema": schema}}
        })
    };
    // Answers of the customer endpoints: every one to an authenticated request reports the
    // credential's rate limit (IETF RateLimit header fields).
    let rate_limited_headers = |mut response: Value| {
        response["headers"]["RateLimit-Policy"] = json!({
            "description": "The credential's quota: \"requests\";q={burst};w={seconds to refill}",
            "schema": {"type": "string"}
        });
        response["headers"]["RateLimit"] = json!({
            "description": "What is left: \"requests\";r={remaining};t={seconds until full}",
            "schema": {"type": "string"}
        });
        response
    };
    let mut unauthorized = problem_response(
        "unauthorized: no API key, or one that is malformed, unknown, revoked or expired",
    );
    unauthorized["headers"]["WWW-Authenticate"] = json!({"schema": {"type": "string"}});
    let mut forbidden = rate_limited_headers(problem_response(
        "forbidden: the credential lacks the scope",
    ));
    forbidden["headers"]["WWW-Authenticate"] = json!({"schema": {"type": "string"}});
    let too_many = rate_limited_headers(retry_problem(
        "rate_limited: the credential's rate limit is exhausted, or it has as many requests in flight as it may (with Retry-After)",
    ));
    let security = |scope: &str| json!([{"apiKey": [scope]}, {"clientCertificate": [scope]}]);
    let unavailable = retry_problem("No worker answering, NATS down, or overloaded");
    let timeout = problem_response("No worker reply within the ingress timeout");
    let internal = problem_response("Storage error or bug; nothing internal is disclosed");
    let etag = json!({
        "description": "The customer's version as a strong entity tag: \"1\", \"2\", …",
        "schema": {"type": "string"}
    });
    let replayed = json!({"schema": {"const": "true"}});
    let with_etag = |mut response: Value| {
        response["headers"]["ETag"] = etag.clone();
        response
    };
    let mut created = with_etag(rate_limited_headers(json_response(
        "Created; durable on disk",
        &customer,
    )));
    created["headers"]["Location"] = json!({"schema": {"type": "string"}});
    created["headers"]["Idempotent-Replayed"] = replayed.clone();
    let mut updated = with_etag(rate_limited_headers(json_response(
        "The customer as changed (or as it is, when the patch changes nothing); durable on disk",
        &customer,
    )));
    updated["headers"]["Idempotent-Replayed"] = replayed.clone();
    let mut erased =
        rate_limited_headers(json_response("Deleted (erased); durable on disk", &deleted));
    erased["headers"]["Idempotent-Replayed"] = replayed;
    let id_parameter = json!({
        "name": "id", "in": "path", "required": true,
        "schema": {"type": "string"}
    });
    let idempotency_key = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Makes the write safe to retry: 1–255 printable ASCII characters.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255}
    });
    let if_match = json!({
        "name": "If-Match", "in": "header", "required": false,
        "description": "Proceed only if the customer is at one of these versions (strong comparison), or * for any. Required when the worker runs with --require-if-match.",
        "schema": {"type": "string"}
    });
    let gone = problem_response("customer_deleted: the customer was deleted");
    let precondition_failed = with_etag(problem_response(
        "precondition_failed: the customer is at another version than If-Match names (its current ETag is set)",
    ));
    let precondition_required = problem_response(
        "precondition_required: this service requires If-Match on changes (--require-if-match)",
    );
    let not_found = problem_response("customer_not_found (also for a malformed id)");
    let change_responses = |success: Value, extra: &[(&str, Value)]| {
        let mut responses = json!({
            "200": success,
            "400": problem_response("validation_failed (of the merged customer, of If-Match or of Idempotency-Key), malformed_json or invalid_body; invalid_authorization for an Authorization header given twice"),
            "401": unauthorized,
            "403": forbidden,
            "404": not_found,
            "408": problem_response("request_timeout: the body did not arrive within its deadline; the connection is closed"),
            "409": retry_problem("email_already_exists (the new email is another customer's), or idempotency_key_in_use (with Retry-After)"),
            "410": gone,
            "412": precondition_failed,
            "413": problem_response("The body is over the limit"),
            "422": problem_response("idempotency_key_reused: the key was used with another request"),
            "428": precondition_required,
            "429": too_many,
            "500": internal,
            "501": problem_response("not_implemented: a transfer coding other than chunked; the connection is closed"),
            "503": unavailable,
            "504": timeout
        });
        for (status, response) in extra {
            responses[*status] = response.clone();
        }
        responses
    };
    let cursor = |name: &str, description: &str| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": {"type": "string"}})
    };
    let instant = |name: &str, description: &str| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": {"type": "string", "description": "Unix seconds or an RFC 3339 instant"}})
    };
    let page = schemars::json_schema!({"oneOf": [list, feed]});

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "customers",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Creates, changes and deletes customers with case-insensitively unique emails, durably; reads them back. The same operations exist over NATS (customers.v1.create, .get, .list, .search, .update, .delete)."
        },
        "security": [{"apiKey": []}, {"clientCertificate": []}],
        "paths": {
            "/api/v1/customers": {
                "post": {
                    "operationId": "createCustomer",
                    "security": security("customers:write"),
                    "parameters": [request_id, idempotency_key],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": create}}
                    },
                    "responses": {
                        "201": created,
                        "400": problem_response("malformed_json, invalid_body or validation_failed; invalid_authorization for an Authorization header given twice"),
                        "401": unauthorized,
                        "403": forbidden,
                        "408": problem_response("request_timeout: the body did not arrive within its deadline (in all, and at a minimum rate); the connection is closed"),
                        "409": retry_problem("email_already_exists, or idempotency_key_in_use (with Retry-After)"),
                        "410": problem_response("customer_deleted: a replay (Idempotency-Key) of a create whose customer was deleted since"),
                        "413": problem_response("The body is over the limit"),
                        "415": problem_response("The content type is not JSON"),
                        "422": problem_response("idempotency_key_reused"),
                        "429": too_many,
                        "500": internal,
                        "501": problem_response("not_implemented: a transfer coding other than chunked; the connection is closed"),
                        "503": unavailable,
                        "504": timeout
                    }
                },
                "get": {
                    "operationId": "listCustomers",
                    "security": security("customers:read"),
                    "parameters": [
                        request_id,
                        {"name": "limit", "in": "query", "required": false,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
                        cursor("starting_after", "A customer id: the page holds older customers."),
                        cursor("ending_before", "A customer id: the page holds newer customers."),
                        {"name": "email", "in": "query", "required": false,
                         "description": "Only the customer with this email, compared case-insensitively.",
                         "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "required": false,
                         "schema": {"type": "string", "enum": ["active", "inactive", "suspended"]}},
                        {"name": "country", "in": "query", "required": false,
                         "description": "An ISO 3166-1 alpha-2 code or a country's name.",
                         "schema": {"type": "string"}},
                        instant("created[gte]", "Created at or after."),
                        instant("created[gt]", "Created after."),
                        instant("created[lte]", "Created at or before."),
                        instant("created[lt]", "Created before."),
                        instant("updated[gte]", "Last changed at or after."),
                        instant("updated[gt]", "Last changed after."),
                        instant("updated[lte]", "Last changed at or before."),
                        instant("updated[lt]", "Last changed before."),
                        {"name": "custom_data", "in": "query", "required": false,
                         "style": "deepObject", "explode": true,
                         "description": "custom_data[KEY]=VALUE: the top-level key KEY holds this string, or a number or boolean written as it.",
                         "schema": {"type": "object", "additionalProperties": {"type": "string"}}},
                        {"name": "order", "in": "query", "required": false,
                         "description": "created_desc: newest first; updated_asc: the change feed, oldest change first, paged with cursor.",
                         "schema": {"type": "string", "enum": ["created_desc", "updated_asc"], "default": "created_desc"}},
                        cursor("cursor", "The change feed only: the next_cursor of the page before."),
                        {"name": "include_deleted", "in": "query", "required": false,
                         "description": "The change feed only: tombstones of deleted customers too.",
                         "schema": {"type": "boolean", "default": false}}
                    ],
                    "responses": {
                        "200": rate_limited_headers(json_response("A page of customers, newest first; with order=updated_asc a change-feed page", &page)),
                        "400": problem_response("A parameter is invalid, unknown or repeated; invalid_authorization for an Authorization header given twice"),
                        "401": unauthorized,
                        "403": forbidden,
                        "429": too_many,
                        "500": internal,
                        "503": unavailable,
                        "504": timeout
                    }
                }
            },
            "/api/v1/customers/search": {
                "get": {
                    "operationId": "searchCustomers",
                    "security": security("customers:read"),
                    "parameters": [
                        request_id,
                        {"name": "query", "in": "query", "required": true,
                         "description": "Stripe's search language: field:value, name|email|phone~substring (3+ characters), -clause, created|updated >, >=, <, <=, status, country, custom_data['key']:'value', field:null; clauses joined by AND or by OR, at most 10.",
                         "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "required": false,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
                        cursor("page", "The next_page of the page before.")
                    ],
                    "responses": {
                        "200": rate_limited_headers(json_response("A page of the customers the query matches, newest first, with total_count", &search_page)),
                        "400": problem_response("invalid_query (with position and expected) for a query that does not parse; validation_failed for a missing query or a bad limit, page or unknown parameter; invalid_authorization for an Authorization header given twice"),
                        "401": unauthorized,
                        "403": forbidden,
                        "429": too_many,
                        "500": internal,
                        "503": unavailable,
                        "504": timeout
                    }
                }
            },
            "/api/v1/customers/{id}": {
                "get": {
                    "operationId": "getCustomer",
                    "security": security("customers:read"),
                    "parameters": [request_id, id_parameter, {
                        "name": "If-None-Match", "in": "header", "required": false,
                        "description": "Answer 304 without the body if the customer is at one of these versions (weak comparison), or exists for *.",
                        "schema": {"type": "string"}
                    }],
                    "responses": {
                        "200": with_etag(rate_limited_headers(json_response("The customer", &customer))),
                        "304": rate_limited_headers(json!({
                            "description": "Not modified: the customer is at a version If-None-Match names",
                            "headers": {"ETag": etag, "X-Request-Id": {"schema": {"type": "string"}}}
                        })),
                        "400": problem_response("validation_failed: If-None-Match is not * or a list of entity tags; invalid_authorization for an Authorization header given twice"),
                        "401": unauthorized,
                        "403": forbidden,
                        "404": not_found,
                        "410": gone,
                        "429": too_many,
                        "500": internal,
                        "503": unavailable,
                        "504": timeout
                    }
                },
                "patch": {
                    "operationId": "updateCustomer",
                    "security": security("customers:write"),
                    "parameters": [request_id, id_parameter, idempotency_key, if_match],
                    "requestBody": {
                        "required": true,
                        "content": {
                            "application/merge-patch+json": {"schema": update},
                            "application/json": {"schema": update}
                        }
                    },
                    "responses": change_responses(updated, &[(
                        "415",
                        problem_response("The content type is not application/merge-patch+json or application/json"),
                    )])
                },
                "delete": {
                    "operationId": "deleteCustomer",
                    "security": security("customers:write"),
                    "parameters": [request_id, id_parameter, idempotency_key, if_match],
                    "responses": change_responses(erased, &[])
                }
            },
            "/healthz": {"get": {"operationId": "health", "security": [], "responses": {
                "200": {"description": "The process is up"}
            }}},
            "/readyz": {"get": {"operationId": "ready", "security": [], "responses": {
                "200": {"description": "Connected to NATS and a worker answers"},
                "503": unavailable
            }}},
            "/metrics": {"get": {"operationId": "metrics", "security": [], "responses": {
                "200": {"description": "Prometheus metrics (OpenMetrics text)"}
            }}},
            "/api/v1/openapi.json": {"get": {"operationId": "openapi", "security": [], "responses": {
                "200": {"description": "This document"}
            }}},
            "/api/v1/asyncapi.json": {"get": {"operationId": "asyncapi", "security": [], "responses": {
                "200": {"description": "The AsyncAPI 3.0 document of the NATS interface (requests and events)"}
            }}}
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "ck_live_{16-character id}_{52-character secret}",
                    "description": "An API key minted with `customers-ingress keys mint`; its scopes (customers:read, customers:write) decide what it may call."
                },
                "clientCertificate": {
                    "type": "mutualTLS",
                    "description": "A client certificate signed by the ingress's --tls-client-ca whose subject the keys file grants scopes."
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn openapi_matches_committed_file() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let generated = serde_json::to_string_pretty(&super::document()).unwrap() + "\n";
        crate::wire::schema::assert_committed(&path, &generated);
    }

    #[test]
    fn every_reference_resolves() {
        crate::wire::schema::assert_references_resolve(&super::document());
    }
}
