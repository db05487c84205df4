//! Reads (docs/API.md §4) over HTTP and NATS: get by id, the newest-first list with cursors, the
//! case-insensitive email filter, bad parameters and 404s.

use std::collections::HashSet;

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::subject;
use customers_tests::{TestApp, customer_with_email, nats_header, spawn_app};
use futures_util::future::join_all;
use serde_json::Value;

/// Creates `n` customers over NATS, `batch` at a time; returns their ids.
async fn create_customers(app: &TestApp, n: usize, batch: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let replies = join_all(
            (start..(start + batch).min(n))
                .map(|i| app.nats_create(customer_with_email(&format!("walk{i}@example.com")))),
        )
        .await;
        for reply in replies {
            let id = nats_header(&reply, headers::CUSTOMER_ID).expect("created");
            ids.push(id.to_owned());
        }
    }
    ids
}

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn get_returns_the_created_customer_byte_for_byte() {
    let app = spawn_app().await;
    let created = app
        .http
        .create(&customer_with_email("get@example.com"))
        .await;
    assert_eq!(created.status, 201);
    let location = created.header("location").expect("location");
    let read = app.http.get(location).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("content-type"), Some("application/json"));
    assert_eq!(read.body, created.body);
    assert!(read.header("x-request-id").is_some());
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_customer_not_found() {
    let app = spawn_app().await;
    for (description, path) in [
        (
            "well-formed, unknown",
            "/api/v1/customers/cus_01h3vjs3b16yc3f9q8q9pfrb80",
        ),
        ("not a TypeID", "/api/v1/customers/nope"),
        (
            "another type's id",
            "/api/v1/customers/ord_01h3vjs3b16yc3f9q8q9pfrb80",
        ),
    ] {
        let response = app.http.get(path).await;
        assert_eq!(response.status, 404, "{description}");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(
            response.json()["code"],
            "customer_not_found",
            "{description}"
        );
    }
}

#[tokio::test]
async fn a_pagination_walk_through_250_customers_has_no_gaps_or_repeats() {
    let app = spawn_app().await;
    let created = create_customers(&app, 250, 50).await;

    let mut walked = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .http
            .get(&format!("/api/v1/customers?limit=100{cursor}"))
            .await;
        assert_eq!(page.status, 200);
        let page = page.json();
        walked.extend(ids_of(&page));
        pages += 1;
        if page["has_more"] == false {
            break;
        }
        cursor = format!("&starting_after={}", walked.last().expect("a full page"));
    }
    assert_eq!(pages, 3);
    assert_eq!(walked.len(), 250, "no repeats");
    assert_eq!(
        walked.iter().collect::<HashSet<_>>(),
        created.iter().collect::<HashSet<_>>(),
        "no gaps"
    );
    let mut newest_first = created.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(walked, newest_first, "newest first, by id");

    // And back again with ending_before, from the oldest.
    let mut back = Vec::new();
    let mut before = walked.last().cloned().expect("customers");
    loop {
        let page = app
            .http
            .get(&format!(
                "/api/v1/customers?limit=70&ending_before={before}"
            ))
            .await
            .json();
        let ids = ids_of(&page);
        back.splice(0..0, ids.iter().cloned());
        if page["has_more"] == false {
            break;
        }
        before = ids.first().cloned().expect("a full page");
    }
    assert_eq!(back, walked[..249], "every customer newer than the oldest");

    let default_page = app.http.get("/api/v1/customers").await.json();
    assert_eq!(ids_of(&default_page), walked[..10]);
    assert_eq!(default_page["has_more"], true);
}

#[tokio::test]
async fn the_email_filter_ignores_case() {
    let app = spawn_app().await;
    let created = app
        .http
        .create(&customer_with_email("Mixed.Case@Example.com"))
        .await;
    assert_eq!(created.status, 201);
    app.http
        .create(&customer_with_email("someone@example.com"))
        .await;
    for query in [
        "email=mixed.case%40example.com",
        "email=MIXED.CASE@EXAMPLE.COM",
        "email=Mixed.Case@Example.com&limit=1",
    ] {
        let page = app.http.get(&format!("/api/v1/customers?{query}")).await;
        assert_eq!(page.status, 200, "{query}");
        let page = page.json();
        assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{query}");
        assert_eq!(page["data"][0], created.json(), "{query}");
        assert_eq!(page["has_more"], false);
    }
    let none = app
        .http
        .get("/api/v1/customers?email=nobody@example.com")
        .await
        .json();
    assert_eq!(none, serde_json::json!({"data": [], "has_more": false}));
}

#[tokio::test]
async fn bad_list_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    let id = "cus_01h3vjs3b16yc3f9q8q9pfrb80";
    for (description, query, field) in [
        ("limit zero", "limit=0".to_owned(), "limit"),
        ("limit over 100", "limit=101".to_owned(), "limit"),
        ("limit not a number", "limit=ten".to_owned(), "limit"),
        ("limit empty", "limit=".to_owned(), "limit"),
        ("limit twice", "limit=5&limit=6".to_owned(), "limit"),
        (
            "cursor not an id",
            "starting_after=nope".to_owned(),
            "starting_after",
        ),
        (
            "both cursors",
            format!("starting_after={id}&ending_before={id}"),
            "ending_before",
        ),
        ("email not an email", "email=nope".to_owned(), "email"),
        ("unknown parameter", "offset=10".to_owned(), "offset"),
    ] {
        let response = app.http.get(&format!("/api/v1/customers?{query}")).await;
        assert_eq!(response.status, 400, "{description}");
        let problem = response.json();
        assert_eq!(problem["code"], "validation_failed", "{description}");
        assert_eq!(problem["errors"][0]["field"], field, "{description}");
        // A list has no body: its problem's title must not say it has.
        assert_eq!(
            problem["title"], "The request has invalid fields",
            "{description}"
        );
    }
}

#[tokio::test]
async fn reads_over_nats() {
    let app = spawn_app().await;
    let ids = create_customers(&app, 3, 3).await;
    let request = async |endpoint: Endpoint, payload: String| {
        app.nats_client
            .request(subject(endpoint), payload.into())
            .await
            .expect("NATS reply")
    };

    let found = request(Endpoint::Get, ids[0].clone()).await;
    assert_eq!(nats_header(&found, headers::SERVICE_ERROR_CODE), None);
    let customer: Value = serde_json::from_slice(&found.payload).unwrap();
    assert_eq!(customer["id"], ids[0].as_str());

    let missing = request(Endpoint::Get, "cus_01h3vjs3b16yc3f9q8q9pfrb80".into()).await;
    assert_eq!(
        nats_header(&missing, headers::SERVICE_ERROR_CODE),
        Some("404")
    );
    assert_eq!(
        nats_header(&missing, headers::SERVICE_ERROR),
        Some("customer_not_found")
    );

    let page = request(Endpoint::List, r#"{"limit": 2}"#.into()).await;
    let page: Value = serde_json::from_slice(&page.payload).unwrap();
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["has_more"], true);
    let everything = request(Endpoint::List, String::new()).await;
    let everything: Value = serde_json::from_slice(&everything.payload).unwrap();
    assert_eq!(everything["data"].as_array().map(Vec::len), Some(3));

    let bad = request(Endpoint::List, r#"{"limit": 0}"#.into()).await;
    assert_eq!(nats_header(&bad, headers::SERVICE_ERROR_CODE), Some("400"));
    assert_eq!(
        nats_header(&bad, headers::SERVICE_ERROR),
        Some("validation_failed")
    );
}
