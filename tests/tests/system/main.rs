//! The system tests: one binary, a module per area, each starting the real parts it needs
//! (a `nats-server` on an ephemeral loopback port, or a 3-node cluster; the worker and the
//! ingress, in this process or as child processes; a temporary sled directory). The helpers
//! are in `customers-tests` (`tests/src/`). One binary links the stack once instead of once
//! per area; run one area with `cargo test -p customers-tests --test system replication::`.
//!
//! Tests that load the machine's two cores for long (a cluster, kills under load, power cuts,
//! storage faults, overload, the load generator) take `customers_tests::exclusive()` first,
//! so that no two of them run at once.

// The contract, request by request.
mod changes;
mod create;
mod find_and_sync;
mod idempotency;
mod reads;
mod search;
mod uniqueness;
mod validation;

// The ingress's HTTP side.
mod auth;
mod health;
mod http;
mod slow_clients;
mod tls;

// The NATS side and the worker's own bounds.
mod nats;
mod nats_security;
mod overload;
mod self_protection;
mod worker_client;

// Events.
mod events;

// Durability and failure.
mod backup;
mod crash;
mod disk_full;
mod outage;
mod power_cut;
mod shutdown;
mod storage_faults;

// Replicated mode.
mod replication;

// Operations, tooling and the repository itself.
mod deploy;
mod docs;
mod layout;
mod loadgen;
mod logging;
mod metrics;
mod schemathesis;
