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

/// By default mimalloc commits its arenas up front: at 400,000 customers that held the worker
/// at 366 MB resident against 306 MB with lazy commit, for the same throughput (the system
/// allocator: 253 MB, with 9 % more CPU per create). Purging freed pages at once as well took
/// it to 284 MB but halved substring searches (the kernel mapping pages in and out, a third
/// of their CPU), so the purge delay stays mimalloc's. The first arena is made at the first
/// allocation, before `main` runs, so the option is set by a constructor.
#[cfg(target_os = "linux")]
mod allocator_options {
    /// mimalloc's option number (`mi_option_e` in its v3 header); the bindings do not name it.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

    extern "C" fn set() {
        // SAFETY: a plain setter of one of mimalloc's global options, run before anything
        // allocates.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
    }

    #[used]
    #[unsafe(link_section = ".init_array")]
    static SET_AT_LOAD: extern "C" fn() = set;

    #[cfg(test)]
    #[test]
    fn the_option_is_set_before_main_in_the_mimalloc_it_was_numbered_for() {
        // SAFETY: plain getters of mimalloc's version and global options.
        let (version, eager) = unsafe {
            (
                libmimalloc_sys::mi_version(),
                libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT),
            )
        };
        assert_eq!(version / 10000, 3, "the number is v3's");
        assert_eq!(eager, 0);
    }
}

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
