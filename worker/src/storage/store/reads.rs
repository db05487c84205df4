//! Reads: a customer by id, the owner of an email (for the committer's uniqueness check), the
//! newest id (to seed the id generator) and a consistency check of the records and their
//! indexes (for tests and operators); pages are in `pages`. Everything in sled is durable (see the module above),
//! so reads go straight to the trees, never through the commit queue.

use std::ops::Bound;

use customers_shared::{Customer, CustomerId};
use sled::IVec;

use crate::storage::customer_record::CustomerRecord;
use crate::storage::indexes::{attribute_key, attribute_prefixes, change_key};
use crate::storage::store::{Store, StoreError};

/// How the record tree and the email index agree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Consistency {
    /// Customers that exist (tombstones not counted).
    pub records: usize,
    /// Tombstones of deleted customers.
    pub deleted: usize,
    /// Records whose email has no index entry.
    pub missing_index_entries: usize,
    /// Index entries whose customer does not exist (or was deleted).
    pub orphan_index_entries: usize,
    /// Records whose email is indexed to another customer: two customers with one email.
    pub conflicting_records: usize,
    /// Change-feed and filter index entries (`storage::indexes`) missing for a customer as
    /// stored, or left over beside them.
    pub misplaced_feed_and_filter_entries: usize,
}

impl Consistency {
    pub fn is_consistent(&self) -> bool {
        self.missing_index_entries
            + self.orphan_index_entries
            + self.conflicting_records
            + self.misplaced_feed_and_filter_entries
            == 0
    }
}

impl Store {
    /// The customer's record (live or a tombstone), if it was ever created.
    pub(crate) fn get(&self, id: CustomerId) -> Result<Option<CustomerRecord>, StoreError> {
        let Some(stored) = self.records.get(id.to_bytes())? else {
            return Ok(None);
        };
        CustomerRecord::decode(&stored)
            .map(Some)
            .map_err(|reason| corrupt_record(id, reason))
    }

    /// The customer that owns the lower-cased email `email_key`.
    pub(crate) fn email_owner(&self, email_key: &str) -> Result<Option<CustomerId>, StoreError> {
        Ok(self
            .emails
            .get(email_key.as_bytes())?
            .map(|id| id_from_bytes(&id)))
    }

