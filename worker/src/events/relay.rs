//! The relay: publishes the outbox's events to JetStream, in commit order, and removes each
//! from the outbox only after JetStream acknowledged it (docs/API.md §8).
//!
//! * [`RelayThread`] runs the relay on a thread with its own runtime and NATS connection. It
//!   takes pending events oldest first (recent ones from memory, older ones from the store),
//!   publishes a batch with `Nats-Msg-Id` (the event id) on each event's own subject
//!   (`{prefix}.v1.events.{type}.{customer id}`), each with a reply subject naming its
//!   sequence number on the relay's one acknowledgement subscription, and collects the
//!   acknowledgements. The acknowledged prefix leaves the outbox (the mark moves past it);
//!   the rest is published again, and the stream's duplicate window drops what was already
//!   stored. While JetStream is unreachable it retries with backoff; writes go on, and the
//!   outbox grows up to its bound (`outbox`).
//! * Before a batch holding a `customer.deleted` is published, the customer's earlier
//!   `customer.created` and `customer.updated` messages are deleted from the stream (JetStream's message delete,
//!   which overwrites the payload): the erasure reaches the stream before anyone hears of
//!   the delete. Its events still pending were erased from the outbox by the delete itself.
//! * The newest acknowledged sequence number is journaled with the next group (or, when the
//!   worker is quiet, with a group of its own), so a restart does not publish it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use customers_shared::Timestamp;
use customers_shared::wire::event::{self, EventType};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::stream::EventsError;
use crate::commit::outbox::{Outbox, PendingEvent};
use crate::commit::{CommitHandle, Control};
use crate::health::{Failure, Health};
use crate::metrics::Metrics;
use crate::storage::store::Store;
use crate::support::blocking;
use crate::support::retry::Backoff;

/// After a batch smaller than [`BATCH`], the relay waits this long before taking the next:
/// events gather into fewer, larger batches, so the relay and nats-server wake up less often
/// beside the writes, for at most this much more delay per event.
const LINGER: Duration = Duration::from_millis(2);

/// The header naming the envelope's media type (made once: a name given as `&str` is
/// copied for every message).
const CONTENT_TYPE: async_nats::HeaderName = async_nats::HeaderName::from_static("Content-Type");

/// Events published (and acknowledged) at a time.
const BATCH: usize = 256;
/// Deleted customers whose messages are looked up and erased at once.
const ERASE_CONCURRENCY: usize = 32;
/// How long the worker must be quiet before the relay journals its mark in a group of its own.
const MARK_DELAY: Duration = Duration::from_millis(200);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Everything the relay needs but its connection.
pub(crate) struct RelayParts {
    pub(crate) store: Arc<Store>,
    pub(crate) outbox: Arc<Outbox>,
    /// The subject prefix: events go to `{prefix}.v1.events.{type}.{customer id}`.
    pub(crate) subject_prefix: String,
    /// The stream the events go to (its messages of a deleted customer are erased).
    pub(crate) stream: String,
    /// Writes the events, with their CloudEvents `source`.
    pub(crate) encoder: event::EventEncoder,
    pub(crate) committer: CommitHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Health,
}

