//! The event outbox as stored: the tail of the record tree. Ids sort in commit order, so the
//! customers whose `customer.created` event JetStream has not acknowledged are exactly those
//! above the *relayed mark*, the newest id it acknowledged, kept in the `relayed` tree. A
//! customer and its pending event are therefore one write: the record itself. The mark
//! advances with later groups (`crate::commit::outbox`); nothing is removed per event.

use std::ops::Bound;

use customers_shared::CustomerId;
use sled::IVec;

use crate::storage::store::reads::id_from_bytes;
use crate::storage::store::{Store, StoreError};

/// The one key of the `relayed` tree.
pub(crate) const RELAYED_KEY: &[u8] = b"through";

impl Store {
    /// The newest id whose event JetStream acknowledged, as last journaled.
    pub(crate) fn relayed_through(&self) -> Result<Option<CustomerId>, StoreError> {
        Ok(self
            .relayed
            .get(RELAYED_KEY)?
            .map(|bytes| id_from_bytes(&bytes)))
    }

    /// Up to `limit` customers created after `after` (all when `None`), oldest first: the
    /// pending events when `after` is the relayed mark.
    pub fn customers_after(
        &self,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<Vec<(CustomerId, IVec)>, StoreError> {
        let start = after.map_or(Bound::Unbounded, |id| Bound::Excluded(id.to_bytes()));
        self.records
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|entry| {
                let (key, record) = entry?;
                Ok((id_from_bytes(&key), record))
            })
            .collect()
    }

    /// How many customers were created after `after` (all when `None`).
    pub(crate) fn count_after(&self, after: Option<CustomerId>) -> Result<usize, StoreError> {
        let start = after.map_or(Bound::Unbounded, |id| Bound::Excluded(id.to_bytes()));
        let mut count = 0;
        for entry in self.records.range((start, Bound::Unbounded)) {
            entry?;
            count += 1;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::{Batch, TreeId};

    #[test]
    fn pending_events_are_the_customers_above_the_relayed_mark() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let ids = crate::storage::store::ascending_ids(5);
        let mut batch = Batch::default();
        for id in &ids {
            batch.put(TreeId::Customers, &id.to_bytes(), b"{}");
        }
        batch.put(TreeId::Relayed, RELAYED_KEY, &ids[1].to_bytes());
        store.apply(batch.puts()).unwrap();
        let mark = store.relayed_through().unwrap();
        assert_eq!(mark, Some(ids[1]));
        let pending: Vec<CustomerId> = store
            .customers_after(mark, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(pending, ids[2..]);
        assert_eq!(store.count_after(mark).unwrap(), 3);
        assert_eq!(store.count_after(None).unwrap(), 5);
    }
}
