//! The relay: publishes the outbox's `customer.created` events to JetStream, in commit order,
//! and removes each from the outbox only after JetStream acknowledged it (docs/API.md §8).
//!
//! * At start, [`ensure_stream`] finds the events stream, or creates it when it is missing;
//!   one that exists is used as the operator configured it, never changed. A server without
//!   JetStream stops the start with a clear error (unless events are off).
//! * [`Relay::run`] reads pending events oldest first, publishes a batch with `Nats-Msg-Id`
//!   (the event id) and awaits the acknowledgements in order. The acknowledged prefix leaves
//!   the outbox; the rest is published again, and the stream's duplicate window drops what
//!   was already stored. While JetStream is unreachable it retries with backoff; creates go
//!   on, and the outbox grows up to its bound (`outbox`).
//! * The newest acknowledged id is journaled with the next group (or, when the worker is
//!   quiet, with a group of its own), so a restart does not publish it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use customers_shared::CustomerId;
use customers_shared::wire::event;
use sled::IVec;
use tokio::sync::watch;

use crate::committer::{CommitHandle, Write};
use crate::config::{EventsOptions, Retention};
use crate::health::{Failure, Health};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::store::{Store, StoreError};

/// Events published (and acknowledged) at a time.
const BATCH: usize = 256;
/// How long the worker must be quiet before the relay journals its mark in a group of its own.
const MARK_DELAY: Duration = Duration::from_millis(200);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(
        "JetStream is not available on the NATS server ({0}); start nats-server with JetStream (-js), or run the worker with --events off"
    )]
    Unavailable(String),
    #[error("cannot create the events stream {stream}: {reason}")]
    Create { stream: String, reason: String },
    #[error(
        "the stream {stream} does not capture {subject} (its subjects: {subjects:?}); add the subject to it or name another stream with --events-stream"
    )]
    NotCapturing {
        stream: String,
        subject: String,
        subjects: Vec<String>,
    },
}

/// Makes sure a stream captures the events: the one named in `options` as it is, or a new one
/// made from `options` when none has that name.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    options: &EventsOptions,
    subject_prefix: &str,
) -> Result<(), EventsError> {
    let subject = event::created_subject(subject_prefix);
    let mut found = match jetstream.get_stream(&options.stream).await {
        Ok(stream) => stream,
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                return create_stream(jetstream, options, subject_prefix).await;
            }
            _ => return Err(EventsError::Unavailable(e.to_string())),
        },
    };
    let info = found
        .info()
        .await
        .map_err(|e| EventsError::Unavailable(e.to_string()))?;
    let subjects = &info.config.subjects;
    if !subjects.iter().any(|filter| captures(filter, &subject)) {
        return Err(EventsError::NotCapturing {
            stream: options.stream.clone(),
            subject,
            subjects: subjects.clone(),
        });
    }
    tracing::info!(
        stream = %options.stream,
        replicas = info.config.num_replicas,
        messages = info.state.messages,
        "publishing events to the existing stream, as configured"
    );
    Ok(())
}

