//! Idempotent creates (API.md §5). A create with an `Idempotency-Key` first claims the key in
//! this process ([`Claims`]: a second request with the key gets 409 `idempotency_key_in_use`
//! while the claim is held), then looks for a stored record; without one it is processed and
//! its final reply is written as an [`IdempotencyRecord`] in the same group commit as the
//! customer (see `store`). The claim is released only after that commit, so no reader of the
//! record ever sees a reply that was not durable. Records live in the `idempotency` tree under
//! `k{key}`, with an expiry entry `t{created_ms}{key}` that the background purge walks in time
//! order.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use customers_shared::idempotency::IdempotencyKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::reply::Reply;
use crate::store::{Store, StoreError};

/// The key of a create being processed, with the fingerprint of its body.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: IdempotencyKey,
    /// Lower-case hex SHA-256 of the request payload, byte for byte.
    pub fingerprint: String,
}

impl IdempotencyClaim {
    pub fn new(key: IdempotencyKey, payload: &[u8]) -> Self {
        let digest = Sha256::digest(payload);
        let fingerprint = digest.iter().map(|b| format!("{b:02x}")).collect();
        Self { key, fingerprint }
    }
}

/// A stored final reply: what the first request with the key was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Milliseconds since the Unix epoch when the reply was committed.
    pub created_ms: u64,
    pub fingerprint: String,
    pub status: u16,
    pub code: Option<String>,
    pub customer_id: Option<String>,
    /// The reply body (customer or problem JSON), exactly as first sent.
    pub body: String,
}

impl IdempotencyRecord {
    pub fn new(claim: &IdempotencyClaim, reply: &Reply, created_ms: u64) -> Self {
        Self {
            created_ms,
            fingerprint: claim.fingerprint.clone(),
            status: reply.status,
            code: reply.code.clone(),
            customer_id: reply.customer_id.clone(),
            body: String::from_utf8_lossy(&reply.body).into_owned(),
        }
    }

    pub fn reply(self) -> Reply {
        Reply {
            status: self.status,
            code: self.code,
            customer_id: self.customer_id,
            retry_after_secs: None,
            body: Bytes::from(self.body),
        }
    }

    /// The record's key in the tree.
    pub fn record_key(key: &IdempotencyKey) -> Vec<u8> {
        [b"k", key.as_str().as_bytes()].concat()
    }

    /// The record's expiry entry in the tree: time-ordered, then by key.
    pub fn expiry_key(key: &IdempotencyKey, created_ms: u64) -> Vec<u8> {
        [b"t", &created_ms.to_be_bytes()[..], key.as_str().as_bytes()].concat()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Keys of the creates this process is working on right now.
#[derive(Default)]
pub struct Claims {
    keys: Mutex<HashSet<IdempotencyKey>>,
}

impl Claims {
    /// Claims `key`, or `None` when another request holds it. The claim ends when the guard
    /// is dropped.
    pub fn claim(self: &Arc<Self>, key: &IdempotencyKey) -> Option<ClaimGuard> {
        let fresh = self.keys.lock().expect("claims").insert(key.clone());
        fresh.then(|| ClaimGuard {
            claims: self.clone(),
            key: key.clone(),
        })
    }
}

pub struct ClaimGuard {
    claims: Arc<Claims>,
    key: IdempotencyKey,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.claims.keys.lock().expect("claims").remove(&self.key);
    }
}

/// Purges expired records every `retention / 4` (at most every 10 minutes) until the task
/// is aborted. Each batch is a few hundred small sled transactions (about a millisecond);
/// the task yields between batches, so it never holds up request tasks for long, and the
/// committer only meets it as an ordinary concurrent transaction. Aborting the task drops
/// its handle on the store at once, so a stopped worker releases the database.
pub async fn purge_expired_forever(store: Arc<Store>, retention: Duration) {
    const BATCH: usize = 256;
    let period = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cutoff = now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(0));
        let mut purged = 0;
        loop {
            match store.purge_idempotency(cutoff, BATCH) {
                Ok(n) => {
                    purged += n;
                    if n < BATCH {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency purge failed");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "expired idempotency keys purged");
        }
    }
}

/// A stored record, if one exists for `key` and has not expired.
pub fn lookup(
    store: &Store,
    key: &IdempotencyKey,
    retention: Duration,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let oldest = now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(0));
    Ok(store
        .idempotency_record(key)?
        .filter(|record| record.created_ms >= oldest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_until_released() {
        let claims = Arc::new(Claims::default());
        let key = IdempotencyKey::parse(b"k-1").unwrap();
        let first = claims.claim(&key).expect("free");
        assert!(claims.claim(&key).is_none(), "held");
        drop(first);
        assert!(claims.claim(&key).is_some(), "released");
    }

    #[test]
    fn fingerprints_are_sha256_of_the_exact_bytes() {
        let key = IdempotencyKey::parse(b"k").unwrap();
        assert_eq!(
            IdempotencyClaim::new(key.clone(), b"").fingerprint,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(
            IdempotencyClaim::new(key.clone(), b"{}").fingerprint,
            IdempotencyClaim::new(key, b"{ }").fingerprint
        );
    }
}
