//! Idempotent creates (docs/API.md §5) and the `idempotency` tree's layout. A create with an
//! `Idempotency-Key` first looks for a stored record; without one it claims the key in this
//! process ([`Claims`]: a second request with the key gets 409 `idempotency_key_in_use` while
//! the claim is held), looks again (the previous holder may have just committed), and is
//! processed. Its final reply is written in the same journal record as the customer, and the
//! claim is released only after that group is durable and applied, so a lookup never finds a
//! reply that a crash could take back.
//!
//! Tree layout: `k{key}` → the record, `t{created_ms: u64 BE}{key}` → empty (the expiry
//! entry the background purge walks in time order). A record is binary: `1` (format) |
//! `created_ms: u64 BE` | SHA-256 of the request body (32 bytes) | `status: u16 BE`, then for
//! a 201 the customer's 16-byte id (the reply is the stored customer, read back on replay),
//! otherwise `code_len: u8` | code | the problem body.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use customers_shared::wire::idempotency::IdempotencyKey;
use sha2::{Digest, Sha256};

use crate::journal::{Batch, TreeId};
use crate::reply::Reply;
use crate::store::reads::id_from_bytes;
use crate::store::{Store, StoreError};

const FORMAT: u8 = 1;
/// Format byte, created_ms, fingerprint and status.
const FIXED: usize = 1 + 8 + 32 + 2;

/// The key of a create being processed, with the fingerprint of its body.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: IdempotencyKey,
    /// SHA-256 of the request payload, byte for byte.
    pub fingerprint: [u8; 32],
}

impl IdempotencyClaim {
    pub fn new(key: IdempotencyKey, payload: &[u8]) -> Self {
        Self {
            key,
            fingerprint: Sha256::digest(payload).into(),
        }
    }
}

/// A stored final reply: what the first request with the key was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Milliseconds since the Unix epoch when the reply was committed.
    pub created_ms: u64,
    pub fingerprint: [u8; 32],
    pub reply: Reply,
}

fn record_key(key: &IdempotencyKey) -> Vec<u8> {
    [b"k", key.as_str().as_bytes()].concat()
}

fn expiry_key(key: &IdempotencyKey, created_ms: u64) -> Vec<u8> {
    [b"t", &created_ms.to_be_bytes()[..], key.as_str().as_bytes()].concat()
}

/// The encoded record of `reply` to `claim`'s request.
pub fn encode(claim: &IdempotencyClaim, reply: &Reply, created_ms: u64) -> Vec<u8> {
    let mut record = Vec::with_capacity(FIXED + 16);
    record.push(FORMAT);
    record.extend_from_slice(&created_ms.to_be_bytes());
    record.extend_from_slice(&claim.fingerprint);
    record.extend_from_slice(&reply.status.to_be_bytes());
    match (&reply.customer_id, &reply.code) {
        (Some(id), _) if reply.status == 201 => record.extend_from_slice(&id.to_bytes()),
        (_, code) => {
            let code = code.as_deref().unwrap_or_default();
            record.push(u8::try_from(code.len()).expect("codes are short"));
            record.extend_from_slice(code.as_bytes());
            record.extend_from_slice(&reply.body);
        }
    }
    record
}

/// Adds the record (from [`encode`]) and its expiry entry to a group's batch.
pub fn remember(batch: &mut Batch, key: &IdempotencyKey, record: &[u8], created_ms: u64) {
    batch.put(TreeId::Idempotency, &record_key(key), record);
    batch.put(TreeId::Idempotency, &expiry_key(key, created_ms), &[]);
}

