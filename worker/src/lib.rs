//! The customers worker: the single authority that validates, deduplicates and stores
//! customers. Layout:
//!
//! * [`config`]: flags and environment variables.
//! * [`journal`]: the write-ahead journal, where a group of creates becomes durable.
//! * [`store`]: the sled database: opening and recovery (journal replay), applying journaled
//!   groups, checkpoints, reads.
//! * [`committer`]: the group-commit thread and the bounded queue in front of it;
//!   [`checkpointer`]: the thread that checkpoints sled and trims the journal; [`ids`]: new
//!   customer ids in commit order; [`known_emails`]: which emails need an index lookup.
//! * [`health`]: fail-stop after a storage error or a panic of a worker thread.
//! * [`idempotency`]: `Idempotency-Key` claims, stored replies and their background purge.
//! * [`outbox`] and [`relay`]: `customer.created` events, written with their customer and
//!   published to JetStream after it (the transactional outbox).
//! * [`reply`]: an answer (status, body, headers), as sent and as stored for replays.
//! * [`service`]: the NATS micro service, its endpoints and request handling.
//! * [`replication`]: replicated mode: the log, the lease, following and taking over.
//! * [`metrics`] and [`admin`]: Prometheus metrics and the optional admin HTTP listener
//!   (which also takes online backups); [`snapshot`]: the backup format, written between two
//!   groups, and restore.
//!
//! [`Worker::start`] opens everything and returns once the service is subscribed;
//! [`Worker::run`] serves until a shutdown future resolves or the worker fails, then drains
//! and closes, and says which.

/// A failpoint of the `fail` crate when the `failpoints` feature is on (the system tests
/// build the worker with it and set `FAILPOINTS`); nothing at all otherwise.
macro_rules! failpoint {
    ($name:literal, $action:expr) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, $action);
    };
}

pub mod admin;
pub mod backup_command;
pub mod checkpointer;
pub mod committer;
pub mod config;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod journal;
pub mod known_emails;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod replication;
pub mod reply;
pub mod service;
pub mod snapshot;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::Config;
pub use health::Failure;

use crate::health::Health;
use crate::idempotency::Claims;
use crate::replication::lease::Lease;
use crate::replication::log::Log;
use crate::replication::snapshots::Snapshots;
use crate::replication::{ReplicationError, Role};
use crate::service::{Context, CustomersService};
use crate::store::{Opened, Store, StoreError};
use customers_shared::runtime::nats::Denial;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: customers_shared::runtime::nats::NatsConnectError,
    },
    #[error(transparent)]
    Events(#[from] relay::EventsError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(
        "{flag} {replicas} keeps a copy on each of {replicas} NATS nodes, but the server at {url} is not part of a cluster: run a NATS cluster (deploy/nats-server-cluster.conf, scripts/run-cluster) or pass {flag} 1"
    )]
    NotClustered {
        flag: &'static str,
        replicas: usize,
        url: String,
    },
    #[error("cannot take over as the primary: {0}")]
    Promotion(String),
    #[error("cannot start the NATS micro service: {0}")]
    Service(async_nats::Error),
    #[error("cannot start the committer thread: {0}")]
    Committer(std::io::Error),
    #[error(transparent)]
    Backups(#[from] admin::BackupPolicyError),
    /// A flag that would have no effect with the others given.
    #[error("{0}")]
    Unused(&'static str),
    #[error(
        "nats-server refused this worker's NATS user a permission ({refused}){during}; its grants (deploy/nats-authorization.conf) and --nats-inbox-prefix must allow it"
    )]
    Refused { refused: String, during: String },
    #[error("cannot listen on {addr} (admin): {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// A failpoint's crash: the process ends at once, as on a power cut or `kill -9`, without
/// unwinding, flushing or answering anyone.
#[cfg(feature = "failpoints")]
fn crash() -> ! {
    std::process::abort()
}

