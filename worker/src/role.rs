//! What an instance is doing now: a worker on its own disk, or, replicated, a standby that
//! follows the log or the primary that commits. The one value the metrics, the admin
//! listener, the service's `$SRV.INFO` metadata and the start-up share; the committer's mode
//! (`commit::Mode`) carries what each role needs besides.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// One worker on its own disk (not replicated).
    Single,
    /// Replicated: follows the log, serves reads.
    Standby,
    /// Replicated: holds the lease and commits.
    Primary,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Standby => "standby",
            Self::Primary => "primary",
        }
    }

    /// Whether this instance is part of a replicated group.
    pub(crate) fn is_replicated(self) -> bool {
        self != Self::Single
    }
}
