//! The checkpoint manifest, `checkpoint.json` in the data directory: what the last
//! checkpoint made durable. It says which journal segments must exist (a [`Promise`]) and
//! what the record tree held when the checkpoint began: the number of its keys, an
//! order-independent digest of them, and the greatest. A start compares the record tree with
//! it after replaying the journal (keys up to that greatest one can only come from sled's
//! checkpointed files, or from a segment the checkpoint had yet to remove), so a database
//! whose files lost pages, or a journal that lost a segment, is refused instead of served
//! with customers missing. Written after each checkpoint's sync, atomically (temporary file,
//! fsync, rename, fsync of the directory); a data directory without one (made by an older
//! build, or a restore) gets one at its first start.
//!
//! The record tree's keys only ever grow (a record is never removed: a delete leaves a
//! tombstone under its key), which is what makes a count and a digest of the keys up to a
//! bound a fair check of "nothing was lost".

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::storage::customer_record::CustomerRecord;
use crate::storage::journal::{self, Promise};
use crate::storage::store::{Store, StoreError};

/// The manifest's file name in the data directory.
pub(crate) const MANIFEST: &str = "checkpoint.json";
const VERSION: u32 = 1;

/// What the last checkpoint recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    version: u32,
    /// Every segment numbered below this is in sled's files.
    pub(crate) covered_below: u64,
    /// Every segment from `covered_below` to this one was created whole.
    pub(crate) created_through: u64,
    pub(crate) records: RecordKeys,
}

/// The keys of the record tree: how many, their digest, and the greatest.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordKeys {
    pub(crate) count: u64,
    /// Wrapping sum of the FNV-1a hash (64 bits) of every key, in hexadecimal.
    #[serde(with = "hex_u64")]
    pub(crate) digest: u64,
    /// The greatest key counted, in hexadecimal; none while there is none.
    #[serde(with = "hex_bytes")]
    pub(crate) through: Option<Vec<u8>>,
}

impl RecordKeys {
    /// Counts `key`, which must sort after every key counted so far.
    fn add(&mut self, key: &[u8]) {
        self.count += 1;
        self.digest = self.digest.wrapping_add(fnv1a(key));
        self.through = Some(key.to_vec());
    }

    /// Counts `key` if it is new: greater than every key counted (record ids are assigned
    /// in increasing order, so a smaller one is a record written again, not a new one).
    pub(crate) fn observe(&mut self, key: &[u8]) {
        if self.through.as_deref().is_none_or(|through| key > through) {
            self.add(key);
        }
    }
}

/// FNV-1a, 64 bits: fixed for all builds, so a digest written by one is read by the next.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Manifest {
    pub(crate) fn new(journal: Promise, records: RecordKeys) -> Self {
        Self {
            version: VERSION,
            covered_below: journal.covered_below,
            created_through: journal.created_through,
            records,
        }
    }

    pub(crate) fn promise(&self) -> Promise {
        Promise {
            covered_below: self.covered_below,
            created_through: self.created_through,
        }
    }

    /// The manifest in `dir`, if there is one.
    pub(crate) fn read(dir: &Path) -> Result<Option<Self>, StoreError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Sync { path, source }),
        };
        let manifest: Self = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
            what: format!("checkpoint manifest {}", path.display()),
            reason: e.to_string(),
        })?;
        if manifest.version != VERSION {
            return Err(StoreError::Corrupt {
                what: format!("checkpoint manifest {}", path.display()),
                reason: format!("version {} is not known to this build", manifest.version),
            });
        }
        Ok(Some(manifest))
    }

    /// Replaces the manifest in `dir`, durably.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), StoreError> {
        let path = dir.join(MANIFEST);
        let temporary = dir.join(format!("{MANIFEST}.partial"));
        let sync_error = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Sync { path, source }
        };
        let mut text = serde_json::to_vec_pretty(self).expect("a manifest serialises");
        text.push(b'\n');
        File::create(&temporary)
            .and_then(|mut file| {
                file.write_all(&text)?;
                file.sync_all()
            })
            .map_err(sync_error(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(sync_error(&path))?;
        journal::sync_dir(dir).map_err(sync_error(dir))
    }
}

impl Store {
    /// Records a checkpoint: everything in the segments below `journal.covered_below` is in
    /// sled's files, and the record tree held `records` when it began.
    pub(crate) fn record_checkpoint(
        &self,
        journal: Promise,
        records: RecordKeys,
    ) -> Result<(), StoreError> {
        Manifest::new(journal, records).write(&self.dir)
    }

    /// The record tree's keys: all of them, and those up to `through` (what a checkpoint
    /// that counted through `through` covered); and how many are customers that exist (not
    /// tombstones).
    pub(crate) fn record_keys(
        &self,
        through: Option<&[u8]>,
    ) -> Result<(RecordKeys, RecordKeys, u64), StoreError> {
        let mut all = RecordKeys::default();
        let mut covered = RecordKeys::default();
        let mut live = 0;
        for entry in self.records.iter() {
            let (key, value) = entry?;
            all.add(&key);
            if through.is_some_and(|through| key.as_ref() <= through) {
                covered.add(&key);
            }
            live += u64::from(CustomerRecord::json_of(&value).is_some());
        }
        Ok((all, covered, live))
    }

    /// Checks the record tree and the email index against `manifest` (none: only against
    /// each other) after a replay; returns the record tree's keys as they are.
    pub(super) fn check_against(
        &self,
        manifest: Option<&Manifest>,
    ) -> Result<RecordKeys, StoreError> {
        let through = manifest.and_then(|m| m.records.through.as_deref());
        let (all, covered, live) = self.record_keys(through)?;
        if let Some(manifest) = manifest
            && covered != manifest.records
        {
            return Err(self.damaged(format!(
                "holds {} customers up to the newest its last checkpoint counted, which counted {} (digest {:016x}, found {:016x})",
                covered.count, manifest.records.count, manifest.records.digest, covered.digest
            )));
        }
        // Every customer that exists has exactly one email entry; a deleted one has none.
        let emails = self.emails.len() as u64;
        if emails != live {
            return Err(self.damaged(format!(
                "holds {live} customers but {emails} email index entries"
            )));
        }
        Ok(all)
    }

    fn damaged(&self, reason: String) -> StoreError {
        StoreError::Damaged {
            dir: self.dir.clone(),
            reason,
        }
    }
}

/// `u64` as 16 hexadecimal digits (JSON readers that hold numbers as doubles would round it).
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:016x}"))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

/// Bytes as lower-case hexadecimal.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_none(),
            Some(bytes) => serializer
                .serialize_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom(
                "an odd number of hexadecimal digits",
            ));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_new_keys_are_counted_once() {
        let mut keys = RecordKeys::default();
        for key in [[1u8; 16], [2; 16], [2; 16], [1; 16], [3; 16]] {
            keys.observe(&key);
        }
        assert_eq!(keys.count, 3, "a key written again is not a new one");
        assert_eq!(keys.through.as_deref(), Some(&[3u8; 16][..]));
        let dir = tempfile::tempdir().unwrap();
        let manifest = Manifest::new(
            Promise {
                covered_below: 4,
                created_through: 4,
            },
            keys,
        );
        manifest.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(manifest));
        std::fs::write(dir.path().join(MANIFEST), b"{\"version\": 9}").unwrap();
        assert!(
            Manifest::read(dir.path()).is_err(),
            "a broken manifest is an error"
        );
    }
}
