//! The NATS micro service `customers`: endpoints `create`, `get` and `list`. Each request is
//! handled in its own task. Creates go through idempotency (see `idempotency`) and the
//! committer; reads go straight to the store, never behind the commit queue. Every answer is
//! a [`Reply`]: the stored customer, a page, or a problem body with the NATS micro error
//! headers.
//!
//! The worker protects itself whoever calls it, not only behind the ingress: a request whose
//! requester has stopped waiting (its `Request-Deadline` has passed) is dropped unread; past
//! `max_in_flight` requests a new one is answered 503 at once; a payload over the body limit
//! is refused before anything reads it; sled reads run on the blocking pool, never on the
//! runtime's thread; and a page of customers stops before its reply would pass the
//! connection's `max_payload`.
//!
//! Replicated, a standby registers only `get` and `list` (role `standby` in its `$SRV.INFO`
//! metadata) and passes a read barrier first where an acknowledged create could otherwise be
//! missing: before every list, and before answering 404 to a get. Every read then passes its
//! instance's gate once more before it is answered: a primary answers only while its lease
//! is surely held, or when the log shows nobody appended since (`replication::ReadGate`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use async_nats::service::{Request, Service, ServiceExt, endpoint::Endpoint};
use bytes::Bytes;
use customers_shared::wire::idempotency::IdempotencyKey;
use customers_shared::wire::list::{ListQuery, list_body};
use customers_shared::wire::protocol::{self, headers};
use customers_shared::{ApiError, CustomerId, NewCustomer};
use futures_util::{Stream, StreamExt};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::committer::{CommitError, CommitHandle, Write};
use crate::idempotency::{self, Claims, IdempotencyClaim};
use crate::metrics::{Metrics, Operation};
use crate::replication::{ReadGate, Role};
use crate::reply::Reply;
use crate::store::Store;

/// What every request task needs.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<Store>,
    pub committer: CommitHandle,
    pub claims: Arc<Claims>,
    pub client: async_nats::Client,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub idempotency_retention: Duration,
    pub metrics: Arc<Metrics>,
    /// What a read passes before it is answered, by role.
    pub reads: ReadGate,
}

/// Room left in a reply for its headers and NATS's own framing, below `max_payload`.
const REPLY_HEADROOM: usize = 4 * 1024;

/// The running micro service with its endpoints.
pub struct CustomersService {
    /// Until [`CustomersService::serve`] has stopped it.
    service: Option<Service>,
    /// By operation; a standby has no `create`.
    endpoints: Vec<(Operation, Endpoint)>,
    context: Arc<Context>,
}

impl CustomersService {
    /// Registers the service and its endpoints on `client`; replicated, `role` goes into
    /// the service's metadata, and a standby gets no `create` endpoint.
    pub async fn start(
        client: &async_nats::Client,
        subject_prefix: &str,
        context: Arc<Context>,
        role: Option<Role>,
    ) -> Result<Self, async_nats::Error> {
        // async-nats counts an error only on its own error path, which sends an empty body;
        // the contract's problem replies are normal replies, so the real count goes in `data`.
        let metrics = context.metrics.clone();
        let metadata = role
            .map(|role| [("role".to_owned(), role.name().to_owned())].into())
            .unwrap_or_default();
        let service = client
            .service_builder()
            .description("Creates customers with unique emails, stored durably; reads them back")
            .metadata(metadata)
            .stats_handler(
                move |endpoint, _| serde_json::json!({ "num_errors": metrics.errors(&endpoint) }),
            )
            .start(protocol::SERVICE_NAME, protocol::SERVICE_VERSION)
            .await?;
        let mut endpoints = Vec::with_capacity(3);
        for operation in [Operation::create, Operation::get, Operation::list] {
            if operation == Operation::create && role == Some(Role::Standby) {
                continue;
            }
            let endpoint = service
                .endpoint_builder()
                .name(operation.name())
                .add(protocol::subject(subject_prefix, operation.name()))
                .await?;
            endpoints.push((operation, endpoint));
        }
        Ok(Self {
            service: Some(service),
            endpoints,
            context,
        })
    }

