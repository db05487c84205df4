//! Work for tokio's blocking pool (sled reads that may wait for the disk, joining a thread):
//! one way to run it and to treat a panic there, which is a bug (release builds abort on any
//! panic; test builds report it as an error here).

/// The blocking task panicked.
#[derive(Debug, thiserror::Error)]
#[error("a blocking task panicked: {0}")]
pub struct Panicked(String);

/// Runs `work` on the blocking pool and returns its result.
pub(crate) async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Panicked> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Panicked(e.to_string()))
}
