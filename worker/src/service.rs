//! The NATS micro service `customers`: endpoints `create`, `get` and `list`. Each request is
//! handled in its own task (so decoding runs concurrently). Creates go through idempotency
//! (see `idempotency`) and the committer; reads go straight to the store, never behind the
//! commit queue. Every answer is a [`Reply`]: the stored customer, a page, or a problem body
//! with the NATS micro error headers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Message;
use async_nats::service::{Request, Service, ServiceExt, endpoint::Endpoint};
use bytes::Bytes;
use customers_shared::idempotency::IdempotencyKey;
use customers_shared::list::{ListQuery, list_body};
use customers_shared::protocol::{self, headers};
use customers_shared::{ApiError, CustomerId, NewCustomer};
use futures_util::{Stream, StreamExt};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::committer::{CommitError, CommitHandle, Write};
use crate::idempotency::{self, Claims, IdempotencyClaim};
use crate::metrics::{Metrics, Operation};
use crate::reply::Reply;
use crate::store::Store;

/// What every request task needs.
pub struct Context {
    pub store: Arc<Store>,
    pub committer: CommitHandle,
    pub claims: Arc<Claims>,
    pub max_body_bytes: usize,
    pub idempotency_retention: Duration,
    pub metrics: Arc<Metrics>,
}

/// The running micro service with its endpoints.
pub struct CustomersService {
    service: Service,
    create: Endpoint,
    get: Endpoint,
    list: Endpoint,
    context: Arc<Context>,
}

impl CustomersService {
    /// Registers the service and its endpoints on `client`.
    pub async fn start(
        client: &async_nats::Client,
        subject_prefix: &str,
        context: Context,
    ) -> Result<Self, async_nats::Error> {
        // async-nats counts an error only on its own error path, which sends an empty body;
        // the contract's problem replies are normal replies, so the real count goes in `data`.
        let metrics = context.metrics.clone();
        let service = client
            .service_builder()
            .description("Creates customers with unique emails, stored durably; reads them back")
            .stats_handler(
                move |endpoint, _| serde_json::json!({ "num_errors": metrics.errors(&endpoint) }),
            )
            .start(protocol::SERVICE_NAME, protocol::SERVICE_VERSION)
            .await?;
        let endpoint = async |name: &str| {
            service
                .endpoint_builder()
                .name(name)
                .add(protocol::subject(subject_prefix, name))
                .await
        };
        let create = endpoint(protocol::CREATE_ENDPOINT).await?;
        let get = endpoint(protocol::GET_ENDPOINT).await?;
        let list = endpoint(protocol::LIST_ENDPOINT).await?;
        Ok(Self {
            service,
            create,
            get,
            list,
            context: Arc::new(context),
        })
    }

