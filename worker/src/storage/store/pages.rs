//! Pages of customers: the newest-first list and the change feed, with their filters.
//!
//! * **Newest first** walks ids downwards (or upwards for `ending_before`) between the bounds
//!   the cursor and `created[…]` set (an id's millisecond is its `created_at`). Without an
//!   indexed filter it walks the `customers` tree; with some (status, country,
//!   `custom_data[…]`) it walks the `attributes` range of the one with the fewest customers
//!   (`attribute_counts`) and probes each of its customers in the others' with a point
//!   lookup, reading only those all of them hold.
//!   `updated[…]` is checked on the customers found.
//! * **The change feed** walks the `changes` index from the cursor up to the change clock's
//!   frontier (`storage::change_clock`), so no entry it passes can appear behind it later.
//!   An entry whose customer has moved on (an apply in progress) is skipped: the customer's
//!   new entry lies ahead. Tombstones come as `{"id","deleted","deleted_at"}` with
//!   `include_deleted`, whatever the other filters (a tombstone holds nothing to match).
//!
//! Both stop before their items would pass `max_bytes` together (with `has_more`), but always
//! hold at least one.

use std::borrow::Cow;
use std::ops::Bound;

use bytes::Bytes;
use customers_shared::wire::event::deleted_data;
use customers_shared::wire::list::{Cursor, FeedPosition, Filters, ListQuery};
use customers_shared::{CustomerId, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::storage::customer_record::CustomerRecord;
use crate::storage::indexes::{
    attribute_id, attribute_key, filter_prefixes, held_in_memory, parse_change_key,
};
use crate::storage::store::{Store, StoreError};

/// A change-feed page: the items oldest change first, whether more follow, and where the
/// next page starts.
pub(crate) struct FeedPage {
    pub(crate) items: Vec<Bytes>,
    pub(crate) has_more: bool,
    pub(crate) next: FeedPosition,
}

/// Ids as numbers, for inclusive bounds.
fn id_number(id: CustomerId) -> u128 {
    id.uuid().as_u128()
}

fn id_of(number: u128) -> CustomerId {
    CustomerId::from_uuid(uuid::Uuid::from_u128(number))
}

/// The inclusive id bounds of a newest-first page: the cursor's and `created[…]`'s.
fn id_bounds(query: &ListQuery) -> (u128, u128) {
    let created = query.filters.created;
    let mut low = u128::from(created.min.min(1 << 48)) << 80;
    let mut high = match created.max.checked_add(1) {
        Some(end) if end < 1 << 48 => (u128::from(end) << 80).saturating_sub(1),
        _ => u128::MAX,
    };
    if created.min > created.max {
        return (1, 0);
    }
    match query.cursor {
        Some(Cursor::StartingAfter(after)) => high = high.min(id_number(after).saturating_sub(1)),
        Some(Cursor::EndingBefore(before)) => low = low.max(id_number(before).saturating_add(1)),
        None => {}
    }
    (low, high)
}

/// The fields a filter reads from a customer's JSON.
#[derive(Deserialize)]
struct Filterable<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    address: Option<CountryOnly<'a>>,
    #[serde(borrow)]
    updated_at: Cow<'a, str>,
    custom_data: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct CountryOnly<'a> {
    #[serde(borrow)]
    country: Cow<'a, str>,
}

#[derive(Deserialize)]
struct UpdatedOnly<'a> {
    #[serde(borrow)]
    updated_at: Cow<'a, str>,
}

fn corrupt(id: CustomerId, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: format!("customer {id}"),
        reason: reason.to_string(),
    }
}

fn unix_ms_of(id: CustomerId, text: &str) -> Result<u64, StoreError> {
    Timestamp::parse(text)
        .map(|at| at.unix_ms())
        .ok_or_else(|| corrupt(id, "updated_at is not a timestamp"))
}

/// Whether the customer `json` matches every filter that reads fields.
fn matches(id: CustomerId, json: &[u8], filters: &Filters) -> Result<bool, StoreError> {
    if !filters.reads_fields() {
        return Ok(true);
    }
    let fields: Filterable = serde_json::from_slice(json).map_err(|e| corrupt(id, e))?;
    let status = filters
        .status
        .is_none_or(|status| status.as_str() == fields.status);
    let country = filters.country.is_none_or(|country| {
        fields
            .address
            .as_ref()
            .is_some_and(|address| address.country == country.as_str())
    });
    let custom_data = filters.custom_data.iter().all(|(key, text)| {
        let value = fields.custom_data.as_ref().and_then(|data| data.get(key));
        value
            .and_then(customers_shared::domain::fields::scalar_text)
            .as_deref()
            == Some(text.as_str())
    });
    let updated = filters.updated.is_everything()
        || filters
            .updated
            .contains(unix_ms_of(id, &fields.updated_at)?);
    Ok(status && country && custom_data && updated)
}

