//! What the benchmark measures and keeps: each [`Line`] (a topology, named in the report as
//! it always was), the processes whose CPU it counts ([`ROLES`]), and a [`Row`] per line and
//! concurrency, with the look-ups every section of the report uses.

use std::fmt;

use super::changes::Change;
use super::finds::Find;
use crate::load::Summary;

/// The peer's pool sizes tried at each concurrency (kept out of the main table: the peer
/// line is the best of them).
pub(super) const PEER_POOL_SIZES: [usize; 4] = [4, 8, 16, 32];

/// One line of the benchmark: what stands between the load generator and the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Line {
    Ceiling,
    IngressEcho,
    Durable,
    Peer,
    /// The peer with one pool size of the sweep.
    PeerSweep {
        pool: usize,
    },
    Http,
    HttpEventsOff,
    HttpReplicated,
    Nats,
    HttpLoaded,
    NatsLoaded,
    EventsOffApart,
    EventsOnApart,
    /// A customer's whole life (`changes`), by the service over HTTP or by the peer.
    Changes {
        change: Change,
        peer: bool,
    },
    /// Finding and mirroring (`finds`), by the service over HTTP or by the peer.
    Find {
        find: Find,
        peer: bool,
    },
}

impl Line {
    pub(super) fn is_peer_sweep(self) -> bool {
        matches!(self, Self::PeerSweep { .. })
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self {
            Self::Ceiling => "ceiling: forwarder → NATS → echo",
            Self::IngressEcho => "product ingress → NATS → echo",
            Self::Durable => "durable bound: forwarder → NATS → append + fdatasync",
            Self::Peer => "peer: axum + PostgreSQL",
            Self::PeerSweep { pool } => return write!(f, "peer sweep: pool {pool}"),
            Self::Http => "service over HTTP",
            Self::HttpEventsOff => "service over HTTP, events off",
            Self::HttpReplicated => "service over HTTP, replicated (3 NATS nodes, 3 workers)",
            Self::Nats => "service over NATS direct",
            Self::HttpLoaded => "service over HTTP, after preload",
            Self::NatsLoaded => "service over NATS direct, after preload",
            Self::EventsOffApart => "events off, nats-server on cores of its own (median run)",
            Self::EventsOnApart => "events on, nats-server on cores of its own (median run)",
            Self::Changes { change, peer } => {
                let who = if *peer { "peer" } else { "service over HTTP" };
                let what = match change {
                    Change::Updates => "updates",
                    Change::Gets => "gets by id",
                    Change::Deletes => "deletes",
                    Change::Mixed => "mixed (70 % get, 20 % update, 10 % create)",
                };
                return write!(f, "{who}: {what}");
            }
            Self::Find { find, peer } => {
                let who = if *peer { "peer" } else { "service over HTTP" };
                return write!(f, "{who}: {}", find.label());
            }
        };
        f.write_str(label)
    }
}

/// The processes whose CPU time the benchmark accounts for.
pub(super) const ROLES: [&str; 5] = [
    "HTTP front",
    "responder",
    "nats-server",
    "PostgreSQL",
    "load generator",
];

/// The process ids playing each role in a line (a role may have none or several).
pub(super) type Pids = [Vec<u32>; ROLES.len()];

/// One line measured at one concurrency.
#[derive(Clone)]
pub(super) struct Row {
    pub(super) line: Line,
    pub(super) concurrency: usize,
    pub(super) summary: Summary,
    /// CPU time per request of each role, in microseconds.
    pub(super) cpu_us: [f64; ROLES.len()],
}

pub(super) fn find(rows: &[Row], line: Line, concurrency: usize) -> Option<&Summary> {
    find_row(rows, line, concurrency).map(|r| &r.summary)
}

pub(super) fn find_row(rows: &[Row], line: Line, concurrency: usize) -> Option<&Row> {
    rows.iter()
        .find(|r| r.line == line && r.concurrency == concurrency)
}

/// `line`'s throughput over `other`'s at the same concurrency.
pub(super) fn ratio(rows: &[Row], line: Line, other: Line, concurrency: usize) -> Option<f64> {
    Some(find(rows, line, concurrency)?.throughput / find(rows, other, concurrency)?.throughput)
}
