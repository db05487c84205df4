//! The worker's life: [`Worker::start`] brings the parts up in order (configuration checks,
//! NATS, the events stream, replicated mode's log and lease, the store with its journal
//! replayed, the committer, the admin listener, the relay, the purge and the checkpoint
//! clock, the service) and returns once the service is subscribed; [`Worker::run`] serves until a shutdown future resolves or
//! the worker fails, then stops in order (the service drains, the relay records how far it
//! got, the committer finishes and checkpoints, the lease is handed on), and says which.
//! Replicated, [`replicated`] holds the standby's following, the take-over and the periodic
//! snapshot.

mod replicated;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use customers_shared::runtime::nats::{Denial, NatsConnectError, NatsConnection};
use customers_shared::wire::{event, protocol};
use tokio::sync::watch;

use crate::api::{Context, CustomersService};
use crate::commit::checkpoint_clock::checkpoint_old_segments_forever;
use crate::commit::mode::Replica;
use crate::commit::purger::purge_expired_forever;
use crate::commit::{self, CommitError, CommitHandle, Control, Limits, Outbox, Prepared};
use crate::config::{Config, EventsMode, ReplicationMode};
use crate::events::relay::{RelayParts, RelayThread};
use crate::events::stream::{EventsError, ensure_stream};
use crate::health::{Failure, Health};
use crate::idempotency::Claims;
use crate::metrics::Metrics;
use crate::ops::admin::{self, Admin, BackupPolicy, BackupPolicyError};
use crate::replication::lease::Lease;
use crate::replication::log::Log;
use crate::replication::snapshots::{self, Snapshots};
use crate::replication::{ReadBarrier, ReadGate, ReplicationError};
use crate::role::Role;
use crate::storage::store::{Opened, Recovery, Store, StoreError};
use crate::support::blocking::{self, Panicked};
use crate::support::retry::{self, Backoff};
use replicated::{Parts, Promoted, SnapshotTask};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: NatsConnectError,
    },
    #[error(transparent)]
    Events(#[from] EventsError),
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
    Promotion(#[from] CommitError),
    #[error("cannot start the NATS micro service: {0}")]
    Service(async_nats::Error),
    #[error("cannot start the committer thread: {0}")]
    Committer(std::io::Error),
    #[error(transparent)]
    Backups(#[from] BackupPolicyError),
    /// A flag that would have no effect with the others given.
    #[error("{0}")]
    Unused(&'static str),
    #[error(
        "nats-server refused this worker's NATS user a permission ({refused}){during}; its grants (deploy/nats-authorization.conf) and --nats-inbox-prefix must allow it"
    )]
    Refused { refused: String, during: String },
    #[error("cannot listen on {addr} (admin): {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Panicked(#[from] Panicked),
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
    /// The idempotency purge and the checkpoint clock.
    housekeeping: tokio::task::JoinHandle<()>,
    relay: Option<RelayThread>,
    admin: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    mode: Mode,
    /// The role the metrics, the admin listener and the service's metadata show.
    role: watch::Sender<Role>,
}

/// What the worker's life holds for its role.
enum Mode {
    Single,
    Standby(Standby),
    Primary(Primary),
}

/// A standby's parts: what it needs to follow the log and take over.
struct Standby {
    log: Arc<Log>,
    lease: Arc<Lease>,
    snapshots: Arc<Snapshots>,
    applied: watch::Receiver<u64>,
    /// How far this instance applied the log against how far it goes: its reads' barrier, as
    /// a standby and after it takes over.
    barrier: Arc<ReadBarrier>,
    following: (watch::Sender<bool>, tokio::task::JoinHandle<()>),
}

/// The primary's parts: the lease it holds and the periodic snapshot.
struct Primary {
    promoted: Promoted,
    snapshotting: tokio::task::JoinHandle<()>,
}

/// Where the primary writes a snapshot before storing it (in the data directory: on the
/// volume that has room for the database).
const SNAPSHOT_SCRATCH: &str = "snapshot.partial";

/// How long a replicated start waits for JetStream: a cluster elects its leader a moment
/// after its nodes are up, and the workers may start in that moment.
const JETSTREAM_PATIENCE: Duration = Duration::from_secs(30);

impl Worker {
    /// Connects to NATS, opens the database (replaying the journal) and registers the
    /// service; replicated, as a standby that follows the log.
    pub async fn start(config: Config) -> Result<Self, WorkerError> {
        // Before anything else: a mistaken path or flag is a configuration error, whatever
        // NATS says.
        let backups = check_configuration(&config)?;
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
        backups: Option<Arc<BackupPolicy>>,
    ) -> Result<Self, WorkerError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        check_clustered(&config, &client)?;
        let replicated = config.replication.mode == ReplicationMode::Jetstream;
        let patience = if replicated {
            JETSTREAM_PATIENCE
        } else {
            Duration::ZERO
        };
        if config.events.mode == EventsMode::On {
            jetstream_ready(patience, || {
                ensure_stream(&jetstream, &config.events, &config.subject_prefix)
            })
            .await?;
        }
        let parts = if replicated {
            Some(jetstream_ready(patience, || replicated::setup(&config, &jetstream)).await?)
        } else {
            None
        };
        let database = open_database(&config, parts.as_ref()).await?;
        let metrics = Arc::new(Metrics::default());
        database.report(&config, &metrics)?;
        let Database {
            store, prepared, ..
        } = database;
        let applied_at_start = store.applied_log_sequence()?;
        let store = Arc::new(store);
        let health = Health::default();
        let (applied_tx, applied) = watch::channel(applied_at_start);
        let prepared = match &parts {
            Some(parts) => prepared.standby(Replica {
                log: parts.log.clone(),
                runtime: tokio::runtime::Handle::current(),
                applied: applied_tx,
                applied_sequence: applied_at_start,
                instance: parts.instance.clone(),
            }),
            None => prepared,
        };
        let outbox = prepared.outbox();
        let (handle, committer) = commit::spawn(
            store.clone(),
            prepared,
            metrics.clone(),
            health.clone(),
            Limits::of(&config),
        )
        .map_err(WorkerError::Committer)?;
        let role = watch::Sender::new(if replicated {
            Role::Standby
        } else {
            Role::Single
        });
        metrics.role(*role.borrow());
        let admin = match config.admin_listen {
            Some(addr) => Some(
                start_admin(
                    addr,
                    Admin {
                        metrics: metrics.clone(),
                        store: Arc::downgrade(&store),
                        queue: handle.probe(),
                        outbox: outbox.clone(),
                        client: client.clone(),
                        health: health.clone(),
                        role: role.subscribe(),
                        backups,
                    },
                )
                .await?,
            ),
            None => None,
        };
        let relay = match outbox {
            Some(outbox) => Some(start_relay(
                &config, &store, outbox, &handle, &metrics, &health,
            )?),
            None => None,
        };
        let housekeeping = {
            let purge = purge_expired_forever(handle.probe(), config.idempotency_retention);
            let checkpoints =
                checkpoint_old_segments_forever(handle.probe(), config.checkpoint_interval);
            tokio::spawn(async move {
                tokio::join!(purge, checkpoints);
            })
        };
        let mode = match parts {
            Some(parts) => Mode::Standby(Standby::start(parts, &handle, applied)),
            None => Mode::Single,
        };
        let reads = match &mode {
            Mode::Standby(standby) => ReadGate::Standby(standby.barrier.clone()),
            Mode::Single | Mode::Primary(_) => ReadGate::Single,
        };
        let context = Arc::new(Context {
            store,
            committer: handle,
            claims: Arc::new(Claims::default()),
            client: client.clone(),
            max_body_bytes: config.max_body_bytes,
            max_in_flight: config.max_in_flight.max(1),
            idempotency_retention: config.idempotency_retention,
            require_if_match: config.require_if_match,
            metrics,
            reads,
            gets: Arc::default(),
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
            housekeeping,
            relay,
            admin,
            mode,
            role,
        })
    }

    /// The admin listener's address, when `--admin-listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(addr, _)| *addr)
    }

    /// Serves until `shutdown` resolves or the worker fails; then answers what was accepted,
    /// checkpoints (after a clean stop) and closes. Replicated, a standby serves reads until
    /// it takes over, then serves as the primary. Returns the failure, if there was one: the
    /// process should then exit non-zero.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Failure> {
        let health = self.health.clone();
        tokio::pin!(shutdown);
        let serving_on = match std::mem::replace(&mut self.mode, Mode::Single) {
            Mode::Standby(standby) => match self.serve_as_standby(standby, &mut shutdown).await {
                Some(primary) => {
                    self.mode = Mode::Primary(primary);
                    true
                }
                None => false,
            },
            other => {
                self.mode = other;
                true
            }
        };
        if serving_on && !health.is_failed() {
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
        self.stop().await
    }

    /// Serves reads as a standby until `shutdown`, a failure, or the take-over; after a
    /// take-over, the primary's parts.
    async fn serve_as_standby(
        &mut self,
        standby: Standby,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Option<Primary> {
        let health = self.health.clone();
        let Standby {
            log,
            lease,
            snapshots,
            applied,
            barrier,
            following,
        } = standby;
        let taking_over =
            replicated::take_over(lease, log.clone(), applied, following, health.clone());
        tokio::pin!(taking_over);
        let mut took_over = None;
        let stop = async {
            tokio::select! {
                () = shutdown => {}
                failure = health.failed() => {
                    tracing::error!(%failure, "stopping the service after a failure");
                }
                promoted = &mut taking_over => took_over = Some(promoted),
            }
        };
        self.service.serve(stop, self.config.shutdown_grace).await;
        let promoted = took_over?;
        match self
            .become_primary(&promoted, snapshots, log, barrier)
            .await
        {
            Ok(snapshotting) => Some(Primary {
                promoted,
                snapshotting,
            }),
            Err(e) => {
                health.fail(Failure::fenced(format!("could not take over: {e}")));
                promoted.renewing.abort();
                None
            }
        }
    }

    /// The ordered stop: the snapshot task, the relay, the housekeeping, the committer (which
    /// checkpoints), the lease, the last replies, the admin listener.
    async fn stop(mut self) -> Result<(), Failure> {
        // A snapshot being stored is abandoned (the next primary takes one); the one stored
        // before stays in force.
        if let Mode::Primary(primary) = &self.mode {
            primary.snapshotting.abort();
        }
        // The relay holds a commit handle: it stops (recording how far it got) before the
        // committer can drain. Events it did not publish wait for the next start.
        if let Some(relay) = self.relay.take() {
            relay.stop().await;
        }
        // A purge is not worth finishing: what it leaves, the next start purges. The clock
        // goes with it: the committer's final checkpoint empties the journal.
        self.housekeeping.abort();
        // Every commit handle is gone with the service: the committer drains, checkpoints
        // and stops (or has stopped already, after a failure).
        drop(self.service);
        drop(self.context);
        let committer = self.committer;
        match blocking::run(move || committer.join()).await {
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
        if let Mode::Primary(Primary { promoted, .. }) = self.mode {
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
    /// the relay publishes the events, and the service takes creates. Returns the snapshot
    /// task.
    async fn become_primary(
        &mut self,
        promoted: &Promoted,
        snapshots: Arc<Snapshots>,
        log: Arc<Log>,
        barrier: Arc<ReadBarrier>,
    ) -> Result<tokio::task::JoinHandle<()>, WorkerError> {
        let context = &self.context;
        let outbox = match self.config.events.max_pending() {
            Some(max_pending) => {
                let store = context.store.clone();
                let outbox = blocking::run(move || Outbox::load(&store, max_pending)).await??;
                Some(Arc::new(outbox))
            }
            None => None,
        };
        context
            .committer
            .control(Control::Promote {
                expected_last: promoted.took_over_at,
                lease: promoted.clock.clone(),
                outbox: outbox.clone(),
            })
            .await?;
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
            reads: ReadGate::Primary {
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
            Role::Primary,
        )
        .await?;
        let snapshotting = tokio::spawn(
            SnapshotTask {
                snapshots,
                log,
                committer: context.committer.probe(),
                metrics: context.metrics.clone(),
                scratch: self.config.data_dir.join(SNAPSHOT_SCRATCH),
                interval: self.config.replication.snapshot_interval,
            }
            .run(),
        );
        // Announced as the primary only once creates reach it.
        self.role.send_replace(Role::Primary);
        primary_context.metrics.role(Role::Primary);
        self.context = primary_context;
        tracing::info!(
            log_sequence = promoted.took_over_at,
            "took over as the primary"
        );
        Ok(snapshotting)
    }
}

impl Standby {
    /// Starts following the log after the group `applied` holds.
    fn start(parts: Parts, committer: &CommitHandle, applied: watch::Receiver<u64>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let follower = tokio::spawn(replicated::follow(
            parts.log.clone(),
            *applied.borrow() + 1,
            committer.clone(),
            stopped,
        ));
        Self {
            barrier: Arc::new(ReadBarrier {
                log: parts.log.clone(),
                applied: applied.clone(),
            }),
            log: parts.log,
            lease: parts.lease,
            snapshots: parts.snapshots,
            applied,
            following: (stop, follower),
        }
    }
}

/// The checks that need no NATS: the data directory's path and the flags that go together;
/// the backup policy, when backups are on.
fn check_configuration(config: &Config) -> Result<Option<Arc<BackupPolicy>>, WorkerError> {
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        return Err(StoreError::NotADirectory {
            dir: config.data_dir.clone(),
        }
        .into());
    }
    match (&config.backup_dir, &config.admin_token_file) {
        (Some(_), _) if config.admin_listen.is_none() => Err(WorkerError::Unused(
            "--backup-dir: backups are asked for on the admin listener; set --admin-listen too",
        )),
        (None, Some(_)) => Err(WorkerError::Unused(
            "--admin-token-file guards backups, which are off: set --backup-dir too",
        )),
        (Some(dir), token_file) => Ok(Some(Arc::new(BackupPolicy::new(
            dir,
            token_file.as_deref(),
        )?))),
        (None, None) => Ok(None),
    }
}

/// A copy per node: more replicas than a single server can hold is a configuration error,
/// not a cluster still electing its leader.
fn check_clustered(config: &Config, client: &async_nats::Client) -> Result<(), WorkerError> {
    let not_clustered = client.server_info().cluster.is_none();
    for (flag, replicas, wanted) in [
        (
            "--events-replicas",
            config.events.replicas,
            config.events.mode == EventsMode::On,
        ),
        (
            "--replication-replicas",
            config.replication.replicas,
            config.replication.mode == ReplicationMode::Jetstream,
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
    Ok(())
}

/// `attempt` until it succeeds or `patience` has passed (then its last error).
async fn jetstream_ready<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    patience: Duration,
    attempt: impl FnMut() -> F,
) -> Result<T, E> {
    retry::until(
        patience,
        Backoff::constant(Duration::from_millis(500)),
        attempt,
        |e| tracing::warn!(error = %e, "JetStream not ready yet; retrying"),
    )
    .await
}

/// The database with its journal replayed, and what the committer starts from.
struct Database {
    store: Store,
    recovery: Recovery,
    prepared: Prepared,
    /// How long reading the emails (and the outbox) took.
    prepare_time: Duration,
    /// Replicated: the log sequence of the snapshot this instance was rebuilt from.
    started_from_snapshot: Option<u64>,
}

impl Database {
    /// Logs what the start found and records it in `metrics`.
    fn report(&self, config: &Config, metrics: &Metrics) -> Result<(), StoreError> {
        let replayed = &self.recovery.replayed;
        tracing::info!(
            data_dir = %config.data_dir.display(),
            replayed_segments = replayed.segments,
            replayed_records = replayed.records,
            replayed_puts = replayed.puts,
            replayed_bytes = replayed.bytes,
            torn_tail_bytes = replayed.torn_tail_bytes,
            recovery_ms = self.recovery.elapsed.as_millis() as u64,
            known_emails = self.prepared.known_emails().len(),
            email_filter_bytes = self.prepared.known_emails().bytes(),
            email_scan_ms = self.prepare_time.as_millis() as u64,
            pending_events = self.prepared.outbox().map(|outbox| outbox.pending()),
            size_on_disk = self.store.size_on_disk()?,
            "database opened and journal replayed"
        );
        if config.idempotency_retention < Duration::from_secs(24 * 3600) {
            tracing::warn!(
                retention = %humantime::format_duration(config.idempotency_retention),
                "idempotency keys are kept for less than the 24 h the contract promises"
            );
        }
        metrics.recovered(self.recovery.elapsed);
        if config.replication.mode == ReplicationMode::Jetstream {
            metrics.log_applied(self.store.applied_log_sequence()?);
        }
        if let Some(sequence) = self.started_from_snapshot {
            metrics.started_from_snapshot(sequence);
        }
        Ok(())
    }
}

/// Opens the data directory; replicated, first rebuilds it from the stored snapshot when the
/// log was trimmed past it.
async fn open_database(config: &Config, parts: Option<&Parts>) -> Result<Database, WorkerError> {
    let mut database = open_store(config).await?;
    let Some(parts) = parts else {
        return Ok(database);
    };
    let applied = database.store.applied_log_sequence()?;
    if !snapshots::behind(&parts.log, applied).await? {
        return Ok(database);
    }
    if applied == 0 && database.store.newest_id()?.is_some() {
        return Err(ReplicationError::NotReplicatedData.into());
    }
    tracing::warn!(
        applied,
        "the log was trimmed past this data directory: starting from the stored snapshot"
    );
    drop(database);
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
    database = open_store(config).await?;
    database.started_from_snapshot = Some(summary.log_sequence);
    Ok(database)
}

async fn open_store(config: &Config) -> Result<Database, WorkerError> {
    let data_dir = config.data_dir.clone();
    let cache = config.cache_capacity_bytes;
    // Replicated, only the primary publishes events, and it reads its outbox when it takes
    // over.
    let max_pending_events = match config.replication.mode {
        ReplicationMode::None => config.events.max_pending(),
        ReplicationMode::Jetstream => None,
    };
    let opened = blocking::run(move || {
        let Opened {
            store,
            journal,
            recovery,
        } = Store::open(&data_dir, cache)?;
        let started = std::time::Instant::now();
        let outbox = match max_pending_events {
            Some(max_pending) => Some(Arc::new(Outbox::load(&store, max_pending)?)),
            None => None,
        };
        let prepared = Prepared::new(&store, (journal, recovery.records.clone()), outbox)?;
        Ok::<_, StoreError>(Database {
            store,
            recovery,
            prepared,
            prepare_time: started.elapsed(),
            started_from_snapshot: None,
        })
    })
    .await??;
    Ok(opened)
}

async fn start_admin(
    addr: SocketAddr,
    admin: Admin,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), WorkerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WorkerError::AdminBind { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "admin listening");
    Ok((addr, tokio::spawn(admin::run(listener, admin))))
}

fn start_relay(
    config: &Config,
    store: &Arc<Store>,
    outbox: Arc<Outbox>,
    committer: &CommitHandle,
    metrics: &Arc<Metrics>,
    health: &Health,
) -> Result<RelayThread, WorkerError> {
    Ok(RelayThread::start(
        RelayParts {
            store: store.clone(),
            outbox,
            subject_prefix: config.subject_prefix.clone(),
            stream: config.events.stream.clone(),
            encoder: event::EventEncoder::new(&config.events.source),
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
    role: Role,
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
        subject = %protocol::create_subject(&config.subject_prefix),
        role = role.name(),
        "serving"
    );
    Ok(service)
}

async fn connect(config: &Config) -> Result<NatsConnection, WorkerError> {
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn flags_that_do_not_go_together_are_refused_before_nats() {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let backups = dir.path().join("backups");
        let (file, backups) = (file.path().to_str().unwrap(), backups.to_str().unwrap());
        for (description, args, refusal) in [
            (
                "the data directory is a file",
                vec!["--data-dir", file],
                "is not a directory",
            ),
            (
                "backups without the admin listener",
                vec!["--backup-dir", backups],
                "set --admin-listen too",
            ),
            (
                "a token without backups",
                vec!["--admin-token-file", file],
                "set --backup-dir too",
            ),
        ] {
            let config = Config::try_parse_from(["customers-worker"].into_iter().chain(args))
                .expect("the flags parse");
            let Err(error) = check_configuration(&config) else {
                panic!("{description}: accepted");
            };
            assert!(
                error.to_string().contains(refusal),
                "{description}: {error}"
            );
        }
        let config = Config::try_parse_from([
            "customers-worker",
            "--admin-listen",
            "127.0.0.1:0",
            "--backup-dir",
            backups,
        ])
        .expect("the flags parse");
        assert!(
            check_configuration(&config)
                .expect("backups with the admin listener")
                .is_some()
        );
    }
}
