//! What the worker answers on any endpoint: a status, the body, and the NATS headers that
//! follow from them (micro error headers, `Customer-Id`, `Retry-After`). An idempotency
//! record stores exactly this value, so a replay is the same bytes with the same headers.
//! This module only builds replies; each is decided where its reason is known: the committer
//! decides a create that reached it ([`Reply::created`], or the email conflict's
//! [`Reply::error`]), `api` one refused before (invalid fields, a key in use, overloaded,
//! stopping) and every read's.

use async_nats::HeaderMap;
use bytes::Bytes;
use customers_shared::wire::protocol::headers;
use customers_shared::{ApiError, CustomerId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The HTTP status this reply stands for (201, 200, or the error's).
    pub(crate) status: u16,
    /// The problem's `code` on errors.
    pub(crate) code: Option<String>,
    /// On a create's 201: the new customer's id.
    pub(crate) customer_id: Option<CustomerId>,
    pub(crate) retry_after_secs: Option<u32>,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn created(id: CustomerId, customer_json: Bytes) -> Self {
        Self {
            status: 201,
            code: None,
            customer_id: Some(id),
            retry_after_secs: None,
            body: customer_json,
        }
    }

    pub(crate) fn ok(body: Bytes) -> Self {
        Self {
            status: 200,
            code: None,
            customer_id: None,
            retry_after_secs: None,
            body,
        }
    }

    pub(crate) fn error(error: &ApiError) -> Self {
        Self {
            status: error.status(),
            code: Some(error.code().to_owned()),
            customer_id: None,
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
