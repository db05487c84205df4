//! The NATS interface for other services: direct creates, the micro error headers, hostile
//! payloads, and discovery through `$SRV.PING/INFO/STATS`.

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::subject;
use customers_tests::{SEED_REQUEST, customer_with_email, nats_header, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn direct_create_replies_with_the_customer() {
    let app = spawn_app().await;
    let reply = app.nats_create(SEED_REQUEST).await;
    assert_eq!(nats_header(&reply, headers::SERVICE_ERROR_CODE), None);
    let customer: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(customer["address"]["country"], "TZ");
    assert_eq!(
        nats_header(&reply, headers::CUSTOMER_ID),
        customer["id"].as_str()
    );

    // Same body over HTTP now conflicts: one authority, one index.
    let http = app.http.create(SEED_REQUEST).await;
    assert_eq!(http.status, 409);
    assert_eq!(http.json()["customer_id"], customer["id"]);
}

#[tokio::test]
async fn errors_carry_micro_headers_and_the_same_problem_as_http() {
    let app = spawn_app().await;
    let body = r#"{"name": "", "email": "nope", "zip": 1}"#;
    let reply = app.nats_create(body).await;
    assert_eq!(
        nats_header(&reply, headers::SERVICE_ERROR_CODE),
        Some("400")
    );
    assert_eq!(
        nats_header(&reply, headers::SERVICE_ERROR),
        Some("validation_failed")
    );
    let over_nats: Value = serde_json::from_slice(&reply.payload).unwrap();
    let over_http = app.http.create(body).await.json();
    assert_eq!(over_nats, over_http);

    app.nats_create(customer_with_email("taken@example.com"))
        .await;
    let conflict = app
        .nats_create(customer_with_email("Taken@Example.com"))
        .await;
    assert_eq!(
        nats_header(&conflict, headers::SERVICE_ERROR_CODE),
        Some("409")
    );
    assert_eq!(
        nats_header(&conflict, headers::SERVICE_ERROR),
        Some("email_already_exists")
    );
}

#[tokio::test]
async fn request_id_header_is_echoed() {
    let app = spawn_app().await;
    let mut request_headers = async_nats::HeaderMap::new();
    request_headers.insert(headers::REQUEST_ID, "nats-req-7");
    let reply = app
        .nats_client
        .request_with_headers(
            subject(Endpoint::Create),
            request_headers,
            customer_with_email("rid@example.com").into(),
        )
        .await
        .unwrap();
    assert_eq!(nats_header(&reply, headers::REQUEST_ID), Some("nats-req-7"));
}

#[tokio::test]
async fn garbage_payloads_get_400_and_the_worker_keeps_serving() {
    let app = spawn_app().await;
    let deep_array = "[".repeat(60_000);
    let deep_object = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    let deep_custom_data = format!(
        r#"{{"name":"A","email":"deep@example.com","custom_data":{}}}"#,
        "{\"a\":".repeat(120) + "1" + &"}".repeat(120)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty payload", vec![], "malformed_json"),
        (
            "invalid UTF-8",
            vec![0xff, 0xfe, 0x00, 0x80],
            "malformed_json",
        ),
        (
            "invalid UTF-8 inside a string",
            b"{\"name\": \"\xff\"}".to_vec(),
            "malformed_json",
        ),
        (
            "deeply nested arrays",
            deep_array.into_bytes(),
            "malformed_json",
        ),
        (
            "deeply nested objects",
            deep_object.into_bytes(),
            "malformed_json",
        ),
        (
            "custom_data nested 120 levels",
            deep_custom_data.into_bytes(),
            "validation_failed",
        ),
        ("NUL bytes", vec![0; 64], "malformed_json"),
        ("a bare number", b"1e999".to_vec(), "malformed_json"),
        (
            "JSON then trailing garbage",
            b"{} x".to_vec(),
            "malformed_json",
        ),
    ];
    for (description, payload, code) in cases {
        let reply = app.nats_create(payload).await;
        assert_eq!(
            nats_header(&reply, headers::SERVICE_ERROR_CODE),
            Some("400"),
            "{description}"
        );
        assert_eq!(
            nats_header(&reply, headers::SERVICE_ERROR),
            Some(code),
            "{description}"
        );
        let problem: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(problem["code"], code, "{description}");
    }
    let too_large = app.nats_create(vec![b' '; 64 * 1024 + 1]).await;
    assert_eq!(
        nats_header(&too_large, headers::SERVICE_ERROR_CODE),
        Some("413")
    );
    assert_eq!(
        nats_header(&too_large, headers::SERVICE_ERROR),
        Some("payload_too_large")
    );

    let still_serving = app
        .nats_create(customer_with_email("after-garbage@example.com"))
        .await;
    assert_eq!(
        nats_header(&still_serving, headers::SERVICE_ERROR_CODE),
        None
    );
}

#[tokio::test]
async fn the_service_is_discoverable() {
    let app = spawn_app().await;
    let ping = app
        .nats_client
        .request("$SRV.PING.customers", "".into())
        .await
        .unwrap();
    let ping: Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "customers");

    let info = app
        .nats_client
        .request("$SRV.INFO.customers", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["name"], "customers");
    let endpoints = info["endpoints"].as_array().unwrap();
    assert!(
        endpoints
            .iter()
            .any(|e| e["subject"] == "customers.v1.create" && e["name"] == "create"),
        "INFO lists the create endpoint: {info}"
    );

    app.nats_create(customer_with_email("stats@example.com"))
        .await;
    let (stats, create) = create_endpoint_stats(&app).await;
    assert!(create["num_requests"].as_u64().unwrap() >= 1, "{stats}");
    let errors_before = create["data"]["num_errors"]
        .as_u64()
        .expect("data.num_errors");

    // A problem reply counts as an error in the endpoint's data.
    app.nats_create(customer_with_email("stats@example.com"))
        .await;
    let (stats, create) = create_endpoint_stats(&app).await;
    assert_eq!(
        create["data"]["num_errors"].as_u64(),
        Some(errors_before + 1),
        "{stats}"
    );
}

/// The `$SRV.STATS.customers` reply and its `create` endpoint's entry.
async fn create_endpoint_stats(app: &customers_tests::TestApp) -> (Value, Value) {
    let stats = app
        .nats_client
        .request("$SRV.STATS.customers", "".into())
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    let create = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "create")
        .cloned()
        .unwrap();
    (stats, create)
}
