//! What the worker answers on any endpoint: a status, the body, and the NATS headers that
//! follow from them (micro error headers, `Customer-Id`, `ETag`, `Retry-After`). An idempotency
//! record stores exactly this value, so a replay is the same bytes with the same headers.
//! This module only builds replies; each is decided where its reason is known: the committer
//! decides a create that reached it ([`Reply::created`], or the email conflict's
//! [`Reply::error`]), `api` one refused before (invalid fields, a key in use, overloaded,
//! stopping) and every read's.

use async_nats::HeaderMap;
use bytes::Bytes;
use customers_shared::wire::conditional::etag;
use customers_shared::wire::protocol::headers;
use customers_shared::{ApiError, CustomerId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The HTTP status this reply stands for (201, 200, or the error's).
    pub(crate) status: u16,
    /// The problem's `code` on errors.
    pub(crate) code: Option<String>,
    /// On a reply carrying a customer (a create's 201, an update's 200): its id.
    pub(crate) customer_id: Option<CustomerId>,
    /// The version whose entity tag goes out as `ETag`: the customer's on a reply carrying
    /// it (a get's too), the current one on a `412`.
    pub(crate) version: Option<u64>,
    pub(crate) retry_after_secs: Option<u32>,
    pub(crate) body: Bytes,
}

impl Reply {
    /// A new customer's 201: version 1.
    pub(crate) fn created(id: CustomerId, customer_json: Bytes) -> Self {
        Self::customer(201, id, 1, customer_json)
    }

    /// A reply carrying the customer `id` at `version` (201 or 200).
    pub(crate) fn customer(status: u16, id: CustomerId, version: u64, json: Bytes) -> Self {
        Self {
            status,
            customer_id: Some(id),
            version: Some(version),
            ..Self::ok(json)
        }
    }

    pub(crate) fn ok(body: Bytes) -> Self {
        Self {
            status: 200,
            code: None,
            customer_id: None,
            version: None,
            retry_after_secs: None,
            body,
        }
    }

    pub(crate) fn error(error: &ApiError) -> Self {
        Self {
            status: error.status(),
            code: Some(error.code().to_owned()),
            customer_id: None,
            version: error.current_version(),
            retry_after_secs: error.retry_after_secs(),
            body: Bytes::from(error.problem_json()),
        }
    }

    /// The reply's headers; `replayed` marks a stored reply sent again.
    pub(crate) fn headers(&self, request_id: Option<&str>, replayed: bool) -> HeaderMap {
        let mut map = HeaderMap::new();
        if let Some(request_id) = request_id {
            map.insert(headers::REQUEST_ID, request_id);
        }
        if let Some(id) = &self.customer_id {
            map.insert(headers::CUSTOMER_ID, id.to_string().as_str());
        }
        if let Some(version) = self.version {
            map.insert(headers::ETAG, etag(version).as_str());
        }
        if let Some(code) = &self.code {
            map.insert(headers::SERVICE_ERROR, code.as_str());
            map.insert(
                headers::SERVICE_ERROR_CODE,
                self.status.to_string().as_str(),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            map.insert(headers::RETRY_AFTER, secs.to_string().as_str());
        }
        if replayed {
            map.insert(headers::IDEMPOTENT_REPLAYED, "true");
        }
        map
    }
}
