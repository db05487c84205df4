//! `customers-worker backup` and `restore`. A backup asks a running worker's admin listener
//! (`POST /backup`) for a snapshot, which the committer writes between two groups to a file on
//! the worker's machine; a restore loads such a file into a new data directory
//! (`crate::snapshot`). Both print one line of JSON on success and exit 0.

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::{Command, Config};

const BINARY: &str = "customers-worker";

/// Runs `command`; its outcome is the process's exit code.
pub async fn run(command: Command, config: &Config) -> ExitCode {
    let outcome = match command {
        Command::Backup { admin_url, out } => backup(&admin_url, &out).await,
        Command::Restore { from } => {
            let (data_dir, cache) = (config.data_dir.clone(), config.cache_capacity_bytes);
            tokio::task::spawn_blocking(move || {
                crate::snapshot::restore(&from, &data_dir, cache)
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
            .unwrap_or_else(|e| Err(e.to_string()))
        }
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => customers_shared::runtime::cli::fail(BINARY, e),
    }
}

/// `POST {admin_url}/backup` with `out` as the body; the worker's JSON answer.
async fn backup(admin_url: &str, out: &Path) -> Result<String, String> {
    let authority = admin_url
        .strip_prefix("http://")
        .ok_or("--admin-url must be an http:// address (the admin listener)")?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach the admin listener at {admin_url}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let out = out.to_str().ok_or("--out must be a UTF-8 path")?;
    let request = http::Request::post("/backup")
        .header(http::header::HOST, authority)
        .body(Full::new(Bytes::from(out.to_owned())))
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
