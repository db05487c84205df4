//! The ingress's NATS requester does not grow when the worker is slow or absent: every
//! timed-out, unanswered or abandoned request leaves no routing entry behind.

use std::time::Duration;

use customers_ingress::worker_client::{Operation, WorkerClient};
use customers_shared::ApiError;
use customers_shared::runtime::nats::{self, NatsOptions};
use customers_tests::{NatsServer, StandInWorker};
use futures_util::future::join_all;

async fn worker_client(nats: &NatsServer, timeout: Duration) -> WorkerClient {
    let connection = nats::connect(
        "test",
        &NatsOptions::new(nats.url()),
        nats::DEFAULT_SUBSCRIPTION_CAPACITY,
    )
    .await
    .unwrap();
    WorkerClient::start(connection, "customers", timeout)
        .await
        .unwrap()
}

#[tokio::test]
async fn timed_out_requests_leave_nothing_behind() {
    let nats = NatsServer::start();
    let _never_answers = StandInWorker::start(&nats).await;
    let client = worker_client(&nats, Duration::from_millis(20)).await;

    let outcomes = join_all(
        (0..2000).map(|_| client.request(Operation::Create, "{}".into(), Default::default())),
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(ApiError::WorkerTimeout { .. })))
    );
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test]
async fn no_responder_and_abandoned_requests_leave_nothing_behind() {
    let nats = NatsServer::start();
    let client = worker_client(&nats, Duration::from_secs(5)).await;
    let outcomes = join_all(
        (0..2000).map(|_| client.request(Operation::Create, "{}".into(), Default::default())),
    )
    .await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(ApiError::ServiceUnavailable { .. })))
    );
    assert_eq!(client.in_flight(), 0);

    // An HTTP client that disconnects drops its request future mid-wait.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(1),
        client.request(Operation::Create, "{}".into(), Default::default()),
    )
    .await;
    drop(abandoned);
    assert_eq!(client.in_flight(), 0);
}
