//! Replicated mode as the worker's life drives it: the parts every instance sets up
//! ([`setup`]: the log, the lease, the snapshot bucket), a standby following the log
//! ([`follow`]), the take-over once the lease is free ([`take_over`], giving [`Promoted`]) and
//! the primary's periodic snapshot ([`SnapshotTask`]). The parts themselves live in
//! `replication`; the committer (`commit`) appends and applies the groups.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::commit::{CommitHandle, QueueProbe, SnapshotFailed};
use crate::config::Config;
use crate::health::{Failure, Health};
use crate::metrics::Metrics;
use crate::replication::ReplicationError;
use crate::replication::lease::{Lease, LeaseClock};
use crate::replication::log::{Log, LogError};
use crate::replication::snapshots::{BucketError, Snapshots};
use crate::support::retry::{self, Backoff};

/// Replicated mode's parts, shared by every instance.
pub(super) struct Parts {
    pub(super) log: Arc<Log>,
    pub(super) lease: Arc<Lease>,
    pub(super) snapshots: Arc<Snapshots>,
    /// This instance's name (in the lease and in the ids of its appends).
    pub(super) instance: String,
}

/// Replicated mode's log, lease and snapshot bucket (made when missing).
pub(super) async fn setup(
    config: &Config,
    jetstream: &async_nats::jetstream::Context,
) -> Result<Parts, ReplicationError> {
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
    Ok(Parts {
        log: Arc::new(log),
        lease: Arc::new(lease),
        snapshots: Arc::new(snapshots),
        instance,
    })
}

/// How often a follower checks that its consumer still delivers what the log holds.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// The pause before a follower asks for a new consumer.
const FOLLOW_AGAIN: Duration = Duration::from_millis(200);

/// Log groups handed to the committer and not yet applied, at most: a window, so that
/// catching up is not one round trip per group.
const FOLLOW_WINDOW: usize = 256;

/// Feeds the log from `from` on to the committer, in order, until `stop` turns true. When
/// the log's consumer fails or ends (a NATS node lost, a leader change), it is made again
/// from the group after the last one handed on; the committer ignores groups it already
/// applied.
pub(super) async fn follow(
    log: Arc<Log>,
    from: u64,
    committer: CommitHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = from;
    let mut in_flight = VecDeque::new();
    let mut pause = Backoff::constant(FOLLOW_AGAIN);
    'consumers: while !*stop.borrow() && stop.has_changed().is_ok() {
        let mut groups = match log.follow(next).await {
            Ok(groups) => Box::pin(groups),
            Err(e) => {
                tracing::warn!(error = %e, from = next, "cannot follow the log yet; retrying");
                tokio::select! {
                    () = pause.wait() => continue,
                    _ = stop.changed() => break,
                }
            }
        };
        // A consumer whose node went away may go quiet instead of failing: when the log
        // holds groups this one has not delivered for a whole check, it is made again.
        let mut check = tokio::time::interval(STALL_CHECK);
        check.reset();
        let mut delivered_since_check = false;
        loop {
            let group = tokio::select! {
                _ = stop.changed() => break 'consumers,
                _ = check.tick() => {
                    let behind = log.last_sequence().await.is_ok_and(|last| last >= next);
                    if behind && !delivered_since_check {
                        tracing::warn!(from = next, "the log's consumer stalled; following again");
                        continue 'consumers;
                    }
                    delivered_since_check = false;
                    continue;
                }
                group = groups.next() => group,
            };
            delivered_since_check = true;
            match group {
                Some(Ok((sequence, _)))
                    if sequence > next && !log_trimmed_below(&log, next).await =>
                {
                    // The log has no holes: a consumer that skips some served a replica that
                    // was still catching up (a NATS node that just rejoined). Ask again.
                    tracing::warn!(
                        from = next,
                        skipped_to = sequence,
                        "the log's consumer skipped groups; following again"
                    );
                    tokio::select! {
                        () = pause.wait() => continue 'consumers,
                        _ = stop.changed() => break 'consumers,
                    }
                }
                Some(Ok((sequence, record))) => {
                    match committer.apply_log_group(sequence, record).await {
                        Ok(applied) => in_flight.push_back(applied),
                        Err(_) => break 'consumers,
                    }
                    next = sequence + 1;
                    if in_flight.len() >= FOLLOW_WINDOW
                        && let Some(applied) = in_flight.pop_front()
                    {
                        let _ = applied.await;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, from = next, "following the log failed; following again");
                    continue 'consumers;
                }
                None => continue 'consumers,
            }
        }
    }
    while let Some(applied) = in_flight.pop_front() {
        let _ = applied.await;
    }
}

