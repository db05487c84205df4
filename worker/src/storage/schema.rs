//! What the database holds, in one place: the sled trees (their names on disk and their
//! numbers in the journal) and the keys the worker writes in them. Everything else reads the
//! layout from here.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `customers` | the id's 16 bytes (UUIDv7, so keys sort in commit order) | the customer as it is now (`customer_record`): its JSON, exactly as replied, with its version; or its tombstone |
//! | `emails` | the lower-cased email | the owner's 16-byte id (a deleted customer has none) |
//! | `idempotency` | `k{key}` / `t{created_ms: u64 BE}{key}` | the stored reply (`idempotency::record`) / empty: the expiry entry the purge walks in time order |
//! | `outbox` | the event's sequence number (u64 BE, commit order) | the pending event (`event_record`) |
//! | `relayed` | `through` | the sequence number of the newest event JetStream acknowledged (u64 BE); before sequence numbers, the newest id whose `customer.created` was (16 bytes) |
//! | `replication` | `applied` / `clock` / `indexes` | the log sequence of the newest group applied here (u64 BE) / the commit time of the newest group that changed a customer (u64 BE ms) / `1` once the indexes below are complete |
//! | `changes` | the change's time (u64 BE ms: `updated_at`, or when deleted) and the id | empty: one entry per customer, at its latest change (the change feed, `indexes`) |
//! | `attributes` | a field's value (status, country, a `custom_data` scalar) and the id (`indexes`) | empty: one entry per indexed value of a live customer |

/// The sled tree a journaled put goes to; its number is what the journal stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeId {
    Customers = 1,
    Emails = 2,
    Idempotency = 3,
    Relayed = 4,
    Replication = 5,
    Outbox = 6,
    Changes = 7,
    Attributes = 8,
}

impl TreeId {
    /// Every tree, in a fixed order.
    pub(crate) const ALL: [Self; 8] = [
        Self::Customers,
        Self::Emails,
        Self::Idempotency,
        Self::Relayed,
        Self::Replication,
        Self::Outbox,
        Self::Changes,
        Self::Attributes,
    ];

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|tree| *tree as u8 == byte)
    }

    /// The tree's name in the sled database.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Emails => "emails",
            Self::Idempotency => "idempotency",
            Self::Relayed => "relayed",
            Self::Replication => "replication",
            Self::Outbox => "outbox",
            Self::Changes => "changes",
            Self::Attributes => "attributes",
        }
    }
}

/// The one key of the `relayed` tree.
pub(crate) const RELAYED_KEY: &[u8] = b"through";
/// The `replication` tree's log sequence applied here.
pub(crate) const APPLIED_KEY: &[u8] = b"applied";
/// The `replication` tree's commit time of the newest group that changed a customer.
pub(crate) const CLOCK_KEY: &[u8] = b"clock";
/// The `replication` tree's mark that the `changes` and `attributes` indexes are complete
/// (`storage::store::indexing`). Its version counts the kinds of entries: a data directory
/// marked for fewer (`indexes`: before the name and phone entries) is built again.
pub(crate) const INDEXES_KEY: &[u8] = b"indexes-2";

/// The `idempotency` tree's record of `key`.
pub(crate) fn idempotency_record_key(key: &str) -> Vec<u8> {
    [b"k", key.as_bytes()].concat()
}

/// The `idempotency` tree's expiry entry of `key`, committed at `created_ms`.
pub(crate) fn idempotency_expiry_key(key: &str, created_ms: u64) -> Vec<u8> {
    [b"t", &created_ms.to_be_bytes()[..], key.as_bytes()].concat()
}

/// The first byte of every expiry entry: they sort together, oldest first.
pub(crate) const IDEMPOTENCY_EXPIRY_PREFIX: &[u8] = b"t";
/// The first byte of every record.
pub(crate) const IDEMPOTENCY_RECORD_PREFIX: &[u8] = b"k";

/// The journal's directory inside the data directory (sled's files are beside it).
pub(crate) const JOURNAL_DIR: &str = "journal";
