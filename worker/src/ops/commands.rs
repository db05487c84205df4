//! `customers-worker backup`, `restore` and `verify`. A backup asks a running worker's admin
//! listener (`POST /backup`) for a snapshot, which the committer writes between two groups
//! into the worker's backup directory; a restore loads such a file into a new data directory
//! (`crate::storage::backup`); a verify opens a data directory no worker runs on and checks it
//! whole. Each prints one line of JSON and exits 0 on success (verify: when the database is
//! consistent).

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::{Command, Config};
use crate::storage::store::Store;

const BINARY: &str = "customers-worker";

/// Runs `command`; its outcome is the process's exit code.
pub async fn run(command: Command, config: &Config) -> ExitCode {
    let cache = config.cache_capacity_bytes;
    let outcome = match command {
        Command::Backup {
            admin_url,
            name,
            token_file,
        } => backup(&admin_url, name, token_file.as_deref()).await,
        Command::Restore { from, data_dir } => {
            blocking(move || {
                crate::storage::backup::restore(&from, &data_dir, cache)
                    .map(|summary| {
                        serde_json::json!({
                            "data_dir": data_dir,
                            "entries": summary.puts,
                            "bytes": summary.bytes,
                        })
                        .to_string()
                    })
                    .map_err(|e| e.to_string())
            })
            .await
        }
        Command::Verify { data_dir } => blocking(move || verify(&data_dir, cache)).await,
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => customers_shared::runtime::cli::fail(BINARY, e),
    }
}

async fn blocking(
    work: impl FnOnce() -> Result<String, String> + Send + 'static,
) -> Result<String, String> {
    crate::support::blocking::run(work)
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

/// Opens `data_dir` as a start would (replaying the journal, checking the checkpoint
/// manifest), then walks every record and index entry.
fn verify(data_dir: &Path, cache: u64) -> Result<String, String> {
    if !data_dir.is_dir() {
        return Err(format!(
            "--data-dir {} is not a directory",
            data_dir.display()
        ));
    }
    let opened = Store::open(data_dir, cache).map_err(|e| e.to_string())?;
    let report = opened.store.verify().map_err(|e| e.to_string())?;
    let line = serde_json::json!({
        "data_dir": data_dir,
        "records": report.records,
        "missing_index_entries": report.missing_index_entries,
        "orphan_index_entries": report.orphan_index_entries,
        "conflicting_records": report.conflicting_records,
        "misplaced_feed_and_filter_entries": report.misplaced_feed_and_filter_entries,
        "consistent": report.is_consistent(),
    })
    .to_string();
    if report.is_consistent() {
        Ok(line)
    } else {
        Err(format!("the database is not consistent: {line}"))
    }
}

/// `POST {admin_url}/backup` with the file name as the body; the worker's JSON answer.
async fn backup(
    admin_url: &str,
    name: Option<String>,
    token_file: Option<&Path>,
) -> Result<String, String> {
    let authority = admin_url
        .strip_prefix("http://")
        .ok_or("--admin-url must be an http:// address (the admin listener)")?
        .trim_end_matches('/');
    let name = name.unwrap_or_else(default_name);
    if !super::admin::is_backup_name(&name) {
        return Err(format!(
            "--name {name:?}: a file name of letters, digits, '.', '_' and '-', not starting with '.' (the worker writes it into its --backup-dir)"
        ));
    }
    let token = match token_file {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
    };
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach the admin listener at {admin_url}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = http::Request::post("/backup").header(http::header::HOST, authority);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(name)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("the worker refused the backup ({status}): {body}"))
    }
}

/// `customers-{UTC time}.snap`, e.g. `customers-2026-12-03T104500Z.snap`.
fn default_name() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    format!("customers-{}.snap", now.replace(':', ""))
}
