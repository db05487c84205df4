//! The lines of finding and mirroring customers beside the peer's, on a database of a
//! million customers as the generator makes them: newest-first pages of 10, unfiltered or
//! behind one exact filter or three combined, and the change feed read in pages of 100, each requester
//! following `next_cursor` from the start, and first pages of searches (exact, substring of 3
//! and of 6 characters, combined), each with its `total_count`; the peer answers the same requests over the same HTTP
//! with the `SELECT`s and indexes a team would write (`bench/peer-postgres`).

use crate::load::{Request, Workload};

/// What a find line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Find {
    /// No filter: the newest customers.
    Newest,
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
    /// Search `name:'Amina Mboya'`: an exact name, any case (about 0.5 %).
    SearchName,
    /// Search `name~'ami'`: a 3-character substring (about 6 %: every Amina).
    SearchSubstring3,
    /// Search `name~'kowals'`: a 6-character substring (about 8 %).
    SearchSubstring6,
    /// Search `email~'okafor+' AND status:'suspended'` (about 0.4 %).
    SearchCombined,
}

impl Find {
    pub(super) const ALL: [Self; 10] = [
        Self::Newest,
        Self::Status,
        Self::Country,
        Self::CustomData,
        Self::Combined,
        Self::Feed,
        Self::SearchName,
        Self::SearchSubstring3,
        Self::SearchSubstring6,
        Self::SearchCombined,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Newest => "list, newest first",
            Self::Status => "list, status=suspended",
            Self::Country => "list, country=NG",
            Self::CustomData => "list, custom_data[loyalty_program]=Platinum",
            Self::Combined => "list, status + country + custom_data",
            Self::Feed => "change feed, pages of 100",
            Self::SearchName => "search, name:'Amina Mboya'",
            Self::SearchSubstring3 => "search, name~'ami'",
            Self::SearchSubstring6 => "search, name~'kowals'",
            Self::SearchCombined => "search, email~'okafor+' AND status:'suspended'",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Self::Newest => "limit=10",
            Self::Status => "status=suspended",
            Self::Country => "country=NG",
            Self::CustomData => "custom_data[loyalty_program]=Platinum",
            Self::Combined => "status=inactive&country=JP&custom_data[loyalty_program]=Gold",
            Self::Feed => "order=updated_asc&limit=100",
            Self::SearchName => "query=name%3A%27Amina%20Mboya%27",
            Self::SearchSubstring3 => "query=name~%27ami%27",
            Self::SearchSubstring6 => "query=name~%27kowals%27",
            Self::SearchCombined => "query=email~%27okafor%2B%27%20AND%20status%3A%27suspended%27",
        }
    }

    /// Whether the line asks the search endpoint.
    pub(super) fn is_search(self) -> bool {
        matches!(
            self,
            Self::SearchName
                | Self::SearchSubstring3
                | Self::SearchSubstring6
                | Self::SearchCombined
        )
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
        let endpoint = match self.find.is_search() {
            true => "/api/v1/customers/search",
            false => "/api/v1/customers",
        };
        let mut path = format!("{endpoint}?{}", self.find.query());
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
