//! The relay: publishes the outbox's `customer.created` events to JetStream, in commit order,
//! and removes each from the outbox only after JetStream acknowledged it (docs/API.md §8).
//!
//! * At start, [`ensure_stream`] finds the events stream, or creates it when it is missing;
//!   one that exists is used as the operator configured it, never changed. A server without
//!   JetStream stops the start with a clear error (unless events are off).
//! * [`RelayThread`] runs the relay on a thread with its own runtime and NATS connection. It
//!   takes pending events oldest first (recent ones from memory, older ones
//!   from the store), publishes a batch with `Nats-Msg-Id` (the event id), each with a reply
//!   subject naming its number on the relay's one acknowledgement subscription, and collects
//!   the acknowledgements. The acknowledged prefix leaves the outbox (the mark moves
//!   past it); the rest is published again, and the stream's duplicate window drops what was
//!   already stored. While JetStream is unreachable it retries with backoff; creates go
//!   on, and the outbox grows up to its bound (`outbox`).
//! * The newest acknowledged id is journaled with the next group (or, when the worker is
//!   quiet, with a group of its own), so a restart does not publish it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use bytes::{Bytes, BytesMut};
use customers_shared::CustomerId;
use customers_shared::wire::event;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::committer::{CommitHandle, Write};
use crate::config::{EventsOptions, Retention};
use crate::health::{Failure, Health};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, PendingEvent};
use crate::store::Store;

/// After a batch smaller than [`BATCH`], the relay waits this long before taking the next:
/// events gather into fewer, larger batches, so the relay and nats-server wake up less often
/// beside the creates, for at most this much more delay per event.
const LINGER: Duration = Duration::from_millis(2);

/// The header naming the envelope's media type (made once: a name given as `&str` is
/// copied for every message).
const CONTENT_TYPE: async_nats::HeaderName = async_nats::HeaderName::from_static("Content-Type");

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

/// Everything the relay needs but its connection.
pub struct RelayParts {
    pub store: Arc<Store>,
    pub outbox: Arc<Outbox>,
    /// `{prefix}.v1.events.created` (a `Subject` shares its bytes with every publication).
    pub subject: async_nats::Subject,
    /// Writes the events, with their CloudEvents `source`.
    pub encoder: event::CreatedEventEncoder,
    pub committer: CommitHandle,
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

/// The running relay: stop it with [`RelayThread::stop`].
pub struct RelayThread {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl RelayThread {
    /// Starts the relay on a thread of its own, with its own runtime and NATS connection:
    /// publishing events then neither competes with request handling for the runtime's
    /// thread nor queues behind replies on the service's connection. Returns once connected.
    pub fn start(
        parts: RelayParts,
        nats: &customers_shared::runtime::nats::NatsOptions,
    ) -> Result<Self, EventsError> {
        let (stop, stopped) = watch::channel(false);
        let (ready, connected) = std::sync::mpsc::channel();
        let nats = nats.clone();
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let client = match customers_shared::runtime::nats::connect(
                        "customers-worker-events",
                        &nats,
                        1024,
                    )
                    .await
                    {
                        Ok(connection) => connection.client,
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let acks_prefix = client.new_inbox();
                    let acks = match client.subscribe(format!("{acks_prefix}.*")).await {
                        Ok(acks) => acks,
                        Err(e) => {
                            let _ = ready.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let relay = Relay {
                        client: client.clone(),
                        acks_prefix,
                        acks,
                        parts,
                    };
                    relay.run(stopped).await;
                    // With the broker gone, a flush would wait for a reconnect forever.
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
                });
            })
            .map_err(|e| EventsError::Unavailable(e.to_string()))?;
        match connected.recv() {
            Ok(Ok(())) => Ok(Self { stop, thread }),
            Ok(Err(e)) => Err(EventsError::Unavailable(e)),
            Err(_) => Err(EventsError::Unavailable("the relay thread ended".into())),
        }
    }

