//! Snapshots of the whole database, for `customers-worker backup` / `restore` (and for
//! replicated mode's snapshots, from which an instance behind the trimmed log is rebuilt:
//! `replication::snapshots`). A snapshot is written by the committer between two groups,
//! so it holds exactly the groups committed before it: consistent, while the worker keeps
//! serving (creates wait for the length of the copy).
//!
//! Format: [`MAGIC`], then records in the journal's own format (`len | crc | puts`, each at
//! most about 1 MiB), then [`END`] and the number of puts as a u64 (little-endian). A file
//! cut short, altered or of another kind is refused as a whole: restore loads nothing from it.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::storage::journal::{self, Batch, TreeId};
use crate::storage::store::{Store, StoreError};

/// First bytes of a snapshot file.
pub(crate) const MAGIC: &[u8; 8] = b"CUSSNAP1";
/// Marks the end, before the count of puts.
const END: &[u8; 8] = b"CUSSNEND";
/// A record is cut once its puts pass this size.
const RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a complete snapshot: {reason}")]
    Invalid { path: PathBuf, reason: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Summary {
    pub(crate) puts: u64,
    pub(crate) bytes: u64,
    /// Replicated mode: the log's last group the snapshot holds (0 in the single-node mode).
    pub(crate) log_sequence: u64,
}

impl Store {
    /// Writes every tree to `path` (made durable before returning). Call it where no group is
    /// being applied: the committer does.
    pub(crate) fn write_snapshot(&self, path: &Path) -> Result<Summary, SnapshotError> {
        let io_error = |source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_error)?;
        let mut out = BufWriter::new(file);
        out.write_all(MAGIC).map_err(io_error)?;
        let mut batch = Batch::default();
        let mut summary = Summary {
            log_sequence: self.applied_log_sequence()?,
            ..Summary::default()
        };
        for tree in TreeId::ALL {
            for entry in self.tree(tree).iter() {
                let (key, value) = entry.map_err(StoreError::from)?;
                batch.put(tree, &key, &value);
                summary.puts += 1;
                if batch.len() >= RECORD_BYTES {
                    out.write_all(batch.sealed()).map_err(io_error)?;
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            out.write_all(batch.sealed()).map_err(io_error)?;
        }
        out.write_all(END).map_err(io_error)?;
        out.write_all(&summary.puts.to_le_bytes())
            .map_err(io_error)?;
        let file = out.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        summary.bytes = file.metadata().map_err(io_error)?.len();
        Ok(summary)
    }
}

/// Loads the snapshot at `from` into a new database in `data_dir`, which must be empty or
/// missing; checks the whole file before writing anything.
pub(crate) fn restore(
    from: &Path,
    data_dir: &Path,
    cache_capacity_bytes: u64,
) -> Result<Summary, SnapshotError> {
    let mut bytes = Vec::new();
    File::open(from)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| SnapshotError::Io {
            path: from.to_owned(),
            source,
        })?;
    let snapshot = Snapshot::parse(&bytes, from)?;
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(SnapshotError::Io {
            path: data_dir.to_owned(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the data directory is not empty; restore into a new one",
            ),
        });
    }
    snapshot.load_into(data_dir, cache_capacity_bytes)
}

/// A complete, intact snapshot, checked as a whole and ready to load.
pub(crate) struct Snapshot<'a> {
    payloads: Vec<&'a [u8]>,
    puts: u64,
    bytes: u64,
}

impl<'a> Snapshot<'a> {
    /// Checks `bytes` (read from `origin`, named in errors): magic, every record's checksum,
    /// the end marker and the count of puts.
    pub(crate) fn parse(bytes: &'a [u8], origin: &Path) -> Result<Self, SnapshotError> {
        let (payloads, puts) = check(bytes).ok_or_else(|| SnapshotError::Invalid {
            path: origin.to_owned(),
            reason: "bad magic, checksum, structure or count",
        })?;
        Ok(Self {
            payloads,
            puts,
            bytes: bytes.len() as u64,
        })
    }

