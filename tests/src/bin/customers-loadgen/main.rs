//! `customers-loadgen`: drives the real stack with unique, realistic customers and reports
//! throughput and latency (HdrHistogram); also the pieces the service is compared with (a
//! bare forwarder, an echo responder, a durable echo responder), and `bench`, which starts
//! everything fresh and runs the standard benchmark into `BENCHMARKS.md` and an SVG chart.
//!
//! * `generator`: request bodies.
//! * `load`: targets (HTTP, NATS), closed and open loops, statistics.
//! * `baselines`: the forwarder and the responders.
//! * `bench`: the standard benchmark and its report.

mod baselines;
mod bench;
mod generator;
mod load;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use customers_shared::wire::protocol;

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
    /// Answer every create request with a fixed customer (the architecture's ceiling).
    Echo(ResponderArgs),
    /// Parse each create request, append each group to a file with one fdatasync, then
    /// answer with a fixed customer (the durable bound).
    DurableEcho {
        #[command(flatten)]
        responder: ResponderArgs,
        /// Directory of the file the bodies are appended to.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// A bare HTTP server that forwards each request's body as one NATS request to the
    /// create subject and answers 201 with the reply (no routing, metrics or limits).
    Forward {
        #[command(flatten)]
        responder: ResponderArgs,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Build-free standard benchmark: fresh stack, ceiling vs service over HTTP and NATS at
    /// 16/64/256 concurrency; writes a Markdown report and an SVG chart.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct ResponderArgs {
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long, default_value = protocol::DEFAULT_SUBJECT_PREFIX)]
    subject_prefix: String,
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
    /// API key sent as `Authorization: Bearer` (HTTP mode); mint one with a rate limit
    /// above the load (`customers-ingress keys mint --rate-limit-per-second …`).
    #[arg(long, env = "CUSTOMERS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
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

fn main() -> ExitCode {
    let command = Cli::parse().command;
    // The baselines run on one thread, as the service's binaries do by default (see
    // `--runtime-threads`): the comparison is between designs, not runtime settings.
    let runtime = match command {
        Command::Run(_) | Command::Bench(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("an async runtime");
    let done = runtime.block_on(async {
        match command {
            Command::Run(args) => run(args).await,
            Command::Echo(r) => baselines::echo(&r.nats_url, &r.subject_prefix).await,
            Command::DurableEcho { responder: r, dir } => {
                baselines::durable_echo(&r.nats_url, &r.subject_prefix, &dir).await
            }
            Command::Forward {
                responder: r,
                listen,
            } => baselines::forward(&listen, &r.nats_url, &r.subject_prefix).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(reason: String) -> ExitCode {
    eprintln!("customers-loadgen: {reason}");
    ExitCode::FAILURE
}

async fn run(args: RunArgs) -> Result<(), String> {
    let target = match (&args.url, &args.nats_url) {
        (Some(url), _) => Target::http(url, args.api_key.as_deref()).await,
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
    let target = target?;
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
    Ok(())
}
