//! The committer's memory of which emails are taken: a scalable Bloom filter of every stored
//! email key. Uniqueness is still decided by the email index; the filter only says when
//! asking the index is unnecessary. An email the filter has not seen is certainly new (the
//! common case, which then costs no index read); one it may have seen (a real duplicate, or
//! a false positive, under 1 % of new emails) is confirmed in the index. Built from the
//! index when the worker starts (about half a second per million customers), then kept up
//! to date by the committer, the only writer; one to three bytes per email (a 64-bit hash
//! set took twelve, and ~30 MB more RSS at a million customers).
//!
//! Scalable (Almeida et al., 2007): when the newest filter is full, a new one twice its size
//! with half its false-positive rate is added, so the total rate stays under twice the first
//! one's whatever the number of emails, and nothing needs rebuilding.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use crate::storage::journal::TreeId;
use crate::storage::store::{Store, StoreError};

/// False-positive rate of the first filter; the whole stays under twice this.
const FIRST_FALSE_POSITIVE_RATE: f64 = 0.005;
/// Emails the first filter is sized for, at least.
const FIRST_CAPACITY: usize = 1 << 16;

pub(crate) struct KnownEmails {
    filters: Vec<Bloom>,
    len: usize,
}

impl KnownEmails {
    /// Reads every key of the email index.
    pub(crate) fn load(store: &Store) -> Result<Self, StoreError> {
        let emails = store.tree(TreeId::Emails);
        let mut known = Self::with_capacity(emails.len());
        for key in emails.iter().keys() {
            known.insert_hash(hash(&key?));
        }
        Ok(known)
    }

    /// Room for `expected` emails in the first filter.
    fn with_capacity(expected: usize) -> Self {
        let first = Bloom::new(
            (expected * 2).max(FIRST_CAPACITY),
            FIRST_FALSE_POSITIVE_RATE,
        );
        Self {
            filters: vec![first],
            len: 0,
        }
    }

    /// Whether `email_key` may be taken: `false` means certainly not.
    pub(crate) fn may_contain(&self, email_key: &str) -> bool {
        let hash = hash(email_key.as_bytes());
        self.filters.iter().any(|filter| filter.contains(hash))
    }

    pub(crate) fn insert(&mut self, email_key: &str) {
        self.insert_hash(hash(email_key.as_bytes()));
    }

    fn insert_hash(&mut self, hash: u64) {
        let newest = self.filters.last().expect("at least one filter");
        if newest.is_full() {
            let next = Bloom::new(newest.capacity * 2, newest.false_positive_rate / 2.0);
            self.filters.push(next);
        }
        self.filters
            .last_mut()
            .expect("at least one filter")
            .insert(hash);
        self.len += 1;
    }

    /// Emails added (counting any added twice, twice).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes the filters hold.
    pub(crate) fn bytes(&self) -> usize {
        self.filters.iter().map(|f| f.bits.len() * 8).sum()
    }
}

/// SipHash with fixed keys: the same email always has the same hash.
fn hash(email_key: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(email_key)
}

/// A classic Bloom filter over 64-bit hashes, with `probes` positions derived from the two
/// halves of the hash (Kirsch and Mitzenmacher's double hashing).
struct Bloom {
    bits: Vec<u64>,
    probes: u32,
    capacity: usize,
    false_positive_rate: f64,
    len: usize,
}

impl Bloom {
    fn new(capacity: usize, false_positive_rate: f64) -> Self {
        let ln2 = std::f64::consts::LN_2;
        let bits = (-(capacity as f64) * false_positive_rate.ln() / (ln2 * ln2)).ceil() as usize;
        let probes = ((bits as f64 / capacity as f64) * ln2).round().max(1.0) as u32;
        Self {
            bits: vec![0; bits.div_ceil(64)],
            probes,
            capacity,
            false_positive_rate,
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// The bit positions of `hash`.
    fn positions(&self, hash: u64) -> impl Iterator<Item = usize> + use<> {
        let m = (self.bits.len() * 64) as u64;
        let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        (0..u64::from(self.probes)).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    fn insert(&mut self, hash: u64) {
        for bit in self.positions(hash) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    fn contains(&self, hash: u64) -> bool {
        self.positions(hash)
            .all(|bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::Batch;

    #[test]
    fn knows_the_stored_emails_and_those_added_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let mut batch = Batch::default();
        batch.put(TreeId::Emails, b"a@x.com", &[1; 16]);
        store.apply(batch.puts()).unwrap();
        let mut known = KnownEmails::load(&store).unwrap();
        assert!(known.may_contain("a@x.com"));
        known.insert("b@x.com");
        assert!(known.may_contain("b@x.com"));
        assert_eq!(known.len(), 2);
    }

    #[test]
    fn never_forgets_and_rarely_imagines_as_it_grows() {
        let mut known = KnownEmails::with_capacity(0);
        let n = 300_000;
        for i in 0..n {
            known.insert(&format!("customer{i}@example.com"));
        }
        assert!(known.filters.len() > 1, "grew past its first filter");
        assert!(
            (0..n).all(|i| known.may_contain(&format!("customer{i}@example.com"))),
            "no false negatives"
        );
        let false_positives = (0..n)
            .filter(|i| known.may_contain(&format!("stranger{i}@example.com")))
            .count();
        let rate = false_positives as f64 / n as f64;
        assert!(
            rate < 2.0 * FIRST_FALSE_POSITIVE_RATE,
            "false positives: {rate}"
        );
        assert!(
            known.bytes() < 3 * n,
            "under three bytes per email: {}",
            known.bytes()
        );
    }
}