    /// Writes every entry into a new database in `data_dir` (its caller made sure nothing
    /// else is there) and checkpoints it.
    pub(crate) fn load_into(
        &self,
        data_dir: &Path,
        cache_capacity_bytes: u64,
    ) -> Result<Summary, SnapshotError> {
        let opened = Store::open(data_dir, cache_capacity_bytes)?;
        for payload in &self.payloads {
            opened.store.apply(journal::Puts::from_payload(payload))?;
        }
        opened.store.checkpoint()?;
        Ok(Summary {
            puts: self.puts,
            bytes: self.bytes,
            log_sequence: opened.store.applied_log_sequence()?,
        })
    }
}

/// The payloads of a complete, intact snapshot and its count of puts; `None` for anything
/// else.
fn check(bytes: &[u8]) -> Option<(Vec<&[u8]>, u64)> {
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    let trailer_at = body.len().checked_sub(END.len() + 8)?;
    let (mut records, trailer) = body.split_at(trailer_at);
    let count = u64::from_le_bytes(trailer.strip_prefix(END.as_slice())?.try_into().ok()?);
    let mut payloads = Vec::new();
    let mut puts = 0;
    while !records.is_empty() {
        let (payload, rest) = journal::split_record(records)?;
        puts += journal::Puts::from_payload(payload).count() as u64;
        payloads.push(payload);
        records = rest;
    }
    (puts == count).then_some((payloads, puts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_restores_every_tree_and_a_damaged_one_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = Store::open(&dir.path().join("source"), 1 << 20)
            .unwrap()
            .store;
        let mut batch = Batch::default();
        // Customer records as the store holds them (JSON: an object).
        let mut record = vec![b'x'; 500];
        record[0] = b'{';
        for n in 0..3000u32 {
            batch.put(TreeId::Customers, &n.to_be_bytes(), &record);
            batch.put(
                TreeId::Emails,
                format!("{n}@x.com").as_bytes(),
                &n.to_be_bytes(),
            );
        }
        batch.put(TreeId::Idempotency, b"key", b"reply");
        batch.put(TreeId::Relayed, b"through", &7u64.to_be_bytes());
        source.apply(batch.puts()).unwrap();
        let file = dir.path().join("snapshot");
        let written = source.write_snapshot(&file).unwrap();
        // And the indexes' completion mark, written at open.
        assert_eq!(written.puts, 6003);
        assert!(
            written.bytes > 3 * RECORD_BYTES as u64 / 2,
            "several records"
        );

        let restored = restore(&file, &dir.path().join("copy"), 1 << 20).unwrap();
        assert_eq!(restored.puts, 6003);
        let copy = Store::open(&dir.path().join("copy"), 1 << 20)
            .unwrap()
            .store;
        for tree in TreeId::ALL {
            let a: Vec<_> = source.tree(tree).iter().map(Result::unwrap).collect();
            let b: Vec<_> = copy.tree(tree).iter().map(Result::unwrap).collect();
            assert_eq!(a, b, "{tree:?}");
        }

        let bytes = std::fs::read(&file).unwrap();
        let damaged = [
            ("cut short", bytes[..bytes.len() - 100].to_vec()),
            ("a flipped byte", {
                let mut b = bytes.clone();
                b[5000] ^= 1;
                b
            }),
            ("not a snapshot", b"CUSJRNL1 something else".to_vec()),
        ];
        for (what, bytes) in damaged {
            let path = dir.path().join("damaged");
            std::fs::write(&path, bytes).unwrap();
            let target = dir.path().join(format!("from-{}", what.replace(' ', "-")));
            let error = restore(&path, &target, 1 << 20).expect_err(what);
            assert!(
                error.to_string().contains("not a complete snapshot"),
                "{what}: {error}"
            );
            assert!(!target.exists(), "{what}: nothing written");
        }
        assert!(
            restore(&file, &dir.path().join("copy"), 1 << 20).is_err(),
            "a non-empty directory is refused"
        );
    }
}
