//! The success path over HTTP: the seed's example request, the record's exact shape, the
//! response headers, and ids that increase in creation order.

use customers_tests::{SEED_REQUEST, customer_with_email, spawn_app};
use serde_json::json;

#[tokio::test]
async fn seed_request_creates_the_documented_customer() {
    let app = spawn_app().await;
    let response = app.http.create(SEED_REQUEST).await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let customer = response.json();

    let keys: Vec<&str> = customer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "email",
            "phone",
            "address",
            "payment_method",
            "created_at",
            "updated_at",
            "status",
            "custom_data"
        ],
        "keys in the documented order"
    );
    let id = customer["id"].as_str().unwrap();
    assert_eq!(
        response.header("location"),
        Some(format!("/api/v1/customers/{id}").as_str())
    );
    let mut without_generated = customer.clone();
    for key in ["id", "created_at", "updated_at"] {
        without_generated.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(
        without_generated,
        json!({
            "name": "Brighton Mboya",
            "email": "brighton@jani.com",
            "phone": "+2557881234567",
            "address": {"city": "Dar es Salaam", "country": "TZ"},
            "payment_method": "card_01h3vjs3b16yc3f9q8q9pfrb79",
            "status": "active",
            "custom_data": {"loyalty_program": "Gold"}
        })
    );
}

#[tokio::test]
async fn ids_and_timestamps_follow_the_contract() {
    let app = spawn_app().await;
    let mut previous: Option<String> = None;
    for i in 0..20 {
        let customer = app
            .http
            .create(&customer_with_email(&format!("seq{i}@example.com")))
            .await
            .json();
        let id = customer["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 30, "{id}");
        assert!(id.starts_with("cus_"), "{id}");
        let suffix = &id[4..];
        assert!(matches!(suffix.as_bytes()[0], b'0'..=b'7'), "{id}");
        assert!(
            suffix
                .bytes()
                .all(|b| b"0123456789abcdefghjkmnpqrstvwxyz".contains(&b)),
            "{id}"
        );
        let created_at = customer["created_at"].as_str().unwrap();
        assert_eq!(customer["updated_at"], created_at);
        // 2024-09-01T15:00:00.000Z
        assert_eq!(created_at.len(), 24, "{created_at}");
        assert!(
            created_at.ends_with('Z') && created_at.as_bytes()[19] == b'.',
            "{created_at}"
        );
        if let Some(previous) = &previous {
            assert!(
                *previous < id,
                "sequential creates get increasing ids: {previous} then {id}"
            );
        }
        previous = Some(id);
    }
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let given = app
        .http
        .send(
            app.http
                .request("POST", "/api/v1/customers")
                .header("content-type", "application/json; charset=utf-8")
                .header("x-request-id", "req-123")
                .body(customer_with_email("rid@example.com").into())
                .unwrap(),
        )
        .await;
    assert_eq!(given.status, 201);
    assert_eq!(given.header("x-request-id"), Some("req-123"));

    let generated = app
        .http
        .create(&customer_with_email("rid2@example.com"))
        .await;
    let id = generated
        .header("x-request-id")
        .expect("a generated request id");
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let errors_too = app.http.without_body("GET", "/nope").await;
    assert!(errors_too.header("x-request-id").is_some());
}
