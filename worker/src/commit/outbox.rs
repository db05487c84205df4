//! The transactional outbox between the committer and the relay. A customer's pending event
//! is its stored record above the relayed mark (`store::outbox`), so it becomes durable in
//! the same group commit as the customer, at no extra cost. This module is the shared state:
//!
//! * the bound: the committer refuses creates while `max_pending` events wait (503 rather
//!   than an event lost), and counts each new one;
//! * a queue of the most recent committed events (id and record), pushed by the committer
//!   after each group so that the relay need not read them back from sled; when the relay
//!   falls behind by more than the queue holds, the oldest are dropped and the relay reads
//!   those from the store instead (events are numbered, so it knows how many);
//! * the relayed mark: the relay reports what JetStream acknowledged, the committer journals
//!   it with its next group, so a restart resumes after it. When nothing else is committed
//!   for a while, the relay asks for a group of its own (`Write::RecordRelayed`).

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use customers_shared::CustomerId;
use tokio::sync::Notify;

use crate::storage::store::{Store, StoreError};

/// Recent events kept for the relay (about 300 bytes each, so a few MB at most).
const RECENT_EVENTS: usize = 16 * 1024;

/// A committed customer whose event is pending: its number in this process's sequence of
/// events, its id and its stored record.
#[derive(Debug, Clone)]
pub(crate) struct PendingEvent {
    pub(crate) number: u64,
    pub(crate) id: CustomerId,
    pub(crate) record: Bytes,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    max_pending: usize,
    state: Mutex<State>,
    committed: Notify,
}

#[derive(Debug)]
struct State {
    /// Events stored and not acknowledged (reserved ones included).
    pending: usize,
    /// The number the next committed event gets.
    next_number: u64,
    recent: VecDeque<PendingEvent>,
    /// The newest acknowledged id, and the newest of those journaled.
    relayed: Option<CustomerId>,
    journaled: Option<CustomerId>,
}

impl Outbox {
    /// An outbox with `pending` events already stored (above the mark `journaled`, found at
    /// start; numbered 0 to `pending - 1`), of at most `max_pending`.
    pub(crate) fn new(max_pending: usize, pending: usize, journaled: Option<CustomerId>) -> Self {
        Self {
            max_pending: max_pending.max(1),
            state: Mutex::new(State {
                pending,
                next_number: pending as u64,
                recent: VecDeque::new(),
                relayed: journaled,
                journaled,
            }),
            committed: Notify::new(),
        }
    }

    /// The outbox of `store` as it is now: the events above its relayed mark pending, of at
    /// most `max_pending`.
    pub(crate) fn load(store: &Store, max_pending: usize) -> Result<Self, StoreError> {
        Ok(match store.relayed_through()? {
            Some(mark) => Self::new(max_pending, store.count_after(Some(mark))?, Some(mark)),
            // Customers stored before events were ever on get none: events start here (the
            // first group journals the mark).
            None => Self::starting_after(max_pending, store.newest_id()?),
        })
    }

    /// An outbox for a store whose events were never on: nothing is pending, and the mark
    /// starts at `newest`, the newest stored customer (journaled with the first group).
    pub(crate) fn starting_after(max_pending: usize, newest: Option<CustomerId>) -> Self {
        let outbox = Self::new(max_pending, 0, None);
        outbox.state().relayed = newest;
        outbox
    }

    /// Events waiting for JetStream's acknowledgement.
    pub(crate) fn pending(&self) -> usize {
        self.state().pending
    }

    /// Takes room for one more event (the committer, for a new customer); `false` when full.
    pub(crate) fn reserve(&self) -> bool {
        let mut state = self.state();
        if state.pending >= self.max_pending {
            return false;
        }
        state.pending += 1;
        true
    }

    /// The committer, after a group is durable and applied: its new customers, in order.
    pub(crate) fn committed(&self, events: impl IntoIterator<Item = (CustomerId, Bytes)>) {
        let mut state = self.state();
        for (id, record) in events {
            let number = state.next_number;
            state.next_number += 1;
            if state.recent.len() == RECENT_EVENTS {
                state.recent.pop_front();
            }
            state.recent.push_back(PendingEvent { number, id, record });
        }
        drop(state);
        self.committed.notify_one();
    }

