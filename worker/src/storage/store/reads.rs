//! Reads: a customer by id, a page newest first, the owner of an email (for the committer's
//! uniqueness check), the newest id (to seed the id generator) and a consistency check of the
//! two trees (for tests and operators). Everything in sled is durable (see the module above),
//! so reads go straight to the trees, never through the commit queue.

use std::ops::Bound;

use customers_shared::CustomerId;
use customers_shared::wire::list::{Cursor, ListQuery};
use serde::Deserialize;
use sled::IVec;

use crate::storage::customer_record::CustomerRecord;
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
}

impl Consistency {
    pub fn is_consistent(&self) -> bool {
        self.missing_index_entries + self.orphan_index_entries + self.conflicting_records == 0
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

    /// A page of customers, newest first, and whether more lie beyond it. The page stops early
    /// (with `has_more`) before its customers would pass `max_bytes` together, but always
    /// holds at least one.
    pub(crate) fn list(
        &self,
        query: &ListQuery,
        max_bytes: usize,
    ) -> Result<(Vec<IVec>, bool), StoreError> {
        if let Some(email_key) = &query.email_key {
            let Some(id) = self.email_owner(email_key)? else {
                return Ok((Vec::new(), false));
            };
            let in_range = match query.cursor {
                Some(Cursor::StartingAfter(after)) => id < after,
                Some(Cursor::EndingBefore(before)) => id > before,
                None => true,
            };
            let json = match in_range {
                true => self.records.get(id.to_bytes())?,
                false => None,
            };
            let json = json.as_ref().and_then(CustomerRecord::json_of);
            return Ok((json.into_iter().collect(), false));
        }
        let take = query.limit + 1;
        let (mut page, cut_short) = match query.cursor {
            None => values(self.records.iter().rev(), take, max_bytes)?,
            Some(Cursor::StartingAfter(after)) => values(
                self.records.range(..after.to_bytes()).rev(),
                take,
                max_bytes,
            )?,
            Some(Cursor::EndingBefore(before)) => {
                let bounds = (Bound::Excluded(before.to_bytes()), Bound::Unbounded);
                let (mut newer, cut_short) = values(self.records.range(bounds), take, max_bytes)?;
                let has_more = newer.len() > query.limit || cut_short;
                newer.truncate(query.limit);
                newer.reverse();
                return Ok((newer, has_more));
            }
        };
        let has_more = page.len() > query.limit || cut_short;
        page.truncate(query.limit);
        Ok((page, has_more))
    }

    /// Walks both trees and counts every way they disagree. Changes nothing: recovery
    /// replays the journal, it does not repair, so a disagreement is a bug to be seen.
    pub fn verify(&self) -> Result<Consistency, StoreError> {
        #[derive(Deserialize)]
        struct EmailOnly {
            email: String,
        }
        let mut report = Consistency::default();
        for entry in self.records.iter() {
            let (key, stored) = entry?;
            let id = id_from_bytes(&key);
            let CustomerRecord::Live(live) =
                CustomerRecord::decode(&stored).map_err(|reason| corrupt_record(id, reason))?
            else {
                report.deleted += 1;
                continue;
            };
            report.records += 1;
            let record: EmailOnly = serde_json::from_slice(&live.json)
                .map_err(|e| corrupt_record(id, &e.to_string()))?;
            match self
                .emails
                .get(record.email.to_ascii_lowercase().as_bytes())?
            {
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
        Ok(report)
    }
}

/// Up to `take` customers' JSON from `entries`, in their order, tombstones skipped, as many as
/// fit in `max_bytes` (with a separator each, and at least one); and whether the bytes, not
/// `take`, cut them short.
fn values(
    entries: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
    take: usize,
    max_bytes: usize,
) -> Result<(Vec<IVec>, bool), StoreError> {
    let mut page = Vec::new();
    let mut bytes = 0;
    let live = entries.filter_map(|entry| match entry {
        Ok((_, stored)) => CustomerRecord::json_of(&stored).map(Ok),
        Err(e) => Some(Err(e)),
    });
    for json in live.take(take) {
        let json = json?;
        bytes += json.len() + 1;
        if bytes > max_bytes && !page.is_empty() {
            return Ok((page, true));
        }
        page.push(json);
    }
    Ok((page, false))
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

    #[test]
    fn lists_newest_first_with_cursors_and_email_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let ids = crate::storage::store::ascending_ids(25);
        let mut batch = Batch::default();
        for (i, id) in ids.iter().enumerate() {
            let email = format!("c{i}@x.com");
            let json = format!(r#"{{"email":"{email}"}}"#);
            batch.put(TreeId::Customers, &id.to_bytes(), json.as_bytes());
            batch.put(TreeId::Emails, email.as_bytes(), &id.to_bytes());
        }
        store.apply(batch.puts()).unwrap();
        let emails = |page: &[IVec]| -> Vec<String> {
            page.iter()
                .map(|json| {
                    serde_json::from_slice::<serde_json::Value>(json).unwrap()["email"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        let query = |limit, cursor, email: Option<&str>| ListQuery {
            limit,
            cursor,
            email_key: email.map(str::to_owned),
        };
        let list = |query: &ListQuery| store.list(query, usize::MAX);

        let (first, more) = list(&query(10, None, None)).unwrap();
        assert!(more);
        assert_eq!(emails(&first)[..2], ["c24@x.com", "c23@x.com"]);
        let after = |i: usize| Some(Cursor::StartingAfter(ids[i]));
        let (second, more) = list(&query(10, after(15), None)).unwrap();
        assert!(more);
        assert_eq!(emails(&second)[0], "c14@x.com");
        let (last, more) = list(&query(10, after(5), None)).unwrap();
        assert!(!more);
        assert_eq!(
            emails(&last),
            ["c4@x.com", "c3@x.com", "c2@x.com", "c1@x.com", "c0@x.com"]
        );
        let before = Some(Cursor::EndingBefore(ids[10]));
        let (previous, more) = list(&query(3, before, None)).unwrap();
        assert!(more, "c14 and newer lie beyond");
        assert_eq!(emails(&previous), ["c13@x.com", "c12@x.com", "c11@x.com"]);

        let (found, more) = list(&query(10, None, Some("c7@x.com"))).unwrap();
        assert_eq!((emails(&found), more), (vec!["c7@x.com".to_owned()], false));
        assert!(
            list(&query(10, after(7), Some("c7@x.com")))
                .unwrap()
                .0
                .is_empty()
        );
        assert!(
            list(&query(10, None, Some("nobody@x.com")))
                .unwrap()
                .0
                .is_empty()
        );

        // A byte budget of about three customers: the page stops there, with has_more, in
        // either direction, and never comes back empty.
        let three = 3 * (first[0].len() + 1);
        let (short, more) = store.list(&query(10, None, None), three).unwrap();
        assert_eq!(
            (emails(&short), more),
            (
                vec!["c24@x.com".into(), "c23@x.com".into(), "c22@x.com".into()],
                true
            )
        );
        let (newer, more) = store
            .list(&query(10, Some(Cursor::EndingBefore(ids[10])), None), three)
            .unwrap();
        assert_eq!(
            (emails(&newer), more),
            (
                vec!["c13@x.com".into(), "c12@x.com".into(), "c11@x.com".into()],
                true
            )
        );
        let (one, _) = store.list(&query(10, None, None), 1).unwrap();
        assert_eq!(one.len(), 1, "at least one customer, whatever the budget");
        assert_eq!(store.newest_id().unwrap(), Some(ids[24]));
        assert_eq!(store.email_owner("c3@x.com").unwrap(), Some(ids[3]));
    }

    #[test]
    fn verify_counts_every_disagreement_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let ids = crate::storage::store::ascending_ids(6);
        let (ok, missing, conflicting, ghost) = (ids[0], ids[1], ids[2], ids[3]);
        let (deleted, deleted_but_indexed) = (ids[4], ids[5]);
        let mut batch = Batch::default();
        batch.put(
            TreeId::Customers,
            &ok.to_bytes(),
            br#"{"email":"ok@x.com"}"#,
        );
        batch.put(TreeId::Emails, b"ok@x.com", &ok.to_bytes());
        batch.put(
            TreeId::Customers,
            &missing.to_bytes(),
            br#"{"email":"missing@x.com"}"#,
        );
        batch.put(
            TreeId::Customers,
            &conflicting.to_bytes(),
            br#"{"email":"OK@x.com"}"#,
        );
        batch.put(TreeId::Emails, b"ghost@x.com", &ghost.to_bytes());
        let tombstone = CustomerRecord::tombstone(1);
        batch.put(TreeId::Customers, &deleted.to_bytes(), &tombstone);
        batch.put(
            TreeId::Customers,
            &deleted_but_indexed.to_bytes(),
            &tombstone,
        );
        batch.put(
            TreeId::Emails,
            b"gone@x.com",
            &deleted_but_indexed.to_bytes(),
        );
        store.apply(batch.puts()).unwrap();
        let expected = Consistency {
            records: 3,
            deleted: 2,
            missing_index_entries: 1,
            orphan_index_entries: 2,
            conflicting_records: 1,
        };
        assert_eq!(store.verify().unwrap(), expected);
        assert!(!expected.is_consistent());
        assert_eq!(store.verify().unwrap(), expected, "nothing was repaired");
    }
}
