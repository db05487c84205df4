//! Rate limits: a token bucket per credential (and, with `--auth none`, per client address),
//! as GCRA (the generic cell rate algorithm): each bucket is one atomic "theoretical arrival
//! time", so a check is a compare-and-swap with no lock and no timer. A decision carries what
//! the IETF `RateLimit` / `RateLimit-Policy` header fields and `Retry-After` report.
//!
//! Address buckets live in a map bounded by [`MAX_ADDRESSES`]: when it is full, buckets that
//! have refilled (indistinguishable from new ones) are dropped, and if none has, newcomers
//! share one overflow bucket. Memory stays bounded whatever the number of addresses, and a
//! flood from many addresses throttles only the newcomers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A token bucket's shape: `per_second` tokens added continuously, at most `burst` held.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub per_second: f64,
    pub burst: u32,
}

impl Policy {
    /// `Err` with the reason when the policy cannot be enforced.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err("per_second must be a positive number");
        }
        if self.burst == 0 {
            return Err("burst must be at least 1");
        }
        Ok(())
    }

    /// Nanoseconds between two tokens.
    fn emission_nanos(&self) -> u64 {
        ((1e9 / self.per_second).round() as u64).max(1)
    }

    /// The `RateLimit-Policy` field value: a quota of `burst` requests per window of the
    /// seconds a drained bucket takes to refill.
    pub(crate) fn header_value(&self) -> String {
        let window = (f64::from(self.burst) / self.per_second).ceil().max(1.0);
        format!("\"{POLICY_NAME}\";q={};w={window}", self.burst)
    }
}

/// The name of the one policy, in both header fields.
const POLICY_NAME: &str = "requests";

/// Most client addresses with a bucket of their own (about 100 bytes each).
pub(crate) const MAX_ADDRESSES: usize = 65_536;

/// The result of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allowed {
        /// Requests that would be allowed right after this one.
        remaining: u64,
        /// Time until the bucket is full again.
        reset: Duration,
    },
    Denied {
        /// Time until the next request is allowed.
        retry_after: Duration,
        /// Time until the bucket is full again (what `RateLimit`'s `t` reports).
        reset: Duration,
    },
}

impl Decision {
    /// The `RateLimit` field value.
    pub(crate) fn header_value(&self) -> String {
        let (remaining, reset) = match *self {
            Self::Allowed { remaining, reset } => (remaining, reset),
            Self::Denied { reset, .. } => (0, reset),
        };
        format!("\"{POLICY_NAME}\";r={remaining};t={}", ceil_secs(reset))
    }
}

/// Whole seconds, rounded up: a client that waits this long is not refused again.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_nanos().div_ceil(1_000_000_000) as u64
}

/// One credential's allowance: its token bucket, and how many of its requests are in
/// flight (bounded separately, so that requests that take long, such as bodies trickling
/// in, cannot pile up within the rate).
#[derive(Debug)]
pub(crate) struct Bucket {
    policy: Policy,
    emission: u64,
    /// `(burst - 1) × emission`: how far ahead of now the arrival time may run.
    tolerance: u64,
    epoch: Instant,
    /// Theoretical arrival time of the next request, in nanoseconds since `epoch`.
    arrival: AtomicU64,
    in_flight: AtomicUsize,
}

/// A request counted in its credential's [`Bucket`] until dropped.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bucket {
    pub(crate) fn new(policy: Policy) -> Self {
        let emission = policy.emission_nanos();
        Self {
            policy,
            emission,
            tolerance: emission.saturating_mul(u64::from(policy.burst) - 1),
            epoch: Instant::now(),
            arrival: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Counts one more request in flight, unless `limit` are already.
    pub(crate) fn enter(&self, limit: usize) -> Option<InFlight<'_>> {
        let mut current = self.in_flight.load(Ordering::Acquire);
        loop {
            if current >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(InFlight(&self.in_flight)),
                Err(now) => current = now,
            }
        }
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Takes a token if one is there.
    pub(crate) fn check(&self) -> Decision {
        self.check_at(Instant::now())
    }

    fn check_at(&self, at: Instant) -> Decision {
        let now = at.saturating_duration_since(self.epoch).as_nanos() as u64;
        let mut arrival = self.arrival.load(Ordering::Relaxed);
        loop {
            let start = arrival.max(now);
            if start - now > self.tolerance {
                return Decision::Denied {
                    retry_after: Duration::from_nanos(start - now - self.tolerance),
                    reset: Duration::from_nanos(start - now),
                };
            }
            let next = start + self.emission;
            match self.arrival.compare_exchange_weak(
                arrival,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let ahead = next - now;
                    let capacity = self.tolerance + self.emission;
                    return Decision::Allowed {
                        remaining: (capacity - ahead) / self.emission,
                        reset: Duration::from_nanos(ahead),
                    };
                }
                Err(current) => arrival = current,
            }
        }
    }

    /// Whether the bucket is full, i.e. no different from a new one.
    fn is_full(&self, at: Instant) -> bool {
        let now = at.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.arrival.load(Ordering::Relaxed) <= now
    }
}

/// A bucket per client address, in a bounded map.
pub(crate) struct AddressBuckets {
    policy: Policy,
    buckets: Mutex<HashMap<IpAddr, Arc<Bucket>>>,
    /// Shared by addresses that find the map full.
    overflow: Arc<Bucket>,
    capacity: usize,
}

impl AddressBuckets {
    pub(crate) fn new(policy: Policy) -> Self {
        Self::with_capacity(policy, MAX_ADDRESSES)
    }

