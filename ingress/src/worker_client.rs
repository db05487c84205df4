//! Talking to the worker over NATS: one request per create, with the forwarded headers and a
//! timeout, and the reply classified as a created customer or a problem. NATS failures become
//! [`ApiError`]s here: no responders and a lost connection are 503, a timeout is 504.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::protocol::{self, headers};
use http::StatusCode;

/// What the worker answered.
pub enum WorkerReply {
    /// The stored customer's JSON and its id.
    Created { customer_id: String, body: Bytes },
    /// A problem body with its status (and `Retry-After` when the worker set it).
    Problem {
        status: StatusCode,
        retry_after: Option<String>,
        body: Bytes,
    },
}

#[derive(Clone)]
pub struct WorkerClient {
    client: async_nats::Client,
    create_subject: String,
    timeout: Duration,
}

impl WorkerClient {
    pub fn new(client: async_nats::Client, subject_prefix: &str, timeout: Duration) -> Self {
        Self {
            client,
            create_subject: protocol::create_subject(subject_prefix),
            timeout,
        }
    }

    /// Sends a create request with `request_headers` and waits for the worker's reply.
    pub async fn create(
        &self,
        body: Bytes,
        request_headers: HeaderMap,
    ) -> Result<WorkerReply, ApiError> {
        // A disconnected client would buffer the request and wait out the timeout;
        // the caller deserves a fast answer instead.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(ApiError::ServiceUnavailable {
                reason: "the message broker is unreachable",
                retry_after_secs: 1,
            });
        }
        let request = async_nats::Request::new()
            .payload(body)
            .headers(request_headers)
            .timeout(Some(self.timeout));
        match self
            .client
            .send_request(self.create_subject.clone(), request)
            .await
        {
            Ok(message) => classify(message),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => ApiError::ServiceUnavailable {
                    reason: "no worker is available",
                    retry_after_secs: 1,
                },
                RequestErrorKind::TimedOut => ApiError::WorkerTimeout {
                    timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                },
                _ => {
                    tracing::warn!(error = %e, "NATS request failed");
                    ApiError::ServiceUnavailable {
                        reason: "the message broker is unreachable",
                        retry_after_secs: 1,
                    }
                }
            }),
        }
    }
}

fn classify(message: Message) -> Result<WorkerReply, ApiError> {
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
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
                body: message.payload,
            }),
            None => {
                tracing::error!(%code, "worker replied with an invalid error code");
                Err(ApiError::Internal)
            }
        };
    }
    match header(headers::CUSTOMER_ID) {
        Some(customer_id) => Ok(WorkerReply::Created {
            customer_id,
            body: message.payload,
        }),
        None => {
            tracing::error!("worker reply has neither an error code nor a customer id");
            Err(ApiError::Internal)
        }
    }
}
