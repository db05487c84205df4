//! The sled database and its recovery (the trees and keys are in [`crate::storage::schema`]).
//! sled holds only what the journal (or, replicated, the log) has made durable: the committer
//! applies a group after its journal sync, so a read never sees a write that a crash could
//! take back, and no bookkeeping of "unsynced" writes is needed.
//!
//! By job:
//! * this module: [`Store::open`], which replays the journal (`recovery`) and checks the
//!   result against the last checkpoint's [`manifest`];
//! * [`apply`]: writing a journaled group's puts into the trees, with the value bound;
//! * [`attribute_counts`]: how many customers hold an indexed value, kept for the large ones;
//! * [`checkpoint`]: making sled's own files durable so journal segments can go;
//! * [`reads`]: lookups for the read endpoints and the committer, and the consistency check;
//! * [`pages`]: list pages (newest first, filtered through the indexes) and change-feed pages;
//! * [`search`]: search pages: the query's clauses through the indexes and the text index;
//! * [`indexing`]: building the indexes of a data directory from before them, once;
//! * [`outbox`]: the event outbox as stored: the events above the relayed mark.

pub(crate) mod apply;
pub(crate) mod attribute_counts;
pub(crate) mod checkpoint;
pub(crate) mod indexing;
pub(crate) mod manifest;
pub(crate) mod outbox;
pub(crate) mod pages;
pub(crate) mod reads;
pub(crate) mod recovery;
pub(crate) mod search;

use std::path::{Path, PathBuf};

use crate::storage::change_clock::ChangeClock;
use crate::storage::journal::{self, Journal, JournalError};
use crate::storage::schema::{APPLIED_KEY, JOURNAL_DIR, TreeId};
use crate::storage::store::attribute_counts::AttributeCounts;
use crate::storage::text_index::TextIndex;

pub(crate) use apply::MAX_VALUE_BYTES;
pub(crate) use recovery::Recovery;

/// sled writes a log buffer larger than a quarter segment to a separate blob file. A leaf
/// holds at most 17 entries of at most [`MAX_VALUE_BYTES`], far below a quarter of 2 MiB, so
/// sled never makes blob files (the committer test
/// `the_largest_values_never_make_sled_write_blob_files` checks that none appear).
const SEGMENT_SIZE: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database in {dir}: another process holds its lock (is another worker using this data directory?)"
    )]
    Locked { dir: PathBuf },
    #[error("cannot open the database in {dir}: {source}")]
    Open { dir: PathBuf, source: sled::Error },
    #[error("--data-dir {dir} is not a directory")]
    NotADirectory { dir: PathBuf },
    #[error(
        "the database in {dir} {reason}: its files are damaged, so the worker will not start (restore the data directory from a backup or, replicated, start it empty to rebuild from the log; `customers-worker verify` checks a directory whole)"
    )]
    Damaged { dir: PathBuf, reason: String },
    #[error("cannot sync {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("cannot start a thread to open the database: {source}")]
    Thread { source: std::io::Error },
}

pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    emails: sled::Tree,
    idempotency: sled::Tree,
    relayed: sled::Tree,
    replication: sled::Tree,
    outbox: sled::Tree,
    changes: sled::Tree,
    attributes: sled::Tree,
    /// When a change becomes visible to the change feed (the committer sets its times).
    pub(crate) clock: ChangeClock,
    /// The counts of the large `attributes` prefixes, kept in step by [`Store::apply`].
    attribute_counts: AttributeCounts,
    /// The search's texts of every live customer, kept in step by [`Store::apply`].
    pub(crate) text: TextIndex,
    /// Whether [`Store::apply`] keeps `text` in step: not while recovery replays the journal
    /// (the index is built from the tree once that is done, so a replay does not pay twice).
    text_follows_apply: bool,
    dir: PathBuf,
}

/// An opened store with the journal's append side, ready for the committer.
pub struct Opened {
    pub store: Store,
    pub(crate) journal: Journal,
    pub(crate) recovery: Recovery,
}

/// How long an open waits for the lock of a database closed a moment before.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens the database; when its lock is held, tries again for [`LOCK_RELEASE_WAIT`]. sled
/// releases the lock when the last handle of a closed database goes, which its epoch-based
/// reclamation may do on another thread a moment after the close: a reopen right after a close
/// (a start from a snapshot, a test) would otherwise fail. A database another process holds
/// still fails, after that wait.
/// Runs `beside` on a thread named `name` while this thread runs `here`, and returns both
/// results once both are done (a panic on that thread goes on here). Opening the database
/// uses it to put the second core to work.
fn alongside<A: Send, B>(
    name: &str,
    beside: impl FnOnce() -> A + Send,
    here: impl FnOnce() -> B,
) -> Result<(A, B), StoreError> {
    std::thread::scope(|scope| {
        let beside = std::thread::Builder::new()
            .name(name.into())
            .spawn_scoped(scope, beside)
            .map_err(|source| StoreError::Thread { source })?;
        let here = here();
        let beside = beside
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((beside, here))
    })
}

