//! Prometheus metrics: the ingress's `GET /metrics` (requests by operation and status, latency
//! histograms, requests in flight, NATS connection state) and the worker's admin listener
//! (replies by operation and status, replays, group commits, fsync time, queue depth,
//! database size, health and readiness).

use customers_tests::{HttpClient, PATIENCE, TestWorker, customer_with_email, spawn_app};

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

#[tokio::test]
async fn the_worker_admin_listener_serves_metrics_and_probes() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    let mut config = customers_worker::Config::new(app.nats.url(), app.data_dir.path());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    // Without events: the relay's journaled mark would add groups of its own to the counts.
    config.events.mode = customers_worker::config::EventsMode::Off;
    let worker = TestWorker::start_with(config).await;
    let admin = HttpClient::new(worker.admin_addr.expect("admin listener"));
    app.worker = Some(worker);

    let body = customer_with_email("worker-metrics@example.com");
    assert_eq!(app.http.create_idempotent(&body, "m-1").await.status, 201);
    assert_eq!(app.http.create_idempotent(&body, "m-1").await.status, 201);
    assert_eq!(app.http.create(&body).await.status, 409);
    assert_eq!(app.http.create(r#"{"name": ""}"#).await.status, 400);

    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nowhere", 404)] {
        assert_eq!(admin.get(path).await.status, status, "{path}");
    }
    let metrics = admin.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.body.to_vec()).expect("UTF-8");
    for expected in [
        r#"customers_worker_replies_total{operation="create",status="201"} 2"#,
        r#"customers_worker_replies_total{operation="create",status="409"} 1"#,
        r#"customers_worker_replies_total{operation="create",status="400"} 1"#,
        "customers_worker_idempotent_replays_total 1",
        "customers_worker_commit_queue_depth 0",
    ] {
        assert!(
            text.lines().any(|line| line == expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    // The create and the 409 each went through the committer; the replay did not. Only the
    // create wrote to the journal: a conflict changes nothing that needs syncing.
    assert_eq!(value("customers_worker_group_commit_size_count"), 2.0);
    assert_eq!(value("customers_worker_fsync_seconds_count"), 1.0);
    assert!(value("customers_worker_fsync_seconds_sum") > 0.0);
    assert!(value("customers_worker_database_size_bytes") > 0.0);

    // Not ready once the worker has noticed the broker is gone (it notices on its own,
    // within moments).
    app.nats.stop();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while admin.get("/readyz").await.status != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready without NATS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(admin.get("/healthz").await.status, 200);
}
