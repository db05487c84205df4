//! The committer's second half: a group that is durable (journaled and synced, or in the
//! replicated log) is applied to sled and answered here. Under a flood (a whole group already
//! queued behind it) a single worker runs it on a thread of its own, the **applier**, so that
//! while it inserts one group into sled (most of a create's CPU) the committer already plans,
//! writes and syncs the next: the `fdatasync` of one group overlaps the apply of the one
//! before, as PostgreSQL's WAL writer overlaps its backends. Otherwise the committer calls
//! [`Applier::finish`] itself, so the writes that arrive meanwhile gather into the next group
//! and share its `fdatasync` (taken at once, groups were a third smaller, and each paid its
//! own sync and hand-offs); a replicated instance always does.
//!
//! Groups are applied and answered strictly in the order they were committed, and nobody
//! hears of a group before it is applied: so a reply is never about data a read could not
//! see yet, and an answer that depends on an earlier group (a 409 naming the customer that
//! holds an email) leaves only after that group landed. [`Progress`] says how far the
//! applier got: the committer forgets its record of unapplied changes up to there, and
//! waits for it (drains) before anything that reads or rewrites sled beyond one group (a
//! checkpoint, a snapshot, the idempotency purge).
//!
//! A storage error here is fail-stop like one in the committer: the worker is marked failed,
//! the group and every one after it are answered 500.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::outbox::{Outbox, PendingEvent};
use super::{Answer, CommitError, Done};
use crate::health::{Failure, Health};
use crate::metrics::Metrics;
use crate::storage::journal::{Batch, Put, TreeId};
use crate::storage::store::{Store, StoreError};

/// Where a member's outcome goes.
pub(super) enum Waiting {
    Write(oneshot::Sender<Answer>),
    Control(oneshot::Sender<Done>),
}

/// A group's outcomes, handed to the runtime in one message: one wake-up of the request
/// tasks' thread per group instead of one per member (each costs a system call), and the
/// replies then leave together.
pub(super) type Delivery = Vec<(Waiting, Answer)>;

pub(super) fn deliver(waiting: Waiting, answer: Answer) {
    match waiting {
        Waiting::Write(sender) => {
            let _ = sender.send(answer);
        }
        Waiting::Control(sender) => {
            let _ = sender.send(answer.map(|_| ()));
        }
    }
}

pub(super) fn answer_all(waiting: impl IntoIterator<Item = Waiting>, error: CommitError) {
    for waits in waiting {
        deliver(waits, Err(error));
    }
}

/// Answers every member of a group that will not be applied `500`.
pub(super) fn answer_failed(delivery: Delivery) {
    answer_all(
        delivery.into_iter().map(|(waits, _)| waits),
        CommitError::Failed,
    );
}

/// A durable group, ready to be applied and answered.
pub(super) struct Durable {
    /// The committer's count of groups, this one included.
    pub(super) number: u64,
    /// Its commit time (`storage::change_clock`).
    pub(super) created_ms: u64,
    pub(super) puts: Batch,
    /// The group's journaled size and its sync's duration (`None`: nothing was written).
    pub(super) journaled: Option<(usize, Duration)>,
    /// The relayed mark it carries, and the sequence the outbox may be trimmed through.
    pub(super) relayed_mark: Option<u64>,
    pub(super) trim_through: Option<u64>,
    /// A standby's group time, from the log.
    pub(super) group_at: Option<u64>,
    /// Its events for the relay, and the pending ones it erased.
    pub(super) events: Vec<PendingEvent>,
    pub(super) erased: Vec<u64>,
    /// The outbox, when this instance publishes.
    pub(super) outbox: Option<Arc<Outbox>>,
    pub(super) started: Instant,
    pub(super) size: usize,
    pub(super) delivery: Delivery,
}

/// How far the applier got: every group up to [`Progress::applied`] is applied (or, after a
/// failure, answered).
#[derive(Default)]
pub(super) struct Progress {
    through: AtomicU64,
    changed: Mutex<()>,
    landed: Condvar,
}

impl Progress {
    pub(super) fn applied(&self) -> u64 {
        self.through.load(Ordering::Acquire)
    }

    fn finished(&self, number: u64) {
        let _guard = self.changed.lock().unwrap_or_else(|e| e.into_inner());
        self.through.store(number, Ordering::Release);
        self.landed.notify_all();
    }