    /// Asks the relay to stop (after the batch in flight) and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

struct Relay {
    parts: RelayParts,
    client: async_nats::Client,
    /// JetStream acknowledges event number `n` on `{acks_prefix}.{n}`: one subscription for
    /// all of them, rather than a request (a waiting future and a timer) per event.
    acks_prefix: String,
    acks: async_nats::Subscriber,
}

impl std::ops::Deref for Relay {
    type Target = RelayParts;

    fn deref(&self) -> &RelayParts {
        &self.parts
    }
}

/// Where the relay stands: the number of the next event to publish, and the id of the last
/// one acknowledged (events after it are the next pending ones in the store).
struct Position {
    next_number: u64,
    relayed: Option<CustomerId>,
}

impl Relay {
    /// Relays until `stop` turns true (or the worker fails); then journals how far it got.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut position = Position {
            next_number: 0,
            relayed: self.outbox.relayed_through(),
        };
        let mut backoff = MIN_BACKOFF;
        let mut failing_since: Option<Instant> = None;
        // Stopped when told, or when whoever could tell it is gone.
        while !*stop.borrow() && stop.has_changed().is_ok() && !self.health.is_failed() {
            let Some(batch) = self.next_batch(&position).await else {
                break;
            };
            if batch.is_empty() {
                self.wait_for_events(&mut stop).await;
                continue;
            }
            let (acknowledged, failure) = self.publish(&batch).await;
            if batch.len() < BATCH && failure.is_none() {
                tokio::time::sleep(LINGER).await;
            }
            if let Some(last) = acknowledged.checked_sub(1).map(|i| &batch[i]) {
                position.next_number = last.number + 1;
                position.relayed = Some(last.id);
                self.outbox.relayed(last.id, acknowledged);
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

    /// The next events to publish, oldest first: from the outbox's queue of recent events,
    /// or from the store for those the queue no longer holds (after a restart, or when the
    /// relay fell far behind). `None` after a storage failure (the worker is stopping).
    async fn next_batch(&self, position: &Position) -> Option<Vec<PendingEvent>> {
        let (recent, missing) = self.outbox.take_from(position.next_number, BATCH);
        if missing == 0 {
            return Some(recent);
        }
        let limit = usize::try_from(missing).unwrap_or(usize::MAX).min(BATCH);
        let after = position.relayed;
        let store = self.store.clone();
        let stored =
            match tokio::task::spawn_blocking(move || store.customers_after(after, limit)).await {
                Ok(Ok(stored)) => stored,
                Ok(Err(e)) => {
                    self.health.fail(Failure::storage(e));
                    return None;
                }
                Err(e) => {
                    self.health.fail(Failure::panic(format!(
                        "reading pending events failed: {e}"
                    )));
                    return None;
                }
            };
        Some(
            (position.next_number..)
                .zip(stored)
                .map(|(number, (id, record))| PendingEvent {
                    number,
                    id,
                    record: Bytes::copy_from_slice(&record),
                })
                .collect(),
        )
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

    /// Publishes `batch` in order and awaits the acknowledgements: returns how many (from
    /// the first) were acknowledged and, if one failed or none came in time, why.
    async fn publish(&mut self, batch: &[PendingEvent]) -> (usize, Option<String>) {
        let mut failure = None;
        let mut sent = 0;
        // One buffer for the whole batch: each event's payload is a slice of it.
        let mut payloads = BytesMut::with_capacity(
            batch
                .iter()
                .map(|event| self.encoder.size_of(&event.record))
                .sum(),
        );
        for event in batch {
            let event_id = self.encoder.encode(event.id, &event.record, &mut payloads);
            let payload = payloads.split().freeze();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id);
            headers.insert(CONTENT_TYPE, event::CONTENT_TYPE);
            let reply = format!("{}.{}", self.acks_prefix, event.number);
            let published = self
                .client
                .publish_with_reply_and_headers(self.subject.clone(), reply, headers, payload)
                .await;
            if let Err(e) = published {
                failure = Some(e.to_string());
                break;
            }
            sent += 1;
        }
        let outcomes = self.acknowledgements(batch, sent).await;
        let mut acknowledged = 0;
        for outcome in outcomes {
            match outcome {
                Some(Ok(duplicate)) => {
                    self.metrics.event_published(duplicate);
                    acknowledged += 1;
                }
                Some(Err(e)) => {
                    failure.get_or_insert(e);
                    break;
                }
                None => {
                    failure.get_or_insert_with(|| {
                        "no acknowledgement from JetStream in time".to_owned()
                    });
                    break;
                }
            }
        }
        (acknowledged, failure)
    }

    /// The acknowledgements of the first `sent` events of `batch`, by position (`None`: none
    /// came within [`ACK_TIMEOUT`]). A late acknowledgement of an earlier attempt at the same
    /// event says the same thing (the stream has it, or refused it) and counts; one of an
    /// event before the batch is ignored.
    async fn acknowledgements(
        &mut self,
        batch: &[PendingEvent],
        sent: usize,
    ) -> Vec<Option<Result<bool, String>>> {
        let mut outcomes = vec![None; sent];
        let Some(first) = batch.first().map(|event| event.number) else {
            return outcomes;
        };
        let mut waiting = sent;
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        while waiting > 0 {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.acks.next()).await
            else {
                break;
            };
            let position = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|number| number.parse::<u64>().ok())
                .and_then(|number| number.checked_sub(first))
                .and_then(|position| usize::try_from(position).ok())
                .filter(|&position| position < sent);
            if let Some(position) = position {
                if outcomes[position].is_none() {
                    waiting -= 1;
                }
                outcomes[position] = Some(acknowledgement(&message));
            }
        }
        outcomes
    }
}

/// How long the relay waits for a batch's acknowledgements before it sends what is missing
/// again (JetStream's own request timeout).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What JetStream answered to one event: stored (`true` when it was a duplicate the stream
/// dropped), or why not.
fn acknowledgement(message: &async_nats::Message) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    struct PublishAck {
        seq: Option<u64>,
        #[serde(default)]
        duplicate: bool,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        #[serde(default)]
        code: u16,
        #[serde(default)]
        description: String,
    }
    if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err("no stream captures the events subject (no responders)".to_owned());
    }
    match serde_json::from_slice::<PublishAck>(&message.payload) {
        Ok(PublishAck {
            error: Some(error), ..
        }) => Err(format!(
            "JetStream refused the event: {} ({})",
            error.description, error.code
        )),
        Ok(PublishAck {
            seq: Some(_),
            duplicate,
            ..
        }) => Ok(duplicate),
        _ => Err("not a JetStream acknowledgement".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    /// A description, the reply's payload and status, and what it means.
    type AckCase = (
        &'static str,
        &'static [u8],
        Option<async_nats::StatusCode>,
        Result<bool, &'static str>,
    );

    #[test]
    fn acknowledgements_are_read_as_jetstream_sends_them() {
        let cases: [AckCase; 6] = [
            (
                "stored",
                br#"{"stream":"CUSTOMERS_EVENTS","seq":7}"#,
                None,
                Ok(false),
            ),
            (
                "a duplicate the stream dropped",
                br#"{"stream":"CUSTOMERS_EVENTS","seq":7,"duplicate":true}"#,
                None,
                Ok(true),
            ),
            (
                "refused",
                br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
                None,
                Err("maximum messages exceeded"),
            ),
            (
                "no stream captures the subject",
                b"",
                Some(async_nats::StatusCode::NO_RESPONDERS),
                Err("no responders"),
            ),
            ("not JSON", b"+OK", None, Err("not a JetStream")),
            ("JSON without a sequence", br#"{"stream":"S"}"#, None, Err("not a JetStream")),
        ];
        for (description, payload, status, expected) in cases {
            let message = async_nats::Message {
                subject: "_INBOX.x.1".into(),
                reply: None,
                payload: bytes::Bytes::from_static(payload),
                headers: None,
                status,
                description: None,
                length: payload.len(),
            };
            match (super::acknowledgement(&message), expected) {
                (Ok(duplicate), Ok(expected)) => assert_eq!(duplicate, expected, "{description}"),
                (Err(error), Err(expected)) => {
                    assert!(error.contains(expected), "{description}: {error}")
                }
                (outcome, _) => panic!("{description}: {outcome:?}"),
            }
        }
    }

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
