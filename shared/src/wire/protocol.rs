//! The NATS side of the contract: the micro service's name, its subjects (under a
//! configurable prefix, so two environments can share one NATS account) and the header names
//! that travel on requests and replies. Connecting is in [`crate::runtime::nats`].

/// Name of the NATS micro service (`$SRV.PING.customers`, `$SRV.INFO.customers`, ...).
pub const SERVICE_NAME: &str = "customers";

/// Version of the service announced in `$SRV.INFO`.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default subject prefix: subjects are `{prefix}.v1.{endpoint}`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "customers";

/// Largest create body accepted by default, over HTTP and NATS alike (64 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// The body limit may not be set below this: the largest valid customer whose every field is
/// at its limit needs about 10 KiB, but a limit below 1 KiB refuses ordinary ones.
pub const MIN_BODY_LIMIT: u64 = 1024;
/// Nor above this: NATS refuses messages over its `max_payload` (1 MiB by default).
pub const MAX_BODY_LIMIT: u64 = 1024 * 1024;

/// The service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Payload: the customer as JSON.
    Create,
    /// Payload: the id.
    Get,
    /// Payload: the query as JSON, see [`crate::wire::list::ListQuery`].
    List,
    /// Payload: `{"query", "limit", "page"}` as JSON, see [`crate::wire::search::SearchRequest`].
    Search,
    /// Header `Customer-Id`: the customer; payload: a JSON Merge Patch of its fields.
    Update,
    /// Header `Customer-Id`: the customer; payload: empty.
    Delete,
}

impl Endpoint {
    pub const ALL: [Self; 6] = [
        Self::Create,
        Self::Get,
        Self::List,
        Self::Search,
        Self::Update,
        Self::Delete,
    ];

    /// Whether the endpoint changes customers: only a primary (or a single worker) serves it.
    pub fn writes(self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Delete)
    }

    /// Its name within the service (the last token of its subject, a metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Get => "get",
            Self::List => "list",
            Self::Search => "search",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    /// Its subject under `prefix`, e.g. `customers.v1.create`.
    pub fn subject(self, prefix: &str) -> String {
        subject(prefix, self.name())
    }
}

/// The subject `{prefix}.v1.{name}` (an endpoint's, the replicated log's).
pub fn subject(prefix: &str, name: &str) -> String {
    format!("{prefix}.v1.{name}")
}

/// The create subject, e.g. `customers.v1.create`.
pub fn create_subject(prefix: &str) -> String {
    Endpoint::Create.subject(prefix)
}

/// Header names used on NATS requests and replies (and, where they match, over HTTP).
pub mod headers {
    /// Correlates one request's log lines across ingress and worker.
    pub const REQUEST_ID: &str = "X-Request-Id";
    /// W3C trace context, forwarded unchanged.
    pub const TRACEPARENT: &str = "traceparent";
    /// Makes a create safe to retry (docs/API.md §5).
    pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
    /// `true` on a reply that is the stored reply of an earlier request with the same key.
    pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
    /// On a successful (or replayed) create reply: the customer's id, so callers (the
    /// ingress's `Location` header) need not parse the body. On an update or delete request:
    /// the customer it changes.
    pub const CUSTOMER_ID: &str = "Customer-Id";
    /// On a reply carrying a customer (and a `412`): its version's entity tag, `"3"`.
    pub const ETAG: &str = "ETag";
    /// On an update or delete request: proceed only at this version (`*`: any).
    pub const IF_MATCH: &str = "If-Match";
    /// On a 503 reply: seconds to wait before retrying.
    pub const RETRY_AFTER: &str = "Retry-After";
    /// When the requester stops waiting, in milliseconds since the Unix epoch: a worker that
    /// picks the request up later drops it unread. The ingress sets it from its timeout;
    /// other NATS clients may. Assumes the hosts' clocks agree to well within the timeout.
    pub const DEADLINE: &str = "Request-Deadline";
    /// NATS micro error headers: the problem's `code` and its HTTP status.
    pub const SERVICE_ERROR: &str = "Nats-Service-Error";
    pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

    /// The value of header `name` on a NATS message, if present.
    pub fn value<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
        message.headers.as_ref()?.get(name).map(|v| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects() {
        assert_eq!(super::create_subject("customers"), "customers.v1.create");
        assert_eq!(
            super::create_subject("staging.customers"),
            "staging.customers.v1.create"
        );
    }
}
