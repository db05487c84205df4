//! Talking to the worker over NATS: one request per HTTP request (create, get, list, update
//! or delete), with
//! the forwarded headers and a timeout, and the reply classified as a success or a problem. NATS failures become
//! [`ApiError`]s here: no responders and a lost connection are 503, a timeout is 504.
//!
//! Replies arrive on one wildcard inbox subscription and are routed to the waiting request
//! by token. Every way a request can end (reply, timeout, disconnect, the HTTP client going
//! away) removes its entry, so a slow or absent worker cannot make the ingress grow; the
//! client library's own `request()` keeps an entry per timed-out request (nats.rs #1617).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{HeaderMap, Message, StatusCode as NatsStatus};
use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::runtime::clock::unix_ms;
use customers_shared::runtime::nats::{Denial, NatsConnection};
use customers_shared::wire::protocol::{self, Endpoint, headers};
use futures_util::StreamExt;
use http::StatusCode;
use tokio::sync::{oneshot, watch};

/// The worker's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Get,
    List,
    Search,
    Update,
    Delete,
    /// `$SRV.PING.customers`: is any worker answering? (readiness)
    Ping,
}

impl Operation {
    const ALL: [Self; 7] = [
        Self::Create,
        Self::Get,
        Self::List,
        Self::Search,
        Self::Update,
        Self::Delete,
        Self::Ping,
    ];
}

/// Longest wait for a ping reply: a readiness probe must answer quickly.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What the worker answered.
pub enum WorkerReply {
    /// The body (customer, page or deletion); on a reply carrying a customer its id and
    /// entity tag, and whether the reply is a replay of an idempotent write.
    Success {
        customer_id: Option<String>,
        etag: Option<String>,
        replayed: bool,
        body: Bytes,
    },
    /// A problem body with its status (and `Retry-After` or, on a `412`, the current `ETag`
    /// when the worker set them); a replay when an idempotent write's stored refusal is sent
    /// again.
    Problem {
        status: StatusCode,
        retry_after: Option<String>,
        etag: Option<String>,
        replayed: bool,
        body: Bytes,
    },
}

/// The requests waiting for a reply, by token, with the endpoint each was sent to.
type Pending = Arc<Mutex<HashMap<u64, (Operation, oneshot::Sender<Message>)>>>;

#[derive(Clone)]
pub struct WorkerClient {
    client: async_nats::Client,
    connected: watch::Receiver<bool>,
    denied: watch::Receiver<Option<Denial>>,
    /// Subjects of every operation, in [`Operation`] order.
    subjects: Arc<[String; Operation::ALL.len()]>,
    timeout: Duration,
    /// `{inbox}.`: a request's reply subject is this plus its token.
    reply_prefix: Arc<str>,
    next_token: Arc<AtomicU64>,
    pending: Pending,
}

const BROKER_UNREACHABLE: ApiError = ApiError::ServiceUnavailable {
    reason: "the message broker is unreachable",
    retry_after_secs: 1,
};

