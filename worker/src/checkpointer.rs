//! The checkpointer thread: when the committer starts a new journal segment, this thread
//! makes sled durable (`Store::checkpoint`) and then removes the segments before the new one,
//! so the journal, and with it recovery time, stays bounded. It runs beside the committer,
//! which keeps committing into the new segment meanwhile. A failure is fail-stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::health::{Failure, Health};
use crate::journal;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

pub struct Checkpointer {
    /// Numbers of the segments below which everything is applied; `None` once stopping.
    requests: Option<mpsc::Sender<u64>>,
    idle: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    health: Health,
}

impl Checkpointer {
    pub fn spawn(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> std::io::Result<Self> {
        let (requests, received) = mpsc::channel::<u64>();
        let idle = Arc::new(AtomicBool::new(true));
        let thread = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn({
                let (idle, health) = (idle.clone(), health.clone());
                move || {
                    let _trip = health.trip_on_panic("checkpointer");
                    for below in received {
                        let started = Instant::now();
                        match checkpoint(&store, below) {
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
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Acquire)
    }

    /// Checkpoints everything applied so far and removes the segments numbered below `below`.
    pub fn start(&self, below: u64) {
        self.idle.store(false, Ordering::Release);
        if let Some(requests) = &self.requests {
            // A checkpointer that already failed has tripped health itself.
            let _ = requests.send(below);
        }
    }

    /// Waits for a running checkpoint to end and stops the thread.
    pub fn stop(mut self) {
        self.requests = None;
        if self.thread.join().is_err() {
            self.health
                .fail(Failure::panic("the checkpointer thread panicked"));
        }
    }
}

fn checkpoint(store: &Store, below: u64) -> Result<(), StoreError> {
    store.checkpoint()?;
    failpoint!("checkpoint-before-remove", |_| crate::crash());
    journal::remove_segments_before(&store.journal_dir(), below)?;
    Ok(())
}
