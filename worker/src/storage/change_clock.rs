//! When a change becomes visible to the change feed. The feed reads the `changes` index in
//! (time, id) order and must never skip an entry: so it may show the entries before a time
//! only once no group still to be applied can add an entry before it. The committer takes
//! each group's commit time from here ([`ChangeClock::begin_group`]): never earlier than the
//! group before, nor than any frontier a reader has already used; while groups are in
//! progress (the committer plans one while the one before is still being applied) the
//! frontier is the oldest one's time, and between groups it is the next millisecond
//! (a reader waits a moment for one that shares the newest applied group's millisecond).
//! A standby takes its groups' times from the log; its frontier is the newest one it applied
//! (the entries of that millisecond show once a later group lands).
//!
//! The atomics are sequentially consistent: a reader that sees no group in progress has
//! published its frontier before any later group reads it. The groups in progress, oldest
//! first, are behind a mutex only the committer's two threads take, once per group each.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use customers_shared::runtime::clock::unix_ms;

#[derive(Debug, Default)]
pub(crate) struct ChangeClock {
    /// 0: no group in progress; otherwise a lower bound of the time of the oldest that is.
    busy: AtomicU64,
    /// The times of the groups begun and not yet applied, oldest first.
    in_progress: Mutex<VecDeque<u64>>,
    /// The newest frontier a reader used: no later group takes an earlier time.
    exposed: AtomicU64,
    /// The time of the newest group applied.
    ended: AtomicU64,
    /// A standby's: the time of the newest group it applied.
    followed: AtomicU64,
    following: AtomicBool,
}

impl ChangeClock {
    /// A clock whose next group is no earlier than `newest` (the newest stored change).
    pub(crate) fn after(newest: u64) -> Self {
        Self {
            exposed: AtomicU64::new(newest),
            followed: AtomicU64::new(newest),
            ..Self::default()
        }
    }

    /// The commit time of a group that starts now, after one at `last`.
    pub(crate) fn begin_group(&self, last: u64) -> u64 {
        let mut in_progress = self.in_progress();
        if in_progress.is_empty() {
            // Busy before the time is read: a frontier taken meanwhile stays at or below it.
            self.busy.store(last.max(1), SeqCst);
        }
        let at = unix_ms().max(last).max(self.exposed.load(SeqCst));
        in_progress.push_back(at);
        let oldest = in_progress.front().copied().unwrap_or(at);
        self.busy.store(oldest.max(1), SeqCst);
        at
    }

    /// The oldest group in progress, at `at`, is applied.
    pub(crate) fn end_group(&self, at: u64) {
        let mut in_progress = self.in_progress();
        let ended = in_progress.pop_front();
        debug_assert_eq!(ended, Some(at), "groups end in the order they began");
        self.ended.fetch_max(at, SeqCst);
        let next = in_progress
            .front()
            .copied()
            .map_or(0, |oldest| oldest.max(1));
        self.busy.store(next, SeqCst);
    }

    fn in_progress(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        // A queue of numbers, whole after every statement: a panicking holder leaves it usable.
        self.in_progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A standby (`true`) shows the changes before the newest group it applied; a primary or
    /// a single worker (`false`) those before its frontier.
    pub(crate) fn set_following(&self, following: bool) {
        self.following.store(following, SeqCst);
    }

    /// A standby applied a group committed at `at`.
    pub(crate) fn followed(&self, at: u64) {
        self.followed.fetch_max(at, SeqCst);
        self.exposed.fetch_max(at, SeqCst);
    }

    /// The feed may show every change before this time: all of them are applied, and no
    /// later group gets an earlier time. It waits (a few milliseconds at most) until that
    /// time has passed the newest group applied, so that a change acknowledged before this
    /// read is in the feed: the group in progress may share its millisecond, and a group
    /// may have taken a millisecond the clock has not reached yet. Past the wait it answers
    /// what is safe, which may leave the newest millisecond out.
    pub(crate) fn frontier(&self) -> u64 {
        const PATIENCE: Duration = Duration::from_millis(20);
        if self.following.load(SeqCst) {
            return self.followed.load(SeqCst);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            // The next millisecond: every later group takes it or a later one.
            let next = unix_ms() + 1;
            self.exposed.fetch_max(next, SeqCst);
            let ended = self.ended.load(SeqCst);
            let frontier = match self.busy.load(SeqCst) {
                0 => next,
                in_progress => in_progress,
            };
            if frontier > ended || Instant::now() >= deadline {
                return frontier;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn while_groups_overlap_the_frontier_is_the_oldest_ones_time() {
        let clock = ChangeClock::after(0);
        let first = clock.begin_group(0);
        // A later millisecond for the second group, as under load.
        let second = clock.begin_group(first + 5);
        assert!(second > first);
        assert_eq!(clock.frontier(), first, "both in progress");
        clock.end_group(first);
        assert_eq!(clock.frontier(), second, "the second still in progress");
        clock.end_group(second);
        assert!(clock.frontier() > second, "both applied: both show");
    }

    #[test]
    fn a_group_never_starts_before_a_frontier_already_shown() {
        let clock = ChangeClock::after(0);
        let shown = clock.frontier();
        let at = clock.begin_group(0);
        assert!(at >= shown, "{at} before the frontier {shown}");
        assert_eq!(clock.frontier(), at, "in progress: only what is before it");
        clock.end_group(at);
        assert!(clock.frontier() > at, "applied: it shows");
        assert!(
            clock.begin_group(at) >= at,
            "never earlier than the group before"
        );
    }

    #[test]
    fn a_clock_stepped_back_does_not_take_times_back() {
        let far = unix_ms() + 60_000;
        let clock = ChangeClock::after(far);
        assert!(clock.begin_group(far) >= far);
    }

    #[test]
    fn a_standby_shows_what_is_before_its_newest_group() {
        let clock = ChangeClock::after(5);
        clock.set_following(true);
        assert_eq!(clock.frontier(), 5);
        clock.followed(9);
        assert_eq!(clock.frontier(), 9);
        clock.set_following(false);
        assert!(
            clock.begin_group(0) >= 9,
            "promoted: after what it followed"
        );
    }
}
