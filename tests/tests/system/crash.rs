//! Crash safety: the worker process is killed with SIGKILL at random moments while 32
//! clients create, update and delete customers over HTTP (half of them with an
//! `Idempotency-Key` and `If-Match`), and
//! restarted on the same data directory, ten times. Afterwards, before any worker runs again,
//! the database is opened (which replays the journal; nothing is repaired) and its record
//! tree and email index must agree one to one; then a worker must know every acknowledged
//! customer at its last acknowledged change, and keyed writes that were interrupted must
//! have exactly one outcome when retried with their key.

use std::time::Duration;

use customers_tests::ledger::Load;
use customers_tests::{KillMoments, NatsServer, TestIngress, TestWorker, start_worker_process};
use customers_worker::Store;

const CLIENTS: usize = 32;
const CRASHES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_and_changes_survive_sigkill() {
    let _alone = customers_tests::exclusive().await;
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.request_timeout = Duration::from_millis(1000);
    let ingress = TestIngress::start_with(ingress_config).await;
    let load = Load::start(&ingress.http(), CLIENTS, "crash");

    let mut moments = KillMoments::seeded();
    for _ in 0..CRASHES {
        // Small checkpoints, so that kills also land during checkpoints and segment rotation.
        let worker =
            start_worker_process(&url, data_dir.path(), &["--checkpoint-bytes", "65536"]).await;
        let wanted = load.acknowledged() + 1 + moments.below(400) as usize;
        load.wait_for_acknowledged(wanted).await;
        worker.kill().await;
    }
    let ledger = load.stop().await;

    // Before any worker starts: recovery is a replay of the journal, never a repair, so the
    // trees must agree exactly as opened.
    let consistency = {
        let opened = Store::open(data_dir.path(), 16 << 20).unwrap();
        opened.store.verify().unwrap()
    };
    assert!(consistency.is_consistent(), "{consistency:?}");

    let worker = TestWorker::start(&url, data_dir.path()).await;
    let client = async_nats::connect(&url).await.unwrap();
    let verdict = ledger.verify(&client).await;
    worker.stop().await;
    customers_tests::report(&format!("crashes: {CRASHES}, {verdict}"));
    verdict.assert_nothing_lost();
    assert_eq!(
        consistency.records + consistency.deleted,
        verdict.acknowledged + verdict.stored_anyway,
        "every stored customer is one the clients asked for"
    );
}
