//! The event outbox as stored. Each committed change's event is an entry of the `outbox`
//! tree under its sequence number (`event_record`), written in the same journal record as the
//! change, so the two are durable together. A primary that publishes keeps the entries in
//! memory and writes them into the tree only when something needs them on disk
//! ([`Store::spill_events`]: a checkpoint removing the journal segments that hold them, a
//! snapshot, a stop, or the relay's queue dropping them); recovery and a standby apply them
//! from the journal or the log as any other put. The *relayed mark* in the `relayed` tree is
//! the newest sequence number JetStream acknowledged; it is journaled with a later group, and
//! the entries at or below it are then removed ([`Store::trim_events_through`], not
//! journaled: an entry a crash brings back lies below the mark and is removed again).
//!
//! Before sequence numbers, a new customer's record was its own pending event and the mark
//! was the newest relayed customer id; [`Store::open`] converts such a data directory once
//! ([`Store::convert_outbox`]).

use std::ops::Bound;

use customers_shared::CustomerId;

use crate::storage::customer_record::CustomerRecord;
use crate::storage::event_record::EventRecord;
use crate::storage::journal::{Batch, TreeId};
use crate::storage::schema::RELAYED_KEY;
use crate::storage::store::reads::id_from_bytes;
use crate::storage::store::{Store, StoreError};

/// The stored value of the relayed mark `through`.
pub(crate) fn relayed_value(through: u64) -> [u8; 8] {
    through.to_be_bytes()
}