/// The running relay: stop it with [`RelayThread::stop`].
pub(crate) struct RelayThread {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl RelayThread {
    /// Starts the relay on a thread of its own, with its own runtime and NATS connection:
    /// publishing events then neither competes with request handling for the runtime's
    /// thread nor queues behind replies on the service's connection. Returns once connected.
    pub(crate) fn start(
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
                        let _ = ready.send(Err(async_nats::Error::from(e)));
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
                            let _ = ready.send(Err(async_nats::Error::from(e)));
                            return;
                        }
                    };
                    let acks_prefix = client.new_inbox();
                    let acks = match client.subscribe(format!("{acks_prefix}.*")).await {
                        Ok(acks) => acks,
                        Err(e) => {
                            let _ = ready.send(Err(async_nats::Error::from(e)));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let relay = Relay {
                        jetstream: async_nats::jetstream::new(client.clone()),
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
            .map_err(|e| EventsError::Unavailable(e.into()))?;
        match connected.recv() {
            Ok(Ok(())) => Ok(Self { stop, thread }),
            Ok(Err(e)) => Err(EventsError::Unavailable(e)),
            Err(_) => Err(EventsError::Unavailable("the relay thread ended".into())),
        }
    }

    /// Asks the relay to stop (after the batch in flight) and waits for it.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let thread = self.thread;
        if let Err(e) = blocking::run(move || thread.join()).await {
            tracing::warn!(error = %e, "could not join the relay thread");
        }
    }
}

struct Relay {
    parts: RelayParts,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    /// JetStream acknowledges event `n` on `{acks_prefix}.{n}`: one subscription for all of
    /// them, rather than a request (a waiting future and a timer) per event.
    acks_prefix: String,
    acks: async_nats::Subscriber,
}

impl Relay {
    /// Relays until `stop` turns true (or the worker fails); then journals how far it got.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Every event numbered up to this one is published (or was erased).
        let mut position = self.parts.outbox.relayed_through();
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut failing_since: Option<Instant> = None;
        // Stopped when told, or when whoever could tell it is gone.
        while !*stop.borrow() && stop.has_changed().is_ok() && !self.parts.health.is_failed() {
            let Some((mut batch, through)) = self.next_batch(position).await else {
                break;
            };
            // Checked again just before publishing: a delete committed since the batch was
            // taken erased its customer's events (see `publish`).
            self.parts.outbox.retain_pending(&mut batch);
            if batch.is_empty() {
                if through > position {
                    // Only erased events: nothing to publish up to `through`.
                    position = through;
                    self.parts.outbox.relayed(position);
                    continue;
                }
                self.wait_for_events(&mut stop).await;
                continue;
            }
            let (acknowledged, failure) = self.publish(&batch).await;
            if batch.len() < BATCH && failure.is_none() {
                tokio::time::sleep(LINGER).await;
            }
            let done = match (acknowledged, failure.is_none()) {
                // All of it: erased events numbered between those published are done too.
                (n, true) if n == batch.len() => Some(through),
                (0, _) => None,
                (n, _) => Some(batch[n - 1].sequence),
            };
            if let Some(done) = done {
                position = done;
                self.parts.outbox.relayed(done);
            }
            match failure {
                None => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            failing_for_ms = since.elapsed().as_millis() as u64,
                            "JetStream acknowledges events again"
                        );
                    }
                    backoff.reset();
                }
                Some(error) => {
                    self.parts.metrics.event_publish_failed();
                    if failing_since.is_none() {
                        tracing::warn!(
                            %error,
                            pending = self.parts.outbox.pending(),
                            "cannot publish events; they wait in the outbox and writes go on"
                        );
                        failing_since = Some(Instant::now());
                    }
                    tokio::select! {
                        () = backoff.wait() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        if self.parts.outbox.mark_lags() {
            let _ = self.parts.committer.control(Control::RecordRelayed).await;
        }
        tracing::debug!(pending = self.parts.outbox.pending(), "relay stopped");
    }

    /// The next events to publish after `position`, oldest first, and the greatest sequence
    /// number looked at (erased events are skipped): from the outbox's queue of recent
    /// events, or from the store for those the queue does not hold (after a restart, or when
    /// the relay fell far behind). `None` after a storage failure (the worker is stopping).
    async fn next_batch(&self, position: u64) -> Option<(Vec<PendingEvent>, u64)> {
        if let Some(recent) = self.parts.outbox.take_after(position, BATCH) {
            let through = recent.last().map_or(position, |e| e.sequence);
            return Some((recent, through));
        }
        let store = self.parts.store.clone();
        let stored = match blocking::run(move || store.events_after(position, BATCH)).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                self.parts.health.fail(Failure::storage(e));
                return None;
            }
            Err(e) => {
                self.parts.health.fail(Failure::panic(format!(
                    "reading pending events failed: {e}"
                )));
                return None;
            }
        };
        // Only what the outbox in memory knows: an event applied a moment ago may not be
        // there yet (the queue of recent events brings it).
        let known = self.parts.outbox.stored_only_through();
        let through = stored
            .last()
            .map_or(known, |(sequence, _)| *sequence)
            .min(known);
        let pending = stored
            .into_iter()
            .filter(|(sequence, _)| *sequence <= known)
            .map(|(sequence, event)| PendingEvent { sequence, event })
            .collect();
        Some((pending, through))
    }

    /// Waits for a group with new events. A mark that no group has journaled yet gets a group
    /// of its own once the worker has been quiet for [`MARK_DELAY`].
    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        let mark = async {
            if self.parts.outbox.mark_lags() {
                tokio::time::sleep(MARK_DELAY).await;
                let _ = self.parts.committer.control(Control::RecordRelayed).await;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            () = self.parts.outbox.next_commit() => {}
            () = mark => {}
            _ = stop.changed() => {}
        }
    }

    /// Erases from the stream the earlier messages of every customer `batch` deletes (all at
    /// once), then publishes `batch` in order and awaits the acknowledgements: returns how
    /// many (from the first) were acknowledged and, if one failed or none came in time, why.
    ///
    /// Erasing first is safe because the batch was checked just before (every event in it
    /// still pending): a delete leaves the outbox pending none of its customer's earlier
    /// events, so a batch that holds a `customer.deleted` holds nothing of that customer
    /// before it, and what came before is in the stream already.
    async fn publish(&mut self, batch: &[PendingEvent]) -> (usize, Option<PublishFailure>) {
        let deleted = batch
            .iter()
            .filter(|e| e.event.event_type == EventType::Deleted)
            .map(|e| e.event.customer);
        let erased: Vec<Result<(), PublishFailure>> = futures_util::stream::iter(deleted)
            .map(|customer| self.erase(customer))
            .buffer_unordered(ERASE_CONCURRENCY)
            .collect()
            .await;
        if let Some(Err(failure)) = erased.into_iter().find(Result::is_err) {
            return (0, Some(failure));
        }
        self.publish_run(batch).await
    }

    /// Publishes `run` pipelined and collects its acknowledgements.
    async fn publish_run(&mut self, run: &[PendingEvent]) -> (usize, Option<PublishFailure>) {
        let mut failure = None;
        let mut sent = 0;
        // One buffer for the whole run: each event's payload is a slice of it.
        let mut payloads = BytesMut::with_capacity(
            run.iter()
                .map(|pending| self.parts.encoder.size_of(&pending.event.data))
                .sum(),
        );
        for pending in run {
            let event = &pending.event;
            let event_id = self.parts.encoder.encode(
                event.event_type,
                event.customer,
                event.version,
                Timestamp::from_unix_ms(event.at_ms),
                &event.data,
                &mut payloads,
            );
            let payload = payloads.split().freeze();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id);
            headers.insert(CONTENT_TYPE, event::CONTENT_TYPE);
            let subject = event
                .event_type
                .subject(&self.parts.subject_prefix, &event.customer.to_string());
            let reply = format!("{}.{}", self.acks_prefix, pending.sequence);
            let published = self
                .client
                .publish_with_reply_and_headers(subject, reply, headers, payload)
                .await;
            if let Err(e) = published {
                failure = Some(PublishFailure::Send(e));
                break;
            }
            sent += 1;
        }
        let outcomes = self.acknowledgements(run, sent).await;
        let mut acknowledged = 0;
        for outcome in outcomes {
            match outcome {
                Some(Ok(duplicate)) => {
                    self.parts.metrics.event_published(duplicate);
                    acknowledged += 1;
                }
                Some(Err(e)) => {
                    failure.get_or_insert(e);
                    break;
                }
                None => {
                    failure.get_or_insert(PublishFailure::NoAcknowledgement);
                    break;
                }
            }
        }
        (acknowledged, failure)
    }

    /// Deletes every `customer.created` and `customer.updated` message of `customer` from the
    /// stream, oldest first: found by subject (`STREAM.MSG.GET` with `next_by_subj`, the
    /// event type a wildcard) and deleted with `STREAM.MSG.DELETE`, whose default overwrites
    /// the payload. Its `customer.deleted` is left alone: a re-publication after a crash finds it, and must not
    /// remove the very event it re-publishes.
    async fn erase(&self, customer: customers_shared::CustomerId) -> Result<(), PublishFailure> {
        let id = customer.to_string();
        let stream = &self.parts.stream;
        // Every event of the customer, whatever its type: one look-up per message found.
        let subject = format!("{}.v1.events.*.{id}", self.parts.subject_prefix);
        let deleted_subject = EventType::Deleted.subject(&self.parts.subject_prefix, &id);
        let mut from = 1;
        loop {
            let request = serde_json::json!({"seq": from, "next_by_subj": subject});
            let found: JetStreamResponse<FoundMessage> = self
                .jetstream
                .request(format!("STREAM.MSG.GET.{stream}"), &request)
                .await
                .map_err(|e| PublishFailure::Erase(e.to_string()))?;
            let found = match found {
                JetStreamResponse::Ok(found) => found.message,
                JetStreamResponse::Err { error } if error.code == 404 => return Ok(()),
                JetStreamResponse::Err { error } => {
                    return Err(PublishFailure::Erase(error.description));
                }
            };
            from = found.seq + 1;
            if found.subject == deleted_subject {
                continue;
            }
            let request = serde_json::json!({"seq": found.seq});
            let deleted: JetStreamResponse<serde_json::Value> = self
                .jetstream
                .request(format!("STREAM.MSG.DELETE.{stream}"), &request)
                .await
                .map_err(|e| PublishFailure::Erase(e.to_string()))?;
            match deleted {
                JetStreamResponse::Ok(_) => {}
                // Removed meanwhile (its age, a limit): gone either way.
                JetStreamResponse::Err { error } if error.code == 404 => {}
                JetStreamResponse::Err { error } => {
                    return Err(PublishFailure::Erase(error.description));
                }
            }
            self.parts.metrics.event_erased();
        }
    }

    /// The acknowledgements of the first `sent` events of `run`, by position (`None`: none
    /// came within [`ACK_TIMEOUT`]). A late acknowledgement of an earlier attempt at the same
    /// event says the same thing (the stream has it, or refused it) and counts; one of an
    /// event not in the run is ignored.
    async fn acknowledgements(
        &mut self,
        run: &[PendingEvent],
        sent: usize,
    ) -> Vec<Option<Result<bool, PublishFailure>>> {
        let mut outcomes: Vec<Option<Result<bool, PublishFailure>>> =
            (0..sent).map(|_| None).collect();
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
                .and_then(|sequence| sequence.parse::<u64>().ok())
                .and_then(|sequence| {
                    run[..sent]
                        .binary_search_by_key(&sequence, |e| e.sequence)
                        .ok()
                });
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

/// A JetStream API response (`Response` in async-nats, whose error it does not let one read
/// the code of).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JetStreamResponse<T> {
    Err { error: ApiError },
    Ok(T),
}

