//! The stored reply of a keyed request, as the `idempotency` tree holds it (keys in
//! [`crate::storage::schema`]). A record is binary: `2` (format) | `created_ms: u64 BE` |
//! the request's fingerprint (32 bytes) | `status: u16 BE` | `flags: u8`, then either the
//! customer's 16-byte id ([`CUSTOMER`]: the reply is the customer, read back on replay), or
//! the version whose `ETag` the reply carries ([`VERSION`], a `412`'s: 8 bytes BE), `code_len:
//! u8` | code | body. No JSON inside JSON, whose escaping could double a stored body's size.
//!
//! A reply that is the customer keeps only its id: a replay shows the customer as it is now
//! (with its current `ETag`), and `410 customer_deleted` once it was deleted, so no stored
//! reply is a second copy of personal data that an erasure would have to find. Records of
//! format `1` (written before updates existed: a `201` with the id, or code and body) are
//! still read.

use std::time::Duration;

use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::runtime::clock::unix_ms;
use customers_shared::wire::idempotency::IdempotencyKey;

use super::IdempotencyClaim;
use crate::reply::Reply;
use crate::storage::customer_record::CustomerRecord;
use crate::storage::journal::{Batch, TreeId};
use crate::storage::schema;
use crate::storage::store::reads::id_from_bytes;
use crate::storage::store::{Store, StoreError};

const FORMAT_1: u8 = 1;
const FORMAT: u8 = 2;
/// Format byte, created_ms, fingerprint and status.
const FIXED: usize = 1 + 8 + 32 + 2;
/// Flag: the reply is the customer whose id follows.
const CUSTOMER: u8 = 1;
/// Flag: the reply carries the `ETag` of the version that follows.
const VERSION: u8 = 2;

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
    let mut record = Vec::with_capacity(FIXED + 1 + 16);
    record.push(FORMAT);
    record.extend_from_slice(&created_ms.to_be_bytes());
    record.extend_from_slice(&claim.fingerprint);
    record.extend_from_slice(&reply.status.to_be_bytes());
    match (reply.customer_id, reply.version) {
        (Some(id), _) => {
            record.push(CUSTOMER);
            record.extend_from_slice(&id.to_bytes());
        }
        (None, version) => {
            record.push(if version.is_some() { VERSION } else { 0 });
            if let Some(version) = version {
                record.extend_from_slice(&version.to_be_bytes());
            }
            let code = reply.code.as_deref().unwrap_or_default();
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
    if bytes.len() < FIXED || !matches!(bytes[0], FORMAT_1 | FORMAT) {
        return Err(corrupt("unknown format"));
    }
    let created_ms = u64::from_be_bytes(bytes[1..9].try_into().unwrap());
    if created_ms < oldest_kept_ms(retention) {
        return Ok(None);
    }
    let fingerprint = bytes[9..41].try_into().unwrap();
    let status = u16::from_be_bytes([bytes[41], bytes[42]]);
    let mut rest = &bytes[FIXED..];
    let flags = match bytes[0] {
        FORMAT_1 if status == 201 => CUSTOMER,
        FORMAT_1 => 0,
        _ => {
            let (&flags, after) = rest.split_first().ok_or_else(|| corrupt("no flags"))?;
            rest = after;
            flags
        }
    };
    let reply = if flags & CUSTOMER != 0 {
        let id = id_from_bytes(rest.get(..16).ok_or_else(|| corrupt("short id"))?);
        match store
            .get(id)?
            .ok_or_else(|| corrupt("its customer does not exist"))?
        {
            CustomerRecord::Live(live) => Reply::customer(status, id, live.version, live.json),
            CustomerRecord::Deleted { .. } => Reply::error(&ApiError::CustomerDeleted),
        }
    } else {
        let mut version = None;
        if flags & VERSION != 0 {
            let bytes = rest.get(..8).ok_or_else(|| corrupt("short version"))?;
            version = Some(u64::from_be_bytes(bytes.try_into().unwrap()));
            rest = &rest[8..];
        }
        let code_len = usize::from(*rest.first().ok_or_else(|| corrupt("no code"))?);
        let code = rest
            .get(1..1 + code_len)
            .and_then(|c| std::str::from_utf8(c).ok())
            .ok_or_else(|| corrupt("bad code"))?;
        Reply {
            status,
            code: (!code.is_empty()).then(|| code.to_owned()),
            customer_id: None,
            version,
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
