//! The secondary indexes' keys, in one place: what a customer contributes to them, and what
//! a filter looks up. Both trees hold empty values; the keys say everything.
//!
//! * `changes`: one entry per customer, at its latest change: the change's time in ms (its
//!   `updated_at`, or when it was deleted) then its id, so the tree reads in change-feed
//!   order. An update moves the entry; a delete moves it to the deletion time.
//! * `attributes`: one entry per indexed value of a live customer: a kind byte (`s` status,
//!   `c` country, `d` a `custom_data` scalar, `n` the lower-cased name, `p` the phone's
//!   digits: search's `name:` and `phone:`), the value's parts, each with a 2-byte length,
//!   then the id. The entries of one value sort by id, so newest first is a reverse range,
//!   and several filters meet by walking their ranges together (`store::filters`).
//!
//! The committer stages the index puts and removals in the same journal record as the change
//! (replay, the replicated log and a standby reproduce them); a data directory from before
//! the indexes gets them built once at open (`Store::build_indexes`).

use customers_shared::domain::country::CountryCode;
use customers_shared::domain::fields::Status;
use customers_shared::wire::list::Filters;
use customers_shared::wire::search::TextField;
use customers_shared::{Customer, CustomerId};

use crate::storage::text_index::{Held, searched_text};

const STATUS: u8 = b's';
const COUNTRY: u8 = b'c';
const CUSTOM_DATA: u8 = b'd';
const NAME: u8 = b'n';
const PHONE: u8 = b'p';

/// The key of the `changes` entry of `id` changed at `at_ms`.
pub(crate) fn change_key(at_ms: u64, id: CustomerId) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&at_ms.to_be_bytes());
    key[8..].copy_from_slice(&id.to_bytes());
    key
}

/// The time and the id in a `changes` key (`None`: not one).
pub(crate) fn parse_change_key(key: &[u8]) -> Option<(u64, CustomerId)> {
    let (at, id) = key.split_at_checked(8)?;
    let at = u64::from_be_bytes(at.try_into().ok()?);
    let id: [u8; 16] = id.try_into().ok()?;
    Some((at, CustomerId::from_uuid(uuid::Uuid::from_bytes(id))))
}

/// The `attributes` prefixes (the key without the id) of every value of `customer` the
/// filters can find, in a fixed order.
pub(crate) fn attribute_prefixes(customer: &Customer) -> Vec<Vec<u8>> {
    let mut prefixes = vec![
        prefix(STATUS, &[customer.status.as_str()]),
        name_prefix(customer.name.as_str()),
    ];
    if let Some(phone) = &customer.phone {
        prefixes.push(phone_prefix(phone.as_str()));
    }
    if let Some(address) = &customer.address {
        prefixes.push(prefix(COUNTRY, &[address.country.as_str()]));
    }
    if let Some(custom_data) = &customer.custom_data {
        for (key, text) in custom_data.scalars() {
            prefixes.push(prefix(CUSTOM_DATA, &[key, &text]));
        }
    }
    prefixes
}

/// The prefixes whose entries `filters` needs all of (an AND).
pub(crate) fn filter_prefixes(filters: &Filters) -> Vec<Vec<u8>> {
    let mut prefixes: Vec<Vec<u8>> = filters
        .custom_data
        .iter()
        .map(|(key, text)| custom_data_prefix(key, text))
        .collect();
    if let Some(country) = &filters.country {
        prefixes.push(country_prefix(country));
    }
    if let Some(status) = filters.status {
        prefixes.push(status_prefix(status));
    }
    prefixes
}

/// The prefix of the customers with `status`.
pub(crate) fn status_prefix(status: Status) -> Vec<u8> {
    prefix(STATUS, &[status.as_str()])
}

/// The prefix of the customers in `country`.
pub(crate) fn country_prefix(country: &CountryCode) -> Vec<u8> {
    prefix(COUNTRY, &[country.as_str()])
}

/// The prefix of the customers whose `custom_data[key]` is the scalar written `text`.
pub(crate) fn custom_data_prefix(key: &str, text: &str) -> Vec<u8> {
    prefix(CUSTOM_DATA, &[key, text])
}

/// The prefix of the customers whose name is `name`, compared as search compares it
/// (case-insensitively).
pub(crate) fn name_prefix(name: &str) -> Vec<u8> {
    prefix(NAME, &[&searched_text(TextField::Name, name)])
}

/// The prefix of the customers whose phone has the digits of `phone`.
pub(crate) fn phone_prefix(phone: &str) -> Vec<u8> {
    prefix(PHONE, &[&searched_text(TextField::Phone, phone)])
}