/// A worker whose service is subscribed and ready for requests.
pub struct Worker {
    config: Config,
    client: async_nats::Client,
    /// The latest permission nats-server refused (a take-over registers new endpoints).
    denied: watch::Receiver<Option<Denial>>,
    service: CustomersService,
    context: Arc<Context>,
    committer: JoinHandle<()>,
    health: Health,
    purge: tokio::task::JoinHandle<()>,
    relay: Option<relay::RelayThread>,
    admin: Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>,
    /// Replicated mode: what a standby needs to follow the log and take over.
    standby: Option<Standby>,
    /// Replicated mode, the primary: the periodic snapshot.
    snapshotting: Option<tokio::task::JoinHandle<()>>,
    role: tokio::sync::watch::Sender<Option<Role>>,
}

/// A standby's parts (`replication`).
struct Standby {
    log: Arc<Log>,
    lease: Arc<Lease>,
    snapshots: Arc<Snapshots>,
    applied: tokio::sync::watch::Receiver<u64>,
    /// How far this instance applied the log against how far it goes: its reads' barrier, as
    /// a standby and after it takes over.
    barrier: Arc<replication::ReadBarrier>,
    following: (
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ),
}

impl Worker {
    /// Connects to NATS, opens the database (replaying the journal) and registers the
    /// service; replicated, as a standby that follows the log.
    pub async fn start(config: Config) -> Result<Self, WorkerError> {
        // Before anything else: a mistaken path is a configuration error, whatever NATS says.
        if config.data_dir.exists() && !config.data_dir.is_dir() {
            return Err(StoreError::NotADirectory {
                dir: config.data_dir.clone(),
            }
            .into());
        }
        let backups = match (&config.backup_dir, &config.admin_token_file) {
            (Some(_), _) if config.admin_listen.is_none() => {
                return Err(WorkerError::Unused(
                    "--backup-dir: backups are asked for on the admin listener; set --admin-listen too",
                ));
            }
            (None, Some(_)) => {
                return Err(WorkerError::Unused(
                    "--admin-token-file guards backups, which are off: set --backup-dir too",
                ));
            }
            (Some(dir), token_file) => Some(Arc::new(admin::BackupPolicy::new(
                dir,
                token_file.as_deref(),
            )?)),
            (None, None) => None,
        };
        let connection = connect(&config).await?;
        let mut denied = connection.denied;
        // Every permission a start uses is needed: a refusal ends it at once, rather than
        // after a JetStream request or a round trip whose reply the server drops times out.
        tokio::select! {
            started = Self::start_connected(config, connection.client, denied.clone(), backups) => started,
            Ok(refused) = denied.wait_for(Option::is_some) => Err(WorkerError::Refused {
                refused: refused.as_ref().map(|d| d.refused.clone()).unwrap_or_default(),
                during: " while starting".into(),
            }),
        }
    }

