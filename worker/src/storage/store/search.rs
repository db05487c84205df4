//! Search pages: a parsed query (`shared::wire::search`) answered from the indexes as they
//! stand, with its exact `total_count`, newest first.
//!
//! Each clause becomes a [`Check`]: text clauses (`name`, `email`, `phone`, `phone:null`)
//! are looked up in the in-memory text index once, up front, into a set; `status`, `country`
//! and `custom_data` probe the `attributes` tree; `created` is read from the id; `updated` and
//! the other `:null` clauses from the customer's JSON. The candidates come from one source:
//!
//! * joined with `AND`: the smallest text set, else the rarest `attributes` range, else the
//!   `created` range of ids, else every customer; each candidate is checked against the
//!   other clauses;
//! * joined with `OR`: the union of every clause's customers when each has an index, else
//!   every customer, checked against each clause in turn.
//!
//! A query that only negates, or only asks `updated` or `:null` of unindexed fields, reads
//! every customer (docs/API.md says so). Every match is collected (the count needs them),
//! sorted newest first, and the page is read from the first one after `page`, within the
//! byte bound.

use std::collections::HashSet;

use customers_shared::CustomerId;
use customers_shared::wire::search::{
    Clause, Comparison, Join, OptionalField, SearchRequest, Test, TimeField,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::storage::customer_record::CustomerRecord;
use crate::storage::indexes::{
    attribute_id, attribute_key, country_prefix, custom_data_prefix, rarest_first, status_prefix,
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

/// How one clause is decided for a customer.
enum Check {
    /// Among the customers the text index found.
    Among(HashSet<CustomerId>),
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
    fn check_of(&self, clause: &Clause) -> Check {
        match &clause.test {
            Test::Equals { field, value } => Check::Among(
                self.text
                    .find(*field, &searched_text(*field, value), true)
                    .into_iter()
                    .collect(),
            ),
            Test::Contains { field, value } => Check::Among(
                self.text
                    .find(*field, &searched_text(*field, value), false)
                    .into_iter()
                    .collect(),
            ),
            Test::Missing(OptionalField::Phone) => Check::Among(
                self.text
                    .find(customers_shared::wire::search::TextField::Phone, "", true)
                    .into_iter()
                    .collect(),
            ),
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
        }
    }

    /// The page of `request`, at most `max_bytes` of customers (at least one).
    pub(crate) fn search(
        &self,
        request: &SearchRequest,
        max_bytes: usize,
    ) -> Result<SearchPage, StoreError> {
        let checks: Vec<(bool, Check)> = request
            .query
            .clauses
            .iter()
            .map(|clause| (clause.negated, self.check_of(clause)))
            .collect();
        let mut matched = match request.query.join {
            Join::And => self.all_of(&checks)?,
            Join::Or => self.any_of(&checks)?,
        };
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched.dedup();
        let total_count = matched.len();
        let mut page = Filling::new(request.limit, max_bytes);
        let mut next_page = None;
        let mut last = None;
        for id in matched
            .into_iter()
            .filter(|id| request.after.is_none_or(|after| *id < after))
        {
            let Some(json) = self.live_json(id)? else {
                continue;
            };
            if !page.add(json) {
                next_page = last;
                break;
            }
            last = Some(id);
        }
        Ok(SearchPage {
            items: page.items,
            next_page,
            total_count,
        })
    }

    /// The customers every check holds for.
    fn all_of(&self, checks: &[(bool, Check)]) -> Result<Vec<CustomerId>, StoreError> {
        let smallest_set = checks
            .iter()
            .enumerate()
            .filter_map(|(i, check)| match check {
                (false, Check::Among(set)) => Some((i, set.len())),
                _ => None,
            })
            .min_by_key(|&(_, len)| len);
        let rarest_attribute = checks
            .iter()
            .enumerate()
            .filter_map(|(i, check)| match check {
                (false, Check::Attribute(prefix)) => Some((i, rarest_first(prefix))),
                _ => None,
            })
            .min_by_key(|&(_, rank)| rank);
        let created = checks
            .iter()
            .enumerate()
            .find_map(|(i, check)| match check {
                (false, Check::Created(low, high)) => Some((i, *low, *high)),
                _ => None,
            });
        let mut matched = Vec::new();
        let mut consider = |driver: Option<usize>, id: CustomerId, json: Option<&[u8]>| {
            let others = checks
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != driver)
                .map(|(_, check)| check);
            if self.holds_all(others, id, json)? {
                matched.push(id);
            }
            Ok::<_, StoreError>(())
        };
        if let Some((driver, _)) = smallest_set {
            let (_, Check::Among(set)) = &checks[driver] else {
                unreachable!("a set was chosen")
            };
            for &id in set {
                consider(Some(driver), id, None)?;
            }
        } else if let Some((driver, _)) = rarest_attribute {
            let (_, Check::Attribute(prefix)) = &checks[driver] else {
                unreachable!("an attribute was chosen")
            };
            for key in self.attributes.scan_prefix(prefix).keys() {
                if let Some(id) = attribute_id(&key?) {
                    consider(Some(driver), id, None)?;
                }
            }
        } else {
            let driver = created.map(|(i, _, _)| i);
            let (low, high) = created.map_or((0, u64::MAX), |(_, low, high)| (low, high));
            for entry in self.records_created(low, high) {
                let (key, stored) = entry?;
                if let Some(json) = CustomerRecord::json_in(&stored) {
                    consider(driver, id_from_bytes(&key), Some(json))?;
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
                Check::Among(set) => matched.extend(set),
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
                Check::Among(set) => set.contains(&id),
                Check::Attribute(prefix) => {
                    self.attributes.contains_key(attribute_key(prefix, id))?
                }
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
