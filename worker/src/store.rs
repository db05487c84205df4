//! The sled database: a `customers` tree (16-byte UUID key → the customer's JSON, exactly as
//! replied) and an `emails` tree (lower-cased email → 16-byte UUID). Both trees change only
//! together, in one transaction per group, and a group is acknowledged only after sled's
//! flush **and** an `fdatasync` of its data file: sled's own flush stops at
//! `sync_file_range`, which leaves the data in the disk's volatile cache (sled #1452).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use customers_shared::CustomerId;
use serde::Deserialize;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// Name of the record tree (UUID → customer JSON).
pub const RECORDS_TREE: &str = "customers";
/// Name of the email index tree (lower-cased email → UUID).
pub const EMAILS_TREE: &str = "emails";
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
}

/// What became of one member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The email belongs to this customer (stored earlier, or earlier in the same group).
    EmailTaken(CustomerId),
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
            data_file,
            data_path,
        };
        store.sync()?;
        Ok(store)
    }

    /// Applies a group of creates atomically across both trees and makes it durable.
    /// Exactly one create per email wins, against the stored index and within the group.
    pub fn commit(&self, group: &[PendingCreate]) -> Result<Vec<Outcome>, StoreError> {
        let outcomes = (&self.records, &self.emails)
            .transaction(|(records, emails)| {
                let mut claimed: HashMap<&str, CustomerId> = HashMap::with_capacity(group.len());
                let mut outcomes = Vec::with_capacity(group.len());
                for create in group {
                    if let Some(owner) = claimed.get(create.email_key.as_str()) {
                        outcomes.push(Outcome::EmailTaken(*owner));
                        continue;
                    }
                    if let Some(owner) = emails.get(create.email_key.as_bytes())? {
                        outcomes.push(Outcome::EmailTaken(id_from_bytes(&owner)));
                        continue;
                    }
                    let key = create.id.to_bytes();
                    records.insert(&key, create.json.as_ref())?;
                    emails.insert(create.email_key.as_bytes(), &key)?;
                    claimed.insert(&create.email_key, create.id);
                    outcomes.push(Outcome::Created);
                }
                Ok::<_, ConflictableTransactionError<()>>(outcomes)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => unreachable!("the group transaction never aborts"),
            })?;
        self.sync()?;
        Ok(outcomes)
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

fn id_from_bytes(bytes: &[u8]) -> CustomerId {
    let bytes: [u8; 16] = bytes.try_into().unwrap_or_default();
    CustomerId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(email: &str) -> PendingCreate {
        PendingCreate {
            id: CustomerId::generate(),
            email_key: email.to_ascii_lowercase(),
            json: bytes::Bytes::from(format!(r#"{{"email":"{email}"}}"#)),
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
                Outcome::EmailTaken(group[0].id)
            ]
        );
        let later = [pending("B@x.com"), pending("c@x.com")];
        assert_eq!(
            store.commit(&later).unwrap(),
            [Outcome::EmailTaken(group[1].id), Outcome::Created]
        );
        assert_eq!(store.check_and_repair().unwrap().records, 3);
    }

    #[test]
    fn repair_restores_agreement_between_the_trees() {
        let dir = tempfile::tempdir().unwrap();
        let orphan = pending("orphan@x.com");
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