/// The relayed mark in a stored value: a sequence number (`None` for the format before them,
/// a 16-byte id).
pub(crate) fn relayed_sequence(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

impl Store {
    /// The newest sequence number whose event JetStream acknowledged, as last journaled (0:
    /// none yet).
    pub(crate) fn relayed_through(&self) -> Result<u64, StoreError> {
        let Some(value) = self.relayed.get(RELAYED_KEY)? else {
            return Ok(0);
        };
        relayed_sequence(&value).ok_or_else(|| StoreError::Corrupt {
            what: "the relayed mark".into(),
            reason: format!("{} bytes, not a sequence number", value.len()),
        })
    }

    /// Up to `limit` stored events numbered after `after`, oldest first.
    pub(crate) fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, EventRecord)>, StoreError> {
        let start = Bound::Excluded(after.to_be_bytes());
        self.outbox
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                let sequence = sequence_of(&key)?;
                let event = EventRecord::decode(&value).map_err(|reason| StoreError::Corrupt {
                    what: format!("event {sequence}"),
                    reason: reason.to_owned(),
                })?;
                Ok((sequence, event))
            })
            .collect()
    }

    /// The greatest sequence number ever given to an event here: the newest stored one, or
    /// the mark when every event up to it was relayed and removed.
    pub(crate) fn last_event_sequence(&self) -> Result<u64, StoreError> {
        let newest = match self.outbox.last()? {
            Some((key, _)) => sequence_of(&key)?,
            None => 0,
        };
        Ok(newest.max(self.relayed_through()?))
    }

    /// Writes pending events into the tree outside the journal (which holds them already):
    /// the committer keeps a group's events in memory only, and writes those still pending
    /// here before anything needs them on disk (a checkpoint, a snapshot, the relay reading
    /// events its queue no longer holds).
    pub(crate) fn spill_events<'a>(
        &self,
        events: impl IntoIterator<Item = (u64, &'a EventRecord)>,
    ) -> Result<(), StoreError> {
        for (sequence, event) in events {
            self.outbox.insert(sequence.to_be_bytes(), event.encode())?;
        }
        Ok(())
    }

    /// Removes the events numbered up to `through` (relayed); how many.
    pub(crate) fn trim_events_through(&self, through: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.outbox.range(..=through.to_be_bytes()) {
            let (key, _) = entry?;
            self.outbox.remove(key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Converts an outbox of the format before sequence numbers, whose mark is the newest
    /// relayed customer id: every customer created after it becomes a pending
    /// `customer.created` event, numbered from 1 in id (commit) order, and the mark becomes 0.
    /// Written and made durable before the mark changes, so a crash part way converts again,
    /// to the same numbers.
    pub(crate) fn convert_outbox(&self) -> Result<(), StoreError> {
        let Some(value) = self.relayed.get(RELAYED_KEY)? else {
            return Ok(());
        };
        if relayed_sequence(&value).is_some() {
            return Ok(());
        }
        let after: CustomerId = id_from_bytes(&value);
        let mut batch = Batch::default();
        let mut sequence = 0u64;
        let start = Bound::Excluded(after.to_bytes());
        for entry in self.records.range((start, Bound::Unbounded)) {
            let (key, stored) = entry?;
            let id = id_from_bytes(&key);
            let Some(json) = CustomerRecord::json_of(&stored) else {
                continue;
            };
            sequence += 1;
            let event = EventRecord {
                event_type: customers_shared::wire::event::EventType::Created,
                customer: id,
                version: 1,
                at_ms: id.unix_ms(),
                data: bytes::Bytes::copy_from_slice(&json),
            };
            batch.put(TreeId::Outbox, &sequence.to_be_bytes(), &event.encode());
        }
        self.apply(batch.puts())?;
        self.checkpoint()?;
        self.relayed.insert(RELAYED_KEY, &relayed_value(0))?;
        self.checkpoint()?;
        tracing::info!(
            pending = sequence,
            "converted the event outbox to sequence numbers"
        );
        Ok(())
    }
}

fn sequence_of(key: &[u8]) -> Result<u64, StoreError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            what: "an outbox key".into(),
            reason: format!("{} bytes, not a sequence number", key.len()),
        })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use customers_shared::wire::event::EventType;

    use super::*;

    fn created(id: CustomerId) -> EventRecord {
        EventRecord {
            event_type: EventType::Created,
            customer: id,
            version: 1,
            at_ms: id.unix_ms(),
            data: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn pending_events_are_those_above_the_mark_and_relayed_ones_are_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let ids = crate::storage::store::ascending_ids(5);
        let mut batch = Batch::default();
        for (n, id) in (1u64..).zip(&ids) {
            batch.put(TreeId::Outbox, &n.to_be_bytes(), &created(*id).encode());
        }
        batch.put(TreeId::Relayed, RELAYED_KEY, &relayed_value(2));
        store.apply(batch.puts()).unwrap();
        assert_eq!(store.relayed_through().unwrap(), 2);
        let pending: Vec<u64> = store
            .events_after(2, 10)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(pending, [3, 4, 5]);
        assert_eq!(store.trim_events_through(2).unwrap(), 2);
        assert_eq!(store.events_after(0, 10).unwrap().len(), 3);
        assert_eq!(store.trim_events_through(5).unwrap(), 3);
        assert_eq!(
            store.last_event_sequence().unwrap(),
            2,
            "the mark, once everything is trimmed"
        );
    }

    #[test]
    fn an_outbox_of_the_format_before_sequence_numbers_is_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let ids = crate::storage::store::ascending_ids(4);
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap().store;
            let mut batch = Batch::default();
            for (n, id) in ids.iter().enumerate() {
                let json = format!(r#"{{"id":"{id}"}}"#);
                batch.put(TreeId::Customers, &id.to_bytes(), json.as_bytes());
                if n != 2 {
                    batch.put(
                        TreeId::Emails,
                        format!("{n}@x.com").as_bytes(),
                        &id.to_bytes(),
                    );
                }
            }
            // The third was deleted since: it has no event to publish.
            let tombstone = CustomerRecord::tombstone(1);
            batch.put(TreeId::Customers, &ids[2].to_bytes(), &tombstone);
            batch.put(TreeId::Relayed, RELAYED_KEY, &ids[0].to_bytes());
            store.apply(batch.puts()).unwrap();
            store.checkpoint().unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        assert_eq!(store.relayed_through().unwrap(), 0);
        let pending: Vec<(u64, CustomerId)> = store
            .events_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|(n, event)| (n, event.customer))
            .collect();
        assert_eq!(pending, [(1, ids[1]), (2, ids[3])]);
        store.convert_outbox().unwrap();
        assert_eq!(store.events_after(0, 10).unwrap().len(), 2, "only once");
    }
}
