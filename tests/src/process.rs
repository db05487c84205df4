//! Workspace binaries as child processes: [`ServiceProcess`] (started, awaited until it logs
//! that it is ready, its log read as it comes, killed or signalled), [`run_to_exit`] for
//! starts that must fail and for commands, the worker binary with failpoints, and
//! [`KillMoments`] for kills at random moments.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::fixtures::{PATIENCE, report};

/// A binary of this workspace: next to the running executable (a binary in
/// `target/<profile>/`) or one level up (a test in `target/<profile>/deps/`), as built by
/// `cargo build` or `cargo test --workspace`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let beside = exe.parent().expect("executable directory");
    let candidates = [
        beside.join(name),
        beside.parent().unwrap_or(beside).join(name),
    ];
    candidates
        .iter()
        .find(|path| path.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built next to {}; run `cargo test --workspace` (scripts/test) or `scripts/bench`",
                exe.display()
            )
        })
}

/// A workspace binary running as a child process, with its log on stderr.
pub struct ServiceProcess {
    /// The log line that announced readiness.
    pub ready_line: String,
    child: tokio::process::Child,
    /// Log lines not read yet. A task reads the process's stderr as it comes, so the process
    /// never blocks on a full pipe, however much it logs and whether or not the test reads.
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ServiceProcess {
    /// Starts `name` with `args` and returns once it logs a line containing `ready`.
    pub async fn start(name: &str, args: &[&str], ready: &str) -> Self {
        Self::start_with_env(name, args, &[], ready).await
    }

    /// [`ServiceProcess::start`] with extra environment variables.
    pub async fn start_with_env(
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> Self {
        Self::start_program(&workspace_binary(name), args, env, ready).await
    }

    /// [`ServiceProcess::start_with_env`] for any program, not only this workspace's.
    pub async fn start_program(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut stderr =
            tokio::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let (lines, log) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = lines.send(line);
            }
        });
        let mut process = Self {
            ready_line: String::new(),
            child,
            log,
        };
        process.ready_line = process.wait_for_log(ready).await;
        process
    }

    /// Waits until the process logs a line containing `text`; returns that line.
    pub async fn wait_for_log(&mut self, text: &str) -> String {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.log.recv().await {
                    Some(line) if line.contains(text) => return line,
                    Some(_) => {}
                    None => panic!("the process exited before logging {text:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line containing {text:?} within {PATIENCE:?}"))
    }

    /// Waits (up to [`PATIENCE`]) for the process to end on its own; returns how it ended and
    /// the log lines it wrote since the last one read.
    pub async fn exited(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let mut lines = Vec::new();
        let status = tokio::time::timeout(PATIENCE, async {
            // The log ends when the process (and whatever inherited its stderr) is gone.
            while let Some(line) = self.log.recv().await {
                lines.push(line);
            }
            self.child.wait().await.expect("wait for the process")
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the process did not exit within {PATIENCE:?}; log: {lines:#?}")
        });
        (status, lines)
    }

    /// The operating system's id of the process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the process");
    }

    /// Sends `signal` (a `kill` name such as `HUP`) to the running process.
    pub fn send_signal(&self, signal: &str) {
        let pid = self.child.id().expect("a running process").to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.send_signal("TERM");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the process exits within the grace period")
            .expect("wait for the process")
    }
}

/// Runs the workspace binary `name` with `args` until it exits on its own (within
/// [`PATIENCE`]), logging warnings and errors only: its exit code and what it wrote to
/// stderr. For starts that must fail, and for commands.
pub async fn run_to_exit(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(workspace_binary(name))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} {args:?} did not exit within {PATIENCE:?}"))
    .expect("run the binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts the `customers-worker` binary on `data_dir` with `extra` flags; returns once it
/// serves.
pub async fn start_worker_process(
    nats_url: &str,
    data_dir: &Path,
    extra: &[&str],
) -> ServiceProcess {
    start_worker_process_with_failpoints(nats_url, data_dir, extra, "").await
}

/// [`start_worker_process`] with failpoints set (the `fail` crate's `FAILPOINTS` syntax,
/// e.g. `journal-sync=20*off->return`); the test build of the worker has them compiled in.
pub async fn start_worker_process_with_failpoints(
    nats_url: &str,
    data_dir: &Path,
    extra: &[&str],
    failpoints: &str,
) -> ServiceProcess {
    let data_dir = data_dir.to_str().expect("a UTF-8 temporary path");
    let mut args = vec!["--nats-url", nats_url, "--data-dir", data_dir];
    args.extend_from_slice(extra);
    ServiceProcess::start_with_env(
        "customers-worker",
        &args,
        &[("FAILPOINTS", failpoints)],
        "serving",
    )
    .await
}

/// Random moments for kills, seeded afresh so that runs differ, with the seed reported for
/// a rerun.
pub struct KillMoments(fastrand::Rng);

impl KillMoments {
    pub fn seeded() -> Self {
        let seed = fastrand::u64(..);
        report(&format!("kill-moment seed: {seed}"));
        Self(fastrand::Rng::with_seed(seed))
    }

    /// The next number, below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0.u64(..bound)
    }
}