    /// Waits for the next [`Outbox::committed`] (or returns at once for one not yet waited for).
    pub(crate) async fn next_commit(&self) {
        self.committed.notified().await;
    }

    /// The relay: up to `limit` events from number `from` on, as far as the queue still
    /// holds them; and how many committed events before the first of them it no longer holds
    /// (those are read from the store).
    pub(crate) fn take_from(&self, from: u64, limit: usize) -> (Vec<PendingEvent>, u64) {
        let mut state = self.state();
        while state.recent.front().is_some_and(|e| e.number < from) {
            state.recent.pop_front();
        }
        let first = state.recent.front().map_or(state.next_number, |e| e.number);
        let events = state.recent.iter().take(limit).cloned().collect();
        (events, first - from)
    }

    /// The relay: JetStream acknowledged `count` more events, through `through`.
    pub(crate) fn relayed(&self, through: CustomerId, count: usize) {
        let mut state = self.state();
        state.pending -= count.min(state.pending);
        state.relayed = Some(through);
    }

    /// The committer: the mark to journal with this group, if it moved since the last one.
    pub(crate) fn mark_to_journal(&self) -> Option<CustomerId> {
        let state = self.state();
        (state.relayed != state.journaled)
            .then_some(state.relayed)
            .flatten()
    }

    /// The committer: `through` is durable in the journal.
    pub(crate) fn journaled(&self, through: CustomerId) {
        let mut state = self.state();
        state.journaled = state.journaled.max(Some(through));
    }

    /// The newest acknowledged id (journaled or not).
    pub(crate) fn relayed_through(&self) -> Option<CustomerId> {
        self.state().relayed
    }

    /// Whether acknowledged events are not yet covered by a journaled mark.
    pub(crate) fn mark_lags(&self) -> bool {
        self.mark_to_journal().is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters and a queue, consistent after every statement: a panicking holder cannot
        // leave them broken.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_and_relayed_events_make_room() {
        let outbox = Outbox::new(2, 1, None);
        assert!(outbox.reserve());
        assert!(!outbox.reserve(), "full at two");
        let mut ids = crate::commit::ids::IdGenerator::after(None);
        let (a, b) = (ids.next_id(), ids.next_id());
        outbox.relayed(a, 1);
        assert_eq!(outbox.pending(), 1);
        assert!(outbox.reserve());
        assert_eq!(outbox.mark_to_journal(), Some(a));
        outbox.relayed(b, 1);
        outbox.journaled(a);
        assert_eq!(outbox.mark_to_journal(), Some(b), "b is not journaled yet");
        outbox.journaled(b);
        assert!(!outbox.mark_lags());
    }

    #[test]
    fn the_relay_learns_which_events_it_must_read_from_the_store() {
        // Two events were stored before this process started: numbers 0 and 1.
        let outbox = Outbox::new(100_000, 2, None);
        let mut ids = crate::commit::ids::IdGenerator::after(None);
        let new: Vec<CustomerId> = (0..3).map(|_| ids.next_id()).collect();
        outbox.committed(new.iter().map(|id| (*id, Bytes::from_static(b"{}"))));
        let (events, from_store) = outbox.take_from(0, 10);
        assert_eq!(from_store, 2, "the two from before the start");
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), new);
        assert_eq!(events[0].number, 2);
        let (events, from_store) = outbox.take_from(4, 10);
        assert_eq!((events.len(), from_store), (1, 0));
        let (events, from_store) = outbox.take_from(5, 10);
        assert_eq!((events.len(), from_store), (0, 0), "nothing new");

        // More committed than the queue holds: the oldest are read from the store.
        let many: Vec<(CustomerId, Bytes)> = (0..RECENT_EVENTS + 5)
            .map(|_| (ids.next_id(), Bytes::new()))
            .collect();
        outbox.committed(many);
        let (events, from_store) = outbox.take_from(5, 1);
        assert_eq!((events[0].number, from_store), (10, 5));
    }
}
