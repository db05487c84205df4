//! What both binaries need to run, apart from the contract: configuration parsing, logging,
//! the async runtime and signals ([`cli`]), value parsers for flags with a range ([`flags`]),
//! the NATS connection with its authentication and TLS ([`nats`]), the Prometheus text
//! encoding ([`metrics`]) and the wall clock ([`clock`]).

pub mod cli;
pub mod clock;
pub mod flags;
pub mod metrics;
pub mod nats;
