//! The peer's database: a throwaway PostgreSQL server on 127.0.0.1 (as the `postgres` user
//! when the benchmark runs as root, since PostgreSQL refuses root), fsync on, defaults
//! otherwise, stopped with its fast shutdown.

use std::path::{Path, PathBuf};

use customers_tests::ServiceProcess;

/// A throwaway PostgreSQL server on 127.0.0.1 and a free port, its data in `scratch`.
pub(super) struct Postgres {
    server: ServiceProcess,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    pub(super) async fn start(bin_dir: &Path, scratch: &Path) -> Result<Self, String> {
        let data = scratch.join("postgres");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        // PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
        let as_user = is_root().then_some("postgres");
        if let Some(user) = as_user {
            let status = std::process::Command::new("chown")
                .args(["-R", &format!("{user}:"), data.to_str().unwrap_or_default()])
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("cannot hand {} to {user}", data.display()));
            }
        }
        let command = |program: &str| -> (PathBuf, Vec<String>) {
            let program = bin_dir.join(program);
            match as_user {
                Some(user) => (
                    PathBuf::from("runuser"),
                    vec![
                        "-u".into(),
                        user.into(),
                        "--".into(),
                        program.display().to_string(),
                    ],
                ),
                None => (program, Vec::new()),
            }
        };
        let (initdb, mut initdb_args) = command("initdb");
        initdb_args.extend(
            [
                "-D",
                data.to_str().unwrap_or_default(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
            .map(str::to_owned),
        );
        let output = std::process::Command::new(&initdb)
            .args(&initdb_args)
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let (postgres, mut args) = command("postgres");
        args.extend(
            [
                "-D",
                data.to_str().unwrap_or_default(),
                "-p",
                &port.to_string(),
                "-k",
                data.to_str().unwrap_or_default(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=100",
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = ServiceProcess::start_program(
            &postgres,
            &args,
            &[],
            "database system is ready to accept connections",
        )
        .await;
        Ok(Self { server, data, port })
    }

    pub(super) fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The postmaster's process id (the first line of `postmaster.pid`).
    pub(super) fn postmaster_pid(&self) -> u32 {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub(super) async fn stop(self) {
        let pid = self.postmaster_pid();
        // SIGINT: PostgreSQL's fast shutdown.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let _ = self.server.exited().await;
    }
}

/// Whether this process runs as root.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
