//! Waiting between attempts: a pause that doubles up to a ceiling ([`Backoff`]), and
//! retrying an operation until it succeeds ([`forever`]) or a deadline passes ([`until`]). Every loop in the
//! worker that tries again after a failure uses one of them.

use std::future::Future;
use std::time::Duration;

/// Pauses of `first`, doubling after each failure, at most `most`; back to `first` after a
/// success.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    first: Duration,
    most: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, most: Duration) -> Self {
        Self {
            first,
            most,
            next: first,
        }
    }

    /// The same pause every time.
    pub(crate) fn constant(pause: Duration) -> Self {
        Self::new(pause, pause)
    }

    /// Sleeps for the current pause, then doubles it (up to the ceiling).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.most);
    }

    /// After a success: the next failure waits the shortest pause again.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `attempt` until it succeeds, pausing as `backoff` says; each failure is handed to
/// `on_retry` (to log it).
pub(crate) async fn forever<T, E, F>(
    mut backoff: Backoff,
    mut attempt: impl FnMut() -> F,
    mut on_retry: impl FnMut(&E),
) -> T
where
    F: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                on_retry(&e);
                backoff.wait().await;
            }
        }
    }
}

/// `attempt` until it succeeds or `patience` has passed (then its last error), pausing as
/// `backoff` says; each failure but the last is handed to `on_retry` (to log it).
pub(crate) async fn until<T, E, F>(
    patience: Duration,
    mut backoff: Backoff,
    mut attempt: impl FnMut() -> F,
    mut on_retry: impl FnMut(&E),
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match attempt().await {
            Err(e) if tokio::time::Instant::now() < deadline => {
                on_retry(&e);
                backoff.wait().await;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_double_to_the_ceiling_and_retries_stop_at_the_deadline() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(150));
        let started = tokio::time::Instant::now();
        for _ in 0..4 {
            backoff.wait().await;
        }
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(50 + 100 + 150 + 150)
        );
        backoff.reset();
        let started = tokio::time::Instant::now();
        backoff.wait().await;
        assert_eq!(started.elapsed(), Duration::from_millis(50));

        let mut attempts = 0;
        let mut retried = 0;
        let outcome: Result<(), u32> = until(
            Duration::from_millis(250),
            Backoff::constant(Duration::from_millis(100)),
            || {
                attempts += 1;
                std::future::ready(Err(attempts))
            },
            |_| retried += 1,
        )
        .await;
        assert_eq!(
            (outcome, retried),
            (Err(4), 3),
            "tried at 0, 100, 200 and 300 ms"
        );
    }
}
