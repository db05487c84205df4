//! What a customer is, and how a request body becomes one. No HTTP, NATS or storage here:
//! only the rules of the contract's fields and the values that obey them.
//!
//! * [`fields`] and [`country`]: one type per customer field; each parses (trims, checks,
//!   normalises) on construction, so a value of that type is always valid.
//! * [`json`]: reads a body as one JSON object, refusing duplicate keys anywhere.
//! * [`new_customer`]: turns a body into a [`new_customer::NewCustomer`], collecting every
//!   broken rule at once; [`customer_patch`]: merges an update's patch into a customer and
//!   validates the result by the same rules.
//! * [`violation`]: what is wrong with a request ([`violation::BodyError`], field errors).
//! * [`id`], [`timestamp`] and [`customer`]: the customer's TypeID, its instants, and the
//!   stored record.

pub mod country;
pub mod customer;
pub mod customer_patch;
pub mod fields;
pub mod id;
pub mod json;
pub mod new_customer;
pub mod timestamp;
pub mod violation;
