//! The time bound on the journal: a task wakes the committer every quarter of
//! `--checkpoint-interval` (between 50 ms and a minute), and the committer starts a
//! checkpoint when its active segment has held records for longer than the interval (see
//! `engine`), however few. Under load the bytes bound comes first; a quiet worker would
//! otherwise keep what a delete erased in its journal for as long as nobody writes.

use std::time::Duration;

use super::{CommitError, QueueProbe};

/// Until the committer stops, asks it every `interval / 4` whether its active segment is
/// old enough to checkpoint. A full queue skips a tick: the groups it holds check anyway.
pub(crate) async fn checkpoint_old_segments_forever(committer: QueueProbe, interval: Duration) {
    let period = (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match committer.checkpoint_if_due().await {
            Ok(()) | Err(CommitError::Overloaded) => {}
            Err(_) => return,
        }
    }
}
