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
/// Name of the get-by-id endpoint (payload: the id).
pub const GET_ENDPOINT: &str = "get";
/// Name of the list endpoint (payload: the query as JSON, see [`crate::list::ListQuery`]).
pub const LIST_ENDPOINT: &str = "list";

/// The subject of `endpoint`, e.g. `customers.v1.get`.
pub fn subject(prefix: &str, endpoint: &str) -> String {
    format!("{prefix}.v1.{endpoint}")
}

/// The create subject, e.g. `customers.v1.create`.
pub fn create_subject(prefix: &str) -> String {
    subject(prefix, CREATE_ENDPOINT)
}

/// Longest wait between two reconnection attempts: after a broker outage both binaries
/// are back within this much of the broker's return.
pub const MAX_RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// A NATS client and a live view of whether it is connected.
pub struct NatsConnection {
    pub client: async_nats::Client,
    /// `true` while connected; changes as soon as the client notices a disconnect.
    pub connected: tokio::sync::watch::Receiver<bool>,
}

/// Connects to NATS as `client_name`, logging connection events at info. Fails when no
/// server answers within `timeout`; once connected, the client reconnects forever, trying
/// at least every [`MAX_RECONNECT_DELAY`].
pub async fn connect(
    client_name: &str,
    url: &str,
    timeout: std::time::Duration,
) -> Result<NatsConnection, async_nats::ConnectError> {
    let (state, connected) = tokio::sync::watch::channel(false);
    let state = std::sync::Arc::new(state);
    let events = state.clone();
    let client = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(timeout)
        .reconnect_delay_callback(|attempts| {
            (std::time::Duration::from_millis(50) * attempts as u32).min(MAX_RECONNECT_DELAY)
        })
        .event_callback(move |event| {
            match event {
                async_nats::Event::Connected => events.send_replace(true),
                async_nats::Event::Disconnected | async_nats::Event::Closed => {
                    events.send_replace(false)
                }
                _ => false,
            };
            async move {
                tracing::info!(%event, "NATS connection event");
            }
        })
        .connect(url)
        .await?;
    // The event of this first connection may not have been handled yet.
    state.send_replace(client.connection_state() == async_nats::connection::State::Connected);
    Ok(NatsConnection { client, connected })
}

/// Returns once the server has processed everything `client` sent before (subscriptions
/// included): a message to a fresh inbox, sent after them on the same connection, has come
/// back. `Client::flush` only empties the local write buffer, which is not enough to know
/// that requests from other connections will find our subscriptions.
pub async fn round_trip(client: &async_nats::Client) -> Result<(), async_nats::Error> {
    use futures_util::StreamExt;
    let inbox = client.new_inbox();
    let mut echo = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, bytes::Bytes::new()).await?;
    echo.next()
        .await
        .ok_or("the connection closed during a round trip")?;
    Ok(())
}

/// Header names used on NATS requests and replies (and, where they match, over HTTP).
pub mod headers {
    /// Correlates one request's log lines across ingress and worker.
    pub const REQUEST_ID: &str = "X-Request-Id";
    /// W3C trace context, forwarded unchanged.
    pub const TRACEPARENT: &str = "traceparent";
    /// Makes a create safe to retry (API.md §5).
    pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
    /// `true` on a reply that is the stored reply of an earlier request with the same key.
    pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
    /// On a successful (or replayed) create reply: the customer's id, so callers (the
    /// ingress's `Location` header) need not parse the body.
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
