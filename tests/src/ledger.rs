//! A customer's whole life under load, and the check that nothing acknowledged was lost.
//! [`Load`] runs HTTP clients that create customers with unique emails and then change some of
//! them: every third gets its `custom_data` updated, every fourth its email moved, every fifth
//! deleted (every other client sends an `Idempotency-Key` with each write and `If-Match` with
//! each change). A [`Ledger`] writes down what each request got. After the test has crashed,
//! failed or power-cut the worker and started it again, [`Ledger::verify`] asks the worker over
//! NATS about every customer:
//!
//! * an acknowledged create (201) must be stored under its id; an acknowledged change must
//!   hold: the customer is at the version, email and `custom_data` of its last acknowledged
//!   change (or deleted, after an acknowledged delete), or at what the one unacknowledged
//!   change after it would have made; it owns its current email and none of its former ones;
//! * an unacknowledged create (500, 503, 504) may or may not be stored, but its email has at
//!   most one owner; retried twice with its key (keyed clients), it gets one outcome, the
//!   second answer a byte-for-byte replay of the first, and never a second customer;
//! * an unacknowledged keyed change, retried twice with its key, ends exactly where it would
//!   have: applied once, never twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use customers_shared::wire::protocol::{Endpoint, headers};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{HttpClient, TestResponse, customer_with_email, nats_header, subject};

/// One create request whose answer was not a 201.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub email: String,
    pub body: String,
    pub key: Option<String>,
    pub status: u16,
}

/// What a customer is after a change: at a version with an email and `custom_data`, or
/// deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Live {
        version: u64,
        email: String,
        custom_data: Value,
    },
    Deleted,
}

/// A change whose answer was lost (500, 503, 504): it may or may not have been made.
#[derive(Debug, Clone)]
pub struct Uncertain {
    /// Where it would have left the customer.
    pub state: State,
    /// `PATCH` (with this body) or `DELETE`, and its key (keyed clients).
    pub patch: Option<String>,
    pub key: Option<String>,
}

/// One acknowledged customer's life as its client saw it.
#[derive(Debug, Clone)]
pub struct Life {
    /// The state its last acknowledged write left.
    pub acknowledged: State,
    /// The change after that one whose answer was lost; the client left it alone after.
    pub uncertain: Option<Uncertain>,
    /// Every email it has had.
    pub emails: Vec<String>,
    /// Acknowledged changes (the create not counted).
    pub changes: usize,
}

/// What every write of a [`Load`] was answered.
#[derive(Debug, Default)]
pub struct Ledger {
    /// email → id, for every 201 (the email it was created with).
    pub acknowledged: HashMap<String, String>,
    /// id → its life, for every 201.
    pub lives: HashMap<String, Life>,
    /// Creates answered 500, 503 or 504: they may or may not have been stored.
    pub unacknowledged: Vec<Attempt>,
    /// Anything else for a fresh email or a customer's own change: a bug.
    pub unexpected: Vec<String>,
}

