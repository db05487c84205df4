//! Snapshots of the replicated database in JetStream object storage, so that the log need
//! not grow for ever. Every `--snapshot-interval` the primary has its committer write a
//! snapshot between two groups (`crate::snapshot`, the backup format, which carries the log
//! sequence it holds), stores it as the one object of the bucket (the object store replaces
//! the previous one only once the new one is whole), and trims the log below the sequence of
//! the snapshot it replaced: the log always reaches back one interval past the newest
//! snapshot, so a standby that lags by less than that never needs it. An instance whose data
//! directory is empty or behind the trimmed log starts from the snapshot instead
//! (`bootstrap`), then follows the log from the sequence after it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, object_store};
use tokio::io::AsyncReadExt;

use super::ReplicationError;
use super::log::Log;
use crate::committer::QueueProbe;
use crate::metrics::Metrics;

/// The bucket's one object: the newest snapshot.
const OBJECT: &str = "database";
/// The object's metadata entry naming the log sequence the snapshot holds.
const SEQUENCE: &str = "log-sequence";

pub struct Snapshots {
    bucket: object_store::ObjectStore,
}

impl Snapshots {
    /// The object store bucket named `bucket`, made (file storage, `replicas`) when missing.
    pub async fn ensure(
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
                .map_err(|e| {
                    ReplicationError::Setup(format!("the snapshot bucket {bucket}: {e}"))
                })?,
        };
        Ok(Self { bucket })
    }

    /// The log sequence the newest stored snapshot holds; `None` when there is none yet.
    async fn newest(&self) -> Result<Option<u64>, String> {
        match self.bucket.info(OBJECT).await {
            Ok(info) if info.deleted => Ok(None),
            Ok(info) => sequence_of(&info.metadata).map(Some),
            Err(e) if e.kind() == object_store::InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stores the snapshot file at `path`, which holds the log through `log_sequence`.
    async fn store(&self, path: &Path, log_sequence: u64) -> Result<(), String> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
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
            .map_err(|e| e.to_string())
    }

    /// The newest snapshot's bytes (checked against the digest stored with them).
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let mut object = self.bucket.get(OBJECT).await.map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(object.info().size);
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// Replaces everything in `data_dir` (a copy of a log prefix that is trimmed now) with the
    /// newest snapshot, checked whole before anything is removed; then the instance follows
    /// the log from the sequence after the snapshot's.
    pub async fn rebuild(
        &self,
        log: &Log,
        data_dir: &Path,
        cache_capacity_bytes: u64,
    ) -> Result<crate::snapshot::Summary, ReplicationError> {
        let bytes = self
            .fetch()
            .await
            .map_err(|e| ReplicationError::Setup(format!("the stored snapshot: {e}")))?;
        let data_dir = data_dir.to_owned();
        let summary = tokio::task::spawn_blocking(move || {
            let snapshot = crate::snapshot::Snapshot::parse(&bytes, Path::new(OBJECT))?;
            empty_directory(&data_dir).map_err(|source| crate::snapshot::SnapshotError::Io {
                path: data_dir.clone(),
                source,
            })?;
            snapshot.load_into(&data_dir, cache_capacity_bytes)
        })
        .await
        .expect("loading a snapshot does not panic")
        .map_err(|e| ReplicationError::Setup(e.to_string()))?;
        let first = log
            .first_sequence()
            .await
            .map_err(ReplicationError::Setup)?;
        if first > summary.log_sequence + 1 {
            return Err(ReplicationError::SnapshotBehindLog {
                snapshot: summary.log_sequence,
                first,
            });
        }
        Ok(summary)
    }
}

fn sequence_of(metadata: &HashMap<String, String>) -> Result<u64, String> {
    metadata
        .get(SEQUENCE)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("the stored snapshot has no {SEQUENCE} metadata"))
}

/// What the primary's snapshot task needs.
pub struct SnapshotTask {
    pub snapshots: Arc<Snapshots>,
    pub log: Arc<Log>,
    pub committer: QueueProbe,
    pub metrics: Arc<Metrics>,
    /// Where the snapshot is written before it is stored (removed afterwards).
    pub scratch: PathBuf,
    pub interval: Duration,
}

impl SnapshotTask {
    /// Every interval in which the log grew: a snapshot, then the log trimmed below the one
    /// it replaced. A failure is logged, counted and tried again at the next interval: the
    /// log is only trimmed below a snapshot that is stored.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.reset();
        loop {
            ticks.tick().await;
            if let Err(e) = self.once().await {
                self.metrics.snapshot_failed();
                tracing::warn!(error = %e, "could not store a snapshot; trying again at the next interval");
            }
            let _ = tokio::fs::remove_file(&self.scratch).await;
        }
    }

    async fn once(&self) -> Result<(), String> {
        let previous = self.snapshots.newest().await?;
        if let Some(previous) = previous
            && self.log.last_sequence().await? <= previous
        {
            return Ok(()); // nothing new since
        }
        let started = Instant::now();
        let written = self.committer.snapshot(self.scratch.clone()).await?;
        if previous.is_some_and(|previous| written.log_sequence <= previous) {
            return Ok(());
        }
        self.snapshots
            .store(&self.scratch, written.log_sequence)
            .await?;
        self.metrics
            .snapshot_stored(written.log_sequence, started.elapsed());
        tracing::info!(
            log_sequence = written.log_sequence,
            entries = written.puts,
            bytes = written.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot stored"
        );
        if let Some(previous) = previous {
            self.log.trim_below(previous + 1).await?;
            tracing::info!(first_kept = previous + 1, "log trimmed");
        }
        Ok(())
    }
}

/// Whether an instance that applied the log through `applied` must start from the snapshot:
/// the log no longer holds the group after it.
pub async fn behind(log: &Log, applied: u64) -> Result<bool, ReplicationError> {
    let first = log
        .first_sequence()
        .await
        .map_err(ReplicationError::Setup)?;
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
