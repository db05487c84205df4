//! Connecting to NATS, the same way in both binaries: the connection settings as flags and
//! environment variables ([`NatsOptions`]: URL, timeout, one authentication method of token,
//! user and password, NKey seed or credentials file, TLS with a CA and a client certificate,
//! and the reply-subject prefix), reconnection policy, a live connected/disconnected view,
//! the permissions nats-server refused (it says so only in an asynchronous `-ERR`: a refused
//! subscription or publish otherwise looks like silence), and a readiness round trip.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to reach and authenticate to NATS. Secrets are best given through the environment or
/// files: command-line flags are visible to other users of the machine.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsOptions {
    /// NATS server URL(s), comma-separated (`tls://` to require TLS).
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,

    /// Timeout for the initial connection to NATS.
    #[arg(
        long = "nats-connect-timeout",
        env = "CUSTOMERS_NATS_CONNECT_TIMEOUT",
        default_value = "5s",
        value_parser = crate::runtime::flags::duration_in(Duration::from_millis(100), Duration::from_secs(300))
    )]
    pub connect_timeout: Duration,

    /// Authenticate with this token.
    #[arg(
        long = "nats-token",
        env = "NATS_TOKEN",
        hide_env_values = true,
        conflicts_with_all = ["user", "nkey_seed_file", "creds_file"]
    )]
    pub token: Option<String>,

    /// Authenticate as this user (with --nats-password).
    #[arg(
        long = "nats-user",
        env = "NATS_USER",
        requires = "password",
        conflicts_with_all = ["nkey_seed_file", "creds_file"]
    )]
    pub user: Option<String>,

    /// The user's password.
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        requires = "user"
    )]
    pub password: Option<String>,

    /// Authenticate with the NKey seed in this file.
    #[arg(
        long = "nats-nkey-seed-file",
        env = "NATS_NKEY_SEED_FILE",
        conflicts_with = "creds_file"
    )]
    pub nkey_seed_file: Option<PathBuf>,

    /// Authenticate with this credentials file (user JWT and NKey seed).
    #[arg(long = "nats-creds-file", env = "NATS_CREDS_FILE")]
    pub creds_file: Option<PathBuf>,

    /// PEM file of the CA(s) that signed the server's certificate.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate, for servers that verify clients (with --nats-tls-key).
    #[arg(long = "nats-tls-cert", env = "NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long = "nats-tls-key", env = "NATS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Prefix of this client's reply subjects. Give each role its own (and grant it only
    /// `{prefix}.>`) so that no other NATS user can subscribe to its replies.
    #[arg(
        long = "nats-inbox-prefix",
        env = "NATS_INBOX_PREFIX",
        default_value = "_INBOX"
    )]
    pub inbox_prefix: String,

    /// Refuse to talk to NATS without TLS.
    #[arg(long = "nats-tls-required", env = "NATS_TLS_REQUIRED")]
    pub tls_required: bool,
}

impl NatsOptions {
    /// The servers of `url`, a comma-separated list (a cluster's nodes): the client
    /// connects to one and fails over to the others.
    pub fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|server| !server.is_empty())
            .collect()
    }

    /// The defaults with `url`: no authentication, no TLS.
    pub fn new(url: impl Into<String>) -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            nats: NatsOptions,
        }
        let mut options = <Only as clap::Parser>::parse_from(["nats"]).nats;
        options.url = url.into();
        options
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

/// Longest wait between two reconnection attempts: after a broker outage both binaries
/// are back within this much of the broker's return.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// A NATS client and a live view of whether it is connected.
pub struct NatsConnection {
    pub client: async_nats::Client,
    /// `true` while connected; changes as soon as the client notices a disconnect.
    pub connected: tokio::sync::watch::Receiver<bool>,
    /// The latest permission nats-server refused this connection.
    pub denied: tokio::sync::watch::Receiver<Option<Denial>>,
}

/// A permission nats-server refused, as it said it (`Permissions Violation for Publish to
/// "customers.v1.create"`), and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub refused: String,
    pub at: std::time::Instant,
}

impl Denial {
    /// How recent a refusal must be to count: one that no attempt has repeated for this
    /// long may have been fixed on the server since (permissions reload without a restart).
    pub const FRESH_FOR: Duration = Duration::from_secs(30);

    /// The latest refusal, if it is recent.
    pub fn recent(denied: &tokio::sync::watch::Receiver<Option<Denial>>) -> Option<Denial> {
        denied
            .borrow()
            .clone()
            .filter(|denial| denial.at.elapsed() < Self::FRESH_FOR)
    }

    /// Whether the refusal is of a publish to `subject`.
    pub fn is_publish_to(&self, subject: &str) -> bool {
        self.refused.contains("Publish") && self.refused.contains(&format!("\"{subject}\""))
    }
}

/// async-nats's own bound on messages queued per subscription.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

