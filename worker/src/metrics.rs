//! The worker's Prometheus metrics, served on the optional admin listener (`admin`): replies
//! by operation and status (creates, conflicts, validation failures, reads), idempotent
//! replays, group commit size, bytes and time, journal fsync time, checkpoint time, the last
//! recovery's time, commit queue depth and database size; and the event relay: events
//! published, re-publications the stream dropped, publish failures, pending events and the
//! age of the oldest; replicated mode's role, applied log sequence and snapshots. Series whose
//! labels are known in advance start at zero, so that rates and alerts work before the first
//! event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use customers_shared::runtime::metrics;
use customers_shared::wire::protocol::Endpoint;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::role::Role;

/// The endpoint a series counts, by its name (`operation="create"`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplyLabels {
    operation: &'static str,
    status: u16,
}

pub(crate) struct Metrics {
    registry: Registry,
    /// Problem replies per operation (indexed by `Endpoint as usize`), for `$SRV.STATS`.
    errors: [AtomicU64; Endpoint::ALL.len()],
    replies: Family<ReplyLabels, Counter>,
    replays: Counter,
    expired: Family<OperationLabel, Counter>,
    group_size: Histogram,
    group_bytes: Histogram,
    group_seconds: Histogram,
    fsync_seconds: Histogram,
    checkpoint_seconds: Histogram,
    recovery_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    queue_depth: Gauge,
    database_bytes: Gauge,
    events_published: Counter,
    events_duplicates: Counter,
    event_publish_failures: Counter,
    events_erased: Counter,
    events_pending: Gauge,
    oldest_pending_event_age: Gauge<f64, AtomicU64>,
    role: Family<RoleLabel, Gauge>,
    log_applied: Gauge,
    snapshots: Family<ResultLabel, Counter>,
    snapshot_sequence: Gauge,
    snapshot_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("customers_worker"),
            errors: Default::default(),
            replies: Family::default(),
            replays: Counter::default(),
            expired: Family::default(),
            group_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            group_bytes: Histogram::new(exponential_buckets(256.0, 4.0, 10)),
            group_seconds: metrics::latency_histogram(),
            fsync_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            recovery_seconds: Gauge::default(),
            queue_depth: Gauge::default(),
            database_bytes: Gauge::default(),
            events_published: Counter::default(),
            events_duplicates: Counter::default(),
            event_publish_failures: Counter::default(),
            events_erased: Counter::default(),
            events_pending: Gauge::default(),
            oldest_pending_event_age: Gauge::default(),
            role: Family::default(),
            log_applied: Gauge::default(),
            snapshots: Family::default(),
            snapshot_sequence: Gauge::default(),
            snapshot_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
        };
        metrics.registry.register(
            "replies",
            "Replies sent, by operation and status (201 created, 409 conflict, 400 invalid, ...)",
            metrics.replies.clone(),
        );
        metrics.registry.register(
            "idempotent_replays",
            "Stored replies sent again for a repeated Idempotency-Key",
            metrics.replays.clone(),
        );
        metrics.registry.register(
            "expired_requests",
            "Requests dropped unread because their requester had stopped waiting (Request-Deadline)",
            metrics.expired.clone(),
        );
        metrics.registry.register(
            "group_commit_size",
            "Writes per group commit",
            metrics.group_size.clone(),
        );
        metrics.registry.register(
            "group_commit_bytes",
            "Bytes of each group's journal record",
            metrics.group_bytes.clone(),
        );
        metrics.registry.register(
            "group_commit_seconds",
            "Time of a group commit: decisions, journal append and fdatasync, apply to sled",
            metrics.group_seconds.clone(),
        );
        metrics.registry.register(
            "fsync_seconds",
            "Time of the journal fdatasync that makes a group durable",
            metrics.fsync_seconds.clone(),
        );
        metrics.registry.register(
            "checkpoint_seconds",
            "Time of a checkpoint: sled flush, fsync of its files, journal segments removed",
            metrics.checkpoint_seconds.clone(),
        );
        metrics.registry.register(
            "recovery_seconds",
            "Time the last start took to open the database and replay the journal",
            metrics.recovery_seconds.clone(),
        );
        metrics.registry.register(
            "commit_queue_depth",
            "Writes waiting for the committer",
            metrics.queue_depth.clone(),
        );
        metrics.registry.register(
            "database_size_bytes",
            "Size of the sled database on disk",
            metrics.database_bytes.clone(),
        );
        metrics.registry.register(
            "events_published",
            "customer.created events JetStream acknowledged (re-publications included)",
            metrics.events_published.clone(),
        );
        metrics.registry.register(
            "events_duplicates",
            "Re-published events the stream recognised by their id and did not store again",
            metrics.events_duplicates.clone(),
        );
        metrics.registry.register(
            "event_publish_failures",
            "Batches of events JetStream did not acknowledge (unreachable, no stream, timeout); retried",
            metrics.event_publish_failures.clone(),
        );
        metrics.registry.register(
            "events_erased",
            "Messages of deleted customers deleted (payload overwritten) from the events stream",
            metrics.events_erased.clone(),
        );
        metrics.registry.register(
            "events_pending",
            "Events in the outbox, stored with their change and not yet acknowledged by JetStream",
            metrics.events_pending.clone(),
        );
        metrics.registry.register(
            "oldest_pending_event_age_seconds",
            "Age of the oldest event in the outbox (0 when it is empty)",
            metrics.oldest_pending_event_age.clone(),
        );
        metrics.registry.register(
            "log_applied_sequence",
            "Replicated mode: the log sequence of the newest group applied here",
            metrics.log_applied.clone(),
        );
        metrics.registry.register(
            "snapshots",
            "Replicated mode: snapshots the primary stored in JetStream object storage, by result (ok, failed)",
            metrics.snapshots.clone(),
        );
        metrics.registry.register(
            "snapshot_log_sequence",
            "Replicated mode: the log sequence of the newest snapshot this instance stored or started from",
            metrics.snapshot_sequence.clone(),
        );
        metrics.registry.register(
            "snapshot_seconds",
            "Replicated mode: time of a snapshot, of which creates wait for the copy of the database",
            metrics.snapshot_seconds.clone(),
        );
        metrics.registry.register(
            "role",
            "Replicated mode: 1 for this instance's role (primary or standby), 0 for the other",
            metrics.role.clone(),
        );
        for (endpoint, status) in [
            (Endpoint::Create, 201),
            (Endpoint::Get, 200),
            (Endpoint::List, 200),
        ] {
            let operation = endpoint.name();
            drop(
                metrics
                    .replies
                    .get_or_create(&ReplyLabels { operation, status }),
            );
            drop(metrics.expired.get_or_create(&OperationLabel { operation }));
        }
        for result in ["ok", "failed"] {
            drop(metrics.snapshots.get_or_create(&ResultLabel { result }));
        }
        metrics
    }
}

