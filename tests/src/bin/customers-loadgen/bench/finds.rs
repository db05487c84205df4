//! The lines of finding and mirroring customers beside the peer's, on a database of a
//! million customers as the generator makes them: newest-first pages of 10 behind one exact
//! filter or three combined, and the change feed read in pages of 100, each requester
//! following `next_cursor` from the start; the peer answers the same requests over the same HTTP
//! with the `SELECT`s and indexes a team would write (`bench/peer-postgres`).

use crate::load::{Request, Workload};

/// What a find line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Find {
    /// `status=suspended` (about 5 % of the customers).
    Status,
    /// `country=NG` (about 12 %).
    Country,
    /// `custom_data[loyalty_program]=Platinum` (about 8 %).
    CustomData,
    /// `status=inactive&country=JP&custom_data[loyalty_program]=Gold` (about 0.1 %).
    Combined,
    /// The change feed, pages of 100.
    Feed,
}

impl Find {
    pub(super) const ALL: [Self; 5] = [
        Self::Status,
        Self::Country,
        Self::CustomData,
        Self::Combined,
        Self::Feed,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Status => "list, status=suspended",
            Self::Country => "list, country=NG",
            Self::CustomData => "list, custom_data[loyalty_program]=Platinum",
            Self::Combined => "list, status + country + custom_data",
            Self::Feed => "change feed, pages of 100",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Self::Status => "status=suspended",
            Self::Country => "country=NG",
            Self::CustomData => "custom_data[loyalty_program]=Platinum",
            Self::Combined => "status=inactive&country=JP&custom_data[loyalty_program]=Gold",
            Self::Feed => "order=updated_asc&limit=100",
        }
    }
}

/// One requester of a find line.
pub(super) struct Finds {
    find: Find,
    /// The feed's next cursor (none: its start).
    cursor: Option<String>,
}

impl Finds {
    pub(super) fn new(find: Find) -> Self {
        Self { find, cursor: None }
    }
}

impl Workload for Finds {
    fn next(&mut self) -> Request {
        let mut path = format!("/api/v1/customers?{}", self.find.query());
        if let Some(cursor) = &self.cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        Request {
            method: "GET",
            path,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    fn answered(&mut self, status: u16, body: &[u8]) {
        if self.find != Find::Feed || status != 200 {
            return;
        }
        let page: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let more = page["has_more"].as_bool().unwrap_or(false);
        // At the end of the feed, start again: the line measures reading, not waiting.
        self.cursor = match (more, page["next_cursor"].as_str()) {
            (true, Some(next)) => Some(next.to_owned()),
            _ => None,
        };
    }
}
