//! The worker's configuration: every setting is a command-line flag with an environment
//! variable and a default, so `customers-worker --help` documents them all.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use customers_shared::runtime::flags::{count_in, duration_in};

/// The customers NATS micro service: validates create requests, enforces case-insensitive
/// email uniqueness and stores customers durably (a journal, then sled). Exits 74 after a
/// storage error, 70 after an internal panic and 75 when, replicated, it is no longer the
/// primary (its lease lost, its log append fenced), so that a supervisor restarts it.
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
    #[arg(long, env = "CUSTOMERS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Subject prefix: the endpoints listen on `{prefix}.v1.create`, `.get`, `.list`,
    /// `.update` and `.delete`.
    #[arg(long, env = "CUSTOMERS_SUBJECT_PREFIX", default_value = customers_shared::wire::protocol::DEFAULT_SUBJECT_PREFIX)]
    pub subject_prefix: String,

    /// sled page cache size in bytes. sled's resident memory is several times this figure
    /// (at a million customers, 32 MiB gives a worker of ~255 MB, 64 MiB ~315 MB, with the
    /// same throughput).
    #[arg(long, env = "CUSTOMERS_CACHE_CAPACITY_BYTES", default_value_t = 32 * 1024 * 1024, value_parser = count_in::<u64>(1 << 20, 1 << 40))]
    pub cache_capacity_bytes: u64,

    /// Largest request payload accepted over NATS, in bytes (same default as the ingress).
    #[arg(long, env = "CUSTOMERS_MAX_BODY_BYTES", default_value_t = customers_shared::wire::protocol::DEFAULT_MAX_BODY_BYTES, value_parser = count_in::<usize>(customers_shared::wire::protocol::MIN_BODY_LIMIT, customers_shared::wire::protocol::MAX_BODY_LIMIT))]
    pub max_body_bytes: usize,

    /// Requests handled at once (creates, gets and lists); past this the worker answers 503
    /// at once, whoever sends them.
    #[arg(long, env = "CUSTOMERS_MAX_IN_FLIGHT", default_value_t = 4096, value_parser = count_in::<usize>(1, 1_000_000))]
    pub max_in_flight: usize,

    /// Creates that may wait for the committer; past this the worker answers 503 at once.
    #[arg(long, env = "CUSTOMERS_MAX_PENDING", default_value_t = 4096, value_parser = count_in::<usize>(1, 1_000_000))]
    pub max_pending: usize,

    /// Most creates applied and fsynced together in one group commit.
    #[arg(long, env = "CUSTOMERS_MAX_GROUP", default_value_t = 1024, value_parser = count_in::<usize>(1, 65_536))]
    pub max_group: usize,

    /// Size of the journal's active segment that starts a checkpoint; bounds the journal,
    /// and so the time to replay it after a crash (about 2 s per 32 MiB on a small machine).
    #[arg(long, env = "CUSTOMERS_CHECKPOINT_BYTES", default_value_t = 32 * 1024 * 1024, value_parser = count_in::<u64>(16 * 1024, 1 << 32))]
    pub checkpoint_bytes: u64,

    /// Longest a journal segment with records in it stays active: a checkpoint then starts
    /// however small it is, so what a delete erased leaves the journal within about this
    /// long (plus a quarter of it and the checkpoint's own time) even when writes are few.
    #[arg(id = "checkpoint_interval", long = "checkpoint-interval", env = "CUSTOMERS_CHECKPOINT_INTERVAL", default_value = "15m", value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(24 * 3600)))]
    pub checkpoint_interval: Duration,

    /// How long an Idempotency-Key's stored reply is kept and replayed (at least 24h is
    /// the contract); expired keys are purged in the background.
    #[arg(long, env = "CUSTOMERS_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = duration_in(Duration::from_millis(100), ONE_YEAR))]
    pub idempotency_retention: Duration,

    /// Refuse an update or delete that does not say which version it changes (`If-Match`)
    /// with 428 `precondition_required`, over HTTP and NATS alike: no client can then
    /// overwrite a change it has not seen.
    #[arg(long, env = "CUSTOMERS_REQUIRE_IF_MATCH")]
    pub require_if_match: bool,

    /// Address of the admin HTTP listener: `GET /metrics`, `/healthz` and `/readyz`, and
    /// `POST /backup` (with `--backup-dir`); none if unset. Keep it on the local host or a
    /// trusted network: only `POST /backup` can be made to need a token
    /// (`--admin-token-file`).
    #[arg(long, env = "CUSTOMERS_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,

    /// The only directory backups are written to (`POST /backup` names a file in it; created
    /// if missing). Without it the admin listener refuses backups.
    #[arg(long, env = "CUSTOMERS_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// A file holding a secret that `POST /backup` must present as `Authorization: Bearer
    /// <secret>`; without it, anyone who reaches the admin listener may ask for a backup.
    #[arg(long, env = "CUSTOMERS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub events: EventsOptions,

    #[command(flatten)]
    pub replication: ReplicationOptions,

    /// Time allowed on SIGTERM/SIGINT to finish accepted requests before exiting.
    #[arg(long, env = "CUSTOMERS_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration_in(Duration::ZERO, Duration::from_secs(3600)))]
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

