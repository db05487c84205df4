//! Where data lives on disk, and nothing about what requests mean:
//!
//! * [`schema`]: the trees and the keys written in them;
//! * [`customer_record`]: a customer as the `customers` tree holds it (its version, or the
//!   tombstone of a deleted one); [`event_record`]: a pending event as the `outbox` holds it;
//! * [`indexes`]: the keys of the change-feed and attribute indexes; [`change_clock`]: when
//!   a change becomes visible to the change feed;
//! * [`journal`]: the write-ahead journal, where a group of writes becomes durable;
//! * [`store`]: the sled database: open and recovery (journal replay checked against the
//!   checkpoint manifest), applying journaled groups, checkpoints, reads;
//! * [`text_index`]: the search's in-memory index of names, emails and phones;
//! * [`backup`]: the snapshot format of backups and of replicated mode's snapshots, written
//!   between two groups, and restore.

pub(crate) mod backup;
pub(crate) mod change_clock;
pub(crate) mod customer_record;
pub(crate) mod event_record;
pub(crate) mod indexes;
pub(crate) mod journal;
pub(crate) mod schema;
pub(crate) mod store;
pub(crate) mod text_index;
