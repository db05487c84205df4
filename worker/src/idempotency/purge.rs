//! The background purge of expired idempotency records: every `retention / 4` (at most every
//! 10 minutes), in time order along the expiry entries, in batches on the blocking pool.
//! Purges are not journaled: one lost in a crash is simply done again.

use std::sync::Arc;
use std::time::Duration;

use super::record;
use crate::storage::journal::TreeId;
use crate::storage::schema;
use crate::storage::store::{Store, StoreError};
use crate::support::blocking;

/// Removes up to `batch` records committed before `created_before_ms`, oldest first; returns
/// how many expiry entries it removed (fewer than `batch`: none left). A record is removed
/// only if it is still the expired one (compare-and-swap), so a key reused since keeps its
/// new record. Not journaled: a removal lost in a crash is simply done again.
pub(crate) fn purge_expired(
    store: &Store,
    created_before_ms: u64,
    batch: usize,
) -> Result<usize, StoreError> {
    let tree = store.tree(TreeId::Idempotency);
    let start = schema::IDEMPOTENCY_EXPIRY_PREFIX;
    let end = [start, &created_before_ms.to_be_bytes()[..]].concat();
    let expired: Vec<sled::IVec> = tree
        .range(start..&end[..])
        .keys()
        .take(batch)
        .collect::<Result<_, _>>()?;
    for expiry in &expired {
        let (created_ms, key) = expiry[1..].split_at(8);
        let record_key = [schema::IDEMPOTENCY_RECORD_PREFIX, key].concat();
        let record = tree.get(&record_key)?;
        if let Some(record) = record.filter(|r| r.get(1..9) == Some(created_ms)) {
            // A failed swap means the key was just reused: its new record stays.
            let _ = tree.compare_and_swap(&record_key, Some(&record), None::<&[u8]>)?;
        }
        tree.remove(expiry)?;
    }
    Ok(expired.len())
}

/// Purges expired records every `retention / 4` (at most every 10 minutes) until the task is
/// aborted. Each batch is a few hundred small sled operations (about a millisecond) on the
/// blocking pool, never on the runtime's thread. Aborting the task drops its handle on the
/// store once the running batch ends, so a stopped worker releases the database.
pub(crate) async fn purge_expired_forever(store: Arc<Store>, retention: Duration) {
    const BATCH: usize = 256;
    let period = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cutoff = record::oldest_kept_ms(retention);
        let mut purged = 0;
        loop {
            let store = store.clone();
            let batch = blocking::run(move || purge_expired(&store, cutoff, BATCH)).await;
            match batch {
                Ok(Ok(n)) => {
                    purged += n;
                    if n < BATCH {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "idempotency purge failed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency purge failed");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "expired idempotency keys purged");
        }
    }
}