/// A year as `humantime` counts it (365.25 days), so that a bound prints as `1year`.
const ONE_YEAR: Duration = Duration::from_secs(31_557_600);

/// `customers-worker` subcommands; without one, it serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Has a running worker write a consistent snapshot of its database (between two group
    /// commits, while it keeps serving) into its `--backup-dir`, through its admin listener.
    Backup {
        /// The worker's admin listener, e.g. http://127.0.0.1:9090.
        #[arg(long)]
        admin_url: String,
        /// File name of the snapshot in the worker's backup directory: letters, digits, `.`,
        /// `_` and `-`, not starting with `.` (default: `customers-{UTC time}.snap`).
        #[arg(long)]
        name: Option<String>,
        /// The file holding the admin token, when the worker requires one.
        #[arg(long, env = "CUSTOMERS_ADMIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
    /// Loads a snapshot into a new, empty data directory (no worker may run on it); start the
    /// worker on that directory afterwards.
    Restore {
        /// The snapshot file.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to load it into (empty or missing).
        #[arg(long, env = "CUSTOMERS_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Opens a data directory no worker is running on (replaying its journal, as a start
    /// does) and checks it whole: every record against the email index and the last
    /// checkpoint's manifest. Prints what it found as JSON; exits non-zero when the database
    /// is not consistent.
    Verify {
        /// The data directory to check.
        #[arg(long, env = "CUSTOMERS_DATA_DIR")]
        data_dir: PathBuf,
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
        default_value_t = 1,
        value_parser = count_in::<usize>(1, 5)
    )]
    pub replicas: usize,

    /// Retention policy of the stream, when the worker creates it.
    #[arg(id = "events_retention", long = "events-retention", env = "CUSTOMERS_EVENTS_RETENTION", value_enum, default_value_t = Retention::Limits)]
    pub retention: Retention,

    /// Age past which the stream drops events, when the worker creates it; 0 keeps them for
    /// as long as the stream exists.
    #[arg(id = "events_max_age", long = "events-max-age", env = "CUSTOMERS_EVENTS_MAX_AGE", default_value = "0s", value_parser = duration_in(Duration::ZERO, 100 * ONE_YEAR))]
    pub max_age: Duration,

    /// The stream's duplicate window, when the worker creates it: a re-publication of an
    /// event (after a crash or a lost acknowledgement) within it is dropped by its id.
    #[arg(id = "events_duplicate_window", long = "events-duplicate-window", env = "CUSTOMERS_EVENTS_DUPLICATE_WINDOW", default_value = "2m", value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600)))]
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
        default_value_t = 1_000_000,
        value_parser = count_in::<usize>(1, 1_000_000_000)
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
        default_value_t = 3,
        value_parser = count_in::<usize>(1, 5)
    )]
    pub replicas: usize,

    /// How long the primary's lease lasts without renewal: a standby takes over within about
    /// this long after the primary dies. Renewed every quarter of it.
    #[arg(id = "lease_ttl", long = "lease-ttl", env = "CUSTOMERS_LEASE_TTL", default_value = "2s", value_parser = duration_in(Duration::from_millis(500), Duration::from_secs(60)))]
    pub lease_ttl: Duration,

    /// How often the primary stores a snapshot of the database in JetStream object storage
    /// (the bucket `{stream}_SNAPSHOTS`) and trims the log below the previous one. Creates
    /// wait while the database is copied.
    #[arg(id = "snapshot_interval", long = "snapshot-interval", env = "CUSTOMERS_SNAPSHOT_INTERVAL", default_value = "10m", value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(7 * 24 * 3600)))]
    pub snapshot_interval: Duration,
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

