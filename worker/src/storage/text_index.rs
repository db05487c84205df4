//! The search's text index: every live customer's name, email and phone, lower-cased (the
//! phone as its digits), held in memory so that a substring is found by one SIMD scan
//! (`memchr::memmem`) over each field's bytes rather than by a trigram index on disk (which
//! would add dozens of sled entries to every create) or by reading every customer.
//!
//! Layout: [`SHARDS`] shards by id, each behind its own mutex (a search holds one shard at a
//! time, so the committer's updates never wait behind a whole scan). A shard holds its ids
//! and, per field, a column: the texts one after another, each followed by `\n`, after a
//! leading `\n` (no field contains a newline: the field rules refuse control characters), and
//! where each text ends. So `\ntext` ending at an entry's end finds a whole field, and the
//! hits of one pass over a column map to their entries in order.
//!
//! The store keeps it in step with the `customers` tree in [`crate::storage::store::Store::apply`]
//! (every write, replay and standby apply goes through it), before the committer answers, so
//! a search sees every acknowledged write; it is built from the tree when the store opens.

use std::sync::Mutex;

use customers_shared::CustomerId;
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

    fn push(&mut self, text: &str) {
        if self.bytes.is_empty() {
            self.bytes.push(b'\n');
        }
        grow_by_an_eighth(&mut self.bytes, text.len() + 1);
        grow_by_an_eighth(&mut self.ends, 1);
        self.bytes.extend_from_slice(text.as_bytes());
        self.ends.push(self.bytes.len() as u32);
        self.bytes.push(b'\n');
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
    ids: Vec<CustomerId>,
    /// Each entry's status, so a substring with `status:` is filtered inside the scan.
    statuses: Vec<Status>,
    columns: [Column; 3],
}

impl Shard {
    fn remove(&mut self, id: CustomerId) {
        if let Some(entry) = self.ids.iter().position(|&held| held == id) {
            self.ids.remove(entry);
            self.statuses.remove(entry);
            for column in &mut self.columns {
                column.remove(entry);
            }
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
        let mut shard = self.shard(id);
        shard.remove(id);
        if let Some(texts) = texts {
            grow_by_an_eighth(&mut shard.ids, 1);
            grow_by_an_eighth(&mut shard.statuses, 1);
            shard.ids.push(id);
            shard.statuses.push(texts.status);
            for field in FIELDS {
                shard.columns[column_of(field)].push(texts.field(field));
            }
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
                    .map(|&entry| shard.ids[entry]),
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
