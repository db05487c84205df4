//! The sled database: a `customers` tree (16-byte UUID key → the customer's JSON, exactly as
//! replied), an `emails` tree (lower-cased email → 16-byte UUID) and an `idempotency` tree
//! (see `idempotency`). The trees change only together, in one transaction per group, and a
//! group is acknowledged only after sled's flush **and** an `fdatasync` of its data file:
//! sled's own flush stops at `sync_file_range`, which leaves the data in the disk's volatile
//! cache (sled #1452).
//!
//! Reads go straight to the trees, never through the commit queue. sled makes a transaction
//! visible before it is durable, so the ids and keys of a group are marked unsynced before
//! it is applied and unmarked only after a successful sync; reads skip what is marked.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use customers_shared::idempotency::IdempotencyKey;
use customers_shared::list::{Cursor, ListQuery};
use customers_shared::{ApiError, CustomerId};
use serde::Deserialize;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{IVec, Transactional};

use crate::idempotency::{IdempotencyClaim, IdempotencyRecord, now_ms};
use crate::reply::Reply;

/// Name of the record tree (UUID → customer JSON).
pub const RECORDS_TREE: &str = "customers";
/// Name of the email index tree (lower-cased email → UUID).
pub const EMAILS_TREE: &str = "emails";
/// Name of the idempotency tree (records and their expiry entries).
pub const IDEMPOTENCY_TREE: &str = "idempotency";
/// sled writes a log buffer larger than a quarter segment to a separate blob file, which it
/// never fsyncs. The largest leaf (17 records of at most ~12 KiB) stays far below a quarter
/// of 2 MiB, so every write lands in the `db` file that `commit` syncs.
const SEGMENT_SIZE: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database in {dir}: {source} (is another worker using this data directory?)"
    )]
    Open { dir: PathBuf, source: sled::Error },
    #[error("cannot sync the database file {file}: {source}")]
    Sync {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record {id} is not valid JSON: {source}")]
    CorruptRecord {
        id: String,
        source: serde_json::Error,
    },
}

/// A validated create, ready to be written.
#[derive(Debug)]
pub struct PendingCreate {
    pub id: CustomerId,
    /// The lower-cased email: the uniqueness key.
    pub email_key: String,
    /// The customer's JSON, stored and replied as is.
    pub json: bytes::Bytes,
    /// The request's idempotency key: the create's reply is stored under it.
    pub claim: Option<IdempotencyClaim>,
}

/// One write of a group.
#[derive(Debug)]
pub enum Pending {
    Create(PendingCreate),
    /// The final reply of an idempotent create refused before it reached the database
    /// (invalid body, too large), stored so that a retry is answered the same.
    Remember {
        claim: IdempotencyClaim,
        reply: Reply,
    },
}

/// What became of one member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The email belongs to this customer (stored earlier, or earlier in the same group).
    EmailTaken(CustomerId),
    /// A [`Pending::Remember`] was stored.
    Remembered,
}

/// What was applied to the trees but is not yet known to be durable.
#[derive(Default)]
struct Unsynced {
    ids: HashSet<[u8; 16]>,
    keys: HashSet<IdempotencyKey>,
}

/// Differences between the trees found (and fixed) at startup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairReport {
    pub records: usize,
    pub index_entries_added: usize,
    pub index_entries_removed: usize,
    /// Records whose email is indexed to another customer; left in place and logged.
    pub conflicting_records: usize,
}

pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    emails: sled::Tree,
    idempotency: sled::Tree,
    unsynced: Mutex<Unsynced>,
    data_file: File,
    data_path: PathBuf,
}

