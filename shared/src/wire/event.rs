//! The `customer.created` event: a CloudEvents 1.0 envelope in JSON structured mode around
//! the customer exactly as the `201` body returned it. The worker's relay publishes one per
//! stored customer on [`created_subject`], into the stream [`DEFAULT_STREAM`] (docs/API.md
//! §8). Everything in the envelope derives from the stored customer, so a re-publication
//! after a crash is byte-identical and carries the same id, which the stream's duplicate
//! window (`Nats-Msg-Id`) drops.

use std::fmt::Write as _;

use bytes::BytesMut;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::customer::Customer;
use crate::domain::id::CustomerId;

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
    let mut id = String::with_capacity(CREATED_TYPE.len() + 1 + customer_id.len());
    id.push_str(CREATED_TYPE);
    id.push(':');
    id.push_str(customer_id);
    id
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

/// Writes `customer.created` events for one `source`. The relay encodes every stored
/// customer's event with it, so it writes the envelope by hand into the caller's buffer,
/// formatting the customer id once (serde and `core::fmt` were a third of the relay's CPU):
/// the same bytes `serde_json` writes for [`CustomerCreatedEvent`], which the tests check.
#[derive(Debug, Clone)]
pub struct CreatedEventEncoder {
    /// `source` as a JSON string, quotes included.
    source: String,
}

impl CreatedEventEncoder {
    pub fn new(source: &str) -> Self {
        Self {
            source: serde_json::to_string(source).expect("a string serializes"),
        }
    }

    /// Appends the event for the stored customer `id` whose record (the `201` body) is
    /// `record` to `out`, and returns the event's id. The record is spliced in unread: the
    /// worker stored it, and `time` is the customer's `created_at`, which is the instant in
    /// its id.
    pub fn encode(&self, id: CustomerId, record: &[u8], out: &mut BytesMut) -> String {
        let subject = id.to_string();
        let event_id = created_event_id(&subject);
        out.reserve(self.size_of(record));
        for part in [
            r#"{"specversion":"1.0","id":""#,
            &event_id,
            r#"","source":"#,
            &self.source,
            r#","type":""#,
            CREATED_TYPE,
            r#"","subject":""#,
            &subject,
            r#"","time":""#,
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        // Writing to a growable buffer cannot fail. Ids and timestamps are plain ASCII, so
        // they need no escaping.
        let _ = write!(out, "{}", id.timestamp());
        out.extend_from_slice(br#"","datacontenttype":"application/json","data":"#);
        out.extend_from_slice(record);
        out.extend_from_slice(b"}");
        event_id
    }

    /// About the bytes [`CreatedEventEncoder::encode`] appends for `record` (at least as
    /// many): reserve it once for a batch.
    pub fn size_of(&self, record: &[u8]) -> usize {
        ENVELOPE_BYTES + self.source.len() + record.len()
    }
}

/// The envelope around the record and the source, ids and time included (about 220 bytes).
const ENVELOPE_BYTES: usize = 256;

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
        let mut event = BytesMut::new();
        CreatedEventEncoder::new("/customers").encode(id, stored.as_bytes(), &mut event);
        let text = String::from_utf8(event.to_vec()).unwrap();
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

    #[test]
    fn the_hand_written_envelope_is_what_serde_writes_for_the_schema_type() {
        let id: CustomerId = "cus_01h3vjs3b16yc3f9q8q9pfrb80".parse().unwrap();
        let record = br#"{"id":"x","custom_data":{"k":"\u00e9\""}}"#;
        for source in [
            "/customers",
            "urn:svc:\"quoted\"\\back",
            "/kunden/müller",
            "tab\there",
        ] {
            let mut event = BytesMut::new();
            CreatedEventEncoder::new(source).encode(id, record, &mut event);
            let subject = id.to_string();
            let time = id.timestamp().to_string();
            let expected = serde_json::to_vec(&CustomerCreatedEvent {
                specversion: "1.0",
                id: created_event_id(&subject),
                source,
                event_type: CREATED_TYPE,
                subject: &subject,
                time: &time,
                datacontenttype: "application/json",
                data: &serde_json::from_slice::<Box<RawValue>>(record).unwrap(),
            })
            .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&event),
                String::from_utf8_lossy(&expected),
                "source {source:?}"
            );
        }
    }
}
