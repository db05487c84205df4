//! The transactional outbox between the committer and the relay. Every committed change's
//! event is an entry of the stored outbox (`store::outbox`), written in the same group commit
//! as the change. This module is the shared state in memory:
//!
//! * the pending events (stored, not yet acknowledged by JetStream), by sequence number with
//!   their customer and commit time: the bound (the committer refuses changes while
//!   `max_pending` events wait: 503 rather than an event lost), the oldest one's age, and the
//!   events of a customer that a delete erases before they are published;
//! * a queue of the most recent committed events, pushed by the committer after each group:
//!   the relay takes them from here, and the store holds them only once needed there (the
//!   journal made them durable; sled gets a pending event when this queue drops it, the relay
//!   having fallen far behind, and before a checkpoint or a snapshot). What the queue no
//!   longer holds (the events stored before this process started, or dropped) the relay
//!   reads from the store;
//! * the relayed mark: the relay reports the newest sequence number JetStream acknowledged,
//!   the committer journals it with its next group, so a restart resumes after it. When
//!   nothing else is committed for a while, the relay asks for a group of its own
//!   (`Control::RecordRelayed`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use customers_shared::CustomerId;
use tokio::sync::Notify;

use crate::storage::event_record::EventRecord;
use crate::storage::store::{Store, StoreError};

/// Recent events kept for the relay (about 600 bytes each, so ten MB at most).
const RECENT_EVENTS: usize = 16 * 1024;

/// A committed event waiting for JetStream: its sequence number and the stored record.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub(crate) sequence: u64,
    pub(crate) event: EventRecord,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    max_pending: usize,
    state: Mutex<State>,
    committed: Notify,
}

#[derive(Debug)]
struct State {
    /// Stored and not acknowledged: sequence number → (customer, commit time in ms).
    pending: BTreeMap<u64, (CustomerId, u64)>,
    /// The same by customer, so that a delete finds its customer's at once however many
    /// wait (a JetStream outage).
    by_customer: HashMap<CustomerId, Vec<u64>>,
    recent: VecDeque<PendingEvent>,
    /// Events numbered up to this one are not in `recent`: the relay reads them from the
    /// store.
    stored_only_through: u64,
    /// The newest acknowledged sequence number, and the newest of those journaled.
    relayed: u64,
    journaled: u64,
}

impl State {
    fn add(&mut self, sequence: u64, customer: CustomerId, at_ms: u64) {
        self.pending.insert(sequence, (customer, at_ms));
        self.by_customer.entry(customer).or_default().push(sequence);
    }

    fn remove(&mut self, sequence: u64) {
        if let Some((customer, _)) = self.pending.remove(&sequence) {
            self.forget(customer, sequence);
        }
    }

    /// Drops `sequence` from its customer's list (and the list once empty).
    fn forget(&mut self, customer: CustomerId, sequence: u64) {
        if let Some(sequences) = self.by_customer.get_mut(&customer) {
            sequences.retain(|&s| s != sequence);
            if sequences.is_empty() {
                self.by_customer.remove(&customer);
            }
        }
    }
}

impl Outbox {
    /// An outbox whose pending events are `pending` (stored before this process started,
    /// numbered up to `stored_through`), above the journaled mark `journaled`.
    pub(crate) fn new(
        max_pending: usize,
        pending: impl IntoIterator<Item = (u64, CustomerId, u64)>,
        stored_through: u64,
        journaled: u64,
    ) -> Self {
        let mut state = State {
            pending: BTreeMap::new(),
            by_customer: HashMap::new(),
            recent: VecDeque::new(),
            stored_only_through: stored_through,
            relayed: journaled,
            journaled,
        };
        for (sequence, customer, at_ms) in pending {
            state.add(sequence, customer, at_ms);
        }
        Self {
            max_pending: max_pending.max(1),
            state: Mutex::new(state),
            committed: Notify::new(),
        }
    }

    /// The outbox of `store` as it is now: the events above its relayed mark pending, of at
    /// most `max_pending`.
    pub(crate) fn load(store: &Store, max_pending: usize) -> Result<Self, StoreError> {
        let mark = store.relayed_through()?;
        let pending: Vec<(u64, CustomerId, u64)> = store
            .events_after(mark, usize::MAX)?
            .into_iter()
            .map(|(sequence, event)| (sequence, event.customer, event.at_ms))
            .collect();
        let stored_through = store.last_event_sequence()?;
        Ok(Self::new(max_pending, pending, stored_through, mark))
    }

