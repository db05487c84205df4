//! The search's text index: every live customer's name, email and phone, lower-cased (the
//! phone as its digits), held in memory so that a substring is found by one SIMD scan
//! (`memchr::memmem`) over each field's bytes rather than by a trigram index on disk (which
//! would add dozens of sled entries to every create) or by reading every customer. Beside the
//! texts it keeps each customer's status and country (three bytes), so that a combined filter
//! or search probes those from memory ([`TextIndex::holds`]) instead of one `attributes`
//! lookup in sled per candidate.
//!
//! Layout: [`SHARDS`] shards by id, each behind its own mutex (a search holds one shard at a
//! time, so the committer's updates never wait behind a whole scan). A shard holds its ids in
//! ascending order (a probe is a binary search), and per field a column: the texts one after
//! another in the ids' order, each followed by `\n`, after a leading `\n` (no field contains a
//! newline: the field rules refuse control characters), and where each text ends. So `\ntext`
//! ending at an entry's end finds a whole field, and the hits of one pass over a column map to
//! their entries in order.
//!
//! The store keeps it in step with the `customers` tree in [`crate::storage::store::Store::apply`]
//! (every write, replay and standby apply goes through it), before the committer answers, so
//! a search sees every acknowledged write; it is built from the tree when the store opens.

use std::sync::Mutex;

use customers_shared::CustomerId;
use customers_shared::domain::country::CountryCode;
use customers_shared::domain::fields::Status;
use customers_shared::wire::search::TextField;
use memchr::memmem::Finder;
use serde::Deserialize;

/// Shards: a thousand customers each at a million, so moving one entry costs microseconds.
const SHARDS: usize = 1024;

/// The indexed texts of one customer, as a search compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Texts {
    name: String,
    email: String,
    /// Digits only; empty when the customer has no phone.
    phone: String,
    status: Status,
    country: Country,
}

/// A customer's country as the index keeps it: the alpha-2 code's two bytes, or none.
type Country = Option<[u8; 2]>;

fn country_bytes(country: &CountryCode) -> Country {
    country.as_str().as_bytes().try_into().ok()
}

/// A filter value the index answers for any customer without reading the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Status(Status),
    Country(CountryCode),
}

#[derive(Deserialize)]
struct StoredAddress<'a> {
    #[serde(borrow)]
    country: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    email: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    phone: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    address: Option<StoredAddress<'a>>,
}

impl Texts {
    /// The texts of a stored customer's JSON (`None`: not a customer document).
    pub(crate) fn of_json(json: &[u8]) -> Option<Self> {
        let stored: Stored = serde_json::from_slice(json).ok()?;
        Some(Self {
            name: stored.name.to_lowercase(),
            email: stored.email.to_lowercase(),
            phone: stored
                .phone
                .as_deref()
                .map(phone_digits)
                .unwrap_or_default(),
            status: Status::parse(&stored.status).ok()?,
            // A country this build does not know leaves the customer searchable, only not
            // found by country.
            country: stored
                .address
                .and_then(|address| CountryCode::parse(&address.country).ok())
                .and_then(|country| country_bytes(&country)),
        })
    }

    fn field(&self, field: TextField) -> &str {
        match field {
            TextField::Name => &self.name,
            TextField::Email => &self.email,
            TextField::Phone => &self.phone,
        }
    }
}

/// What a search clause looks for in a field, written as the index holds its texts.
pub(crate) fn searched_text(field: TextField, value: &str) -> String {
    match field {
        TextField::Phone => phone_digits(value),
        _ => value.to_lowercase(),
    }
}

/// A phone as its digits: `+255 712-345 678` and `255712345678` are one number.
fn phone_digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

const FIELDS: [TextField; 3] = [TextField::Name, TextField::Email, TextField::Phone];

fn column_of(field: TextField) -> usize {
    match field {
        TextField::Name => 0,
        TextField::Email => 1,
        TextField::Phone => 2,
    }
}

#[derive(Default)]
struct Column {
    /// `\n` then each text followed by `\n`.
    bytes: Vec<u8>,
    /// Where each entry's text ends (the index of its `\n`).
    ends: Vec<u32>,
}

impl Column {
    fn start(&self, entry: usize) -> usize {
        match entry {
            0 => 1,
            _ => self.ends[entry - 1] as usize + 1,
        }
    }

