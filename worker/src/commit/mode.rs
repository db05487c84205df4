//! What the committer is: one value, so that the states that cannot be (a primary that is not
//! replicated, a standby with a lease) cannot be written down.
//!
//! * [`Mode::Single`]: one worker on its own disk; a group is durable once the local journal
//!   is synced.
//! * [`Mode::Standby`]: replicated; it applies the log's groups as they come and refuses
//!   writes.
//! * [`Mode::Primary`]: replicated and holding the lease; a group is durable once the log
//!   acknowledged it, appended after the last group this instance applied.

use std::sync::Arc;

use tokio::sync::watch;

use crate::replication::lease::LeaseClock;
use crate::replication::log::Log;

pub(crate) enum Mode {
    Single,
    Standby(Replica),
    Primary(Replica, Primacy),
}

/// What every instance of a replicated group has.
pub(crate) struct Replica {
    pub(crate) log: Arc<Log>,
    /// The runtime the log's client runs on (the committer thread blocks on appends).
    pub(crate) runtime: tokio::runtime::Handle,
    /// The log sequence applied here, published for the read gate and the take-over.
    pub(crate) applied: watch::Sender<u64>,
    /// The log sequence of the newest group applied here.
    pub(crate) applied_sequence: u64,
    /// Names this instance's appends (`Nats-Msg-Id`).
    pub(crate) instance: String,
}

/// What only the primary has: where the log must continue, and the lease that lets it.
pub(crate) struct Primacy {
    pub(crate) expected_last: u64,
    pub(crate) lease: LeaseClock,
}

impl Mode {
    /// The replicated part, unless single.
    pub(crate) fn replica(&mut self) -> Option<&mut Replica> {
        match self {
            Self::Single => None,
            Self::Standby(replica) | Self::Primary(replica, _) => Some(replica),
        }
    }

    /// A standby that holds the lease becomes the primary; anything else stays as it is.
    pub(crate) fn promote(self, primacy: Primacy) -> Result<Self, Self> {
        match self {
            Self::Standby(replica) => Ok(Self::Primary(replica, primacy)),
            other => Err(other),
        }
    }
}
