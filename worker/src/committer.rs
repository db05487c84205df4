//! Group commit. Request tasks hand validated writes to one committer thread through a
//! bounded queue. The thread takes everything queued (up to `max_group`), commits it as one
//! transaction with one fsync, then answers every member. Under load one fsync serves many
//! writes; a lone write is committed as soon as it arrives, with no added wait.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::store::{Outcome, Pending, Store, StoreError};

/// Why a create was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The queue is full: the worker is overloaded.
    #[error("the commit queue is full")]
    Overloaded,
    /// The committer has stopped (the worker is shutting down).
    #[error("the committer has stopped")]
    Stopped,
    /// The group's transaction or fsync failed; nothing of the group is acknowledged.
    #[error("group commit failed: {0}")]
    Store(Arc<StoreError>),
}

struct Job {
    write: Pending,
    reply: oneshot::Sender<Result<Outcome, CommitError>>,
}

/// Submits writes to the committer thread. Cheap to clone; the thread stops once every
/// handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct CommitHandle {
    queue: mpsc::Sender<Job>,
}

impl CommitHandle {
    /// A view of the queue's depth that does not keep the committer running.
    pub fn probe(&self) -> QueueProbe {
        QueueProbe(self.queue.downgrade())
    }

    /// Queues `write` and waits until its group is durable.
    pub async fn commit(&self, write: Pending) -> Result<Outcome, CommitError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .try_send(Job { write, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => CommitError::Stopped,
            })?;
        outcome.await.map_err(|_| CommitError::Stopped)?
    }
}

/// Reads how many writes wait for the committer (0 once it has stopped).
#[derive(Clone)]
pub struct QueueProbe(mpsc::WeakSender<Job>);

impl QueueProbe {
    pub fn queued(&self) -> usize {
        self.0
            .upgrade()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }
}

/// Starts the committer thread. Join the returned handle after dropping every
/// [`CommitHandle`] to wait for the last group.
pub fn spawn(
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    max_pending: usize,
    max_group: usize,
) -> std::io::Result<(CommitHandle, JoinHandle<()>)> {
    let (queue, jobs) = mpsc::channel(max_pending.max(1));
    let thread = std::thread::Builder::new()
        .name("committer".into())
        .spawn(move || run(&store, &metrics, jobs, max_group.max(1)))?;
    Ok((CommitHandle { queue }, thread))
}

fn run(store: &Store, metrics: &Metrics, mut jobs: mpsc::Receiver<Job>, max_group: usize) {
    let mut writes: Vec<Pending> = Vec::with_capacity(max_group);
    let mut replies = Vec::with_capacity(max_group);
    while let Some(first) = jobs.blocking_recv() {
        let mut next = Some(first);
        while let Some(Job { write, reply }) = next {
            writes.push(write);
            replies.push(reply);
            next = if writes.len() < max_group {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        let started = std::time::Instant::now();
        let result = store.commit_timed(&writes);
        let elapsed = started.elapsed();
        tracing::debug!(
            group_size = writes.len(),
            elapsed_us = elapsed.as_micros() as u64,
            "group committed"
        );
        match result {
            Ok((outcomes, sync)) => {
                metrics.group_committed(writes.len(), elapsed, sync);
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    // A requester that went away no longer needs its answer.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, group_size = writes.len(), "group commit failed");
                let e = Arc::new(e);
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(CommitError::Store(e.clone())));
                }
            }
        }
        writes.clear();
    }
    tracing::debug!("committer stopped: queue closed and drained");
}

#[cfg(test)]
mod tests {
    use super::*;
    use customers_shared::CustomerId;

    fn pending(email: &str) -> Pending {
        Pending::Create(crate::store::PendingCreate {
            id: CustomerId::generate(),
            email_key: email.to_owned(),
            json: bytes::Bytes::from_static(b"{}"),
            claim: None,
        })
    }

    #[tokio::test]
    async fn a_failed_sync_fails_every_member_of_the_group_and_the_committer_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::store_failing_sync(dir.path()));
        let (handle, thread) = spawn(store, Arc::default(), 16, 16).unwrap();
        let (a, b) = tokio::join!(
            handle.commit(pending("a@x.com")),
            handle.commit(pending("b@x.com"))
        );
        assert!(matches!(a, Err(CommitError::Store(_))), "{a:?}");
        assert!(matches!(b, Err(CommitError::Store(_))), "{b:?}");
        // Still serving: the next group is attempted (and fails the same way here).
        let c = handle.commit(pending("c@x.com")).await;
        assert!(matches!(c, Err(CommitError::Store(_))), "{c:?}");
        drop(handle);
        thread.join().unwrap();
    }
}