/// The stored record of `key`, if any and not expired; a 201's body is the stored customer.
pub fn lookup(
    store: &Store,
    key: &IdempotencyKey,
    retention: Duration,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let Some(bytes) = store.tree(TreeId::Idempotency).get(record_key(key))? else {
        return Ok(None);
    };
    let corrupt = |reason: &str| StoreError::Corrupt {
        what: format!("idempotency record {:?}", key.as_str()),
        reason: reason.to_owned(),
    };
    if bytes.first() == Some(&b'{') {
        // Written before the journal (JSON): not kept across that upgrade.
        return Ok(None);
    }
    if bytes.len() < FIXED || bytes[0] != FORMAT {
        return Err(corrupt("unknown format"));
    }
    let created_ms = u64::from_be_bytes(bytes[1..9].try_into().unwrap());
    if created_ms < oldest_kept_ms(retention) {
        return Ok(None);
    }
    let fingerprint = bytes[9..41].try_into().unwrap();
    let status = u16::from_be_bytes([bytes[41], bytes[42]]);
    let rest = &bytes[FIXED..];
    let reply = if status == 201 {
        let id = id_from_bytes(rest.get(..16).ok_or_else(|| corrupt("short id"))?);
        let customer = store
            .get(id)?
            .ok_or_else(|| corrupt("its customer does not exist"))?;
        Reply::created(id, Bytes::copy_from_slice(&customer))
    } else {
        let code_len = usize::from(*rest.first().ok_or_else(|| corrupt("no code"))?);
        let code = rest
            .get(1..1 + code_len)
            .and_then(|c| std::str::from_utf8(c).ok())
            .ok_or_else(|| corrupt("bad code"))?;
        Reply {
            status,
            code: Some(code.to_owned()),
            customer_id: None,
            retry_after_secs: None,
            body: Bytes::copy_from_slice(&rest[1 + code_len..]),
        }
    };
    Ok(Some(IdempotencyRecord {
        created_ms,
        fingerprint,
        reply,
    }))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Records committed before this instant have expired.
fn oldest_kept_ms(retention: Duration) -> u64 {
    now_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
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

/// Removes up to `batch` records committed before `created_before_ms`, oldest first; returns
/// how many expiry entries it removed (fewer than `batch`: none left). A record is removed
/// only if it is still the expired one (compare-and-swap), so a key reused since keeps its
/// new record. Not journaled: a removal lost in a crash is simply done again.
pub fn purge_expired(
    store: &Store,
    created_before_ms: u64,
    batch: usize,
) -> Result<usize, StoreError> {
    let tree = store.tree(TreeId::Idempotency);
    let end = [&b"t"[..], &created_before_ms.to_be_bytes()[..]].concat();
    let expired: Vec<sled::IVec> = tree
        .range(&b"t"[..]..&end[..])
        .keys()
        .take(batch)
        .collect::<Result<_, _>>()?;
    for expiry in &expired {
        let (created_ms, key) = expiry[1..].split_at(8);
        let record_key = [&b"k"[..], key].concat();
        let record = tree.get(&record_key)?;
        if let Some(record) = record.filter(|r| r.get(1..9) == Some(created_ms) || r[0] == b'{') {
            // A failed swap means the key was just reused: its new record stays.
            let _ = tree.compare_and_swap(&record_key, Some(&record), None::<&[u8]>)?;
        }
        tree.remove(expiry)?;
    }
    Ok(expired.len())
}

/// Purges expired records every `retention / 4` (at most every 10 minutes) until the task is
/// aborted. Each batch is a few hundred small sled operations (about a millisecond) on the
/// blocking pool, never on the runtime's thread. Aborting the task drops its handle on the
/// store once the running batch ends, so a stopped worker releases the database.
pub async fn purge_expired_forever(store: Arc<Store>, retention: Duration) {
    const BATCH: usize = 256;
    let period = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cutoff = oldest_kept_ms(retention);
        let mut purged = 0;
        loop {
            let store = store.clone();
            let batch = tokio::task::spawn_blocking(move || purge_expired(&store, cutoff, BATCH));
            match batch.await {
                Ok(Ok(n)) => {
                    purged += n;
                    if n < BATCH {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "idempotency purge failed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency purge task failed");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "expired idempotency keys purged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use customers_shared::{ApiError, CustomerId};

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_key_is_claimed_once_until_released() {
        let claims = Arc::new(Claims::default());
        let first = claims.claim(&key("k-1")).expect("free");
        assert!(claims.claim(&key("k-1")).is_none(), "held");
        drop(first);
        assert!(claims.claim(&key("k-1")).is_some(), "released");
    }

    #[test]
    fn fingerprints_are_sha256_of_the_exact_bytes() {
        let hex = |claim: IdempotencyClaim| -> String {
            claim
                .fingerprint
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        assert_eq!(
            hex(IdempotencyClaim::new(key("k"), b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(
            IdempotencyClaim::new(key("k"), b"{}").fingerprint,
            IdempotencyClaim::new(key("k"), b"{ }").fingerprint
        );
    }

    fn store_with(
        records: &[(&str, &Reply, u64)],
        customers: &[(CustomerId, &str)],
    ) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let opened = Store::open(dir.path(), 1 << 20).unwrap();
        let mut batch = Batch::default();
        for (id, json) in customers {
            batch.put(TreeId::Customers, &id.to_bytes(), json.as_bytes());
        }
        for (k, reply, created_ms) in records {
            let claim = IdempotencyClaim::new(key(k), k.as_bytes());
            remember(
                &mut batch,
                &claim.key,
                &encode(&claim, reply, *created_ms),
                *created_ms,
            );
        }
        opened.store.apply(batch.puts()).unwrap();
        (dir, opened.store)
    }

    #[test]
    fn stored_replies_come_back_as_sent() {
        let id = CustomerId::from_uuid(uuid::Uuid::now_v7());
        let created = Reply::created(id, Bytes::from_static(b"{\"id\":1}"));
        let taken = Reply::error(&ApiError::EmailAlreadyExists { customer_id: id });
        let refused = Reply::error(&ApiError::InvalidBody);
        let now = now_ms();
        let (_dir, store) = store_with(
            &[
                ("created", &created, now),
                ("taken", &taken, now),
                ("refused", &refused, now),
            ],
            &[(id, "{\"id\":1}")],
        );
        let day = Duration::from_secs(86_400);
        for (k, reply) in [
            ("created", &created),
            ("taken", &taken),
            ("refused", &refused),
        ] {
            let record = lookup(&store, &key(k), day).unwrap().expect(k);
            assert_eq!(&record.reply, reply, "{k}");
            assert_eq!(
                record.fingerprint,
                IdempotencyClaim::new(key(k), k.as_bytes()).fingerprint
            );
        }
        assert_eq!(lookup(&store, &key("unknown"), day).unwrap(), None);
    }

    #[test]
    fn expired_records_are_ignored_then_purged_in_time_order_but_a_reused_key_stays() {
        let reply = Reply::error(&ApiError::InvalidBody);
        let now = now_ms();
        let (_dir, store) = store_with(
            &[
                ("old-1", &reply, now - 5000),
                ("old-2", &reply, now - 4000),
                ("reused", &reply, now - 3000),
                ("new", &reply, now),
            ],
            &[],
        );
        // "reused" was reused since: its record is newer than its first expiry entry.
        let mut batch = Batch::default();
        let claim = IdempotencyClaim::new(key("reused"), b"reused");
        remember(&mut batch, &claim.key, &encode(&claim, &reply, now), now);
        store.apply(batch.puts()).unwrap();

        let retention = Duration::from_millis(2000);
        assert_eq!(
            lookup(&store, &key("old-1"), retention).unwrap(),
            None,
            "expired"
        );
        assert!(lookup(&store, &key("reused"), retention).unwrap().is_some());
        let cutoff = now - 2000;
        assert_eq!(purge_expired(&store, cutoff, 2).unwrap(), 2, "one batch");
        assert_eq!(purge_expired(&store, cutoff, 2).unwrap(), 1, "the rest");
        assert_eq!(purge_expired(&store, cutoff, 2).unwrap(), 0);
        let tree = store.tree(TreeId::Idempotency);
        assert!(tree.get(record_key(&key("old-1"))).unwrap().is_none());
        assert!(tree.get(record_key(&key("old-2"))).unwrap().is_none());
        assert!(
            tree.get(record_key(&key("reused"))).unwrap().is_some(),
            "kept"
        );
        assert!(tree.get(record_key(&key("new"))).unwrap().is_some());
        assert_eq!(tree.len(), 4, "two records and their two expiry entries");
    }
}
