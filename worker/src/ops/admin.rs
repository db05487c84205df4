//! The worker's optional admin HTTP listener (`--admin-listen`): `GET /metrics` (Prometheus),
//! `GET /healthz` (the process is up), `GET /readyz` (connected to NATS, so the service's
//! endpoints can receive requests, and not stopping after a failure; JSON like the ingress's)
//! and `POST /backup` (body: a file name; writes a consistent snapshot into `--backup-dir`
//! and answers its size as JSON; `customers-worker backup` calls it). `HEAD` goes where `GET`
//! does. Plain HTTP/1.1 for probes, scrapers and operators on the local host or a trusted
//! network: only a backup can be made to need a token (`--admin-token-file`), since probes
//! and scrapers should not need secrets; it serves nothing of the customer API.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use customers_shared::ApiError;
use customers_shared::runtime::clock::unix_ms;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::commit::{Outbox, QueueProbe, SnapshotFailed};
use crate::health::Health;
use crate::metrics::{EventGauges, Gauges, Metrics};
use crate::role::Role;
use crate::storage::backup::Summary;
use crate::storage::store::Store;

/// What the admin endpoints read. Weak handles only: the admin listener never keeps the
/// database open or the committer running after the worker has stopped.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Weak<Store>,
    pub(crate) queue: QueueProbe,
    /// The event outbox, when events are on.
    pub(crate) outbox: Option<Arc<Outbox>>,
    pub(crate) client: async_nats::Client,
    pub(crate) health: Health,
    /// This instance's role, as it changes.
    pub(crate) role: tokio::sync::watch::Receiver<Role>,
    /// Where backups may be written, and who may ask; none: backups are refused.
    pub(crate) backups: Option<Arc<BackupPolicy>>,
}

