//! Group commit: where a write becomes durable. Request tasks hand validated [`Write`]s, and
//! the worker's own parts hand [`Control`] messages, to one committer thread through a bounded
//! queue ([`CommitHandle`]); the [`engine`] takes everything queued and, for each group,
//! gathers, plans (decides every member against the email index, assigns ids in commit order,
//! decides every reply), persists (one journal append and `fdatasync`, or, replicated, one log
//! append) and has the [`applier`] deliver it (apply to sled, then answer): a single worker's
//! on a thread of its own while the next group is planned and synced. Its [`mode`] says which
//! of that it does: a single worker, a standby applying the log, or the primary.
//!
//! Beside it: [`ids`] (new ids above every stored one), [`known_emails`] (which emails need
//! an index lookup), [`outbox`] (the events the relay has yet to publish, shared with it),
//! the [`checkpointer`] thread, and the [`purger`] and [`checkpoint_clock`] tasks.

mod applier;
pub(crate) mod checkpoint_clock;
pub(crate) mod checkpointer;
mod engine;
pub(crate) mod ids;
pub(crate) mod known_emails;
pub(crate) mod mode;
pub(crate) mod outbox;
pub(crate) mod purger;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use customers_shared::wire::conditional::Condition;
use customers_shared::{CustomerId, CustomerPatch, NewCustomer};
use tokio::sync::{mpsc, oneshot};

use crate::idempotency::IdempotencyClaim;
use crate::replication::lease::LeaseClock;
use crate::reply::Reply;
use crate::storage::backup::{SnapshotError, Summary};

pub(crate) use engine::{Prepared, spawn};
pub(crate) use outbox::Outbox;

/// What a client's request asks the committer to make durable.
#[derive(Debug)]
pub(crate) enum Write {
    /// A validated new customer; with a claim, its reply is stored under the key.
    Create {
        customer: NewCustomer,
        claim: Option<IdempotencyClaim>,
    },
    /// The final reply of an idempotent write refused before it reached the committer
    /// (not JSON, invalid fields), stored so that a retry is answered the same.
    Remember {
        claim: IdempotencyClaim,
        reply: Reply,
    },
    /// A merge patch of customer `id`'s fields, applied to the customer as the group finds
    /// it, only at a version `condition` (`If-Match`) accepts.
    Update {
        id: CustomerId,
        patch: CustomerPatch,
        condition: Option<Condition>,
        claim: Option<IdempotencyClaim>,
    },
    /// The erasure of customer `id`, only at a version `condition` accepts.
    Delete {
        id: CustomerId,
        condition: Option<Condition>,
        claim: Option<IdempotencyClaim>,
    },
}

/// What the worker's own parts ask of the committer, in order with the writes around them.
#[derive(Debug)]
pub(crate) enum Control {
    /// Nothing but the relay's acknowledged mark (see `outbox`), when no other group has
    /// carried it for a while.
    RecordRelayed,
    /// A standby: the log's group `sequence`, to apply after the ones before it.
    ApplyLogGroup { sequence: u64, record: Bytes },
    /// A standby that holds the lease and applied the log through `expected_last` becomes
    /// the primary (with the outbox its relay will publish, when events are on).
    Promote {
        expected_last: u64,
        lease: LeaseClock,
        outbox: Option<Arc<Outbox>>,
    },
    /// A snapshot of the database as of the groups committed before it, written to `path`;
    /// its outcome goes to `done`.
    Snapshot {
        path: PathBuf,
        done: oneshot::Sender<Result<Summary, SnapshotError>>,
    },
    /// Removes up to `batch` idempotency records committed before `created_before_ms`; how
    /// many goes to `done`. Here rather than in its own task so that only this thread writes
    /// sled while the worker runs, and a storage error in it stops the worker like any other.
    PurgeExpired {
        created_before_ms: u64,
        batch: usize,
        done: oneshot::Sender<usize>,
    },
    /// Nothing to commit: wakes the committer so that it checkpoints a journal segment older
    /// than `--checkpoint-interval` while no write comes (`checkpoint_clock`).
    CheckpointIfDue,
}

/// Why a write or a control got no answer of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The queue is full: the worker is overloaded.
    #[error("the commit queue is full")]
    Overloaded,
    /// The committer has stopped: the worker is shutting down or has failed.
    #[error("the committer has stopped")]
    Stopped,
    /// The group's journal write, sync or apply failed; the worker is stopping. The write
    /// may or may not be durable.
    #[error("the group commit failed")]
    Failed,
    /// A value over the store's bound: a bug, refused instead of stored.
    #[error("a value is too large to store")]
    Unstorable,
    /// The event outbox is full (JetStream has been unreachable for long): the create is
    /// refused rather than stored without its event.
    #[error("the event outbox is full")]
    OutboxFull,
    /// Replicated: this instance is not (or no longer) the primary.
    #[error("this instance is not the primary")]
    NotPrimary,
    /// A log group or a promotion reached an instance that is not a standby.
    #[error("this instance does not follow the log")]
    NotStandby,
}

