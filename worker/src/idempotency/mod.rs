//! Idempotent writes (docs/API.md §5), the whole protocol: a request with an
//! `Idempotency-Key` [`begin`]s by looking for a stored reply; without one it claims the key
//! in this process ([`Claims`]: a second request with the key gets 409
//! `idempotency_key_in_use` while the claim is held), looks again (the previous holder may
//! have just committed), and is processed. Its final reply is written in the same journal
//! record as the customer ([`record`]), and the claim is released only after that group is
//! durable and applied, so a lookup never finds a reply that a crash could take back.
//! Expired records are removed a batch at a time ([`purge`]), by the committer, between two
//! groups.

pub(crate) mod purge;
pub(crate) mod record;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use customers_shared::ApiError;
use customers_shared::wire::idempotency::IdempotencyKey;
use sha2::{Digest, Sha256};

use crate::reply::Reply;
use crate::storage::store::Store;
use crate::support::blocking;

pub(crate) use record::{encode, remember};

/// The key of a write being processed, with the fingerprint of its request.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyClaim {
    pub(crate) key: IdempotencyKey,
    /// SHA-256 of what the request asks: a create's payload byte for byte; for a change, the
    /// operation and the customer's id too (see [`IdempotencyClaim::for_change`]).
    pub(crate) fingerprint: [u8; 32],
}

impl IdempotencyClaim {
    /// A create's claim: the fingerprint is its payload's (as records written before updates
    /// existed have it).
    pub(crate) fn new(key: IdempotencyKey, payload: &[u8]) -> Self {
        Self {
            key,
            fingerprint: Sha256::digest(payload).into(),
        }
    }

    /// An update's or a delete's claim: the same key sent with another operation, another
    /// customer or another body is then `422 idempotency_key_reused`. The operation's name
    /// and the id end in a NUL, which no id holds, so no two requests share a fingerprint.
    pub(crate) fn for_change(
        key: IdempotencyKey,
        operation: &str,
        id: customers_shared::CustomerId,
        payload: &[u8],
    ) -> Self {
        let mut digest = Sha256::new();
        digest.update(operation.as_bytes());
        digest.update([0]);
        digest.update(id.to_string().as_bytes());
        digest.update([0]);
        digest.update(payload);
        Self {
            key,
            fingerprint: digest.finalize().into(),
        }
    }
}

/// Keys of the creates this process is working on right now.
#[derive(Default)]
pub(crate) struct Claims {
    keys: Mutex<HashSet<IdempotencyKey>>,
}

impl Claims {
    /// Claims `key`, or `None` when another request holds it. The claim ends when the guard
    /// is dropped.
    pub(crate) fn claim(self: &Arc<Self>, key: &IdempotencyKey) -> Option<ClaimGuard> {
        let fresh = self.keys.lock().expect("claims").insert(key.clone());
        fresh.then(|| ClaimGuard {
            claims: self.clone(),
            key: key.clone(),
        })
    }
}

pub(crate) struct ClaimGuard {
    claims: Arc<Claims>,
    key: IdempotencyKey,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.claims.keys.lock().expect("claims").remove(&self.key);
    }
}

/// What a keyed request finds when it begins.
pub(crate) enum Begun {
    /// The key is this request's now: process it, and hold the guard until its group is
    /// durable and applied.
    Claimed {
        claim: IdempotencyClaim,
        guard: ClaimGuard,
    },
    /// The key has a stored reply for this very body: it is sent again.
    Replay(Reply),
    /// Refused without processing: the key was used with another body (422), is in use by a
    /// request being processed (409), or its record could not be read (500).
    Refused(Reply),
}

/// Looks up `claim`'s key, claims it if free, and looks again (on the blocking pool: the
/// lookup may read the disk).
pub(crate) async fn begin(
    store: Arc<Store>,
    claims: Arc<Claims>,
    claim: IdempotencyClaim,
    retention: Duration,
) -> Begun {
    let begun = blocking::run(move || {
        if let Some(stored) = stored_reply(&store, &claim, retention) {
            return stored;
        }
        let Some(guard) = claims.claim(&claim.key) else {
            let in_use = ApiError::IdempotencyKeyInUse {
                retry_after_secs: 1,
            };
            return Begun::Refused(Reply::error(&in_use));
        };
        // The previous holder may have committed between the lookup and the claim.
        stored_reply(&store, &claim, retention).unwrap_or(Begun::Claimed { claim, guard })
    })
    .await;
    begun.unwrap_or_else(|e| {
        tracing::error!(error = %e, "idempotency lookup failed");
        Begun::Refused(Reply::error(&ApiError::Internal))
    })
}

/// The stored reply for `claim`'s key: a replay when the body is the same, 422 otherwise.
fn stored_reply(store: &Store, claim: &IdempotencyClaim, retention: Duration) -> Option<Begun> {
    match record::lookup(store, &claim.key, retention) {
        Ok(None) => None,
        Ok(Some(record)) if record.fingerprint == claim.fingerprint => {
            Some(Begun::Replay(record.reply))
        }
        Ok(Some(_)) => Some(Begun::Refused(Reply::error(
            &ApiError::IdempotencyKeyReused,
        ))),
        Err(e) => {
            tracing::error!(error = %e, "idempotency lookup failed");
            Some(Begun::Refused(Reply::error(&ApiError::Internal)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::purge::purge_expired;
    use super::record::lookup;
    use super::*;
    use crate::storage::journal::{Batch, TreeId};
    use crate::storage::schema::idempotency_record_key as record_key;
    use bytes::Bytes;
    use customers_shared::CustomerId;
    use customers_shared::runtime::clock::unix_ms as now_ms;

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
        assert!(tree.get(record_key("old-1")).unwrap().is_none());
        assert!(tree.get(record_key("old-2")).unwrap().is_none());
        assert!(tree.get(record_key("reused")).unwrap().is_some(), "kept");
        assert!(tree.get(record_key("new")).unwrap().is_some());
        assert_eq!(tree.len(), 4, "two records and their two expiry entries");
    }
}