    /// Waits until group `number` is applied.
    pub(super) fn wait_for(&self, number: u64) {
        let mut guard = self.changed.lock().unwrap_or_else(|e| e.into_inner());
        while self.applied() < number {
            guard = self.landed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Marks every group as finished when the applier thread ends, a panic included: a drain
/// then returns (to a failed worker) instead of waiting for ever.
struct Gone(Arc<Progress>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.finished(u64::MAX);
    }
}

/// What applying and answering a group needs; cheap to clone.
#[derive(Clone)]
pub(super) struct Applier {
    pub(super) store: Arc<Store>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Health,
    pub(super) deliveries: mpsc::UnboundedSender<Delivery>,
    pub(super) progress: Arc<Progress>,
}

impl Applier {
    /// Applies `group` to sled, runs `after_apply` (a replica records what it applied), then
    /// hands its events to the relay and answers its members; returns its batch for reuse.
    /// After a storage error the worker is failed and the group answered 500.
    pub(super) fn finish(&self, mut group: Durable, after_apply: impl FnOnce()) -> Batch {
        let delivery = std::mem::take(&mut group.delivery);
        let applied = self
            .apply(&group)
            .inspect(|()| after_apply())
            .and_then(|()| self.complete(&mut group));
        match applied {
            Ok(()) => {
                // Gone only when the runtime is: nobody is left waiting.
                let _ = self.deliveries.send(delivery);
            }
            Err(e) => {
                // Failed first, so nobody answered 500 can still find the worker ready.
                self.health.fail(Failure::storage(e));
                answer_failed(delivery);
            }
        }
        self.progress.finished(group.number);
        group.puts
    }

    /// The applier thread: applies the groups the committer sends, in order, and hands their
    /// batches back for reuse. After a failure the groups still sent are answered 500.
    pub(super) fn run(
        self,
        groups: std::sync::mpsc::Receiver<Durable>,
        spent: std::sync::mpsc::Sender<Batch>,
    ) {
        let _trip = self.health.trip_on_panic("applier");
        // However this thread ends, nobody waits for it any more.
        let _gone = Gone(self.progress.clone());
        for mut group in groups {
            if self.health.is_failed() {
                answer_failed(std::mem::take(&mut group.delivery));
                self.progress.finished(group.number);
                continue;
            }
            let mut batch = self.finish(group, || {});
            batch.clear();
            let _ = spent.send(batch);
        }
    }

    fn apply(&self, group: &Durable) -> Result<(), StoreError> {
        if group.journaled.is_none() {
            return Ok(());
        }
        // A primary publishing events keeps their entries in memory (the outbox), and the
        // store gets them only when something needs them on disk: a sled insert and a removal
        // per event saved on every create. A standby stores them all: they are what it
        // publishes the day it is promoted.
        let in_memory = group.outbox.is_some();
        let kept =
            |put: &Put<'_>| !(in_memory && put.tree == TreeId::Outbox && put.value.is_some());
        self.store.apply(group.puts.puts().filter(kept))?;
        if let Some(through) = group.trim_through {
            self.store.trim_events_through(through)?;
        }
        // A standby's feed frontier moves before its read barrier hears of the group.
        if let Some(at) = group.group_at {
            self.store.clock.followed(at);
        }
        Ok(())
    }

    fn complete(&self, group: &mut Durable) -> Result<(), StoreError> {
        if group.journaled.is_some()
            && let Some(outbox) = &group.outbox
        {
            if let Some(mark) = group.relayed_mark {
                outbox.journaled(mark);
            }
            let store = &self.store;
            let spill = |dropped: &[PendingEvent]| {
                store.spill_events(dropped.iter().map(|e| (e.sequence, &e.event)))
            };
            outbox.committed(group.events.drain(..), &group.erased, spill)?;
        }
        let (bytes, sync) = group.journaled.unzip();
        let elapsed = group.started.elapsed();
        self.metrics
            .group_committed(group.size, bytes.unwrap_or(0), elapsed, sync);
        tracing::debug!(
            group_size = group.size,
            elapsed_us = elapsed.as_micros() as u64,
            "group committed"
        );
        self.store.clock.end_group(group.created_ms);
        Ok(())
    }
}