    async fn start_connected(
        config: Config,
        client: async_nats::Client,
        denied: watch::Receiver<Option<Denial>>,
        backups: Option<Arc<admin::BackupPolicy>>,
    ) -> Result<Self, WorkerError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        // A cluster elects its JetStream leader a moment after its nodes are up, and the
        // workers may start in that moment: replicated, the set-up is retried for a while.
        let patience = match config.replication.mode {
            config::ReplicationMode::Jetstream => std::time::Duration::from_secs(30),
            config::ReplicationMode::None => std::time::Duration::ZERO,
        };
        // A copy per node: more replicas than a single server can hold is a configuration
        // error, not a cluster still electing its leader.
        let not_clustered = client.server_info().cluster.is_none();
        let replicated = config.replication.mode == config::ReplicationMode::Jetstream;
        for (flag, replicas, wanted) in [
            (
                "--events-replicas",
                config.events.replicas,
                config.events.mode == config::EventsMode::On,
            ),
            (
                "--replication-replicas",
                config.replication.replicas,
                replicated,
            ),
        ] {
            if wanted && replicas > 1 && not_clustered {
                return Err(WorkerError::NotClustered {
                    flag,
                    replicas,
                    url: config.nats.url.clone(),
                });
            }
        }
        if config.events.mode == config::EventsMode::On {
            retrying(patience, || {
                relay::ensure_stream(&jetstream, &config.events, &config.subject_prefix)
            })
            .await?;
        }
        let replicated = match config.replication.mode {
            config::ReplicationMode::Jetstream => {
                Some(retrying(patience, || replication_setup(&config, &jetstream)).await?)
            }
            config::ReplicationMode::None => None,
        };
        let mut opened = open_store(&config).await?;
        let mut started_from_snapshot = None;
        if let Some(parts) = &replicated {
            let applied = opened.store.applied_log_sequence()?;
            if replication::snapshots::behind(&parts.log, applied).await? {
                if applied == 0 && opened.store.newest_id()?.is_some() {
                    return Err(ReplicationError::NotReplicatedData.into());
                }
                tracing::warn!(
                    applied,
                    "the log was trimmed past this data directory: starting from the stored snapshot"
                );
                drop(opened);
                let summary = parts
                    .snapshots
                    .rebuild(&parts.log, &config.data_dir, config.cache_capacity_bytes)
                    .await?;
                tracing::info!(
                    log_sequence = summary.log_sequence,
                    entries = summary.puts,
                    bytes = summary.bytes,
                    "started from the snapshot"
                );
                started_from_snapshot = Some(summary.log_sequence);
                opened = open_store(&config).await?;
            }
        }
        let OpenedStore {
            store,
            recovery,
            prepared,
            prepare_time,
        } = opened;
        let replayed = &recovery.replayed;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            replayed_segments = replayed.segments,
            replayed_records = replayed.records,
            replayed_puts = replayed.puts,
            replayed_bytes = replayed.bytes,
            torn_tail_bytes = replayed.torn_tail_bytes,
            recovery_ms = recovery.elapsed.as_millis() as u64,
            known_emails = prepared.known_emails().len(),
            email_filter_bytes = prepared.known_emails().bytes(),
            email_scan_ms = prepare_time.as_millis() as u64,
            pending_events = prepared.outbox().map(|outbox| outbox.pending()),
            size_on_disk = store.size_on_disk()?,
            "database opened and journal replayed"
        );
        if config.idempotency_retention < std::time::Duration::from_secs(24 * 3600) {
            tracing::warn!(
                retention = %humantime::format_duration(config.idempotency_retention),
                "idempotency keys are kept for less than the 24 h the contract promises"
            );
        }
        let metrics = Arc::new(metrics::Metrics::default());
        metrics.recovered(recovery.elapsed);
        let applied_at_start = store.applied_log_sequence()?;
        if replicated.is_some() {
            metrics.log_applied(applied_at_start);
        }
        if let Some(sequence) = started_from_snapshot {
            metrics.started_from_snapshot(sequence);
        }
        let store = Arc::new(store);
        let health = Health::default();
        let (applied_tx, applied) = tokio::sync::watch::channel(applied_at_start);
        let prepared = match &replicated {
            Some(parts) => prepared.replicated(committer::Replicated {
                log: parts.log.clone(),
                runtime: tokio::runtime::Handle::current(),
                applied: applied_tx,
                instance: parts.instance.clone(),
            }),
            None => prepared,
        };
        // A standby has no outbox: only the primary publishes events.
        let outbox = prepared.outbox();
        let (handle, committer) = committer::spawn(
            store.clone(),
            prepared,
            metrics.clone(),
            health.clone(),
            config.commit_limits(),
        )
        .map_err(WorkerError::Committer)?;
        let role = tokio::sync::watch::Sender::new(replicated.as_ref().map(|_| Role::Standby));
        metrics.role(*role.borrow());
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
                    outbox: outbox.clone(),
                    client: client.clone(),
                    health: health.clone(),
                    role: role.subscribe(),
                    backups: backups.clone(),
                };
                tracing::info!(%addr, "admin listening");
                let task = tokio::spawn(admin::run(listener, admin));
                Some((addr, task))
            }
            None => None,
        };
        let relay = match outbox {
            Some(outbox) => Some(start_relay(
                &config, &store, outbox, &handle, &metrics, &health,
            )?),
            None => None,
        };
        let purge = tokio::spawn(idempotency::purge_expired_forever(
            store.clone(),
            config.idempotency_retention,
        ));
        let standby = replicated.map(|parts| {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let follower = tokio::spawn(replication::follow(
                parts.log.clone(),
                applied_at_start + 1,
                handle.clone(),
                stopped,
            ));
            Standby {
                barrier: Arc::new(replication::ReadBarrier {
                    log: parts.log.clone(),
                    applied: applied.clone(),
                }),
                log: parts.log,
                lease: parts.lease,
                snapshots: parts.snapshots,
                applied: applied.clone(),
                following: (stop, follower),
            }
        });
        let context = Arc::new(Context {
            store,
            committer: handle,
            claims: Arc::new(Claims::default()),
            client: client.clone(),
            max_body_bytes: config.max_body_bytes,
            max_in_flight: config.max_in_flight.max(1),
            idempotency_retention: config.idempotency_retention,
            metrics,
            reads: standby
                .as_ref()
                .map_or(replication::ReadGate::Single, |standby| {
                    replication::ReadGate::Standby(standby.barrier.clone())
                }),
        });
        let current_role = *role.borrow();
        let service = serve_as(&client, &denied, &config, context.clone(), current_role).await?;
        Ok(Self {
            config,
            client,
            denied,
            service,
            context,
            committer,
            health,
            purge,
            relay,
            admin,
            standby,
            snapshotting: None,
            role,
        })
    }

    /// The admin listener's address, when `--admin-listen` is set.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Serves until `shutdown` resolves or the worker fails; then answers what was accepted,
    /// checkpoints (after a clean stop) and closes. Replicated, a standby serves reads until
    /// it takes over, then serves as the primary. Returns the failure, if there was one: the
    /// process should then exit non-zero.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Failure> {
        let health = self.health.clone();
        tokio::pin!(shutdown);
        let mut primacy = None;
        if let Some(standby) = self.standby.take() {
            let snapshots = standby.snapshots.clone();
            let log = standby.log.clone();
            let barrier = standby.barrier.clone();
            let taking_over = replication::take_over(
                standby.lease,
                standby.log,
                standby.applied,
                standby.following,
                health.clone(),
            );
            tokio::pin!(taking_over);
            let mut took_over = None;
            let stop = async {
                tokio::select! {
                    () = &mut shutdown => {}
                    failure = health.failed() => {
                        tracing::error!(%failure, "stopping the service after a failure");
                    }
                    promoted = &mut taking_over => took_over = Some(promoted),
                }
            };
            self.service.serve(stop, self.config.shutdown_grace).await;
            if let Some(promoted) = took_over {
                match self
                    .become_primary(&promoted, snapshots, log, barrier)
                    .await
                {
                    Ok(()) => primacy = Some(promoted),
                    Err(e) => {
                        health.fail(Failure::fenced(format!("could not take over: {e}")));
                        promoted.renewing.abort();
                    }
                }
            }
        }
        if !health.is_failed() && (primacy.is_some() || self.role.borrow().is_none()) {
            let stop = async {
                tokio::select! {
                    () = &mut shutdown => {}
                    failure = health.failed() => {
                        tracing::error!(%failure, "stopping the service after a failure");
                    }
                }
            };
            self.service.serve(stop, self.config.shutdown_grace).await;
        }
        // A snapshot being stored is abandoned (the next primary takes one); the one stored
        // before stays in force.
        if let Some(snapshotting) = self.snapshotting.take() {
            snapshotting.abort();
        }
        // The relay holds a commit handle: it stops (recording how far it got) before the
        // committer can drain. Events it did not publish wait for the next start.
        if let Some(relay) = self.relay.take() {
            relay.stop().await;
        }
        // The purge task holds the store: wait until it is gone, so that the database is
        // closed (and its lock released) when `run` returns.
        self.purge.abort();
        let _ = (&mut self.purge).await;
        // Every commit handle is gone with the service: the committer drains, checkpoints
        // and stops (or has stopped already, after a failure).
        drop(self.service);
        drop(self.context);
        let committer = self.committer;
        match tokio::task::spawn_blocking(move || committer.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                self.health.fail(Failure::panic(format!(
                    "the committer thread panicked: {message}"
                )));
            }
            Err(e) => self
                .health
                .fail(Failure::panic(format!("joining the committer failed: {e}"))),
        }
        // A clean stop hands the lease on at once rather than after it expires.
        if let Some(promoted) = primacy {
            promoted.renewing.abort();
            if !self.health.is_failed() {
                promoted.lease.release(&promoted.revision).await;
            }
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
        match self.health.failure() {
            Some(failure) => {
                tracing::error!(%failure, exit_code = failure.exit_code(), "stopped after a failure");
                Err(failure)
            }
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }

    /// A standby that holds the lease and applied the log: the committer commits from now on,
    /// the relay publishes the events, and the service takes creates.
    async fn become_primary(
        &mut self,
        promoted: &replication::Promoted,
        snapshots: Arc<Snapshots>,
        log: Arc<Log>,
        barrier: Arc<replication::ReadBarrier>,
    ) -> Result<(), WorkerError> {
        let context = &self.context;
        let outbox = match self.config.events.max_pending() {
            Some(max_pending) => {
                let store = context.store.clone();
                let outbox = tokio::task::spawn_blocking(move || {
                    committer::Prepared::outbox_for(&store, max_pending)
                })
                .await
                .expect("reading the outbox does not panic")?;
                Some(Arc::new(outbox))
            }
            None => None,
        };
        context
            .committer
            .commit(committer::Write::Promote {
                expected_last: promoted.took_over_at,
                lease: promoted.clock.clone(),
                outbox: outbox.clone(),
            })
            .await
            .map_err(|e| WorkerError::Promotion(e.to_string()))?;
        if let Some(outbox) = outbox {
            self.relay = Some(start_relay(
                &self.config,
                &context.store,
                outbox,
                &context.committer,
                &context.metrics,
                &self.health,
            )?);
        }
        let primary_context = Arc::new(Context {
            reads: replication::ReadGate::Primary {
                lease: promoted.clock.clone(),
                barrier,
            },
            ..Context::clone(context)
        });
        self.service = serve_as(
            &self.client,
            &self.denied,
            &self.config,
            primary_context.clone(),
            Some(Role::Primary),
        )
        .await?;
        self.snapshotting = Some(tokio::spawn(
            replication::snapshots::SnapshotTask {
                snapshots,
                log,
                committer: context.committer.probe(),
                metrics: context.metrics.clone(),
                scratch: self.config.data_dir.join(SNAPSHOT_SCRATCH),
                interval: self.config.replication.snapshot_interval,
            }
            .run(),
        ));
        // Announced as the primary only once creates reach it.
        self.role.send_replace(Some(Role::Primary));
        primary_context.metrics.role(Some(Role::Primary));
        self.context = primary_context;
        tracing::info!(
            log_sequence = promoted.took_over_at,
            "took over as the primary"
        );
        Ok(())
    }
}

