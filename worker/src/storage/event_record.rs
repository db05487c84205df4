//! A pending event as the `outbox` tree holds it, keyed by its sequence number (u64 BE, in
//! commit order): `type: u8` (1 created, 2 updated, 3 deleted) | the customer's 16-byte id |
//! `version: u64 BE` | `at_ms: u64 BE` (the commit time the event's `time` shows) | the
//! event's `data`, exactly as it will be published. Everything the envelope needs is here,
//! so a re-publication after a crash is byte-identical.

use bytes::Bytes;
use customers_shared::CustomerId;
use customers_shared::wire::event::EventType;

use crate::storage::store::reads::id_from_bytes;

const HEADER: usize = 1 + 16 + 8 + 8;

/// A committed change's event, waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRecord {
    pub(crate) event_type: EventType,
    pub(crate) customer: CustomerId,
    pub(crate) version: u64,
    pub(crate) at_ms: u64,
    pub(crate) data: Bytes,
}

impl EventRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(HEADER + self.data.len());
        value.push(match self.event_type {
            EventType::Created => 1,
            EventType::Updated => 2,
            EventType::Deleted => 3,
        });
        value.extend_from_slice(&self.customer.to_bytes());
        value.extend_from_slice(&self.version.to_be_bytes());
        value.extend_from_slice(&self.at_ms.to_be_bytes());
        value.extend_from_slice(&self.data);
        value
    }

    /// Reads a stored value; `Err` names what is wrong with it.
    pub(crate) fn decode(stored: &[u8]) -> Result<Self, &'static str> {
        if stored.len() < HEADER {
            return Err("shorter than an event's header");
        }
        let event_type = match stored[0] {
            1 => EventType::Created,
            2 => EventType::Updated,
            3 => EventType::Deleted,
            _ => return Err("an unknown event type"),
        };
        let number = |at: usize| u64::from_be_bytes(stored[at..at + 8].try_into().expect("8"));
        Ok(Self {
            event_type,
            customer: id_from_bytes(&stored[1..17]),
            version: number(17),
            at_ms: number(25),
            data: Bytes::copy_from_slice(&stored[HEADER..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_back_as_written_and_garbage_is_refused() {
        let customer = crate::storage::store::ascending_ids(1)[0];
        for event_type in EventType::ALL {
            let event = EventRecord {
                event_type,
                customer,
                version: 3,
                at_ms: 1_700_000_000_456,
                data: Bytes::from_static(br#"{"id":"x"}"#),
            };
            assert_eq!(EventRecord::decode(&event.encode()), Ok(event));
        }
        assert!(EventRecord::decode(&[1; 10]).is_err(), "too short");
        assert!(EventRecord::decode(&[9; 40]).is_err(), "an unknown type");
    }
}
