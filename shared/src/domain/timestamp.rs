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

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = self.0.format(FORMAT).map_err(|_| fmt::Error)?;
        f.write_str(&text)
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
}
