//! The HTTP/1.1 server: accepts connections on a pre-bound listener (at most
//! `max_connections` at once), completes the TLS handshake when TLS is on (within the header
//! read timeout, so a silent client cannot hold a slot), serves each connection with hyper
//! (keep-alive, header read timeout, header size limit) and, on shutdown, stops accepting and
//! lets in-flight requests complete within a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::routes::{App, ConnectionInfo};
use crate::tls::{self, Tls};

/// Connection-level settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerSettings {
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_grace: Duration,
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown` resolves.
pub(crate) async fn run(
    listener: TcpListener,
    app: App,
    tls: Option<Arc<Tls>>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = settings.max_connections,
                "connection limit reached; closing a new connection"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            watcher: graceful.watcher(),
            peer,
        };
        let tls = tls.clone();
        let handshake_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            match tls {
                None => connection.serve(TokioIo::new(stream), Arc::new([])).await,
                Some(tls) => connection.serve_tls(stream, &tls, handshake_timeout).await,
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("stopping: no new connections accepted; draining in-flight requests");
    if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::error!("grace period over; closing remaining connections");
    }
}

/// One accepted connection, until it is served.
struct Connection {
    builder: http1::Builder,
    app: App,
    watcher: Watcher,
    peer: SocketAddr,
}

impl Connection {
    async fn serve_tls(self, stream: TcpStream, tls: &Tls, handshake_timeout: Duration) {
        match tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => {
                let names = tls::client_certificate_names(stream.get_ref().1);
                self.serve(TokioIo::new(stream), names.into()).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, peer = %self.peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
        }
    }

    async fn serve<I>(self, io: I, certificate_names: Arc<[String]>)
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let info = ConnectionInfo {
            peer: self.peer,
            certificate_names,
        };
        let app = self.app;
        let service = service_fn(move |request| {
            let app = app.clone();
            let info = info.clone();
            async move { Ok::<_, Infallible>(app.handle(request, &info).await) }
        });
        let served = self
            .watcher
            .watch(self.builder.serve_connection(io, service))
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}
