//! The stored reply of a keyed request, as the `idempotency` tree holds it (keys in
//! [`crate::storage::schema`]). A record is binary: `1` (format) | `created_ms: u64 BE` |
//! SHA-256 of the request body (32 bytes) | `status: u16 BE`, then for a 201 the customer's
//! 16-byte id (the reply is the stored customer, read back on replay), otherwise `code_len:
//! u8` | code | the problem body. No JSON inside JSON, whose escaping could double a stored
//! body's size.

use std::time::Duration;

use bytes::Bytes;
use customers_shared::runtime::clock::unix_ms;
use customers_shared::wire::idempotency::IdempotencyKey;

use super::IdempotencyClaim;
use crate::reply::Reply;
use crate::storage::journal::{Batch, TreeId};
use crate::storage::schema;
use crate::storage::store::reads::id_from_bytes;
use crate::storage::store::{Store, StoreError};

const FORMAT: u8 = 1;
/// Format byte, created_ms, fingerprint and status.
const FIXED: usize = 1 + 8 + 32 + 2;

/// A stored final reply: what the first request with the key was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyRecord {
    /// Milliseconds since the Unix epoch when the reply was committed.
    pub(crate) created_ms: u64,
    pub(crate) fingerprint: [u8; 32],
    pub(crate) reply: Reply,
}

/// The encoded record of `reply` to `claim`'s request.
pub(crate) fn encode(claim: &IdempotencyClaim, reply: &Reply, created_ms: u64) -> Vec<u8> {
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
pub(crate) fn remember(batch: &mut Batch, key: &IdempotencyKey, record: &[u8], created_ms: u64) {
    batch.put(
        TreeId::Idempotency,
        &schema::idempotency_record_key(key.as_str()),
        record,
    );
    batch.put(
        TreeId::Idempotency,
        &schema::idempotency_expiry_key(key.as_str(), created_ms),
        &[],
    );
}

/// The stored record of `key`, if any and not expired; a 201's body is the stored customer.
pub(crate) fn lookup(
    store: &Store,
    key: &IdempotencyKey,
    retention: Duration,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let Some(bytes) = store
        .tree(TreeId::Idempotency)
        .get(schema::idempotency_record_key(key.as_str()))?
    else {
        return Ok(None);
    };
    let corrupt = |reason: &str| StoreError::Corrupt {
        what: format!("idempotency record {:?}", key.as_str()),
        reason: reason.to_owned(),
    };
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

/// Records committed before this instant have expired.
pub(crate) fn oldest_kept_ms(retention: Duration) -> u64 {
    unix_ms().saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
}
