//! The worker protects itself whoever calls it, not only behind the ingress:
//!
//! * a page of customers stops before its reply would pass the server's `max_payload`, with
//!   `has_more` and a cursor that goes on: with a 256 KiB `max_payload`, 130 customers at
//!   every size limit (1.3 MB together) come back, over HTTP, in pages that fit;
//! * a request whose `Request-Deadline` has passed when the worker picks it up is dropped
//!   unread and counted;
//! * a NATS client flooding the worker straight past the ingress gets fast `503`s beyond
//!   `--max-in-flight`, never another error, bounded memory, and a worker that serves
//!   normally once the flood is over. What the worker cannot even read in time (past twice
//!   `--max-in-flight` messages waiting) is dropped and never answered: its requesters time
//!   out, as with any NATS responder that falls behind; the test reports how many.

use std::collections::HashSet;
use std::time::Duration;

use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::subject;
use customers_tests::{
    HttpClient, NatsServer, ServiceProcess, TestIngress, TestWorker, customer_with_email,
    nats_header, report,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A customer at every size limit (about 10 KiB of JSON once stored).
fn largest_customer(n: usize) -> String {
    let custom_data: serde_json::Map<String, Value> = (0..50)
        .map(|k| (format!("{k:0>64}"), "\"".repeat(45).into()))
        .collect();
    json!({
        "name": "😀".repeat(200),
        "email": format!("{n:0>64}@{}.example", "d".repeat(60)),
        "phone": "+1 2 3 4 5 6 7 8 9 0 1 2 3 4 5",
        "address": {"city": "😀".repeat(100), "country": "TZ"},
        "payment_method": "é".repeat(255),
        "custom_data": custom_data,
    })
    .to_string()
}

#[tokio::test]
async fn pages_stop_before_they_would_pass_max_payload() {
    const MAX_PAYLOAD: usize = 256 * 1024;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), format!("max_payload: {MAX_PAYLOAD}\n")).unwrap();
    let nats = NatsServer::start_with_config(config.path());
    let data_dir = tempfile::tempdir().unwrap();
    let worker = TestWorker::start(&nats.url(), data_dir.path()).await;
    let ingress = TestIngress::start(&nats.url()).await;
    let http = ingress.http();
    let mut created = HashSet::new();
    for n in 0..130 {
        let response = http.create(&largest_customer(n)).await;
        assert_eq!(response.status, 201, "{:?}", response.body);
        created.insert(response.json()["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/customers?limit=100".to_owned();
    let mut pages = 0;
    loop {
        let response = http.get(&path).await;
        assert_eq!(response.status, 200, "page {pages}: {:?}", response.body);
        assert!(
            response.body.len() < 1024 * 1024,
            "fits in one NATS message"
        );
        pages += 1;
        let page = response.json();
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(!ids.is_empty());
        seen.extend(ids.iter().cloned());
        if page["has_more"] == false {
            break;
        }
        path = format!(
            "/api/v1/customers?limit=100&starting_after={}",
            ids.last().unwrap()
        );
    }
    report(&format!(
        "130 customers of ~10 KiB each listed with limit=100 in {pages} pages"
    ));
    assert!(pages >= 5, "25 customers at most fit in a page");
    assert_eq!(seen.len(), 130, "no customer twice");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), created);
    worker.stop().await;
}

