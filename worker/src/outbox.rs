//! The transactional outbox between the committer and the relay. The committer adds a
//! pending event with every new customer, in the same group commit (the id goes into the
//! `outbox` tree, see `store::outbox`), refuses creates while the outbox is full (503 rather
//! than an event lost), and wakes the relay after each group. The relay reports what
//! JetStream acknowledged; the committer journals that mark with its next group, so that after
//! a crash the ids it covers are not published again. When nothing else is committed for a
//! while, the relay asks for a group of its own (`Write::RecordRelayed`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use customers_shared::CustomerId;
use tokio::sync::Notify;

pub struct Outbox {
    max_pending: usize,
    pending: AtomicUsize,
    relayed: Mutex<RelayedMark>,
    committed: Notify,
}

/// How far JetStream has acknowledged, and how much of that is journaled.
#[derive(Default)]
struct RelayedMark {
    through: Option<CustomerId>,
    journaled: Option<CustomerId>,
}

impl Outbox {
    /// An outbox holding `pending` events (at start, after the store was trimmed), of at most
    /// `max_pending`, whose relayed mark is `journaled`.
    pub fn new(max_pending: usize, pending: usize, journaled: Option<CustomerId>) -> Self {
        Self {
            max_pending: max_pending.max(1),
            pending: AtomicUsize::new(pending),
            relayed: Mutex::new(RelayedMark {
                through: journaled,
                journaled,
            }),
            committed: Notify::new(),
        }
    }

    /// Events waiting for JetStream's acknowledgement.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes room for one more event (the committer, for a new customer); `false` when full.
    pub fn reserve(&self) -> bool {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending < self.max_pending).then_some(pending + 1)
            })
            .is_ok()
    }

    /// A group with new events is durable and applied: the relay may read them.
    pub fn committed(&self) {
        self.committed.notify_one();
    }

    /// Waits for the next [`Outbox::committed`] (or returns at once for one not yet waited for).
    pub async fn next_commit(&self) {
        self.committed.notified().await;
    }

    /// The relay: JetStream acknowledged `count` more events, through `through`.
    pub fn relayed(&self, through: CustomerId, count: usize) {
        self.pending.fetch_sub(count, Ordering::AcqRel);
        self.mark().through = Some(through);
    }

    /// The committer: the mark to journal with this group, if it moved since the last one.
    pub fn mark_to_journal(&self) -> Option<CustomerId> {
        let mark = self.mark();
        (mark.through != mark.journaled)
            .then_some(mark.through)
            .flatten()
    }

    /// The committer: `through` is durable in the journal.
    pub fn journaled(&self, through: CustomerId) {
        let mut mark = self.mark();
        mark.journaled = mark.journaled.max(Some(through));
    }

    /// Whether acknowledged events are not yet covered by a journaled mark.
    pub fn mark_lags(&self) -> bool {
        self.mark_to_journal().is_some()
    }

    fn mark(&self) -> std::sync::MutexGuard<'_, RelayedMark> {
        // The mark is two ids, always consistent: a panicking holder cannot break it.
        self.relayed.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut ids = crate::ids::IdGenerator::after(None);
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
}
