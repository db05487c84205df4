//! Overload: the worker bounds its commit queue and the ingress bounds creates in flight.
//! Past either bound the answer is an immediate 503 with `Retry-After`, never a growing
//! queue, and both recover as soon as the load is gone.

use std::time::Duration;

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::subject;
use customers_tests::{
    NatsServer, PATIENCE, StandInWorker, TestIngress, TestWorker, customer_with_email, nats_header,
};
use futures_util::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sheds_load_past_its_queue_bound_and_recovers() {
    let _alone = customers_tests::exclusive().await;
    const BOUND: usize = 16;
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = customers_worker::Config::new(nats.url(), data_dir.path());
    config.max_pending = BOUND;
    // One fsync per create keeps the committer slow enough for the queue to fill.
    config.max_group = 1;
    let worker = TestWorker::start_with(config).await;
    let client = async_nats::connect(nats.url()).await.unwrap();

    let mut shed = 0;
    for burst in 0..5 {
        let requests = (0..10 * BOUND).map(|i| {
            let client = client.clone();
            async move {
                let body = customer_with_email(&format!("b{burst}-{i}@example.com"));
                client
                    .request(subject(Endpoint::Create), body.into())
                    .await
                    .expect("every request is answered")
            }
        });
        for reply in join_all(requests).await {
            match nats_header(&reply, headers::SERVICE_ERROR_CODE) {
                None => {}
                Some("503") => {
                    shed += 1;
                    assert_eq!(
                        nats_header(&reply, headers::SERVICE_ERROR),
                        Some("service_unavailable")
                    );
                    assert_eq!(nats_header(&reply, headers::RETRY_AFTER), Some("1"));
                }
                other => panic!("unexpected reply {other:?}"),
            }
        }
        if shed > 0 {
            break;
        }
    }
    assert!(
        shed > 0,
        "10x the queue bound at once must shed some creates"
    );

    let after = client
        .request(
            subject(Endpoint::Create),
            customer_with_email("after-burst@example.com").into(),
        )
        .await
        .unwrap();
    assert_eq!(
        nats_header(&after, headers::SERVICE_ERROR_CODE),
        None,
        "the worker recovers"
    );
    worker.stop().await;
}

/// Order, not timing: the admitted creates are held by a stand-in worker that answers only
/// when told to, and the request timeout is far beyond the test's patience, so the bound is
/// full for exactly as long as the test decides.
#[tokio::test]
async fn ingress_sheds_load_past_its_in_flight_bound_and_recovers() {
    const BOUND: usize = 8;
    let nats = NatsServer::start();
    let mut stand_in = StandInWorker::start(&nats).await;
    let mut config = customers_ingress::Config::new(nats.url());
    config.max_in_flight = BOUND;
    config.request_timeout = Duration::from_secs(600);
    let ingress = TestIngress::start_with(config).await;
    let http = ingress.http();

    let admitted: Vec<_> = (0..BOUND)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                http.create(&customer_with_email(&format!("held{i}@example.com")))
                    .await
            })
        })
        .collect();
    let mut held = Vec::new();
    for _ in 0..BOUND {
        held.push(stand_in.next_request().await);
    }

    // The bound is full: every further create is shed, at once (nothing else could answer
    // it before the 600 s timeout).
    let shed = join_all((0..9 * BOUND).map(|i| {
        let http = http.clone();
        async move {
            tokio::time::timeout(
                PATIENCE,
                http.create(&customer_with_email(&format!("shed{i}@example.com"))),
            )
            .await
            .expect("a shed request is answered at once")
        }
    }))
    .await;
    for response in &shed {
        assert_eq!(response.status, 503, "{:?}", response.body);
        assert_eq!(response.json()["code"], "service_unavailable");
        assert_eq!(response.header("retry-after"), Some("1"));
    }

    // Once the held creates are answered, new ones are admitted again.
    for request in &held {
        stand_in.reply_created(request, "{}").await;
    }
    for create in admitted {
        assert_eq!(create.await.unwrap().status, 201);
    }
    let body = customer_with_email("later@example.com");
    let (response, ()) = tokio::join!(http.create(&body), async {
        let message = stand_in.next_request().await;
        stand_in.reply_created(&message, "{}").await;
    });
    assert_eq!(response.status, 201, "the ingress recovers");
}
