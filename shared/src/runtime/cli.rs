//! What both binaries do before and after their real work: parse the configuration (a bad
//! flag is one line on stderr and exit code 2), set up logging (text or JSON lines), build
//! the async runtime, and wait for SIGINT/SIGTERM.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the current span's fields (e.g. `request_id`).
    Json,
}

/// Process settings shared by both binaries: logging (the filter itself is `RUST_LOG`) and
/// the async runtime.
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessOptions {
    /// Log line format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, env = "CUSTOMERS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Threads of the async runtime. One (the default) handles every request on one thread,
    /// which costs the least CPU per request: on small machines a wake-up of another thread
    /// costs more than the work it hands over. Raise it when one core is not enough.
    #[arg(long, env = "CUSTOMERS_RUNTIME_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub runtime_threads: u16,
}

/// A configuration that carries [`ProcessOptions`].
pub trait Process {
    fn process(&self) -> &ProcessOptions;
}

/// The async runtime [`ProcessOptions::runtime_threads`] asks for.
fn runtime(options: &ProcessOptions) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match options.runtime_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(threads));
            builder
        }
    };
    builder.enable_all().build()
}

/// The body of a binary's `main`: parses `T`, sets up logging, builds the runtime, installs
/// the signal handlers and runs `serve(config, shutdown)` on it; `shutdown` resolves on the
/// first SIGINT or SIGTERM. A failure to start is one line on stderr.
pub fn main<T, F, Fut>(binary: &str, serve: F) -> ExitCode
where
    T: clap::Parser + Process,
    F: FnOnce(T, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let config: T = match start(binary) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match runtime(config.process()) {
        Ok(runtime) => runtime,
        Err(e) => return fail(binary, format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        let shutdown = Box::pin(shutdown_signal());
        serve(config, shutdown).await
    })
}

/// Parses `T` from the command line and environment, then sets up logging. `--help` and
/// `--version` print and exit 0; an invalid configuration prints one line and gives the
/// exit code for `main` to return.
fn start<T: clap::Parser + Process>(binary: &str) -> Result<T, ExitCode> {
    match T::try_parse() {
        Ok(config) => {
            init_logging(config.process().log_format);
            Ok(config)
        }
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's first line, with the list it introduces (e.g. the missing arguments) or
            // the values it would have taken.
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
            let mut reason = lines.next().unwrap_or("invalid arguments").to_owned();
            if let Some(next) = lines.next()
                && (reason.ends_with(':') || next.starts_with("[possible values:"))
            {
                reason = format!("{reason} {next}");
            }
            Err(fail(binary, reason.trim_start_matches("error: ")))
        }
    }
}

/// Prints `binary: reason` on stderr and returns the failure exit code.
pub fn fail(binary: &str, reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("{binary}: {reason}");
    ExitCode::FAILURE
}

/// Logs to stderr; the filter comes from `RUST_LOG` (default `info`). Colours only on a
/// terminal: in a log pipe they are noise, and formatting them into every request span's
/// fields cost about 5 % of a service's request handling.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        );
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled, so call it before announcing readiness: a signal
/// that arrives during startup is then a graceful shutdown, not the default abrupt exit.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutdown signal received");
    }
}
