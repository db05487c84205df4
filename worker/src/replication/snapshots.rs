//! Snapshots of the replicated database in JetStream object storage, so that the log need
//! not grow for ever. Every `--snapshot-interval` the primary has its committer write a
//! snapshot between two groups (`crate::storage::backup`, the backup format, which carries the log
//! sequence it holds), stores it as the one object of the bucket (the object store replaces
//! the previous one only once the new one is whole), and trims the log below the sequence of
//! the snapshot it replaced: the log always reaches back one interval past the newest
//! snapshot, so a standby that lags by less than that never needs it. An instance whose data
//! directory is empty or behind the trimmed log starts from the snapshot instead
//! ([`Snapshots::rebuild`]), then follows the log from the sequence after it. The periodic task that
//! takes and stores them is `lifecycle::replicated::SnapshotTask`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use async_nats::jetstream::{self, object_store};
use tokio::io::AsyncReadExt;

use super::ReplicationError;
use super::log::Log;
use crate::storage::backup::{Snapshot, SnapshotError, Summary};
use crate::support::blocking;

/// The snapshot bucket could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BucketError {
    #[error("the snapshot bucket: {0}")]
    Bucket(async_nats::Error),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the stored snapshot has no {SEQUENCE} metadata")]
    NoSequence,
}

/// The bucket's one object: the newest snapshot.
const OBJECT: &str = "database";
/// The object's metadata entry naming the log sequence the snapshot holds.
const SEQUENCE: &str = "log-sequence";

pub(crate) struct Snapshots {
    bucket: object_store::ObjectStore,
}

impl Snapshots {
    /// The object store bucket named `bucket`, made (file storage, `replicas`) when missing.
    pub(crate) async fn ensure(
        jetstream: &jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<Self, ReplicationError> {
        let bucket = match jetstream.get_object_store(bucket).await {
            Ok(store) => store,
            Err(_) => jetstream
                .create_object_store(object_store::Config {
                    bucket: bucket.to_owned(),
                    description: Some("Snapshots of the customers service's database".into()),
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| ReplicationError::setup(format!("the snapshot bucket {bucket}"), e))?,
        };
        Ok(Self { bucket })
    }

    /// The log sequence the newest stored snapshot holds; `None` when there is none yet.
    pub(crate) async fn newest(&self) -> Result<Option<u64>, BucketError> {
        match self.bucket.info(OBJECT).await {
            Ok(info) if info.deleted => Ok(None),
            Ok(info) => sequence_of(&info.metadata).map(Some),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(BucketError::Bucket(e.into())),
        }
    }

    /// Stores the snapshot file at `path`, which holds the log through `log_sequence`.
    pub(crate) async fn store(&self, path: &Path, log_sequence: u64) -> Result<(), BucketError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|source| BucketError::File {
                path: path.to_owned(),
                source,
            })?;
        let meta = object_store::ObjectMetadata {
            name: OBJECT.to_owned(),
            description: Some(format!("the database through log sequence {log_sequence}")),
            metadata: HashMap::from([(SEQUENCE.to_owned(), log_sequence.to_string())]),
            ..Default::default()
        };
        self.bucket
            .put(meta, &mut file)
            .await
            .map(drop)
            .map_err(|e| BucketError::Bucket(e.into()))
    }

    /// The newest snapshot's bytes (checked against the digest stored with them).
    async fn fetch(&self) -> Result<Vec<u8>, BucketError> {
        let mut object = self
            .bucket
            .get(OBJECT)
            .await
            .map_err(|e| BucketError::Bucket(e.into()))?;
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| BucketError::Bucket(e.into()))?;
        Ok(bytes)
    }

    /// Replaces everything in `data_dir` (a copy of a log prefix that is trimmed now) with the
    /// newest snapshot, checked whole before anything is removed; then the instance follows
    /// the log from the sequence after the snapshot's.
    pub(crate) async fn rebuild(
        &self,
        log: &Log,
        data_dir: &Path,
        cache_capacity_bytes: u64,
    ) -> Result<Summary, ReplicationError> {
        let bytes = self
            .fetch()
            .await
            .map_err(|e| ReplicationError::setup("the stored snapshot".into(), e))?;
        let data_dir = data_dir.to_owned();
        let summary = blocking::run(move || {
            let snapshot = Snapshot::parse(&bytes, Path::new(OBJECT))?;
            empty_directory(&data_dir).map_err(|source| SnapshotError::Io {
                path: data_dir.clone(),
                source,
            })?;
            snapshot.load_into(&data_dir, cache_capacity_bytes)
        })
        .await
        .map_err(|e| ReplicationError::setup("loading the stored snapshot".into(), e))?
        .map_err(|e| ReplicationError::setup("loading the stored snapshot".into(), e))?;
        let first = log
            .first_sequence()
            .await
            .map_err(|e| ReplicationError::setup("the log".into(), e))?;
        if first > summary.log_sequence + 1 {
            return Err(ReplicationError::SnapshotBehindLog {
                snapshot: summary.log_sequence,
                first,
            });
        }
        Ok(summary)
    }
}

fn sequence_of(metadata: &HashMap<String, String>) -> Result<u64, BucketError> {
    metadata
        .get(SEQUENCE)
        .and_then(|s| s.parse().ok())
        .ok_or(BucketError::NoSequence)
}

/// Whether an instance that applied the log through `applied` must start from the snapshot:
/// the log no longer holds the group after it.
pub(crate) async fn behind(log: &Log, applied: u64) -> Result<bool, ReplicationError> {
    let first = log
        .first_sequence()
        .await
        .map_err(|e| ReplicationError::setup("the log".into(), e))?;
    Ok(first > applied + 1)
}

/// Removes what `dir` holds, not `dir` itself (it may be a mount point).
fn empty_directory(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
