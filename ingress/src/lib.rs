//! The customers ingress: a thin hyper 1.x server in front of the worker. Layout:
//!
//! * [`config`]: flags and environment variables; [`keys_command`]: the `keys` subcommand.
//! * [`server`]: accept loop, TLS handshake ([`tls`]), connection settings and graceful
//!   shutdown.
//! * [`routes`]: routing, authentication and scopes ([`auth`]), rate limits
//!   ([`rate_limit`]), method, content type, body limit and pace ([`body`]) and request id;
//!   the paths more than one module names are in [`paths`].
//! * [`reload`]: the keys file and TLS files read again on change or SIGHUP.
//! * [`worker_client`]: the NATS request to the worker and the classification of its reply.
//! * [`metrics`]: the Prometheus metrics served at `/metrics`.
//! * [`response`]: the one place that turns errors and worker replies into HTTP responses.

pub mod auth;
mod body;
pub mod config;
pub mod keys_command;
mod metrics;
mod paths;
pub mod rate_limit;
mod reload;
mod response;
mod routes;
mod server;
mod tls;
pub mod worker_client;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::auth::keys_file::KeysFileError;
use crate::body::BodyPace;
use crate::config::AuthMode;
use crate::routes::{App, RequestLimits};
use crate::server::ServerSettings;
use crate::tls::{Tls, TlsError, TlsFiles};
use crate::worker_client::WorkerClient;
use customers_shared::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: customers_shared::runtime::nats::NatsConnectError,
    },
    #[error("cannot subscribe to the reply inbox: {0}")]
    Subscribe(async_nats::SubscribeError),
    #[error("{0}")]
    Refused(ApiError),
    #[error(
        "no keys file: pass --keys-file (mint one with `customers-ingress keys mint`), or --auth none to serve without authentication"
    )]
    NoKeysFile,
    #[error(transparent)]
    Keys(#[from] KeysFileError),
    #[error("--rate-limit-per-second / --rate-limit-burst: {0}")]
    RateLimit(&'static str),
    #[error(
        "--auth none serves without authentication, so --keys-file would be ignored: give one or the other"
    )]
    KeysFileWithoutAuth,
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot watch for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// An ingress connected to NATS, ready to serve a listener.
pub struct Ingress {
    app: App,
    tls: Option<Arc<Tls>>,
    reloader: Option<reload::Reloader>,
    settings: ServerSettings,
}

impl Ingress {
    /// Loads the keys file and TLS files (refusing to start without valid ones), then
    /// connects to NATS.
    pub async fn connect(config: &Config) -> Result<Self, IngressError> {
        let default_rate_limit = config.default_rate_limit();
        default_rate_limit
            .check()
            .map_err(IngressError::RateLimit)?;
        let authenticator = Arc::new(match config.auth {
            AuthMode::Keys => {
                let path = config.keys_file.as_ref().ok_or(IngressError::NoKeysFile)?;
                Authenticator::with_keys_file(path, default_rate_limit)?
            }
            AuthMode::None if config.keys_file.is_some() => {
                return Err(IngressError::KeysFileWithoutAuth);
            }
            AuthMode::None => {
                tracing::warn!(
                    "authentication is off (--auth none): anyone who reaches this port may read and create every customer"
                );
                Authenticator::open(default_rate_limit)
            }
        });
        let tls = match (&config.tls_certificate, &config.tls_private_key) {
            (Some(certificate), Some(key)) => Some(Arc::new(Tls::load(TlsFiles {
                certificate: certificate.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca.clone(),
            })?)),
            _ => None,
        };
        let connection = customers_shared::runtime::nats::connect(
            "customers-ingress",
            &config.nats,
            customers_shared::runtime::nats::DEFAULT_SUBSCRIPTION_CAPACITY,
        )
        .await
        .map_err(|source| IngressError::Connect {
            url: config.nats.url.clone(),
            source,
        })?;
        let worker =
            WorkerClient::start(connection, &config.subject_prefix, config.request_timeout)
                .await
                .map_err(IngressError::Subscribe)?;
        worker
            .check_permissions()
            .await
            .map_err(IngressError::Refused)?;
        let app = App::new(worker, authenticator.clone(), request_limits(config));
        app.metrics().set_credentials(
            authenticator.key_set().active(),
            authenticator.credential_ids().iter().map(|id| &**id),
        );
        let reloader = reload::Reloader::new(
            authenticator,
            tls.clone(),
            app.metrics().clone(),
            config.reload_interval,
        )
        .map_err(IngressError::Signal)?;
        Ok(Self {
            app,
            tls,
            reloader,
            settings: ServerSettings {
                header_read_timeout: config.header_read_timeout,
                max_header_bytes: config.max_header_bytes as usize,
                max_connections: config.max_connections,
                shutdown_grace: config.shutdown_grace,
            },
        })
    }

    /// Binds the configured address.
    pub async fn bind(config: &Config) -> Result<TcpListener, IngressError> {
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| IngressError::Bind {
                addr: config.listen,
                source,
            })
    }

    /// Serves `listener` until `shutdown` resolves, then drains in-flight requests. The keys
    /// file and TLS files are reloaded on change and on SIGHUP meanwhile.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let reloader = self.reloader.map(reload::Reloader::spawn);
        server::run(listener, self.app, self.tls, self.settings, shutdown).await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        tracing::info!("stopped");
    }
}

/// What one request may take, as `config` sets it.
fn request_limits(config: &Config) -> RequestLimits {
    RequestLimits {
        max_body_bytes: config.max_body_bytes,
        body_pace: BodyPace {
            total: config.body_read_timeout,
            min_rate: config.body_min_rate,
        },
        max_in_flight: config.max_in_flight,
        max_in_flight_per_credential: config.max_in_flight_per_credential,
    }
}