    /// Serves until `shutdown` resolves, then stops taking requests (the queue group hands
    /// new ones to other workers) and waits up to `grace` for the accepted ones to be answered.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        {
            let mut requests = requests(&mut self.create, &mut self.get, &mut self.list);
            loop {
                tokio::select! {
                    request = requests.next() => match request {
                        Some((operation, request)) => {
                            tasks.spawn(handle(operation, request, self.context.clone()));
                        }
                        None => break,
                    },
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    () = &mut shutdown => break,
                }
            }
        }
        tracing::info!(in_flight = tasks.len(), "stopping: no new requests taken");
        for endpoint in [&mut self.create, &mut self.get, &mut self.list] {
            if let Err(e) = endpoint.stop().await {
                tracing::warn!(error = %e, "could not unsubscribe an endpoint");
            }
        }
        if let Err(e) = self.service.stop().await {
            tracing::warn!(error = %e, "could not stop the micro service");
        }
        let context = self.context.clone();
        let drained = tokio::time::timeout(grace, async {
            // Requests already delivered to this worker are still answered.
            let mut requests = requests(&mut self.create, &mut self.get, &mut self.list);
            while let Some((operation, request)) = requests.next().await {
                tasks.spawn(handle(operation, request, context.clone()));
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
fn requests<'a>(
    create: &'a mut Endpoint,
    get: &'a mut Endpoint,
    list: &'a mut Endpoint,
) -> impl Stream<Item = (Operation, Request)> + Unpin + 'a {
    futures_util::stream::select(
        create.map(|r| (Operation::create, r)),
        futures_util::stream::select(
            get.map(|r| (Operation::get, r)),
            list.map(|r| (Operation::list, r)),
        ),
    )
}

async fn handle(operation: Operation, request: Request, context: Arc<Context>) {
    let request_id = header(&request.message, headers::REQUEST_ID)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let traceparent = header(&request.message, headers::TRACEPARENT)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let span = tracing::info_span!(
        "request",
        operation = operation.name(),
        request_id = request_id.as_deref().unwrap_or(""),
        traceparent = traceparent.as_deref().unwrap_or("")
    );
    async move {
        let payload = &request.message.payload;
        let (reply, replayed) = match operation {
            Operation::create => create(&request.message, &context).await,
            Operation::get => (
                get(payload, &context).unwrap_or_else(|e| Reply::error(&e)),
                false,
            ),
            Operation::list => (
                list(payload, &context)
                    .await
                    .unwrap_or_else(|e| Reply::error(&e)),
                false,
            ),
        };
        tracing::debug!(status = reply.status, replayed, "answered");
        context.metrics.reply(operation, reply.status, replayed);
        let reply_headers = reply.headers(request_id.as_deref(), replayed);
        if let Err(e) = request
            .respond_with_headers(Ok(reply.body), reply_headers)
            .await
        {
            tracing::warn!(error = %e, "could not send the reply");
        }
    }
    .instrument(span)
    .await
}

/// A create, idempotent when the request carries a key. Returns the reply and whether it is
/// a replay of a stored one.
async fn create(message: &Message, context: &Context) -> (Reply, bool) {
    let payload = &message.payload;
    let key = match header(message, headers::IDEMPOTENCY_KEY)
        .map(IdempotencyKey::parse)
        .transpose()
    {
        Ok(key) => key,
        Err(e) => return (Reply::error(&e), false),
    };
    let Some(key) = key else {
        return (create_customer(payload, None, context).await, false);
    };
    let claim = IdempotencyClaim::new(key, payload);
    if let Some(stored) = stored_reply(&claim, context) {
        return stored;
    }
    let Some(_claimed) = context.claims.claim(&claim.key) else {
        let in_use = ApiError::IdempotencyKeyInUse {
            retry_after_secs: 1,
        };
        return (Reply::error(&in_use), false);
    };
    // The previous holder may have committed between the lookup and the claim.
    if let Some(stored) = stored_reply(&claim, context) {
        return stored;
    }
    (create_customer(payload, Some(claim), context).await, false)
}

/// The stored reply for `claim`'s key: a replay when the body is the same, 422 otherwise.
fn stored_reply(claim: &IdempotencyClaim, context: &Context) -> Option<(Reply, bool)> {
    match idempotency::lookup(&context.store, &claim.key, context.idempotency_retention) {
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
/// in the same group commit, refusals (invalid body, too large) included.
async fn create_customer(
    payload: &[u8],
    claim: Option<IdempotencyClaim>,
    context: &Context,
) -> Reply {
    let write = match parse(payload, context.max_body_bytes) {
        Ok(customer) => Write::Create { customer, claim },
        Err(refusal) => {
            let reply = Reply::error(&refusal);
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

/// The validated customer, or why the body is refused.
fn parse(payload: &[u8], max_body_bytes: usize) -> Result<NewCustomer, ApiError> {
    if payload.len() > max_body_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit_bytes: max_body_bytes,
        });
    }
    NewCustomer::parse(payload)
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
        CommitError::Failed | CommitError::Unstorable => {
            tracing::error!(error = %error, "create not committed");
            ApiError::Internal
        }
    }
}

/// `customers.v1.get`: the payload is the id. A malformed id is a 404 like an unknown one:
/// no customer has it.
fn get(payload: &[u8], context: &Context) -> Result<Reply, ApiError> {
    let id = std::str::from_utf8(payload)
        .ok()
        .and_then(|id| id.trim().parse::<CustomerId>().ok())
        .ok_or(ApiError::CustomerNotFound)?;
    match context.store.get(id) {
        Ok(Some(json)) => Ok(Reply::ok(Bytes::copy_from_slice(&json))),
        Ok(None) => Err(ApiError::CustomerNotFound),
        Err(e) => {
            tracing::error!(error = %e, "read failed");
            Err(ApiError::Internal)
        }
    }
}

/// `customers.v1.list`: a page scan of up to 101 records runs on the blocking pool, so a
/// cold cache cannot stall the request tasks.
async fn list(payload: &[u8], context: &Context) -> Result<Reply, ApiError> {
    let query = ListQuery::parse(payload)?;
    let store = context.store.clone();
    let page = tokio::task::spawn_blocking(move || store.list(&query)).await;
    match page {
        Ok(Ok((customers, has_more))) => Ok(Reply::ok(Bytes::from(list_body(
            customers.iter().map(|c| &c[..]),
            has_more,
        )))),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "list failed");
            Err(ApiError::Internal)
        }
        Err(e) => {
            tracing::error!(error = %e, "list task failed");
            Err(ApiError::Internal)
        }
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a [u8]> {
    message
        .headers
        .as_ref()?
        .get(name)
        .map(|v| v.as_str().as_bytes())
}
