//! Overload: the worker bounds its commit queue and the ingress bounds creates in flight.
//! Past either bound the answer is an immediate 503 with `Retry-After`, never a growing
//! queue, and both recover as soon as the load is gone.

use std::time::{Duration, Instant};

use customers_shared::protocol::headers;
use customers_tests::{
    HttpClient, NatsServer, StandInWorker, TestIngress, TestWorker, customer_with_email,
    nats_header,
};
use futures_util::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sheds_load_past_its_queue_bound_and_recovers() {
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
                let sent = Instant::now();
                let body = customer_with_email(&format!("b{burst}-{i}@example.com"));
                let reply = client
                    .request("customers.v1.create", body.into())
                    .await
                    .expect("every request is answered");
                (reply, sent.elapsed())
            }
        });
        for (reply, latency) in join_all(requests).await {
            match nats_header(&reply, headers::SERVICE_ERROR_CODE) {
                None => {}
                Some("503") => {
                    shed += 1;
                    assert_eq!(
                        nats_header(&reply, headers::SERVICE_ERROR),
                        Some("service_unavailable")
                    );
                    assert_eq!(nats_header(&reply, headers::RETRY_AFTER), Some("1"));
                    assert!(
                        latency < Duration::from_secs(1),
                        "a shed request is answered at once: {latency:?}"
                    );
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
            "customers.v1.create",
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

#[tokio::test]
async fn ingress_sheds_load_past_its_in_flight_bound_and_recovers() {
    const BOUND: usize = 8;
    let nats = NatsServer::start();
    // A worker that receives but never answers: every admitted create stays in flight.
    let mut stand_in = StandInWorker::start(&nats).await;
    let mut config = customers_ingress::Config::new(nats.url());
    config.max_in_flight = BOUND;
    config.request_timeout = Duration::from_millis(1500);
    let ingress = TestIngress::start_with(config).await;
    let http = HttpClient::new(ingress.addr);

    let requests = (0..10 * BOUND).map(|i| {
        let http = http.clone();
        async move {
            let sent = Instant::now();
            let response = http
                .create(&customer_with_email(&format!("i{i}@example.com")))
                .await;
            (response, sent.elapsed())
        }
    });
    let responses = join_all(requests).await;
    let shed: Vec<_> = responses.iter().filter(|(r, _)| r.status == 503).collect();
    let timed_out = responses.iter().filter(|(r, _)| r.status == 504).count();
    assert_eq!(
        (shed.len(), timed_out),
        (9 * BOUND, BOUND),
        "only the bound is admitted"
    );
    for (response, latency) in shed {
        assert_eq!(response.json()["code"], "service_unavailable");
        assert_eq!(response.header("retry-after"), Some("1"));
        assert!(
            *latency < Duration::from_secs(1),
            "shed at once: {latency:?}"
        );
    }

    // Once those requests are over, new ones are admitted again.
    let body = customer_with_email("later@example.com");
    let (response, received) = tokio::join!(http.create(&body), async {
        // Skip the requests admitted earlier; answer the new one.
        loop {
            let message = stand_in.next_request().await;
            if message.payload.windows(5).any(|w| w == b"later") {
                stand_in.reply_created(&message, "{}").await;
                break;
            }
        }
    });
    let () = received;
    assert_eq!(response.status, 201, "the ingress recovers");
}
