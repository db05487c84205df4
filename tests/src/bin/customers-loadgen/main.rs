//! `customers-loadgen`: drives the real stack with unique, realistic customers and reports
//! throughput and latency (HdrHistogram); also an echo responder to measure the
//! architecture's ceiling, and `bench`, which starts a fresh stack and runs the standard
//! benchmark into `BENCHMARKS.md` and an SVG chart.
//!
//! * `generator`: request bodies.
//! * `load`: targets (HTTP, NATS), closed and open loops, statistics.
//! * `bench`: the standard benchmark and its report.

mod bench;
mod generator;
mod load;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use customers_shared::protocol::{self, headers};
use futures_util::StreamExt;

use crate::load::{Plan, Shape, Target};

#[derive(Parser)]
#[command(
    name = "customers-loadgen",
    version,
    about = "Load generator and benchmark for the customers service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive load against a running stack and print a summary.
    Run(RunArgs),
    /// Answer every create request with a fixed customer (measures the architecture's ceiling).
    Echo {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long, default_value = protocol::DEFAULT_SUBJECT_PREFIX)]
        subject_prefix: String,
    },
    /// Build-free standard benchmark: fresh stack, ceiling vs service over HTTP and NATS at
    /// 16/64/256 concurrency; writes a Markdown report and an SVG chart.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Ingress base URL, e.g. http://127.0.0.1:8080 (HTTP mode).
    #[arg(
        long,
        conflicts_with = "nats_url",
        required_unless_present = "nats_url"
    )]
    url: Option<String>,
    /// NATS URL (NATS-direct mode: requests go straight to the worker).
    #[arg(long)]
    nats_url: Option<String>,
    #[arg(long, default_value = protocol::DEFAULT_SUBJECT_PREFIX)]
    subject_prefix: String,
    /// NATS connections used round-robin (NATS mode).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Closed loop: this many requesters back to back.
    #[arg(long, conflicts_with = "rate", default_value_t = 64)]
    concurrency: usize,
    /// Open loop: requests per second, latency measured from the intended send time.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Closed loop: stop after this many requests (warm-up included) if that comes first.
    #[arg(long, conflicts_with = "rate")]
    requests: Option<u64>,
    /// Share of requests (0–1) that reuse the previous email of their requester.
    #[arg(long, default_value_t = 0.0)]
    duplicate_ratio: f64,
    /// Send an Idempotency-Key with every request.
    #[arg(long)]
    idempotency_keys: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Echo {
            nats_url,
            subject_prefix,
        } => match echo(&nats_url, &subject_prefix).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Bench(args) => match bench::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
    }
}

fn fail(reason: String) -> ExitCode {
    eprintln!("customers-loadgen: {reason}");
    ExitCode::FAILURE
}

async fn run(args: RunArgs) -> ExitCode {
    let target = match (&args.url, &args.nats_url) {
        (Some(url), _) => Target::http(url).await,
        (None, Some(nats_url)) => {
            Target::nats(
                nats_url,
                &protocol::create_subject(&args.subject_prefix),
                args.connections,
            )
            .await
        }
        (None, None) => Err("give --url or --nats-url".to_owned()),
    };
    let target = match target {
        Ok(target) => target,
        Err(e) => return fail(e),
    };
    let plan = Plan {
        shape: args
            .rate
            .map_or(Shape::Closed(args.concurrency), Shape::Open),
        warmup: args.warmup,
        duration: args.duration,
        duplicate_ratio: args.duplicate_ratio,
        idempotency_keys: args.idempotency_keys,
        progress: true,
        requests: args.requests,
    };
    let summary = load::run(target, plan).await;
    if args.json {
        println!("{}", summary.to_json());
    } else {
        let [p50, p90, p99, p999, max] = summary.latency_ms;
        println!(
            "requests:   {} in {:.1} s",
            summary.requests, summary.seconds
        );
        println!("throughput: {:.0}/s", summary.throughput);
        println!(
            "latency:    p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms"
        );
        let statuses: Vec<String> = summary
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        println!("statuses:   {}", statuses.join(", "));
    }
    ExitCode::SUCCESS
}

/// The architecture's ceiling: a responder with no logic and no disk, answering like the
/// worker does on success (customer JSON and `Customer-Id`).
pub async fn echo(nats_url: &str, subject_prefix: &str) -> Result<(), String> {
    let client = async_nats::connect(nats_url)
        .await
        .map_err(|e| format!("cannot connect to {nats_url}: {e}"))?;
    let mut requests = client
        .queue_subscribe(protocol::create_subject(subject_prefix), "q".to_owned())
        .await
        .map_err(|e| format!("cannot subscribe: {e}"))?;
    customers_shared::nats::round_trip(&client)
        .await
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    eprintln!("echo responder serving");
    let body = Bytes::from_static(br#"{"id":"cus_01h3vjs3b16yc3f9q8q9pfrb80","name":"Echo","email":"echo@example.com","phone":null,"address":null,"payment_method":null,"created_at":"2024-09-01T15:00:00.000Z","updated_at":"2024-09-01T15:00:00.000Z","status":"active","custom_data":null}"#);
    let mut reply_headers = async_nats::HeaderMap::new();
    reply_headers.insert(headers::CUSTOMER_ID, "cus_01h3vjs3b16yc3f9q8q9pfrb80");
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            let _ = client
                .publish_with_headers(reply, reply_headers.clone(), body.clone())
                .await;
        }
    }
    Ok(())
}