async fn create_stream(
    jetstream: &jetstream::Context,
    options: &EventsOptions,
    subject_prefix: &str,
) -> Result<(), EventsError> {
    let config = stream::Config {
        name: options.stream.clone(),
        description: Some(
            "customer.created events (CloudEvents 1.0) of the customers service".into(),
        ),
        subjects: vec![event::all_events_subject(subject_prefix)],
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        retention: match options.retention {
            Retention::Limits => stream::RetentionPolicy::Limits,
            Retention::Interest => stream::RetentionPolicy::Interest,
            Retention::Workqueue => stream::RetentionPolicy::WorkQueue,
        },
        max_age: options.max_age,
        duplicate_window: options.duplicate_window,
        allow_direct: true,
        ..Default::default()
    };
    jetstream
        .create_stream(config)
        .await
        .map_err(|e| EventsError::Create {
            stream: options.stream.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(stream = %options.stream, replicas = options.replicas, "events stream created");
    Ok(())
}

/// Whether the subject filter `filter` (with `*` and `>` wildcards) matches `subject`.
fn captures(filter: &str, subject: &str) -> bool {
    let (mut filter, mut subject) = (filter.split('.'), subject.split('.'));
    loop {
        match (filter.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (None, None) => return true,
            (Some(f), Some(s)) if f == "*" || f == s => {}
            _ => return false,
        }
    }
}

/// Everything the relay task needs.
pub struct Relay {
    pub store: Arc<Store>,
    pub outbox: Arc<Outbox>,
    pub jetstream: jetstream::Context,
    /// `{prefix}.v1.events.created`.
    pub subject: String,
    /// The CloudEvents `source`.
    pub source: String,
    pub committer: CommitHandle,
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

impl Relay {
    /// Relays until `stop` turns true (or the worker fails); then journals how far it got.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        while !*stop.borrow() && !self.health.is_failed() {
            let Some(batch) = self.on_store(|store| store.pending_events(BATCH)).await else {
                break;
            };
            if batch.is_empty() {
                self.wait_for_events(&mut stop).await;
                continue;
            }
            let (acknowledged, failure) = self.publish(&batch).await;
            if !acknowledged.is_empty() && !self.remove(acknowledged).await {
                break;
            }
            match failure {
                None => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            failing_for_ms = since.elapsed().as_millis() as u64,
                            "JetStream acknowledges events again"
                        );
                    }
                    backoff = MIN_BACKOFF;
                }
                Some(error) => {
                    self.metrics.event_publish_failed();
                    if failing_since.is_none() {
                        tracing::warn!(
                            %error,
                            pending = self.outbox.pending(),
                            "cannot publish events; they wait in the outbox and creates go on"
                        );
                        failing_since = Some(Instant::now());
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if self.outbox.mark_lags() {
            let _ = self.committer.commit(Write::RecordRelayed).await;
        }
        tracing::debug!(pending = self.outbox.pending(), "relay stopped");
    }

    /// Runs `work` on the store on the blocking pool; `None` after a storage failure or a
    /// panic, which fails the worker.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || work(&store)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.health.fail(Failure::storage(e));
                None
            }
            Err(e) => {
                self.health.fail(Failure::panic(format!(
                    "the relay's store task failed: {e}"
                )));
                None
            }
        }
    }

    /// Waits for a group with new events. A mark that no group has journaled yet gets a group
    /// of its own once the worker has been quiet for [`MARK_DELAY`].
    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        let mark = async {
            if self.outbox.mark_lags() {
                tokio::time::sleep(MARK_DELAY).await;
                let _ = self.committer.commit(Write::RecordRelayed).await;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = self.outbox.next_commit() => {}
            () = mark => {}
            _ = stop.changed() => {}
        }
    }

    /// Publishes `batch` in order and awaits the acknowledgements in order: returns the ids
    /// of the acknowledged prefix and, if one failed, why.
    async fn publish(&self, batch: &[(CustomerId, IVec)]) -> (Vec<CustomerId>, Option<String>) {
        let mut failure = None;
        let mut sent = Vec::with_capacity(batch.len());
        for (id, record) in batch {
            let payload = match event::customer_created(&self.source, record) {
                Ok(payload) => payload,
                Err(e) => {
                    self.health
                        .fail(Failure::storage(format!("customer {id}: {e}")));
                    failure = Some(e.to_string());
                    break;
                }
            };
            let message = jetstream::message::PublishMessage::build()
                .message_id(event::created_event_id(&id.to_string()))
                .header("Content-Type", event::CONTENT_TYPE)
                .payload(payload.into());
            match self
                .jetstream
                .send_publish(self.subject.clone(), message)
                .await
            {
                Ok(acknowledgement) => sent.push((*id, acknowledgement)),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let mut acknowledged = Vec::with_capacity(sent.len());
        for (id, acknowledgement) in sent {
            match acknowledgement.await {
                Ok(ack) => {
                    self.metrics.event_published(ack.duplicate);
                    acknowledged.push(id);
                }
                Err(e) => {
                    failure.get_or_insert_with(|| e.to_string());
                    break;
                }
            }
        }
        (acknowledged, failure)
    }

    /// Removes acknowledged events from the outbox; `false` after a storage failure.
    async fn remove(&self, acknowledged: Vec<CustomerId>) -> bool {
        let (count, through) = (acknowledged.len(), acknowledged.last().copied());
        let removed = self
            .on_store(move |store| store.remove_pending(&acknowledged))
            .await;
        if let (Some(()), Some(through)) = (removed, through) {
            self.outbox.relayed(through, count);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_filters_match_as_nats_does() {
        let subject = "customers.v1.events.created";
        for filter in [
            "customers.v1.events.created",
            "customers.v1.events.>",
            "customers.*.events.*",
            ">",
        ] {
            assert!(super::captures(filter, subject), "{filter}");
        }
        for filter in [
            "customers.v1.events",
            "customers.v1.events.created.x",
            "customers.v1.*",
            "orders.>",
        ] {
            assert!(!super::captures(filter, subject), "{filter}");
        }
    }
}
