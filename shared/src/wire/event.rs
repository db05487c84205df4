//! The `customer.created` event: a CloudEvents 1.0 envelope in JSON structured mode around
//! the customer exactly as the `201` body returned it. The worker's relay publishes one per
//! stored customer on [`created_subject`], into the stream [`DEFAULT_STREAM`] (docs/API.md
//! §8). Everything in the envelope derives from the stored customer, so a re-publication
//! after a crash is byte-identical and carries the same id, which the stream's duplicate
//! window (`Nats-Msg-Id`) drops.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::customer::Customer;

/// The CloudEvents `type` of the event.
pub const CREATED_TYPE: &str = "customer.created";
/// Default name of the JetStream stream that captures the events.
pub const DEFAULT_STREAM: &str = "CUSTOMERS_EVENTS";
/// Default CloudEvents `source` (a URI reference naming this service).
pub const DEFAULT_SOURCE: &str = "/customers";
/// Media type of the envelope (CloudEvents JSON structured mode), sent as `Content-Type`.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// `{prefix}.v1.events.created`: where `customer.created` events are published.
pub fn created_subject(prefix: &str) -> String {
    format!("{prefix}.v1.events.created")
}

/// `{prefix}.v1.events.>`: the subjects the events stream captures.
pub fn all_events_subject(prefix: &str) -> String {
    format!("{prefix}.v1.events.>")
}

/// The event id for the customer `customer_id`: stable, so every publication of the same
/// customer's event is recognised as one.
pub fn created_event_id(customer_id: &str) -> String {
    format!("{CREATED_TYPE}:{customer_id}")
}

/// A `customer.created` event (CloudEvents 1.0, JSON structured mode), as consumers receive
/// it on `customers.v1.events.created`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CustomerCreatedEvent<'a> {
    /// Always `1.0`.
    #[schemars(extend("const" = "1.0"))]
    pub specversion: &'static str,
    /// `customer.created:{customer id}`: unique per source, the same on every
    /// re-publication. Also the message's `Nats-Msg-Id`.
    pub id: String,
    /// The service that created the customer (`--events-source`, default `/customers`).
    pub source: &'a str,
    /// Always `customer.created`.
    #[serde(rename = "type")]
    #[schemars(extend("const" = "customer.created"))]
    pub event_type: &'static str,
    /// The customer's id.
    pub subject: &'a str,
    /// When the customer was created: its `created_at`.
    pub time: &'a str,
    /// Always `application/json`.
    #[schemars(extend("const" = "application/json"))]
    pub datacontenttype: &'static str,
    /// The customer, byte for byte as the `201` reply returned it.
    #[schemars(with = "Customer")]
    pub data: &'a RawValue,
}

/// Why a stored customer could not be wrapped in an event (a corrupt record: a bug).
#[derive(Debug, thiserror::Error)]
#[error("the stored customer is not a customer record: {0}")]
pub struct EventError(#[from] serde_json::Error);

/// The event for a stored customer record (the `201` body), as published.
pub fn customer_created(source: &str, customer_json: &[u8]) -> Result<Vec<u8>, EventError> {
    #[derive(Deserialize)]
    struct Head<'a> {
        id: &'a str,
        created_at: &'a str,
    }
    let head: Head<'_> = serde_json::from_slice(customer_json)?;
    let data: &RawValue = serde_json::from_slice(customer_json)?;
    let event = CustomerCreatedEvent {
        specversion: "1.0",
        id: created_event_id(head.id),
        source,
        event_type: CREATED_TYPE,
        subject: head.id,
        time: head.created_at,
        datacontenttype: "application/json",
        data,
    };
    Ok(serde_json::to_vec(&event)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_wraps_the_stored_bytes_unchanged() {
        let stored = br#"{"id":"cus_01h3vjs3b16yc3f9q8q9pfrb80","name":"A","created_at":"2026-01-02T03:04:05.678Z","custom_data":{"b":1,"a":[1.50]}}"#;
        let event = customer_created("/customers", stored).unwrap();
        let text = String::from_utf8(event).unwrap();
        assert!(
            text.ends_with(&format!(
                r#""data":{}}}"#,
                std::str::from_utf8(stored).unwrap()
            )),
            "{text}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["specversion"], "1.0");
        assert_eq!(parsed["type"], "customer.created");
        assert_eq!(
            parsed["id"],
            "customer.created:cus_01h3vjs3b16yc3f9q8q9pfrb80"
        );
        assert_eq!(parsed["subject"], "cus_01h3vjs3b16yc3f9q8q9pfrb80");
        assert_eq!(parsed["time"], "2026-01-02T03:04:05.678Z");
        assert_eq!(parsed["datacontenttype"], "application/json");
        assert_eq!(
            customer_created("/customers", stored).unwrap(),
            text.as_bytes(),
            "the same bytes every time"
        );
        assert!(customer_created("/customers", b"not json").is_err());
    }
}
