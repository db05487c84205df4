//! What the service is measured against, from the same binary:
//!
//! * [`forward`]: a bare HTTP → NATS forwarder (hyper, one async-nats request per HTTP
//!   request, the reply's payload as a 201). No routing, metrics, tracing or limits: the
//!   architecture's own HTTP front at its cheapest.
//! * [`echo`]: a responder that answers every create with a fixed customer: no logic, no disk.
//!   Forwarder + echo is the architecture's ceiling.
//! * [`durable_echo`]: a responder that parses each body, appends each group of bodies
//!   (length-prefixed) to a file and calls `fdatasync` once per group on one thread, then
//!   replies: no validation, no index, no sled. Forwarder + durable echo is the durable
//!   bound: the least any durable design on this architecture can cost.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use customers_shared::wire::protocol::{self, headers};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// The fixed customer the echo responders answer with.
const ECHO_CUSTOMER: &[u8] = br#"{"id":"cus_01h3vjs3b16yc3f9q8q9pfrb80","name":"Echo","email":"echo@example.com","phone":null,"address":null,"payment_method":null,"created_at":"2024-09-01T15:00:00.000Z","updated_at":"2024-09-01T15:00:00.000Z","status":"active","custom_data":null}"#;
const ECHO_ID: &str = "cus_01h3vjs3b16yc3f9q8q9pfrb80";

async fn subscribe(
    nats_url: &str,
    subject_prefix: &str,
) -> Result<(async_nats::Client, async_nats::Subscriber), String> {
    let client = async_nats::connect(nats_url)
        .await
        .map_err(|e| format!("cannot connect to {nats_url}: {e}"))?;
    let requests = client
        .queue_subscribe(protocol::create_subject(subject_prefix), "q".to_owned())
        .await
        .map_err(|e| format!("cannot subscribe: {e}"))?;
    customers_shared::runtime::nats::round_trip(&client)
        .await
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    Ok((client, requests))
}

fn echo_headers() -> async_nats::HeaderMap {
    let mut reply_headers = async_nats::HeaderMap::new();
    reply_headers.insert(headers::CUSTOMER_ID, ECHO_ID);
    reply_headers
}

/// Answers every create request with [`ECHO_CUSTOMER`], like a worker's success reply.
pub async fn echo(nats_url: &str, subject_prefix: &str) -> Result<(), String> {
    let (client, mut requests) = subscribe(nats_url, subject_prefix).await?;
    eprintln!("echo responder serving");
    let (body, reply_headers) = (Bytes::from_static(ECHO_CUSTOMER), echo_headers());
    while let Some(request) = requests.next().await {
        if let Some(reply) = request.reply {
            let _ = client
                .publish_with_headers(reply, reply_headers.clone(), body.clone())
                .await;
        }
    }
    Ok(())
}

/// Parses each request, makes each group durable in `dir/bodies` with one `fdatasync`, then
/// replies [`ECHO_CUSTOMER`] to the group. A body that is not JSON is answered at once.
pub async fn durable_echo(nats_url: &str, subject_prefix: &str, dir: &Path) -> Result<(), String> {
    let (client, mut requests) = subscribe(nats_url, subject_prefix).await?;
    let path = dir.join("bodies");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let (to_writer, mut groups) =
        tokio::sync::mpsc::unbounded_channel::<(Bytes, async_nats::Subject)>();
    let writer_client = client.clone();
    let writer = tokio::spawn(async move {
        let (body, reply_headers) = (Bytes::from_static(ECHO_CUSTOMER), echo_headers());
        let mut group = Vec::new();
        while let Some(first) = groups.recv().await {
            group.push(first);
            while let Ok(next) = groups.try_recv() {
                group.push(next);
            }
            let mut buffer = Vec::new();
            for (payload, _) in &group {
                buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                buffer.extend_from_slice(payload);
            }
            file = tokio::task::spawn_blocking(move || {
                file.write_all(&buffer)
                    .and_then(|()| file.sync_data())
                    .expect("append and fdatasync");
                file
            })
            .await
            .expect("the writer thread");
            for (_, reply) in group.drain(..) {
                let _ = writer_client
                    .publish_with_headers(reply, reply_headers.clone(), body.clone())
                    .await;
            }
        }
    });
    eprintln!("durable echo responder serving");
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        if serde_json::from_slice::<serde_json::Value>(&request.payload).is_ok() {
            let _ = to_writer.send((request.payload, reply));
        } else {
            let _ = client.publish(reply, Bytes::from_static(b"{}")).await;
        }
    }
    drop(to_writer);
    writer.await.map_err(|e| format!("the writer: {e}"))
}

/// Serves HTTP on `listen`: each request's body goes to the create subject as one NATS
/// request, and the reply's payload comes back as a 201.
pub async fn forward(listen: &str, nats_url: &str, subject_prefix: &str) -> Result<(), String> {
    let client = async_nats::connect(nats_url)
        .await
        .map_err(|e| format!("cannot connect to {nats_url}: {e}"))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("forwarder listening on {addr}");
    let subject = async_nats::Subject::from(protocol::create_subject(subject_prefix));
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accept: {e}"))?;
        let (client, subject) = (client.clone(), subject.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let (client, subject) = (client.clone(), subject.clone());
                async move {
                    let body = request
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let response = match client.request(subject, body).await {
                        Ok(reply) => hyper::Response::builder()
                            .status(201)
                            .header("content-type", "application/json")
                            .body(Full::new(reply.payload)),
                        Err(_) => hyper::Response::builder()
                            .status(503)
                            .body(Full::new(Bytes::new())),
                    };
                    Ok::<_, Infallible>(response.expect("a valid response"))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
