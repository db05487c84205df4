//! The NATS micro service `customers`: endpoints `create`, `get`, `list`, `search`,
//! `update` and `delete`. Each request is handled in its own task. Writes go through idempotency (see
//! `idempotency`) and the committer (`writes`); reads go straight to the store, never behind
//! the commit queue (`reads`). Every answer is
//! a [`Reply`]: the stored customer, a page, or a problem body with the NATS micro error
//! headers.
//!
//! The worker protects itself whoever calls it, not only behind the ingress: a request whose
//! requester has stopped waiting (its `Request-Deadline` has passed) is dropped unread; past
//! `max_in_flight` requests a new one is answered 503 at once; a payload over the body limit
//! is refused before anything reads it; pages and searches run on the blocking pool, never
//! on the runtime's thread (a get runs there while it is a memory lookup: `reads`); and a page of customers stops before its reply would pass the
//! connection's `max_payload`.
//!
//! Replicated, a standby registers only `get`, `list` and `search` (role `standby` in its `$SRV.INFO`
//! metadata) and passes a read barrier before every read: an acknowledged write could
//! otherwise be missing, or shown at an older version. Every read then passes its
//! instance's gate once more before it is answered: a primary answers only while its lease
//! is surely held, or when the log shows nobody appended since (`replication::ReadGate`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod reads;
mod writes;

use async_nats::service::{Request, Service, ServiceExt, endpoint::Endpoint as Subscription};
use customers_shared::ApiError;
use customers_shared::runtime::clock::unix_ms;
use customers_shared::wire::protocol::{self, Endpoint, headers};
use futures_util::{Stream, StreamExt};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::commit::CommitHandle;
use crate::idempotency::Claims;
use crate::metrics::Metrics;
use crate::replication::ReadGate;
use crate::reply::Reply;
use crate::role::Role;
use crate::storage::store::Store;

/// The answer past the worker's bounds (its requests in flight, the commit queue).
pub(crate) const OVERLOADED: ApiError = ApiError::ServiceUnavailable {
    reason: "the worker is overloaded",
    retry_after_secs: 1,
};

/// What every request task needs.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) store: Arc<Store>,
    pub(crate) committer: CommitHandle,
    pub(crate) claims: Arc<Claims>,
    pub(crate) client: async_nats::Client,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) idempotency_retention: Duration,
    /// An update or delete without `If-Match` is `428`.
    pub(crate) require_if_match: bool,
    pub(crate) metrics: Arc<Metrics>,
    /// What a read passes before it is answered, by role.
    pub(crate) reads: ReadGate,
    /// Whether a get runs on the runtime's thread or on the blocking pool.
    pub(crate) gets: Arc<reads::GetPlacement>,
}

/// The running micro service with its endpoints.
pub(crate) struct CustomersService {
    /// Until [`CustomersService::serve`] has stopped it.
    service: Option<Service>,
    /// By endpoint; a standby has none that writes.
    endpoints: Vec<(Endpoint, Subscription)>,
    context: Arc<Context>,
}

impl CustomersService {
    /// Registers the service and its endpoints on `client`; replicated, `role` goes into
    /// the service's metadata, and a standby gets no endpoint that writes.
    pub(crate) async fn start(
        client: &async_nats::Client,
        subject_prefix: &str,
        context: Arc<Context>,
        role: Role,
    ) -> Result<Self, async_nats::Error> {
        // async-nats counts an error only on its own error path, which sends an empty body;
        // the contract's problem replies are normal replies, so the real count goes in `data`.
        let metrics = context.metrics.clone();
        let metadata = if role.is_replicated() {
            [("role".to_owned(), role.name().to_owned())].into()
        } else {
            Default::default()
        };
        let service = client
            .service_builder()
            .description(
                "Creates, changes and deletes customers with unique emails, stored durably; reads them back",
            )
            .metadata(metadata)
            .stats_handler(
                move |endpoint, _| serde_json::json!({ "num_errors": metrics.errors(&endpoint) }),
            )
            .start(protocol::SERVICE_NAME, protocol::SERVICE_VERSION)
            .await?;
        let mut endpoints = Vec::with_capacity(3);
        for endpoint in Endpoint::ALL {
            if endpoint.writes() && role == Role::Standby {
                continue;
            }
            let subscription = service
                .endpoint_builder()
                .name(endpoint.name())
                .add(endpoint.subject(subject_prefix))
                .await?;
            endpoints.push((endpoint, subscription));
        }
        Ok(Self {
            service: Some(service),
            endpoints,
            context,
        })
    }

    /// Serves until `shutdown` resolves, then stops taking requests (the queue group hands
    /// new ones to other workers) and waits up to `grace` for the accepted ones to be answered.
    pub(crate) async fn serve(&mut self, shutdown: impl Future<Output = ()>, grace: Duration) {
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
        for (_, subscription) in &mut self.endpoints {
            if let Err(e) = subscription.stop().await {
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

/// The requests of all endpoints as one stream, each tagged with its endpoint.
fn requests(
    endpoints: &mut [(Endpoint, Subscription)],
) -> impl Stream<Item = (Endpoint, Request)> + Unpin + '_ {
    futures_util::stream::select_all(
        endpoints
            .iter_mut()
            .map(|(endpoint, subscription)| subscription.map(move |r| (*endpoint, r))),
    )
}

/// Takes a request on: dropped if its requester has stopped waiting, answered 503 at once if
/// too many are in flight, handled in a task of its own otherwise.
async fn accept(
    context: &Arc<Context>,
    tasks: &mut JoinSet<()>,
    operation: Endpoint,
    request: Request,
) {
    let deadline =
        headers::value(&request.message, headers::DEADLINE).and_then(|v| v.parse::<u64>().ok());
    if deadline.is_some_and(|deadline| unix_ms() > deadline) {
        context.metrics.expired(operation);
        return;
    }
    if tasks.len() >= context.max_in_flight {
        respond(
            context,
            operation,
            &request,
            Reply::error(&OVERLOADED),
            false,
        )
        .await;
        return;
    }
    tasks.spawn(handle(operation, request, context.clone()));
}

async fn handle(operation: Endpoint, request: Request, context: Arc<Context>) {
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
                Endpoint::Create => writes::create(&request.message, &context).await,
                Endpoint::Update | Endpoint::Delete => {
                    writes::change(operation, &request.message, &context).await
                }
                Endpoint::Get => (reads::get(payload, &context).await, false),
                Endpoint::List => (reads::list(payload, &context).await, false),
                Endpoint::Search => (reads::search(payload, &context).await, false),
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
    operation: Endpoint,
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
