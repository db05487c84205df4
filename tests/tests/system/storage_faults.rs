//! Storage faults in the real worker binary, under load. The worker is built with failpoints
//! (`FAILPOINTS`, see `worker/src/lib.rs`) and each test makes one fault happen after some
//! groups have been committed while 16 HTTP clients create customers: a journal write error,
//! a journal fsync error, a crash between the journal sync and the sled apply, a crash in the
//! middle of a checkpoint (after sled's flush, and before the covered journal segments are
//! removed), and a panic of the committer thread. Each time:
//!
//! * the worker stops on its own, with exit code 74 (storage) or 70 (panic), or by the
//!   crash's SIGABRT, and says why in its log; no request hangs (every client request gets
//!   an answer: 201, or 500/503/504 which promise nothing);
//! * the ingress stops calling it ready;
//! * restarted without faults on the same data directory, the database opens (replaying the
//!   journal) with its trees in agreement, and every acknowledged create is there; keyed
//!   creates that got no 201 have exactly one outcome when retried.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use customers_shared::wire::protocol::Endpoint;
use customers_tests::ledger::Load;
use customers_tests::subject;
use customers_tests::{
    NatsServer, TestIngress, TestWorker, report, start_worker_process_with_failpoints,
};
use customers_worker::Store;

const CLIENTS: usize = 16;
const SIGABRT: i32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `exit(code)`, with this text in the log.
    Exit(i32, &'static str),
    /// Killed by this signal (a failpoint's crash aborts, like a power cut).
    Signal(i32),
}