    /// Events waiting for JetStream's acknowledgement.
    pub(crate) fn pending(&self) -> usize {
        self.state().pending.len()
    }

    /// The commit time of the oldest pending event, in ms since the Unix epoch.
    pub(crate) fn oldest_pending_ms(&self) -> Option<u64> {
        self.state()
            .pending
            .values()
            .next()
            .map(|(_, at_ms)| *at_ms)
    }

    /// Whether `more` events fit beside those pending (the committer, for a group's changes).
    pub(crate) fn has_room_for(&self, more: usize) -> bool {
        self.state().pending.len() + more <= self.max_pending
    }

    /// The pending events of `customer` (the committer, erasing them with a delete).
    pub(crate) fn pending_of(&self, customer: CustomerId) -> Vec<u64> {
        self.state()
            .by_customer
            .get(&customer)
            .cloned()
            .unwrap_or_default()
    }

    /// The committer, after a group is durable and applied: its events, in order, and the
    /// pending ones it erased. The events stay in memory only (the journal holds them): those
    /// the queue of recent ones drops while still pending go to `spill` (the store) first,
    /// under the lock, so the relay never looks for them in the store before they are there.
    pub(crate) fn committed(
        &self,
        events: impl IntoIterator<Item = PendingEvent>,
        erased: &[u64],
        spill: impl FnOnce(&[PendingEvent]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        for sequence in erased {
            state.remove(*sequence);
        }
        let mut dropped = Vec::new();
        let mut dropped_through = state.stored_only_through;
        for event in events {
            state.add(event.sequence, event.event.customer, event.event.at_ms);
            if state.recent.len() == RECENT_EVENTS
                && let Some(oldest) = state.recent.pop_front()
            {
                dropped_through = dropped_through.max(oldest.sequence);
                if state.pending.contains_key(&oldest.sequence) {
                    dropped.push(oldest);
                }
            }
            state.recent.push_back(event);
        }
        if !dropped.is_empty() {
            spill(&dropped)?;
        }
        state.stored_only_through = dropped_through;
        drop(state);
        self.committed.notify_one();
        Ok(())
    }

    /// The pending events only memory holds (the committer writes them into the store before
    /// a checkpoint or a snapshot needs them there).
    pub(crate) fn pending_in_memory(&self) -> Vec<PendingEvent> {
        let state = self.state();
        state
            .recent
            .iter()
            .filter(|e| state.pending.contains_key(&e.sequence))
            .cloned()
            .collect()
    }

    /// Waits for the next [`Outbox::committed`] (or returns at once for one not yet waited for).
    pub(crate) async fn next_commit(&self) {
        self.committed.notified().await;
    }

    /// The relay: up to `limit` pending events numbered after `after`, oldest first, from the
    /// queue of recent ones; `None` when the next ones are only in the store.
    pub(crate) fn take_after(&self, after: u64, limit: usize) -> Option<Vec<PendingEvent>> {
        let mut state = self.state();
        if after < state.stored_only_through {
            return None;
        }
        while state.recent.front().is_some_and(|e| e.sequence <= after) {
            state.recent.pop_front();
        }
        let State {
            recent, pending, ..
        } = &*state;
        Some(
            recent
                .iter()
                .filter(|e| pending.contains_key(&e.sequence))
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// The relay: events numbered up to this one are read from the store (the queue of
    /// recent ones does not hold them), and it knows of every one of them.
    pub(crate) fn stored_only_through(&self) -> u64 {
        self.state().stored_only_through
    }

    /// The relay: keeps of `batch` only the events still to be published (a delete may have
    /// erased some since they were taken), under one lock.
    pub(crate) fn retain_pending(&self, batch: &mut Vec<PendingEvent>) {
        let state = self.state();
        batch.retain(|e| state.pending.contains_key(&e.sequence));
    }

    /// The relay: every event numbered up to `through` was published (or erased).
    pub(crate) fn relayed(&self, through: u64) {
        let mut state = self.state();
        let newer = state.pending.split_off(&(through + 1));
        let relayed = std::mem::replace(&mut state.pending, newer);
        for (sequence, (customer, _)) in relayed {
            state.forget(customer, sequence);
        }
        state.relayed = state.relayed.max(through);
    }

    /// The committer: the mark to journal with this group, if it moved since the last one.
    pub(crate) fn mark_to_journal(&self) -> Option<u64> {
        let state = self.state();
        (state.relayed != state.journaled).then_some(state.relayed)
    }

    /// The committer: `through` is durable in the journal.
    pub(crate) fn journaled(&self, through: u64) {
        let mut state = self.state();
        state.journaled = state.journaled.max(through);
    }

    /// The newest acknowledged sequence number (journaled or not).
    pub(crate) fn relayed_through(&self) -> u64 {
        self.state().relayed
    }

    /// Whether acknowledged events are not yet covered by a journaled mark.
    pub(crate) fn mark_lags(&self) -> bool {
        self.mark_to_journal().is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Maps and a queue, consistent after every statement: a panicking holder cannot
        // leave them broken.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use customers_shared::wire::event::EventType;

    use super::*;

    fn no_spill(dropped: &[PendingEvent]) -> Result<(), StoreError> {
        panic!("{} events spilled", dropped.len())
    }

    fn event(sequence: u64, customer: CustomerId) -> PendingEvent {
        PendingEvent {
            sequence,
            event: EventRecord {
                event_type: EventType::Created,
                customer,
                version: 1,
                at_ms: sequence,
                data: Bytes::from_static(b"{}"),
            },
        }
    }

    #[test]
    fn the_bound_holds_and_relayed_events_make_room() {
        let ids = crate::storage::store::ascending_ids(3);
        let outbox = Outbox::new(2, [(1, ids[0], 10)], 1, 0);
        assert!(outbox.has_room_for(1));
        assert!(!outbox.has_room_for(2), "full at two");
        outbox.committed([event(2, ids[1])], &[], no_spill).unwrap();
        assert_eq!(
            (outbox.pending(), outbox.oldest_pending_ms()),
            (2, Some(10))
        );
        outbox.relayed(1);
        assert_eq!(outbox.pending(), 1);
        assert_eq!(outbox.mark_to_journal(), Some(1));
        outbox.relayed(2);
        outbox.journaled(1);
        assert_eq!(outbox.mark_to_journal(), Some(2), "2 is not journaled yet");
        outbox.journaled(2);
        assert!(!outbox.mark_lags());
    }

    #[test]
    fn the_relay_reads_older_events_from_the_store_and_skips_erased_ones() {
        let ids = crate::storage::store::ascending_ids(3);
        // Two events were stored before this process started: 1 and 2.
        let outbox = Outbox::new(100_000, [(1, ids[0], 1), (2, ids[1], 2)], 2, 0);
        outbox
            .committed((3..6).map(|n| event(n, ids[2])), &[], no_spill)
            .unwrap();
        assert!(
            outbox.take_after(0, 10).is_none(),
            "1 and 2 are in the store only"
        );
        let taken: Vec<u64> = outbox
            .take_after(2, 10)
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(taken, [3, 4, 5]);
        assert_eq!(outbox.pending_of(ids[2]), [3, 4, 5]);
        // A delete erases 4 and 5, and adds its own event.
        outbox
            .committed([event(6, ids[2])], &[4, 5], no_spill)
            .unwrap();
        let mut taken = outbox.take_after(3, 10).unwrap();
        taken.push(event(4, ids[2]));
        outbox.retain_pending(&mut taken);
        assert!(taken.iter().all(|e| e.sequence != 4), "4 was erased");
        let taken: Vec<u64> = outbox
            .take_after(3, 10)
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(taken, [6], "erased events are not published");

        // More committed than the queue holds: the oldest are read from the store.
        let many = (7..7 + RECENT_EVENTS as u64 + 5).map(|n| event(n, ids[0]));
        let mut spilled = Vec::new();
        let spill = |dropped: &[PendingEvent]| {
            spilled.extend(dropped.iter().map(|e| e.sequence));
            Ok(())
        };
        outbox.committed(many, &[], spill).unwrap();
        assert_eq!(
            spilled,
            [6, 7, 8, 9, 10, 11],
            "the pending ones the queue dropped (4 and 5 were erased)"
        );
        assert!(outbox.take_after(6, 1).is_none());
        assert!(outbox.take_after(11, 1).is_some());
    }
}