#[tokio::test]
async fn a_request_past_its_deadline_is_dropped_unread() {
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = customers_worker::Config::new(nats.url(), data_dir.path());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let worker = TestWorker::start_with(config).await;
    let admin = HttpClient::new(worker.admin_addr.expect("admin listener"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await.unwrap();

    let send = |reply: &str, email: &str, deadline_ms: u128| {
        let mut request_headers = async_nats::HeaderMap::new();
        request_headers.insert(headers::DEADLINE, deadline_ms.to_string().as_str());
        client.publish_with_reply_and_headers(
            "customers.v1.create",
            format!("{inbox}.{reply}"),
            request_headers,
            customer_with_email(email).into(),
        )
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    send("late", "late@deadline.example.com", now_ms - 1)
        .await
        .unwrap();
    send("on-time", "on-time@deadline.example.com", now_ms + 60_000)
        .await
        .unwrap();
    // The worker takes requests in order: once the second is answered, the first was seen.
    let reply = tokio::time::timeout(customers_tests::PATIENCE, replies.next())
        .await
        .expect("a reply")
        .unwrap();
    assert!(
        reply.subject.ends_with(".on-time"),
        "only the on-time one is answered"
    );
    assert_eq!(
        nats_header(&reply, headers::SERVICE_ERROR_CODE),
        None,
        "created"
    );
    let metrics = String::from_utf8(admin.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"customers_worker_expired_requests_total{operation="create"} 1"#),
        "{metrics}"
    );
    let list = client
        .request(
            subject(Endpoint::List),
            r#"{"email":"late@deadline.example.com"}"#.into(),
        )
        .await
        .unwrap();
    let page: Value = serde_json::from_slice(&list.payload).unwrap();
    assert_eq!(page["data"], json!([]), "the late create did not happen");
    worker.stop().await;
}

/// Publishes `count` creates at once (each with its own reply subject under `inbox`); then
/// collects replies until a quiet second: (created, answered 503, anything else).
async fn burst(
    client: &async_nats::Client,
    replies: &mut async_nats::Subscriber,
    inbox: &str,
    tag: &str,
    count: usize,
) -> (usize, usize, Vec<String>) {
    for n in 0..count {
        client
            .publish_with_reply(
                subject(Endpoint::Create),
                format!("{inbox}.{tag}{n}"),
                customer_with_email(&format!("{tag}{n}@example.com")).into(),
            )
            .await
            .unwrap();
    }
    let (mut created, mut unavailable, mut other) = (0, 0, Vec::new());
    while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_secs(1), replies.next()).await {
        match nats_header(&reply, headers::SERVICE_ERROR_CODE) {
            None => created += 1,
            Some("503") => {
                assert_eq!(nats_header(&reply, headers::RETRY_AFTER), Some("1"));
                unavailable += 1;
            }
            Some(status) => other.push(status.to_owned()),
        }
    }
    (created, unavailable, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_nats_gets_fast_503s_and_the_worker_recovers() {
    let _alone = customers_tests::exclusive().await;
    let nats = NatsServer::start();
    let url = nats.url();
    let data_dir = tempfile::tempdir().unwrap();
    let data = data_dir.path().to_str().unwrap();
    // At most 32 requests in flight, so at most 1024 waiting to be read.
    let args = [
        "--nats-url",
        &url,
        "--data-dir",
        data,
        "--max-in-flight",
        "32",
        "--max-pending",
        "64",
    ];
    let worker = ServiceProcess::start("customers-worker", &args, "serving").await;
    let pid = worker.pid().expect("running");
    let client = async_nats::connect(&url).await.unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await.unwrap();

    // A burst the worker can read: every request is answered, past 32 at once with a 503.
    let (created, unavailable, other) = burst(&client, &mut replies, &inbox, "burst", 1000).await;
    report(&format!(
        "burst of 1000 creates over NATS: {created} created, {unavailable} answered 503"
    ));
    assert!(other.is_empty(), "only 201 and 503: {other:?}");
    assert_eq!(created + unavailable, 1000, "every request is answered");
    assert!(
        unavailable > 0,
        "past --max-in-flight the worker says so at once"
    );

    // A flood faster than it can read: what does not fit in its queue is dropped unread (its
    // requesters would time out), memory stays bounded, and every answer is a 201 or a 503.
    const FLOOD: usize = 20_000;
    let (created, unavailable, other) = burst(&client, &mut replies, &inbox, "flood", FLOOD).await;
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let dropped = FLOOD - created - unavailable - other.len();
    report(&format!(
        "flood of {FLOOD} creates over NATS: {created} created, {unavailable} answered 503, {dropped} dropped unread; worker peak RSS {} MiB",
        peak_kib / 1024
    ));
    assert!(other.is_empty(), "only 201 and 503: {other:?}");
    assert_eq!(
        created + unavailable + dropped,
        FLOOD,
        "each answered or counted as dropped"
    );
    assert!(peak_kib < 400 * 1024, "bounded memory: {peak_kib} KiB");

    // Once the flood is over the worker serves as before.
    let after = client
        .request(
            subject(Endpoint::Create),
            customer_with_email("after-flood@example.com").into(),
        )
        .await
        .unwrap();
    assert_eq!(nats_header(&after, headers::SERVICE_ERROR_CODE), None);
    let ingress = TestIngress::start(&url).await;
    assert_eq!(ingress.http().get("/readyz").await.status, 200);
    assert_eq!(worker.terminate().await.code(), Some(0));
}
