//! The worker's configuration: every setting is a command-line flag with an environment
//! variable and a default, so `customers-worker --help` documents them all.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The customers NATS micro service: validates create requests, enforces case-insensitive
/// email uniqueness and stores customers durably (a journal, then sled). Exits 74 after a
/// storage error and 70 after an internal panic, so that a supervisor restarts it.
#[derive(Debug, Clone, Parser)]
#[command(name = "customers-worker", version)]
pub struct Config {
    #[command(flatten)]
    pub nats: customers_shared::runtime::nats::NatsOptions,

    #[command(flatten)]
    pub process: customers_shared::runtime::cli::ProcessOptions,

    /// Directory of the sled database (created if missing; one worker process per directory).
    #[arg(long, env = "CUSTOMERS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Subject prefix: the endpoints listen on `{prefix}.v1.create`, `.get` and `.list`.
    #[arg(long, env = "CUSTOMERS_SUBJECT_PREFIX", default_value = customers_shared::wire::protocol::DEFAULT_SUBJECT_PREFIX)]
    pub subject_prefix: String,

    /// sled page cache size in bytes. sled's resident memory is several times this figure
    /// (at a million customers, 32 MiB gives a worker of ~255 MB, 64 MiB ~315 MB, with the
    /// same throughput).
    #[arg(long, env = "CUSTOMERS_CACHE_CAPACITY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub cache_capacity_bytes: u64,

    /// Largest request payload accepted over NATS, in bytes (same default as the ingress).
    #[arg(long, env = "CUSTOMERS_MAX_BODY_BYTES", default_value_t = customers_shared::wire::protocol::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Requests handled at once (creates, gets and lists); past this the worker answers 503
    /// at once, whoever sends them.
    #[arg(long, env = "CUSTOMERS_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// Creates that may wait for the committer; past this the worker answers 503 at once.
    #[arg(long, env = "CUSTOMERS_MAX_PENDING", default_value_t = 4096)]
    pub max_pending: usize,

    /// Most creates applied and fsynced together in one group commit.
    #[arg(long, env = "CUSTOMERS_MAX_GROUP", default_value_t = 1024)]
    pub max_group: usize,

    /// Size of the journal's active segment that starts a checkpoint; bounds the journal,
    /// and so the time to replay it after a crash (about 2 s per 32 MiB on a small machine).
    #[arg(long, env = "CUSTOMERS_CHECKPOINT_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub checkpoint_bytes: u64,

    /// How long an Idempotency-Key's stored reply is kept and replayed (at least 24h is
    /// the contract); expired keys are purged in the background.
    #[arg(long, env = "CUSTOMERS_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_retention: Duration,

    /// Address of the admin HTTP listener (`/metrics`, `/healthz`, `/readyz`); none if unset.
    /// Keep it private: it is not authenticated.
    #[arg(long, env = "CUSTOMERS_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,

    /// Time allowed on SIGTERM/SIGINT to finish accepted requests before exiting.
    #[arg(long, env = "CUSTOMERS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The defaults, for tests and embedders: NATS at `nats_url`, data in `data_dir`.
    pub fn new(nats_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::parse_from(["customers-worker"]);
        config.nats.url = nats_url.into();
        config.data_dir = data_dir.into();
        config
    }
}

impl Config {
    /// The committer's queue, group and journal bounds.
    pub fn commit_limits(&self) -> crate::committer::Limits {
        crate::committer::Limits {
            max_pending: self.max_pending,
            max_group: self.max_group,
            checkpoint_bytes: self.checkpoint_bytes,
        }
    }
}

impl customers_shared::runtime::cli::Process for Config {
    fn process(&self) -> &customers_shared::runtime::cli::ProcessOptions {
        &self.process
    }
}
