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

/// The ids of the events the stream must hold for `customers` as they ended (a
/// [`crate::ledger::Verdict`]'s): a customer at version `v` has its `customer.created` and
/// one `customer.updated` per version 2 to `v`; a deleted one only its `customer.deleted`
/// (its earlier ones were erased).
pub fn expected_event_ids(
    customers: &std::collections::BTreeMap<String, crate::ledger::State>,
) -> std::collections::BTreeSet<String> {
    use crate::ledger::State;
    let mut ids = std::collections::BTreeSet::new();
    for (id, state) in customers {
        match state {
            State::Live { version, .. } => {
                ids.insert(format!("customer.created:{id}"));
                ids.extend((2..=*version).map(|v| format!("customer.updated:{id}:{v}")));
            }
            State::Deleted => {
                ids.insert(format!("customer.deleted:{id}"));
            }
        }
    }
    ids
}

/// Fails unless the events stream holds exactly one event per change of `verdict`'s
/// customers (see [`expected_event_ids`]), none twice, none of an erased customer's past;
/// returns how many it holds.
pub async fn assert_one_event_per_change(
    client: &async_nats::Client,
    verdict: &crate::ledger::Verdict,
) -> u64 {
    let expected = expected_event_ids(&verdict.customers);
    let held = stored_count(client).await;
    let events = first_events(client, held as usize).await;
    let ids: std::collections::BTreeSet<String> =
        events.iter().map(|e| e.message_id.clone()).collect();
    assert_eq!(ids.len() as u64, held, "an event in the stream twice");
    let missing: Vec<&String> = expected.difference(&ids).take(5).collect();
    let extra: Vec<&String> = ids.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} events expected, {held} held; missing, first ones: {missing:?}; not expected, first ones: {extra:?}",
        expected.len()
    );
    held
}
