//! What the events stream holds, read the way a consumer reads it: an ordered consumer from
//! the first message, so a test waits for events as they are stored instead of polling.

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use bytes::Bytes;
use customers_shared::wire::event::DEFAULT_STREAM;
use futures_util::StreamExt;
use serde_json::Value;

use crate::PATIENCE;

/// One message of the events stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub sequence: u64,
    /// The `Nats-Msg-Id` header.
    pub message_id: String,
    pub content_type: Option<String>,
    pub payload: Bytes,
    pub event: Value,
}

impl StoredEvent {
    /// The customer id the event is about (its `subject`).
    pub fn customer_id(&self) -> &str {
        self.event["subject"].as_str().unwrap_or_default()
    }
}

/// The first `count` messages of the events stream, waiting (up to [`PATIENCE`] each) for
/// those not stored yet.
pub async fn first_events(client: &async_nats::Client, count: usize) -> Vec<StoredEvent> {
    let stream = jetstream::new(client.clone())
        .get_stream(DEFAULT_STREAM)
        .await
        .expect("the events stream exists");
    let consumer = stream
        .create_consumer(OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let message = tokio::time::timeout(PATIENCE, messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", events.len()))
            .expect("a message")
            .expect("no consumer error");
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        events.push(StoredEvent {
            sequence: message.info().expect("JetStream metadata").stream_sequence,
            message_id: header("Nats-Msg-Id").unwrap_or_default(),
            content_type: header("Content-Type"),
            event: serde_json::from_slice(&message.payload).expect("a JSON event"),
            payload: message.payload.clone(),
        });
    }
    events
}

/// How many messages the events stream holds now.
pub async fn stored_count(client: &async_nats::Client) -> u64 {
    let mut stream = jetstream::new(client.clone())
        .get_stream(DEFAULT_STREAM)
        .await
        .expect("the events stream exists");
    stream.info().await.expect("stream info").state.messages
}
