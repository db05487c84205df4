//! The ingress's operational endpoints: `/healthz` answers while the process runs; `/readyz`
//! only while NATS is connected and a worker answers `$SRV.PING.customers`; the OpenAPI
//! document served is the committed `docs/openapi.json`.

use std::time::Instant;

use customers_tests::spawn_app;

#[tokio::test]
async fn readiness_follows_the_worker_and_the_broker() {
    let mut app = spawn_app().await;
    let health = app.http.get("/healthz").await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = app.http.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );

    app.stop_worker().await;
    let started = Instant::now();
    let not_ready = app.http.get("/readyz").await;
    assert_eq!(not_ready.status, 503);
    assert_eq!(not_ready.json()["code"], "service_unavailable");
    assert!(not_ready.header("retry-after").is_some());
    assert!(
        started.elapsed() < customers_tests::PATIENCE,
        "a probe answers, bounded by its own one-second ping: {:?}",
        started.elapsed()
    );
    assert_eq!(app.http.get("/healthz").await.status, 200, "still alive");

    app.restart_worker().await;
    assert_eq!(app.http.get("/readyz").await.status, 200);

    app.nats.stop();
    assert_eq!(app.http.get("/readyz").await.status, 503);
    assert_eq!(app.http.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn health_endpoints_take_get_and_head_only() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.http.without_body("POST", path).await;
        assert_eq!(response.status, 405, "{path}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{path}");
    }
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one() {
    let app = spawn_app().await;
    let served = app.http.get("/api/v1/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"))
            .expect("docs/openapi.json"),
    )
    .unwrap();
    assert_eq!(served.json(), committed);
    assert_eq!(committed["openapi"], "3.1.0");
}
