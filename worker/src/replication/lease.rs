//! The primary's lease: one key in a JetStream key-value bucket whose entries expire after
//! the lease's time to live. An instance becomes primary by creating the key (only possible
//! when it is absent or expired) and stays primary by updating it with the revision it last
//! wrote (so an update after someone else took the key fails). The [`LeaseClock`] tells the
//! committer how long the lease is surely still ours: until a quarter of the time to live
//! before it could have expired, counted from when the renewal was sent, on the monotonic
//! clock (which keeps counting while the process is paused).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use super::ReplicationError;

const KEY: &str = "primary";

/// Until when the lease is surely held; shared with the committer.
#[derive(Debug, Clone)]
pub(crate) struct LeaseClock {
    base: Instant,
    valid_until_ms: Arc<AtomicU64>,
}

impl LeaseClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            valid_until_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn held_until(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.base).as_millis() as u64;
        self.valid_until_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Whether the lease is surely still held now.
    pub(crate) fn is_valid(&self) -> bool {
        (self.base.elapsed().as_millis() as u64) < self.valid_until_ms.load(Ordering::Acquire)
    }

    /// How long it is surely still held.
    pub(crate) fn remaining(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(
            self.valid_until_ms
                .load(Ordering::Acquire)
                .saturating_sub(now),
        )
    }
}

pub(crate) struct Lease {
    kv: kv::Store,
    instance: String,
    ttl: Duration,
}

impl Lease {
    /// The lease bucket (made with `ttl` and `replicas` when missing; an existing bucket's
    /// own time to live counts) for the instance named `instance`.
    pub(crate) async fn ensure(
        jetstream: &jetstream::Context,
        bucket: &str,
        ttl: Duration,
        replicas: usize,
        instance: String,
    ) -> Result<Self, ReplicationError> {
        let kv = match jetstream.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => jetstream
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "Who is the customers service's primary".into(),
                    history: 1,
                    max_age: ttl,
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| ReplicationError::setup(format!("the lease bucket {bucket}"), e))?,
        };
        let ttl = kv
            .status()
            .await
            .map(|status| status.max_age())
            .ok()
            .filter(|age| !age.is_zero())
            .unwrap_or(ttl);
        Ok(Self { kv, instance, ttl })
    }

    /// Waits until this instance holds the lease; returns the revision it wrote and the clock.
    pub(crate) async fn acquire(&self) -> (u64, LeaseClock) {
        let clock = LeaseClock::new();
        loop {
            let sent = Instant::now();
            match self
                .kv
                .create(KEY, Bytes::from(self.instance.clone()))
                .await
            {
                Ok(revision) => {
                    clock.held_until(sent + self.ttl * 3 / 4);
                    return (revision, clock);
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => tracing::debug!(error = %e, "cannot reach the lease bucket"),
            }
            tokio::time::sleep(self.ttl / 8).await;
        }
    }

    /// Renews the lease every quarter of its time to live until a renewal fails for good (the
    /// key was taken, or no renewal succeeded before the lease ran out); then returns.
    /// `revision` starts as the one [`Lease::acquire`] wrote and follows each renewal.
    pub(crate) async fn hold(&self, revision: &AtomicU64, clock: &LeaseClock) {
        loop {
            tokio::time::sleep(self.ttl / 4).await;
            let sent = Instant::now();
            let last = revision.load(Ordering::Acquire);
            match self
                .kv
                .update(KEY, Bytes::from(self.instance.clone()), last)
                .await
            {
                Ok(next) => {
                    revision.store(next, Ordering::Release);
                    clock.held_until(sent + self.ttl * 3 / 4);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // The tests' stand-in for a primary that has not noticed yet: it goes on
                    // serving (its lease clock no longer moves) until something else fences it.
                    #[cfg(feature = "failpoints")]
                    if fail::eval("lease-loss-unnoticed", |_| ()).is_some() {
                        continue;
                    }
                    tracing::error!("the primary lease was taken by another instance");
                    return;
                }
                Err(e) if clock.is_valid() => {
                    tracing::warn!(error = %e, "cannot renew the primary lease yet; retrying");
                }
                Err(e) => {
                    tracing::error!(error = %e, "the primary lease ran out before it could be renewed");
                    return;
                }
            }
        }
    }

    /// Gives the lease up at once (a clean stop), so a standby need not wait for it to expire.
    pub(crate) async fn release(&self, revision: &AtomicU64) {
        let revision = revision.load(Ordering::Acquire);
        if let Err(e) = self.kv.delete_expect_revision(KEY, Some(revision)).await {
            tracing::debug!(error = %e, "could not release the primary lease; it expires by itself");
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }
}