fn open_when_unlocked(config: &sled::Config, dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        dir: dir.to_owned(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => {
                return opened.map_err(|source| StoreError::Open {
                    dir: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

impl Store {
    /// Opens the database in `dir` and brings it up to date with the journal: every
    /// segment left by the last run is replayed, checkpointed and removed, and a new segment
    /// is started.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<Opened, StoreError> {
        let started = std::time::Instant::now();
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::NotADirectory {
                dir: dir.to_owned(),
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Sync {
            path: dir.to_owned(),
            source,
        })?;
        // sled records what it finds in its log in a snapshot at open. After a crash, that log
        // may still be only in the page cache: make it durable before sled describes it.
        checkpoint::sync_database_files(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_bytes)
            .segment_size(SEGMENT_SIZE)
            .flush_every_ms(None);
        let db = open_when_unlocked(&config, dir)?;
        let mut store = Self {
            records: db.open_tree(TreeId::Customers.name())?,
            emails: db.open_tree(TreeId::Emails.name())?,
            idempotency: db.open_tree(TreeId::Idempotency.name())?,
            relayed: db.open_tree(TreeId::Relayed.name())?,
            replication: db.open_tree(TreeId::Replication.name())?,
            outbox: db.open_tree(TreeId::Outbox.name())?,
            changes: db.open_tree(TreeId::Changes.name())?,
            attributes: db.open_tree(TreeId::Attributes.name())?,
            clock: ChangeClock::default(),
            attribute_counts: AttributeCounts::default(),
            text: TextIndex::default(),
            text_follows_apply: false,
            db,
            dir: dir.to_owned(),
        };
        let replaying = store.replay_journal()?;
        // The text index needs only the replayed records: built on a thread of its own while
        // the rest of the recovery checks and checkpoints (a second of a million customers'
        // start).
        let (text, settled) = alongside(
            "text-index",
            || store.build_text_index(),
            || {
                let settled = store.settle(replaying)?;
                store.convert_outbox()?;
                store.build_indexes()?;
                Ok(settled)
            },
        )?;
        let (journal, replayed, records) = text.and(settled)?;
        store.text_follows_apply = true;
        store.clock = ChangeClock::after(store.newest_change_ms()?);
        // Whatever sled and recovery created (its files, the journal directory, a new data
        // directory) must survive a power cut as directory entries too.
        checkpoint::sync_database_files(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            journal::sync_dir(parent).map_err(|source| StoreError::Sync {
                path: parent.to_owned(),
                source,
            })?;
        }
        Ok(Opened {
            store,
            journal,
            recovery: Recovery {
                replayed,
                records,
                elapsed: started.elapsed(),
            },
        })
    }

    pub(crate) fn tree(&self, tree: TreeId) -> &sled::Tree {
        match tree {
            TreeId::Customers => &self.records,
            TreeId::Emails => &self.emails,
            TreeId::Idempotency => &self.idempotency,
            TreeId::Relayed => &self.relayed,
            TreeId::Replication => &self.replication,
            TreeId::Outbox => &self.outbox,
            TreeId::Changes => &self.changes,
            TreeId::Attributes => &self.attributes,
        }
    }

    /// The journal's directory.
    pub(crate) fn journal_dir(&self) -> PathBuf {
        self.dir.join(JOURNAL_DIR)
    }

    /// The log sequence of the newest replicated group applied here (0: none).
    pub(crate) fn applied_log_sequence(&self) -> Result<u64, StoreError> {
        Ok(self
            .replication
            .get(APPLIED_KEY)?
            .and_then(|bytes| bytes.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub(crate) fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// `n` distinct ids in ascending order, a millisecond apart (the tests' stand-in for the
/// committer's id generator, which `storage` does not use).
#[cfg(test)]
pub(crate) fn ascending_ids(n: usize) -> Vec<customers_shared::CustomerId> {
    (0..n as u64)
        .map(|i| {
            let uuid = uuid::Builder::from_unix_timestamp_millis(1_700_000_000_000 + i, &[0; 10]);
            customers_shared::CustomerId::from_uuid(uuid.into_uuid())
        })
        .collect()
}

/// A whole customer's stored JSON, for tests: named after its email, created at its id's
/// millisecond, in `country`, with `custom_data` (JSON text).
#[cfg(test)]
pub(crate) fn customer_json(
    id: customers_shared::CustomerId,
    email: &str,
    status: &str,
    country: &str,
    custom_data: &str,
) -> String {
    let at = id.timestamp();
    format!(
        r#"{{"id":"{id}","name":"{email}","email":"{email}","phone":null,"address":{{"city":"Arusha","country":"{country}"}},"payment_method":null,"created_at":"{at}","updated_at":"{at}","status":"{status}","custom_data":{custom_data}}}"#
    )
}

/// Stages a new customer as the committer would, for tests: its record, its email and its
/// index entries.
#[cfg(test)]
pub(crate) fn stage_customer(batch: &mut journal::Batch, json: &str) {
    use crate::storage::indexes::{attribute_key, attribute_prefixes, change_key};
    let customer = customers_shared::Customer::from_stored(json.as_bytes()).unwrap();
    let id = customer.id;
    batch.put(TreeId::Customers, &id.to_bytes(), json.as_bytes());
    batch.put(
        TreeId::Emails,
        customer.email.index_key().as_bytes(),
        &id.to_bytes(),
    );
    batch.put(TreeId::Changes, &change_key(id.unix_ms(), id), &[]);
    for prefix in attribute_prefixes(&customer) {
        batch.put(TreeId::Attributes, &attribute_key(&prefix, id), &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_directory_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), 1 << 20).unwrap();
        let error = Store::open(dir.path(), 1 << 20)
            .err()
            .expect("the directory is locked");
        assert!(error.to_string().contains("another worker"), "{error}");
    }

    #[test]
    fn other_open_errors_do_not_blame_another_worker() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, b"x").unwrap();
        let error = Store::open(&file, 1 << 20).err().expect("a file");
        assert_eq!(
            error.to_string(),
            format!("--data-dir {} is not a directory", file.display())
        );
        // A sled file of another kind: an open error, not a lock.
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("conf"), b"not sled's configuration").unwrap();
        let error = Store::open(&data, 1 << 20)
            .err()
            .expect("a broken database");
        assert!(!error.to_string().contains("another worker"), "{error}");
    }
}