impl customers_shared::runtime::cli::Process for Config {
    fn process(&self) -> &customers_shared::runtime::cli::ProcessOptions {
        &self.process
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use customers_shared::runtime::flags::{OutOfRange, check_table};

    use super::Config;

    /// Every numeric and duration flag of the worker, with values outside its range.
    const OUT_OF_RANGE: [OutOfRange; 26] = [
        (
            "--cache-capacity-bytes",
            "0",
            "0 is not in 1048576..=1099511627776",
        ),
        ("--cache-capacity-bytes", "255", "255 is not in 1048576.."),
        ("--max-body-bytes", "0", "0 is not in 1024..=1048576"),
        ("--max-in-flight", "0", "0 is not in 1..=1000000"),
        ("--max-pending", "0", "0 is not in 1..=1000000"),
        ("--max-pending", "many", "invalid digit"),
        ("--max-group", "0", "0 is not in 1..=65536"),
        (
            "--checkpoint-bytes",
            "10",
            "10 is not in 16384..=4294967296",
        ),
        ("--checkpoint-interval", "0s", "must be from 100ms to 1day"),
        (
            "--checkpoint-interval",
            "2days",
            "must be from 100ms to 1day",
        ),
        (
            "--idempotency-retention",
            "0s",
            "must be from 100ms to 1year",
        ),
        (
            "--idempotency-retention",
            "400days",
            "must be from 100ms to 1year",
        ),
        ("--events-replicas", "0", "0 is not in 1..=5"),
        ("--events-replicas", "7", "7 is not in 1..=5"),
        (
            "--events-max-age",
            "200years",
            "must be from 0s to 100years",
        ),
        (
            "--events-duplicate-window",
            "0s",
            "must be from 1s to 7days",
        ),
        ("--events-max-pending", "0", "0 is not in 1..=1000000000"),
        ("--replication-replicas", "0", "0 is not in 1..=5"),
        ("--replication-replicas", "6", "6 is not in 1..=5"),
        ("--lease-ttl", "0s", "must be from 500ms to 1m"),
        ("--lease-ttl", "100ms", "must be from 500ms to 1m"),
        ("--snapshot-interval", "0s", "must be from 100ms to 7days"),
        (
            "--snapshot-interval",
            "30days",
            "must be from 100ms to 7days",
        ),
        ("--shutdown-grace", "2h", "must be from 0s to 1h"),
        ("--max-group", "-1", "invalid digit"),
        (
            "--checkpoint-bytes",
            "5000000000",
            "5000000000 is not in 16384..=4294967296",
        ),
    ];

    const FREE_FORM: [&str; 11] = [
        "--data-dir",
        "--subject-prefix",
        "--admin-listen",
        "--backup-dir",
        "--admin-token-file",
        "--events",
        "--events-stream",
        "--events-retention",
        "--events-source",
        "--replication",
        "--replication-stream",
    ];

    #[test]
    fn every_numeric_and_duration_flag_refuses_values_outside_its_range() {
        let wrong = check_table(&Config::command(), &OUT_OF_RANGE, &FREE_FORM);
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