/// `STREAM.MSG.GET`'s answer: the message found (its sequence number and subject).
#[derive(serde::Deserialize)]
struct FoundMessage {
    message: Found,
}

#[derive(serde::Deserialize)]
struct Found {
    seq: u64,
    subject: String,
}

/// How long the relay waits for a batch's acknowledgements before it sends what is missing
/// again (JetStream's own request timeout).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why events were not acknowledged; the relay logs it, counts it and tries again.
#[derive(Debug, thiserror::Error)]
enum PublishFailure {
    #[error("cannot send the events: {0}")]
    Send(async_nats::PublishError),
    #[error("no acknowledgement from JetStream in time")]
    NoAcknowledgement,
    #[error("no stream captures the events subject (no responders)")]
    NoStream,
    #[error("JetStream refused the event: {description} ({code})")]
    Refused { code: u16, description: String },
    #[error("not a JetStream acknowledgement")]
    NotAnAcknowledgement,
    #[error("cannot erase a deleted customer's events from the stream: {0}")]
    Erase(String),
}

/// A JetStream API error: its HTTP-like code and what it says.
#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    description: String,
}

/// What JetStream answered to one event: stored (`true` when it was a duplicate the stream
/// dropped), or why not.
fn acknowledgement(message: &async_nats::Message) -> Result<bool, PublishFailure> {
    #[derive(serde::Deserialize)]
    struct PublishAck {
        seq: Option<u64>,
        #[serde(default)]
        duplicate: bool,
        error: Option<ApiError>,
    }
    if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(PublishFailure::NoStream);
    }
    match serde_json::from_slice::<PublishAck>(&message.payload) {
        Ok(PublishAck {
            error: Some(error), ..
        }) => Err(PublishFailure::Refused {
            code: error.code,
            description: error.description,
        }),
        Ok(PublishAck {
            seq: Some(_),
            duplicate,
            ..
        }) => Ok(duplicate),
        _ => Err(PublishFailure::NotAnAcknowledgement),
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
                    let error = error.to_string();
                    assert!(error.contains(expected), "{description}: {error}")
                }
                (outcome, _) => panic!("{description}: {outcome:?}"),
            }
        }
    }
}
