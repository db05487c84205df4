//! The customers ingress: a thin hyper 1.x server in front of the worker. Layout:
//!
//! * [`config`]: flags and environment variables.
//! * [`server`]: accept loop, connection settings and graceful shutdown.
//! * [`routes`]: routing, method, content type, body limit and request id.
//! * [`worker_client`]: the NATS request to the worker and the classification of its reply.
//! * [`metrics`]: the Prometheus metrics served at `/metrics`.
//! * [`response`]: the one place that turns errors and worker replies into HTTP responses.

pub mod config;
pub mod metrics;
pub mod response;
pub mod routes;
pub mod server;
pub mod worker_client;

use std::future::Future;

pub use config::Config;
use tokio::net::TcpListener;

use crate::routes::App;
use crate::server::ServerSettings;
use crate::worker_client::WorkerClient;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: customers_shared::runtime::nats::NatsConnectError,
    },
    #[error("cannot subscribe to the reply inbox: {0}")]
    Subscribe(async_nats::SubscribeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// An ingress connected to NATS, ready to serve a listener.
pub struct Ingress {
    app: App,
    settings: ServerSettings,
}

impl Ingress {
    pub async fn connect(config: &Config) -> Result<Self, IngressError> {
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
        Ok(Self {
            app: App::new(worker, config.max_body_bytes, config.max_in_flight),
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

    /// Serves `listener` until `shutdown` resolves, then drains in-flight requests.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        server::run(listener, self.app, self.settings, shutdown).await;
        tracing::info!("stopped");
    }
}
