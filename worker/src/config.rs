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
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub nats: customers_shared::runtime::nats::NatsOptions,

    #[command(flatten)]
    pub process: customers_shared::runtime::cli::ProcessOptions,

    /// Directory of the sled database (created if missing; one worker process per directory).
    #[arg(
        long,
        env = "CUSTOMERS_DATA_DIR",
        default_value = "./data",
        global = true
    )]
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

    #[command(flatten)]
    pub events: EventsOptions,

    #[command(flatten)]
    pub replication: ReplicationOptions,

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

/// `customers-worker` subcommands; without one, it serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Has a running worker write a consistent snapshot of its database (between two group
    /// commits, while it keeps serving) to a file on its machine, through its admin listener.
    Backup {
        /// The worker's admin listener, e.g. http://127.0.0.1:9090.
        #[arg(long)]
        admin_url: String,
        /// Absolute path of the snapshot file to write (must not exist yet).
        #[arg(long)]
        out: PathBuf,
    },
    /// Loads a snapshot into a new, empty `--data-dir` (no worker may run on it); start the
    /// worker on that directory afterwards.
    Restore {
        /// The snapshot file.
        #[arg(long)]
        from: PathBuf,
    },
}

/// `customer.created` events on JetStream (docs/API.md §8). The stream settings apply only
/// when the worker creates the stream; a stream that exists is used as the operator left it.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsOptions {
    /// Publish a `customer.created` event per stored customer: `on` needs JetStream on the
    /// NATS server (the worker refuses to start without it); `off` publishes nothing.
    #[arg(id = "events", long = "events", env = "CUSTOMERS_EVENTS", value_enum, default_value_t = EventsMode::On)]
    pub mode: EventsMode,

    /// Name of the stream that captures `{prefix}.v1.events.>`.
    #[arg(id = "events_stream", long = "events-stream", env = "CUSTOMERS_EVENTS_STREAM", default_value = customers_shared::wire::event::DEFAULT_STREAM)]
    pub stream: String,

    /// Replicas of the stream, when the worker creates it (3 on a 3-node cluster).
    #[arg(
        id = "events_replicas",
        long = "events-replicas",
        env = "CUSTOMERS_EVENTS_REPLICAS",
        default_value_t = 1
    )]
    pub replicas: usize,

    /// Retention policy of the stream, when the worker creates it.
    #[arg(id = "events_retention", long = "events-retention", env = "CUSTOMERS_EVENTS_RETENTION", value_enum, default_value_t = Retention::Limits)]
    pub retention: Retention,

    /// Age past which the stream drops events, when the worker creates it; 0 keeps them for
    /// as long as the stream exists.
    #[arg(id = "events_max_age", long = "events-max-age", env = "CUSTOMERS_EVENTS_MAX_AGE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub max_age: Duration,

    /// The stream's duplicate window, when the worker creates it: a re-publication of an
    /// event (after a crash or a lost acknowledgement) within it is dropped by its id.
    #[arg(id = "events_duplicate_window", long = "events-duplicate-window", env = "CUSTOMERS_EVENTS_DUPLICATE_WINDOW", default_value = "2m", value_parser = humantime::parse_duration)]
    pub duplicate_window: Duration,

    /// The CloudEvents `source` of every event.
    #[arg(id = "events_source", long = "events-source", env = "CUSTOMERS_EVENTS_SOURCE", default_value = customers_shared::wire::event::DEFAULT_SOURCE)]
    pub source: String,

    /// Events that may wait for JetStream. While it is unreachable, creates go on and their
    /// events wait in the outbox; past this many, creates are answered 503 rather than stored
    /// without their event.
    #[arg(
        id = "events_max_pending",
        long = "events-max-pending",
        env = "CUSTOMERS_EVENTS_MAX_PENDING",
        default_value_t = 1_000_000
    )]
    pub max_pending: usize,
}

/// Replicated mode (docs/API.md §9): every committed group is appended to a replicated
/// JetStream stream before it is acknowledged, one instance (holding a lease) commits, the
/// others follow the stream and take over when it goes. The settings of the stream and the
/// buckets apply when the worker creates them.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationOptions {
    /// `none`: one worker on its own disk (the default); `jetstream`: replicated.
    #[arg(id = "replication", long = "replication", env = "CUSTOMERS_REPLICATION", value_enum, default_value_t = ReplicationMode::None)]
    pub mode: ReplicationMode,

    /// The stream that holds the committed groups.
    #[arg(
        id = "replication_stream",
        long = "replication-stream",
        env = "CUSTOMERS_REPLICATION_STREAM",
        default_value = "CUSTOMERS_LOG"
    )]
    pub stream: String,

    /// Replicas of the stream, the lease bucket and the snapshot bucket (3 on a 3-node
    /// cluster: an acknowledged create survives the loss of any one node).
    #[arg(
        id = "replication_replicas",
        long = "replication-replicas",
        env = "CUSTOMERS_REPLICATION_REPLICAS",
        default_value_t = 3
    )]
    pub replicas: usize,

    /// How long the primary's lease lasts without renewal: a standby takes over within about
    /// this long after the primary dies. Renewed every quarter of it.
    #[arg(id = "lease_ttl", long = "lease-ttl", env = "CUSTOMERS_LEASE_TTL", default_value = "2s", value_parser = positive_duration)]
    pub lease_ttl: Duration,

    /// How often the primary stores a snapshot of the database in JetStream object storage
    /// (the bucket `{stream}_SNAPSHOTS`) and trims the log below the previous one. Creates
    /// wait while the database is copied.
    #[arg(id = "snapshot_interval", long = "snapshot-interval", env = "CUSTOMERS_SNAPSHOT_INTERVAL", default_value = "10m", value_parser = positive_duration)]
    pub snapshot_interval: Duration,
}

/// A duration above zero (`humantime` syntax): for a lease or an interval, zero would mean
/// "never expires" or a busy loop.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be longer than zero".into()),
        Ok(duration) => Ok(duration),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplicationMode {
    None,
    Jetstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsMode {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Retention {
    /// Kept until the stream's limits (age, size) drop them: any number of consumers.
    Limits,
    /// Kept while a consumer has not acknowledged them.
    Interest,
    /// Removed once one consumer acknowledged them.
    Workqueue,
}

impl EventsOptions {
    /// The outbox bound when events are on.
    pub fn max_pending(&self) -> Option<usize> {
        (self.mode == EventsMode::On).then_some(self.max_pending)
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
