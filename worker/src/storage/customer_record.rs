//! The value of the `customers` tree: a customer as it is now, with its version, or the
//! tombstone a delete leaves. Three shapes, told apart by the first byte:
//!
//! | first byte | layout | meaning |
//! |---|---|---|
//! | `{` | the customer's JSON | version 1: a customer never changed (every record written before updates existed) |
//! | `0x02` | `0x02` \| version: u64 BE \| the customer's JSON | version 2 and later |
//! | `0x03` | `0x03` \| deleted_at: u64 BE (Unix ms) | deleted: nothing of the customer remains but its id and when |
//!
//! A create writes the first shape, exactly the `201` body, so creates cost what they did
//! before updates and a read of an unchanged customer is the stored bytes. The JSON is
//! always exactly what the last successful reply showed, so a read sends it unparsed.

use bytes::Bytes;
use sled::IVec;

const VERSIONED: u8 = 0x02;
const TOMBSTONE: u8 = 0x03;
const HEADER: usize = 1 + 8;

/// A stored customer record, decoded; the JSON shares the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CustomerRecord {
    Live(LiveCustomer),
    Deleted { deleted_at_ms: u64 },
}

/// A customer that exists: its version (1, 2, …) and its JSON as replied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveCustomer {
    pub(crate) version: u64,
    pub(crate) json: Bytes,
}

impl CustomerRecord {
    /// Reads a stored value; `Err` names what is wrong with it.
    pub(crate) fn decode(stored: &IVec) -> Result<Self, &'static str> {
        match stored.first() {
            Some(b'{') => Ok(Self::Live(LiveCustomer {
                version: 1,
                json: Bytes::copy_from_slice(stored),
            })),
            Some(&VERSIONED) if stored.len() > HEADER => Ok(Self::Live(LiveCustomer {
                version: number(stored),
                json: Bytes::copy_from_slice(&stored[HEADER..]),
            })),
            Some(&TOMBSTONE) if stored.len() == HEADER => Ok(Self::Deleted {
                deleted_at_ms: number(stored),
            }),
            _ => Err("not a customer record"),
        }
    }

    /// The JSON of a live record, as a slice of `stored` (no copy: lists send many); `None`
    /// for a tombstone or a value that is no record.
    pub(crate) fn json_of(stored: &IVec) -> Option<IVec> {
        match stored.first() {
            Some(b'{') => Some(stored.clone()),
            Some(&VERSIONED) if stored.len() > HEADER => {
                Some(stored.subslice(HEADER, stored.len() - HEADER))
            }
            _ => None,
        }
    }

    /// The JSON inside a stored value, without copying; `None` for a tombstone.
    pub(crate) fn json_in(stored: &[u8]) -> Option<&[u8]> {
        match stored.first() {
            Some(b'{') => Some(stored),
            Some(&VERSIONED) if stored.len() > HEADER => Some(&stored[HEADER..]),
            _ => None,
        }
    }

    /// The stored value of a live customer at `version` with `json`.
    pub(crate) fn live(version: u64, json: &[u8]) -> Vec<u8> {
        if version == 1 {
            return json.to_vec();
        }
        let mut value = Vec::with_capacity(HEADER + json.len());
        value.push(VERSIONED);
        value.extend_from_slice(&version.to_be_bytes());
        value.extend_from_slice(json);
        value
    }

    /// The stored value of a customer deleted at `deleted_at_ms`.
    pub(crate) fn tombstone(deleted_at_ms: u64) -> [u8; HEADER] {
        let mut value = [0; HEADER];
        value[0] = TOMBSTONE;
        value[1..].copy_from_slice(&deleted_at_ms.to_be_bytes());
        value
    }
}

fn number(stored: &[u8]) -> u64 {
    u64::from_be_bytes(stored[1..HEADER].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_reads_back_as_written() {
        let json = br#"{"id":"cus_1"}"#;
        let cases: [(&str, Vec<u8>, Result<CustomerRecord, &str>); 5] = [
            (
                "a version-1 record is the JSON itself",
                CustomerRecord::live(1, json),
                Ok(CustomerRecord::Live(LiveCustomer {
                    version: 1,
                    json: Bytes::from_static(json),
                })),
            ),
            (
                "a later version carries its number",
                CustomerRecord::live(7, json),
                Ok(CustomerRecord::Live(LiveCustomer {
                    version: 7,
                    json: Bytes::from_static(json),
                })),
            ),
            (
                "a tombstone holds the deletion time only",
                CustomerRecord::tombstone(1_700_000_000_123).to_vec(),
                Ok(CustomerRecord::Deleted {
                    deleted_at_ms: 1_700_000_000_123,
                }),
            ),
            ("an empty value", Vec::new(), Err("not a customer record")),
            (
                "a versioned header without JSON",
                CustomerRecord::live(2, b"")[..HEADER].to_vec(),
                Err("not a customer record"),
            ),
        ];
        for (description, stored, expected) in cases {
            let stored = IVec::from(stored);
            assert_eq!(CustomerRecord::decode(&stored), expected, "{description}");
            let json_of = CustomerRecord::json_of(&stored).map(|j| j.to_vec());
            let expected_json = match expected {
                Ok(CustomerRecord::Live(live)) => Some(live.json.to_vec()),
                _ => None,
            };
            assert_eq!(json_of, expected_json, "{description}");
        }
    }
}
