//! A UTC instant as the contract writes it: RFC 3339 with exactly three fractional digits
//! and `Z` (`2024-09-01T15:00:00.000Z`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;

/// A UTC instant rendered as RFC 3339 with exactly three fractional digits and `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(
    transparent,
    description = "RFC 3339 UTC timestamp with millisecond precision",
    extend("format" = "date-time")
)]
pub struct Timestamp(#[schemars(with = "String")] OffsetDateTime);

impl From<OffsetDateTime> for Timestamp {
    fn from(instant: OffsetDateTime) -> Self {
        Self(instant)
    }
}

impl Timestamp {
    /// The instant `ms` milliseconds after the Unix epoch (the epoch itself for one past
    /// what a timestamp can show).
    pub fn from_unix_ms(ms: u64) -> Self {
        let nanos = i128::from(ms) * 1_000_000;
        Self(OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    /// Milliseconds since the Unix epoch (0 before it).
    pub fn unix_ms(&self) -> u64 {
        u64::try_from(self.0.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }

    /// Reads an RFC 3339 instant (as [`Timestamp`] writes it, or any other RFC 3339 form).
    pub fn parse(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|instant| Self(instant.to_offset(time::UtcOffset::UTC)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand rather than with a `time` format description, which allocates a String
        // per call: every reply and every event writes one. Years are 0–9999 (ids carry Unix
        // milliseconds and `time` is built without large dates), so four digits suffice.
        let (date, time) = (self.0.date(), self.0.time());
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            date.year(),
            u8::from(date.month()),
            date.day(),
            time.hour(),
            time.minute(),
            time.second(),
            time.millisecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::id::CustomerId;

    #[test]
    fn timestamps_have_millisecond_precision() {
        let ts = Timestamp(
            OffsetDateTime::from_unix_timestamp_nanos(1_725_202_800_000_000_000).unwrap(),
        );
        assert_eq!(ts.to_string(), "2024-09-01T15:00:00.000Z");
        let id = CustomerId::from_uuid(uuid::Uuid::now_v7());
        let text = id.timestamp().to_string();
        assert_eq!(text.len(), 24, "{text}");
        assert!(text.ends_with('Z'));
    }

    #[test]
    fn the_hand_written_format_is_the_format_description() {
        const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        for nanos in [
            0,
            999_999_999,
            1_725_202_800_123_456_789,
            951_782_400_000_000_000,     // 2000-02-29
            253_402_300_799_999_000_000, // 9999-12-31T23:59:59.999
        ] {
            let instant = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            assert_eq!(
                Timestamp(instant).to_string(),
                instant.format(FORMAT).unwrap(),
                "{nanos}"
            );
        }
    }
}
