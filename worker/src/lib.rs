//! The customers worker: the single authority that validates, deduplicates and stores
//! customers. Layout:
//!
//! * [`config`]: flags and environment variables.
//! * [`store`]: the sled database (record tree, email index, idempotency records), atomic
//!   group writes, fsync, reads that hide what is not yet durable, and the startup check.
//! * [`committer`]: the group-commit thread and the bounded queue in front of it.
//! * [`idempotency`]: `Idempotency-Key` claims, stored replies and their background purge.
//! * [`reply`]: an answer (status, body, headers), as sent and as stored for replays.
//! * [`service`]: the NATS micro service, its endpoints and request handling.
//! * [`metrics`] and [`admin`]: Prometheus metrics and the optional admin HTTP listener.
//!
//! [`Worker::start`] opens everything and returns once the service is subscribed;
//! [`Worker::run`] serves until a shutdown future resolves, then drains and closes.

pub mod admin;
pub mod committer;
pub mod config;
pub mod idempotency;
pub mod metrics;
pub mod reply;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::Config;

use crate::idempotency::Claims;
use crate::service::{Context, CustomersService};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: customers_shared::nats::NatsConnectError,
    },
    #[error("cannot start the NATS micro service: {0}")]
    Service(async_nats::Error),
    #[error("cannot start the committer thread: {0}")]
    Committer(std::io::Error),
    #[error("cannot listen on {addr} (admin): {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A worker whose service is subscribed and ready for requests.
pub struct Worker {
    config: Config,
    client: async_nats::Client,
    service: CustomersService,
    committer: JoinHandle<()>,
    purge: tokio::task::JoinHandle<()>,
    admin: Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>,
}

impl Worker {
    /// Connects to NATS, opens and checks the database and registers the service.
    pub async fn start(config: Config) -> Result<Self, WorkerError> {
        let client = connect(&config).await?;
        let store = Arc::new(Store::open(&config.data_dir, config.cache_capacity_bytes)?);
        let report = store.check_and_repair()?;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            records = report.records,
            index_entries_added = report.index_entries_added,
            index_entries_removed = report.index_entries_removed,
            conflicting_records = report.conflicting_records,
            size_on_disk = store.size_on_disk()?,
            "database opened and checked"
        );
        if config.idempotency_retention < std::time::Duration::from_secs(24 * 3600) {
            tracing::warn!(
                retention = %humantime::format_duration(config.idempotency_retention),
                "idempotency keys are kept for less than the 24 h the contract promises"
            );
        }
        let metrics = Arc::new(metrics::Metrics::default());
        let (handle, committer) = committer::spawn(
            store.clone(),
            metrics.clone(),
            config.max_pending,
            config.max_group,
        )
        .map_err(WorkerError::Committer)?;
        let admin = match config.admin_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| WorkerError::AdminBind { addr, source })?;
                let addr = listener.local_addr().unwrap_or(addr);
                let admin = admin::Admin {
                    metrics: metrics.clone(),
                    store: Arc::downgrade(&store),
                    queue: handle.probe(),
                    client: client.clone(),
                };
                tracing::info!(%addr, "admin listening");
                let task = tokio::spawn(admin::run(listener, admin));
                Some((addr, task))
            }
            None => None,
        };
        let purge = tokio::spawn(idempotency::purge_expired_forever(
            store.clone(),
            config.idempotency_retention,
        ));
        let context = Context {
            store,
            committer: handle,
            claims: Arc::new(Claims::default()),
            max_body_bytes: config.max_body_bytes,
            idempotency_retention: config.idempotency_retention,
            metrics,
        };
        let service = CustomersService::start(&client, &config.subject_prefix, context)
            .await
            .map_err(WorkerError::Service)?;
        // Ready only once the server routes requests from other connections to us.
        customers_shared::nats::round_trip(&client)
            .await
            .map_err(WorkerError::Service)?;
        tracing::info!(
            subject = %customers_shared::protocol::create_subject(&config.subject_prefix),
            "serving"
        );
        Ok(Self {
            config,
            client,
            service,
            committer,
            purge,
            admin,
        })
    }

    /// The admin listener's address, when `--admin-listen` is set.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Serves until `shutdown` resolves; then answers what was accepted, syncs and closes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.service
            .serve(shutdown, self.config.shutdown_grace)
            .await;
        // The purge task holds the store: wait until it is gone, so that the database is
        // closed (and its lock released) when `run` returns.
        self.purge.abort();
        let _ = self.purge.await;
        // Every commit handle is gone with the service: the committer drains and stops.
        let committer = self.committer;
        if tokio::task::spawn_blocking(move || committer.join())
            .await
            .is_err()
        {
            tracing::error!("the committer thread panicked");
        }
        // With the broker gone, a flush would wait for a reconnect that may never come.
        match tokio::time::timeout(self.config.shutdown_grace, self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not flush the last replies to NATS"),
            Err(_) => tracing::warn!("NATS unreachable; the last replies may not have been sent"),
        }
        if let Some((_, task)) = self.admin {
            task.abort();
        }
        tracing::info!("stopped");
    }
}

async fn connect(config: &Config) -> Result<async_nats::Client, WorkerError> {
    customers_shared::nats::connect("customers-worker", &config.nats)
        .await
        .map(|connection| connection.client)
        .map_err(|source| WorkerError::Connect {
            url: config.nats.url.clone(),
            source,
        })
}