    /// Up to `limit` records created after `after` (all when `None`), oldest first, as stored
    /// (`customer_record`: tombstones and versions included): for tests and tools comparing
    /// copies of one database.
    pub fn records_after(
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

    /// The newest stored customer's id (ids sort by creation).
    pub fn newest_id(&self) -> Result<Option<CustomerId>, StoreError> {
        Ok(self.records.last()?.map(|(key, _)| id_from_bytes(&key)))
    }

    /// Walks the records and every index and counts every way they disagree. Changes
    /// nothing: recovery replays the journal, it does not repair, so a disagreement is a bug
    /// to be seen.
    pub fn verify(&self) -> Result<Consistency, StoreError> {
        let mut report = Consistency::default();
        let mut attributes = 0;
        let mut misplaced = 0;
        for entry in self.records.iter() {
            let (key, stored) = entry?;
            let id = id_from_bytes(&key);
            let live = match CustomerRecord::decode(&stored)
                .map_err(|reason| corrupt_record(id, reason))?
            {
                CustomerRecord::Deleted { deleted_at_ms } => {
                    report.deleted += 1;
                    let change = change_key(deleted_at_ms, id);
                    misplaced += usize::from(!self.changes.contains_key(change)?);
                    continue;
                }
                CustomerRecord::Live(live) => live,
            };
            report.records += 1;
            let customer =
                Customer::from_stored(&live.json).map_err(|reason| corrupt_record(id, &reason))?;
            let change = change_key(customer.updated_at.unix_ms(), id);
            misplaced += usize::from(!self.changes.contains_key(change)?);
            for prefix in attribute_prefixes(&customer) {
                attributes += 1;
                let entry = attribute_key(&prefix, id);
                misplaced += usize::from(!self.attributes.contains_key(entry)?);
            }
            match self.emails.get(customer.email.index_key().as_bytes())? {
                Some(owner) if owner == key => {}
                Some(_) => report.conflicting_records += 1,
                None => report.missing_index_entries += 1,
            }
        }
        for entry in self.emails.iter() {
            let (_, id) = entry?;
            let owner = self.records.get(&id)?;
            if owner.as_ref().and_then(CustomerRecord::json_of).is_none() {
                report.orphan_index_entries += 1;
            }
        }
        // Entries beyond those every customer needs: left over by a change that moved them.
        let changes = report.records + report.deleted;
        misplaced += self.changes.len().abs_diff(changes);
        misplaced += self.attributes.len().abs_diff(attributes);
        report.misplaced_feed_and_filter_entries = misplaced;
        Ok(report)
    }
}

fn corrupt_record(id: CustomerId, reason: &str) -> StoreError {
    StoreError::Corrupt {
        what: format!("customer {id}"),
        reason: reason.to_owned(),
    }
}

pub(crate) fn id_from_bytes(bytes: &[u8]) -> CustomerId {
    let bytes: [u8; 16] = bytes.try_into().unwrap_or_default();
    CustomerId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::{Batch, TreeId};
    use crate::storage::store::{customer_json, stage_customer};

    #[test]
    fn verify_counts_every_disagreement_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let ids = crate::storage::store::ascending_ids(8);
        let (ok, missing, conflicting, ghost) = (ids[0], ids[1], ids[2], ids[3]);
        let (deleted, deleted_but_indexed) = (ids[4], ids[5]);
        let (unindexed, moved) = (ids[6], ids[7]);
        let json = |id, email: &str| customer_json(id, email, "active", "TZ", "null");
        let mut batch = Batch::default();
        stage_customer(&mut batch, &json(ok, "ok@x.com"));
        stage_customer(&mut batch, &json(missing, "missing@x.com"));
        batch.remove(TreeId::Emails, b"missing@x.com");
        // Its email is held by `ok`: two customers with one email.
        stage_customer(&mut batch, &json(conflicting, "OK@x.com"));
        batch.put(TreeId::Emails, b"ok@x.com", &ok.to_bytes());
        batch.put(TreeId::Emails, b"ghost@x.com", &ghost.to_bytes());
        let tombstone = CustomerRecord::tombstone(1);
        batch.put(TreeId::Customers, &deleted.to_bytes(), &tombstone);
        batch.put(TreeId::Changes, &change_key(1, deleted), &[]);
        batch.put(
            TreeId::Customers,
            &deleted_but_indexed.to_bytes(),
            &tombstone,
        );
        batch.put(TreeId::Changes, &change_key(1, deleted_but_indexed), &[]);
        batch.put(
            TreeId::Emails,
            b"gone@x.com",
            &deleted_but_indexed.to_bytes(),
        );
        // No index entries at all (its change and three attributes: four missing), and one
        // whose change entry stayed at an old time (one missing, one left over).
        batch.put(
            TreeId::Customers,
            &unindexed.to_bytes(),
            json(unindexed, "u@x.com").as_bytes(),
        );
        batch.put(TreeId::Emails, b"u@x.com", &unindexed.to_bytes());
        stage_customer(&mut batch, &json(moved, "m@x.com"));
        batch.remove(TreeId::Changes, &change_key(moved.unix_ms(), moved));
        batch.put(TreeId::Changes, &change_key(5, moved), &[]);
        store.apply(batch.puts()).unwrap();
        let expected = Consistency {
            records: 5,
            deleted: 2,
            missing_index_entries: 1,
            orphan_index_entries: 2,
            conflicting_records: 1,
            // Four and one missing, and the counts: changes 6 of 7, attributes 12 of 15.
            misplaced_feed_and_filter_entries: 4 + 1 + 1 + 3,
        };
        assert_eq!(store.verify().unwrap(), expected);
        assert!(!expected.is_consistent());
        assert_eq!(store.verify().unwrap(), expected, "nothing was repaired");
    }
}
