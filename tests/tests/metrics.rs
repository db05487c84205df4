//! The ingress's `GET /metrics`: Prometheus (OpenMetrics) text with requests by operation and
//! status, latency histograms, requests in flight and the NATS connection state.

use customers_tests::{customer_with_email, spawn_app};

#[tokio::test]
async fn metrics_count_requests_by_operation_and_status() {
    let app = spawn_app().await;
    let body = customer_with_email("metrics@example.com");
    let created = app.http.create(&body).await;
    assert_eq!(created.status, 201);
    assert_eq!(app.http.create(&body).await.status, 409);
    let location = created.header("location").expect("location");
    assert_eq!(app.http.get(location).await.status, 200);
    assert_eq!(app.http.get("/api/v1/customers/nope").await.status, 404);
    assert_eq!(app.http.get("/nowhere").await.status, 404);

    let metrics = app.http.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text"))
    );
    let text = String::from_utf8(metrics.body.to_vec()).expect("UTF-8");
    for expected in [
        r#"customers_ingress_http_requests_total{operation="create",status="201"} 1"#,
        r#"customers_ingress_http_requests_total{operation="create",status="409"} 1"#,
        r#"customers_ingress_http_requests_total{operation="get",status="200"} 1"#,
        r#"customers_ingress_http_requests_total{operation="get",status="404"} 1"#,
        r#"customers_ingress_http_requests_total{operation="other",status="404"} 1"#,
        r#"customers_ingress_http_request_duration_seconds_count{operation="create"} 2"#,
        "customers_ingress_http_requests_in_flight 1",
        "customers_ingress_nats_connected 1",
    ] {
        assert!(
            text.lines().any(|line| line == expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    let id = location.rsplit('/').next().expect("an id");
    assert!(!text.contains(id), "customer ids are not label values");
}
