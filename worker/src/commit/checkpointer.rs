//! The checkpointer thread: when the committer starts a new journal segment, this thread
//! makes sled durable (`Store::checkpoint`), records that in the checkpoint manifest (with the
//! record tree's keys as they were when the segment started), and then removes the segments
//! before the new one, so the journal, and with it recovery time, stays bounded. It runs
//! beside the committer, which keeps committing into the new segment meanwhile. A failure
//! is fail-stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::health::{Failure, Health};
use crate::metrics::Metrics;
use crate::storage::journal::{self, Promise};
use crate::storage::store::manifest::RecordKeys;
use crate::storage::store::{Store, StoreError};

/// A checkpoint to make: the new segment's number (everything below it is applied) and the
/// record tree's keys when it started.
type Request = (u64, RecordKeys);

pub(crate) struct Checkpointer {
    /// Checkpoints to make; `None` once stopping.
    requests: Option<mpsc::Sender<Request>>,
    idle: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    health: Health,
}

impl Checkpointer {
    pub(crate) fn spawn(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> std::io::Result<Self> {
        let (requests, received) = mpsc::channel::<Request>();
        let idle = Arc::new(AtomicBool::new(true));
        let thread = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn({
                let (idle, health) = (idle.clone(), health.clone());
                move || {
                    let _trip = health.trip_on_panic("checkpointer");
                    for (below, records) in received {
                        let started = Instant::now();
                        match checkpoint(&store, below, records) {
                            Ok(()) => {
                                metrics.checkpointed(started.elapsed());
                                tracing::debug!(
                                    below,
                                    elapsed_ms = started.elapsed().as_millis() as u64,
                                    "checkpoint done"
                                );
                                idle.store(true, Ordering::Release);
                            }
                            Err(e) => {
                                health.fail(Failure::storage(e));
                                return;
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            requests: Some(requests),
            idle,
            thread,
            health,
        })
    }

    /// Whether the last checkpoint has finished.
    pub(crate) fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    /// Checkpoints everything applied so far and removes the segments numbered below
    /// `below`; `records` are the record tree's keys as of segment `below`'s start.
    pub(crate) fn start(&self, below: u64, records: RecordKeys) {
        self.idle.store(false, Ordering::Release);
        if let Some(requests) = &self.requests {
            // A checkpointer that already failed has tripped health itself.
            let _ = requests.send((below, records));
        }
    }

    /// Waits for a running checkpoint to end and stops the thread.
    pub(crate) fn stop(mut self) {
        self.requests = None;
        if self.thread.join().is_err() {
            self.health
                .fail(Failure::panic("the checkpointer thread panicked"));
        }
    }
}

fn checkpoint(store: &Store, below: u64, records: RecordKeys) -> Result<(), StoreError> {
    store.checkpoint()?;
    store.record_checkpoint(
        Promise {
            covered_below: below,
            created_through: below,
        },
        records,
    )?;
    failpoint!("checkpoint-before-remove", |_| crate::support::crash());
    journal::remove_segments_before(&store.journal_dir(), below)?;
    Ok(())
}
