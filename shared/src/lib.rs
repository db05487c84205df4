//! Everything the ingress and the worker must agree on, in one crate, in three parts:
//!
//! * [`domain`]: what a customer is and how a request body becomes one (fields, validation,
//!   the TypeID, the stored record); depends on nothing else here.
//! * [`wire`]: the contract on HTTP and NATS (errors and their single mapping to statuses and
//!   problem bodies, subjects and headers, the list query, the idempotency key, JSON Schemas,
//!   OpenAPI); builds on `domain`.
//! * [`runtime`]: running a binary (configuration, logging, runtime, signals, the NATS
//!   connection, metrics encoding); independent of both.

pub mod domain;
pub mod runtime;
pub mod wire;

pub use domain::customer::Customer;
pub use domain::customer_patch::CustomerPatch;
pub use domain::id::CustomerId;
pub use domain::new_customer::NewCustomer;
pub use domain::timestamp::Timestamp;
pub use domain::violation::{BodyError, FieldError, FieldErrorCode};
pub use wire::error::ApiError;
pub use wire::problem::Problem;
