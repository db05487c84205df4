//! Search pages: a parsed query (`shared::wire::search`) answered from the indexes as they
//! stand, with its exact `total_count`, newest first.
//!
//! Each clause becomes a [`Check`]: substring clauses (`name~`, `email~`, `phone~`) and
//! `phone:null` are looked up in the in-memory text index once, up front, into a set (with
//! a positive `status:` of the same `AND` applied inside the scan);
//! `email:` in the email index; `name:`, `phone:`, `status`, `country` and `custom_data`
//! are `attributes` prefixes; `created` is read from the id; `updated` and
//! the other `:null` clauses from the customer's JSON. The candidates come from one source:
//!
//! * joined with `AND`: the smallest text set, else the `attributes` range with the fewest
//!   entries (`attribute_counts`), else the `created` range of ids, else every customer;
//!   each candidate is checked against the other clauses;
//! * joined with `OR`: the union of every clause's customers when each has an index, else
//!   every customer, checked against each clause in turn.
//!
//! A query that only negates, or only asks `updated` or `:null` of unindexed fields, reads
//! every customer (docs/API.md says so). Every match is collected (the count needs them),
//! sorted newest first, and the page is read from the first one after `page`, within the
//! byte bound. One indexed value alone needs neither: its count is kept (or its range
//! small), and the page is read from the newest end of its range.

use std::cell::OnceCell;
use std::collections::HashSet;

