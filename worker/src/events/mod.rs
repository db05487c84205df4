//! `customer.created` events on JetStream (docs/API.md §8): the stream the worker publishes
//! to ([`stream`], checked or made at start) and the [`relay`] that publishes the outbox the
//! committer fills (`commit::outbox`), on a thread and a connection of its own.

pub(crate) mod relay;
pub(crate) mod stream;