/// `attempt` until it succeeds or `patience` has passed (then its last error).
async fn retrying<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    patience: std::time::Duration,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match attempt().await {
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "JetStream not ready yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            outcome => return outcome,
        }
    }
}

/// Where the primary writes a snapshot before storing it (in the data directory: on the
/// volume that has room for the database).
const SNAPSHOT_SCRATCH: &str = "snapshot.partial";

/// Replicated mode's parts, shared by every instance.
struct ReplicationParts {
    log: Arc<Log>,
    lease: Arc<Lease>,
    snapshots: Arc<Snapshots>,
    /// This instance's name (in the lease and in the ids of its appends).
    instance: String,
}

/// Replicated mode's log, lease and snapshot bucket (made when missing).
async fn replication_setup(
    config: &Config,
    jetstream: &async_nats::jetstream::Context,
) -> Result<ReplicationParts, WorkerError> {
    let options = &config.replication;
    let instance = uuid::Uuid::now_v7().simple().to_string();
    let log = Log::ensure(
        jetstream.clone(),
        &options.stream,
        customers_shared::wire::protocol::subject(&config.subject_prefix, "log"),
        options.replicas,
    )
    .await?;
    let lease = Lease::ensure(
        jetstream,
        &format!("{}_LEASE", options.stream),
        options.lease_ttl,
        options.replicas,
        instance.clone(),
    )
    .await?;
    let snapshots = Snapshots::ensure(
        jetstream,
        &format!("{}_SNAPSHOTS", options.stream),
        options.replicas,
    )
    .await?;
    tracing::info!(%instance, stream = %options.stream, lease_ttl_ms = lease.ttl().as_millis() as u64, "replicated mode");
    Ok(ReplicationParts {
        log: Arc::new(log),
        lease: Arc::new(lease),
        snapshots: Arc::new(snapshots),
        instance,
    })
}

