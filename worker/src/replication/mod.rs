//! Replicated mode (`--replication jetstream`, docs/API.md §9): the parts every instance
//! shares. The committed groups live in a replicated JetStream stream, the [`log::Log`]; every
//! instance's sled database is a copy of it, applied in order and never ahead of it. The
//! primary holds the [`lease::Lease`]; snapshots of the database live in an object store
//! bucket ([`snapshots`]); every instance's reads pass its [`ReadGate`].
//!
//! What drives them (a standby following the log, the take-over, the periodic snapshot) is in
//! `lifecycle::replicated`; the committer (`commit`) does the appending and applying.

pub(crate) mod lease;
pub(crate) mod log;
pub(crate) mod snapshots;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::support::retry::Backoff;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("replicated mode: cannot set up {what}: {source}")]
    Setup {
        what: String,
        source: async_nats::Error,
    },
    #[error(
        "replicated mode: the newest snapshot holds the log up to {snapshot}, but the log now starts at {first}: groups in between are lost"
    )]
    SnapshotBehindLog { snapshot: u64, first: u64 },
    #[error(
        "replicated mode: this data directory holds customers but was never part of a replicated log (single-node data); start replicated mode on an empty data directory"
    )]
    NotReplicatedData,
}

impl ReplicationError {
    pub(crate) fn setup(what: String, source: impl Into<async_nats::Error>) -> Self {
        Self::Setup {
            what,
            source: source.into(),
        }
    }
}

/// Read-your-writes on a standby: before a read, wait until everything the log held at the
/// time of the read is applied here, so that no write some client was already told about is
/// missing or shown at an older version.
pub(crate) struct ReadBarrier {
    pub(crate) log: Arc<log::Log>,
    pub(crate) applied: watch::Receiver<u64>,
}

impl ReadBarrier {
    /// Whether this instance caught up with the log as it is now, within `wait` (reading
    /// the log's end is retried within it: a node may be failing over); with no wait, whether
    /// it has applied the log's end already.
    pub(crate) async fn caught_up(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let pause = Backoff::constant(Duration::from_millis(100));
        let last = crate::support::retry::until(wait, pause, || self.log.last_sequence(), |_| {});
        let Ok(last) = last.await else {
            return false;
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
pub(crate) enum ReadGate {
    /// One worker on its own disk: everything acknowledged is in its database.
    Single,
    /// A standby: every read catches up first.
    Standby(Arc<ReadBarrier>),
    /// The primary: everything acknowledged is in its database while its lease is surely
    /// held; past that, only if the log holds nothing beyond what it applied.
    Primary {
        lease: lease::LeaseClock,
        barrier: Arc<ReadBarrier>,
    },
}

impl ReadGate {
    /// Before a read: a standby catches up with the log (since updates, a customer it holds
    /// may be older than one acknowledged, so a hit needs it as much as a miss); `false` when
    /// it could not, and the read is to be answered 503.
    pub(crate) async fn caught_up(&self) -> bool {
        match self {
            Self::Standby(barrier) => barrier.caught_up(BARRIER_WAIT).await,
            Self::Single | Self::Primary { .. } => true,
        }
    }

    /// After a read, before its answer: whether what this instance read is still all there
    /// is. A primary that may have been paused past its lease asks the log (without waiting:
    /// it no longer follows it).
    pub(crate) async fn still_current(&self) -> bool {
        match self {
            Self::Primary { lease, barrier } => {
                lease.is_valid() || barrier.caught_up(Duration::ZERO).await
            }
            Self::Single | Self::Standby(_) => true,
        }
    }
}
