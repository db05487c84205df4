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
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outbox::Outbox;
use crate::replication::Role;
use crate::store::Store;

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are written as the variants' names
pub enum Operation {
    create,
    get,
    list,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Self::create => "create",
            Self::get => "get",
            Self::list => "list",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: Operation,
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
    operation: Operation,
    status: u16,
}

pub struct Metrics {
    registry: Registry,
    /// Problem replies per operation (indexed by `Operation as usize`), for `$SRV.STATS`.
    errors: [AtomicU64; 3],
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
            "events_pending",
            "Events in the outbox, stored with their customer and not yet acknowledged by JetStream",
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
        for (operation, status) in [
            (Operation::create, 201),
            (Operation::get, 200),
            (Operation::list, 200),
        ] {
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
    pub fn reply(&self, operation: Operation, status: u16, replayed: bool) {
        self.replies
            .get_or_create(&ReplyLabels { operation, status })
            .inc();
        if replayed {
            self.replays.inc();
        }
        if status >= 400 {
            self.errors[operation as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request dropped unread because its deadline had passed.
    pub fn expired(&self, operation: Operation) {
        self.expired
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    /// Problem replies sent by the endpoint named `endpoint` (`create`, `get`, `list`).
    pub fn errors(&self, endpoint: &str) -> Option<u64> {
        let operation = [Operation::create, Operation::get, Operation::list]
            .into_iter()
            .find(|o| o.name() == endpoint)?;
        Some(self.errors[operation as usize].load(Ordering::Relaxed))
    }

    /// A group of `size` writes whose journal record had `bytes` (none and no sync when every
    /// member was a conflict).
    pub fn group_committed(
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

    pub fn checkpointed(&self, elapsed: Duration) {
        self.checkpoint_seconds.observe(elapsed.as_secs_f64());
    }

    /// JetStream acknowledged an event (`duplicate`: it had stored it already).
    pub fn event_published(&self, duplicate: bool) {
        self.events_published.inc();
        if duplicate {
            self.events_duplicates.inc();
        }
    }

    pub fn event_publish_failed(&self) {
        self.event_publish_failures.inc();
    }

    /// Replicated mode: this instance's role now (nothing in single-node mode).
    pub fn role(&self, role: Option<Role>) {
        if let Some(role) = role {
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
    pub fn log_applied(&self, sequence: u64) {
        self.log_applied
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
    }

    /// Replicated mode: a snapshot through log `sequence` was stored (taking `elapsed`).
    pub fn snapshot_stored(&self, sequence: u64, elapsed: Duration) {
        self.snapshots
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        self.snapshot_sequence
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
        self.snapshot_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn snapshot_failed(&self) {
        self.snapshots
            .get_or_create(&ResultLabel { result: "failed" })
            .inc();
    }

    /// Replicated mode: this instance was rebuilt from the snapshot through `sequence`.
    pub fn started_from_snapshot(&self, sequence: u64) {
        self.snapshot_sequence
            .set(i64::try_from(sequence).unwrap_or(i64::MAX));
    }

    pub fn recovered(&self, elapsed: Duration) {
        self.recovery_seconds.set(elapsed.as_secs_f64());
    }

    /// The metrics in the OpenMetrics text format, with the gauges read now.
    pub fn render(&self, store: Option<&Store>, queued: usize, outbox: Option<&Outbox>) -> String {
        self.queue_depth
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        if let Some(Ok(bytes)) = store.map(Store::size_on_disk) {
            self.database_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(outbox) = outbox {
            self.events_pending
                .set(i64::try_from(outbox.pending()).unwrap_or(i64::MAX));
            let oldest = store
                .filter(|_| outbox.pending() > 0)
                .and_then(|store| store.customers_after(outbox.relayed_through(), 1).ok())
                .and_then(|pending| pending.first().map(|(id, _)| *id));
            let age = oldest.map_or(0.0, |id| {
                crate::idempotency::now_ms().saturating_sub(id.unix_ms()) as f64 / 1000.0
            });
            self.oldest_pending_event_age.set(age);
        }
        metrics::encode(&self.registry)
    }
}