/// The database with its journal replayed, and what the committer starts from.
struct OpenedStore {
    store: Store,
    recovery: store::Recovery,
    prepared: committer::Prepared,
    /// How long reading the emails (and the outbox) took.
    prepare_time: std::time::Duration,
}

async fn open_store(config: &Config) -> Result<OpenedStore, StoreError> {
    let data_dir = config.data_dir.clone();
    let cache = config.cache_capacity_bytes;
    let max_pending_events = config.events.max_pending();
    tokio::task::spawn_blocking(move || {
        let Opened {
            store,
            journal,
            recovery,
        } = Store::open(&data_dir, cache)?;
        let started = std::time::Instant::now();
        let prepared = committer::Prepared::new(
            &store,
            (journal, recovery.records.clone()),
            max_pending_events,
        )?;
        Ok(OpenedStore {
            store,
            recovery,
            prepared,
            prepare_time: started.elapsed(),
        })
    })
    .await
    .expect("opening the store does not panic")
}

fn start_relay(
    config: &Config,
    store: &Arc<Store>,
    outbox: Arc<outbox::Outbox>,
    committer: &committer::CommitHandle,
    metrics: &Arc<metrics::Metrics>,
    health: &Health,
) -> Result<relay::RelayThread, WorkerError> {
    Ok(relay::RelayThread::start(
        relay::RelayParts {
            store: store.clone(),
            outbox,
            subject: customers_shared::wire::event::created_subject(&config.subject_prefix).into(),
            encoder: customers_shared::wire::event::CreatedEventEncoder::new(&config.events.source),
            committer: committer.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        },
        &config.nats,
    )?)
}

