//! `customers-ingress`: parses the configuration, sets up logging, binds the listen address,
//! connects to NATS and serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use customers_ingress::{Config, Ingress};
use customers_shared::cli;

const BINARY: &str = "customers-ingress";

// glibc malloc/free were a fifth of the services' CPU samples under load (docs/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config: Config = match cli::start(BINARY) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match cli::runtime(&config.process) {
        Ok(runtime) => runtime,
        Err(e) => return cli::fail(BINARY, format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        let shutdown = cli::shutdown_signal();
        let listener = match Ingress::bind(&config).await {
            Ok(listener) => listener,
            Err(e) => return cli::fail(BINARY, e),
        };
        match Ingress::connect(&config).await {
            Ok(ingress) => {
                let listen = listener.local_addr().map_or(config.listen, |addr| addr);
                tracing::info!(%listen, "serving");
                ingress.run(listener, shutdown).await;
                ExitCode::SUCCESS
            }
            Err(e) => cli::fail(BINARY, e),
        }
    })
}
