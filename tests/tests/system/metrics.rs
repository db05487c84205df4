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
        assert_eq!(
            admin.without_body("HEAD", path).await.status,
            status,
            "HEAD {path}"
        );
    }
    // JSON, like the ingress's probes.
    assert_eq!(
        admin.get("/readyz").await.json(),
        serde_json::json!({"status": "ready"})
    );
    assert_eq!(
        admin.get("/healthz").await.json(),
        serde_json::json!({"status": "ok"})
    );
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
    let not_ready = admin.get("/readyz").await.json();
    assert_eq!(not_ready["code"], "service_unavailable");
    assert_eq!(
        not_ready["detail"],
        "not connected to NATS; retry after 1 s"
    );
    assert_eq!(admin.get("/healthz").await.status, 200);
}

/// The metric names in the README table that follows `heading` (the table's first column).
fn documented_metrics(heading: &str) -> Vec<(String, bool)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let table = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("the README has {heading:?}"))
        .1;
    table
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let name = line
                .split('|')
                .nth(1)?
                .trim()
                .strip_prefix('`')?
                .strip_suffix('`')?;
            let replicated_only = line.contains("replicated mode:");
            Some((name.to_owned(), replicated_only))
        })
        .collect()
}

/// Whether `text` (OpenMetrics) has a sample of the metric `name` (counters end in `_total`,
/// histograms in `_bucket`/`_count`/`_sum`).
fn has_sample(text: &str, name: &str) -> bool {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .any(|line| {
            line.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with(' ') || rest.starts_with('{') || rest.starts_with("_total")
            }) || line.starts_with(&format!("{name}_bucket"))
        })
}

/// Every metric the README documents is there from the start, at zero where nothing happened
/// yet: a rate or an alert on it works before its first event. The README's tables and the
/// metrics served are the same list.
#[tokio::test]
async fn every_documented_metric_is_served_from_the_start() {
    let app = spawn_app().await;
    let ingress_metrics = String::from_utf8(app.http.get("/metrics").await.body.to_vec()).unwrap();
    let mut app = app;
    app.stop_worker().await;
    let mut config = customers_worker::Config::new(app.nats.url(), app.data_dir.path());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let worker = TestWorker::start_with(config).await;
    let admin = HttpClient::new(worker.admin_addr.expect("admin listener"));
    let worker_metrics = String::from_utf8(admin.get("/metrics").await.body.to_vec()).unwrap();
    let ingress_documented = documented_metrics("The ingress serves Prometheus metrics");
    let worker_documented = documented_metrics("The worker serves its own");
    assert!(ingress_documented.len() >= 8 && worker_documented.len() >= 20);
    for (text, documented) in [
        (&ingress_metrics, &ingress_documented),
        (&worker_metrics, &worker_documented),
    ] {
        for (name, replicated_only) in documented {
            if !replicated_only {
                assert!(has_sample(text, name), "{name} is not served:\n{text}");
            }
        }
        for line in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
            let family = line.split(' ').next().unwrap();
            assert!(
                documented.iter().any(|(name, _)| name.starts_with(family)),
                "{family} is served but not in the README"
            );
        }
    }
    for operation in [
        "create", "get", "list", "healthz", "readyz", "metrics", "openapi", "asyncapi",
    ] {
        assert!(
            ingress_metrics.contains(&format!("operation=\"{operation}\"")),
            "{operation}"
        );
    }
    assert!(
        ingress_documented
            .iter()
            .any(|(name, _)| name == "customers_ingress_http_requests_total")
    );
    app.worker = Some(worker);
}
