//! Email uniqueness: the first create of an email wins, compared case-insensitively, under
//! concurrency over HTTP and NATS at once, and across worker restarts.

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::subject;
use customers_tests::{customer_with_email, nats_header, spawn_app};
use futures_util::future::join_all;

#[tokio::test]
async fn duplicate_email_is_409_with_the_existing_id() {
    let app = spawn_app().await;
    let first = app
        .http
        .create(&customer_with_email("dup@example.com"))
        .await;
    assert_eq!(first.status, 201);
    let id = first.json()["id"].clone();

    for email in [
        "dup@example.com",
        "DUP@EXAMPLE.COM",
        "Dup@Example.com",
        "  dup@example.com ",
    ] {
        let again = app.http.create(&customer_with_email(email)).await;
        assert_eq!(again.status, 409, "{email}");
        assert_eq!(
            again.header("content-type"),
            Some("application/problem+json")
        );
        let problem = again.json();
        assert_eq!(problem["code"], "email_already_exists", "{email}");
        assert_eq!(problem["type"], "/problems/email_already_exists");
        assert_eq!(problem["status"], 409);
        assert_eq!(problem["customer_id"], id, "{email}");
    }
}

#[tokio::test]
async fn two_hundred_concurrent_creates_of_one_email_make_one_customer() {
    let app = spawn_app().await;
    let variants = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.Com",
        "race@EXAMPLE.COM",
    ];
    let http_requests = (0..100).map(|i| {
        let http = app.http.clone();
        let body = customer_with_email(variants[i % variants.len()]);
        async move {
            let response = http.create(&body).await;
            (response.status, response.json())
        }
    });
    let nats_requests = (0..100).map(|i| {
        let client = app.nats_client.clone();
        let body = customer_with_email(variants[(i + 1) % variants.len()]);
        async move {
            let reply = client
                .request(subject(Endpoint::Create), body.into())
                .await
                .expect("reply");
            let status = nats_header(&reply, headers::SERVICE_ERROR_CODE)
                .map_or(201, |c| c.parse().unwrap());
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap(),
            )
        }
    });
    let (http, nats) = tokio::join!(join_all(http_requests), join_all(nats_requests));
    let results: Vec<_> = http.into_iter().chain(nats).collect();

    let winners: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status == 201)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one create wins");
    let winner_id = &winners[0].1["id"];
    for (status, body) in &results {
        if *status != 201 {
            assert_eq!(*status, 409, "{body}");
            assert_eq!(body["code"], "email_already_exists");
            assert_eq!(
                &body["customer_id"], winner_id,
                "every loser names the winner"
            );
        }
    }
}

#[tokio::test]
async fn emails_stay_taken_after_a_worker_restart() {
    let mut app = spawn_app().await;
    let first = app
        .http
        .create(&customer_with_email("kept@example.com"))
        .await;
    assert_eq!(first.status, 201);
    let id = first.json()["id"].clone();

    app.restart_worker().await;

    let again = app
        .http
        .create(&customer_with_email("KEPT@example.com"))
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["customer_id"], id);
    let other = app
        .http
        .create(&customer_with_email("new-after-restart@example.com"))
        .await;
    assert_eq!(other.status, 201);
}
