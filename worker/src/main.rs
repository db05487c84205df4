//! `customers-worker`: parses the configuration, sets up logging and runs the worker until
//! SIGINT or SIGTERM (exit 0) or a failure (exit 74 for storage, 70 for a panic, 75 for a
//! replicated primary that was fenced). `customers-worker backup|restore|verify …` takes,
//! loads or checks a snapshot instead.

use std::process::ExitCode;

use customers_shared::runtime::cli;
use customers_worker::{Config, Worker};

const BINARY: &str = "customers-worker";

// glibc malloc/free were about a fifth of the worker's CPU samples under load (docs/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Failpoints are configured by the FAILPOINTS environment variable in test builds.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    cli::main(BINARY, |mut config: Config, shutdown| async move {
        if let Some(command) = config.command.take() {
            return customers_worker::ops::commands::run(command, &config).await;
        }
        match Worker::start(config).await {
            Ok(worker) => match worker.run(shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(failure) => {
                    eprintln!("{BINARY}: {failure}");
                    ExitCode::from(failure.exit_code())
                }
            },
            Err(e) => cli::fail(BINARY, e),
        }
    })
}
