//! Replicated mode (`--replication jetstream`, docs/API.md §9). The committed groups live in
//! a replicated JetStream stream, the [`log::Log`]; every instance's sled database is a copy
//! of it, applied in order and never ahead of it.
//!
//! * One instance is the **primary**: it holds the [`lease::Lease`], commits creates, and
//!   appends each group to the log (fenced by the expected last sequence) before it answers.
//! * The others are **standbys**: [`follow`] feeds them the log as it grows; they serve
//!   reads, after a [`ReadBarrier`] when a read might otherwise miss an acknowledged create.
//! * When the primary stops renewing its lease, a standby takes it, applies the log to its
//!   end and becomes the primary ([`take_over`]).
//! * Every instance's reads pass its [`ReadGate`]: a standby's catches up first where it
//!   must; the primary's answers only while its lease is surely held, and otherwise (paused
//!   past it, a successor may have acknowledged writes since) as a standby that no longer
//!   follows the log would: only if nothing was appended beyond what it applied.
//!
//! The committer (`crate::committer`) does the appending and applying; this module holds the
//! shared state and the tasks around it.

pub mod lease;
pub mod log;
pub mod snapshots;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::committer::{CommitHandle, Write};
use crate::health::{Failure, Health};

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replicated mode: cannot set up {0}")]
    Setup(String),
    #[error(
        "replicated mode: the newest snapshot holds the log up to {snapshot}, but the log now starts at {first}: groups in between are lost"
    )]
    SnapshotBehindLog { snapshot: u64, first: u64 },
    #[error(
        "replicated mode: this data directory holds customers but was never part of a replicated log (single-node data); start replicated mode on an empty data directory"
    )]
    NotReplicatedData,
}

/// What an instance is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standby,
    Primary,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Standby => "standby",
            Self::Primary => "primary",
        }
    }
}

/// Read-your-writes on a standby: before a read that could miss a create some client was
/// already told about, wait until everything the log held at the time of the read is
/// applied here.
pub struct ReadBarrier {
    pub log: Arc<log::Log>,
    pub applied: watch::Receiver<u64>,
}

impl ReadBarrier {
    /// Whether this instance caught up with the log as it is now, within `wait` (reading
    /// the log's end is retried within it: a node may be failing over); with no wait, whether
    /// it has applied the log's end already.
    pub async fn caught_up(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let last = loop {
            match self.log.last_sequence().await {
                Ok(last) => break last,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => return false,
            }
        };
        let mut applied = self.applied.clone();
        tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= last))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }
}

/// The longest a read waits for its replica to catch up before it is answered 503.
const BARRIER_WAIT: Duration = Duration::from_secs(3);

/// What stands between a read and its answer, by role.
#[derive(Clone)]
pub enum ReadGate {
    /// One worker on its own disk: everything acknowledged is in its database.
    Single,
    /// A standby: a read that could miss an acknowledged write catches up first.
    Standby(Arc<ReadBarrier>),
    /// The primary: everything acknowledged is in its database while its lease is surely
    /// held; past that, only if the log holds nothing beyond what it applied.
    Primary {
        lease: lease::LeaseClock,
        barrier: Arc<ReadBarrier>,
    },
}

impl ReadGate {
    /// Before a read that finds nothing or lists (a hit needs nothing: a customer, once
    /// there, is as the log has it): a standby catches up with the log; `false` when it
    /// could not, and the read is to be answered 503.
    pub async fn caught_up(&self) -> bool {
        match self {
            Self::Standby(barrier) => barrier.caught_up(BARRIER_WAIT).await,
            Self::Single | Self::Primary { .. } => true,
        }
    }

    /// After a read, before its answer: whether what this instance read is still all there
    /// is. A primary that may have been paused past its lease asks the log (without waiting:
    /// it no longer follows it).
    pub async fn still_current(&self) -> bool {
        match self {
            Self::Primary { lease, barrier } => {
                lease.is_valid() || barrier.caught_up(Duration::ZERO).await
            }
            Self::Single | Self::Standby(_) => true,
        }
    }
}

/// How often a follower checks that its consumer still delivers what the log holds.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Feeds the log from `from` on to the committer, in order, until `stop` turns true. When
/// the log's consumer fails or ends (a NATS node lost, a leader change), it is made again
/// from the group after the last one handed on; the committer ignores groups it already
/// applied.
pub async fn follow(
    log: Arc<log::Log>,
    from: u64,
    committer: CommitHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = from;
    // Groups handed to the committer and not yet applied: a window, so that catching up
    // is not one round trip per group.
    let mut in_flight = VecDeque::new();
    'consumers: while !*stop.borrow() && stop.has_changed().is_ok() {
        let mut groups = match log.follow(next).await {
            Ok(groups) => Box::pin(groups),
            Err(e) => {
                tracing::warn!(error = %e, from = next, "cannot follow the log yet; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => continue,
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
                        () = tokio::time::sleep(Duration::from_millis(200)) => continue 'consumers,
                        _ = stop.changed() => break 'consumers,
                    }
                }
                Some(Ok((sequence, record))) => {
                    match committer
                        .submit(Write::Replicated { sequence, record })
                        .await
                    {
                        Ok(applied) => in_flight.push_back(applied),
                        Err(_) => break 'consumers,
                    }
                    next = sequence + 1;
                    if in_flight.len() >= 256
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
async fn log_trimmed_below(log: &log::Log, next: u64) -> bool {
    log.first_sequence().await.is_ok_and(|first| first > next)
}

/// The task renewing the lease; dropping it stops the renewal, so that a take-over given up
/// half-way (the instance was told to stop) does not keep the lease alive behind it.
pub struct Renewal(tokio::task::JoinHandle<()>);

impl Renewal {
    pub fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A standby that became the primary: the lease it holds and the task renewing it.
pub struct Promoted {
    pub lease: Arc<lease::Lease>,
    pub revision: Arc<AtomicU64>,
    pub renewing: Renewal,
    pub clock: lease::LeaseClock,
    /// The log's last sequence when this instance took over.
    pub took_over_at: u64,
}

/// Waits for the lease, then catches up with the log and stops `following` (the standby's
/// log feed); the caller then hands the committer its new role. The renewal task fails the
/// worker when the lease is lost.
pub async fn take_over(
    lease: Arc<lease::Lease>,
    log: Arc<log::Log>,
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
    let last = loop {
        match log.last_sequence().await {
            Ok(last) => break last,
            Err(e) => {
                tracing::warn!(error = %e, "taking over: cannot read the log's end yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
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
