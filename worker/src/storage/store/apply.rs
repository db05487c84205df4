//! Writing a journaled group into the trees: plain inserts and removals in journal order, no sled
//! transaction and no flush (the journal already made the group durable; a crash before the
//! next checkpoint replays it). Each customer put also updates the search's text index, and
//! each `attributes` write goes through the kept counts (`attribute_counts`). The committer
//! applies a group only after its journal sync, and recovery applies what the journal holds,
//! so both go through [`Store::apply`]; recovery on two threads ([`Store::replay`]).

use crate::storage::customer_record::CustomerRecord;
use crate::storage::journal::{Loaded, Put};
use crate::storage::schema::TreeId;
use crate::storage::store::{Store, StoreError};
use crate::storage::text_index::Texts;

/// Largest value ever written to a tree. sled moves a log buffer over a quarter of its 2 MiB
/// segment to a blob file that it never fsyncs; a leaf of at most 17 such values stays well
/// under that (17 × 24 KiB = 408 KiB < 512 KiB). Customers are at most about 13 KiB by the
/// field rules and stored replies at most a problem body (16 KiB), so the committer never
/// hands over more; [`Store::apply`] asserts it.
pub(crate) const MAX_VALUE_BYTES: usize = 24 * 1024;

impl Store {
    /// Applies a whole journal at open on two threads: one takes the index trees' puts
    /// (`attributes` and `changes`, five or six of a create's eight, but small), the other the
    /// rest (the customer, its email, its event), each in journal order. Nothing reads the trees
    /// during recovery, so only each key's order matters, and a key lives in one tree. A crash
    /// part way replays it all again.
    pub(crate) fn replay(&self, loaded: &Loaded) -> Result<(), StoreError> {
        let lane = |indexes: bool| {
            loaded.records().try_for_each(|puts| {
                self.apply(puts.filter(|put| {
                    matches!(put.tree, TreeId::Attributes | TreeId::Changes) == indexes
                }))
            })
        };
        let (indexes, rest) = super::alongside("replay", || lane(true), || lane(false))?;
        rest.and(indexes)
    }

    /// Inserts every put of a journal record (or those of them the committer keeps).
    pub(crate) fn apply<'a>(
        &self,
        puts: impl IntoIterator<Item = Put<'a>>,
    ) -> Result<(), StoreError> {
        for put in puts {
            let tree = self.tree(put.tree);
            if put.tree == TreeId::Attributes {
                self.attribute_counts.write(tree, put.key, put.value)?;
                continue;
            }
            match put.value {
                Some(value) => {
                    assert!(
                        value.len() <= MAX_VALUE_BYTES,
                        "a {}-byte value would reach sled's blob threshold",
                        value.len()
                    );
                    tree.insert(put.key, value)?;
                }
                None => {
                    tree.remove(put.key)?;
                }
            }
            if put.tree == TreeId::Customers && self.text_follows_apply {
                // The search's text index follows the tree before anyone is answered.
                let texts = put
                    .value
                    .and_then(CustomerRecord::json_in)
                    .and_then(Texts::of_json);
                self.text
                    .set(super::reads::id_from_bytes(put.key), texts.as_ref());
            }
        }
        Ok(())
    }
}