/// Runs the worker with `failpoints` under load until it stops; checks how it stopped and
/// that nothing it acknowledged is lost. `name` tags the emails: letters, digits, `-`.
async fn fault_under_load(name: &str, failpoints: &str, extra: &[&str], expected: Ending) {
    let nats = NatsServer::start();
    let url = nats.url();
    let data_dir = tempfile::tempdir().unwrap();
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.request_timeout = Duration::from_millis(1000);
    let ingress = TestIngress::start_with(ingress_config).await;
    let http = ingress.http();

    let worker =
        start_worker_process_with_failpoints(&url, data_dir.path(), extra, failpoints).await;
    let load = Load::start(&http, CLIENTS, name);
    let (status, log) = worker.exited().await;
    let ledger = tokio::time::timeout(customers_tests::PATIENCE, load.stop())
        .await
        .expect("every request is answered: none hangs");
    let ending = match status.code() {
        Some(code) => {
            let why = match expected {
                Ending::Exit(_, why) => why,
                Ending::Signal(_) => "",
            };
            assert!(
                log.iter().any(|line| line.contains(why)),
                "{name}: no log line says {why:?}: {log:#?}"
            );
            Ending::Exit(code, why)
        }
        None => Ending::Signal(status.signal().expect("a signal")),
    };
    assert_eq!(
        ending, expected,
        "{name}: how the worker stopped; log: {log:#?}"
    );
    assert_eq!(
        http.get("/readyz").await.status,
        503,
        "{name}: not ready without a worker"
    );

    let consistency = Store::open(data_dir.path(), 16 << 20)
        .unwrap()
        .store
        .verify()
        .unwrap();
    assert!(consistency.is_consistent(), "{name}: {consistency:?}");
    let worker = TestWorker::start(&url, data_dir.path()).await;
    let client = async_nats::connect(&url).await.unwrap();
    let verdict = ledger.verify(&client).await;
    worker.stop().await;
    report(&format!("{name}: {verdict}"));
    assert!(
        verdict.acknowledged > 0,
        "{name}: the fault came after some creates"
    );
    verdict.assert_nothing_lost();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_write_error_stops_the_worker_with_74() {
    let _alone = customers_tests::exclusive().await;
    fault_under_load(
        "journal-write-error",
        "journal-write=40*off->return",
        &[],
        Ending::Exit(74, "storage failed: journal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_fsync_error_stops_the_worker_with_74() {
    let _alone = customers_tests::exclusive().await;
    fault_under_load(
        "journal-fsync-error",
        "journal-sync=40*off->return",
        &[],
        Ending::Exit(74, "failpoint journal-sync"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_journal_sync_and_apply_loses_nothing() {
    let _alone = customers_tests::exclusive().await;
    fault_under_load(
        "crash-before-apply",
        "commit-before-apply=40*off->return",
        &[],
        Ending::Signal(SIGABRT),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_checkpoints_flush_loses_nothing() {
    let _alone = customers_tests::exclusive().await;
    fault_under_load(
        "crash-in-checkpoint-after-flush",
        "checkpoint-after-flush=2*off->return",
        &["--checkpoint-bytes", "32768"],
        Ending::Signal(SIGABRT),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_a_checkpoint_removes_segments_loses_nothing() {
    let _alone = customers_tests::exclusive().await;
    fault_under_load(
        "crash-in-checkpoint-before-removal",
        "checkpoint-before-remove=2*off->return",
        &["--checkpoint-bytes", "32768"],
        Ending::Signal(SIGABRT),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_panic_surfaces_and_exits_70() {
    let _alone = customers_tests::exclusive().await;
    fault_under_load(
        "committer-panic",
        "committer-panic=40*off->return",
        &[],
        Ending::Exit(70, "the committer thread panicked"),
    )
    .await;
}

/// Copies the directory tree `from` into `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Cuts the file at `path` to `len` bytes.
fn cut(path: &std::path::Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The only journal segment in `data_dir`.
fn only_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let segments: Vec<_> = std::fs::read_dir(data_dir.join("journal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments[0].clone()
}

/// What was acknowledged must be there or the start refused: a journal segment that the last
/// checkpoint recorded as created but that lost its records, or sled's own file cut or
/// overwritten after a checkpoint, stops the start with the reason, instead of a worker that
/// serves some of its customers, or none.
#[tokio::test]
async fn a_damaged_journal_or_database_is_refused_at_start() {
    type Damage = fn(&std::path::Path);
    let cases: [(&str, bool, Damage, &str); 3] = [
        (
            "the journal segment emptied after a crash (its customers never checkpointed)",
            false,
            |dir| cut(&only_segment(dir), 0),
            "less than its header, though the last checkpoint recorded it as created whole",
        ),
        (
            "sled's file cut in half after a clean stop",
            true,
            |dir| {
                let db = dir.join("db");
                cut(&db, std::fs::metadata(&db).unwrap().len() / 2);
            },
            "its files are damaged",
        ),
        (
            "sled's file's first 4 KiB zeroed after a clean stop",
            true,
            |dir| {
                use std::io::{Seek, Write};
                let mut db = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("db"))
                    .unwrap();
                db.seek(std::io::SeekFrom::Start(0)).unwrap();
                db.write_all(&[0; 4096]).unwrap();
                db.sync_all().unwrap();
            },
            "its files are damaged",
        ),
    ];
    for (description, clean_stop, damage, expected) in cases {
        let nats = NatsServer::start();
        let url = nats.url();
        let data_dir = tempfile::tempdir().unwrap();
        let worker =
            start_worker_process_with_failpoints(&url, data_dir.path(), &["--events", "off"], "")
                .await;
        let client = async_nats::connect(&url).await.unwrap();
        for n in 0..60 {
            let reply = client
                .request(
                    subject(Endpoint::Create),
                    customers_tests::customer_with_email(&format!("damage{n}@example.com")).into(),
                )
                .await
                .unwrap();
            assert!(
                customers_tests::nats_header(&reply, "Customer-Id").is_some(),
                "{description}: acknowledged"
            );
        }
        let dir = data_dir.path().to_str().unwrap();
        let verify = ["verify", "--data-dir", dir];
        if clean_stop {
            assert_eq!(worker.terminate().await.code(), Some(0), "{description}");
            // A copy of the sound directory passes the same check (verify rewrites sled's
            // files, so it checks a copy: the damage must hit what the worker left).
            let sound = tempfile::tempdir().unwrap();
            copy_dir(data_dir.path(), sound.path());
            let sound_dir = sound.path().to_str().unwrap();
            let (code, stderr) = customers_tests::run_to_exit(
                "customers-worker",
                &["verify", "--data-dir", sound_dir],
            )
            .await;
            assert_eq!(
                code,
                Some(0),
                "{description}: sound before the damage: {stderr}"
            );
        } else {
            worker.kill().await;
        }
        damage(data_dir.path());
        let start = ["--nats-url", &url, "--events", "off", "--data-dir", dir];
        for args in [&start[..], &verify[..]] {
            let (code, stderr) = customers_tests::run_to_exit("customers-worker", args).await;
            report(&format!("{description}: {args:?}: {}", stderr.trim()));
            assert_eq!(code, Some(1), "{description}: {stderr}");
            assert!(stderr.contains(expected), "{description}: {stderr}");
            assert!(
                !stderr.contains("panicked"),
                "{description}: a reason, not a panic: {stderr}"
            );
        }
    }
}
