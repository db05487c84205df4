//! Creates under load, and the check that nothing acknowledged was lost. [`Load`] runs HTTP
//! clients that create customers with unique emails (every other client with an
//! `Idempotency-Key`) and writes down what each request got in a [`Ledger`]. After the test
//! has crashed, failed or power-cut the worker and started it again, [`Ledger::verify`] asks
//! the worker over NATS about every create:
//!
//! * an acknowledged create (201) must be stored, under its id, owning its email;
//! * an unacknowledged one (500, 503, 504) may or may not be stored, but its email has at
//!   most one owner; retried twice with its key (keyed clients), it gets one outcome, the
//!   second answer a byte-for-byte replay of the first, and never a second customer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use customers_shared::wire::protocol::{Endpoint, headers};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::{HttpClient, customer_with_email, nats_header, subject};

/// One create request whose answer was not a 201.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub email: String,
    pub body: String,
    pub key: Option<String>,
    pub status: u16,
}

/// What every create of a [`Load`] was answered.
#[derive(Debug, Default)]
pub struct Ledger {
    /// email → id, for every 201.
    pub acknowledged: HashMap<String, String>,
    /// Creates answered 500, 503 or 504: they may or may not have been stored.
    pub unacknowledged: Vec<Attempt>,
    /// Anything else for a fresh email: a bug.
    pub unexpected: Vec<String>,
}

/// HTTP clients creating customers until stopped.
pub struct Load {
    ledger: Arc<Mutex<Ledger>>,
    acked: Arc<Notify>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` clients on `http`; emails are `{tag}-c{client}-{n}@load.example.com`,
    /// so `tag` is letters, digits and `-`.
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
                        let email = format!("{tag}-c{client}-{n}@load.example.com");
                        let body = customer_with_email(&email);
                        let key = (client % 2 == 1).then(|| format!("{tag}-key-{client}-{n}"));
                        let response = match &key {
                            Some(key) => http.create_idempotent(&body, key).await,
                            None => http.create(&body).await,
                        };
                        let status = response.status;
                        {
                            let mut ledger = ledger.lock().unwrap();
                            match status {
                                201 => {
                                    let id = response.json()["id"].as_str().unwrap().to_owned();
                                    ledger.acknowledged.insert(email, id);
                                    acked.notify_waiters();
                                }
                                500 | 503 | 504 => ledger.unacknowledged.push(Attempt {
                                    email,
                                    body,
                                    key,
                                    status,
                                }),
                                other => ledger
                                    .unexpected
                                    .push(format!("{email}: {other} {:?}", response.body)),
                            }
                        }
                        if status != 201 {
                            // A well-behaved client backs off while the service is unavailable.
                            tokio::time::sleep(Duration::from_millis(20)).await;
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

/// What [`Ledger::verify`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub acknowledged: usize,
    /// Acknowledged creates that are not stored as acknowledged (must be empty).
    pub lost: Vec<String>,
    pub unacknowledged: usize,
    /// Unacknowledged creates that had been stored anyway (before their answer was lost).
    pub stored_anyway: usize,
    /// Emails with more than one customer, or keyed retries that answered differently, or
    /// anything else impossible (must be empty).
    pub violations: Vec<String>,
}

impl Verdict {
    /// Fails the test unless every acknowledged create is stored and nothing impossible
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
            "acknowledged: {}, lost: {}, unacknowledged: {} ({} had been stored, {} had not), violations: {}",
            self.acknowledged,
            self.lost.len(),
            self.unacknowledged,
            self.stored_anyway,
            self.unacknowledged - self.stored_anyway,
            self.violations.len()
        )
    }
}

impl Ledger {
    /// Asks a running worker (over `nats`) about every create of the ledger; see the module.
    pub async fn verify(&self, nats: &async_nats::Client) -> Verdict {
        let mut verdict = Verdict {
            acknowledged: self.acknowledged.len(),
            unacknowledged: self.unacknowledged.len(),
            violations: self.unexpected.clone(),
            ..Verdict::default()
        };
        for (email, id) in &self.acknowledged {
            let stored = get(nats, id).await;
            let owners = owners(nats, email).await;
            if stored.as_ref().map(|c| c["email"].clone()) != Some(Value::from(email.as_str()))
                || owners != [id.clone()]
            {
                verdict
                    .lost
                    .push(format!("{email} ({id}): owners {owners:?}"));
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
            let Some(key) = &attempt.key else { continue };
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
                    "{} with key {key}: owners {before:?} then {after:?}, answers {} then {} (replayed: {})",
                    attempt.email, first.0, again.0, again.2
                ));
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

/// The stored customer with this id.
async fn get(nats: &async_nats::Client, id: &str) -> Option<Value> {
    let reply = request(nats, Endpoint::Get, async_nats::HeaderMap::new(), id.into()).await;
    match nats_header(&reply, headers::SERVICE_ERROR_CODE) {
        None => Some(serde_json::from_slice(&reply.payload).expect("a customer")),
        Some("404") => None,
        Some(other) => panic!("get {id}: {other}"),
    }
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
