//! The NATS micro service `customers`: its create endpoint receives requests, validates each
//! in its own task (so decoding runs concurrently), hands valid ones to the committer and
//! replies with the stored customer JSON or a problem body with the NATS micro error headers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request, Service, ServiceExt, endpoint::Endpoint};
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use customers_shared::protocol::{self, headers};
use customers_shared::{ApiError, Customer, CustomerId, NewCustomer};
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::committer::{CommitError, CommitHandle};
use crate::store::{Outcome, PendingCreate};

/// What every request task needs.
struct Context {
    committer: CommitHandle,
    max_body_bytes: usize,
}

/// The running micro service with its create endpoint.
pub struct CustomersService {
    service: Service,
    create: Endpoint,
    context: Arc<Context>,
}

impl CustomersService {
    /// Registers the service and its endpoint on `client`.
    pub async fn start(
        client: &async_nats::Client,
        subject_prefix: &str,
        committer: CommitHandle,
        max_body_bytes: usize,
    ) -> Result<Self, async_nats::Error> {
        let service = client
            .service_builder()
            .description("Creates customers with unique emails, stored durably")
            .start(protocol::SERVICE_NAME, protocol::SERVICE_VERSION)
            .await?;
        let create = service
            .endpoint_builder()
            .name(protocol::CREATE_ENDPOINT)
            .add(protocol::create_subject(subject_prefix))
            .await?;
        Ok(Self {
            service,
            create,
            context: Arc::new(Context {
                committer,
                max_body_bytes,
            }),
        })
    }

    /// Serves until `shutdown` resolves, then stops taking requests (the queue group hands
    /// new ones to other workers) and waits up to `grace` for the accepted ones to be answered.
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                request = self.create.next() => match request {
                    Some(request) => {
                        tasks.spawn(handle_create(request, self.context.clone()));
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        tracing::info!(in_flight = tasks.len(), "stopping: no new requests taken");
        if let Err(e) = self.create.stop().await {
            tracing::warn!(error = %e, "could not unsubscribe the create endpoint");
        }
        if let Err(e) = self.service.stop().await {
            tracing::warn!(error = %e, "could not stop the micro service");
        }
        let context = self.context.clone();
        let mut create = self.create;
        let drained = tokio::time::timeout(grace, async {
            // Requests already delivered to this worker are still answered.
            while let Some(request) = create.next().await {
                tasks.spawn(handle_create(request, context.clone()));
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

async fn handle_create(request: Request, context: Arc<Context>) {
    let request_id = header(&request.message, headers::REQUEST_ID).map(str::to_owned);
    let span = tracing::info_span!("create", request_id = request_id.as_deref().unwrap_or(""));
    async move {
        let result = create(&request.message.payload, &context).await;
        let mut reply_headers = HeaderMap::new();
        if let Some(request_id) = &request_id {
            reply_headers.insert(headers::REQUEST_ID, request_id.as_str());
        }
        let payload = match result {
            Ok((id, json)) => {
                tracing::debug!(customer_id = %id, "created");
                reply_headers.insert(headers::CUSTOMER_ID, id.to_string().as_str());
                json
            }
            Err(error) => {
                tracing::debug!(code = error.code(), "create rejected");
                error_headers(&mut reply_headers, &error);
                Bytes::from(error.problem_json())
            }
        };
        if let Err(e) = request
            .respond_with_headers(Ok(payload), reply_headers)
            .await
        {
            tracing::warn!(error = %e, "could not send the reply");
        }
    }
    .instrument(span)
    .await
}

async fn create(payload: &[u8], context: &Context) -> Result<(CustomerId, Bytes), ApiError> {
    if payload.len() > context.max_body_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit_bytes: context.max_body_bytes,
        });
    }
    let new = NewCustomer::parse(payload)?;
    let id = CustomerId::generate();
    let email_key = new.email.index_key();
    let json = Bytes::from(Customer::create(id, new).to_json());
    let pending = PendingCreate {
        id,
        email_key,
        json: json.clone(),
    };
    match context.committer.commit(pending).await {
        Ok(Outcome::Created) => Ok((id, json)),
        Ok(Outcome::EmailTaken(customer_id)) => Err(ApiError::EmailAlreadyExists { customer_id }),
        Err(CommitError::Overloaded) => Err(ApiError::ServiceUnavailable {
            reason: "the worker is overloaded",
            retry_after_secs: 1,
        }),
        Err(CommitError::Stopped) => Err(ApiError::ServiceUnavailable {
            reason: "the worker is shutting down",
            retry_after_secs: 1,
        }),
        Err(CommitError::Store(e)) => {
            tracing::error!(error = %e, "create not committed");
            Err(ApiError::Internal)
        }
    }
}

/// The NATS micro error headers (and `Retry-After` where it applies) for `error`.
fn error_headers(reply_headers: &mut HeaderMap, error: &ApiError) {
    reply_headers.insert(headers::SERVICE_ERROR, error.code());
    reply_headers.insert(
        headers::SERVICE_ERROR_CODE,
        error.status().to_string().as_str(),
    );
    if let Some(secs) = error.retry_after_secs() {
        reply_headers.insert(headers::RETRY_AFTER, secs.to_string().as_str());
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}
