//! The lines of a customer's whole life beside the peer's: updates (a merge patch of
//! `custom_data` under `If-Match`), gets by id, deletes (under `If-Match`) and a mixed load
//! (70 % gets, 20 % updates, 10 % creates). Each requester first creates the customers it will change
//! ([`Seed`]), so that it alone changes them and always knows their version: no `412` is
//! measured, on either side. The workloads are the same for the service and the peer, over
//! the same HTTP.

use crate::load::{Creates, Request, Workload};

/// What a line does with the customers a requester created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Updates,
    /// `GET` of one of the requester's customers, at random.
    Gets,
    Deletes,
    Mixed,
}

impl Change {
    /// Customers each requester creates first: deletes use up one per request.
    pub(super) fn seeds_per_requester(self, deletes_per_requester: usize) -> usize {
        match self {
            Self::Updates => 20,
            Self::Gets | Self::Mixed => 50,
            Self::Deletes => deletes_per_requester,
        }
    }
}

/// Creates customers and keeps their ids (at version 1).
pub(super) struct Seed {
    creates: Creates,
    left: usize,
    pub(super) owned: Vec<(String, u64)>,
}

impl Seed {
    pub(super) fn new(run: &str, stream: usize, count: usize) -> Self {
        Self {
            creates: Creates::new(run, stream, 0.0, false),
            left: count,
            owned: Vec::with_capacity(count),
        }
    }
}

impl Workload for Seed {
    fn next(&mut self) -> Request {
        self.left = self.left.saturating_sub(1);
        self.creates.next()
    }

    fn answered(&mut self, status: u16, body: &[u8]) {
        self.owned
            .extend(created_id(status, body).map(|id| (id, 1)));
    }

    fn done(&self) -> bool {
        self.left == 0
    }
}

/// One requester's changes of the customers it owns.
pub(super) struct Changes {
    change: Change,
    owned: Vec<(String, u64)>,
    creates: Creates,
    rng: fastrand::Rng,
    sent: u64,
    /// The owned customer the last request changed (its version moves on a 200).
    last: Option<usize>,
    /// The last request was a create (its customer is owned from the 201 on).
    created: bool,
}

impl Changes {
    pub(super) fn new(change: Change, run: &str, stream: usize, owned: Vec<(String, u64)>) -> Self {
        Self {
            change,
            owned,
            // Other emails than the seed's, which the same run and stream would repeat.
            creates: Creates::new(&format!("{run}-more"), stream, 0.0, false),
            rng: fastrand::Rng::with_seed(stream as u64),
            sent: 0,
            last: None,
            created: false,
        }
    }

    fn get(&self, at: usize) -> Request {
        Request {
            method: "GET",
            path: format!("/api/v1/customers/{}", self.owned[at].0),
            body: String::new(),
            headers: Vec::new(),
        }
    }

    fn update(&mut self, at: usize) -> Request {
        let (id, version) = &self.owned[at];
        self.last = Some(at);
        Request {
            method: "PATCH",
            path: format!("/api/v1/customers/{id}"),
            body: format!(r#"{{"custom_data":{{"visits":{}}}}}"#, self.sent),
            headers: vec![("if-match", format!("\"{version}\""))],
        }
    }
}

impl Workload for Changes {
    fn next(&mut self) -> Request {
        self.sent += 1;
        self.last = None;
        self.created = false;
        match self.change {
            Change::Updates => {
                let at = self.sent as usize % self.owned.len();
                self.update(at)
            }
            Change::Gets => {
                let at = self.rng.usize(..self.owned.len());
                self.get(at)
            }
            Change::Deletes => {
                let (id, version) = self.owned.pop().expect("not done");
                Request {
                    method: "DELETE",
                    path: format!("/api/v1/customers/{id}"),
                    body: String::new(),
                    headers: vec![("if-match", format!("\"{version}\""))],
                }
            }
            Change::Mixed => {
                let at = self.rng.usize(..self.owned.len());
                match self.rng.u8(..10) {
                    0..7 => self.get(at),
                    7..9 => self.update(at),
                    _ => {
                        self.created = true;
                        self.creates.next()
                    }
                }
            }
        }
    }

    fn answered(&mut self, status: u16, body: &[u8]) {
        if let (Some(at), 200) = (self.last, status) {
            self.owned[at].1 += 1;
        }
        if self.created {
            self.owned
                .extend(created_id(status, body).map(|id| (id, 1)));
        }
    }

    fn done(&self) -> bool {
        self.owned.is_empty()
    }
}

/// The id in a create's `201` body.
fn created_id(status: u16, body: &[u8]) -> Option<String> {
    let customer: serde_json::Value = serde_json::from_slice(body)
        .ok()
        .filter(|_| status == 201)?;
    customer["id"].as_str().map(str::to_owned)
}
