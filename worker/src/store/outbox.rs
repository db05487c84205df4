//! The event outbox as stored. The committer puts the id of every new customer into
//! `outbox` in the same journal record as the customer itself, so an event is pending exactly
//! when its customer is stored. The relay reads pending ids in key order, which is commit
//! order (ids are), publishes their events and removes the ids JetStream acknowledged.
//!
//! Those removals are plain sled removes, not journaled: after a crash, journal replay can put
//! back ids that were already relayed. What keeps them from being published twice is the
//! `relayed` mark, the newest id JetStream acknowledged, which the committer journals with a
//! later group (`crate::outbox`): [`Store::trim_relayed`] drops every pending id at or below it
//! before the relay starts.

use customers_shared::CustomerId;
use sled::IVec;

use crate::store::reads::id_from_bytes;
use crate::store::{Store, StoreError};

/// The one key of the `relayed` tree.
pub const RELAYED_KEY: &[u8] = b"through";

impl Store {
    /// Up to `limit` pending events, oldest first: each customer's id and stored record.
    pub fn pending_events(&self, limit: usize) -> Result<Vec<(CustomerId, IVec)>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.outbox.iter().take(limit) {
            let (key, _) = entry?;
            let id = id_from_bytes(&key);
            let record = self.records.get(&key)?.ok_or_else(|| StoreError::Corrupt {
                what: format!("outbox entry {id}"),
                reason: "its customer is not stored".into(),
            })?;
            pending.push((id, record));
        }
        Ok(pending)
    }

    /// Removes relayed ids from the outbox (not durably; see the module header).
    pub fn remove_pending(&self, ids: &[CustomerId]) -> Result<(), StoreError> {
        for id in ids {
            self.outbox.remove(id.to_bytes())?;
        }
        Ok(())
    }

    /// The oldest pending event's customer id.
    pub fn oldest_pending(&self) -> Result<Option<CustomerId>, StoreError> {
        Ok(self.outbox.first()?.map(|(key, _)| id_from_bytes(&key)))
    }

    /// The newest id whose event JetStream acknowledged, as last journaled.
    pub fn relayed_through(&self) -> Result<Option<CustomerId>, StoreError> {
        Ok(self
            .relayed
            .get(RELAYED_KEY)?
            .map(|bytes| id_from_bytes(&bytes)))
    }

    /// Drops the pending ids at or below the relayed mark (put back by journal replay after
    /// a crash); returns how many ids remain pending.
    pub fn trim_relayed(&self) -> Result<usize, StoreError> {
        if let Some(through) = self.relayed_through()? {
            for entry in self.outbox.range(..=through.to_bytes()) {
                let (key, _) = entry?;
                self.outbox.remove(key)?;
            }
        }
        Ok(self.outbox.iter().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Batch, TreeId};

    #[test]
    fn ids_at_or_below_the_relayed_mark_are_trimmed_and_the_rest_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let mut ids = crate::ids::IdGenerator::after(None);
        let ids: Vec<CustomerId> = (0..5).map(|_| ids.next_id()).collect();
        let mut batch = Batch::default();
        for id in &ids {
            batch.put(TreeId::Customers, &id.to_bytes(), b"{}");
            batch.put(TreeId::Outbox, &id.to_bytes(), b"");
        }
        batch.put(TreeId::Relayed, RELAYED_KEY, &ids[1].to_bytes());
        store.apply(batch.puts()).unwrap();
        assert_eq!(store.relayed_through().unwrap(), Some(ids[1]));
        assert_eq!(store.trim_relayed().unwrap(), 3);
        let pending: Vec<CustomerId> = store
            .pending_events(10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(pending, ids[2..]);
        assert_eq!(store.oldest_pending().unwrap(), Some(ids[2]));
        store.remove_pending(&ids[2..4]).unwrap();
        assert_eq!(store.pending_events(10).unwrap().len(), 1);
    }
}
