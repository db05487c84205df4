//! The customer events: CloudEvents 1.0 envelopes in JSON structured mode, one per change,
//! published by the worker's relay on `{prefix}.v1.events.{created|updated|deleted}.{id}`
//! ([`EventType::subject`]) into the stream [`DEFAULT_STREAM`] (docs/API.md §8):
//!
//! * `customer.created`: `data` is the customer exactly as the `201` body returned it;
//! * `customer.updated`: `data` is `{"customer": <the 200 body>, "previous_attributes": {…}}`;
//! * `customer.deleted`: `data` is `{"id", "deleted": true, "deleted_at"}`, no personal data.
//!
//! Everything in the envelope derives from what the worker stored with the change, so a
//! re-publication after a crash is byte-identical and carries the same id, which the
//! stream's duplicate window (`Nats-Msg-Id`) drops and consumers de-duplicate by.

use std::fmt::Write as _;

use bytes::BytesMut;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::customer::Customer;
use crate::domain::id::CustomerId;
use crate::domain::timestamp::Timestamp;

/// Default name of the JetStream stream that captures the events.
pub const DEFAULT_STREAM: &str = "CUSTOMERS_EVENTS";
/// Default CloudEvents `source` (a URI reference naming this service).
pub const DEFAULT_SOURCE: &str = "/customers";
/// Media type of the envelope (CloudEvents JSON structured mode), sent as `Content-Type`.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// What happened to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Created,
    Updated,
    Deleted,
}

impl EventType {
    pub const ALL: [Self; 3] = [Self::Created, Self::Updated, Self::Deleted];

    /// The CloudEvents `type`: `customer.created`, …
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "customer.created",
            Self::Updated => "customer.updated",
            Self::Deleted => "customer.deleted",
        }
    }

    /// The subject token after `events.`: `created`, …
    pub fn token(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    /// `{prefix}.v1.events.{token}.{id}`: where the event of customer `id` is published.
    pub fn subject(self, prefix: &str, id: &str) -> String {
        format!("{prefix}.v1.events.{}.{id}", self.token())
    }

    /// `{prefix}.v1.events.{token}.*`: every event of this type.
    pub fn all_subject(self, prefix: &str) -> String {
        format!("{prefix}.v1.events.{}.*", self.token())
    }

    /// The event id: `customer.created:{id}`, `customer.updated:{id}:{version}`,
    /// `customer.deleted:{id}`; one per change, the same on every re-publication.
    pub fn event_id(self, customer_id: &str, version: u64) -> String {
        let mut id = String::with_capacity(self.name().len() + customer_id.len() + 24);
        id.push_str(self.name());
        id.push(':');
        id.push_str(customer_id);
        if self == Self::Updated {
            let _ = write!(id, ":{version}");
        }
        id
    }
}

/// `{prefix}.v1.events.>`: the subjects the events stream captures.
pub fn all_events_subject(prefix: &str) -> String {
    format!("{prefix}.v1.events.>")
}

/// The envelope every event shares (CloudEvents 1.0, JSON structured mode), around its `data`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, rename = "Event_{D}")]
pub struct Envelope<'a, D: JsonSchema> {
    /// Always `1.0`.
    #[schemars(extend("const" = "1.0"))]
    pub specversion: &'static str,
    /// `customer.created:{id}`, `customer.updated:{id}:{version}` or `customer.deleted:{id}`:
    /// unique per source, the same on every re-publication. Also the message's `Nats-Msg-Id`.
    pub id: String,
    /// The service that made the change (`--events-source`, default `/customers`).
    pub source: &'a str,
    /// `customer.created`, `customer.updated` or `customer.deleted`.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// The customer's id.
    pub subject: &'a str,
    /// When the change was committed: the customer's `created_at`, its new `updated_at`, or
    /// its `deleted_at`.
    pub time: &'a str,
    /// Always `application/json`.
    #[schemars(extend("const" = "application/json"))]
    pub datacontenttype: &'static str,
    #[schemars(with = "D")]
    pub data: &'a RawValue,
    /// The type `data` holds, for the schema.
    #[serde(skip)]
    #[schemars(skip)]
    pub data_type: std::marker::PhantomData<D>,
}

/// The `data` of `customer.updated`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdatedData {
    /// The customer, byte for byte as the update's `200` returned it.
    pub customer: Customer,
    /// Each top-level member the update changed, with its value before (`null` where it was
    /// unset), and `updated_at` with its value before.
    pub previous_attributes: serde_json::Map<String, serde_json::Value>,
}

/// The `data` of `customer.deleted`: what remains of an erased customer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletedData {
    pub id: CustomerId,
    #[schemars(extend("const" = true))]
    pub deleted: bool,
    pub deleted_at: Timestamp,
}

/// `customer.created` as consumers receive it; `data` is the customer.
pub type CustomerCreatedEvent<'a> = Envelope<'a, Customer>;
/// `customer.updated`.
pub type CustomerUpdatedEvent<'a> = Envelope<'a, UpdatedData>;
/// `customer.deleted`.
pub type CustomerDeletedEvent<'a> = Envelope<'a, DeletedData>;

