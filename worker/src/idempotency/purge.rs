//! The purge of expired idempotency records, in time order along the expiry entries, one
//! batch at a time. The committer runs each batch between two groups (`commit::purger` asks
//! it to), so that only it writes sled while the worker runs. Purges are not journaled: one
//! lost in a crash is simply done again.

use crate::storage::journal::TreeId;
use crate::storage::schema;
use crate::storage::store::{Store, StoreError};

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
