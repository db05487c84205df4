//! `customers-ingress`: parses the configuration, sets up logging, binds the listen address,
//! connects to NATS and serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use customers_ingress::{Config, Ingress};
use customers_shared::runtime::cli;

const BINARY: &str = "customers-ingress";

// glibc malloc/free were a fifth of the services' CPU samples under load (docs/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main(BINARY, |config: Config, shutdown| async move {
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