/// The `data` of a `customer.updated` event: the `200` body spliced in unread, and the
/// changed members' values before as JSON.
pub fn updated_data(customer_json: &[u8], previous_attributes: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(customer_json.len() + previous_attributes.len() + 40);
    data.extend_from_slice(br#"{"customer":"#);
    data.extend_from_slice(customer_json);
    data.extend_from_slice(br#","previous_attributes":"#);
    data.extend_from_slice(previous_attributes);
    data.push(b'}');
    data
}

/// The `data` of a `customer.deleted` event.
pub fn deleted_data(id: CustomerId, deleted_at: Timestamp) -> Vec<u8> {
    serde_json::to_vec(&DeletedData {
        id,
        deleted: true,
        deleted_at,
    })
    .expect("a deletion serialises")
}

/// Writes events for one `source`. The relay encodes every event with it, so it writes the
/// envelope by hand into the caller's buffer, formatting the customer id once (serde and
/// `core::fmt` were a third of the relay's CPU): the same bytes `serde_json` writes for
/// [`Envelope`], which the tests check.
#[derive(Debug, Clone)]
pub struct EventEncoder {
    /// `source` as a JSON string, quotes included.
    source: String,
}

impl EventEncoder {
    pub fn new(source: &str) -> Self {
        Self {
            source: serde_json::to_string(source).expect("a string serializes"),
        }
    }

    /// Appends the event of type `event_type` about customer `id` (at `version`, committed
    /// at `time`) whose `data` is `data` to `out`, and returns the event's id. `data` is
    /// spliced in unread: the worker wrote it.
    pub fn encode(
        &self,
        event_type: EventType,
        id: CustomerId,
        version: u64,
        time: Timestamp,
        data: &[u8],
        out: &mut BytesMut,
    ) -> String {
        let subject = id.to_string();
        let event_id = event_type.event_id(&subject, version);
        out.reserve(self.size_of(data));
        for part in [
            r#"{"specversion":"1.0","id":""#,
            &event_id,
            r#"","source":"#,
            &self.source,
            r#","type":""#,
            event_type.name(),
            r#"","subject":""#,
            &subject,
            r#"","time":""#,
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        // Writing to a growable buffer cannot fail. Ids and timestamps are plain ASCII, so
        // they need no escaping.
        let _ = write!(out, "{time}");
        out.extend_from_slice(br#"","datacontenttype":"application/json","data":"#);
        out.extend_from_slice(data);
        out.extend_from_slice(b"}");
        event_id
    }

    /// About the bytes [`EventEncoder::encode`] appends for `data` (at least as many):
    /// reserve it once for a batch.
    pub fn size_of(&self, data: &[u8]) -> usize {
        ENVELOPE_BYTES + self.source.len() + data.len()
    }
}

/// The envelope around the data and the source, ids and time included (about 240 bytes).
const ENVELOPE_BYTES: usize = 288;

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
        EventEncoder::new("/customers").encode(
            EventType::Created,
            id,
            1,
            id.timestamp(),
            stored.as_bytes(),
            &mut event,
        );
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
        let time = Timestamp::from_unix_ms(id.unix_ms() + 1234);
        for (event_type, version) in [
            (EventType::Created, 1),
            (EventType::Updated, 7),
            (EventType::Deleted, 7),
        ] {
            for source in [
                "/customers",
                "urn:svc:\"quoted\"\\back",
                "/kunden/müller",
                "tab\there",
            ] {
                let mut event = BytesMut::new();
                EventEncoder::new(source).encode(event_type, id, version, time, record, &mut event);
                let subject = id.to_string();
                let time = time.to_string();
                let expected = serde_json::to_vec(&Envelope::<Customer> {
                    specversion: "1.0",
                    id: event_type.event_id(&subject, version),
                    source,
                    event_type: event_type.name(),
                    subject: &subject,
                    time: &time,
                    datacontenttype: "application/json",
                    data: &serde_json::from_slice::<Box<RawValue>>(record).unwrap(),
                    data_type: std::marker::PhantomData,
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&event),
                    String::from_utf8_lossy(&expected),
                    "{event_type:?}, source {source:?}"
                );
            }
        }
    }

    #[test]
    fn subjects_and_ids_name_the_customer_and_the_change() {
        let id = "cus_01h3vjs3b16yc3f9q8q9pfrb80";
        let cases = [
            (
                EventType::Created,
                "customers.v1.events.created.",
                "customer.created:",
            ),
            (
                EventType::Updated,
                "customers.v1.events.updated.",
                "customer.updated:",
            ),
            (
                EventType::Deleted,
                "customers.v1.events.deleted.",
                "customer.deleted:",
            ),
        ];
        for (event_type, subject, event_id) in cases {
            assert_eq!(
                event_type.subject("customers", id),
                format!("{subject}{id}")
            );
            let expected = match event_type {
                EventType::Updated => format!("{event_id}{id}:3"),
                _ => format!("{event_id}{id}"),
            };
            assert_eq!(event_type.event_id(id, 3), expected);
        }
        let data = updated_data(br#"{"id":"c"}"#, br#"{"name":"A"}"#);
        let parsed: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(parsed["customer"]["id"], "c");
        assert_eq!(parsed["previous_attributes"]["name"], "A");
    }
}