impl WorkerClient {
    /// Subscribes to the reply inbox and starts routing replies.
    pub async fn start(
        connection: NatsConnection,
        subject_prefix: &str,
        timeout: Duration,
    ) -> Result<Self, async_nats::SubscribeError> {
        let NatsConnection {
            client,
            connected,
            denied,
        } = connection;
        let reply_prefix: Arc<str> = format!("{}.", client.new_inbox()).into();
        let mut replies = client.subscribe(format!("{reply_prefix}*")).await?;
        let pending: Pending = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            while let Some(reply) = replies.next().await {
                let token = reply
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse().ok());
                let waiting = token.and_then(|t| routes.lock().expect("pending map").remove(&t));
                if let Some((_, waiting)) = waiting {
                    let _ = waiting.send(reply);
                }
            }
        });
        let subjects = Arc::new(Operation::ALL.map(|operation| match operation {
            Operation::Create => Endpoint::Create.subject(subject_prefix),
            Operation::Get => Endpoint::Get.subject(subject_prefix),
            Operation::List => Endpoint::List.subject(subject_prefix),
            Operation::Search => Endpoint::Search.subject(subject_prefix),
            Operation::Update => Endpoint::Update.subject(subject_prefix),
            Operation::Delete => Endpoint::Delete.subject(subject_prefix),
            Operation::Ping => format!("$SRV.PING.{}", protocol::SERVICE_NAME),
        }));
        tokio::spawn(end_refused_requests(
            denied.clone(),
            pending.clone(),
            subjects.clone(),
        ));
        Ok(Self {
            client,
            connected,
            denied,
            subjects,
            timeout,
            reply_prefix,
            next_token: Arc::default(),
            pending,
        })
    }

    /// Whether the NATS connection is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A permission nats-server refused recently, as the error to answer with.
    pub(crate) fn refused(&self) -> Option<ApiError> {
        Denial::recent(&self.denied).map(|denial| ApiError::NatsPermissionDenied {
            refused: denial.refused,
        })
    }

    /// At start: one ping through the reply inbox, which proves the inbox subscription and
    /// the ping's publish are allowed (a missing worker answers too: with "no responders").
    /// A refusal is the error; silence without one is left to readiness.
    pub(crate) async fn check_permissions(&self) -> Result<(), ApiError> {
        let mut denied = self.denied.clone();
        let ping = self.request(Operation::Ping, Bytes::new(), HeaderMap::new());
        tokio::select! {
            _ = ping => {}
            _ = denied.wait_for(Option::is_some) => {}
        }
        match self.refused() {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Requests waiting for a reply right now.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().expect("pending map").len()
    }

    /// Sends `body` with `request_headers` to the endpoint of `operation` and waits for the
    /// worker's reply, telling the worker when this wait ends (`Request-Deadline`), so that a
    /// worker that picks the request up later does not work for nobody.
    pub async fn request(
        &self,
        operation: Operation,
        body: Bytes,
        mut request_headers: HeaderMap,
    ) -> Result<WorkerReply, ApiError> {
        // A disconnected client would buffer the request and wait out the timeout;
        // the caller deserves a fast answer instead.
        let mut connected = self.connected.clone();
        if !*connected.borrow_and_update() {
            return Err(BROKER_UNREACHABLE);
        }
        // A publish nats-server refused a moment ago would be dropped again, silently: the
        // caller learns why at once (and the next try after a while finds out whether the
        // grant was fixed). One refused later ends the request through its entry.
        let subject = &self.subjects[operation as usize];
        if let Some(refused) = self.refused_publish(subject) {
            return Err(refused);
        }
        let timeout = match operation {
            Operation::Ping => self.timeout.min(PING_TIMEOUT),
            _ => self.timeout,
        };
        let deadline_ms = unix_ms().saturating_add(timeout.as_millis() as u64);
        request_headers.insert(headers::DEADLINE, deadline_ms.to_string().as_str());
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (sender, reply) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending map")
            .insert(token, (operation, sender));
        let _entry = PendingEntry {
            pending: &self.pending,
            token,
        };
        self.client
            .publish_with_reply_and_headers(
                subject.clone(),
                format!("{}{token}", self.reply_prefix),
                request_headers,
                body,
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "could not publish the request");
                BROKER_UNREACHABLE
            })?;
        tokio::select! {
            reply = reply => match reply {
                Ok(message) if message.status == Some(NatsStatus::NO_RESPONDERS) => {
                    Err(ApiError::ServiceUnavailable {
                        reason: "no worker is available",
                        retry_after_secs: 1,
                    })
                }
                Ok(message) => classify(message),
                // Its entry was ended: the connection went, or nats-server refused the publish.
                Err(_) => Err(self.refused_publish(subject).unwrap_or(BROKER_UNREACHABLE)),
            },
            () = tokio::time::sleep(timeout) => Err(ApiError::WorkerTimeout {
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            _ = connected.wait_for(|up| !*up) => Err(BROKER_UNREACHABLE),
        }
    }
}

impl WorkerClient {
    /// The error for a request to `subject` whose publish nats-server refused recently.
    fn refused_publish(&self, subject: &str) -> Option<ApiError> {
        let denied = self.denied.borrow();
        let denial = denied.as_ref()?;
        (denial.is_publish_to(subject) && denial.at.elapsed() < Denial::FRESH_FOR).then(|| {
            ApiError::NatsPermissionDenied {
                refused: denial.refused.clone(),
            }
        })
    }
}

/// Ends the requests waiting on an endpoint whose publish nats-server refuses (the refusal
/// arrives on its own, not with the request, and the request itself was dropped): their
/// entries go, and each answers with the refusal instead of waiting out its timeout.
async fn end_refused_requests(
    mut denied: watch::Receiver<Option<Denial>>,
    pending: Pending,
    subjects: Arc<[String; Operation::ALL.len()]>,
) {
    while denied.changed().await.is_ok() {
        let refused: Vec<Operation> = match denied.borrow_and_update().as_ref() {
            Some(denial) => Operation::ALL
                .into_iter()
                .filter(|&operation| denial.is_publish_to(&subjects[operation as usize]))
                .collect(),
            None => continue,
        };
        if !refused.is_empty() {
            pending
                .lock()
                .expect("pending map")
                .retain(|_, (operation, _)| !refused.contains(operation));
        }
    }
}

/// Removes a request's routing entry however the request ends.
struct PendingEntry<'a> {
    pending: &'a Pending,
    token: u64,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .expect("pending map")
            .remove(&self.token);
    }
}

fn classify(message: Message) -> Result<WorkerReply, ApiError> {
    let header = |name: &str| headers::value(&message, name).map(str::to_owned);
    let replayed = header(headers::IDEMPOTENT_REPLAYED).is_some_and(|v| v == "true");
    if let Some(code) = header(headers::SERVICE_ERROR_CODE) {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|s| s.is_client_error() || s.is_server_error());
        return match status {
            Some(status) => Ok(WorkerReply::Problem {
                status,
                retry_after: header(headers::RETRY_AFTER),
                etag: header(headers::ETAG),
                replayed,
                body: message.payload,
            }),
            None => {
                tracing::error!(%code, "worker replied with an invalid error code");
                Err(ApiError::Internal)
            }
        };
    }
    Ok(WorkerReply::Success {
        customer_id: header(headers::CUSTOMER_ID),
        etag: header(headers::ETAG),
        replayed,
        body: message.payload,
    })
}
