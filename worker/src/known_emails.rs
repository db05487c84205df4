//! The committer's memory of which emails are taken: a set of 64-bit hashes of every stored
//! email key. Uniqueness is still decided by the email index; the set only says when asking
//! the index is unnecessary. An email whose hash is absent is certainly new (the common
//! case, which then costs no index read); a present hash (a real duplicate, or one chance in
//! 2^64 / n of a collision) is confirmed in the index. Built from the index when the worker
//! starts (about half a second per million customers), then kept up to date by the
//! committer, the only writer; about 12 bytes per customer.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher};

use crate::journal::TreeId;
use crate::store::{Store, StoreError};

/// Hashes of every stored email key.
pub struct KnownEmails {
    hashes: HashSet<u64, BuildHasherDefault<AlreadyHashed>>,
}

impl KnownEmails {
    /// Reads every key of the email index.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let emails = store.tree(TreeId::Emails);
        let mut hashes = HashSet::with_capacity_and_hasher(emails.len(), Default::default());
        for key in emails.iter().keys() {
            hashes.insert(hash(&key?));
        }
        Ok(Self { hashes })
    }

    /// Whether `email_key` may be taken: `false` means certainly not.
    pub fn may_contain(&self, email_key: &str) -> bool {
        self.hashes.contains(&hash(email_key.as_bytes()))
    }

    pub fn insert(&mut self, email_key: &str) {
        self.hashes.insert(hash(email_key.as_bytes()));
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// SipHash with fixed keys: the same email always has the same hash.
fn hash(email_key: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(email_key)
}

/// The set's own hasher: its values are hashes already.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Batch;

    #[test]
    fn knows_the_stored_emails_and_those_added_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap().store;
        let mut batch = Batch::default();
        batch.put(TreeId::Emails, b"a@x.com", &[1; 16]);
        store.apply(batch.puts()).unwrap();
        let mut known = KnownEmails::load(&store).unwrap();
        assert!(known.may_contain("a@x.com"));
        assert!(!known.may_contain("b@x.com"));
        known.insert("b@x.com");
        assert!(known.may_contain("b@x.com"));
        assert_eq!(known.len(), 2);
    }
}
