//! Fail-stop. After a storage error (a journal write or sync, applying to sled, a checkpoint)
//! nothing on disk can be trusted to match what the process believes (the PostgreSQL
//! "fsyncgate" lesson: a failed fsync may have dropped the dirty pages), and after a panic
//! of the committer nothing can be committed. Either trips [`Health`]: no later group is
//! committed, readiness turns false, the service stops taking requests, and the process
//! exits non-zero so that its supervisor restarts it; recovery then replays the journal.

use std::sync::Arc;

use tokio::sync::watch;

/// Why the worker stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub(crate) kind: FailureKind,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Reading or writing the journal or the database failed.
    Storage,
    /// A worker thread panicked (a bug).
    Panic,
    /// Replicated: this instance lost the primary lease or was fenced off the log.
    Fenced,
}

impl Failure {
    pub(crate) fn storage(error: impl std::fmt::Display) -> Self {
        Self {
            kind: FailureKind::Storage,
            message: error.to_string(),
        }
    }

    pub(crate) fn fenced(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Fenced,
            message: message.into(),
        }
    }

    pub(crate) fn panic(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Panic,
            message: message.into(),
        }
    }

    /// The process's exit code: sysexits' `EX_IOERR` for storage, `EX_SOFTWARE` for a bug,
    /// `EX_TEMPFAIL` for a replicated primary that lost its lease (it restarts as a standby).
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            FailureKind::Storage => 74,
            FailureKind::Panic => 70,
            FailureKind::Fenced => 75,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FailureKind::Storage => write!(f, "storage failed: {}", self.message),
            FailureKind::Panic => write!(f, "{}", self.message),
            FailureKind::Fenced => write!(f, "no longer the primary: {}", self.message),
        }
    }
}

/// Whether the worker may still commit; cheap to clone and share between threads.
#[derive(Clone)]
pub(crate) struct Health(Arc<watch::Sender<Option<Failure>>>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(watch::channel(None).0))
    }
}

impl Health {
    /// Records the first failure (later ones are only logged) and wakes [`Health::failed`].
    pub(crate) fn fail(&self, failure: Failure) {
        tracing::error!(%failure, "stopping: the worker can no longer commit");
        self.0.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(failure);
            }
            first
        });
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.0.borrow().clone()
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Resolves with the failure once there is one.
    pub(crate) async fn failed(&self) -> Failure {
        let mut watch = self.0.subscribe();
        match watch.wait_for(Option::is_some).await {
            Ok(failure) => failure.clone().expect("waited for Some"),
            // The sender lives in `self`: it cannot be gone while we wait.
            Err(_) => unreachable!("health sender dropped"),
        }
    }

    /// A guard for a thread's body: if the thread unwinds, the worker fails.
    pub(crate) fn trip_on_panic(&self, thread: &'static str) -> PanicTrip {
        PanicTrip {
            health: self.clone(),
            thread,
        }
    }
}

pub(crate) struct PanicTrip {
    health: Health,
    thread: &'static str,
}

impl Drop for PanicTrip {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.health.fail(Failure::panic(format!(
                "the {} thread panicked",
                self.thread
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_wins_and_wakes_waiters() {
        let health = Health::default();
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.failed().await }
        });
        assert!(!health.is_failed());
        health.fail(Failure::storage("disk on fire"));
        health.fail(Failure::panic("later"));
        let failure = waiter.await.unwrap();
        assert_eq!(failure.kind, FailureKind::Storage);
        assert_eq!(health.failure(), Some(failure));
    }

    #[test]
    fn a_panicking_thread_trips_health() {
        let health = Health::default();
        let thread = std::thread::spawn({
            let health = health.clone();
            move || {
                let _trip = health.trip_on_panic("test");
                panic!("boom");
            }
        });
        assert!(thread.join().is_err());
        assert_eq!(health.failure().map(|f| f.exit_code()), Some(70));
    }
}
