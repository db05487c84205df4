//! Broker outage: nats-server is restarted on the same port while clients create customers.
//! During the outage every request is a 503 (never the 504 of a request left waiting for the
//! ingress's timeout); after the broker is back, the worker re-subscribes and creates succeed
//! again, with no manual action. How fast both happen is measured and reported (typically a
//! few ms and ~50 ms here); the assertions bound only what a loaded machine cannot break.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use customers_tests::{customer_with_email, spawn_app};
use tokio::sync::Notify;

/// One answered request: when it was sent, how long it took, and its status.
struct Sample {
    sent: Instant,
    latency: Duration,
    status: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_recover_after_a_broker_restart() {
    let _alone = customers_tests::exclusive().await;
    let mut app = spawn_app().await;
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Notify::new());
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (http, samples, stop, answered) = (
                app.http.clone(),
                samples.clone(),
                stop.clone(),
                answered.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = Instant::now();
                    let response = http
                        .create(&customer_with_email(&format!("o{client}-{n}@example.com")))
                        .await;
                    let status = response.status;
                    samples.lock().unwrap().push(Sample {
                        sent,
                        latency: sent.elapsed(),
                        status,
                    });
                    answered.notify_waiters();
                    if status == 503 {
                        assert_eq!(response.header("retry-after"), Some("1"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    let count = |status: u16, after: Instant| {
        samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == status && s.sent >= after)
            .count()
    };
    let wait_for = |status: u16, after: Instant| {
        let answered = answered.clone();
        async move {
            let started = Instant::now();
            while count(status, after) == 0 {
                tokio::time::timeout(Duration::from_secs(10), answered.notified())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("no answer within 10 s while waiting for a {status}")
                    });
            }
            started.elapsed()
        }
    };

    wait_for(201, Instant::now()).await;
    let down = Instant::now();
    app.nats.stop();
    wait_for(503, down).await;
    // The outage lasts until the clients have met it several times each.
    while count(503, down) < 5 * 8 {
        tokio::time::timeout(customers_tests::PATIENCE, answered.notified())
            .await
            .expect("clients keep getting answers during the outage");
    }
    app.nats.restart();
    let up = Instant::now();
    let recovery = wait_for(201, up).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent >= down && s.sent + s.latency < up)
        .collect();
    let slowest = during.iter().map(|s| s.latency).max().unwrap_or_default();
    customers_tests::report(&format!(
        "outage: {} requests answered during it, statuses {:?}, slowest {slowest:?}; first 201 {recovery:?} after the broker was back",
        during.len(),
        {
            let mut statuses: Vec<u16> = during.iter().map(|s| s.status).collect();
            statuses.sort_unstable();
            statuses.dedup();
            statuses
        }
    ));
    assert!(
        during.iter().all(|s| s.status == 503 || s.status == 201),
        "only 503s (or creates that beat the outage), no 504: none waited for the timeout"
    );
    assert!(
        slowest < customers_tests::PATIENCE && recovery < customers_tests::PATIENCE,
        "no request hangs ({slowest:?}) and creates come back ({recovery:?})"
    );

    // The worker is discoverable again.
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let ping = client
        .request("$SRV.PING.customers", "".into())
        .await
        .unwrap();
    assert!(!ping.payload.is_empty());
}
