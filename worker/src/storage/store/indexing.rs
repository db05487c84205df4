//! The indexes of a data directory written before them (`storage::indexes`), built once at
//! open from the customers as stored: both index trees are cleared, every record adds its
//! entries, sled is made durable, and only then the `indexes` mark is written, so a crash
//! part way builds again from the start. Every later change journals its own index entries.
//! The search's text index lives in memory only: it is filled here at every open.

use customers_shared::Customer;

use crate::storage::customer_record::CustomerRecord;
use crate::storage::indexes::{attribute_key, attribute_prefixes, change_key, parse_change_key};
use crate::storage::journal::{Batch, TreeId};
use crate::storage::schema::{CLOCK_KEY, INDEXES_KEY};
use crate::storage::store::reads::id_from_bytes;
use crate::storage::store::{Store, StoreError};
use crate::storage::text_index::Texts;

/// Records indexed per applied batch while building.
const BUILD_BATCH: usize = 4096;

impl Store {
    /// Fills the in-memory text index from the customers as stored (at every open: it is
    /// not persisted; a million customers take about a second).
    pub(crate) fn build_text_index(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        self.text.clear();
        for entry in self.records.iter() {
            let (key, stored) = entry?;
            // A value that is no customer document (`verify` reports it) is not searchable.
            let texts = CustomerRecord::json_in(&stored).and_then(Texts::of_json);
            if let Some(texts) = texts {
                self.text.set(id_from_bytes(&key), Some(&texts));
            }
        }
        tracing::info!(
            customers = self.text.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "text index built"
        );
        Ok(())
    }

    /// Builds the indexes unless they are marked complete.
    pub(crate) fn build_indexes(&self) -> Result<(), StoreError> {
        if self.replication.get(INDEXES_KEY)?.is_some() {
            return Ok(());
        }
        self.changes.clear()?;
        self.attributes.clear()?;
        self.attribute_counts.clear();
        let mut batch = Batch::default();
        let mut indexed = 0u64;
        for entry in self.records.iter() {
            let (key, stored) = entry?;
            let id = id_from_bytes(&key);
            let corrupt = |reason: String| StoreError::Corrupt {
                what: format!("customer {id}"),
                reason,
            };
            match CustomerRecord::decode(&stored).map_err(|r| corrupt(r.to_owned()))? {
                CustomerRecord::Live(live) => {
                    let customer = Customer::from_stored(&live.json).map_err(corrupt)?;
                    let at = customer.updated_at.unix_ms();
                    batch.put(TreeId::Changes, &change_key(at, id), &[]);
                    for prefix in attribute_prefixes(&customer) {
                        batch.put(TreeId::Attributes, &attribute_key(&prefix, id), &[]);
                    }
                }
                CustomerRecord::Deleted { deleted_at_ms } => {
                    batch.put(TreeId::Changes, &change_key(deleted_at_ms, id), &[]);
                }
            }
            indexed += 1;
            if indexed.is_multiple_of(BUILD_BATCH as u64) {
                self.apply(batch.puts())?;
                batch.clear();
            }
        }
        self.apply(batch.puts())?;
        self.checkpoint()?;
        self.replication.insert(INDEXES_KEY, &[1])?;
        self.checkpoint()?;
        if indexed > 0 {
            tracing::info!(
                customers = indexed,
                "built the change-feed and filter indexes"
            );
        }
        Ok(())
    }

    /// The time of the newest change stored (0: none): the change clock starts after it.
    pub(crate) fn newest_change_ms(&self) -> Result<u64, StoreError> {
        let indexed = self
            .changes
            .last()?
            .and_then(|(key, _)| parse_change_key(&key));
        let clock = self
            .replication
            .get(CLOCK_KEY)?
            .and_then(|value| value.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes);
        Ok(indexed.map_or(0, |(at, _)| at).max(clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::{customer_json, stage_customer};

    #[test]
    fn a_directory_from_before_the_indexes_gets_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let ids = crate::storage::store::ascending_ids(3);
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap().store;
            let mut batch = Batch::default();
            for (i, id) in ids.iter().enumerate().take(2) {
                let json = customer_json(*id, &format!("n{i}@x.com"), "active", "TZ", "null");
                stage_customer(&mut batch, &json);
            }
            batch.put(
                TreeId::Customers,
                &ids[2].to_bytes(),
                &CustomerRecord::tombstone(9),
            );
            store.apply(batch.puts()).unwrap();
            // As a build before the indexes left it: no index entries, no mark.
            store.changes.clear().unwrap();
            store.attributes.clear().unwrap();
            store.replication.remove(INDEXES_KEY).unwrap();
            store.checkpoint().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let changes: Vec<(u64, _)> = store
            .changes
            .iter()
            .keys()
            .map(|key| parse_change_key(&key.unwrap()).unwrap())
            .collect();
        let mut expected = vec![
            (9, ids[2]),
            (ids[0].unix_ms(), ids[0]),
            (ids[1].unix_ms(), ids[1]),
        ];
        expected.sort();
        assert_eq!(
            changes, expected,
            "a live customer by updated_at, a tombstone by deleted_at"
        );
        assert_eq!(
            store.attributes.len(),
            6,
            "status, name and country of each live customer"
        );
        assert_eq!(store.newest_change_ms().unwrap(), ids[1].unix_ms());
    }
}