impl Store {
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            dir: dir.to_owned(),
            source,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            .segment_size(SEGMENT_SIZE)
            .flush_every_ms(None)
            .open()
            .map_err(open_error)?;
        let records = db.open_tree(RECORDS_TREE)?;
        let emails = db.open_tree(EMAILS_TREE)?;
        let idempotency = db.open_tree(IDEMPOTENCY_TREE)?;
        let data_path = dir.join("db");
        let sync_error = |source| StoreError::Sync {
            file: data_path.clone(),
            source,
        };
        let data_file = File::open(&data_path).map_err(sync_error)?;
        // The database's files must survive a crash as directory entries too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(sync_error)?;
        let store = Self {
            db,
            records,
            emails,
            idempotency,
            unsynced: Mutex::default(),
            data_file,
            data_path,
        };
        store.sync()?;
        Ok(store)
    }

    /// Applies a group atomically across the trees and makes it durable. Exactly one create
    /// per email wins, against the stored index and within the group; an idempotent create's
    /// reply is stored with it.
    #[cfg(test)]
    pub fn commit(&self, group: &[Pending]) -> Result<Vec<Outcome>, StoreError> {
        self.commit_timed(group).map(|(outcomes, _)| outcomes)
    }

    /// [`Store::commit`], also returning how long the sync (flush and fsync) took.
    pub fn commit_timed(
        &self,
        group: &[Pending],
    ) -> Result<(Vec<Outcome>, std::time::Duration), StoreError> {
        {
            let mut unsynced = self.unsynced.lock().expect("unsynced set");
            for pending in group {
                let claim = match pending {
                    Pending::Create(create) => {
                        unsynced.ids.insert(create.id.to_bytes());
                        create.claim.as_ref()
                    }
                    Pending::Remember { claim, .. } => Some(claim),
                };
                if let Some(claim) = claim {
                    unsynced.keys.insert(claim.key.clone());
                }
            }
        }
        let created_ms = now_ms();
        let outcomes = (&self.records, &self.emails, &self.idempotency)
            .transaction(|(records, emails, idempotency)| {
                let mut claimed: HashMap<&str, CustomerId> = HashMap::with_capacity(group.len());
                let mut outcomes = Vec::with_capacity(group.len());
                for pending in group {
                    let create = match pending {
                        Pending::Create(create) => create,
                        Pending::Remember { claim, reply } => {
                            remember(idempotency, claim, reply, created_ms)?;
                            outcomes.push(Outcome::Remembered);
                            continue;
                        }
                    };
                    let owner = match claimed.get(create.email_key.as_str()) {
                        Some(owner) => Some(*owner),
                        None => emails
                            .get(create.email_key.as_bytes())?
                            .map(|owner| id_from_bytes(&owner)),
                    };
                    let outcome = match owner {
                        Some(owner) => Outcome::EmailTaken(owner),
                        None => {
                            let key = create.id.to_bytes();
                            records.insert(&key, create.json.as_ref())?;
                            emails.insert(create.email_key.as_bytes(), &key)?;
                            claimed.insert(&create.email_key, create.id);
                            Outcome::Created
                        }
                    };
                    if let Some(claim) = &create.claim {
                        let reply = match outcome {
                            Outcome::EmailTaken(customer_id) => {
                                Reply::error(&ApiError::EmailAlreadyExists { customer_id })
                            }
                            _ => Reply::created(create.id, create.json.clone()),
                        };
                        remember(idempotency, claim, &reply, created_ms)?;
                    }
                    outcomes.push(outcome);
                }
                Ok::<_, ConflictableTransactionError<()>>(outcomes)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => unreachable!("the group transaction never aborts"),
            })?;
        let sync_started = std::time::Instant::now();
        self.sync()?;
        let sync = sync_started.elapsed();
        // Everything applied so far, this group and any earlier one whose sync failed, is
        // durable now.
        let mut unsynced = self.unsynced.lock().expect("unsynced set");
        unsynced.ids.clear();
        unsynced.keys.clear();
        Ok((outcomes, sync))
    }

    /// The customer's JSON, if it exists and is durable.
    pub fn get(&self, id: CustomerId) -> Result<Option<IVec>, StoreError> {
        let key = id.to_bytes();
        let json = self.records.get(key)?;
        Ok(json.filter(|_| !self.is_unsynced(&key)))
    }

    /// A page of durable customers, newest first, and whether more lie beyond it.
    pub fn list(&self, query: &ListQuery) -> Result<(Vec<IVec>, bool), StoreError> {
        if let Some(email_key) = &query.email_key {
            let Some(id) = self.emails.get(email_key.as_bytes())? else {
                return Ok((Vec::new(), false));
            };
            let in_range = match query.cursor {
                Some(Cursor::StartingAfter(after)) => *id < after.to_bytes()[..],
                Some(Cursor::EndingBefore(before)) => *id > before.to_bytes()[..],
                None => true,
            };
            let json = if in_range {
                self.get(id_from_bytes(&id))?
            } else {
                None
            };
            return Ok((json.into_iter().collect(), false));
        }
        let take = query.limit + 1;
        let mut page = match query.cursor {
            None => self.durable(self.records.iter().rev(), take)?,
            Some(Cursor::StartingAfter(after)) => {
                self.durable(self.records.range(..after.to_bytes()).rev(), take)?
            }
            Some(Cursor::EndingBefore(before)) => {
                let bounds = (Bound::Excluded(before.to_bytes()), Bound::Unbounded);
                let mut newer = self.durable(self.records.range(bounds), take)?;
                let has_more = newer.len() > query.limit;
                newer.truncate(query.limit);
                newer.reverse();
                return Ok((newer, has_more));
            }
        };
        let has_more = page.len() > query.limit;
        page.truncate(query.limit);
        Ok((page, has_more))
    }

    /// Up to `take` durable records from `entries`, in their order.
    fn durable(
        &self,
        entries: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
        take: usize,
    ) -> Result<Vec<IVec>, StoreError> {
        let mut page = Vec::with_capacity(take);
        for entry in entries {
            let (key, json) = entry?;
            if !self.is_unsynced(&key) {
                page.push(json);
                if page.len() == take {
                    break;
                }
            }
        }
        Ok(page)
    }

    fn is_unsynced(&self, id: &[u8]) -> bool {
        let unsynced = self.unsynced.lock().expect("unsynced set");
        !unsynced.ids.is_empty()
            && <[u8; 16]>::try_from(id).is_ok_and(|id| unsynced.ids.contains(&id))
    }

    /// The durable idempotency record of `key`, expired or not.
    pub fn idempotency_record(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        if self
            .unsynced
            .lock()
            .expect("unsynced set")
            .keys
            .contains(key)
        {
            return Ok(None);
        }
        self.idempotency
            .get(IdempotencyRecord::record_key(key))?
            .map(|bytes| decode_record(&bytes, key))
            .transpose()
    }

    /// Removes up to `batch` idempotency records committed before `created_before_ms`,
    /// oldest first; returns how many expiry entries it removed (fewer than `batch`: none
    /// left). A key reused since (a newer record) keeps its record. Not synced: the next
    /// group's sync makes the removals durable, and a removal lost in a crash is redone.
    pub fn purge_idempotency(
        &self,
        created_before_ms: u64,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let end = [&b"t"[..], &created_before_ms.to_be_bytes()[..]].concat();
        let mut purged = 0;
        {
            let expired: Vec<IVec> = self
                .idempotency
                .range(&b"t"[..]..&end[..])
                .keys()
                .take(batch)
                .collect::<Result<_, _>>()?;
            for expiry_key in expired {
                let (created_ms, key) = expiry_key[1..].split_at(8);
                let record_key = [&b"k"[..], key].concat();
                self.idempotency
                    .transaction(|tree| {
                        let still_expired = tree.get(&record_key)?.is_some_and(|bytes| {
                            serde_json::from_slice::<IdempotencyRecord>(&bytes)
                                .is_ok_and(|r| r.created_ms.to_be_bytes() == created_ms)
                        });
                        if still_expired {
                            tree.remove(&record_key[..])?;
                        }
                        tree.remove(&expiry_key)?;
                        Ok::<_, ConflictableTransactionError<()>>(())
                    })
                    .map_err(|e| match e {
                        TransactionError::Storage(e) => StoreError::Sled(e),
                        TransactionError::Abort(()) => unreachable!("the purge never aborts"),
                    })?;
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// sled's flush, then a real `fdatasync` of the data file.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(|source| StoreError::Sync {
                file: self.data_path.clone(),
                source,
            })
    }

    /// Checks that every record has its index entry and every index entry its record, and
    /// repairs what a crash could have left behind. Records are never deleted.
    pub fn check_and_repair(&self) -> Result<RepairReport, StoreError> {
        #[derive(Deserialize)]
        struct EmailOnly {
            email: String,
        }
        let mut report = RepairReport::default();
        for entry in self.records.iter() {
            let (key, json) = entry?;
            report.records += 1;
            let id = id_from_bytes(&key);
            let record: EmailOnly =
                serde_json::from_slice(&json).map_err(|source| StoreError::CorruptRecord {
                    id: id.to_string(),
                    source,
                })?;
            let email_key = record.email.to_ascii_lowercase();
            match self.emails.get(email_key.as_bytes())? {
                Some(owner) if owner == key => {}
                Some(owner) => {
                    report.conflicting_records += 1;
                    tracing::error!(
                        customer_id = %id,
                        indexed_customer_id = %id_from_bytes(&owner),
                        "record's email is indexed to another customer; left in place"
                    );
                }
                None => {
                    self.emails.insert(email_key.as_bytes(), &*key)?;
                    report.index_entries_added += 1;
                    tracing::warn!(customer_id = %id, "added missing email index entry");
                }
            }
        }
        for entry in self.emails.iter() {
            let (email_key, id) = entry?;
            if !self.records.contains_key(&id)? {
                self.emails.remove(&email_key)?;
                report.index_entries_removed += 1;
                tracing::warn!(customer_id = %id_from_bytes(&id), "removed index entry without a record");
            }
        }
        if report.index_entries_added + report.index_entries_removed > 0 {
            self.sync()?;
        }
        Ok(report)
    }

    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// A store whose every sync fails (its "data file" is a pipe, which cannot be fsynced), to
