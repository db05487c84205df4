//! The worker's optional admin HTTP listener (`--admin-listen`): `GET /metrics` (Prometheus),
//! `GET /healthz` (the process is up), `GET /readyz` (connected to NATS, so the service's
//! endpoints can receive requests, and not stopping after a failure) and `POST /backup`
//! (body: an absolute path on the worker's machine; writes a consistent snapshot there and
//! answers its size as JSON; `customers-worker backup` calls it). Plain HTTP/1.1 for probes,
//! scrapers and operators on a private address; it serves nothing of the customer API.

use std::convert::Infallible;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::committer::QueueProbe;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;

/// What the admin endpoints read. Weak handles only: the admin listener never keeps the
/// database open or the committer running after the worker has stopped.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub store: Weak<Store>,
    pub queue: QueueProbe,
    /// The event outbox, when events are on.
    pub outbox: Option<Arc<crate::outbox::Outbox>>,
    pub client: async_nats::Client,
    pub health: Health,
    /// Replicated mode: this instance's role (none for a single worker).
    pub role: tokio::sync::watch::Receiver<Option<crate::replication::Role>>,
}

/// Serves `listener` until the task is aborted (the worker stops it last, so probes and
/// scrapes see the whole shutdown).
pub async fn run(listener: TcpListener, admin: Admin) {
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
                .header_read_timeout(std::time::Duration::from_secs(10))
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
        let allowed = match path {
            "/metrics" | "/healthz" | "/readyz" => Method::GET,
            "/backup" => Method::POST,
            _ => return text(StatusCode::NOT_FOUND, "not found\n"),
        };
        if request.method() != allowed {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(
                ALLOW,
                HeaderValue::from_static(if allowed == Method::GET {
                    "GET"
                } else {
                    "POST"
                }),
            );
            return response;
        }
        if path == "/backup" {
            return self.backup(request).await;
        }
        match path {
            "/metrics" => {
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render(
                    self.store.upgrade().as_deref(),
                    self.queue.queued(),
                    self.outbox.as_deref(),
                ))));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(customers_shared::runtime::metrics::CONTENT_TYPE),
                );
                response
            }
            "/readyz" if self.health.is_failed() => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping after a failure\n",
            ),
            "/readyz"
                if self.client.connection_state() != async_nats::connection::State::Connected =>
            {
                text(StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS\n")
            }
            "/readyz" => match *self.role.borrow() {
                Some(crate::replication::Role::Primary) => text(StatusCode::OK, "ready: primary\n"),
                Some(crate::replication::Role::Standby) => text(StatusCode::OK, "ready: standby\n"),
                None => text(StatusCode::OK, "ready\n"),
            },
            _ => text(StatusCode::OK, "ok\n"),
        }
    }
}

impl Admin {
    /// `POST /backup`: the body names the file to write (absolute, not there yet).
    async fn backup(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let body = match http_body_util::Limited::new(request.into_body(), 4096)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return text(StatusCode::BAD_REQUEST, "the body is the snapshot's path\n"),
        };
        let target = std::str::from_utf8(&body).map(|p| std::path::PathBuf::from(p.trim()));
        let target = match target {
            Ok(path) if path.is_absolute() && !path.exists() => path,
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "the body must be an absolute path where no file exists yet\n",
                );
            }
        };
        let started = std::time::Instant::now();
        match self.queue.snapshot(target.clone()).await {
            Ok(summary) => {
                tracing::info!(
                    path = %target.display(),
                    puts = summary.puts,
                    bytes = summary.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "backup written"
                );
                let json = serde_json::json!({
                    "path": target,
                    "entries": summary.puts,
                    "bytes": summary.bytes,
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                });
                let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(e) => {
                tracing::error!(error = %e, path = %target.display(), "backup failed");
                let mut response = Response::new(Full::new(Bytes::from(format!("{e}\n"))));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
