//! The replicated log: a JetStream stream with one message per committed group (the group's
//! journal record, checksum included). The primary appends with `Nats-Expected-Last-Sequence`
//! set to the last sequence it has applied, so an append succeeds only on the log it
//! planned against: two instances can never both extend the same prefix (fencing). Standbys
//! and a new primary read it back in order.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::ReplicationError;
use crate::support::retry::Backoff;

/// How long one attempt at an append waits for its acknowledgement.
const APPEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    /// Another instance appended since: this one no longer owns the log.
    #[error("fenced: the log moved past sequence {expected} (another instance appended)")]
    Fenced { expected: u64 },
    /// The log stored the group, but at another sequence than the one after `expected`.
    #[error("the log acknowledged sequence {acknowledged} after {expected}")]
    OutOfPlace { expected: u64, acknowledged: u64 },
    /// JetStream did not answer in time; the append may or may not be stored.
    #[error("the log is unreachable: {0}")]
    Unavailable(LogError),
}

/// Reading or changing the log failed (a node failing over, the connection lost).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub(crate) struct LogError {
    what: &'static str,
    source: async_nats::Error,
}

impl LogError {
    fn new(what: &'static str) -> impl FnOnce(async_nats::Error) -> Self {
        move |source| Self { what, source }
    }

    fn timed_out(what: &'static str) -> Self {
        Self {
            what,
            source: "no answer in time".into(),
        }
    }
}

pub(crate) struct Log {
    jetstream: jetstream::Context,
    stream: String,
    subject: String,
}

impl Log {
    /// The log stream named `name` capturing `subject`, made (with `replicas`) when missing.
    pub(crate) async fn ensure(
        jetstream: jetstream::Context,
        name: &str,
        subject: String,
        replicas: usize,
    ) -> Result<Self, ReplicationError> {
        jetstream
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                description: Some(
                    "Committed groups of the customers service (replicated mode)".into(),
                ),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| ReplicationError::setup(format!("the log stream {name}"), e))?;
        Ok(Self {
            jetstream,
            stream: name.to_owned(),
            subject,
        })
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream, LogError> {
        self.jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| LogError::new("looking up the log")(e.into()))
    }

    async fn state(&self) -> Result<stream::State, LogError> {
        let mut stream = self.stream().await?;
        Ok(stream
            .info()
            .await
            .map_err(|e| LogError::new("reading the log's state")(e.into()))?
            .state
            .clone())
    }

    /// The sequence of the newest group in the log (0 when empty).
    pub(crate) async fn last_sequence(&self) -> Result<u64, LogError> {
        Ok(self.state().await?.last_sequence)
    }

    /// The oldest sequence still in the log (groups below it were trimmed after a snapshot).
    pub(crate) async fn first_sequence(&self) -> Result<u64, LogError> {
        Ok(self.state().await?.first_sequence)
    }

    /// Removes the groups below `sequence` (a stored snapshot holds them).
    pub(crate) async fn trim_below(&self, sequence: u64) -> Result<(), LogError> {
        self.stream()
            .await?
            .purge()
            .sequence(sequence)
            .await
            .map(drop)
            .map_err(|e| LogError::new("trimming the log")(e.into()))
    }

    /// Appends `record` after `expected_last`; returns its sequence (`expected_last + 1`).
    /// An attempt whose outcome is unknown (a timeout, a node failing over) is resolved by
    /// reading the log: the record found there under `id` counts as appended. Gives up after
    /// `patience`.
    pub(crate) async fn append(
        &self,
        record: Bytes,
        expected_last: u64,
        id: &str,
        patience: Duration,
    ) -> Result<u64, AppendError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut last_error = LogError::timed_out("appending to the log");
        let mut backoff = Backoff::constant(Duration::from_millis(50));
        while tokio::time::Instant::now() < deadline {
            let message = jetstream::message::PublishMessage::build()
                .message_id(id)
                .expected_last_sequence(expected_last)
                .payload(record.clone());
            let attempt = async {
                self.jetstream
                    .send_publish(self.subject.clone(), message)
                    .await?
                    .await
            };
            match tokio::time::timeout(APPEND_TIMEOUT, attempt).await {
                // Also a duplicate of our own earlier attempt, stored at that sequence.
                Ok(Ok(ack)) if ack.sequence == expected_last + 1 => return Ok(ack.sequence),
                Ok(Ok(ack)) => {
                    return Err(AppendError::OutOfPlace {
                        expected: expected_last,
                        acknowledged: ack.sequence,
                    });
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return match self.stored_under(expected_last + 1, id).await {
                        Some(true) => Ok(expected_last + 1),
                        _ => Err(AppendError::Fenced {
                            expected: expected_last,
                        }),
                    };
                }
                Ok(Err(e)) => last_error = LogError::new("appending to the log")(e.into()),
                Err(_) => last_error = LogError::timed_out("appending to the log"),
            }
            if self.stored_under(expected_last + 1, id).await == Some(true) {
                return Ok(expected_last + 1);
            }
            backoff.wait().await;
        }
        Err(AppendError::Unavailable(last_error))
    }

    /// Whether the group at `sequence` is ours (`Nats-Msg-Id` = `id`); `None` when it cannot
    /// be read (absent, or the log unreachable).
    async fn stored_under(&self, sequence: u64, id: &str) -> Option<bool> {
        let stream = self.jetstream.get_stream(&self.stream).await.ok()?;
        let message = stream.get_raw_message(sequence).await.ok()?;
        Some(
            message
                .headers
                .get("Nats-Msg-Id")
                .is_some_and(|value| value.as_str() == id),
        )
    }

    /// The groups from `from` on, in order, as they are appended: an ordered consumer, which
    /// JetStream recreates by itself after a node or connection loss.
    pub(crate) async fn follow(
        &self,
        from: u64,
    ) -> Result<impl futures_util::Stream<Item = Result<(u64, Bytes), LogError>>, LogError> {
        let stream = self.stream().await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| LogError::new("following the log")(e.into()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| LogError::new("following the log")(e.into()))?;
        Ok(messages.map(|message| {
            let message = message.map_err(|e| LogError::new("reading the log")(e.into()))?;
            let sequence = message
                .info()
                .map_err(LogError::new("reading the log"))?
                .stream_sequence;
            Ok((sequence, message.payload.clone()))
        }))
    }
}
