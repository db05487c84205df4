//! The request side of a create: the idempotency key first (a stored reply is sent again, a
//! key in use or used with another body is refused), then the body parsed and validated into
//! a [`NewCustomer`], and the write handed to the committer; its answer, or why there is none,
//! becomes the reply. With a key, the final reply is stored with the write, refusals included.

use async_nats::Message;
use customers_shared::wire::idempotency::IdempotencyKey;
use customers_shared::wire::protocol::headers;
use customers_shared::{ApiError, NewCustomer};

use super::Context;
use crate::commit::{CommitError, Write};
use crate::idempotency::{self, Begun, IdempotencyClaim};
use crate::reply::Reply;

/// A create, idempotent when the request carries a key. Returns the reply and whether it is
/// a replay of a stored one.
pub(super) async fn create(message: &Message, context: &Context) -> (Reply, bool) {
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
    let begun = idempotency::begin(
        context.store.clone(),
        context.claims.clone(),
        key,
        payload,
        context.idempotency_retention,
    )
    .await;
    match begun {
        Begun::Claimed {
            claim,
            guard: _held_until_committed,
        } => (create_customer(payload, Some(claim), context).await, false),
        Begun::Replay(reply) => (reply, true),
        Begun::Refused(reply) => (reply, false),
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
            tracing::error!(error = %error, "create not committed");
            ApiError::Internal
        }
    }
}