    /// Serves until `shutdown` resolves, then stops taking requests (the queue group hands
    /// new ones to other workers) and waits up to `grace` for the accepted ones to be answered.
    pub async fn serve(&mut self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        {
            let mut requests = requests(&mut self.endpoints);
            loop {
                tokio::select! {
                    request = requests.next() => match request {
                        Some((operation, request)) => {
                            accept(&self.context, &mut tasks, operation, request).await;
                        }
                        None => break,
                    },
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    () = &mut shutdown => break,
                }
            }
        }
        tracing::info!(in_flight = tasks.len(), "stopping: no new requests taken");
        for (_, endpoint) in &mut self.endpoints {
            if let Err(e) = endpoint.stop().await {
                tracing::warn!(error = %e, "could not unsubscribe an endpoint");
            }
        }
        if let Some(Err(e)) = match self.service.take() {
            Some(service) => Some(service.stop().await),
            None => None,
        } {
            tracing::warn!(error = %e, "could not stop the micro service");
        }
        let context = self.context.clone();
        let drained = tokio::time::timeout(grace, async {
            // Requests already delivered to this worker are still answered.
            let mut requests = requests(&mut self.endpoints);
            while let Some((operation, request)) = requests.next().await {
                accept(&context, &mut tasks, operation, request).await;
            }
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::error!(
                abandoned = tasks.len(),
                "grace period over; abandoning requests"
            );
            tasks.abort_all();
        }
    }
}

/// The requests of all endpoints as one stream, each tagged with its operation.
fn requests(
    endpoints: &mut [(Operation, Endpoint)],
) -> impl Stream<Item = (Operation, Request)> + Unpin + '_ {
    futures_util::stream::select_all(
        endpoints
            .iter_mut()
            .map(|(operation, endpoint)| endpoint.map(move |r| (*operation, r))),
    )
}

/// Takes a request on: dropped if its requester has stopped waiting, answered 503 at once if
/// too many are in flight, handled in a task of its own otherwise.
async fn accept(
    context: &Arc<Context>,
    tasks: &mut JoinSet<()>,
    operation: Operation,
    request: Request,
) {
    let deadline =
        headers::value(&request.message, headers::DEADLINE).and_then(|v| v.parse::<u64>().ok());
    if deadline.is_some_and(|deadline| idempotency::now_ms() > deadline) {
        context.metrics.expired(operation);
        return;
    }
    if tasks.len() >= context.max_in_flight {
        let overloaded = ApiError::ServiceUnavailable {
            reason: "the worker is overloaded",
            retry_after_secs: 1,
        };
        respond(
            context,
            operation,
            &request,
            Reply::error(&overloaded),
            false,
        )
        .await;
        return;
    }
    tasks.spawn(handle(operation, request, context.clone()));
}

async fn handle(operation: Operation, request: Request, context: Arc<Context>) {
    let request_id = headers::value(&request.message, headers::REQUEST_ID).map(str::to_owned);
    let traceparent = headers::value(&request.message, headers::TRACEPARENT).map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        operation = operation.name(),
        request_id = request_id.as_deref().unwrap_or(""),
        traceparent = traceparent.as_deref().unwrap_or("")
    );
    async move {
        let payload = &request.message.payload;
        let (reply, replayed) = if payload.len() > context.max_body_bytes {
            // Refused unread: not parsed, not fingerprinted, not stored under a key.
            let too_large = ApiError::PayloadTooLarge {
                limit_bytes: context.max_body_bytes,
            };
            (Reply::error(&too_large), false)
        } else {
            match operation {
                Operation::create => create(&request.message, &context).await,
                Operation::get => (get(payload, &context).await, false),
                Operation::list => (list(payload, &context).await, false),
            }
        };
        tracing::debug!(status = reply.status, replayed, "answered");
        respond(&context, operation, &request, reply, replayed).await;
    }
    .instrument(span)
    .await
}

/// Sends `reply` (counted in the metrics) with its headers.
async fn respond(
    context: &Context,
    operation: Operation,
    request: &Request,
    reply: Reply,
    replayed: bool,
) {
    context.metrics.reply(operation, reply.status, replayed);
    let request_id = headers::value(&request.message, headers::REQUEST_ID);
    let reply_headers = reply.headers(request_id, replayed);
    if let Err(e) = request
        .respond_with_headers(Ok(reply.body), reply_headers)
        .await
    {
        tracing::warn!(error = %e, "could not send the reply");
    }
}

/// A create, idempotent when the request carries a key. Returns the reply and whether it is
/// a replay of a stored one.
async fn create(message: &Message, context: &Context) -> (Reply, bool) {
    let payload = &message.payload;
    let key = match headers::value(message, headers::IDEMPOTENCY_KEY)
        .map(|key| IdempotencyKey::parse(key.as_bytes()))
        .transpose()
    {
        Ok(key) => key,
        Err(e) => return (Reply::error(&e), false),
    };
    let Some(key) = key else {
        return (create_customer(payload, None, context).await, false);
    };
    let claim = IdempotencyClaim::new(key, payload);
    let (store, claims, retention) = (
        context.store.clone(),
        context.claims.clone(),
        context.idempotency_retention,
    );
    let looked_up = blocking(move || {
        if let Some(stored) = stored_reply(&store, &claim, retention) {
            return Ok(Err(stored));
        }
        let Some(guard) = claims.claim(&claim.key) else {
            let in_use = ApiError::IdempotencyKeyInUse {
                retry_after_secs: 1,
            };
            return Ok(Err((Reply::error(&in_use), false)));
        };
        // The previous holder may have committed between the lookup and the claim.
        match stored_reply(&store, &claim, retention) {
            Some(stored) => Ok(Err(stored)),
            None => Ok(Ok((claim, guard))),
        }
    })
    .await;
    match looked_up {
        Ok(Ok((claim, _held_until_committed))) => {
            (create_customer(payload, Some(claim), context).await, false)
        }
        Ok(Err(stored)) => stored,
        Err(e) => (Reply::error(&e), false),
    }
}

