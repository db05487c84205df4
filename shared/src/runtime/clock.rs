//! The wall clock as both binaries use it: milliseconds since the Unix epoch (ids, deadlines,
//! idempotency records, request ids). One function, so that every reading of it agrees on
//! what a clock before 1970 (0) or past the year 584 million (saturated) gives.

use std::time::SystemTime;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