use customers_shared::CustomerId;
use customers_shared::domain::fields::Status;
use customers_shared::wire::search::{
    Clause, Comparison, Join, OptionalField, SearchRequest, Test, TextField, TimeField,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::storage::customer_record::CustomerRecord;
use crate::storage::indexes::{
    attribute_id, attribute_key, country_prefix, custom_data_prefix, name_prefix, phone_prefix,
    status_prefix,
};
use crate::storage::store::pages::Filling;
use crate::storage::store::reads::id_from_bytes;
use crate::storage::store::{Store, StoreError};
use crate::storage::text_index::searched_text;

/// A search page: the customers' JSON, the last one's id when more follow, and how many
/// customers match in all.
pub(crate) struct SearchPage {
    pub(crate) items: Vec<sled::IVec>,
    pub(crate) next_page: Option<CustomerId>,
    pub(crate) total_count: usize,
}

/// The customers the text index found for a clause: a list to drive a search, made a set
/// only if another driver's candidates are checked against it.
struct Found {
    ids: Vec<CustomerId>,
    set: OnceCell<HashSet<CustomerId>>,
}

impl Found {
    fn new(ids: Vec<CustomerId>) -> Self {
        Self {
            ids,
            set: OnceCell::new(),
        }
    }

    fn contains(&self, id: CustomerId) -> bool {
        self.set
            .get_or_init(|| self.ids.iter().copied().collect())
            .contains(&id)
    }
}

/// Candidates an `attributes` range may hold at most, per customer of a text set, before the
/// set's customers are probed in it instead: walking a range costs about a quarter of a
/// point probe per entry.
const RANGE_PER_PROBE: usize = 4;

/// How one clause is decided for a customer.
enum Check {
    /// Among the customers the text index found.
    Among(Found),
    /// Holds this `attributes` prefix.
    Attribute(Vec<u8>),
    /// Created within these milliseconds (inclusive).
    Created(u64, u64),
    /// Read from the customer's JSON.
    Record(RecordTest),
}

#[derive(Clone, Copy)]
enum RecordTest {
    /// `updated_at` within these milliseconds (inclusive).
    Updated(u64, u64),
    Missing(OptionalField),
}

/// The fields a record test reads.
#[derive(Deserialize)]
struct Searched {
    updated_at: String,
    address: Option<IgnoredAny>,
    payment_method: Option<IgnoredAny>,
    custom_data: Option<IgnoredAny>,
}

/// The inclusive millisecond range of a time comparison with an instant in nanoseconds.
fn ms_range(comparison: Comparison, nanos: i128) -> (u64, u64) {
    let floor = nanos.div_euclid(1_000_000);
    let ceil = floor + i128::from(nanos.rem_euclid(1_000_000) != 0);
    let (low, high) = match comparison {
        Comparison::Equal => (floor, floor),
        Comparison::Greater => (floor + 1, i128::MAX),
        Comparison::GreaterOrEqual => (ceil, i128::MAX),
        Comparison::Less => (i128::MIN, ceil - 1),
        Comparison::LessOrEqual => (i128::MIN, floor),
    };
    let clamp = |ms: i128| ms.clamp(0, i128::from(u64::MAX)) as u64;
    if high < 0 {
        return (1, 0);
    }
    (clamp(low), clamp(high))
}

impl Store {
    /// The check of `clause`; a substring scan keeps only customers with `status` if given
    /// (a positive `status:` of the same `AND`, answered inside the scan).
    fn check_of(&self, clause: &Clause, status: Option<Status>) -> Result<Check, StoreError> {
        let status = status.filter(|_| !clause.negated);
        Ok(match &clause.test {
            // Equality has indexes of its own: a range walk or a lookup, not a scan.
            Test::Equals {
                field: TextField::Name,
                value,
            } => Check::Attribute(name_prefix(value)),
            Test::Equals {
                field: TextField::Phone,
                value,
            } => Check::Attribute(phone_prefix(value)),
            Test::Equals {
                field: TextField::Email,
                value,
            } => Check::Among(Found::new(
                self.email_owner(&value.to_ascii_lowercase())?
                    .into_iter()
                    .collect(),
            )),
            Test::Contains { field, value } => Check::Among(Found::new(self.text.find(
                *field,
                &searched_text(*field, value),
                false,
                status,
            ))),
            Test::Missing(OptionalField::Phone) => Check::Among(Found::new(self.text.find(
                TextField::Phone,
                "",
                true,
                status,
            ))),
            Test::Missing(field) => Check::Record(RecordTest::Missing(*field)),
            Test::Status(status) => Check::Attribute(status_prefix(*status)),
            Test::Country(country) => Check::Attribute(country_prefix(country)),
            Test::CustomData { key, value } => Check::Attribute(custom_data_prefix(key, value)),
            Test::Time {
                field,
                comparison,
                nanos,
            } => {
                let (low, high) = ms_range(*comparison, *nanos);
                match field {
                    TimeField::Created => Check::Created(low, high),
                    TimeField::Updated => Check::Record(RecordTest::Updated(low, high)),
                }
            }
        })
    }

    /// The page of `request`, at most `max_bytes` of customers (at least one).
    pub(crate) fn search(
        &self,
        request: &SearchRequest,
        max_bytes: usize,
    ) -> Result<SearchPage, StoreError> {
        let clauses = &request.query.clauses;
        let scans = |clause: &Clause| {
            !clause.negated
                && matches!(
                    clause.test,
                    Test::Contains { .. } | Test::Missing(OptionalField::Phone)
                )
        };
        // In an AND, a positive `status:` beside a positive substring is answered inside the
        // scan (the text index holds each customer's status): no sled range to walk.
        let status_in_scan = match request.query.join {
            Join::And if clauses.iter().any(scans) => {
                clauses.iter().find_map(|clause| match clause.test {
                    Test::Status(status) if !clause.negated => Some(status),
                    _ => None,
                })
            }
            _ => None,
        };
        let mut checks: Vec<(bool, Check)> = clauses
            .iter()
            .filter(|clause| {
                clause.negated
                    || !matches!(clause.test, Test::Status(status) if Some(status) == status_in_scan)
            })
            .map(|clause| Ok((clause.negated, self.check_of(clause, status_in_scan)?)))
            .collect::<Result<_, StoreError>>()?;
        // One indexed value alone: its count is kept or small, and its range reads newest
        // first, so no match but the page's is touched.
        if let [(false, Check::Attribute(prefix))] = checks.as_slice() {
            let total_count = self.attribute_counts.count(&self.attributes, prefix)?;
            let below = request
                .after
                .map_or([&prefix[..], &[0xff; 16]].concat(), |after| {
                    attribute_key(prefix, after)
                });
            let ids = self
                .attributes
                .range(prefix.clone()..below)
                .keys()
                .rev()
                .filter_map(|key| key.map(|key| attribute_id(&key)).transpose());
            return self.page_of(
                ids.map(|id| id.map_err(StoreError::from)),
                request,
                max_bytes,
                total_count,
            );
        }
        let mut matched = match (request.query.join, checks.as_mut_slice()) {
            // One substring alone: what the text index found is the answer.
            (_, [(false, Check::Among(found))]) => std::mem::take(&mut found.ids),
            (Join::And, _) => self.all_of(&checks)?,
            (Join::Or, _) => self.any_of(&checks)?,
        };
        if request.query.join == Join::Or {
            // A union: a customer several clauses found is one match.
            matched.sort_unstable();
            matched.dedup();
        }
        let total_count = matched.len();
        if let Some(after) = request.after {
            matched.retain(|id| *id < after);
        }
        // Only the page's newest few need sorting; the rest only if customers deleted
        // meanwhile leave those short.
        let newest_first = |a: &CustomerId, b: &CustomerId| b.cmp(a);
        let mut sorted = (request.limit + 16).min(matched.len());
        if matched.len() > sorted {
            matched.select_nth_unstable_by(sorted, newest_first);
        }
        matched[..sorted].sort_unstable_by(newest_first);
        let mut at = 0;
        let ids = std::iter::from_fn(|| {
            if at == sorted && sorted < matched.len() {
                matched[sorted..].sort_unstable_by(newest_first);
                sorted = matched.len();
            }
            let id = matched.get(at).copied()?;
            at += 1;
            Some(Ok(id))
        });
        self.page_of(ids, request, max_bytes, total_count)
    }

    /// The page of the live customers among `ids` (newest first), up to the request's limit
    /// and `max_bytes`.
    fn page_of(
        &self,
        ids: impl Iterator<Item = Result<CustomerId, StoreError>>,
        request: &SearchRequest,
        max_bytes: usize,
        total_count: usize,
    ) -> Result<SearchPage, StoreError> {
        let mut page = Filling::new(request.limit, max_bytes);
        let (mut last, mut more) = (None, false);
        for id in ids {
            let id = id?;
            let Some(json) = self.live_json(id)? else {
                continue;
            };
            if !page.add(json) {
                more = true;
                break;
            }
            last = Some(id);
        }
        Ok(SearchPage {
            items: page.items,
            next_page: if more { last } else { None },
            total_count,
        })
    }

    /// The customers every check holds for.
    fn all_of(&self, checks: &[(bool, Check)]) -> Result<Vec<CustomerId>, StoreError> {
        let smallest_set = checks
            .iter()
            .enumerate()
            .filter_map(|(i, check)| match check {
                (false, Check::Among(found)) => Some((i, found.ids.len())),
                _ => None,
            })
            .min_by_key(|&(_, len)| len);
        let attributes: Vec<(usize, &[u8])> = checks
            .iter()
            .enumerate()
            .filter_map(|(i, check)| match check {
                (false, Check::Attribute(prefix)) => Some((i, &prefix[..])),
                _ => None,
            })
            .collect();
        // A count only weighs one source against another: a lone attribute needs none (its
        // count is never read), and counting a small range would walk it twice.
        let mut rarest_attribute = None;
        match attributes[..] {
            [(i, _)] if smallest_set.is_none() => rarest_attribute = Some((i, 0)),
            _ => {
                for (i, prefix) in attributes {
                    let count = self.attribute_counts.count(&self.attributes, prefix)?;
                    if rarest_attribute.is_none_or(|(_, fewest)| count < fewest) {
                        rarest_attribute = Some((i, count));
                    }
                }
            }
        }
        let created = checks
            .iter()
            .enumerate()
            .find_map(|(i, check)| match check {
                (false, Check::Created(low, high)) => Some((i, *low, *high)),
                _ => None,
            });
        let mut matched = Vec::new();
        let mut consider = |skip: [Option<usize>; 2], id: CustomerId, json: Option<&[u8]>| {
            let others = checks
                .iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(&Some(*i)))
                .map(|(_, check)| check);
            if self.holds_all(others, id, json)? {
                matched.push(id);
            }
            Ok::<_, StoreError>(())
        };
        let prefix_of = |i: usize| match &checks[i] {
            (_, Check::Attribute(prefix)) => prefix,
            _ => unreachable!("an attribute was chosen"),
        };
        if let Some((driver, len)) = smallest_set {
            let (_, Check::Among(found)) = &checks[driver] else {
                unreachable!("a set was chosen")
            };
            // With an attribute too, its range may be walked against the set more cheaply
            // than each of the set's customers probed in it.
            match rarest_attribute {
                Some((attribute, count)) if count <= len.saturating_mul(RANGE_PER_PROBE) => {
                    for key in self.attributes.scan_prefix(prefix_of(attribute)).keys() {
                        if let Some(id) = attribute_id(&key?).filter(|&id| found.contains(id)) {
                            consider([Some(driver), Some(attribute)], id, None)?;
                        }
                    }
                }
                _ => {
                    for &id in &found.ids {
                        consider([Some(driver), None], id, None)?;
                    }
                }
            }
        } else if let Some((driver, _)) = rarest_attribute {
            for key in self.attributes.scan_prefix(prefix_of(driver)).keys() {
                if let Some(id) = attribute_id(&key?) {
                    consider([Some(driver), None], id, None)?;
                }
            }
        } else {
            let driver = created.map(|(i, _, _)| i);
            let (low, high) = created.map_or((0, u64::MAX), |(_, low, high)| (low, high));
            for entry in self.records_created(low, high) {
                let (key, stored) = entry?;
                if let Some(json) = CustomerRecord::json_in(&stored) {
                    consider([driver, None], id_from_bytes(&key), Some(json))?;
                }
            }
        }
        Ok(matched)
    }

    /// The customers any check holds for.
    fn any_of(&self, checks: &[(bool, Check)]) -> Result<Vec<CustomerId>, StoreError> {
        let indexed = checks
            .iter()
            .all(|(negated, check)| !negated && !matches!(check, Check::Record(_)));
        let mut matched = Vec::new();
        if !indexed {
            for entry in self.records.iter() {
                let (key, stored) = entry?;
                let Some(json) = CustomerRecord::json_in(&stored) else {
                    continue;
                };
                let id = id_from_bytes(&key);
                for check in checks {
                    if self.holds_all(std::iter::once(check), id, Some(json))? {
                        matched.push(id);
                        break;
                    }
                }
            }
            return Ok(matched);
        }
        for (_, check) in checks {
            match check {
                Check::Among(found) => matched.extend(&found.ids),
                Check::Attribute(prefix) => {
                    for key in self.attributes.scan_prefix(prefix).keys() {
                        matched.extend(attribute_id(&key?));
                    }
                }
                Check::Created(low, high) => {
                    for entry in self.records_created(*low, *high) {
                        let (key, stored) = entry?;
                        if CustomerRecord::json_in(&stored).is_some() {
                            matched.push(id_from_bytes(&key));
                        }
                    }
                }
                Check::Record(_) => unreachable!("an OR of indexed clauses only"),
            }
        }
        Ok(matched)
    }

    /// The `customers` entries created within `low..=high` ms (an id starts with its ms).
    fn records_created(
        &self,
        low: u64,
        high: u64,
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> {
        let empty = low > high || low >= 1 << 48;
        let from = (u128::from(low) << 80).to_be_bytes();
        let to = match high.checked_add(1).filter(|end| *end < 1 << 48) {
            Some(end) => ((u128::from(end) << 80) - 1).to_be_bytes(),
            None => [0xff; 16],
        };
        (!empty)
            .then(|| self.records.range(from..=to))
            .into_iter()
            .flatten()
    }

    /// Whether every one of `checks` (each negated as it says) holds for customer `id`,
    /// whose JSON is `json` when the caller has it already.
    fn holds_all<'c>(
        &self,
        checks: impl IntoIterator<Item = &'c (bool, Check)>,
        id: CustomerId,
        json: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let mut fields: Option<Option<Searched>> = None;
        for (negated, check) in checks {
            let holds = match check {
                Check::Among(found) => found.contains(id),
                Check::Attribute(prefix) => self.holds_attribute(prefix, id)?,
                Check::Created(low, high) => (*low..=*high).contains(&id.unix_ms()),
                Check::Record(test) => {
                    if fields.is_none() {
                        fields = Some(self.searched(id, json)?);
                    }
                    // A customer deleted meanwhile matches nothing.
                    let Some(Some(fields)) = &fields else {
                        return Ok(false);
                    };
                    record_holds(*test, fields, id)?
                }
            };
            if holds == *negated {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The fields record tests read, of `json` or else of the stored customer (`None`: not
    /// live).
    fn searched(
        &self,
        id: CustomerId,
        json: Option<&[u8]>,
    ) -> Result<Option<Searched>, StoreError> {
        let stored;
        let json = match json {
            Some(json) => json,
            None => match self.live_json(id)? {
                Some(found) => {
                    stored = found;
                    &stored[..]
                }
                None => return Ok(None),
            },
        };
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                what: format!("customer {id}"),
                reason: e.to_string(),
            })
    }
}

fn record_holds(test: RecordTest, fields: &Searched, id: CustomerId) -> Result<bool, StoreError> {
    Ok(match test {
        RecordTest::Updated(low, high) => {
            let updated = customers_shared::Timestamp::parse(&fields.updated_at)
                .ok_or_else(|| StoreError::Corrupt {
                    what: format!("customer {id}"),
                    reason: "updated_at is not a timestamp".to_owned(),
                })?
                .unix_ms();
            (low..=high).contains(&updated)
        }
        RecordTest::Missing(OptionalField::Address | OptionalField::Country) => {
            fields.address.is_none()
        }
        RecordTest::Missing(OptionalField::PaymentMethod) => fields.payment_method.is_none(),
        RecordTest::Missing(OptionalField::CustomData) => fields.custom_data.is_none(),
        RecordTest::Missing(OptionalField::Phone) => unreachable!("the text index answers it"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::{Batch, TreeId};
    use crate::storage::store::{ascending_ids, customer_json, stage_customer};

    /// 100 customers a millisecond apart: customer `i` is `c{i}@x.com`, `inactive` when
    /// `i % 3 == 0`, in KE when `i` is odd (TZ otherwise).
    fn store_of(n: usize) -> (tempfile::TempDir, Store, Vec<CustomerId>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let ids = ascending_ids(n);
        let mut batch = Batch::default();
        for (i, id) in ids.iter().enumerate() {
            let status = if i % 3 == 0 { "inactive" } else { "active" };
            let country = if i % 2 == 1 { "KE" } else { "TZ" };
            let json = customer_json(*id, &format!("c{i}@x.com"), status, country, "null");
            stage_customer(&mut batch, &json);
        }
        store.apply(batch.puts()).unwrap();
        (dir, store, ids)
    }

    /// Every page of `query` with `limit`: the customers' numbers, newest first, and the
    /// total count of each page.
    fn pages(
        store: &Store,
        query: &str,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut request = SearchRequest::parse(
            serde_json::json!({"query": query, "limit": limit})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let (mut numbers, mut totals) = (Vec::new(), Vec::new());
        loop {
            let page = store.search(&request, max_bytes).unwrap();
            totals.push(page.total_count);
            for json in &page.items {
                let value: serde_json::Value = serde_json::from_slice(json).unwrap();
                let email = value["email"].as_str().unwrap();
                numbers.push(email[1..email.len() - 6].parse().unwrap());
            }
            match page.next_page {
                Some(last) => request.after = Some(last),
                None => return (numbers, totals),
            }
        }
    }

    #[test]
    fn one_large_value_alone_pages_from_its_kept_count_through_deletes() {
        use crate::storage::indexes::attribute_prefixes;
        use crate::storage::store::attribute_counts::LARGE;
        let n = LARGE * 3 / 2 + 10;
        let (_dir, store, ids) = store_of(n);
        let active = |i: usize| !i.is_multiple_of(3);
        assert!(
            (0..n).filter(|&i| active(i)).count() >= LARGE,
            "a kept count"
        );
        let (numbers, totals) = pages(&store, "status:'active'", 100, 1 << 20);
        let expected: Vec<usize> = (0..n).rev().filter(|&i| active(i)).collect();
        assert_eq!(numbers, expected);
        assert!(totals.iter().all(|&total| total == expected.len()));
        // Deleting customers steps the kept count down, as the committer stages it.
        let mut batch = Batch::default();
        for i in [1, 2, 4, n - 1] {
            let json = store.live_json(ids[i]).unwrap().unwrap();
            let customer = customers_shared::Customer::from_stored(&json).unwrap();
            batch.remove(TreeId::Customers, &ids[i].to_bytes());
            for prefix in attribute_prefixes(&customer) {
                batch.remove(TreeId::Attributes, &attribute_key(&prefix, ids[i]));
            }
        }
        store.apply(batch.puts()).unwrap();
        let (numbers, totals) = pages(&store, "status:'active'", 100, 1 << 20);
        let kept: Vec<usize> = expected
            .into_iter()
            .filter(|i| ![1, 2, 4, n - 1].contains(i))
            .collect();
        assert_eq!(numbers, kept);
        assert!(totals.iter().all(|&total| total == kept.len()));
    }

    #[test]
    fn pages_hold_every_match_once_newest_first_with_the_total_on_each() {
        let (_dir, store, ids) = store_of(100);
        let expected = |keep: &dyn Fn(usize) -> bool| -> Vec<usize> {
            (0..100).rev().filter(|&i| keep(i)).collect()
        };
        type Case<'a> = (&'a str, &'a str, usize, &'a dyn Fn(usize) -> bool);
        let cases: [Case; 9] = [
            (
                "a set past the sorted few (limit + 16)",
                "email~'@x.com'",
                7,
                &|_| true,
            ),
            (
                "a set and a status inside its scan",
                "email~'1@x' AND status:'inactive'",
                3,
                &|i| i % 10 == 1 && i % 3 == 0,
            ),
            (
                "a set and a range walked together",
                "email~'@x.' AND country:'KE'",
                8,
                &|i| i % 2 == 1,
            ),
            (
                "a set probed in a larger range",
                "email~'1@x' AND country:'KE'",
                3,
                &|i| i % 10 == 1,
            ),
            (
                "a negated set beside a status",
                "-email~'1@x' AND status:'inactive'",
                4,
                &|i| i % 10 != 1 && i % 3 == 0,
            ),
            ("a range alone", "country:'KE'", 30, &|i| i % 2 == 1),
            (
                "OR, once each",
                "status:'inactive' OR country:'KE'",
                9,
                &|i| i % 3 == 0 || i % 2 == 1,
            ),
            (
                "a negation over every customer",
                "-status:'active'",
                100,
                &|i| i % 3 == 0,
            ),
            ("an exact email", "email:'C42@X.COM'", 1, &|i| i == 42),
        ];
        for (description, query, limit, keep) in cases {
            let want = expected(keep);
            let (numbers, totals) = pages(&store, query, limit, usize::MAX);
            assert_eq!(numbers, want, "{description}");
            assert!(
                totals.iter().all(|&t| t == want.len()),
                "{description}: {totals:?}"
            );
        }
        // A byte budget of about two customers: pages of two, every match still once.
        let two = 2 * (store.live_json(ids[0]).unwrap().unwrap().len() + 1);
        let (numbers, _) = pages(&store, "country:'TZ'", 10, two);
        assert_eq!(numbers, expected(&|i| i % 2 == 0));

        // A customer deleted behind the index is skipped, and the page still fills.
        let mut batch = Batch::default();
        batch.put(
            TreeId::Customers,
            &ids[99].to_bytes(),
            &CustomerRecord::tombstone(1),
        );
        store.apply(batch.puts()).unwrap();
        let (numbers, _) = pages(&store, "status:'inactive'", 5, usize::MAX);
        assert_eq!(numbers, expected(&|i| i % 3 == 0 && i != 99));
    }

    #[test]
    fn time_comparisons_become_inclusive_millisecond_ranges() {
        let ms = 1_000_000i128;
        for (description, comparison, nanos, expected) in [
            ("equal", Comparison::Equal, 5 * ms + 1, (5, 5)),
            ("greater", Comparison::Greater, 5 * ms, (6, u64::MAX)),
            (
                "greater or equal, inside a ms",
                Comparison::GreaterOrEqual,
                5 * ms + 1,
                (6, u64::MAX),
            ),
            (
                "greater or equal, on a ms",
                Comparison::GreaterOrEqual,
                5 * ms,
                (5, u64::MAX),
            ),
            ("less, inside a ms", Comparison::Less, 5 * ms + 1, (0, 5)),
            ("less, on a ms", Comparison::Less, 5 * ms, (0, 4)),
            ("less or equal", Comparison::LessOrEqual, 5 * ms + 1, (0, 5)),
            ("before the epoch: nothing", Comparison::Less, -ms, (1, 0)),
        ] {
            assert_eq!(ms_range(comparison, nanos), expected, "{description}");
        }
    }
}