/// A page being filled: items up to `limit`, within `max_bytes` (at least one).
pub(super) struct Filling<T> {
    pub(super) items: Vec<T>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
}

impl<T: AsRef<[u8]>> Filling<T> {
    pub(super) fn new(limit: usize, max_bytes: usize) -> Self {
        Self {
            items: Vec::new(),
            bytes: 0,
            limit,
            max_bytes,
        }
    }

    fn is_full(&self) -> bool {
        self.items.len() >= self.limit
    }

    /// Adds `item` unless the page is full or it would pass the byte bound: `false` then
    /// (there is more).
    pub(super) fn add(&mut self, item: T) -> bool {
        let bytes = self.bytes + item.as_ref().len() + 1;
        if self.is_full() || (bytes > self.max_bytes && !self.items.is_empty()) {
            return false;
        }
        self.bytes = bytes;
        self.items.push(item);
        true
    }
}

impl Store {
    /// A newest-first page of live customers matching the query, and whether more lie
    /// beyond it in the cursor's direction.
    pub(crate) fn list(
        &self,
        query: &ListQuery,
        max_bytes: usize,
    ) -> Result<(Vec<sled::IVec>, bool), StoreError> {
        let (low, high) = id_bounds(query);
        let mut page = Filling::new(query.limit, max_bytes);
        if let Some(email_key) = &query.email_key {
            // One customer at most: its index entry, then the other filters.
            let Some(id) = self.email_owner(email_key)? else {
                return Ok((Vec::new(), false));
            };
            if (low..=high).contains(&id_number(id))
                && let Some(json) = self.live_json(id)?
                && matches(id, &json, &query.filters)?
            {
                page.add(json);
            }
            return Ok((page.items, false));
        }
        let upwards = matches!(query.cursor, Some(Cursor::EndingBefore(_)));
        let mut prefixes = filter_prefixes(&query.filters);
        if prefixes.len() > 1 {
            // The fewest entries drive the walk; the next fewest is probed first.
            let mut counted = Vec::with_capacity(prefixes.len());
            for prefix in prefixes {
                counted.push((
                    self.attribute_counts.count(&self.attributes, &prefix)?,
                    prefix,
                ));
            }
            counted.sort_unstable();
            prefixes = counted.into_iter().map(|(_, prefix)| prefix).collect();
            // Of the probed ones, those answered from memory first: a tenth of a tree lookup.
            prefixes[1..].sort_by_key(|prefix| held_in_memory(prefix).is_none());
        }
        let mut has_more = false;
        // The indexes answer status, country and custom_data (and without those filters there
        // is nothing of them to check): only `updated` is left to read from the customer.
        let unindexed = Filters {
            updated: query.filters.updated,
            ..Filters::default()
        };
        let mut take = |id: CustomerId, json: sled::IVec| -> Result<bool, StoreError> {
            if !matches(id, &json, &unindexed)? {
                return Ok(true);
            }
            if !page.add(json) {
                has_more = true;
                return Ok(false);
            }
            Ok(true)
        };
        if low <= high && prefixes.is_empty() {
            let range = self
                .records
                .range(id_of(low).to_bytes()..=id_of(high).to_bytes());
            let mut entries: Box<dyn Iterator<Item = _>> = if upwards {
                Box::new(range)
            } else {
                Box::new(range.rev())
            };
            for entry in &mut entries {
                let (key, stored) = entry?;
                if let Some(json) = CustomerRecord::json_of(&stored)
                    && !take(super::reads::id_from_bytes(&key), json)?
                {
                    break;
                }
            }
        } else if low <= high {
            // The first filter's entries drive the walk; each of its customers is probed in
            // the others' (a point lookup each), then read.
            let (driver, others) = prefixes.split_first().expect("some prefixes");
            let range = self
                .attributes
                .range(attribute_key(driver, id_of(low))..=attribute_key(driver, id_of(high)));
            let mut keys: Box<dyn Iterator<Item = _>> = if upwards {
                Box::new(range.keys())
            } else {
                Box::new(range.keys().rev())
            };
            for key in &mut keys {
                let Some(id) = attribute_id(&key?) else {
                    continue;
                };
                let mut held_by_all = true;
                for other in others {
                    if !self.holds_attribute(other, id)? {
                        held_by_all = false;
                        break;
                    }
                }
                if !held_by_all {
                    continue;
                }
                // An index entry is only ever written for a live customer, and removed with it.
                let Some(json) = self.live_json(id)? else {
                    continue;
                };
                if !take(id, json)? {
                    break;
                }
            }
        }
        let mut items = page.items;
        if upwards {
            items.reverse();
        }
        Ok((items, has_more))
    }

