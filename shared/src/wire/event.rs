//! The `customer.created` event: a CloudEvents 1.0 envelope in JSON structured mode around
//! the customer exactly as the `201` body returned it. The worker's relay publishes one per
//! stored customer on [`created_subject`], into the stream [`DEFAULT_STREAM`] (docs/API.md
//! §8). Everything in the envelope derives from the stored customer, so a re-publication
//! after a crash is byte-identical and carries the same id, which the stream's duplicate
//! window (`Nats-Msg-Id`) drops.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::customer::Customer;
use crate::domain::id::CustomerId;
use crate::domain::timestamp::Timestamp;

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

/// The event for the stored customer `id` whose record (the `201` body) is `record`, as
/// published. The record is spliced in unread: the worker stored it, and `time` is the
/// customer's `created_at`, which is the instant in its id.
pub fn customer_created(source: &str, id: CustomerId, record: &[u8]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        specversion: &'static str,
        id: String,
        source: &'a str,
        #[serde(rename = "type")]
        event_type: &'static str,
        subject: &'a str,
        time: Timestamp,
        datacontenttype: &'static str,
    }
    let subject = id.to_string();
    let envelope = Envelope {
        specversion: "1.0",
        id: created_event_id(&subject),
        source,
        event_type: CREATED_TYPE,
        subject: &subject,
        time: id.timestamp(),
        datacontenttype: "application/json",
    };
    let mut event = serde_json::to_vec(&envelope).expect("strings and a timestamp serialize");
    event.pop(); // the closing brace: `data` follows
    event.extend_from_slice(br#","data":"#);
    event.extend_from_slice(record);
    event.push(b'}');
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_wraps_the_stored_bytes_unchanged() {
        let id: CustomerId = "cus_01h3vjs3b16yc3f9q8q9pfrb80".parse().unwrap();
        let stored = format!(
            r#"{{"id":"{id}","name":"A","created_at":"{}","custom_data":{{"b":1,"a":[1.50]}}}}"#,
            id.timestamp()
        );
        let event = customer_created("/customers", id, stored.as_bytes());
        let text = String::from_utf8(event).unwrap();
        assert!(text.ends_with(&format!(r#""data":{stored}}}"#)), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let customer: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(parsed["specversion"], "1.0");
        assert_eq!(parsed["type"], "customer.created");
        assert_eq!(parsed["id"], format!("customer.created:{id}"));
        assert_eq!(parsed["subject"], id.to_string());
        assert_eq!(parsed["time"], customer["created_at"]);
        assert_eq!(parsed["datacontenttype"], "application/json");
        assert_eq!(parsed["data"], customer);
    }
}
