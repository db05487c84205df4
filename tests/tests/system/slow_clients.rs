//! Slow and hostile HTTP clients: a client that never finishes its headers, a body that
//! stalls or trickles, an idle keep-alive connection, an oversized header block and a flood
//! of connections are all cut off by configurable limits instead of holding the ingress's
//! resources; and one credential's slow requests never take the capacity others share.

use std::time::{Duration, Instant};

use customers_ingress::auth::keys_file::Scope;
use customers_tests::{NatsServer, PATIENCE, TestIngress, UNLIMITED, mint_key, spawn_app};
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

/// A create whose headers promise 1000 bytes of body; returns the connection after sending
/// `first` of the body.
async fn body_started(ingress: std::net::SocketAddr, key: &str, first: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    let head = format!(
        "POST /api/v1/customers HTTP/1.1\r\nhost: slow\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first).await.unwrap();
    stream
}

/// Sends a space every `interval` until the server answers and closes; returns the answer's
/// status line and when it came.
async fn trickle_until_answered(mut stream: TcpStream, interval: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                },
                () = tokio::time::sleep(interval) => {
                    // The server may have closed its side already; the answer is what counts.
                    let _ = stream.write_all(b" ").await;
                }
            }
        }
    })
    .await
    .expect("the server answers a slow body and closes the connection");
    let text = String::from_utf8_lossy(&received).into_owned();
    (
        text.lines().next().unwrap_or("").to_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_stalled_body_is_408_within_its_deadline_and_closed() {
    let app = spawn_app().await;
    let key = app.ingress.api_key.clone().unwrap();
    let started = Instant::now();
    let mut stream = body_started(app.ingress.addr, &key, b"{").await;
    let (received, _) = read_to_close(&mut stream).await;
    let took = started.elapsed();
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(received.contains("request_timeout"), "{received}");
    assert!(
        received.to_ascii_lowercase().contains("connection: close"),
        "{received}"
    );
    // Cut once it falls below the minimum rate (1 KiB/s after a second), far before the
    // 5 s total: well within the test's patience, not after it.
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
}

/// One key's bodies trickling in (a byte every half second, the probe's attack) hold only
/// that key's slots: with room for four requests at once in all, another key's creates keep
/// succeeding while they trickle, the key's fifth and later are 429 at once, and every
/// trickle ends in a 408.
#[tokio::test]
async fn trickling_bodies_from_one_key_do_not_starve_another() {
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let _worker = customers_tests::TestWorker::start(&nats.url(), data_dir.path()).await;
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.json");
    let slow_key = mint_key(&keys, &[Scope::Write], Some(UNLIMITED));
    let other_key = mint_key(&keys, &[Scope::Read, Scope::Write], Some(UNLIMITED));
    let mut config = customers_ingress::Config::new(nats.url());
    config.keys_file = Some(keys);
    config.max_in_flight = 4;
    config.max_in_flight_per_credential = 4;
    let ingress = TestIngress::start_with(config).await;

    let mut trickles = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let stream = body_started(ingress.addr, &slow_key, b"{").await;
        trickles.spawn(trickle_until_answered(stream, Duration::from_millis(500)));
    }
    // Give the ingress time to read their heads: each now holds one of the key's slots.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fifth = body_started(ingress.addr, &slow_key, b"{").await;
    let (fifth, _) = trickle_until_answered(fifth, Duration::from_millis(500)).await;
    assert!(
        fifth.starts_with("HTTP/1.1 429"),
        "the key's fifth: {fifth}"
    );

    let other = customers_tests::HttpClient::new(ingress.addr).with_api_key(&other_key);
    for n in 0..10 {
        let created = other
            .create(&customers_tests::customer_with_email(&format!(
                "other{n}@example.com"
            )))
            .await;
        assert_eq!(
            created.status, 201,
            "another key's create {n}: {:?}",
            created.body
        );
    }
    while let Some(trickle) = trickles.join_next().await {
        let (status, took) = trickle.unwrap();
        assert!(status.starts_with("HTTP/1.1 408"), "{status}");
        assert!(took < Duration::from_secs(5), "cut after {took:?}");
    }
}
