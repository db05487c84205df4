//! Crash safety: the worker process is killed with SIGKILL at random moments while 32
//! clients create customers over HTTP, and restarted on the same data directory, ten times.
//! Afterwards every acknowledged customer still owns its email, no email has two owners,
//! and the record tree and the email index agree without any repair.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use customers_shared::protocol::headers;
use customers_tests::{
    HttpClient, NatsServer, TestIngress, TestWorker, customer_with_email, nats_header,
    start_worker_process,
};
use customers_worker::store::Store;
use tokio::sync::Notify;

const CLIENTS: usize = 32;
const CRASHES: usize = 10;

#[derive(Default)]
struct Ledger {
    /// email → id, for every 201.
    acknowledged: HashMap<String, String>,
    /// Emails whose create got no 201 (503, 504): may or may not exist.
    unacknowledged: Vec<String>,
    /// Anything but 201/503/504 for a fresh email: a bug.
    unexpected: Vec<String>,
}

/// xorshift: random kill moments without a dependency; the seed is printed for reruns.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() {
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.request_timeout = Duration::from_millis(1000);
    let ingress = TestIngress::start_with(ingress_config).await;
    let http = HttpClient::new(ingress.addr);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let acked = Arc::new(Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (http, ledger, acked, stop) =
                (http.clone(), ledger.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let email = format!("c{client}-{n}@crash.example.com");
                    let response = http.create(&customer_with_email(&email)).await;
                    let unavailable = response.status == 503;
                    {
                        let mut ledger = ledger.lock().unwrap();
                        match response.status {
                            201 => {
                                let id = response.json()["id"].as_str().unwrap().to_owned();
                                ledger.acknowledged.insert(email, id);
                                acked.notify_waiters();
                            }
                            503 | 504 => ledger.unacknowledged.push(email),
                            other => ledger
                                .unexpected
                                .push(format!("{email}: {other} {:?}", response.body)),
                        }
                    }
                    if unavailable {
                        // A well-behaved client backs off while no worker answers.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    customers_tests::report(&format!("kill-moment seed: {seed}"));
    for crash in 0..CRASHES {
        let worker = start_worker_process(&url, data_dir.path(), &[]).await;
        let before = ledger.lock().unwrap().acknowledged.len();
        let wanted = before + 1 + (next_random(&mut seed) % 400) as usize;
        while ledger.lock().unwrap().acknowledged.len() < wanted {
            tokio::time::timeout(Duration::from_secs(10), acked.notified())
                .await
                .unwrap_or_else(|_| {
                    panic!("crash {crash}: no progress after {before} acknowledged creates")
                });
        }
        worker.kill().await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(
        ledger.unexpected.is_empty(),
        "unexpected answers: {:?}",
        ledger.unexpected
    );

    // Every acknowledged email is still owned by the same customer.
    let worker = TestWorker::start(&url, data_dir.path()).await;
    let client = async_nats::connect(&url).await.unwrap();
    let mut lost = Vec::new();
    for (email, id) in &ledger.acknowledged {
        let reply = client
            .request("customers.v1.create", customer_with_email(email).into())
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        if nats_header(&reply, headers::SERVICE_ERROR_CODE) != Some("409")
            || problem["customer_id"] != id.as_str()
        {
            lost.push(email.clone());
        }
    }
    // An unacknowledged create either exists (409 tells its id) or did not happen (201 now).
    let mut stored_anyway = 0;
    for email in &ledger.unacknowledged {
        let reply = client
            .request("customers.v1.create", customer_with_email(email).into())
            .await
            .unwrap();
        match nats_header(&reply, headers::SERVICE_ERROR_CODE) {
            Some("409") => stored_anyway += 1,
            None => {}
            other => panic!("retry of {email} answered {other:?}"),
        }
    }
    worker.stop().await;

    customers_tests::report(&format!(
        "crashes: {CRASHES}, acknowledged: {}, lost: {}, unacknowledged: {} ({stored_anyway} had been stored, {} had not)",
        ledger.acknowledged.len(),
        lost.len(),
        ledger.unacknowledged.len(),
        ledger.unacknowledged.len() - stored_anyway,
    ));
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // Record tree and email index agree one to one: no email has two owners.
    let store = Store::open(data_dir.path(), 16 << 20).unwrap();
    let report = store.check_and_repair().unwrap();
    assert_eq!(
        report.records,
        ledger.acknowledged.len() + ledger.unacknowledged.len()
    );
    assert_eq!(
        (
            report.index_entries_added,
            report.index_entries_removed,
            report.conflicting_records
        ),
        (0, 0, 0),
        "no repair was needed: {report:?}"
    );
}
