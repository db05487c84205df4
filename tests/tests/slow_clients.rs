//! Slow and hostile HTTP clients: a client that never finishes its headers, an idle
//! keep-alive connection, an oversized header block and a flood of connections are all cut
//! off by configurable limits instead of holding the ingress's resources.

use std::time::{Duration, Instant};

use customers_tests::{NatsServer, PATIENCE, TestIngress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn ingress(
    configure: impl FnOnce(&mut customers_ingress::Config),
) -> (NatsServer, TestIngress) {
    let nats = NatsServer::start();
    let mut config = customers_ingress::Config::new(nats.url());
    configure(&mut config);
    let ingress = TestIngress::start_with(config).await;
    (nats, ingress)
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn unfinished_headers_are_cut_off() {
    let timeout = Duration::from_millis(300);
    let (_nats, ingress) = ingress(|c| c.header_read_timeout = timeout).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    stream
        .write_all(b"POST /api/v1/customers HTTP/1.1\r\nhost: slow\r\ncontent-type: app")
        .await
        .unwrap();
    let (received, closed_after) = read_to_close(&mut stream).await;
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received}"
    );
    assert!(
        closed_after >= timeout - Duration::from_millis(50),
        "closed after {closed_after:?}"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let timeout = Duration::from_millis(300);
    let (_nats, ingress) = ingress(|c| c.header_read_timeout = timeout).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    stream
        .write_all(b"GET /nothing HTTP/1.1\r\nhost: idle\r\n\r\n")
        .await
        .unwrap();
    let (received, closed_after) = read_to_close(&mut stream).await;
    assert!(
        received.starts_with("HTTP/1.1 404"),
        "the request is answered first: {received}"
    );
    assert!(
        closed_after >= timeout - Duration::from_millis(50),
        "then the idle connection closes: {closed_after:?}"
    );
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let (_nats, ingress) = ingress(|c| c.max_header_bytes = 8192).await;
    let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
    let big = "x".repeat(10_000);
    let request =
        format!("POST /api/v1/customers HTTP/1.1\r\nhost: big\r\nx-padding: {big}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    let (received, _) = read_to_close(&mut stream).await;
    assert!(received.starts_with("HTTP/1.1 431"), "{received}");
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    // With a header timeout far beyond the test's patience, a connection that is closed
    // within it was closed at once, not left to time out.
    let (_nats, ingress) = ingress(|c| {
        c.max_connections = 2;
        c.header_read_timeout = Duration::from_secs(600);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(ingress.addr).await.unwrap();
        // A served connection answers; this also proves the server took its slot.
        stream
            .write_all(b"GET /a HTTP/1.1\r\nhost: held\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 12];
        stream.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"HTTP/1.1 404");
        held.push(stream);
    }
    let mut third = TcpStream::connect(ingress.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /a HTTP/1.1\r\nhost: third\r\n\r\n")
        .await;
    let (received, _) = read_to_close(&mut third).await;
    assert!(
        received.is_empty(),
        "the third connection is not served: {received}"
    );
}
