//! The events stream at start: [`ensure_stream`] finds the stream named in the options, or
//! makes it from them when it is missing; one that exists is used as the operator configured
//! it, never changed, and must capture the events subject. A server without JetStream stops
//! the start with a clear error (unless events are off).

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream};
use customers_shared::wire::event::{self, EventType};

use crate::config::{EventsOptions, Retention};

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(
        "JetStream is not available on the NATS server ({0}); start nats-server with JetStream (-js), or run the worker with --events off"
    )]
    Unavailable(async_nats::Error),
    #[error("cannot create the events stream {stream}: {source}")]
    Create {
        stream: String,
        source: async_nats::Error,
    },
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
pub(crate) async fn ensure_stream(
    jetstream: &jetstream::Context,
    options: &EventsOptions,
    subject_prefix: &str,
) -> Result<(), EventsError> {
    let mut found = match jetstream.get_stream(&options.stream).await {
        Ok(stream) => stream,
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                return create_stream(jetstream, options, subject_prefix).await;
            }
            _ => return Err(EventsError::Unavailable(e.into())),
        },
    };
    let info = found
        .info()
        .await
        .map_err(|e| EventsError::Unavailable(e.into()))?;
    let subjects = &info.config.subjects;
    for event_type in EventType::ALL {
        // Any customer's subject stands for them all: a filter cannot tell ids apart.
        let subject = event_type.subject(subject_prefix, "cus_00000000000000000000000000");
        if !subjects.iter().any(|filter| captures(filter, &subject)) {
            return Err(EventsError::NotCapturing {
                stream: options.stream.clone(),
                subject: event_type.all_subject(subject_prefix),
                subjects: subjects.clone(),
            });
        }
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
            "customer.created, .updated and .deleted events (CloudEvents 1.0) of the customers service".into(),
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
            source: e.into(),
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

#[cfg(test)]
mod tests {
    #[test]
    fn subject_filters_match_as_nats_does() {
        let subject = "customers.v1.events.created.cus_1";
        for filter in [
            "customers.v1.events.created.cus_1",
            "customers.v1.events.>",
            "customers.*.events.*.*",
            "customers.v1.events.created.*",
            ">",
        ] {
            assert!(super::captures(filter, subject), "{filter}");
        }
        for filter in [
            "customers.v1.events",
            "customers.v1.events.created",
            "customers.v1.events.created.cus_1.x",
            "customers.v1.*",
            "orders.>",
        ] {
            assert!(!super::captures(filter, subject), "{filter}");
        }
    }
}
