//! Everything the ingress and the worker must agree on, in one crate.
//!
//! * [`fields`] and [`country`]: one type per customer field; each parses (trims, checks,
//!   normalises) on construction, so a value of that type is always valid.
//! * [`json`]: reads a request body as one JSON object, refusing duplicate keys anywhere.
//! * [`new_customer`]: turns a request body into a [`NewCustomer`], collecting every field
//!   error of the request at once.
//! * [`customer`]: the stored record ([`Customer`]), its TypeID ([`CustomerId`]) and
//!   timestamps, serialised with keys in the documented order.
//! * [`error`] and [`problem`]: the single mapping from an [`ApiError`] to a status code and
//!   an RFC 9457 problem body, used by HTTP and NATS alike.
//! * [`list`]: the list query (cursor, limit, email filter) and the list body.
//! * [`idempotency`]: the `Idempotency-Key` header's rules.
//! * [`protocol`]: NATS subjects and header names.
//! * [`metrics`]: the Prometheus text format both binaries serve.
//! * [`nats`]: connection settings (authentication, TLS), connecting and readiness.
//! * [`openapi`]: the OpenAPI 3.1 document of the HTTP API, built from the same types.
//! * [`schema`]: the JSON Schemas generated from these types (committed under `schemas/`).
//! * [`cli`]: configuration parsing, logging and signal handling common to both binaries.

pub mod cli;
pub mod country;
pub mod customer;
pub mod error;
pub mod fields;
pub mod idempotency;
pub mod json;
pub mod list;
pub mod metrics;
pub mod nats;
pub mod new_customer;
pub mod openapi;
pub mod problem;
pub mod protocol;
pub mod schema;

pub use customer::{Customer, CustomerId, Timestamp};
pub use error::ApiError;
pub use new_customer::NewCustomer;
pub use problem::{FieldError, FieldErrorCode, Problem};
