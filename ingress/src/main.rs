//! `customers-ingress`: parses the configuration, sets up logging, connects to NATS, binds
//! the listen address and serves until SIGINT or SIGTERM.

use clap::Parser;
use customers_ingress::{Config, Ingress};
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
    let started = async {
        let listener = Ingress::bind(&config).await?;
        let ingress = Ingress::connect(&config).await?;
        Ok::<_, customers_ingress::IngressError>((listener, ingress))
    };
    match started.await {
        Ok((listener, ingress)) => {
            tracing::info!(listen = %config.listen, "serving");
            ingress.run(listener, shutdown_signal()).await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("customers-ingress: {e}");
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
