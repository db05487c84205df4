//! Idempotent creates (docs/API.md §5) over HTTP and NATS: replays are the stored bytes with
//! `Idempotent-Replayed: true` and create nothing; another body under a key is 422; a key in
//! flight is 409; stored replies survive a worker restart and expire after the retention.

use std::time::Duration;

use async_nats::HeaderMap;
use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::subject;
use customers_tests::{PATIENCE, TestApp, TestWorker, customer_with_email, nats_header, spawn_app};
use futures_util::future::join_all;

/// Customers stored with `email`, seen through the list endpoint's email filter.
async fn customers_with_email(app: &TestApp, email: &str) -> usize {
    let page = app
        .http
        .get(&format!("/api/v1/customers?email={email}"))
        .await;
    assert_eq!(page.status, 200);
    page.json()["data"].as_array().expect("data").len()
}

#[tokio::test]
async fn a_replay_is_the_stored_reply_byte_for_byte_and_creates_nothing() {
    let app = spawn_app().await;
    let body = customer_with_email("replay@example.com");
    let first = app.http.create_idempotent(&body, "key-replay").await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);

    for _ in 0..3 {
        let again = app.http.create_idempotent(&body, "key-replay").await;
        assert_eq!(again.status, 201);
        assert_eq!(again.body, first.body, "identical bytes");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.header("location"), first.header("location"));
        assert_eq!(again.header("content-type"), Some("application/json"));
    }
    assert_eq!(customers_with_email(&app, "replay@example.com").await, 1);
    // The same body without the key is a new create, refused as a duplicate email.
    assert_eq!(app.http.create(&body).await.status, 409);
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_422() {
    let app = spawn_app().await;
    let first = app
        .http
        .create_idempotent(&customer_with_email("first@example.com"), "key-reuse")
        .await;
    assert_eq!(first.status, 201);
    let other = app
        .http
        .create_idempotent(&customer_with_email("other@example.com"), "key-reuse")
        .await;
    assert_eq!(other.status, 422);
    assert_eq!(
        other.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(other.json()["code"], "idempotency_key_reused");
    assert_eq!(customers_with_email(&app, "other@example.com").await, 0);
}

#[tokio::test]
async fn final_refusals_are_replayed_too() {
    let app = spawn_app().await;
    let invalid = r#"{"name": "", "email": "not-an-email"}"#;
    let first = app.http.create_idempotent(invalid, "key-invalid").await;
    assert_eq!(first.status, 400);
    let again = app.http.create_idempotent(invalid, "key-invalid").await;
    assert_eq!((again.status, &again.body), (400, &first.body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let body = customer_with_email("taken@example.com");
    assert_eq!(app.http.create(&body).await.status, 201);
    let taken = app.http.create_idempotent(&body, "key-taken").await;
    assert_eq!(taken.status, 409);
    assert_eq!(taken.json()["code"], "email_already_exists");
    let replayed = app.http.create_idempotent(&body, "key-taken").await;
    assert_eq!((replayed.status, &replayed.body), (409, &taken.body));
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_make_one_customer() {
    let app = spawn_app().await;
    let body = customer_with_email("concurrent@example.com");
    let responses =
        join_all((0..20).map(|_| app.http.create_idempotent(&body, "key-concurrent"))).await;
    let originals: Vec<_> = responses
        .iter()
        .filter(|r| r.status == 201 && r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(originals.len(), 1, "exactly one request was processed");
    let original = originals[0];
    for response in &responses {
        match response.status {
            201 => assert_eq!(response.body, original.body),
            409 => {
                assert_eq!(response.json()["code"], "idempotency_key_in_use");
                assert_eq!(response.header("retry-after"), Some("1"));
            }
            status => panic!("unexpected status {status}: {:?}", response.body),
        }
    }
    assert_eq!(
        customers_with_email(&app, "concurrent@example.com").await,
        1
    );
    // Once the first has finished, every retry is a replay.
    let retry = app.http.create_idempotent(&body, "key-concurrent").await;
    assert_eq!((retry.status, &retry.body), (201, &original.body));
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn a_replay_survives_a_worker_restart() {
    let mut app = spawn_app().await;
    let body = customer_with_email("restart@example.com");
    let first = app.http.create_idempotent(&body, "key-restart").await;
    assert_eq!(first.status, 201);
    app.restart_worker().await;
    let again = app.http.create_idempotent(&body, "key-restart").await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn idempotency_over_nats() {
    let app = spawn_app().await;
    let request = async |body: String, key: &str| {
        let mut request_headers = HeaderMap::new();
        request_headers.insert(headers::IDEMPOTENCY_KEY, key);
        app.nats_client
            .request_with_headers(subject(Endpoint::Create), request_headers, body.into())
            .await
            .expect("NATS reply")
    };
    let body = customer_with_email("nats-key@example.com");
    let first = request(body.clone(), "nats-key").await;
    assert!(nats_header(&first, headers::CUSTOMER_ID).is_some());
    assert_eq!(nats_header(&first, headers::IDEMPOTENT_REPLAYED), None);

    let again = request(body, "nats-key").await;
    assert_eq!(again.payload, first.payload);
    assert_eq!(
        nats_header(&again, headers::IDEMPOTENT_REPLAYED),
        Some("true")
    );
    assert_eq!(
        nats_header(&again, headers::CUSTOMER_ID),
        nats_header(&first, headers::CUSTOMER_ID)
    );

    let reused = request(customer_with_email("else@example.com"), "nats-key").await;
    assert_eq!(
        nats_header(&reused, headers::SERVICE_ERROR_CODE),
        Some("422")
    );
    assert_eq!(
        nats_header(&reused, headers::SERVICE_ERROR),
        Some("idempotency_key_reused")
    );

    let bad_key = request(customer_with_email("bad@example.com"), "clé").await;
    assert_eq!(
        nats_header(&bad_key, headers::SERVICE_ERROR_CODE),
        Some("400")
    );
    let problem: serde_json::Value = serde_json::from_slice(&bad_key.payload).unwrap();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
}

#[tokio::test]
async fn invalid_keys_are_400_naming_the_header() {
    let app = spawn_app().await;
    let too_long = "k".repeat(256);
    for (description, key) in [
        ("empty", ""),
        ("256 characters", too_long.as_str()),
        ("not ASCII", "clé-42"),
        ("a tab", "key\t42"),
    ] {
        let response = app
            .http
            .create_idempotent(&customer_with_email("badkey@example.com"), key)
            .await;
        assert_eq!(response.status, 400, "{description}");
        let problem = response.json();
        assert_eq!(problem["code"], "validation_failed", "{description}");
        assert_eq!(
            problem["errors"][0]["field"], "Idempotency-Key",
            "{description}"
        );
    }
    assert_eq!(customers_with_email(&app, "badkey@example.com").await, 0);
}

#[tokio::test]
async fn an_expired_key_starts_afresh() {
    let mut app = spawn_app().await;
    app.stop_worker().await;
    let retention = Duration::from_millis(300);
    let mut config = customers_worker::Config::new(app.nats.url(), app.data_dir.path());
    config.idempotency_retention = retention;
    app.worker = Some(TestWorker::start_with(config).await);

    let first = app
        .http
        .create_idempotent(&customer_with_email("exp1@example.com"), "key-expiry")
        .await;
    assert_eq!(first.status, 201);
    // Within the retention the key is bound to the first body; after it, the key is free.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reuse = app
            .http
            .create_idempotent(&customer_with_email("exp2@example.com"), "key-expiry")
            .await;
        if reuse.status == 201 {
            assert_eq!(reuse.header("idempotent-replayed"), None);
            break;
        }
        assert_eq!(reuse.status, 422);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key never expired"
        );
        tokio::time::sleep(retention / 4).await;
    }
}

#[tokio::test]
async fn the_worker_purges_expired_keys_while_it_runs() {
    let nats = customers_tests::NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let retention = ["--idempotency-retention", "300ms"];
    let mut worker =
        customers_tests::start_worker_process(&nats.url(), data_dir.path(), &retention).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut request_headers = HeaderMap::new();
    request_headers.insert(headers::IDEMPOTENCY_KEY, "purged-key");
    let body = customer_with_email("purged@example.com");
    let created = client
        .request_with_headers(subject(Endpoint::Create), request_headers, body.into())
        .await
        .expect("NATS reply");
    assert!(nats_header(&created, headers::CUSTOMER_ID).is_some());
    // The committer removes the expired record between two groups and the purger says so.
    let purged = worker.wait_for_log("expired idempotency keys purged").await;
    assert!(purged.contains("purged=1"), "{purged}");
    assert!(worker.terminate().await.success());
    let store = customers_worker::Store::open(data_dir.path(), 16 << 20)
        .unwrap()
        .store;
    assert!(store.verify().unwrap().is_consistent());
}
