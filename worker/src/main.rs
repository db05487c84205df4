//! `customers-worker`: parses the configuration, sets up logging and runs the worker until
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use customers_shared::cli;
use customers_worker::{Config, Worker};

const BINARY: &str = "customers-worker";

// glibc malloc was ~20 % of the worker's CPU under load (perf, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = match cli::start(BINARY) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let shutdown = cli::shutdown_signal();
    match Worker::start(config).await {
        Ok(worker) => {
            worker.run(shutdown).await;
            ExitCode::SUCCESS
        }
        Err(e) => cli::fail(BINARY, e),
    }
}
