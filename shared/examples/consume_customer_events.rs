//! How another service consumes customer events (`customer.created`, `.updated`,
//! `.deleted`): a durable pull consumer on the `CUSTOMERS_EVENTS` stream that acknowledges each
//! event after handling it, so that after a restart it resumes where it stopped. Run it next to `scripts/run-local`:
//!
//! ```text
//! cargo run -p customers-shared --example consume_customer_events -- --durable billing
//! ```
//!
//! Replays: a new durable name (or `--from-sequence` / `--from-time` on first creation)
//! starts where it says; an existing durable consumer keeps its own position. Delivery is at
//! least once (an event whose acknowledgement was lost comes again), so handle events
//! idempotently by their `id`. A permission nats-server refuses (another role's durable
//! name, an inbox prefix the user may not read) ends it with the server's words, since the
//! refused request itself would only go unanswered.

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use clap::Parser;
use futures_util::StreamExt;
use serde::Deserialize;

/// Events pulled at a time.
const BATCH: usize = 100;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, env = "NATS_USER")]
    nats_user: Option<String>,
    #[arg(long, env = "NATS_PASSWORD")]
    nats_password: Option<String>,
    /// Prefix of this client's reply subjects (the deploy's permissions give each user its own).
    #[arg(long, env = "NATS_INBOX_PREFIX", default_value = "_INBOX")]
    nats_inbox_prefix: String,
    #[arg(long, default_value = "CUSTOMERS_EVENTS")]
    stream: String,
    /// The durable consumer's name: the service's own (its position survives restarts).
    #[arg(long, default_value = "billing")]
    durable: String,
    /// When the consumer is created: start at this stream sequence instead of the first.
    #[arg(long, conflicts_with = "from_time")]
    from_sequence: Option<u64>,
    /// When the consumer is created: start at the first event stored at or after this RFC 3339
    /// time.
    #[arg(long, value_parser = rfc3339)]
    from_time: Option<time::OffsetDateTime>,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    max_events: Option<usize>,
}

/// The part of the CloudEvents envelope this consumer reads (docs/asyncapi.json has it all).
#[derive(Deserialize)]
struct CustomerEvent {
    /// `customer.created:{id}`, `customer.updated:{id}:{version}` or `customer.deleted:{id}`.
    id: String,
    subject: String,
    time: String,
    data: Data,
}

/// `data`: the customer (created), the customer and its previous attributes (updated), or
/// what remains of it (deleted).
#[derive(Deserialize)]
#[serde(untagged)]
enum Data {
    Updated { customer: Customer },
    Deleted { deleted: bool },
    Created(Customer),
}

#[derive(Deserialize)]
struct Customer {
    status: String,
}

fn rfc3339(text: &str) -> Result<time::OffsetDateTime, String> {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(text, &format)
        .map_err(|_| "expected an RFC 3339 time such as 2026-11-29T00:00:00Z".to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (refusals, mut refused) = tokio::sync::watch::channel(None);
    let mut options = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(args.nats_inbox_prefix.clone())
        .event_callback(move |event| {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = &event
                && text.contains("Permissions Violation")
            {
                refusals.send_replace(Some(text.clone()));
            }
            async {}
        });
    if let (Some(user), Some(password)) = (args.nats_user.clone(), args.nats_password.clone()) {
        options = options.user_and_password(user, password);
    }
    let outcome = tokio::select! {
        outcome = consume(options, &args) => outcome,
        Ok(text) = refused.wait_for(Option::is_some) => {
            Err(format!("nats-server refused this user: {}", text.as_deref().unwrap_or("")).into())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consume_customer_events: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn consume(
    options: async_nats::ConnectOptions,
    args: &Args,
) -> Result<(), async_nats::Error> {
    let client = options.connect(&args.nats_url).await?;
    let stream = jetstream::new(client).get_stream(&args.stream).await?;
    let deliver_policy = match (args.from_sequence, args.from_time) {
        (Some(start_sequence), _) => DeliverPolicy::ByStartSequence { start_sequence },
        (None, Some(start_time)) => DeliverPolicy::ByStartTime { start_time },
        (None, None) => DeliverPolicy::All,
    };
    let consumer = stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: "customers.v1.events.>".into(),
                deliver_policy,
                ack_policy: AckPolicy::Explicit,
                // Unacknowledged for this long (a crash mid-handling): delivered again.
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    let mut handled = 0;
    loop {
        // One pull at a time, never more than is still wanted: a message delivered to a
        // consumer that then stops comes back only after `ack_wait`.
        let wanted = args
            .max_events
            .map_or(BATCH, |max| (max - handled).min(BATCH));
        let mut batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        while let Some(message) = batch.next().await {
            let message = message?;
            let sequence = message.info()?.stream_sequence;
            let event: CustomerEvent = serde_json::from_slice(&message.payload)?;
            // Handle the event here, idempotently by `event.id` (a deletion: erase your copy
            // of the customer); then acknowledge it. A double acknowledgement waits until the
            // server has recorded it.
            let state = match &event.data {
                Data::Created(customer) | Data::Updated { customer } => customer.status.as_str(),
                Data::Deleted { deleted } => {
                    if *deleted {
                        "deleted"
                    } else {
                        "?"
                    }
                }
            };
            println!(
                "{sequence} {} {} {} {state}",
                event.id, event.subject, event.time
            );
            message.double_ack().await?;
            handled += 1;
            if Some(handled) == args.max_events {
                return Ok(());
            }
        }
    }
}