    /// Makes `text` entry `entry`, before the one that had that place (if any).
    fn insert(&mut self, entry: usize, text: &str) {
        if self.bytes.is_empty() {
            self.bytes.push(b'\n');
        }
        grow_by_an_eighth(&mut self.bytes, text.len() + 1);
        grow_by_an_eighth(&mut self.ends, 1);
        let start = self.start(entry);
        self.bytes
            .splice(start..start, text.bytes().chain(std::iter::once(b'\n')));
        self.ends.insert(entry, (start + text.len()) as u32);
        for later in &mut self.ends[entry + 1..] {
            *later += text.len() as u32 + 1;
        }
    }

    /// Makes `text` the text of entry `entry`.
    fn replace(&mut self, entry: usize, text: &str) {
        let (start, end) = (self.start(entry), self.ends[entry] as usize);
        if self.bytes[start..end] == *text.as_bytes() {
            return;
        }
        self.bytes.splice(start..end, text.bytes());
        let new_end = start + text.len();
        let old_end = self.ends[entry];
        for later in &mut self.ends[entry..] {
            *later = *later - old_end + new_end as u32;
        }
    }

    fn remove(&mut self, entry: usize) {
        let (start, end) = (self.start(entry), self.ends[entry] as usize);
        let removed = (end + 1 - start) as u32;
        self.bytes.drain(start..=end);
        self.ends.remove(entry);
        for later in &mut self.ends[entry..] {
            *later -= removed;
        }
    }

    /// The entries where `finder` hits, in entry order, each once: its needle anywhere in the
    /// text, or, `whole`, (`\n` + the text) followed by the text's closing `\n`.
    fn find(&self, finder: &Finder, whole: bool, found: &mut impl FnMut(usize)) {
        let needle_len = finder.needle().len();
        let mut entry = 0;
        let mut last = None;
        for at in finder.find_iter(&self.bytes) {
            // Hits come in order: move to the entry holding this one (a whole match's hit is
            // the `\n` before its text, the end of the entry before).
            let text_at = at + usize::from(whole);
            while entry < self.ends.len() && (self.ends[entry] as usize) < text_at {
                entry += 1;
            }
            if entry == self.ends.len() {
                break;
            }
            let is_hit = !whole || self.ends[entry] as usize == at + needle_len;
            if is_hit && last != Some(entry) {
                found(entry);
                last = Some(entry);
            }
        }
    }
}

/// Makes room for `more` in `vec`, growing it by an eighth rather than doubling: the index
/// is the largest thing the worker holds in memory, and doubling would leave up to half of
/// it unused.
fn grow_by_an_eighth<T>(vec: &mut Vec<T>, more: usize) {
    if vec.capacity() - vec.len() < more {
        vec.reserve_exact(more.max(vec.len() / 8).max(64));
    }
}

#[derive(Default)]
struct Shard {
    /// Each entry's id as a number (ascending: a probe is a binary search of plain integer
    /// compares, where `CustomerId`'s byte-wise order costs a `memcmp` per step).
    ids: Vec<u128>,
    /// Each entry's status, so a substring with `status:` is filtered inside the scan.
    statuses: Vec<Status>,
    countries: Vec<Country>,
    columns: [Column; 3],
}

impl Shard {
    fn set(&mut self, id: CustomerId, texts: Option<&Texts>) {
        let id = id.uuid().as_u128();
        match (self.ids.binary_search(&id), texts) {
            (Ok(entry), Some(texts)) => {
                self.statuses[entry] = texts.status;
                self.countries[entry] = texts.country;
                for field in FIELDS {
                    self.columns[column_of(field)].replace(entry, texts.field(field));
                }
            }
            (Ok(entry), None) => {
                self.ids.remove(entry);
                self.statuses.remove(entry);
                self.countries.remove(entry);
                for column in &mut self.columns {
                    column.remove(entry);
                }
            }
            (Err(entry), Some(texts)) => {
                grow_by_an_eighth(&mut self.ids, 1);
                grow_by_an_eighth(&mut self.statuses, 1);
                grow_by_an_eighth(&mut self.countries, 1);
                self.ids.insert(entry, id);
                self.statuses.insert(entry, texts.status);
                self.countries.insert(entry, texts.country);
                for field in FIELDS {
                    self.columns[column_of(field)].insert(entry, texts.field(field));
                }
            }
            (Err(_), None) => {}
        }
    }
}

/// The in-memory text index (see the module header).
pub(crate) struct TextIndex {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for TextIndex {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl TextIndex {
    fn shard(&self, id: CustomerId) -> std::sync::MutexGuard<'_, Shard> {
        // The low bits of an id are random (UUIDv7), so shards fill evenly.
        let index = (id.uuid().as_u128() as usize) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `id`'s texts, replacing any it had; `None` removes it (deleted or gone).
    pub(crate) fn set(&self, id: CustomerId, texts: Option<&Texts>) {
        self.shard(id).set(id, texts);
    }