/// Registers the service for `role` and waits until the server routes requests to it.
async fn serve_as(
    client: &async_nats::Client,
    denied: &watch::Receiver<Option<Denial>>,
    config: &Config,
    context: Arc<Context>,
    role: Option<Role>,
) -> Result<CustomersService, WorkerError> {
    let service = CustomersService::start(client, &config.subject_prefix, context, role)
        .await
        .map_err(WorkerError::Service)?;
    // Ready only once the server routes requests from other connections to us; by then it
    // has said so if it refused one of the subscriptions.
    customers_shared::runtime::nats::round_trip(client)
        .await
        .map_err(WorkerError::Service)?;
    if let Some(denial) = Denial::recent(denied) {
        return Err(WorkerError::Refused {
            refused: denial.refused,
            during: String::new(),
        });
    }
    tracing::info!(
        subject = %customers_shared::wire::protocol::create_subject(&config.subject_prefix),
        role = role.map_or("single", Role::name),
        "serving"
    );
    Ok(service)
}

async fn connect(
    config: &Config,
) -> Result<customers_shared::runtime::nats::NatsConnection, WorkerError> {
    // Requests waiting to be read are bounded too (async-nats drops what does not fit and
    // reports a slow consumer): past the in-flight limit they would only be answered 503,
    // and unbounded they would hold up to 64k messages of up to max_payload each.
    let capacity = config.max_in_flight.saturating_mul(2).max(1024);
    customers_shared::runtime::nats::connect("customers-worker", &config.nats, capacity)
        .await
        .map_err(|source| WorkerError::Connect {
            url: config.nats.url.clone(),
            source,
        })
}
