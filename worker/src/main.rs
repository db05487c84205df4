//! `customers-worker`: parses the configuration, sets up logging and runs the worker until
//! SIGINT or SIGTERM.

use clap::Parser;
use customers_worker::{Config, Worker};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Worker::start(config).await {
        Ok(worker) => {
            worker.run(shutdown_signal()).await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("customers-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
