//! The customers worker: the single authority that validates, deduplicates and stores
//! customers. Layout:
//!
//! * [`config`]: flags and environment variables.
//! * [`store`]: the sled database (record tree + email index), atomic group writes, fsync,
//!   and the startup consistency check.
//! * [`committer`]: the group-commit thread and the bounded queue in front of it.
//! * [`service`]: the NATS micro service and its request handling.
//!
//! [`Worker::start`] opens everything and returns once the service is subscribed;
//! [`Worker::run`] serves until a shutdown future resolves, then drains and closes.

pub mod committer;
pub mod config;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::Config;

use crate::service::CustomersService;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot start the NATS micro service: {0}")]
    Service(async_nats::Error),
    #[error("cannot start the committer thread: {0}")]
    Committer(std::io::Error),
}

/// A worker whose service is subscribed and ready for requests.
pub struct Worker {
    config: Config,
    client: async_nats::Client,
    service: CustomersService,
    committer: JoinHandle<()>,
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
        let (handle, committer) = committer::spawn(store, config.max_pending, config.max_group)
            .map_err(WorkerError::Committer)?;
        let service = CustomersService::start(
            &client,
            &config.subject_prefix,
            handle,
            config.max_body_bytes,
        )
        .await
        .map_err(WorkerError::Service)?;
        // Ready only once the server routes requests from other connections to us.
        customers_shared::protocol::round_trip(&client)
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
        })
    }

    /// Serves until `shutdown` resolves; then answers what was accepted, syncs and closes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.service
            .serve(shutdown, self.config.shutdown_grace)
            .await;
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
        tracing::info!("stopped");
    }
}

async fn connect(config: &Config) -> Result<async_nats::Client, WorkerError> {
    customers_shared::protocol::connect(
        "customers-worker",
        &config.nats_url,
        config.nats_connect_timeout,
    )
    .await
    .map(|connection| connection.client)
    .map_err(|source| WorkerError::Connect {
        url: config.nats_url.clone(),
        source,
    })
}
