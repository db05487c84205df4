//! Bringing sled up to date at open: every journal segment left by the last run is replayed
//! into the trees (puts are idempotent, so a segment that an interrupted checkpoint already
//! covered is simply written again); the result is checked against the last checkpoint's
//! manifest (a damaged database or journal stops the start here, before anything is
//! removed), then checkpointed, recorded in a new manifest, and the replayed segments are
//! removed. What was replayed, and how long it took, is logged and exported as a metric.

use std::time::Duration;

use crate::storage::journal::{self, Journal, Promise, Replayed};
use crate::storage::store::manifest::{Manifest, RecordKeys};
use crate::storage::store::{Store, StoreError};

/// What [`Store::open`] found in the journal.
#[derive(Debug, Clone)]
pub(crate) struct Recovery {
    pub(crate) replayed: Replayed,
    /// The record tree's keys after the replay: where the committer's count starts.
    pub(crate) records: RecordKeys,
    /// Time to open sled, replay and checkpoint.
    pub(crate) elapsed: Duration,
}

/// The journal replayed into the trees, not yet checked or checkpointed.
pub(super) struct Replaying {
    manifest: Option<Manifest>,
    replayed: Replayed,
}

impl Store {
    /// Replays every journal segment into the trees; [`Store::settle`] then finishes the
    /// recovery (the records are as the journal left them in between).
    pub(super) fn replay_journal(&self) -> Result<Replaying, StoreError> {
        let manifest = Manifest::read(&self.dir)?;
        let promise = manifest.as_ref().map(Manifest::promise).unwrap_or_default();
        let loaded = journal::load(&self.journal_dir(), promise)?;
        self.replay(&loaded)?;
        Ok(Replaying {
            manifest,
            replayed: loaded.replayed().clone(),
        })
    }

    /// Checks the replayed trees against the checkpoint manifest, checkpoints them, removes
    /// the replayed segments and starts a new one.
    pub(super) fn settle(
        &self,
        replaying: Replaying,
    ) -> Result<(Journal, Replayed, RecordKeys), StoreError> {
        let Replaying { manifest, replayed } = replaying;
        let journal_dir = self.journal_dir();
        let records = self.check_against(manifest.as_ref())?;
        if manifest.is_none() && records.count > 0 {
            tracing::warn!(
                customers = records.count,
                "no checkpoint manifest in this data directory (made by an older build, or restored): checked the index against the records only; a manifest is written now"
            );
        }
        let next = replayed.next_seq;
        if replayed.segments > 0 {
            self.checkpoint()?;
            // Recorded before the segments go: a crash in between must not leave a manifest
            // that promises them.
            let covered = Promise {
                covered_below: next,
                created_through: 0,
            };
            Manifest::new(covered, records.clone()).write(&self.dir)?;
            journal::remove_segments_before(&journal_dir, next)?;
        }
        // Only now: a new segment must not follow a torn one that is still on disk.
        let journal = Journal::create(&journal_dir, next)?;
        let created = Promise {
            covered_below: next,
            created_through: next,
        };
        Manifest::new(created, records.clone()).write(&self.dir)?;
        Ok((journal, replayed, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::Batch;
    use crate::storage::store::{customer_json, stage_customer};

    #[test]
    fn a_replay_on_two_threads_leaves_each_key_as_the_journal_last_wrote_it() {
        use crate::storage::schema::TreeId;
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = (0..64u8).map(|n| vec![b'k', n]).collect();
        {
            let mut opened = Store::open(dir.path(), 1 << 20).unwrap();
            // Each key of both lanes written, overwritten and sometimes removed, across
            // records, so a lane that applied out of order would leave another value.
            for round in 0..4u8 {
                let mut batch = Batch::default();
                for (n, key) in keys.iter().enumerate() {
                    let value = [round, n as u8];
                    for tree in [TreeId::Attributes, TreeId::Changes] {
                        if round == 3 && n % 3 == 0 {
                            batch.remove(tree, key);
                        } else {
                            batch.put(tree, key, &value);
                        }
                    }
                }
                opened.journal.append(&mut batch).unwrap();
            }
            opened.journal.sync().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        for (n, key) in keys.iter().enumerate() {
            let expected = (n % 3 != 0).then(|| vec![3, n as u8]);
            for tree in [&store.attributes, &store.changes] {
                let held = tree.get(key).unwrap().map(|v| v.to_vec());
                assert_eq!(held, expected, "key {n}");
            }
        }
    }

    #[test]
    fn what_the_journal_holds_is_in_sled_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let id = crate::storage::store::ascending_ids(1)[0];
        {
            let mut opened = Store::open(dir.path(), 1 << 20).unwrap();
            let mut batch = Batch::default();
            let json = customer_json(id, "a@x.com", "active", "TZ", "null");
            stage_customer(&mut batch, &json);
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
            (1, 6),
            "the record, its email, its change and three attributes"
        );
        assert!(opened.store.records.contains_key(id.to_bytes()).unwrap());
        let verified = opened.store.verify().unwrap();
        assert_eq!(verified.records, 1);
        assert!(verified.is_consistent(), "{verified:?}");
        drop(opened);
        let again = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            again.recovery.replayed.records, 0,
            "replayed segments are checkpointed and removed"
        );
        assert!(again.store.records.contains_key(id.to_bytes()).unwrap());
    }
}