/// HTTP clients creating and changing customers until stopped.
pub struct Load {
    ledger: Arc<Mutex<Ledger>>,
    acked: Arc<Notify>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

/// What one change of a customer's life asks.
enum Change {
    Patch(String),
    Delete,
}

impl Load {
    /// Starts `clients` clients on `http`; emails are `{tag}-c{client}-{n}@load.example.com`
    /// (moved ones `{tag}-c{client}-{n}-moved@…`), so `tag` is letters, digits and `-`.
    pub fn start(http: &HttpClient, clients: usize, tag: &str) -> Self {
        assert!(
            tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "a tag fit for an email address: {tag:?}"
        );
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let acked = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|client| {
                let (http, ledger, acked, stop) =
                    (http.clone(), ledger.clone(), acked.clone(), stop.clone());
                let tag = tag.to_owned();
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let keyed = client % 2 == 1;
                        let email = format!("{tag}-c{client}-{n}@load.example.com");
                        let body = customer_with_email(&email);
                        let key = keyed.then(|| format!("{tag}-key-{client}-{n}"));
                        let response = match &key {
                            Some(key) => http.create_idempotent(&body, key).await,
                            None => http.create(&body).await,
                        };
                        let status = response.status;
                        let id = {
                            let mut ledger = ledger.lock().unwrap();
                            match status {
                                201 => {
                                    let id = response.json()["id"].as_str().unwrap().to_owned();
                                    ledger.acknowledged.insert(email.clone(), id.clone());
                                    let state = State::Live {
                                        version: 1,
                                        email: email.clone(),
                                        custom_data: Value::Null,
                                    };
                                    ledger.lives.insert(
                                        id.clone(),
                                        Life {
                                            acknowledged: state,
                                            uncertain: None,
                                            emails: vec![email.clone()],
                                            changes: 0,
                                        },
                                    );
                                    acked.notify_waiters();
                                    Some(id)
                                }
                                500 | 503 | 504 => {
                                    ledger.unacknowledged.push(Attempt {
                                        email: email.clone(),
                                        body,
                                        key,
                                        status,
                                    });
                                    None
                                }
                                other => {
                                    ledger
                                        .unexpected
                                        .push(format!("{email}: {other} {:?}", response.body));
                                    None
                                }
                            }
                        };
                        let Some(id) = id else {
                            // A well-behaved client backs off while the service is unavailable.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        };
                        let mut changes = Vec::new();
                        if n % 3 == 0 {
                            changes
                                .push(Change::Patch(format!(r#"{{"custom_data":{{"n":{n}}}}}"#)));
                        }
                        if n % 4 == 0 {
                            let moved = format!("{tag}-c{client}-{n}-moved@load.example.com");
                            changes.push(Change::Patch(format!(r#"{{"email":"{moved}"}}"#)));
                        }
                        if n % 5 == 0 {
                            changes.push(Change::Delete);
                        }
                        for (step, change) in changes.into_iter().enumerate() {
                            let key = keyed.then(|| format!("{tag}-key-{client}-{n}-{step}"));
                            let settled =
                                live_through(&http, &ledger, &id, change, key, keyed).await;
                            if !settled {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            ledger,
            acked,
            stop,
            clients,
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.ledger.lock().unwrap().acknowledged.len()
    }

    /// Waits until at least `count` creates have been acknowledged in all.
    pub async fn wait_for_acknowledged(&self, count: usize) {
        self.wait_for_acknowledged_within(count, crate::PATIENCE)
            .await;
    }

    /// [`Load::wait_for_acknowledged`], allowing `patience` without progress.
    pub async fn wait_for_acknowledged_within(&self, count: usize, patience: std::time::Duration) {
        while self.acknowledged() < count {
            let progress = self.acked.notified();
            if self.acknowledged() >= count {
                break;
            }
            tokio::time::timeout(patience, progress)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no progress: {} acknowledged, waiting for {count}",
                        self.acknowledged()
                    )
                });
        }
    }

    /// Stops the clients (each finishes its request) and returns the ledger.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("load client");
        }
        let ledger = Arc::try_unwrap(self.ledger).expect("clients are done");
        ledger.into_inner().unwrap()
    }
}

/// Sends one change of customer `id` and writes down its answer; `false` when the answer was
/// lost (the customer is then left alone) or unexpected.
async fn live_through(
    http: &HttpClient,
    ledger: &Mutex<Ledger>,
    id: &str,
    change: Change,
    key: Option<String>,
    conditional: bool,
) -> bool {
    let before = ledger.lock().unwrap().lives[id].acknowledged.clone();
    let State::Live {
        version,
        email,
        custom_data,
    } = &before
    else {
        return false;
    };
    let etag = format!("\"{version}\"");
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(key) = &key {
        headers.push(("idempotency-key", key));
    }
    if conditional {
        headers.push(("if-match", &etag));
    }
    let (response, target, patch) = match &change {
        Change::Patch(patch) => {
            let body: Value = serde_json::from_str(patch).unwrap();
            let target = State::Live {
                version: version + 1,
                email: body["email"].as_str().unwrap_or(email).to_owned(),
                custom_data: body
                    .get("custom_data")
                    .cloned()
                    .unwrap_or_else(|| custom_data.clone()),
            };
            (
                http.patch(id, patch, &headers).await,
                target,
                Some(patch.clone()),
            )
        }
        Change::Delete => (http.delete(id, &headers).await, State::Deleted, None),
    };
    let mut ledger = ledger.lock().unwrap();
    let life = ledger.lives.get_mut(id).unwrap();
    if let State::Live { email, .. } = &target
        && !life.emails.contains(email)
    {
        life.emails.push(email.clone());
    }
    match response.status {
        200 if answers(&response, &target) => {
            life.acknowledged = target;
            life.changes += 1;
            true
        }
        500 | 503 | 504 => {
            life.uncertain = Some(Uncertain {
                state: target,
                patch,
                key,
            });
            false
        }
        other => {
            let unexpected = format!("{id}: a change answered {other} {:?}", response.body);
            ledger.unexpected.push(unexpected);
            false
        }
    }
}

/// Whether a change's `200` shows `target`.
fn answers(response: &TestResponse, target: &State) -> bool {
    let body = response.json();
    match target {
        State::Deleted => body["deleted"] == true,
        State::Live {
            version,
            email,
            custom_data,
        } => {
            response.header("etag") == Some(&format!("\"{version}\""))
                && body["email"] == email.as_str()
                && &body["custom_data"] == custom_data
        }
    }
}

/// What [`Ledger::verify`] found.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    pub acknowledged: usize,
    /// Acknowledged changes (updates and deletes).
    pub changes: usize,
    /// Customers deleted at the end.
    pub deleted: usize,
    /// Acknowledged writes whose effect is not stored as acknowledged (must be empty).
    pub lost: Vec<String>,
    pub unacknowledged: usize,
    /// Unacknowledged creates that had been stored anyway (before their answer was lost).
    pub stored_anyway: usize,
    /// Emails with more than one customer, or keyed retries that answered differently, or
    /// anything else impossible (must be empty).
    pub violations: Vec<String>,
    /// Every customer the check saw, by id, as it found it at the end (after its retries):
    /// what the events stream must tell.
    pub customers: BTreeMap<String, State>,
}

impl Verdict {
    /// Fails the test unless every acknowledged write is stored and nothing impossible
    /// happened; names the first few offenders.
    pub fn assert_nothing_lost(&self) {
        assert!(
            self.lost.is_empty() && self.violations.is_empty(),
            "{self}; lost, first ones: {:?}; violations, first ones: {:?}",
            &self.lost[..self.lost.len().min(5)],
            &self.violations[..self.violations.len().min(5)]
        );
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acknowledged: {} creates and {} changes ({} deleted at the end), lost: {}, unacknowledged: {} ({} had been stored, {} had not), violations: {}",
            self.acknowledged,
            self.changes,
            self.deleted,
            self.lost.len(),
            self.unacknowledged,
            self.stored_anyway,
            self.unacknowledged - self.stored_anyway,
            self.violations.len()
        )
    }
}

impl Ledger {
    /// Asks a running worker (over `nats`) about every write of the ledger; see the module.
    pub async fn verify(&self, nats: &async_nats::Client) -> Verdict {
        let mut verdict = Verdict {
            acknowledged: self.acknowledged.len(),
            changes: self.lives.values().map(|life| life.changes).sum(),
            unacknowledged: self.unacknowledged.len(),
            violations: self.unexpected.clone(),
            ..Verdict::default()
        };
        for (id, life) in &self.lives {
            let mut found = state_of(nats, id).await;
            let possible = |state: &Option<State>| {
                state.as_ref() == Some(&life.acknowledged)
                    || life.uncertain.as_ref().map(|u| &u.state) == state.as_ref()
            };
            if !possible(&found) {
                verdict.lost.push(format!(
                    "{id}: found {found:?}, acknowledged {:?}, uncertain {:?}",
                    life.acknowledged, life.uncertain
                ));
                continue;
            }
            if let Some(Uncertain {
                state,
                patch,
                key: Some(key),
            }) = &life.uncertain
            {
                let first = change(nats, id, patch.as_deref(), key).await;
                let again = change(nats, id, patch.as_deref(), key).await;
                found = state_of(nats, id).await;
                if first.0 != "200" || !again.1 || found.as_ref() != Some(state) {
                    verdict.violations.push(format!(
                        "{id}: a keyed change retried answered {} then {} (replayed: {}), and left {found:?}, not {state:?}",
                        first.0, again.0, again.1
                    ));
                }
            }
            let current = match &found {
                Some(State::Live { email, .. }) => Some(email.as_str()),
                _ => None,
            };
            for email in &life.emails {
                let owners = owners(nats, email).await;
                let expected: Vec<String> = match current == Some(email.as_str()) {
                    true => vec![id.clone()],
                    false => Vec::new(),
                };
                // A former email may have been taken by nobody else: every email is this
                // client's own.
                if owners != expected {
                    verdict.violations.push(format!(
                        "{email} ({id}, now {found:?}): owners {owners:?}, not {expected:?}"
                    ));
                }
            }
            if let Some(state) = found {
                verdict.deleted += usize::from(state == State::Deleted);
                verdict.customers.insert(id.clone(), state);
            }
        }
        for attempt in &self.unacknowledged {
            let before = owners(nats, &attempt.email).await;
            if before.len() > 1 {
                verdict
                    .violations
                    .push(format!("{}: owned by {before:?}", attempt.email));
            }
            verdict.stored_anyway += usize::from(!before.is_empty());
            let Some(key) = &attempt.key else {
                for id in &before {
                    if let Some(state) = state_of(nats, id).await {
                        verdict.customers.insert(id.clone(), state);
                    }
                }
                continue;
            };
            let first = create(nats, &attempt.body, key).await;
            let again = create(nats, &attempt.body, key).await;
            let after = owners(nats, &attempt.email).await;
            let outcome =
                |(status, body, _): &(String, Vec<u8>, bool)| (status.clone(), body.clone());
            let answered_id = serde_json::from_slice::<Value>(&first.1)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned));
            let one_outcome = outcome(&first) == outcome(&again)
                && again.2
                && first.0 == "201"
                && after.len() == 1
                && answered_id.as_deref() == after.first().map(String::as_str)
                && (before.is_empty() || before == after);
            if !one_outcome {
                verdict.violations.push(format!(
                    "{} with key {key}: owners {before:?} then {after:?}, answers {} then {} (replayed: {}), ",
                    attempt.email, first.0, again.0, again.2
                ));
            }
            for id in &after {
                if let Some(state) = state_of(nats, id).await {
                    verdict.customers.insert(id.clone(), state);
                }
            }
        }
        verdict
    }
}

/// One request of the check. Right after a failover or a node's restart nothing may serve
/// the subject for a moment (a standby taking over, a route's interest not yet propagated):
/// no responders means nobody received the request, so it is sent again, as a client would,
/// within [`crate::PATIENCE`].
async fn request(
    nats: &async_nats::Client,
    endpoint: Endpoint,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> async_nats::Message {
    use async_nats::RequestErrorKind::NoResponders;
    let payload = bytes::Bytes::from(payload);
    let deadline = tokio::time::Instant::now() + crate::PATIENCE;
    loop {
        let sent = nats
            .request_with_headers(subject(endpoint), headers.clone(), payload.clone())
            .await;
        match sent {
            Ok(reply) => return reply,
            Err(e) if e.kind() == NoResponders && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("NATS request to {endpoint:?}: {e}"),
        }
    }
}

/// The state of the customer with this id (`None`: never stored).
async fn state_of(nats: &async_nats::Client, id: &str) -> Option<State> {
    let reply = request(nats, Endpoint::Get, async_nats::HeaderMap::new(), id.into()).await;
    match nats_header(&reply, headers::SERVICE_ERROR_CODE) {
        None => {
            let customer: Value = serde_json::from_slice(&reply.payload).expect("a customer");
            let etag = nats_header(&reply, headers::ETAG).expect("an ETag");
            Some(State::Live {
                version: etag.trim_matches('"').parse().expect("a version"),
                email: customer["email"].as_str().unwrap().to_owned(),
                custom_data: customer["custom_data"].clone(),
            })
        }
        Some("410") => Some(State::Deleted),
        Some("404") => None,
        Some(other) => panic!("get {id}: {other}"),
    }
}

/// A keyed change of `id` over NATS, a patch or (without one) a delete: (status, replayed).
async fn change(
    nats: &async_nats::Client,
    id: &str,
    patch: Option<&str>,
    key: &str,
) -> (String, bool) {
    let mut request_headers = async_nats::HeaderMap::new();
    request_headers.insert(headers::CUSTOMER_ID, id);
    request_headers.insert(headers::IDEMPOTENCY_KEY, key);
    let (endpoint, payload) = match patch {
        Some(patch) => (Endpoint::Update, patch.as_bytes().to_vec()),
        None => (Endpoint::Delete, Vec::new()),
    };
    let reply = request(nats, endpoint, request_headers, payload).await;
    let status = nats_header(&reply, headers::SERVICE_ERROR_CODE).unwrap_or("200");
    let replayed = nats_header(&reply, headers::IDEMPOTENT_REPLAYED) == Some("true");
    (status.to_owned(), replayed)
}

/// The ids of the customers with this email (at most one, if uniqueness holds).
async fn owners(nats: &async_nats::Client, email: &str) -> Vec<String> {
    let query = serde_json::json!({ "email": email, "limit": 100 }).to_string();
    let reply = request(
        nats,
        Endpoint::List,
        async_nats::HeaderMap::new(),
        query.into(),
    )
    .await;
    let page: Value = serde_json::from_slice(&reply.payload).expect("a page");
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("list by {email}: {page}"))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A keyed create over NATS: (status, body, replayed).
async fn create(nats: &async_nats::Client, body: &str, key: &str) -> (String, Vec<u8>, bool) {
    let mut request_headers = async_nats::HeaderMap::new();
    request_headers.insert(headers::IDEMPOTENCY_KEY, key);
    let reply = request(nats, Endpoint::Create, request_headers, body.into()).await;
    let status = nats_header(&reply, headers::SERVICE_ERROR_CODE).unwrap_or("201");
    let replayed = nats_header(&reply, headers::IDEMPOTENT_REPLAYED) == Some("true");
    (status.to_owned(), reply.payload.to_vec(), replayed)
}