    /// Whether live customer `id` has `value` (false for one the index does not hold).
    pub(crate) fn holds(&self, id: CustomerId, value: Held) -> bool {
        let shard = self.shard(id);
        let Ok(entry) = shard.ids.binary_search(&id.uuid().as_u128()) else {
            return false;
        };
        match value {
            Held::Status(status) => shard.statuses[entry] == status,
            Held::Country(country) => shard.countries[entry] == country_bytes(&country),
        }
    }

    /// Forgets everything (before a rebuild).
    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            *shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Shard::default();
        }
    }

    /// The customers whose `field` contains `text` (or, `whole`, equals it), as searched
    /// (see [`searched_text`]), and who have `status` when one is given, in no particular
    /// order.
    pub(crate) fn find(
        &self,
        field: TextField,
        text: &str,
        whole: bool,
        status: Option<Status>,
    ) -> Vec<CustomerId> {
        let mut ids = Vec::new();
        // No indexed text holds a newline, and a needle with one would match across two.
        if text.contains('\n') || (!whole && text.is_empty()) {
            return ids;
        }
        // A whole field is `\n` + the text, closed by the entry's own `\n` (checked per hit,
        // so that one entry's closing `\n`, the next one's opening, serves both).
        let pattern = if whole {
            format!("\n{text}")
        } else {
            text.to_owned()
        };
        let finder = Finder::new(pattern.as_bytes());
        let mut entries = Vec::new();
        for shard in &self.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            entries.clear();
            shard.columns[column_of(field)].find(&finder, whole, &mut |entry| entries.push(entry));
            // The ids in a pass of their own: there the loads are independent and their cache
            // misses overlap, where one load per hit between two scan steps waited for memory
            // each time (two thirds of a substring search's CPU, in the profile).
            ids.extend(
                entries
                    .iter()
                    .filter(|&&entry| status.is_none_or(|status| shard.statuses[entry] == status))
                    .map(|&entry| CustomerId::from_uuid(uuid::Uuid::from_u128(shard.ids[entry]))),
            );
        }
        ids
    }

    /// How many customers it holds (the consistency check compares it with the tree).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .ids
                    .len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(name: &str, email: &str, phone: Option<&str>) -> Texts {
        let phone = phone.map_or("null".to_owned(), |p| format!("{p:?}"));
        let status = if name.starts_with("Grace") {
            "inactive"
        } else {
            "active"
        };
        let json =
            format!(r#"{{"name":{name:?},"email":{email:?},"phone":{phone},"status":"{status}"}}"#);
        Texts::of_json(json.as_bytes()).unwrap()
    }

    fn stored(name: &str, status: &str, country: Option<&str>) -> Texts {
        let address = country.map_or("null".to_owned(), |c| format!(r#"{{"country":"{c}"}}"#));
        let json = format!(
            r#"{{"name":"{name}","email":"{name}@x.com","phone":null,"status":"{status}","address":{address}}}"#
        );
        Texts::of_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_country_this_build_does_not_know_leaves_the_customer_searchable() {
        let index = TextIndex::default();
        let id = crate::storage::store::ascending_ids(1)[0];
        index.set(id, Some(&stored("ada", "inactive", Some("XQ"))));
        assert_eq!(index.find(TextField::Name, "ada", true, None), vec![id]);
        assert!(index.holds(id, Held::Status(Status::Inactive)));
        assert!(!index.holds(id, Held::Country(CountryCode::parse("TZ").unwrap())));
    }

    #[test]
    fn entries_set_in_any_order_and_changed_in_place_stay_findable_and_probeable() {
        let index = TextIndex::default();
        // Enough ids that shards hold several, set in a scrambled order, each changed and
        // some removed, against a plain map of what each should hold.
        let ids = crate::storage::store::ascending_ids(3 * SHARDS);
        let mut expected = std::collections::HashMap::new();
        let (mut state, statuses) = (7u64, ["active", "inactive", "suspended"]);
        let mut next = |bound: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % bound
        };
        for round in 0..3 {
            for _ in 0..ids.len() {
                let id = ids[next(ids.len())];
                let texts = (next(5) != 0).then(|| {
                    let name = format!("n{}{}", round, "x".repeat(next(4)));
                    let country = [None, Some("TZ"), Some("kenya")][next(3)];
                    stored(&name, statuses[next(3)], country)
                });
                index.set(id, texts.as_ref());
                expected.insert(id, texts);
            }
        }
        let live: Vec<_> = expected.iter().filter(|(_, t)| t.is_some()).collect();
        assert_eq!(index.len(), live.len());
        let kenya = CountryCode::parse("KE").unwrap();
        for (&id, texts) in &expected {
            let held = |value| index.holds(id, value);
            match texts {
                Some(texts) => {
                    assert!(held(Held::Status(texts.status)), "its status");
                    assert_eq!(held(Held::Country(kenya)), texts.country == Some(*b"KE"));
                    let found = index.find(TextField::Name, &texts.name, true, None);
                    assert!(found.contains(&id), "its whole name finds it");
                }
                None => {
                    for status in [Status::Active, Status::Inactive, Status::Suspended] {
                        assert!(
                            !held(Held::Status(status)),
                            "a removed customer holds nothing"
                        );
                    }
                }
            }
        }
        for name in ["n2", "n2x", "n2xx", "n2xxx", "n0x"] {
            let mut found = index.find(TextField::Name, name, true, None);
            found.sort();
            let mut wanted: Vec<CustomerId> = live
                .iter()
                .filter(|(_, t)| t.as_ref().is_some_and(|t| t.name == name))
                .map(|(id, _)| **id)
                .collect();
            wanted.sort();
            assert_eq!(found, wanted, "every customer named {name} and only those");
        }
    }

    fn sorted(mut ids: Vec<CustomerId>) -> Vec<CustomerId> {
        ids.sort();
        ids
    }

    #[test]
    fn finds_substrings_and_whole_fields_case_insensitively_and_follows_changes() {
        let index = TextIndex::default();
        let ids = crate::storage::store::ascending_ids(4);
        index.set(
            ids[0],
            Some(&texts(
                "Ada Lovelace",
                "ada@x.com",
                Some("+44 20 7946 0958"),
            )),
        );
        index.set(ids[1], Some(&texts("Adam Smith", "ADAM@y.org", None)));
        index.set(
            ids[2],
            Some(&texts("Grace Hopper", "grace@navy.mil", Some("555-0100"))),
        );
        index.set(ids[3], Some(&texts("Ada", "ada3@x.com", None)));
        let find = |field, text: &str, whole| {
            sorted(index.find(field, &searched_text(field, text), whole, None))
        };
        type Case<'a> = (&'a str, TextField, &'a str, bool, Vec<usize>);
        let cases: Vec<Case> = vec![
            (
                "a substring in two names",
                TextField::Name,
                "ADA",
                false,
                vec![0, 1, 3],
            ),
            (
                "a substring across a space",
                TextField::Name,
                "a lov",
                false,
                vec![0],
            ),
            (
                "a whole name, any case",
                TextField::Name,
                "ada",
                true,
                vec![3],
            ),
            (
                "a whole name with a space",
                TextField::Name,
                "grace hopper",
                true,
                vec![2],
            ),
            (
                "nothing across two entries",
                TextField::Name,
                "lovelace\nadam",
                false,
                vec![],
            ),
            (
                "an email, lower-cased",
                TextField::Email,
                "adam@Y.org",
                true,
                vec![1],
            ),
            (
                "an email's domain",
                TextField::Email,
                "x.com",
                false,
                vec![0, 3],
            ),
            (
                "a phone by its digits",
                TextField::Phone,
                "7946-0958",
                false,
                vec![0],
            ),
            ("a whole phone", TextField::Phone, "5550100", true, vec![2]),
            (
                "no phone: the empty whole field",
                TextField::Phone,
                "",
                true,
                vec![1, 3],
            ),
            (
                "a name's text is not an email's",
                TextField::Email,
                "hopper",
                false,
                vec![],
            ),
        ];
        for (description, field, text, whole, expected) in cases {
            let expected: Vec<_> = expected.into_iter().map(|i| ids[i]).collect();
            assert_eq!(find(field, text, whole), expected, "{description}");
        }
        // Only those with a status, when one is asked for.
        let inactive = index.find(TextField::Email, "@", false, Some(Status::Inactive));
        assert_eq!(inactive, vec![ids[2]]);
        // A change moves the entry; a delete removes it.
        index.set(ids[0], Some(&texts("Ada King", "ada@x.com", None)));
        index.set(ids[3], None);
        assert_eq!(find(TextField::Name, "ada", false), vec![ids[0], ids[1]]);
        assert_eq!(find(TextField::Name, "lovelace", false), vec![]);
        assert_eq!(find(TextField::Phone, "", true), vec![ids[0], ids[1]]);
        assert_eq!(index.len(), 3);
        index.clear();
        assert_eq!(index.len(), 0);
    }
}
