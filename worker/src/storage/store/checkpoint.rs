//! Checkpoints: make everything applied to sled so far durable in sled's own files, so that
//! the journal segments it covers can be removed. sled's flush stops at `sync_file_range`,
//! which leaves data in the disk's volatile cache (sled #1452), so every file and directory
//! of the database is fsynced after it. Runs on the checkpointer thread, off the hot path.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::storage::store::{JOURNAL_DIR, Store, StoreError};

impl Store {
    pub(crate) fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        failpoint!("checkpoint-after-flush", |_| crate::support::crash());
        sync_database_files(&self.dir)
    }
}

/// `fsync` of every file and directory under `dir` except the journal (which syncs itself).
pub(super) fn sync_database_files(dir: &Path) -> Result<(), StoreError> {
    let sync_error = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Sync { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(sync_error(dir))? {
        let entry = entry.map_err(sync_error(dir))?;
        let path = entry.path();
        if entry.file_name() == JOURNAL_DIR {
            continue;
        }
        if entry.file_type().map_err(sync_error(&path))?.is_dir() {
            sync_database_files(&path)?;
            continue;
        }
        match File::open(&path).and_then(|file| file.sync_all()) {
            // sled may remove a file (an old snapshot) between the listing and the sync.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other.map_err(sync_error(&path))?,
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(sync_error(dir))
}
