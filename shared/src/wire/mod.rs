//! The contract between the service's processes and its clients, on HTTP and NATS alike:
//! every error with its status, code and RFC 9457 body ([`error`], [`problem`]), the NATS
//! subjects and headers ([`protocol`]), the list query and page ([`list`]), the
//! `Idempotency-Key` rules ([`idempotency`]), entity tags and conditions ([`conditional`]),
//! the `customer.created` event ([`event`]), and the generated JSON Schemas, OpenAPI and
//! AsyncAPI documents ([`schema`], [`openapi`], [`asyncapi`]).

pub mod asyncapi;
pub mod conditional;
pub mod error;
pub mod event;
pub mod idempotency;
pub mod list;
pub mod openapi;
pub mod problem;
pub mod protocol;
pub mod schema;
pub mod search;
