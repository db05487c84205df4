//! Test helpers for the system tests in `tests/tests/system/`, by job:
//!
//! * [`nats`]: a real `nats-server` on an ephemeral loopback port, a 3-node cluster, a
//!   stand-in worker;
//! * [`in_process`]: the worker and the ingress in the test's process, and [`spawn_app`];
//! * [`http`]: an HTTP client for the ingress;
//! * [`process`]: the binaries as child processes, kills and signals;
//! * [`fixtures`]: bodies, subjects, ports, patience, reports, [`exclusive`];
//! * [`events`]: the events stream read as a consumer does; [`ledger`]: creates under load,
//!   checked afterwards against whatever the test did to the worker.
//!
//! Everything is re-exported here, so a test names `customers_tests::spawn_app`.

pub mod events;
pub mod fixtures;
pub mod http;
pub mod in_process;
pub mod ledger;
pub mod nats;
pub mod process;

pub use fixtures::*;
pub use http::*;
pub use in_process::*;
pub use nats::*;
pub use process::*;