/// Connects to NATS as `client_name`, logging connection events at info. Fails when no
/// server answers within the connect timeout or the server refuses the credentials; once
/// connected, the client reconnects forever, trying at least every [`MAX_RECONNECT_DELAY`].
/// At most `subscription_capacity` messages wait per subscription; past that async-nats
/// drops them (a slow consumer), which bounds the memory they hold.
pub async fn connect(
    client_name: &str,
    options: &NatsOptions,
    subscription_capacity: usize,
) -> Result<NatsConnection, NatsConnectError> {
    let (state, connected) = tokio::sync::watch::channel(false);
    let state = std::sync::Arc::new(state);
    let events = state.clone();
    let (refusals, denied) = tokio::sync::watch::channel(None);
    let drops = std::sync::atomic::AtomicU64::new(0);
    let connect_options = authenticated(async_nats::ConnectOptions::new(), options)
        .await?
        .name(client_name)
        .custom_inbox_prefix(options.inbox_prefix.as_str())
        .subscription_capacity(subscription_capacity)
        .connection_timeout(options.connect_timeout)
        .reconnect_delay_callback(|attempts| {
            (Duration::from_millis(50) * attempts as u32).min(MAX_RECONNECT_DELAY)
        })
        .event_callback(move |event| {
            // One event per dropped message (as far as async-nats's own bounded event queue
            // keeps them): a flood would otherwise log a line per message. The 1st, 2nd, 4th,
            // 8th... are logged, with the count so far.
            let mut refused = None;
            let dropped_so_far = match &event {
                async_nats::Event::Connected => {
                    events.send_replace(true);
                    None
                }
                async_nats::Event::Disconnected | async_nats::Event::Closed => {
                    events.send_replace(false);
                    None
                }
                async_nats::Event::SlowConsumer(_) => {
                    Some(drops.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
                }
                async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                    if text.to_ascii_lowercase().contains("permissions violation") =>
                {
                    refusals.send_replace(Some(Denial {
                        refused: text.clone(),
                        at: std::time::Instant::now(),
                    }));
                    refused = Some(text.clone());
                    None
                }
                _ => None,
            };
            async move {
                match dropped_so_far {
                    None if refused.is_some() => tracing::error!(
                        refused = refused.as_deref().unwrap_or_default(),
                        "nats-server refused a permission to this user: its grants (deploy/nats-authorization.conf) and --nats-inbox-prefix must allow it"
                    ),
                    None if matches!(event, async_nats::Event::ServerError(_)) => {
                        tracing::warn!(%event, "NATS server error")
                    }
                    None => tracing::info!(%event, "NATS connection event"),
                    Some(n) if n.is_power_of_two() => tracing::warn!(
                        dropped = n,
                        "a subscription's queue was full: messages dropped unread"
                    ),
                    Some(_) => {}
                }
            }
        });
    let client = connect_options
        .connect(options.servers().as_slice())
        .await?;
    // The event of this first connection may not have been handled yet.
    state.send_replace(client.connection_state() == async_nats::connection::State::Connected);
    Ok(NatsConnection {
        client,
        connected,
        denied,
    })
}

/// `connect_options` with the configured credentials and TLS settings.
async fn authenticated(
    mut connect_options: async_nats::ConnectOptions,
    options: &NatsOptions,
) -> Result<async_nats::ConnectOptions, NatsConnectError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| NatsConnectError::Read { path, source }
    };
    if let Some(token) = &options.token {
        connect_options = connect_options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&options.user, &options.password) {
        connect_options = connect_options.user_and_password(user.clone(), password.clone());
    }
    if let Some(path) = &options.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(read_error(path))?;
        connect_options = connect_options.nkey(seed.trim().to_owned());
    }
    if let Some(path) = &options.creds_file {
        connect_options = connect_options
            .credentials_file(path)
            .await
            .map_err(read_error(path))?;
    }
    if let Some(ca) = &options.tls_ca {
        connect_options = connect_options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
        connect_options = connect_options.add_client_certificate(cert.clone(), key.clone());
    }
    if options.tls_required {
        connect_options = connect_options.require_tls(true);
    }
    Ok(connect_options)
}

/// Returns once the server has processed everything `client` sent before (subscriptions
/// included): a message to a fresh inbox, sent after them on the same connection, has come
/// back. `Client::flush` only empties the local write buffer, which is not enough to know
/// that requests from other connections will find our subscriptions.
/// Fails after [`ROUND_TRIP_TIMEOUT`] rather than wait for ever on a connection whose inbox
/// the server does not let it subscribe to.
pub async fn round_trip(client: &async_nats::Client) -> Result<(), async_nats::Error> {
    use futures_util::StreamExt;
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next())
        .await
        .map_err(
            |_| "no echo through this connection's own inbox (may its NATS user subscribe to it?)",
        )?
        .ok_or("the connection closed during a round trip")?;
    Ok(())
}

/// The longest a [`round_trip`] waits.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsOptions,
    }

    #[test]
    fn one_authentication_method_at_a_time() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["test"], args].concat());
        assert!(parse(&["--nats-user", "u", "--nats-password", "p"]).is_ok());
        assert!(parse(&["--nats-token", "t", "--nats-tls-ca", "ca.pem"]).is_ok());
        assert!(parse(&["--nats-user", "u"]).is_err(), "password missing");
        assert!(
            parse(&[
                "--nats-token",
                "t",
                "--nats-user",
                "u",
                "--nats-password",
                "p"
            ])
            .is_err()
        );
        assert!(parse(&["--nats-token", "t", "--nats-creds-file", "x.creds"]).is_err());
        assert!(parse(&["--nats-tls-cert", "c.pem"]).is_err(), "key missing");
        assert_eq!(NatsOptions::new("nats://h:1").url, "nats://h:1");
        assert_eq!(
            NatsOptions::new("nats://a:1, nats://b:2,").servers(),
            ["nats://a:1", "nats://b:2"]
        );
    }
}