/// The stored reply for `claim`'s key: a replay when the body is the same, 422 otherwise.
fn stored_reply(
    store: &Store,
    claim: &IdempotencyClaim,
    retention: Duration,
) -> Option<(Reply, bool)> {
    match idempotency::lookup(store, &claim.key, retention) {
        Ok(None) => None,
        Ok(Some(record)) if record.fingerprint == claim.fingerprint => Some((record.reply, true)),
        Ok(Some(_)) => Some((Reply::error(&ApiError::IdempotencyKeyReused), false)),
        Err(e) => {
            tracing::error!(error = %e, "idempotency lookup failed");
            Some((Reply::error(&ApiError::Internal), false))
        }
    }
}

/// Validates and commits one create. With a claim, the final reply is stored under its key
/// in the same group commit, refusals (not JSON, invalid fields) included.
async fn create_customer(
    payload: &[u8],
    claim: Option<IdempotencyClaim>,
    context: &Context,
) -> Reply {
    let write = match NewCustomer::parse(payload) {
        Ok(customer) => Write::Create { customer, claim },
        Err(refusal) => {
            let reply = Reply::error(&refusal.into());
            let Some(claim) = claim else {
                return reply;
            };
            Write::Remember { claim, reply }
        }
    };
    context
        .committer
        .commit(write)
        .await
        .unwrap_or_else(|e| Reply::error(&commit_error(e)))
}

fn commit_error(error: CommitError) -> ApiError {
    match error {
        CommitError::Overloaded => ApiError::ServiceUnavailable {
            reason: "the worker is overloaded",
            retry_after_secs: 1,
        },
        CommitError::Stopped => ApiError::ServiceUnavailable {
            reason: "the worker is stopping",
            retry_after_secs: 1,
        },
        CommitError::NotPrimary => ApiError::ServiceUnavailable {
            reason: "this instance is not the primary (failing over)",
            retry_after_secs: 1,
        },
        CommitError::OutboxFull => ApiError::ServiceUnavailable {
            reason: "events cannot be published (JetStream unreachable) and the outbox is full",
            retry_after_secs: 5,
        },
        CommitError::Failed | CommitError::Unstorable => {
            tracing::error!(error = %error, "create not committed");
            ApiError::Internal
        }
    }
}

/// `customers.v1.get`: the payload is the id. A malformed id is a 404 like an unknown one:
/// no customer has it.
async fn get(payload: &[u8], context: &Context) -> Reply {
    let Some(id) = std::str::from_utf8(payload)
        .ok()
        .and_then(|id| id.trim().parse::<CustomerId>().ok())
    else {
        return Reply::error(&ApiError::CustomerNotFound);
    };
    let lookup = || {
        let store = context.store.clone();
        blocking(move || store.get(id))
    };
    let mut found = lookup().await;
    if matches!(found, Ok(None)) && matches!(context.reads, ReadGate::Standby(_)) {
        // A standby may not have applied a create its client was already told about.
        if !context.reads.caught_up().await {
            return Reply::error(&behind());
        }
        found = lookup().await;
    }
    if !context.reads.still_current().await {
        return Reply::error(&behind());
    }
    match found {
        Ok(Some(json)) => Reply::ok(Bytes::copy_from_slice(&json)),
        Ok(None) => Reply::error(&ApiError::CustomerNotFound),
        Err(e) => Reply::error(&e),
    }
}

/// A standby that cannot catch up with the log within its barrier's wait.
fn behind() -> ApiError {
    ApiError::ServiceUnavailable {
        reason: "this replica is behind the log",
        retry_after_secs: 1,
    }
}

/// `customers.v1.list`: a page of up to `limit` customers that, with its headers, fits in one
/// NATS message on this connection (`has_more` says when it stopped short).
async fn list(payload: &[u8], context: &Context) -> Reply {
    let query = match ListQuery::parse(payload) {
        Ok(query) => query,
        Err(e) => return Reply::error(&e),
    };
    let max_bytes = context.client.max_payload().saturating_sub(REPLY_HEADROOM);
    if !context.reads.caught_up().await {
        return Reply::error(&behind());
    }
    let store = context.store.clone();
    let page = blocking(move || store.list(&query, max_bytes)).await;
    if !context.reads.still_current().await {
        return Reply::error(&behind());
    }
    match page {
        Ok((customers, has_more)) => Reply::ok(Bytes::from(list_body(
            customers.iter().map(|c| &c[..]),
            has_more,
        ))),
        Err(e) => Reply::error(&e),
    }
}

/// Runs sled work on the blocking pool: a read that misses sled's cache waits for the disk,
/// and the runtime's thread must not. A storage error or a panic there is a 500.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "read failed");
            Err(ApiError::Internal)
        }
        Err(e) => {
            tracing::error!(error = %e, "read task failed");
            Err(ApiError::Internal)
        }
    }
}
