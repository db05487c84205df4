//! Bringing sled up to date at open: every journal segment left by the last run is replayed
//! into the trees (puts are idempotent, so a segment that an interrupted checkpoint already
//! covered is simply written again), then checkpointed and removed. What was replayed, and
//! how long it took, is logged and exported as a metric.

use std::path::Path;
use std::time::Duration;

use crate::journal::{self, Journal, Replayed};
use crate::store::{Store, StoreError};

/// What [`Store::open`] found in the journal.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub replayed: Replayed,
    /// Time to open sled, replay and checkpoint.
    pub elapsed: Duration,
}

impl Store {
    pub(super) fn recover(&self, journal_dir: &Path) -> Result<(Journal, Replayed), StoreError> {
        let replayed = journal::replay(journal_dir, |puts| self.apply(puts))??;
        if replayed.segments > 0 {
            self.checkpoint()?;
            journal::remove_segments_before(journal_dir, replayed.next_seq)?;
        }
        // Only now: a new segment must not follow a torn one that is still on disk.
        let journal = Journal::create(journal_dir, replayed.next_seq)?;
        Ok((journal, replayed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Batch, TreeId};

    #[test]
    fn what_the_journal_holds_is_in_sled_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opened = Store::open(dir.path(), 1 << 20).unwrap();
            let mut batch = Batch::default();
            batch.put(TreeId::Customers, &[1; 16], b"{\"email\":\"a@x.com\"}");
            batch.put(TreeId::Emails, b"a@x.com", &[1; 16]);
            opened.journal.append(&mut batch).unwrap();
            opened.journal.sync().unwrap();
            // Then a crash: journaled, never applied to sled, never checkpointed.
        }
        let opened = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            (
                opened.recovery.replayed.records,
                opened.recovery.replayed.puts
            ),
            (1, 2)
        );
        assert!(opened.store.records.contains_key([1; 16]).unwrap());
        assert_eq!(opened.store.verify().unwrap().records, 1);
        drop(opened);
        let again = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            again.recovery.replayed.records, 0,
            "replayed segments are checkpointed and removed"
        );
        assert!(again.store.records.contains_key([1; 16]).unwrap());
    }
}
