//! The worker's optional admin HTTP listener (`--admin-listen`): `GET /metrics` (Prometheus),
//! `GET /healthz` (the process is up) and `GET /readyz` (connected to NATS, so the service's
//! endpoints can receive requests, and not stopping after a failure). Plain HTTP/1.1 for probes and scrapers on a private
//! address; it serves nothing of the customer API.

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
                async move { Ok::<_, Infallible>(admin.answer(&request)) }
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
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if request.method() != Method::GET {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return response;
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
            "/readyz" => text(StatusCode::OK, "ready\n"),
            _ => text(StatusCode::OK, "ok\n"),
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
