//! Customer ids in commit order. The committer, the only writer, takes each new id from one
//! [`IdGenerator`], so id order is commit order: a client paging with `ending_before=<newest
//! seen>` can never miss a customer committed later. The generator starts above the newest
//! stored id, so ids never go backwards across restarts, even after the clock stepped back.
//!
//! An id is a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds (the group's commit time, so
//! `created_at` is the commit time as `updated_at` is), then 74 bits that are random for the
//! first id of a millisecond. When the commit time has not moved past the last id (the same
//! millisecond, or a clock that went back), the next id is the last one plus a random step
//! in those 74 bits (RFC 9562 §6.2, method 2), carrying into the millisecond if they
//! overflow. `created_at` is the id's millisecond, so it never goes backwards either.
//!
//! The random bits come from a generator seeded once from the operating system: ids are
//! unique by construction (they strictly increase), not secrets, and a `getrandom` system
//! call per create cost as much as a tenth of the worker's request handling.

use customers_shared::CustomerId;
use uuid::Uuid;

/// The 74 bits below the timestamp that are not version or variant: `rand_a` (12 bits, at
/// bit 64) and `rand_b` (62 bits, at bit 0), read as one counter.
const COUNTER_BITS: u32 = 74;
const RAND_B_BITS: u32 = 62;
const RAND_B_MASK: u128 = (1 << RAND_B_BITS) - 1;
const RAND_A_MASK: u128 = 0xfff;

pub(crate) struct IdGenerator {
    last: u128,
    random: fastrand::Rng,
}

impl IdGenerator {
    /// A generator whose ids are all above `newest` (the newest stored id, if any).
    pub(crate) fn after(newest: Option<CustomerId>) -> Self {
        Self {
            last: newest.map_or(0, |id| id.uuid().as_u128()),
            // The low bits of a UUIDv7 come from the operating system's generator.
            random: fastrand::Rng::with_seed(Uuid::now_v7().as_u128() as u64),
        }
    }

    /// The next id, of a customer created at `at_ms` (the group's commit time) or later.
    pub(crate) fn next_id(&mut self, at_ms: u64) -> CustomerId {
        let fresh = step(u128::from(at_ms) << 80, u128::from(self.random.u64(..)));
        self.last = if fresh > self.last {
            fresh
        } else {
            // A random step of up to 2^32 keeps ids hard to guess from their neighbours.
            step(self.last, u128::from(self.random.u32(..)) + 1)
        };
        CustomerId::from_uuid(Uuid::from_u128(self.last))
    }
}

fn step(last: u128, by: u128) -> u128 {
    let millis = last >> 80;
    let counter = ((last >> 64) & RAND_A_MASK) << RAND_B_BITS | (last & RAND_B_MASK);
    let (millis, counter) = match counter.checked_add(by) {
        Some(next) if next < 1 << COUNTER_BITS => (millis, next),
        _ => (millis + 1, by),
    };
    millis << 80 | 0x7 << 76 | (counter >> RAND_B_BITS) << 64 | 0b10 << 62 | (counter & RAND_B_MASK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use customers_shared::runtime::clock::unix_ms;

    fn is_v7(id: CustomerId) -> bool {
        id.uuid().get_version_num() == 7 && id.uuid().get_variant() == uuid::Variant::RFC4122
    }

    #[test]
    fn ids_strictly_increase_within_a_millisecond() {
        let mut ids = IdGenerator::after(None);
        let all: Vec<CustomerId> = (0..10_000).map(|_| ids.next_id(unix_ms())).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert!(all.iter().all(|&id| is_v7(id)));
    }

    #[test]
    fn ids_start_above_the_newest_stored_one_even_from_the_future() {
        // The newest stored id is an hour ahead of this clock (it stepped back since).
        let hour_ahead = Uuid::now_v7().as_u128() + (3_600_000u128 << 80);
        let newest = CustomerId::from_uuid(Uuid::from_u128(hour_ahead));
        let mut ids = IdGenerator::after(Some(newest));
        let (first, second) = (ids.next_id(unix_ms()), ids.next_id(unix_ms()));
        assert!(newest < first && first < second);
        assert!(is_v7(first) && is_v7(second));
        assert_eq!(
            first.timestamp(),
            newest.timestamp(),
            "created_at stays at the newest stored millisecond until the clock catches up"
        );
    }

    #[test]
    fn a_full_counter_carries_into_the_next_millisecond() {
        let last = step(0x0123_4567_89ab << 80, (1 << COUNTER_BITS) - 1);
        let next = step(last, 5);
        assert_eq!(next >> 80, (last >> 80) + 1);
        let id = CustomerId::from_uuid(Uuid::from_u128(next));
        assert!(is_v7(id) && next > last);
    }
}
