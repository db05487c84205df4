//! The request side of every write (create, update, delete): the idempotency key first (a
//! stored reply is sent again, a key in use or used with another request is refused), then
//! the request parsed (a create's body into a [`NewCustomer`], an update's into a
//! [`CustomerPatch`], the customer's id and `If-Match` from the headers) and the write
//! handed to the committer, which decides against the customer as it is; its answer, or why
//! there is none, becomes the reply. With a key, the final reply is stored with the write,
//! refusals of the body included; a request refused for its headers (a bad id, condition or
//! key) is not stored.

use std::future::Future;

use async_nats::Message;
use customers_shared::wire::conditional::Condition;
use customers_shared::wire::idempotency::IdempotencyKey;
use customers_shared::wire::protocol::{Endpoint, headers};
use customers_shared::{ApiError, BodyError, CustomerId, CustomerPatch, NewCustomer};

use super::Context;
use crate::commit::{CommitError, Write};
use crate::idempotency::{self, Begun, IdempotencyClaim};
use crate::reply::Reply;

/// A create, idempotent when the request carries a key. Returns the reply and whether it is
/// a replay of a stored one.
pub(super) async fn create(message: &Message, context: &Context) -> (Reply, bool) {
    let payload = &message.payload;
    let key = match key(message) {
        Ok(key) => key,
        Err(refusal) => return (Reply::error(&refusal), false),
    };
    let claim = key.map(|key| IdempotencyClaim::new(key, payload));
    keyed(claim, context, |claim| {
        let write = write_of(NewCustomer::parse(payload), claim, |customer, claim| {
            Write::Create { customer, claim }
        });
        commit(write, context)
    })
    .await
}

/// An update (a merge patch in the payload) or a delete of the customer named by the
/// `Customer-Id` header, guarded by `If-Match` when it is sent.
pub(super) async fn change(
    endpoint: Endpoint,
    message: &Message,
    context: &Context,
) -> (Reply, bool) {
    let payload = &message.payload;
    let request = key(message).and_then(|key| {
        let id = headers::value(message, headers::CUSTOMER_ID)
            .and_then(|id| id.trim().parse::<CustomerId>().ok())
            .ok_or(ApiError::CustomerNotFound)?;
        let if_match = message
            .headers
            .iter()
            .flat_map(|map| map.get_all(headers::IF_MATCH))
            .map(|value| value.as_str().as_bytes());
        let condition = Condition::parse(headers::IF_MATCH, if_match)?;
        if condition.is_none() && context.require_if_match {
            return Err(ApiError::PreconditionRequired);
        }
        Ok((key, id, condition))
    });
    let (key, id, condition) = match request {
        Ok(request) => request,
        Err(refusal) => return (Reply::error(&refusal), false),
    };
    let claim = key.map(|key| IdempotencyClaim::for_change(key, endpoint.name(), id, payload));
    keyed(claim, context, |claim| {
        let write = match endpoint {
            Endpoint::Update => write_of(CustomerPatch::parse(payload), claim, |patch, claim| {
                Write::Update {
                    id,
                    patch,
                    condition,
                    claim,
                }
            }),
            _ => Ok(Write::Delete {
                id,
                condition,
                claim,
            }),
        };
        commit(write, context)
    })
    .await
}

/// The request's `Idempotency-Key`, if it sends one.
fn key(message: &Message) -> Result<Option<IdempotencyKey>, ApiError> {
    headers::value(message, headers::IDEMPOTENCY_KEY)
        .map(|key| IdempotencyKey::parse(key.as_bytes()))
        .transpose()
}

/// Runs `process` with the request's claim when it has one: a stored reply for the same
/// request is sent again instead, and a key in use or reused is refused. Returns the reply
/// and whether it is a replay.
async fn keyed<F: Future<Output = Reply>>(
    claim: Option<IdempotencyClaim>,
    context: &Context,
    process: impl FnOnce(Option<IdempotencyClaim>) -> F,
) -> (Reply, bool) {
    let Some(claim) = claim else {
        return (process(None).await, false);
    };
    let begun = idempotency::begin(
        context.store.clone(),
        context.claims.clone(),
        claim,
        context.idempotency_retention,
    )
    .await;
    match begun {
        Begun::Claimed {
            claim,
            guard: _held_until_committed,
        } => (process(Some(claim)).await, false),
        Begun::Replay(reply) => (reply, true),
        Begun::Refused(reply) => (reply, false),
    }
}

/// The write `build` makes of a parsed body; a body refused (not JSON, not an object,
/// invalid fields) is its `400`, which with a claim is a write too: the reply stored under
/// the key, so that a retry is answered the same.
fn write_of<T>(
    parsed: Result<T, BodyError>,
    claim: Option<IdempotencyClaim>,
    build: impl FnOnce(T, Option<IdempotencyClaim>) -> Write,
) -> Result<Write, Reply> {
    match parsed {
        Ok(parsed) => Ok(build(parsed, claim)),
        Err(refusal) => {
            let reply = Reply::error(&refusal.into());
            match claim {
                Some(claim) => Ok(Write::Remember { claim, reply }),
                None => Err(reply),
            }
        }
    }
}

/// Commits `write` (or answers the refusal standing in for it).
async fn commit(write: Result<Write, Reply>, context: &Context) -> Reply {
    let write = match write {
        Ok(write) => write,
        Err(refusal) => return refusal,
    };
    context
        .committer
        .commit(write)
        .await
        .unwrap_or_else(|e| Reply::error(&commit_error(e)))
}

fn commit_error(error: CommitError) -> ApiError {
    match error {
        CommitError::Overloaded => super::OVERLOADED,
        CommitError::Stopped => ApiError::ServiceUnavailable {
            reason: "the worker is stopping",
            retry_after_secs: 1,
        },
        CommitError::NotPrimary | CommitError::NotStandby => ApiError::ServiceUnavailable {
            reason: "this instance is not the primary (failing over)",
            retry_after_secs: 1,
        },
        CommitError::OutboxFull => ApiError::ServiceUnavailable {
            reason: "events cannot be published (JetStream unreachable) and the outbox is full",
            retry_after_secs: 5,
        },
        CommitError::Failed | CommitError::Unstorable => {
            tracing::error!(error = %error, "write not committed");
            ApiError::Internal
        }
    }
}