/// show what a disk error during a group commit does.
#[cfg(test)]
pub(crate) fn store_failing_sync(dir: &Path) -> Store {
    let mut store = Store::open(dir, 1 << 20).expect("open the store");
    let (reader, _writer) = std::io::pipe().expect("a pipe");
    store.data_file = File::from(std::os::fd::OwnedFd::from(reader));
    store
}

/// Writes an idempotency record and its expiry entry within the group's transaction.
fn remember(
    tree: &TransactionalTree,
    claim: &IdempotencyClaim,
    reply: &Reply,
    created_ms: u64,
) -> Result<(), UnabortableTransactionError> {
    let record = IdempotencyRecord::new(claim, reply, created_ms);
    let bytes = serde_json::to_vec(&record).expect("a record always serialises");
    tree.insert(IdempotencyRecord::record_key(&claim.key), bytes)?;
    tree.insert(
        IdempotencyRecord::expiry_key(&claim.key, created_ms),
        &[][..],
    )?;
    Ok(())
}

fn decode_record(bytes: &[u8], key: &IdempotencyKey) -> Result<IdempotencyRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::CorruptRecord {
        id: format!("idempotency key {:?}", key.as_str()),
        source,
    })
}

fn id_from_bytes(bytes: &[u8]) -> CustomerId {
    let bytes: [u8; 16] = bytes.try_into().unwrap_or_default();
    CustomerId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(email: &str) -> PendingCreate {
        PendingCreate {
            id: CustomerId::generate(),
            email_key: email.to_ascii_lowercase(),
            json: bytes::Bytes::from(format!(r#"{{"email":"{email}"}}"#)),
            claim: None,
        }
    }

    fn pending(email: &str) -> Pending {
        Pending::Create(create(email))
    }

    fn id_of(pending: &Pending) -> CustomerId {
        match pending {
            Pending::Create(create) => create.id,
            Pending::Remember { .. } => panic!("not a create"),
        }
    }

    #[test]
    fn one_create_per_email_wins_within_a_group_and_across_groups() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let group = [pending("a@x.com"), pending("b@x.com"), pending("A@X.com")];
        let outcomes = store.commit(&group).unwrap();
        assert_eq!(
            outcomes,
            [
                Outcome::Created,
                Outcome::Created,
                Outcome::EmailTaken(id_of(&group[0]))
            ]
        );
        let later = [pending("B@x.com"), pending("c@x.com")];
        assert_eq!(
            store.commit(&later).unwrap(),
            [Outcome::EmailTaken(id_of(&group[1])), Outcome::Created]
        );
        assert_eq!(store.check_and_repair().unwrap().records, 3);
    }

    #[test]
    fn repair_restores_agreement_between_the_trees() {
        let dir = tempfile::tempdir().unwrap();
        let orphan = create("orphan@x.com");
        let ghost = CustomerId::generate();
        {
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(SEGMENT_SIZE)
                .open()
                .unwrap();
            db.open_tree(RECORDS_TREE)
                .unwrap()
                .insert(orphan.id.to_bytes(), orphan.json.as_ref())
                .unwrap();
            db.open_tree(EMAILS_TREE)
                .unwrap()
                .insert("ghost@x.com", &ghost.to_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let report = store.check_and_repair().unwrap();
        assert_eq!(
            report,
            RepairReport {
                records: 1,
                index_entries_added: 1,
                index_entries_removed: 1,
                conflicting_records: 0
            }
        );
        assert_eq!(
            store
                .commit(&[pending("ORPHAN@x.com"), pending("ghost@x.com")])
                .unwrap(),
            [Outcome::EmailTaken(orphan.id), Outcome::Created]
        );
        assert_eq!(
            store.check_and_repair().unwrap(),
            RepairReport {
                records: 2,
                ..RepairReport::default()
            }
        );
    }

    fn claim(key: &str, body: &[u8]) -> IdempotencyClaim {
        IdempotencyClaim::new(IdempotencyKey::parse(key.as_bytes()).unwrap(), body)
    }

    fn email_of(json: &IVec) -> String {
        serde_json::from_slice::<serde_json::Value>(json).unwrap()["email"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn lists_newest_first_with_cursors_and_email_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let group: Vec<Pending> = (0..25).map(|i| pending(&format!("c{i}@x.com"))).collect();
        store.commit(&group).unwrap();
        let emails = |page: &[IVec]| page.iter().map(email_of).collect::<Vec<_>>();
        let query = |limit, cursor, email: Option<&str>| ListQuery {
            limit,
            cursor,
            email_key: email.map(str::to_owned),
        };

        let (first, more) = store.list(&query(10, None, None)).unwrap();
        assert!(more);
        assert_eq!(emails(&first)[..2], ["c24@x.com", "c23@x.com"]);
        let (second, more) = store
            .list(&query(
                10,
                Some(Cursor::StartingAfter(id_of(&group[15]))),
                None,
            ))
            .unwrap();
        assert!(more);
        assert_eq!(emails(&second)[0], "c14@x.com");
        let (last, more) = store
            .list(&query(
                10,
                Some(Cursor::StartingAfter(id_of(&group[5]))),
                None,
            ))
            .unwrap();
        assert!(!more);
        assert_eq!(
            emails(&last),
            ["c4@x.com", "c3@x.com", "c2@x.com", "c1@x.com", "c0@x.com"]
        );
        let (previous, more) = store
            .list(&query(
                3,
                Some(Cursor::EndingBefore(id_of(&group[10]))),
                None,
            ))
            .unwrap();
        assert!(more, "c14 and newer lie beyond");
        assert_eq!(emails(&previous), ["c13@x.com", "c12@x.com", "c11@x.com"]);

        let (found, more) = store.list(&query(10, None, Some("c7@x.com"))).unwrap();
        assert_eq!((emails(&found), more), (vec!["c7@x.com".to_owned()], false));
        let after_it = Some(Cursor::StartingAfter(id_of(&group[7])));
        assert!(
            store
                .list(&query(10, after_it, Some("c7@x.com")))
                .unwrap()
                .0
                .is_empty()
        );
        assert!(
            store
                .list(&query(10, None, Some("nobody@x.com")))
                .unwrap()
                .0
                .is_empty()
        );
    }

    #[test]
    fn reads_never_show_a_group_whose_sync_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_failing_sync(dir.path());
        let create = PendingCreate {
            claim: Some(claim("k", b"{}")),
            ..create("unsynced@x.com")
        };
        let id = create.id;
        let key = create.claim.as_ref().unwrap().key.clone();
        assert!(store.commit(&[Pending::Create(create)]).is_err());
        assert!(
            store.records.contains_key(id.to_bytes()).unwrap(),
            "applied"
        );
        assert_eq!(store.get(id).unwrap(), None);
        assert!(store.list(&ListQuery::default()).unwrap().0.is_empty());
        assert_eq!(store.idempotency_record(&key).unwrap(), None);
    }

    #[test]
    fn idempotent_replies_are_stored_with_their_group_and_purged_once_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let first = PendingCreate {
            claim: Some(claim("created", b"body-1")),
            ..create("idem@x.com")
        };
        let first_id = first.id;
        let taken = PendingCreate {
            claim: Some(claim("taken", b"body-2")),
            ..create("IDEM@x.com")
        };
        let refused = Reply::error(&ApiError::InvalidBody);
        let group = [
            Pending::Create(first),
            Pending::Create(taken),
            Pending::Remember {
                claim: claim("refused", b"[]"),
                reply: refused.clone(),
            },
        ];
        assert_eq!(
            store.commit(&group).unwrap(),
            [
                Outcome::Created,
                Outcome::EmailTaken(first_id),
                Outcome::Remembered
            ]
        );
        let record = |key: &str| {
            store
                .idempotency_record(&IdempotencyKey::parse(key.as_bytes()).unwrap())
                .unwrap()
        };
        let created = record("created").expect("stored");
        assert_eq!(created.fingerprint, claim("x", b"body-1").fingerprint);
        assert_eq!(created.status, 201);
        assert_eq!(created.customer_id, Some(first_id.to_string()));
        assert_eq!(
            record("taken").expect("stored").reply(),
            Reply::error(&ApiError::EmailAlreadyExists {
                customer_id: first_id
            })
        );
        assert_eq!(record("refused").expect("stored").reply(), refused);

        let created_ms = created.created_ms;
        let purge = |before, batch| store.purge_idempotency(before, batch).unwrap();
        assert_eq!(purge(created_ms, 10), 0, "not expired yet");
        assert_eq!(purge(created_ms + 1, 2), 2, "one batch");
        assert_eq!(purge(created_ms + 1, 2), 1, "the rest");
        assert_eq!(record("created"), None);
        assert_eq!(
            store.idempotency.len(),
            0,
            "records and expiry entries gone"
        );
        assert!(store.get(first_id).unwrap().is_some(), "customers stay");
    }

    #[test]
    fn a_second_open_of_the_same_directory_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), 1 << 20).unwrap();
        let error = Store::open(dir.path(), 1 << 20)
            .err()
            .expect("the directory is locked");
        assert!(error.to_string().contains("another worker"), "{error}");
    }
}