impl Metrics {
    pub(crate) fn reply(&self, endpoint: Endpoint, status: u16, replayed: bool) {
        let operation = endpoint.name();
        self.replies
            .get_or_create(&ReplyLabels { operation, status })
            .inc();
        if replayed {
            self.replays.inc();
        }
        if status >= 400 {
            self.errors[endpoint as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request dropped unread because its deadline had passed.
    pub(crate) fn expired(&self, endpoint: Endpoint) {
        self.expired
            .get_or_create(&OperationLabel {
                operation: endpoint.name(),
            })
            .inc();
    }

    /// Problem replies sent by the endpoint named `endpoint` (`create`, `get`, `list`).
    pub(crate) fn errors(&self, endpoint: &str) -> Option<u64> {
        let endpoint = Endpoint::ALL.into_iter().find(|e| e.name() == endpoint)?;
        Some(self.errors[endpoint as usize].load(Ordering::Relaxed))
    }

    /// A group of `size` writes whose journal record had `bytes` (none and no sync when every
    /// member was a conflict).
    pub(crate) fn group_committed(
        &self,
        size: usize,
        bytes: usize,
        total: Duration,
        sync: Option<Duration>,
    ) {
        self.group_size.observe(size as f64);
        self.group_bytes.observe(bytes as f64);
        self.group_seconds.observe(total.as_secs_f64());
        if let Some(sync) = sync {
            self.fsync_seconds.observe(sync.as_secs_f64());
        }
    }

    pub(crate) fn checkpointed(&self, elapsed: Duration) {
        self.checkpoint_seconds.observe(elapsed.as_secs_f64());
    }

    /// JetStream acknowledged an event (`duplicate`: it had stored it already).
    pub(crate) fn event_published(&self, duplicate: bool) {
        self.events_published.inc();
        if duplicate {
            self.events_duplicates.inc();
        }
    }

    pub(crate) fn event_publish_failed(&self) {
        self.event_publish_failures.inc();
    }

    pub(crate) fn event_erased(&self) {
        self.events_erased.inc();
    }

    /// This instance's role now (replicated mode only: a single worker has no role series).
    pub(crate) fn role(&self, role: Role) {
        if role.is_replicated() {
            for candidate in [Role::Primary, Role::Standby] {
                self.role
                    .get_or_create(&RoleLabel {
                        role: candidate.name(),
                    })
                    .set(i64::from(candidate == role));
            }
        }
    }

    /// Replicated mode: the log is applied here through `sequence`.
    pub(crate) fn log_applied(&self, sequence: u64) {
        self.log_applied
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
    }

    /// Replicated mode: a snapshot through log `sequence` was stored (taking `elapsed`).
    pub(crate) fn snapshot_stored(&self, sequence: u64, elapsed: Duration) {
        self.snapshots
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        self.snapshot_sequence
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
        self.snapshot_seconds.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn snapshot_failed(&self) {
        self.snapshots
            .get_or_create(&ResultLabel { result: "failed" })
            .inc();
    }

    /// Replicated mode: this instance was rebuilt from the snapshot through `sequence`.
    pub(crate) fn started_from_snapshot(&self, sequence: u64) {
        self.snapshot_sequence
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
    }

    pub(crate) fn recovered(&self, elapsed: Duration) {
        self.recovery_seconds.set(elapsed.as_secs_f64());
    }

    /// The metrics in the OpenMetrics text format, with the gauges read now.
    pub(crate) fn render(&self, now: &Gauges) -> String {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.queue_depth.set(gauge(now.queued as u64));
        if let Some(bytes) = now.database_bytes {
            self.database_bytes.set(gauge(bytes));
        }
        if let Some(events) = &now.events {
            self.events_pending.set(gauge(events.pending as u64));
            self.oldest_pending_event_age
                .set(events.oldest_age.as_secs_f64());
        }
        metrics::encode(&self.registry)
    }
}

/// The gauges read at each scrape, from the parts that hold them.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Writes waiting for the committer.
    pub(crate) queued: usize,
    /// The database's size on disk, when it could be read.
    pub(crate) database_bytes: Option<u64>,
    /// The outbox, when events are on.
    pub(crate) events: Option<EventGauges>,
}

#[derive(Debug)]
pub(crate) struct EventGauges {
    /// Events stored and not yet acknowledged.
    pub(crate) pending: usize,
    /// How long the oldest of them has waited (zero when there is none).
    pub(crate) oldest_age: Duration,
}