/// Whether the log no longer holds the group `next` (trimmed after a snapshot); when that
/// cannot be read, the answer is no, so that the caller asks again rather than gives up.
async fn log_trimmed_below(log: &Log, next: u64) -> bool {
    log.first_sequence().await.is_ok_and(|first| first > next)
}

/// The task renewing the lease; dropping it stops the renewal, so that a take-over given up
/// half-way (the instance was told to stop) does not keep the lease alive behind it.
pub(super) struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    pub(super) fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A standby that became the primary: the lease it holds and the task renewing it.
pub(super) struct Promoted {
    pub(super) lease: Arc<Lease>,
    pub(super) revision: Arc<AtomicU64>,
    pub(super) renewing: Renewal,
    pub(super) clock: LeaseClock,
    /// The log's last sequence when this instance took over.
    pub(super) took_over_at: u64,
}

/// Waits for the lease, then catches up with the log and stops `following` (the standby's
/// log feed); the caller then hands the committer its new role. The renewal task fails the
/// worker when the lease is lost.
pub(super) async fn take_over(
    lease: Arc<Lease>,
    log: Arc<Log>,
    mut applied: watch::Receiver<u64>,
    following: (watch::Sender<bool>, tokio::task::JoinHandle<()>),
    health: Health,
) -> Promoted {
    let (revision, clock) = lease.acquire().await;
    let revision = Arc::new(AtomicU64::new(revision));
    let renewing = Renewal(tokio::spawn({
        let (lease, revision, clock, health) = (
            lease.clone(),
            revision.clone(),
            clock.clone(),
            health.clone(),
        );
        async move {
            lease.hold(&revision, &clock).await;
            health.fail(Failure::fenced("lost the primary lease"));
        }
    }));
    let last = retry::forever(
        Backoff::constant(Duration::from_millis(100)),
        || log.last_sequence(),
        |e| tracing::warn!(error = %e, "taking over: cannot read the log's end yet"),
    )
    .await;
    let _ = applied.wait_for(|a| *a >= last).await;
    let (stop, follower) = following;
    let _ = stop.send(true);
    let _ = follower.await;
    Promoted {
        lease,
        revision,
        renewing,
        clock,
        took_over_at: last,
    }
}

/// Why one round of the snapshot task stored nothing (it tries again at the next interval).
#[derive(Debug, thiserror::Error)]
enum SnapshotRoundError {
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Written(#[from] SnapshotFailed),
}

/// The primary's periodic snapshot.
pub(super) struct SnapshotTask {
    pub(super) snapshots: Arc<Snapshots>,
    pub(super) log: Arc<Log>,
    pub(super) committer: QueueProbe,
    pub(super) metrics: Arc<Metrics>,
    /// Where the snapshot is written before it is stored (removed afterwards).
    pub(super) scratch: PathBuf,
    pub(super) interval: Duration,
}

impl SnapshotTask {
    /// Every interval in which the log grew: a snapshot, then the log trimmed below the one
    /// it replaced. A failure is logged, counted and tried again at the next interval: the
    /// log is only trimmed below a snapshot that is stored.
    pub(super) async fn run(self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.reset();
        loop {
            ticks.tick().await;
            if let Err(e) = self.once().await {
                self.metrics.snapshot_failed();
                tracing::warn!(error = %e, "could not store a snapshot; trying again at the next interval");
            }
            let _ = tokio::fs::remove_file(&self.scratch).await;
        }
    }

    async fn once(&self) -> Result<(), SnapshotRoundError> {
        let previous = self.snapshots.newest().await?;
        if let Some(previous) = previous
            && self.log.last_sequence().await? <= previous
        {
            return Ok(()); // nothing new since
        }
        let started = Instant::now();
        let written = self.committer.snapshot(self.scratch.clone()).await?;
        if previous.is_some_and(|previous| written.log_sequence <= previous) {
            return Ok(());
        }
        self.snapshots
            .store(&self.scratch, written.log_sequence)
            .await?;
        self.metrics
            .snapshot_stored(written.log_sequence, started.elapsed());
        tracing::info!(
            log_sequence = written.log_sequence,
            entries = written.puts,
            bytes = written.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot stored"
        );
        if let Some(previous) = previous {
            self.log.trim_below(previous + 1).await?;
            tracing::info!(first_kept = previous + 1, "log trimmed");
        }
        Ok(())
    }
}
