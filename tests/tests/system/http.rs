//! HTTP concerns of the ingress: routing, methods, content type, body limits, and how NATS
//! failures (no worker, slow worker, broker down) become fast 503/504 answers.

use std::time::{Duration, Instant};

use customers_tests::{
    NatsServer, PATIENCE, STAND_IN_CUSTOMER_ID, StandInWorker, TestIngress, customer_with_email,
    spawn_app,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/api/v1/customer",
        "/api/v1/customers/",
        "/api/v1/customers/cus_01h3vjs3b16yc3f9q8q9pfrb80/orders",
        "/api/v2/customers",
    ] {
        let response = app.http.without_body("POST", path).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.json()["code"], "not_found");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
    }
    let one_customer = "/api/v1/customers/cus_01h3vjs3b16yc3f9q8q9pfrb80";
    for (method, path, allow) in [
        ("PUT", "/api/v1/customers", "GET, HEAD, POST"),
        ("DELETE", "/api/v1/customers", "GET, HEAD, POST"),
        ("PATCH", "/api/v1/customers", "GET, HEAD, POST"),
        ("POST", one_customer, "GET, HEAD, PATCH, DELETE"),
        ("PUT", one_customer, "GET, HEAD, PATCH, DELETE"),
        ("OPTIONS", one_customer, "GET, HEAD, PATCH, DELETE"),
    ] {
        let response = app.http.without_body(method, path).await;
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(response.json()["code"], "method_not_allowed");
    }
}

/// RFC 9110 §9.3.2: a resource that answers GET answers HEAD, with the same status and
/// headers and no body.
#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let app = spawn_app().await;
    let created = app
        .http
        .create(&customer_with_email("head@example.com"))
        .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    for path in [
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/metrics".to_owned(),
        "/api/v1/openapi.json".to_owned(),
        "/api/v1/asyncapi.json".to_owned(),
        "/api/v1/customers".to_owned(),
        format!("/api/v1/customers/{id}"),
    ] {
        let get = app.http.get(&path).await;
        let head = app.http.without_body("HEAD", &path).await;
        assert_eq!((head.status, get.status), (200, 200), "{path}");
        assert!(head.body.is_empty(), "{path}: no body");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        if !path.starts_with("/metrics") {
            assert_eq!(
                head.header("content-length"),
                Some(get.body.len().to_string().as_str()),
                "{path}"
            );
        }
    }
    let unknown = app
        .http
        .without_body("HEAD", "/api/v1/customers/cus_01h3vjs3b16yc3f9q8q9pfrb80")
        .await;
    assert_eq!(unknown.status, 404);
}

/// RFC 9112 §6.1: only `chunked` is implemented; a body in another transfer coding is refused
/// (501) rather than read as something it is not, and the connection is closed.
#[tokio::test]
async fn transfer_codings_other_than_chunked_are_501() {
    let app = spawn_app().await;
    let key = app.ingress.api_key.clone().unwrap();
    let body = customer_with_email("te@example.com");
    // In three chunks: the ingress puts a body read in several frames back together.
    let (a, rest) = body.split_at(5);
    let (b, c) = rest.split_at(7);
    let chunked: String = [a, b, c]
        .iter()
        .map(|part| format!("{:x}\r\n{part}\r\n", part.len()))
        .chain(["0\r\n\r\n".to_owned()])
        .collect();
    for (coding, expected) in [
        ("chunked", "HTTP/1.1 201"),
        ("gzip, chunked", "HTTP/1.1 501"),
        ("deflate, chunked", "HTTP/1.1 501"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(app.ingress.addr)
            .await
            .unwrap();
        let request = format!(
            "POST /api/v1/customers HTTP/1.1\r\nhost: te\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ntransfer-encoding: {coding}\r\n\r\n{chunked}"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        if expected.ends_with("201") {
            let mut answer = vec![0u8; 4096];
            let n = stream.read(&mut answer).await.unwrap();
            let answer = String::from_utf8_lossy(&answer[..n]);
            assert!(answer.starts_with(expected), "{coding}: {answer}");
            assert!(answer.contains(r#""email":"te@example.com""#), "{answer}");
            continue;
        }
        let mut received = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
            .await
            .expect("the connection is closed after the refusal")
            .unwrap();
        let received = String::from_utf8_lossy(&received);
        assert!(received.starts_with(expected), "{coding}: {received}");
        assert!(received.contains("not_implemented"), "{coding}: {received}");
    }
}

#[tokio::test]
async fn non_json_content_types_are_415() {
    let app = spawn_app().await;
    let body = customer_with_email("ct@example.com");
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
        None,
    ] {
        let mut request = app.http.request("POST", "/api/v1/customers");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = app
            .http
            .send(request.body(body.clone().into()).unwrap())
            .await;
        assert_eq!(response.status, 415, "{content_type:?}");
        assert_eq!(response.json()["code"], "unsupported_media_type");
    }
    let with_charset = app
        .http
        .send(
            app.http
                .request("POST", "/api/v1/customers")
                .header("content-type", "Application/JSON; charset=UTF-8")
                .body(body.into())
                .unwrap(),
        )
        .await;
    assert_eq!(with_charset.status, 201);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let app = spawn_app().await;
    let padding = " ".repeat(64 * 1024);
    let response = app
        .http
        .create(&format!(
            "{}{padding}",
            customer_with_email("big@example.com")
        ))
        .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.json()["code"], "payload_too_large");

    let mut exactly_the_limit = customer_with_email("limit@example.com");
    exactly_the_limit.push_str(&" ".repeat(64 * 1024 - exactly_the_limit.len()));
    assert_eq!(app.http.create(&exactly_the_limit).await.status, 201);
}

/// A chunked body that never ends must be cut off at the limit, not buffered forever.
#[tokio::test]
async fn endless_chunked_body_is_413() {
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.ingress.addr)
        .await
        .unwrap();
    let key = app.ingress.api_key.as_deref().expect("a minted key");
    stream
        .write_all(format!("POST /api/v1/customers HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, async {
        let chunk = format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192));
        let mut reply = Vec::new();
        let mut buffer = [0u8; 4096];
        // Keep sending until the server answers; it must answer after 64 KiB.
        for _ in 0..1000 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await
            {
                reply.extend_from_slice(&buffer[..n]);
                break;
            }
        }
        while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "connection closed without a response");
            reply.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&reply).into_owned()
    })
    .await
    .expect("the ingress answers an endless body");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}

