//! A full disk is a storage error like any other: the worker's data directory is on a small
//! tmpfs (the tests run as root, as CI does), nearly filled by another file; under load the
//! journal (or sled) runs out of space, the worker stops with exit code 74, and no request
//! hangs. Once the space is back, a restarted worker serves again with every acknowledged
//! create.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use customers_tests::ledger::Load;
use customers_tests::{
    NatsServer, TestIngress, TestWorker, customer_with_email, report, start_worker_process,
};

/// A tmpfs mounted on a temporary directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs (the disk-full test needs root, as in CI): {status}"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `dir` with a file, then gives back `leave` bytes of it.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    file.set_len(written.saturating_sub(leave)).unwrap();
    file.sync_all().unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_worker_and_a_restart_after_space_returns_serves_again() {
    let _alone = customers_tests::exclusive().await;
    let tmpfs = Tmpfs::mount("48m");
    let data_dir = tmpfs.path().join("data");
    let nats = NatsServer::start();
    let url = nats.url();
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.request_timeout = Duration::from_millis(1000);
    let ingress = TestIngress::start_with(ingress_config).await;
    let http = ingress.http();

    let worker = start_worker_process(&url, &data_dir, &[]).await;
    let filler = fill(tmpfs.path(), 256 * 1024);
    let load = Load::start(&http, 16, "full");
    let (status, log) = worker.exited().await;
    let ledger = tokio::time::timeout(customers_tests::PATIENCE, load.stop())
        .await
        .expect("every request is answered: none hangs");
    assert_eq!(status.code(), Some(74), "exit code; log: {log:#?}");
    assert!(
        log.iter()
            .any(|line| line.contains("storage failed") && line.contains("No space left")),
        "a log line says why: {log:#?}"
    );
    assert!(
        !ledger.acknowledged.is_empty(),
        "some creates fit before the disk was full"
    );

    std::fs::remove_file(filler).unwrap();
    let worker = TestWorker::start(&url, &data_dir).await;
    let after = http
        .create(&customer_with_email("after@full.example.com"))
        .await;
    assert_eq!(after.status, 201, "serves again: {:?}", after.body);
    let client = async_nats::connect(&url).await.unwrap();
    let verdict = ledger.verify(&client).await;
    worker.stop().await;
    report(&format!("disk full: {verdict}"));
    verdict.assert_nothing_lost();
}
