//! The ingress's configuration: every setting is a command-line flag with an environment
//! variable and a default, so `customers-ingress --help` documents them all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use customers_shared::runtime::flags::{count_in, duration_in, positive_rate};

use crate::keys_command::KeysCommand;
use crate::rate_limit::Policy;

/// Thin HTTP front door of the customers service: forwards `POST /api/v1/customers` and the
/// reads (`GET /api/v1/customers[/{id}]`) to the worker over NATS and maps its reply to HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "customers-ingress", version)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// How callers are authenticated: `keys` (API keys in --keys-file, and client
    /// certificates it grants) or `none` (anyone who reaches the port may read and create
    /// every customer; for local development only, and logged as such at every start).
    #[arg(long, env = "CUSTOMERS_AUTH", value_enum, default_value_t = AuthMode::Keys)]
    pub auth: AuthMode,

    /// The keys file (JSON; `customers-ingress keys --help` edits it). Required with
    /// `--auth keys`; reloaded on change and on SIGHUP.
    #[arg(long, env = "CUSTOMERS_KEYS_FILE", global = true)]
    pub keys_file: Option<PathBuf>,

    /// Sustained requests per second allowed per credential, unless the keys file sets the
    /// credential's own; with `--auth none`, per client address.
    #[arg(long, env = "CUSTOMERS_RATE_LIMIT_PER_SECOND", default_value_t = 100.0, value_parser = positive_rate(1e9))]
    pub rate_limit_per_second: f64,

    /// Requests a credential may make at once after a pause (the bucket's size).
    #[arg(long, env = "CUSTOMERS_RATE_LIMIT_BURST", default_value_t = 200, value_parser = count_in::<u32>(1, 1_000_000_000))]
    pub rate_limit_burst: u32,

    /// Requests one credential (with `--auth none`, one client address) may have in flight at
    /// once, its bodies being read included; more are 429. Keeps one caller from taking the
    /// capacity (`--max-in-flight`) that every caller shares.
    #[arg(long, env = "CUSTOMERS_MAX_IN_FLIGHT_PER_CREDENTIAL", default_value_t = 256, value_parser = count_in::<usize>(1, 1_000_000))]
    pub max_in_flight_per_credential: usize,

    /// PEM certificate chain: serve HTTPS instead of HTTP (with --tls-key). Reloaded on
    /// change and on SIGHUP.
    #[arg(
        long = "tls-cert",
        env = "CUSTOMERS_TLS_CERT",
        requires = "tls_private_key"
    )]
    pub tls_certificate: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long = "tls-key",
        env = "CUSTOMERS_TLS_KEY",
        requires = "tls_certificate"
    )]
    pub tls_private_key: Option<PathBuf>,

    /// PEM CA certificate(s): clients may authenticate with a certificate it signed (mTLS)
    /// whose subject the keys file grants; clients without one still use API keys.
    #[arg(long, env = "CUSTOMERS_TLS_CLIENT_CA", requires = "tls_certificate")]
    pub tls_client_ca: Option<PathBuf>,

    /// How often the keys file and TLS files are checked for changes.
    #[arg(long, env = "CUSTOMERS_RELOAD_INTERVAL", default_value = "1s", value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(3600)))]
    pub reload_interval: Duration,

    #[command(flatten)]
    pub nats: customers_shared::runtime::nats::NatsOptions,

    #[command(flatten)]
    pub process: customers_shared::runtime::cli::ProcessOptions,

    /// Address the HTTP server listens on.
    #[arg(long, env = "CUSTOMERS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Subject prefix: requests are sent to `{prefix}.v1.create`, `.get` and `.list`.
    #[arg(long, env = "CUSTOMERS_SUBJECT_PREFIX", default_value = customers_shared::wire::protocol::DEFAULT_SUBJECT_PREFIX)]
    pub subject_prefix: String,

    /// Largest request body accepted, in bytes; larger is 413.
    #[arg(long, env = "CUSTOMERS_MAX_BODY_BYTES", default_value_t = customers_shared::wire::protocol::DEFAULT_MAX_BODY_BYTES, value_parser = count_in::<usize>(customers_shared::wire::protocol::MIN_BODY_LIMIT, customers_shared::wire::protocol::MAX_BODY_LIMIT))]
    pub max_body_bytes: usize,

    /// How long a request body may take to arrive, in all; slower is 408 and the connection
    /// is closed. A request holds a slot of `--max-in-flight` only once its body is read.
    #[arg(long, env = "CUSTOMERS_BODY_READ_TIMEOUT", default_value = "5s", value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(600)))]
    pub body_read_timeout: Duration,

    /// Slowest average rate, in bytes per second, at which a body may arrive after its first
    /// second; a body that falls behind it (or stalls) is 408 at once.
    #[arg(long, env = "CUSTOMERS_BODY_MIN_RATE", default_value_t = 1024, value_parser = count_in::<u64>(1, 1 << 30))]
    pub body_min_rate: u64,

    /// Requests to the worker handled at once; past this the ingress answers 503 at once.
    #[arg(long, env = "CUSTOMERS_MAX_IN_FLIGHT", default_value_t = 4096, value_parser = count_in::<usize>(1, 1_000_000))]
    pub max_in_flight: usize,

    /// How long to wait for the worker's reply before answering 504.
    #[arg(long, env = "CUSTOMERS_REQUEST_TIMEOUT", default_value = "5s", value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(300)))]
    pub request_timeout: Duration,

    /// How long a client may take to send a request's headers (slowloris guard). The same
    /// timer closes a keep-alive connection that stays idle this long between requests.
    #[arg(long, env = "CUSTOMERS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(600)))]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger is 431.
    #[arg(long, env = "CUSTOMERS_MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = count_in::<u32>(8192, 1 << 20))]
    pub max_header_bytes: u32,

    /// Open connections allowed at once; further connections are closed at once.
    #[arg(long, env = "CUSTOMERS_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = count_in::<usize>(1, 1_000_000))]
    pub max_connections: usize,

    /// Time allowed on SIGTERM/SIGINT for in-flight requests to complete.
    #[arg(long, env = "CUSTOMERS_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration_in(Duration::ZERO, Duration::from_secs(3600)))]
    pub shutdown_grace: Duration,
}