/// With no worker the ingress answers 503 from NATS's no-responders status at once. The
/// request timeout is far longer than the test's patience, so a 503 (not a 504) within it
/// shows the fast path without betting on a loaded machine's wall clock.
#[tokio::test]
async fn no_worker_is_a_fast_503() {
    let nats = NatsServer::start();
    let mut config = customers_ingress::Config::new(nats.url());
    config.request_timeout = Duration::from_secs(600);
    let ingress = TestIngress::start_with(config).await;
    let http = ingress.http();
    let started = Instant::now();
    let response = tokio::time::timeout(
        PATIENCE,
        http.create(&customer_with_email("alone@example.com")),
    )
    .await
    .expect("answered without waiting for the request timeout");
    customers_tests::report(&format!("no worker: 503 in {:?}", started.elapsed()));
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["code"], "service_unavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn broker_down_is_a_fast_503() {
    let mut app = spawn_app().await;
    assert_eq!(
        app.http
            .create(&customer_with_email("before@example.com"))
            .await
            .status,
        201
    );
    app.nats.stop();
    // The ingress sees the connection drop; every request from then on is a fast 503.
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < PATIENCE {
        let attempt = Instant::now();
        let response = app
            .http
            .create(&customer_with_email("during@example.com"))
            .await;
        assert!(
            attempt.elapsed() < PATIENCE,
            "no request hangs: {:?}",
            attempt.elapsed()
        );
        if response.status == 503 {
            last = Some(response);
            break;
        }
    }
    let response = last.expect("the ingress notices the broker is gone");
    assert_eq!(response.json()["code"], "service_unavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn silent_worker_is_a_504_after_the_timeout() {
    let nats = NatsServer::start();
    // It takes requests and never answers.
    let mut silent = StandInWorker::start(&nats).await;
    let mut config = customers_ingress::Config::new(nats.url());
    config.request_timeout = Duration::from_millis(300);
    let ingress = TestIngress::start_with(config).await;
    let http = ingress.http();

    let body = customer_with_email("slow@example.com");
    let (response, _received) = tokio::join!(http.create(&body), silent.next_request());
    assert_eq!(response.status, 504);
    assert_eq!(response.json()["code"], "worker_timeout");
}

async fn ingress_with_stand_in_worker() -> (NatsServer, TestIngress, StandInWorker) {
    let nats = NatsServer::start();
    let stand_in = StandInWorker::start(&nats).await;
    let ingress = TestIngress::start(&nats.url()).await;
    (nats, ingress, stand_in)
}

#[tokio::test]
async fn body_and_trace_headers_are_forwarded_unchanged() {
    let (_nats, ingress, mut stand_in) = ingress_with_stand_in_worker().await;
    let http = ingress.http();
    let body = "{ \"name\" : \"Ada\",\n  \"email\": \"ADA@example.com\" }  ";
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = http
        .request("POST", "/api/v1/customers")
        .header("content-type", "application/json")
        .header("x-request-id", "trace-me")
        .header("traceparent", traceparent)
        .body(body.into())
        .unwrap();
    let (response, message) = tokio::join!(http.send(request), async {
        let message = stand_in.next_request().await;
        stand_in.reply_created(&message, "{\"id\":1}").await;
        message
    });
    assert_eq!(
        &message.payload[..],
        body.as_bytes(),
        "the body is forwarded byte for byte"
    );
    let forwarded = message.headers.expect("headers");
    assert_eq!(
        forwarded.get("X-Request-Id").map(|v| v.as_str()),
        Some("trace-me")
    );
    assert_eq!(
        forwarded.get("traceparent").map(|v| v.as_str()),
        Some(traceparent)
    );

    assert_eq!(response.status, 201);
    assert_eq!(
        response.header("location"),
        Some(format!("/api/v1/customers/{STAND_IN_CUSTOMER_ID}").as_str())
    );
    assert_eq!(
        &response.body[..],
        b"{\"id\":1}",
        "the reply is forwarded byte for byte"
    );
}

#[tokio::test]
async fn a_reply_the_ingress_cannot_understand_is_500_without_internals() {
    let (_nats, ingress, mut stand_in) = ingress_with_stand_in_worker().await;
    let http = ingress.http();
    let body = customer_with_email("odd@example.com");
    let (response, ()) = tokio::join!(http.create(&body), async {
        let message = stand_in.next_request().await;
        stand_in
            .client
            .publish(message.reply.unwrap(), "stack trace: secret".into())
            .await
            .unwrap();
    });
    assert_eq!(response.status, 500);
    let problem = response.json();
    assert_eq!(problem["code"], "internal_error");
    assert!(
        !String::from_utf8_lossy(&response.body).contains("secret"),
        "no internals leaked"
    );
}
