//! The customers worker: the single authority that validates, deduplicates and stores
//! customers. `ARCHITECTURE.md`, at the repository's root, walks a create through it; the
//! modules, from the bottom up (each uses only those above it in this list):
//!
//! * [`support`]: retries with backoff, the blocking pool, the failpoints' crash;
//!   [`config`]: flags and environment variables; [`role`]: single, standby or primary;
//!   [`health`]: fail-stop after a storage error or a panic; [`metrics`]: the Prometheus
//!   registry; [`reply`]: an answer (status, body, headers), as sent and as stored.
//! * [`storage`]: the schema of the trees, the write-ahead journal, the sled store (open,
//!   recovery checked against the checkpoint manifest, apply, checkpoint, reads) and the
//!   backup format.
//! * [`idempotency`]: the whole `Idempotency-Key` protocol: lookup, claim, the stored record's
//!   format, and the purge.
//! * [`replication`]: the replicated log, the lease, the snapshot bucket and the read gate.
//! * [`commit`]: the commit handle and its messages, and the engine thread that gathers,
//!   plans, persists and delivers each group; ids, known emails, the checkpointer and the
//!   in-memory outbox.
//! * [`events`]: the events stream's set-up and the relay that publishes the outbox.
//! * [`api`]: the NATS micro service: endpoints, the request side of create, get and list.
//! * [`ops`]: the admin listener and the `backup`, `restore` and `verify` commands.
//! * [`lifecycle`]: start-up in order, the standby's following and take-over, the ordered
//!   stop: [`Worker`].

/// A failpoint of the `fail` crate when the `failpoints` feature is on (the system tests
/// build the worker with it and set `FAILPOINTS`); nothing at all otherwise.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name);
    };
    ($name:literal, $action:expr) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, $action);
    };
}

mod api;
mod commit;
pub mod config;
mod events;
mod health;
mod idempotency;
mod lifecycle;
mod metrics;
pub mod ops;
mod replication;
mod reply;
mod role;
mod storage;
mod support;

pub use config::Config;
pub use health::Failure;
pub use lifecycle::{Worker, WorkerError};
pub use storage::store::Store;