/// The value a status or country prefix stands for: the text index holds it for every
/// customer, so a probe of such a prefix needs no tree lookup (`None`: any other prefix).
pub(crate) fn held_in_memory(prefix: &[u8]) -> Option<Held> {
    let (&kind, rest) = prefix.split_first()?;
    let (len, value) = rest.split_first_chunk::<2>()?;
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|value| value.len() == usize::from(u16::from_be_bytes(*len)))?;
    match kind {
        STATUS => Status::parse(value).ok().map(Held::Status),
        COUNTRY => CountryCode::parse(value).ok().map(Held::Country),
        _ => None,
    }
}

/// The entry key of `id` under `prefix`.
pub(crate) fn attribute_key(prefix: &[u8], id: CustomerId) -> Vec<u8> {
    [prefix, &id.to_bytes()[..]].concat()
}

/// The id at the end of an `attributes` key.
pub(crate) fn attribute_id(key: &[u8]) -> Option<CustomerId> {
    let id: [u8; 16] = key.get(key.len().checked_sub(16)?..)?.try_into().ok()?;
    Some(CustomerId::from_uuid(uuid::Uuid::from_bytes(id)))
}

fn prefix(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut prefix = vec![kind];
    for part in parts {
        // Values are bounded far below 64 KiB by the field rules (custom_data ≤ 8 KiB).
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        prefix.extend_from_slice(&len.to_be_bytes());
        prefix.extend_from_slice(&part.as_bytes()[..usize::from(len)]);
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(json: &str) -> Customer {
        Customer::from_stored(json.as_bytes()).unwrap()
    }

    const STORED: &str = r#"{"id":"cus_01h3vjs3b16yc3f9q8q9pfrb80","name":"A","email":"a@x.com","phone":null,
        "address":{"city":"Arusha","country":"TZ"},"payment_method":null,
        "created_at":"2024-01-01T00:00:00.000Z","updated_at":"2024-01-01T00:00:00.000Z",
        "status":"active","custom_data":{"tier":"gold","seats":3,"vip":true,"tags":["a"],"none":null}}"#;

    #[test]
    fn a_customer_indexes_its_status_country_and_custom_data_scalars() {
        let prefixes = attribute_prefixes(&customer(STORED));
        let filters = |json: &str| {
            let query = customers_shared::wire::list::ListQuery::parse(json.as_bytes()).unwrap();
            filter_prefixes(&query.filters)
        };
        for (description, query) in [
            ("status", r#"{"status":"active"}"#),
            ("country by name", r#"{"country":"Tanzania"}"#),
            ("a string", r#"{"custom_data[tier]":"gold"}"#),
            ("a number, from text", r#"{"custom_data[seats]":"3"}"#),
            ("a boolean", r#"{"custom_data[vip]":"true"}"#),
        ] {
            let wanted = filters(query);
            assert_eq!(wanted.len(), 1, "{description}");
            assert!(prefixes.contains(&wanted[0]), "{description}");
        }
        for (description, query) in [
            ("another status", r#"{"status":"inactive"}"#),
            ("an array is not indexed", r#"{"custom_data[tags]":"a"}"#),
            ("null is not indexed", r#"{"custom_data[none]":"null"}"#),
            (
                "a key's value does not match another key",
                r#"{"custom_data[tie]":"rgold"}"#,
            ),
        ] {
            assert!(!prefixes.contains(&filters(query)[0]), "{description}");
        }
        assert_eq!(prefixes.len(), 6, "status, name, country, three scalars");
        assert!(prefixes.contains(&name_prefix("a")), "the name, any case");
    }

    #[test]
    fn status_and_country_prefixes_name_what_the_text_index_holds() {
        let country = CountryCode::parse("TZ").unwrap();
        for (description, prefix, held) in [
            (
                "a status",
                status_prefix(Status::Suspended),
                Some(Held::Status(Status::Suspended)),
            ),
            (
                "a country",
                country_prefix(&country),
                Some(Held::Country(country)),
            ),
            (
                "a custom_data scalar",
                custom_data_prefix("tier", "gold"),
                None,
            ),
            ("a name", name_prefix("active"), None),
            (
                "cut short",
                status_prefix(Status::Active)[..4].to_vec(),
                None,
            ),
            ("empty", Vec::new(), None),
        ] {
            assert_eq!(held_in_memory(&prefix), held, "{description}");
        }
    }

    #[test]
    fn keys_carry_their_id_and_time() {
        let id = customer(STORED).id;
        assert_eq!(parse_change_key(&change_key(42, id)), Some((42, id)));
        assert!(change_key(41, id) < change_key(42, id));
        let key = attribute_key(&attribute_prefixes(&customer(STORED))[0], id);
        assert_eq!(attribute_id(&key), Some(id));
    }
}
