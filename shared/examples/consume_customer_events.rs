//! How another service consumes `customer.created` events: a durable pull consumer on the
//! `CUSTOMERS_EVENTS` stream that acknowledges each event after handling it, so that after a
//! restart it resumes where it stopped. Run it next to `scripts/run-local`:
//!
//! ```text
//! cargo run -p customers-shared --example consume_customer_events -- --durable billing
//! ```
//!
//! Replays: a new durable name (or `--from-sequence` / `--from-time` on first creation)
//! starts where it says; an existing durable consumer keeps its own position. Delivery is at
//! least once (an event whose acknowledgement was lost comes again), so handle events
//! idempotently by their `id`.

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
    #[arg(long)]
    from_time: Option<String>,
    /// Stop after this many events (default: run until interrupted).
    #[arg(long)]
    max_events: Option<usize>,
}

/// The part of the CloudEvents envelope this consumer reads (docs/asyncapi.json has it all).
#[derive(Deserialize)]
struct CustomerCreated {
    id: String,
    subject: String,
    time: String,
    data: Customer,
}

#[derive(Deserialize)]
struct Customer {
    status: String,
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args = Args::parse();
    let mut options =
        async_nats::ConnectOptions::new().custom_inbox_prefix(args.nats_inbox_prefix.clone());
    if let (Some(user), Some(password)) = (args.nats_user.clone(), args.nats_password.clone()) {
        options = options.user_and_password(user, password);
    }
    let client = options.connect(&args.nats_url).await?;
    let stream = jetstream::new(client).get_stream(&args.stream).await?;
    let deliver_policy = match (args.from_sequence, &args.from_time) {
        (Some(start_sequence), _) => DeliverPolicy::ByStartSequence { start_sequence },
        (None, Some(time)) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::parse(
                time,
                &time::format_description::well_known::Rfc3339,
            )?,
        },
        (None, None) => DeliverPolicy::All,
    };
    let consumer = stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: "customers.v1.events.created".into(),
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
            let event: CustomerCreated = serde_json::from_slice(&message.payload)?;
            // Handle the event here, idempotently by `event.id`; then acknowledge it. A double
            // acknowledgement waits until the server has recorded it.
            println!(
                "{sequence} {} {} {} {}",
                event.id, event.subject, event.time, event.data.status
            );
            message.double_ack().await?;
            handled += 1;
            if Some(handled) == args.max_events {
                return Ok(());
            }
        }
    }
}
