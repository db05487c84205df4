//! The stored customer record and its identity. A [`Customer`] serialises with the keys in the
//! documented order, every key present (null when unset); its id is a TypeID (`cus_` + a
//! UUIDv7) whose embedded millisecond timestamp is also the record's `created_at`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use type_safe_id::{StaticType, TypeSafeId};
use uuid::Uuid;

use crate::fields::{
    Address, CustomData, CustomerEmail, CustomerName, PaymentMethod, Phone, Status,
};
use crate::new_customer::NewCustomer;

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

    /// The creation time embedded in the UUIDv7.
    pub fn timestamp(&self) -> Timestamp {
        let (secs, nanos) = self
            .0
            .get_timestamp()
            .map(|ts| ts.to_unix())
            .unwrap_or_default();
        let millis = i128::from(secs) * 1000 + i128::from(nanos / 1_000_000);
        Timestamp(
            OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
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

/// A UTC instant rendered as RFC 3339 with exactly three fractional digits and `Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[schemars(
    transparent,
    description = "RFC 3339 UTC timestamp with millisecond precision",
    extend("format" = "date-time")
)]
pub struct Timestamp(#[schemars(with = "String")] OffsetDateTime);

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

/// A stored customer, exactly as every success reply shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(transform = every_key_required)]
pub struct Customer {
    pub id: CustomerId,
    pub name: CustomerName,
    pub email: CustomerEmail,
    pub phone: Option<Phone>,
    pub address: Option<Address>,
    pub payment_method: Option<PaymentMethod>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub status: Status,
    pub custom_data: Option<CustomData>,
}

/// Every key of a customer is always present (null when unset), so all are `required`.
fn every_key_required(schema: &mut schemars::Schema) {
    let keys: Vec<serde_json::Value> = schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
        .map(|properties| properties.keys().cloned().map(Into::into).collect())
        .unwrap_or_default();
    schema.insert("required".to_owned(), keys.into());
}

impl Customer {
    /// The record for `new`, created at the instant embedded in `id`.
    pub fn create(id: CustomerId, new: NewCustomer) -> Self {
        let created_at = id.timestamp();
        Self {
            id,
            name: new.name,
            email: new.email,
            phone: new.phone,
            address: new.address,
            payment_method: new.payment_method,
            created_at,
            updated_at: created_at,
            status: new.status,
            custom_data: new.custom_data,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a customer always serialises")
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

    #[test]
    fn timestamps_have_millisecond_precision() {
        let ts = Timestamp(
            OffsetDateTime::from_unix_timestamp_nanos(1_725_202_800_000_000_000).unwrap(),
        );
        assert_eq!(ts.to_string(), "2024-09-01T15:00:00.000Z");
        let id = new_id();
        let text = id.timestamp().to_string();
        assert_eq!(text.len(), 24, "{text}");
        assert!(text.ends_with('Z'));
    }
}