/// `customers-ingress` subcommands; without one, it serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Edit the keys file: mint, revoke and list API keys, grant client certificates.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// API keys and granted client certificates.
    Keys,
    /// No authentication.
    None,
}

impl Config {
    /// The defaults, for tests and embedders: NATS at `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        let mut config = Self::parse_from(["customers-ingress"]);
        config.nats.url = nats_url.into();
        config
    }

    /// The rate limit of credentials without their own.
    pub fn default_rate_limit(&self) -> Policy {
        Policy {
            per_second: self.rate_limit_per_second,
            burst: self.rate_limit_burst,
        }
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

    /// Every numeric and duration flag of the ingress, with values outside its range.
    const OUT_OF_RANGE: [OutOfRange; 21] = [
        ("--rate-limit-per-second", "0", "must be a number above 0"),
        ("--rate-limit-per-second", "-5", "must be a number above 0"),
        ("--rate-limit-per-second", "NaN", "must be a number above 0"),
        ("--rate-limit-burst", "0", "0 is not in 1..=1000000000"),
        (
            "--max-in-flight-per-credential",
            "0",
            "0 is not in 1..=1000000",
        ),
        ("--reload-interval", "0s", "must be from 10ms to 1h"),
        ("--reload-interval", "2h", "must be from 10ms to 1h"),
        ("--max-body-bytes", "0", "0 is not in 1024..=1048576"),
        (
            "--max-body-bytes",
            "2000000",
            "2000000 is not in 1024..=1048576",
        ),
        ("--body-read-timeout", "0s", "must be from 10ms to 10m"),
        ("--body-read-timeout", "1h", "must be from 10ms to 10m"),
        ("--body-min-rate", "0", "0 is not in 1..=1073741824"),
        ("--max-in-flight", "0", "0 is not in 1..=1000000"),
        ("--request-timeout", "0s", "must be from 10ms to 5m"),
        ("--request-timeout", "1h", "must be from 10ms to 5m"),
        ("--header-read-timeout", "0s", "must be from 10ms to 10m"),
        ("--max-header-bytes", "100", "100 is not in 8192..=1048576"),
        ("--max-connections", "0", "0 is not in 1..=1000000"),
        ("--shutdown-grace", "2h", "must be from 0s to 1h"),
        ("--shutdown-grace", "soon", "expected number"),
        (
            "--rate-limit-burst",
            "5000000000",
            "5000000000 is not in 1..=1000000000",
        ),
    ];

    const FREE_FORM: [&str; 7] = [
        "--auth",
        "--keys-file",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--listen",
        "--subject-prefix",
    ];

    #[test]
    fn every_numeric_and_duration_flag_refuses_values_outside_its_range() {
        let wrong = check_table(&Config::command(), &OUT_OF_RANGE, &FREE_FORM);
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
