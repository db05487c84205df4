//! `customers-ingress`: parses the configuration, sets up logging, loads the keys file and
//! TLS files, binds the listen address, connects to NATS and serves until SIGINT or SIGTERM.
//! `customers-ingress keys …` edits the keys file instead.

use std::process::ExitCode;

use customers_ingress::config::Command;
use customers_ingress::{Config, Ingress, keys_command};
use customers_shared::runtime::cli;

const BINARY: &str = "customers-ingress";

// glibc malloc/free were a fifth of the services' CPU samples under load (docs/PROFILE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main(BINARY, |config: Config, shutdown| async move {
        if let Some(Command::Keys(command)) = config.command {
            return keys_command::run(command, config.keys_file.as_deref());
        }
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