/// Why a snapshot was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotFailed {
    #[error("the committer did not take the snapshot: {0}")]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

type Answer = Result<Reply, CommitError>;
type Done = Result<(), CommitError>;

/// A queued write or control with where its outcome goes.
// Writes are most of the queue: boxing them would cost an allocation per create.
#[allow(clippy::large_enum_variant)]
enum Job {
    Write {
        write: Write,
        answer: oneshot::Sender<Answer>,
    },
    Control {
        control: Control,
        done: oneshot::Sender<Done>,
    },
}

/// Submits writes and controls to the committer thread. Cheap to clone; the thread stops
/// once every handle is dropped and the queue is drained.
#[derive(Clone)]
pub(crate) struct CommitHandle {
    queue: mpsc::Sender<Job>,
}

impl CommitHandle {
    /// A view of the queue's depth that does not keep the committer running.
    pub(crate) fn probe(&self) -> QueueProbe {
        QueueProbe(self.queue.downgrade())
    }

    /// Queues `write` (503-worthy `Overloaded` when the queue is full) and waits until its
    /// group is durable and applied.
    pub(crate) async fn commit(&self, write: Write) -> Answer {
        let (answer, outcome) = oneshot::channel();
        self.try_queue(Job::Write { write, answer })?;
        outcome.await.map_err(|_| CommitError::Stopped)?
    }

    /// Queues `control` and waits until the committer has carried it out.
    pub(crate) async fn control(&self, control: Control) -> Done {
        let (done, outcome) = oneshot::channel();
        self.try_queue(Job::Control { control, done })?;
        outcome.await.map_err(|_| CommitError::Stopped)?
    }

    /// A standby's follower: queues the log's group `sequence`, waiting for room in the
    /// queue (its backpressure); returns where the outcome will arrive.
    pub(crate) async fn apply_log_group(
        &self,
        sequence: u64,
        record: Bytes,
    ) -> Result<oneshot::Receiver<Done>, CommitError> {
        let (done, outcome) = oneshot::channel();
        let control = Control::ApplyLogGroup { sequence, record };
        self.queue
            .send(Job::Control { control, done })
            .await
            .map_err(|_| CommitError::Stopped)?;
        Ok(outcome)
    }

    fn try_queue(&self, job: Job) -> Result<(), CommitError> {
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommitError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => CommitError::Stopped,
        })
    }
}

/// Reads how many writes wait for the committer (0 once it has stopped), and asks it for a
/// snapshot or a purge, without keeping it running.
#[derive(Clone)]
pub(crate) struct QueueProbe(mpsc::WeakSender<Job>);

impl QueueProbe {
    pub(crate) fn queued(&self) -> usize {
        self.0
            .upgrade()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }

    /// Has the committer write a snapshot to `path` between two groups.
    pub(crate) async fn snapshot(&self, path: PathBuf) -> Result<Summary, SnapshotFailed> {
        Ok(self.ask(|done| Control::Snapshot { path, done }).await??)
    }

    /// Has the committer remove up to `batch` idempotency records committed before
    /// `created_before_ms`; returns how many it removed (fewer than `batch`: none left).
    pub(crate) async fn purge_expired(
        &self,
        created_before_ms: u64,
        batch: usize,
    ) -> Result<usize, CommitError> {
        self.ask(|done| Control::PurgeExpired {
            created_before_ms,
            batch,
            done,
        })
        .await
    }

    /// Has the committer start a checkpoint if its active journal segment is old enough.
    pub(crate) async fn checkpoint_if_due(&self) -> Result<(), CommitError> {
        let queue = self.0.upgrade().ok_or(CommitError::Stopped)?;
        CommitHandle { queue }
            .control(Control::CheckpointIfDue)
            .await?;
        Ok(())
    }

    /// Queues the control `ask` builds around where its result goes, and waits for it.
    async fn ask<T>(
        &self,
        ask: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, CommitError> {
        let queue = self.0.upgrade().ok_or(CommitError::Stopped)?;
        let (done, result) = oneshot::channel();
        CommitHandle { queue }.control(ask(done)).await?;
        result.await.map_err(|_| CommitError::Stopped)
    }
}

/// The committer's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Writes that may wait in the queue.
    pub(crate) max_pending: usize,
    /// Writes in one group at most.
    pub(crate) max_group: usize,
    /// Size of the active journal segment that starts a checkpoint.
    pub(crate) checkpoint_bytes: u64,
    /// Age of an active journal segment with records in it that starts a checkpoint.
    pub(crate) checkpoint_interval: Duration,
}

impl Limits {
    /// The queue, group and journal bounds `config` sets.
    pub(crate) fn of(config: &crate::config::Config) -> Self {
        Self {
            max_pending: config.max_pending,
            max_group: config.max_group,
            checkpoint_bytes: config.checkpoint_bytes,
            checkpoint_interval: config.checkpoint_interval,
        }
    }
}
