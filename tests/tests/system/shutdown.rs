//! Graceful shutdown: SIGTERM makes both binaries exit 0 without losing anything they
//! acknowledged, and the ingress answers the requests it is already handling.

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::subject;
use customers_tests::{
    NatsServer, ServiceProcess, StandInWorker, TestIngress, TestWorker, customer_with_email,
    nats_header, start_worker_process,
};

#[tokio::test]
async fn worker_exits_0_on_sigterm_and_keeps_what_it_acknowledged() {
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let worker = start_worker_process(&url, data_dir.path(), &[]).await;

    let client = async_nats::connect(&url).await.unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let email = format!("term{i}@example.com");
        let reply = client
            .request(
                subject(Endpoint::Create),
                customer_with_email(&email).into(),
            )
            .await
            .unwrap();
        let id = nats_header(&reply, headers::CUSTOMER_ID)
            .expect("created")
            .to_owned();
        acknowledged.push((email, id));
    }
    let status = worker.terminate().await;
    assert_eq!(status.code(), Some(0), "graceful exit");

    let restarted = TestWorker::start(&url, data_dir.path()).await;
    for (email, id) in &acknowledged {
        let reply = client
            .request(subject(Endpoint::Create), customer_with_email(email).into())
            .await
            .unwrap();
        assert_eq!(
            nats_header(&reply, headers::SERVICE_ERROR_CODE),
            Some("409"),
            "{email}"
        );
        let problem: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(problem["customer_id"], id.as_str(), "{email}");
    }
    restarted.stop().await;
}

#[tokio::test]
async fn ingress_exits_0_on_sigterm() {
    let nats = NatsServer::start();
    let url = nats.url();
    let ingress = ServiceProcess::start(
        "customers-ingress",
        &[
            "--nats-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "none",
        ],
        "serving",
    )
    .await;
    assert_eq!(ingress.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn ingress_shutdown_lets_in_flight_requests_finish() {
    let nats = NatsServer::start();
    // A stand-in worker that answers only when the test says so.
    let mut stand_in = StandInWorker::start(&nats).await;
    let ingress = TestIngress::start(&nats.url()).await;
    let addr = ingress.addr;
    let http = ingress.http();

    let in_flight = tokio::spawn({
        let http = http.clone();
        async move {
            http.create(&customer_with_email("inflight@example.com"))
                .await
        }
    });
    let request = stand_in.next_request().await;
    let stopping = tokio::spawn(ingress.stop());

    stand_in.reply_created(&request, "{}").await;

    let response = in_flight.await.unwrap();
    assert_eq!(response.status, 201, "the in-flight request is answered");
    stopping.await.unwrap();
    // The listener is closed: its port can be bound again.
    tokio::net::TcpListener::bind(addr)
        .await
        .expect("the ingress released its listening port");
}

#[tokio::test]
async fn worker_exits_on_sigterm_while_the_broker_is_down() {
    let mut nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let worker = start_worker_process(&url, data_dir.path(), &["--shutdown-grace", "1s"]).await;
    nats.stop();
    assert_eq!(worker.terminate().await.code(), Some(0));
}

/// What a requester saw for one create sent straight to the worker.
enum Seen {
    Created,
    Refused,
    NoResponders,
    TimedOut,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request() {
    let _alone = customers_tests::exclusive().await;
    use async_nats::client::RequestErrorKind;
    use std::sync::Arc;
    use tokio::sync::Notify;

    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let worker = start_worker_process(&url, data_dir.path(), &[]).await;
    let client = async_nats::connect(&url).await.unwrap();
    let progress = Arc::new(Notify::new());

    let requesters: Vec<_> = (0..32)
        .map(|r| {
            let (client, progress) = (client.clone(), progress.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0.. {
                    let email = format!("s{r}-{n}@example.com");
                    let request = async_nats::Request::new()
                        .payload(customer_with_email(&email).into())
                        .timeout(Some(std::time::Duration::from_secs(3)));
                    let outcome = match client
                        .send_request(subject(Endpoint::Create), request)
                        .await
                    {
                        Ok(reply) => match nats_header(&reply, headers::CUSTOMER_ID) {
                            Some(_) => Seen::Created,
                            None => Seen::Refused,
                        },
                        Err(e) if e.kind() == RequestErrorKind::NoResponders => Seen::NoResponders,
                        Err(e) if e.kind() == RequestErrorKind::TimedOut => Seen::TimedOut,
                        Err(e) => panic!("request failed: {e}"),
                    };
                    let done = matches!(outcome, Seen::NoResponders);
                    seen.push((email, outcome));
                    progress.notify_waiters();
                    if done {
                        return seen;
                    }
                }
                unreachable!()
            })
        })
        .collect();
    // Let the load build up, then stop the worker in the middle of it.
    for _ in 0..200 {
        progress.notified().await;
    }
    assert_eq!(worker.terminate().await.code(), Some(0));
    let mut seen = Vec::new();
    for requester in requesters {
        seen.extend(requester.await.unwrap());
    }

    let restarted = TestWorker::start(&url, data_dir.path()).await;
    let (mut created, mut timed_out) = (0, 0);
    for (email, outcome) in &seen {
        let reply = client
            .request(subject(Endpoint::Create), customer_with_email(email).into())
            .await
            .unwrap();
        let exists = nats_header(&reply, headers::SERVICE_ERROR_CODE) == Some("409");
        match outcome {
            Seen::Created => {
                created += 1;
                assert!(exists, "{email} was acknowledged, so it exists");
            }
            // Never delivered to the worker (it was unsubscribing): not accepted, not stored.
            Seen::TimedOut => {
                timed_out += 1;
                assert!(!exists, "{email} was accepted but never answered");
            }
            Seen::Refused | Seen::NoResponders => {}
        }
    }
    customers_tests::report(&format!(
        "SIGTERM under load: {created} created and answered, {timed_out} never delivered (timed out)"
    ));
    restarted.stop().await;
}