/// The directory backups go to and, optionally, the token a backup request must present.
pub(crate) struct BackupPolicy {
    dir: PathBuf,
    /// SHA-256 of the token: compared digest to digest, so the comparison's time says
    /// nothing about the token.
    token_digest: Option<[u8; 32]>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupPolicyError {
    #[error("--backup-dir {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("--admin-token-file {}: {reason}", path.display())]
    Token { path: PathBuf, reason: String },
}

impl BackupPolicy {
    /// The backup directory (created when missing) and the token in `token_file`.
    pub(crate) fn new(dir: &Path, token_file: Option<&Path>) -> Result<Self, BackupPolicyError> {
        std::fs::create_dir_all(dir).map_err(|source| BackupPolicyError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        let dir = std::fs::canonicalize(dir).map_err(|source| BackupPolicyError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
        let token_digest = match token_file {
            None => None,
            Some(path) => Some(read_token(path)?),
        };
        Ok(Self { dir, token_digest })
    }

    /// Whether `authorization` carries the token (always, when none is required).
    fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(expected) = &self.token_digest else {
            return true;
        };
        let presented = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| <[u8; 32]>::from(Sha256::digest(token.trim().as_bytes())));
        presented.as_ref() == Some(expected)
    }
}

/// The SHA-256 of the token in `path` (surrounding white space ignored; at least 16
/// characters, so that it cannot be guessed).
fn read_token(path: &Path) -> Result<[u8; 32], BackupPolicyError> {
    let refused = |reason: String| BackupPolicyError::Token {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| refused(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refused(
            "the token must be at least 16 visible ASCII characters".into(),
        ));
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

/// Serves `listener` until the task is aborted (the worker stops it last, so probes and
/// scrapes see the whole shutdown).
pub(crate) async fn run(listener: TcpListener, admin: Admin) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin listener accept failed");
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.answer(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

impl Admin {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let method = request.method();
        let reads = method == Method::GET || method == Method::HEAD;
        match path {
            "/metrics" | "/healthz" | "/readyz" if !reads => not_allowed("GET, HEAD"),
            "/backup" if method != Method::POST => not_allowed("POST"),
            "/metrics" => {
                let gauges = self.gauges();
                let mut response =
                    Response::new(Full::new(Bytes::from(self.metrics.render(&gauges))));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(customers_shared::runtime::metrics::CONTENT_TYPE),
                );
                response
            }
            "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "/readyz" => self.readiness(),
            "/backup" => self.backup(request).await,
            _ => problem(&ApiError::NotFound),
        }
    }

    /// The gauges a scrape reads now: the queue, the database's size and the outbox.
    fn gauges(&self) -> Gauges {
        let store = self.store.upgrade();
        let events = self.outbox.as_deref().map(|outbox| {
            let pending = outbox.pending();
            let oldest_age = outbox.oldest_pending_ms().map_or(Duration::ZERO, |at_ms| {
                Duration::from_millis(unix_ms().saturating_sub(at_ms))
            });
            EventGauges {
                pending,
                oldest_age,
            }
        });
        Gauges {
            queued: self.queue.queued(),
            database_bytes: store.as_deref().and_then(|store| store.size_on_disk().ok()),
            events,
        }
    }

    /// Ready while connected to NATS and not stopping after a failure; replicated, with the
    /// role. Not ready is the same 503 problem the ingress answers.
    fn readiness(&self) -> Response<Full<Bytes>> {
        let reason = if self.health.is_failed() {
            "stopping after a failure"
        } else if self.client.connection_state() != async_nats::connection::State::Connected {
            "not connected to NATS"
        } else {
            let mut ready = serde_json::json!({"status": "ready"});
            let role = *self.role.borrow();
            if role.is_replicated() {
                ready["role"] = role.name().into();
            }
            return json(StatusCode::OK, ready);
        };
        problem(&ApiError::ServiceUnavailable {
            reason,
            retry_after_secs: 1,
        })
    }

    /// `POST /backup`: the body names the file to write in the backup directory (a name, not
    /// a path, so a caller can write nowhere else); an existing file is never replaced.
    async fn backup(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let Some(policy) = &self.backups else {
            return refusal(
                StatusCode::FORBIDDEN,
                "backups are off: start the worker with --backup-dir",
            );
        };
        if !policy.allows(request.headers().get(AUTHORIZATION)) {
            let mut response = refusal(
                StatusCode::UNAUTHORIZED,
                "a backup needs the admin token: Authorization: Bearer <token>",
            );
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="customers-admin""#),
            );
            return response;
        }
        let body = match http_body_util::Limited::new(request.into_body(), 4096)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return refusal(StatusCode::BAD_REQUEST, NAME_RULE),
        };
        let Some(name) = std::str::from_utf8(&body)
            .ok()
            .map(str::trim)
            .filter(|name| is_backup_name(name))
        else {
            return refusal(StatusCode::BAD_REQUEST, NAME_RULE);
        };
        let target = policy.dir.join(name);
        let started = std::time::Instant::now();
        match self.write_backup(&policy.dir, &target).await {
            Ok(summary) => {
                tracing::info!(
                    path = %target.display(),
                    puts = summary.puts,
                    bytes = summary.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "backup written"
                );
                json(
                    StatusCode::OK,
                    serde_json::json!({
                        "name": name,
                        "path": target,
                        "entries": summary.puts,
                        "bytes": summary.bytes,
                        "elapsed_ms": started.elapsed().as_millis() as u64,
                    }),
                )
            }
            Err(BackupError::Exists) => refusal(
                StatusCode::CONFLICT,
                "a backup of that name exists already; choose another name",
            ),
            Err(e) => {
                tracing::error!(error = %e, path = %target.display(), "backup failed");
                refusal(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
            }
        }
    }

    /// Has the committer write the snapshot beside `target`, then gives it its name only if
    /// the name is still free (a hard link fails where a rename would replace), durably.
    async fn write_backup(&self, dir: &Path, target: &Path) -> Result<Summary, BackupError> {
        // The directory may have been removed since the start.
        std::fs::create_dir_all(dir)?;
        if target.exists() {
            return Err(BackupError::Exists);
        }
        let partial = dir.join(format!(
            ".{}.partial-{}",
            target
                .file_name()
                .map_or_else(Default::default, |n| n.to_string_lossy()),
            std::process::id()
        ));
        let outcome = match self.queue.snapshot(partial.clone()).await {
            Err(e) => Err(BackupError::Snapshot(e)),
            Ok(summary) => match std::fs::hard_link(&partial, target) {
                Ok(()) => crate::storage::journal::sync_dir(dir)
                    .map(|()| summary)
                    .map_err(BackupError::Io),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(BackupError::Exists),
                Err(e) => Err(BackupError::Io(e)),
            },
        };
        let _ = std::fs::remove_file(&partial);
        outcome
    }
}

#[derive(Debug, thiserror::Error)]
enum BackupError {
    #[error("a backup of that name exists already")]
    Exists,
    #[error(transparent)]
    Snapshot(#[from] SnapshotFailed),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

const NAME_RULE: &str = "the body is the backup's file name: 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'";

/// A file name that stays in the backup directory: no separator, no `..`, not hidden.
pub(super) fn is_backup_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A refused or failed backup: `{"error": reason}`.
fn refusal(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": reason }))
}

/// An error the customer API also answers (404, 405, 503), as the same problem body.
fn problem(error: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Full::new(Bytes::from(error.problem_json())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(customers_shared::wire::problem::PROBLEM_CONTENT_TYPE),
    );
    if let Some(secs) = error.retry_after_secs() {
        headers.insert(http::header::RETRY_AFTER, secs.into());
    }
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = problem(&ApiError::MethodNotAllowed { allow });
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_stay_in_the_backup_directory() {
        for (description, name, allowed) in [
            ("a dated name", "customers-2026-12-03T10.snap", true),
            ("underscores", "nightly_backup", true),
            ("empty", "", false),
            ("an absolute path", "/etc/passwd", false),
            ("a relative path", "sub/file.snap", false),
            ("the parent", "..", false),
            ("a hidden file", ".customers.snap", false),
            ("white space", "my backup", false),
            ("a backslash", "a\\b", false),
            ("not ASCII", "sauvegarde-été", false),
            ("too long", &"x".repeat(129), false),
        ] {
            assert_eq!(is_backup_name(name), allowed, "{description}: {name:?}");
        }
    }
}
