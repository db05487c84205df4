//! A customer's identity: a TypeID, `cus_` + a UUIDv7 in lower-case Crockford base32. Ids
//! sort by creation time (the worker's committer makes them in commit order) and carry their
//! creation millisecond, which is also the customer's `created_at`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Serialize, Serializer};
use type_safe_id::{StaticType, TypeSafeId};
use uuid::Uuid;

use crate::domain::timestamp::Timestamp;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CustomerTag;

impl StaticType for CustomerTag {
    const TYPE: &'static str = "cus";
}

/// A customer's id: `cus_` + 26 lower-case Crockford base32 characters of a UUIDv7.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[schemars(
    transparent,
    description = "TypeID: cus_ followed by a base32-encoded UUIDv7",
    extend("pattern" = "^cus_[0-7][0-9a-hjkmnp-tv-z]{25}$")
)]
pub struct CustomerId(#[schemars(with = "String")] Uuid);

impl CustomerId {
    /// The id made of `uuid`, which should be a UUIDv7. New ids are made by the worker's
    /// committer, in commit order.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn uuid(&self) -> Uuid {
        self.0
    }

    /// The 16 big-endian bytes; they sort in creation order, which makes them the record key.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0.into_bytes()
    }

    /// The creation time embedded in the UUIDv7, in milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        let (secs, nanos) = self
            .0
            .get_timestamp()
            .map(|ts| ts.to_unix())
            .unwrap_or_default();
        secs * 1000 + u64::from(nanos / 1_000_000)
    }

    /// The creation time embedded in the UUIDv7.
    pub fn timestamp(&self) -> Timestamp {
        Timestamp::from_unix_ms(self.unix_ms())
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&TypeSafeId::<CustomerTag>::from_uuid(self.0), f)
    }
}

impl fmt::Debug for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for CustomerId {
    type Err = type_safe_id::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TypeSafeId::<CustomerTag>::from_str(s).map(|id| Self(id.uuid()))
    }
}

impl Serialize for CustomerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_id() -> CustomerId {
        CustomerId::from_uuid(Uuid::now_v7())
    }

    #[test]
    fn ids_are_typeids_that_sort_as_text_like_their_uuids() {
        let ids: Vec<CustomerId> = (0..10_000).map(|_| new_id()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids must be strictly increasing"
        );
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert!(
            texts.windows(2).all(|w| w[0] < w[1]),
            "id strings sort like ids"
        );
        for text in &texts[..3] {
            assert_eq!(text.len(), 30);
            assert!(text.starts_with("cus_"));
            assert!(matches!(text.as_bytes()[4], b'0'..=b'7'));
            assert_eq!(text.parse::<CustomerId>().unwrap().to_string(), *text);
        }
    }

    #[test]
    fn known_typeid_encoding() {
        let uuid = Uuid::parse_str("0188bac7-4afa-78aa-bc3b-bd1eef28d881").unwrap();
        assert_eq!(
            CustomerId::from_uuid(uuid).to_string(),
            "cus_01h2xcejqtf2nbrexx3vqjhp41"
        );
    }
}