    /// Whether live customer `id` holds the `attributes` entry under `prefix`: from the text
    /// index for a status or a country, else one tree lookup.
    pub(super) fn holds_attribute(
        &self,
        prefix: &[u8],
        id: CustomerId,
    ) -> Result<bool, StoreError> {
        Ok(match held_in_memory(prefix) {
            Some(value) => self.text.holds(id, value),
            None => self.attributes.contains_key(attribute_key(prefix, id))?,
        })
    }

    /// The JSON of customer `id` if it is live.
    pub(super) fn live_json(&self, id: CustomerId) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self
            .records
            .get(id.to_bytes())?
            .as_ref()
            .and_then(CustomerRecord::json_of))
    }

    /// A change-feed page: the changes after the query's start and before `frontier` (ms),
    /// oldest first, that match its filters.
    pub(crate) fn feed(
        &self,
        query: &ListQuery,
        frontier: u64,
        max_bytes: usize,
    ) -> Result<FeedPage, StoreError> {
        let start = query.feed_start();
        let end_ms = frontier.min(query.filters.updated.max.saturating_add(1));
        let mut next = start;
        let mut page = Filling::new(query.limit, max_bytes);
        let mut has_more = false;
        let email_owner = match &query.email_key {
            Some(email_key) => Some(self.email_owner(email_key)?),
            None => None,
        };
        let from = [&start.at_ms.to_be_bytes()[..], &start.id].concat();
        let to = end_ms.to_be_bytes();
        for key in self
            .changes
            .range::<&[u8], _>((Bound::Excluded(&from[..]), Bound::Excluded(&to[..])))
            .keys()
        {
            let key = key?;
            let Some((at, id)) = parse_change_key(&key) else {
                continue;
            };
            if !query.filters.created.contains(id.unix_ms()) {
                continue;
            }
            let Some(stored) = self.records.get(id.to_bytes())? else {
                continue;
            };
            let item = match CustomerRecord::decode(&stored).map_err(|r| corrupt(id, r))? {
                CustomerRecord::Deleted { deleted_at_ms } => {
                    if !query.include_deleted || deleted_at_ms != at {
                        continue;
                    }
                    Bytes::from(deleted_data(id, Timestamp::from_unix_ms(deleted_at_ms)))
                }
                CustomerRecord::Live(live) => {
                    if email_owner.is_some_and(|owner| owner != Some(id)) {
                        continue;
                    }
                    let changed_at = match live.version {
                        1 => id.unix_ms(),
                        _ => {
                            let fields: UpdatedOnly =
                                serde_json::from_slice(&live.json).map_err(|e| corrupt(id, e))?;
                            unix_ms_of(id, &fields.updated_at)?
                        }
                    };
                    if changed_at != at || !matches(id, &live.json, &query.filters)? {
                        continue;
                    }
                    live.json
                }
            };
            if !page.add(item) {
                has_more = true;
                break;
            }
            next = FeedPosition::of(at, id);
        }
        Ok(FeedPage {
            items: page.items,
            has_more,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::indexes::change_key;
    use crate::storage::journal::{Batch, TreeId};
    use crate::storage::store::{customer_json, stage_customer};
    use customers_shared::wire::list::Order;

    /// A store holding `n` customers a millisecond apart: customer `i` has status
    /// `inactive` when `i % 3 == 0`, country TZ when `i` is even (KE otherwise), and
    /// `custom_data.tier` gold when `i % 5 == 0`.
    fn store_of(n: usize) -> (tempfile::TempDir, Store, Vec<CustomerId>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let ids = crate::storage::store::ascending_ids(n);
        let mut batch = Batch::default();
        for (i, id) in ids.iter().enumerate() {
            let status = if i % 3 == 0 { "inactive" } else { "active" };
            let country = if i % 2 == 0 { "TZ" } else { "KE" };
            let tier = if i % 5 == 0 { "gold" } else { "silver" };
            let custom_data = format!(r#"{{"tier":"{tier}","n":{i}}}"#);
            let email = format!("c{i}@x.com");
            let json = customer_json(*id, &email, status, country, &custom_data);
            stage_customer(&mut batch, &json);
        }
        store.apply(batch.puts()).unwrap();
        (dir, store, ids)
    }

    fn numbers(page: &[impl AsRef<[u8]>]) -> Vec<u64> {
        page.iter()
            .map(|json| {
                let value: Value = serde_json::from_slice(json.as_ref()).unwrap();
                value["custom_data"]["n"].as_u64().unwrap()
            })
            .collect()
    }

    fn query(json: &str) -> ListQuery {
        ListQuery::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn lists_newest_first_with_cursors_and_email_lookup() {
        let (_dir, store, ids) = store_of(25);
        let list = |json: &str| store.list(&query(json), usize::MAX).unwrap();
        let (first, more) = list("{}");
        assert!(more);
        assert_eq!(numbers(&first)[..2], [24, 23]);
        let (second, more) = list(&format!(r#"{{"starting_after":"{}"}}"#, ids[15]));
        assert!(more);
        assert_eq!(numbers(&second)[0], 14);
        let (last, more) = list(&format!(r#"{{"starting_after":"{}"}}"#, ids[5]));
        assert!(!more);
        assert_eq!(numbers(&last), [4, 3, 2, 1, 0]);
        let (previous, more) = list(&format!(r#"{{"ending_before":"{}","limit":3}}"#, ids[10]));
        assert!(more, "c14 and newer lie beyond");
        assert_eq!(numbers(&previous), [13, 12, 11]);

        assert_eq!(numbers(&list(r#"{"email":"C7@x.com"}"#).0), [7]);
        let after_7 = format!(r#"{{"email":"c7@x.com","starting_after":"{}"}}"#, ids[7]);
        assert!(list(&after_7).0.is_empty());
        assert!(list(r#"{"email":"nobody@x.com"}"#).0.is_empty());
        assert!(
            list(r#"{"email":"c7@x.com","status":"inactive"}"#)
                .0
                .is_empty()
        );

        // A byte budget of about three customers: the page stops there, with has_more, in
        // either direction, and never comes back empty.
        let three = first[..3].iter().map(|json| json.len() + 1).sum();
        let (short, more) = store.list(&query("{}"), three).unwrap();
        assert_eq!((numbers(&short), more), (vec![24, 23, 22], true));
        let before_10 = query(&format!(r#"{{"ending_before":"{}"}}"#, ids[10]));
        let (newer, more) = store.list(&before_10, three).unwrap();
        assert_eq!((numbers(&newer), more), (vec![13, 12, 11], true));
        let (one, _) = store.list(&query("{}"), 1).unwrap();
        assert_eq!(one.len(), 1, "at least one customer, whatever the budget");
    }

    #[test]
    fn filters_combine_through_the_indexes_with_exact_has_more() {
        let (_dir, store, ids) = store_of(60);
        let expected = |keep: &dyn Fn(u64) -> bool| -> Vec<u64> {
            (0..60).rev().filter(|&i| keep(i)).collect()
        };
        let all = |json: &str| {
            // Page through with limit 4 to exercise the cursor and has_more at every step.
            let mut found: Vec<u64> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = query(json);
                q.limit = 4;
                if let Some(after) = &cursor {
                    q.cursor = Some(Cursor::StartingAfter(after.parse().unwrap()));
                }
                let (page, more) = store.list(&q, usize::MAX).unwrap();
                let n = numbers(&page);
                found.extend(&n);
                if !more {
                    break;
                }
                cursor = Some(ids[*n.last().unwrap() as usize].to_string());
            }
            found
        };
        /// A description, the query, and which customers (by number) it finds.
        type Case<'a> = (&'a str, &'a str, &'a dyn Fn(u64) -> bool);
        let cases: [Case; 7] = [
            ("status", r#"{"status":"inactive"}"#, &|i| i % 3 == 0),
            ("country", r#"{"country":"Kenya"}"#, &|i| i % 2 == 1),
            (
                "status and country",
                r#"{"status":"inactive","country":"TZ"}"#,
                &|i| i % 6 == 0,
            ),
            (
                "custom_data and status",
                r#"{"custom_data[tier]":"gold","status":"active"}"#,
                &|i| i % 5 == 0 && i % 3 != 0,
            ),
            (
                "a number given as text",
                r#"{"custom_data[n]":"17"}"#,
                &|i| i == 17,
            ),
            ("nobody", r#"{"custom_data[tier]":"platinum"}"#, &|_| false),
            (
                "every filter",
                r#"{"custom_data[tier]":"gold","country":"TZ","status":"inactive"}"#,
                &|i| i % 30 == 0,
            ),
        ];
        for (description, json, keep) in cases {
            assert_eq!(all(json), expected(keep), "{description}");
        }
        // created[…] bounds the ids: customer i was created at 1_700_000_000_000 + i ms.
        let created = r#"{"created[gte]":"2023-11-14T22:13:20.010Z","created[lt]":"2023-11-14T22:13:20.020Z","status":"active"}"#;
        assert_eq!(
            all(created),
            expected(&|i| (10..20).contains(&i) && i % 3 != 0)
        );
        // ending_before with a filter: the newer matches, oldest of them last.
        let newer = query(&format!(
            r#"{{"ending_before":"{}","status":"inactive","limit":2}}"#,
            ids[30]
        ));
        let (page, more) = store.list(&newer, usize::MAX).unwrap();
        assert_eq!((numbers(&page), more), (vec![36, 33], true));
    }

    #[test]
    fn the_feed_pages_oldest_change_first_up_to_the_frontier() {
        let (_dir, store, ids) = store_of(10);
        let feed =
            |json: &str, frontier: u64| store.feed(&query(json), frontier, usize::MAX).unwrap();
        let mut q = query(r#"{"order":"updated_asc","limit":4}"#);
        assert_eq!(q.order, Order::UpdatedAsc);
        let everything = u64::MAX;
        let first = store.feed(&q, everything, usize::MAX).unwrap();
        assert_eq!(
            (numbers(&first.items), first.has_more),
            (vec![0, 1, 2, 3], true)
        );
        assert_eq!(first.next, FeedPosition::of(ids[3].unix_ms(), ids[3]));
        q.feed_cursor = Some(first.next);
        let second = store.feed(&q, everything, usize::MAX).unwrap();
        assert_eq!(numbers(&second.items), [4, 5, 6, 7]);

        // Nothing at or past the frontier shows; the cursor stays where it was.
        let frontier = ids[2].unix_ms();
        let early = feed(r#"{"order":"updated_asc"}"#, frontier);
        assert_eq!((numbers(&early.items), early.has_more), (vec![0, 1], false));
        q.feed_cursor = Some(early.next);
        let none = store.feed(&q, frontier, usize::MAX).unwrap();
        assert!(none.items.is_empty());
        assert_eq!(none.next, early.next);

        // Filters and the updated range apply; a deleted customer shows only as a tombstone
        // placed at its deletion time, and only with include_deleted.
        let mut batch = Batch::default();
        let deleted_at = ids[9].unix_ms() + 100;
        batch.remove(TreeId::Changes, &change_key(ids[4].unix_ms(), ids[4]));
        batch.put(TreeId::Changes, &change_key(deleted_at, ids[4]), &[]);
        batch.put(
            TreeId::Customers,
            &ids[4].to_bytes(),
            &CustomerRecord::tombstone(deleted_at),
        );
        store.apply(batch.puts()).unwrap();
        let active = feed(r#"{"order":"updated_asc","status":"active"}"#, everything);
        assert_eq!(numbers(&active.items), [1, 2, 5, 7, 8]);
        let since = format!(
            r#"{{"order":"updated_asc","updated[gte]":{},"include_deleted":true}}"#,
            ids[8].unix_ms() / 1000
        );
        let with_tombstone = feed(&since, everything);
        let last: Value = serde_json::from_slice(with_tombstone.items.last().unwrap()).unwrap();
        assert_eq!(last["id"], ids[4].to_string());
        assert_eq!(last["deleted"], true);
        assert_eq!(
            last["deleted_at"],
            Timestamp::from_unix_ms(deleted_at).to_string()
        );
        let without = feed(r#"{"order":"updated_asc"}"#, everything);
        assert!(!numbers(&without.items).contains(&4));
    }
}
