//! The NATS side of the contract: the micro service's name, its subjects (under a
//! configurable prefix, so two environments can share one NATS account) and the header names
//! that travel on requests and replies.

/// Name of the NATS micro service (`$SRV.PING.customers`, `$SRV.INFO.customers`, ...).
pub const SERVICE_NAME: &str = "customers";

/// Version of the service announced in `$SRV.INFO`.
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default subject prefix: subjects are `{prefix}.v1.{endpoint}`.
pub const DEFAULT_SUBJECT_PREFIX: &str = "customers";

/// Largest create body accepted by default, over HTTP and NATS alike (64 KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Name of the create endpoint within the service.
pub const CREATE_ENDPOINT: &str = "create";

/// The create subject, e.g. `customers.v1.create`.
pub fn create_subject(prefix: &str) -> String {
    format!("{prefix}.v1.{CREATE_ENDPOINT}")
}

/// Connects to NATS as `client_name`, logging connection events (disconnects, reconnects)
/// at info. Fails when no server answers within `timeout`; once connected, the client
/// reconnects on its own forever.
pub async fn connect(
    client_name: &str,
    url: &str,
    timeout: std::time::Duration,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(timeout)
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS connection event");
        })
        .connect(url)
        .await
}

/// Header names used on NATS requests and replies (and, where they match, over HTTP).
pub mod headers {
    /// Correlates one request's log lines across ingress and worker.
    pub const REQUEST_ID: &str = "X-Request-Id";
    /// W3C trace context, forwarded unchanged.
    pub const TRACEPARENT: &str = "traceparent";
    /// Reserved for idempotent creates (API.md §5).
    pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
    /// On a successful create reply: the new customer's id, so callers (the ingress's
    /// `Location` header) need not parse the body.
    pub const CUSTOMER_ID: &str = "Customer-Id";
    /// On a 503 reply: seconds to wait before retrying.
    pub const RETRY_AFTER: &str = "Retry-After";
    /// NATS micro error headers: the problem's `code` and its HTTP status.
    pub const SERVICE_ERROR: &str = "Nats-Service-Error";
    pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
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