    fn with_capacity(policy: Policy, capacity: usize) -> Self {
        Self {
            policy,
            buckets: Mutex::default(),
            overflow: Arc::new(Bucket::new(policy)),
            capacity,
        }
    }

    /// The bucket of `address`.
    pub(crate) fn bucket(&self, address: IpAddr) -> Arc<Bucket> {
        let mut buckets = self.buckets.lock().expect("address buckets");
        if let Some(bucket) = buckets.get(&address) {
            return bucket.clone();
        }
        if buckets.len() >= self.capacity {
            let now = Instant::now();
            buckets.retain(|_, bucket| !bucket.is_full(now));
            if buckets.len() >= self.capacity {
                return self.overflow.clone();
            }
        }
        let bucket = Arc::new(Bucket::new(self.policy));
        buckets.insert(address, bucket.clone());
        bucket
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PER_SECOND: Policy = Policy {
        per_second: 10.0,
        burst: 5,
    };

    #[test]
    fn a_burst_then_one_token_per_interval() {
        let bucket = Bucket::new(TEN_PER_SECOND);
        let t0 = bucket.epoch;
        for remaining in (0..5).rev() {
            match bucket.check_at(t0) {
                Decision::Allowed { remaining: r, .. } => assert_eq!(r, remaining),
                denied => panic!("{denied:?}"),
            }
        }
        assert_eq!(
            bucket.check_at(t0),
            Decision::Denied {
                retry_after: Duration::from_millis(100),
                reset: Duration::from_millis(500),
            },
            "the next token in 100 ms, full after five"
        );
        let later = t0 + Duration::from_millis(100);
        assert!(matches!(
            bucket.check_at(later),
            Decision::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(bucket.check_at(later), Decision::Denied { .. }));
        // Idle for the whole window: full again.
        let idle = later + Duration::from_millis(500);
        assert!(bucket.is_full(idle));
        assert!(matches!(
            bucket.check_at(idle),
            Decision::Allowed { remaining: 4, .. }
        ));
    }

    #[test]
    fn allowed_count_matches_the_policy_over_time() {
        let bucket = Bucket::new(Policy {
            per_second: 1000.0,
            burst: 50,
        });
        let t0 = bucket.epoch;
        // One attempt every 100 µs for 2 s: 10 attempts per token.
        let allowed = (0..20_000)
            .filter(|i| {
                let at = t0 + Duration::from_micros(100 * i);
                matches!(bucket.check_at(at), Decision::Allowed { .. })
            })
            .count();
        // 50 at once, then one per millisecond for 2 s.
        assert!((2049..=2051).contains(&allowed), "{allowed}");
    }

    #[test]
    fn header_values() {
        assert_eq!(TEN_PER_SECOND.header_value(), "\"requests\";q=5;w=1");
        let slow = Policy {
            per_second: 0.5,
            burst: 3,
        };
        assert_eq!(slow.header_value(), "\"requests\";q=3;w=6");
        let allowed = Decision::Allowed {
            remaining: 4,
            reset: Duration::from_millis(100),
        };
        assert_eq!(allowed.header_value(), "\"requests\";r=4;t=1");
        let denied = Decision::Denied {
            retry_after: Duration::from_millis(100),
            reset: Duration::from_millis(2500),
        };
        assert_eq!(
            denied.header_value(),
            "\"requests\";r=0;t=3",
            "t is the time until the bucket is full, not until the next token"
        );
    }

    #[test]
    fn requests_in_flight_are_bounded_and_released() {
        let bucket = Bucket::new(TEN_PER_SECOND);
        let first = bucket.enter(2).expect("one in flight");
        let second = bucket.enter(2).expect("two in flight");
        assert!(bucket.enter(2).is_none(), "a third is refused");
        drop(first);
        let third = bucket.enter(2).expect("room again once one ends");
        drop((second, third));
        assert_eq!(bucket.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn invalid_policies() {
        for (description, policy) in [
            ("zero rate", (0.0, 1)),
            ("negative rate", (-1.0, 1)),
            ("infinite rate", (f64::INFINITY, 1)),
            ("not a number", (f64::NAN, 1)),
            ("zero burst", (1.0, 0)),
        ] {
            let policy = Policy {
                per_second: policy.0,
                burst: policy.1,
            };
            assert!(policy.check().is_err(), "{description}");
        }
    }

    #[test]
    fn the_address_map_stays_bounded() {
        let buckets = AddressBuckets::with_capacity(TEN_PER_SECOND, 4);
        let address = |n: u8| IpAddr::from([10, 0, 0, n]);
        for n in 0..4 {
            assert!(matches!(
                buckets.bucket(address(n)).check(),
                Decision::Allowed { .. }
            ));
        }
        // Full of buckets in use: a newcomer gets the shared overflow bucket.
        let newcomer = buckets.bucket(address(9));
        assert!(Arc::ptr_eq(&newcomer, &buckets.overflow));
        assert_eq!(buckets.len(), 4);
        // A known address keeps its own bucket.
        assert!(!Arc::ptr_eq(&buckets.bucket(address(0)), &buckets.overflow));
    }

    #[test]
    fn refilled_buckets_make_room() {
        let buckets = AddressBuckets::with_capacity(TEN_PER_SECOND, 2);
        // Looked up but never used: full, so evictable.
        buckets.bucket(IpAddr::from([10, 0, 0, 1]));
        buckets.bucket(IpAddr::from([10, 0, 0, 2]));
        let third = buckets.bucket(IpAddr::from([10, 0, 0, 3]));
        assert!(!Arc::ptr_eq(&third, &buckets.overflow));
        assert_eq!(buckets.len(), 1);
    }
}
