//! The OpenAPI 3.1 description of the HTTP API, built from the same schemars types as the
//! JSON Schemas (no hand-kept copy of any body). The ingress serves it at
//! `GET /api/v1/openapi.json`; `docs/openapi.json` is the committed copy, and
//! `openapi_matches_committed_file` fails when the two drift (regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p customers-shared`).

use serde_json::{Value, json};

use crate::domain::customer::Customer;
use crate::wire::problem::{PROBLEM_CONTENT_TYPE, Problem};
use crate::wire::schema::{CreateCustomerRequest, CustomerList};

/// The OpenAPI document.
pub fn document() -> Value {
    let mut generator = crate::wire::schema::components_generator();
    let create = generator.subschema_for::<CreateCustomerRequest>();
    let customer = generator.subschema_for::<Customer>();
    let list = generator.subschema_for::<CustomerList>();
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
    let mut created = rate_limited_headers(json_response("Created; durable on disk", &customer));
    created["headers"]["Location"] = json!({"schema": {"type": "string"}});
    created["headers"]["Idempotent-Replayed"] = json!({"schema": {"const": "true"}});
    let cursor = |name: &str, description: &str| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": {"type": "string"}})
    };

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "customers",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Creates customers with case-insensitively unique emails, durably; reads them back. The same operations exist over NATS (customers.v1.create, .get, .list)."
        },
        "security": [{"apiKey": []}, {"clientCertificate": []}],
        "paths": {
            "/api/v1/customers": {
                "post": {
                    "operationId": "createCustomer",
                    "security": security("customers:write"),
                    "parameters": [request_id, {
                        "name": "Idempotency-Key", "in": "header", "required": false,
                        "description": "Makes the create safe to retry: 1–255 printable ASCII characters.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255}
                    }],
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
                         "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": rate_limited_headers(json_response("A page of customers, newest first", &list)),
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
            "/api/v1/customers/{id}": {
                "get": {
                    "operationId": "getCustomer",
                    "security": security("customers:read"),
                    "parameters": [request_id, {
                        "name": "id", "in": "path", "required": true,
                        "schema": {"type": "string"}
                    }],
                    "responses": {
                        "200": rate_limited_headers(json_response("The customer", &customer)),
                        "400": problem_response("invalid_authorization: an Authorization header given twice"),
                        "401": unauthorized,
                        "403": forbidden,
                        "404": problem_response("customer_not_found (also for a malformed id)"),
                        "429": too_many,
                        "500": internal,
                        "503": unavailable,
                        "504": timeout
                    }
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
