//! The schedule of the idempotency purge: every `retention / 4` (at most every 10 minutes) a
//! task asks the committer to remove expired records (`idempotency::purge`), a batch at a
//! time, until none is left. The committer does the removing, between two groups, so that
//! only it writes sled while the worker runs and a storage error stops the worker as any
//! commit's would.

use std::time::Duration;

use super::{CommitError, QueueProbe};
use crate::idempotency::record;

/// Purges expired records every `retention / 4` (at most every 10 minutes) until the
/// committer stops. Each batch is a few hundred small sled operations (about a millisecond)
/// that the committer runs between two groups; a queue full of writes postpones the purge to
/// the next tick. A storage error in a batch stops the worker as any commit's would.
pub(crate) async fn purge_expired_forever(committer: QueueProbe, retention: Duration) {
    const BATCH: usize = 256;
    let period = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600));
    // Not at once: a start needs no purge (a lookup ignores expired records anyway).
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cutoff = record::oldest_kept_ms(retention);
        let mut purged = 0;
        loop {
            match committer.purge_expired(cutoff, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < BATCH {
                        break;
                    }
                }
                Err(CommitError::Overloaded) => break,
                Err(_) => return,
            }
        }
        if purged > 0 {
            tracing::info!(purged, "expired idempotency keys purged");
        }
    }
}
