//! Power cuts. `kill -9` keeps the page cache, so a crash test cannot notice a missing
//! `fdatasync`, or one issued before the data is written. Here the worker's data directory is
//! on [`cutfs`], a FUSE file system that keeps every write not yet made durable by
//! fsync/fdatasync in memory and throws it away on a cut. Under load, the worker is killed
//! and the power cut at the same instant; the file system is remounted, the database opened
//! (its trees must agree) and a worker started, which must know every acknowledged create.
//! Three cuts in a row, with small checkpoints so that cuts also land around them.
//!
//! And the proof that this test would notice: the same run with the journal's `fdatasync`
//! turned off (failpoint `journal-skip-sync`) loses acknowledged creates.

mod cutfs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use customers_tests::ledger::{Load, Verdict};
use customers_tests::{
    NatsServer, TestIngress, TestWorker, report, start_worker_process_with_failpoints,
};
use customers_worker::Store;
use cutfs::Disk;

/// A [`cutfs`] mount on a temporary directory.
struct Mounted {
    disk: Arc<Mutex<Disk>>,
    session: Option<fuser::BackgroundSession>,
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new();
        let session = Some(cutfs::mount(&disk, dir.path()));
        Self { disk, session, dir }
    }

    /// The power cut, then a fresh mount of what survived it.
    fn cut_and_remount(&mut self) {
        self.session
            .take()
            .expect("mounted")
            .umount_and_join()
            .expect("unmount");
        self.disk.lock().unwrap().cut();
        self.session = Some(cutfs::mount(&self.disk, self.dir.path()));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

/// `cuts` rounds of: start the worker with `failpoints`, create under load until `per_cut`
/// more creates are acknowledged, kill the worker and cut the power. Then checks the ledger.
async fn power_cuts_under_load(
    name: &str,
    failpoints: &str,
    extra: &[&str],
    cuts: usize,
) -> Verdict {
    let mut fs = Mounted::new();
    let data_dir = fs.dir.path().join("data");
    let nats = NatsServer::start();
    let url = nats.url();
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.request_timeout = Duration::from_millis(1000);
    let ingress = TestIngress::start_with(ingress_config).await;
    let load = Load::start(&ingress.http(), 16, name);
    for cut in 0..cuts {
        let worker = start_worker_process_with_failpoints(&url, &data_dir, extra, failpoints).await;
        load.wait_for_acknowledged(load.acknowledged() + 300 + 150 * cut)
            .await;
        worker.kill().await;
        fs.cut_and_remount();
    }
    let ledger = load.stop().await;

    let consistency = Store::open(&data_dir, 16 << 20)
        .unwrap()
        .store
        .verify()
        .unwrap();
    assert!(consistency.is_consistent(), "{name}: {consistency:?}");
    let worker = TestWorker::start(&url, &data_dir).await;
    let client = async_nats::connect(&url).await.unwrap();
    let verdict = ledger.verify(&client).await;
    worker.stop().await;
    let synced = fs.disk.lock().unwrap().synced_bytes;
    report(&format!(
        "{name}: {cuts} power cuts, {verdict}, {synced} bytes fsynced"
    ));
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_create_survives_power_cuts() {
    let _alone = customers_tests::exclusive().await;
    let verdict = power_cuts_under_load("power-cut", "", &["--checkpoint-bytes", "65536"], 3).await;
    verdict.assert_nothing_lost();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_journal_sync_a_power_cut_loses_acknowledged_creates() {
    let _alone = customers_tests::exclusive().await;
    let verdict = power_cuts_under_load(
        "power-cut-no-journal-sync",
        "journal-skip-sync=return",
        &[],
        1,
    )
    .await;
    assert!(
        !verdict.lost.is_empty(),
        "the test must notice a journal that is never synced: {verdict}"
    );
}
