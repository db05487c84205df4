//! The ingress's configuration: every setting is a command-line flag with an environment
//! variable and a default, so `customers-ingress --help` documents them all.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Thin HTTP front door of the customers service: forwards `POST /api/v1/customers` and the
/// reads (`GET /api/v1/customers[/{id}]`) to the worker over NATS and maps its reply to HTTP.
#[derive(Debug, Clone, Parser)]
#[command(name = "customers-ingress", version)]
pub struct Config {
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
    #[arg(long, env = "CUSTOMERS_MAX_BODY_BYTES", default_value_t = customers_shared::wire::protocol::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Requests to the worker handled at once; past this the ingress answers 503 at once.
    #[arg(long, env = "CUSTOMERS_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,

    /// How long to wait for the worker's reply before answering 504.
    #[arg(long, env = "CUSTOMERS_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How long a client may take to send a request's headers (slowloris guard). The same
    /// timer closes a keep-alive connection that stays idle this long between requests.
    #[arg(long, env = "CUSTOMERS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger is 431.
    #[arg(long, env = "CUSTOMERS_MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,

    /// Open connections allowed at once; further connections are closed at once.
    #[arg(long, env = "CUSTOMERS_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Time allowed on SIGTERM/SIGINT for in-flight requests to complete.
    #[arg(long, env = "CUSTOMERS_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl Config {
    /// The defaults, for tests and embedders: NATS at `nats_url`.
    pub fn new(nats_url: impl Into<String>) -> Self {
        let mut config = Self::parse_from(["customers-ingress"]);
        config.nats.url = nats_url.into();
        config
    }
}

impl customers_shared::runtime::cli::Process for Config {
    fn process(&self) -> &customers_shared::runtime::cli::ProcessOptions {
        &self.process
    }
}
