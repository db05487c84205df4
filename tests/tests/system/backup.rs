//! Single-node backups: `customers-worker backup`, run while creates go on, has the worker
//! write a consistent snapshot into its `--backup-dir`; `customers-worker restore` loads it
//! into a new data directory, where a worker then serves every customer the snapshot holds,
//! keeps emails unique and goes on creating. A snapshot is never loaded into a directory in
//! use, nor loaded in part. The admin listener writes nowhere but the backup directory, by a
//! file name, never over a file, and only with its token when it has one.

use std::collections::HashMap;

use customers_shared::CustomerId;
use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::ledger::Load;
use customers_tests::subject;
use customers_tests::{
    HttpClient, NatsServer, TestIngress, customer_with_email, free_port, nats_header,
    start_worker_process, workspace_binary,
};
use customers_worker::Store;

async fn worker_command(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(workspace_binary("customers-worker"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap()
}

fn customers(store: &Store) -> HashMap<CustomerId, Vec<u8>> {
    store
        .records_after(None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(id, json)| (id, json.to_vec()))
        .collect()
}

/// The version of a stored customer record (the worker's `customer_record` format: the bare
/// JSON is version 1, `0x02` and eight bytes a later one); `None` for a tombstone.
fn stored_version(record: &[u8]) -> Option<u64> {
    match record.first() {
        Some(b'{') => Some(1),
        Some(2) => Some(u64::from_be_bytes(record[1..9].try_into().unwrap())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_into_a_working_database() {
    let _alone = customers_tests::exclusive().await;
    let nats = NatsServer::start();
    let url = nats.url();
    let data_dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let backups = tempfile::tempdir().unwrap();
    // Made by the worker, and again when removed while it runs.
    let backup_dir = backups.path().join("nightly");
    let backup_arg = backup_dir.to_str().unwrap();
    let worker = start_worker_process(
        &url,
        data_dir.path(),
        &["--admin-listen", &admin, "--backup-dir", backup_arg],
    )
    .await;
    std::fs::remove_dir(&backup_dir).unwrap();
    let ingress = TestIngress::start(&url).await;
    let load = Load::start(&ingress.http(), 8, "backup");
    load.wait_for_acknowledged(300).await;
    let acknowledged_before = load.acknowledged();

    let admin_url = format!("http://{admin}");
    let backup = [
        "backup",
        "--admin-url",
        &admin_url,
        "--name",
        "customers.snap",
    ];
    let written = worker_command(&backup).await;
    assert!(written.status.success(), "{written:?}");
    let summary: serde_json::Value = serde_json::from_slice(&written.stdout).unwrap();
    assert!(summary["entries"].as_u64().unwrap() > 0, "{summary}");
    let file = backup_dir.join("customers.snap");
    assert_eq!(summary["path"], file.to_str().unwrap());
    let file_arg = file.to_str().unwrap();
    let again = worker_command(&backup).await;
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("409"),
        "an existing file is never overwritten: {again:?}"
    );
    // Creates went on during the backup and after it.
    load.wait_for_acknowledged(load.acknowledged() + 100).await;
    load.stop().await;
    assert_eq!(worker.terminate().await.code(), Some(0));

    let restored_dir = tempfile::tempdir().unwrap();
    let restored = restored_dir.path().join("data");
    let restored_arg = restored.to_str().unwrap();
    let restore =
        worker_command(&["restore", "--from", file_arg, "--data-dir", restored_arg]).await;
    assert!(restore.status.success(), "{restore:?}");
    let into_used = worker_command(&[
        "restore",
        "--from",
        file_arg,
        "--data-dir",
        data_dir.path().to_str().unwrap(),
    ])
    .await;
    assert!(!into_used.status.success());
    assert!(String::from_utf8_lossy(&into_used.stderr).contains("not empty"));

    // The snapshot is a consistent prefix of the original: every customer in it is the
    // original's, byte for byte, unless the original changed it after the backup (a later
    // version, or a delete; a deleted one stays deleted), and it holds at least what was
    // acknowledged before it.
    let (snapshot, newest) = {
        let original = customers(&Store::open(data_dir.path(), 16 << 20).unwrap().store);
        let store = Store::open(&restored, 16 << 20).unwrap().store;
        assert!(store.verify().unwrap().is_consistent());
        let snapshot = customers(&store);
        for (id, record) in &snapshot {
            let later = &original[id];
            let changed_since = match (stored_version(record), stored_version(later)) {
                (Some(then), Some(now)) => now > then,
                (Some(_), None) => true,
                (None, _) => false,
            };
            assert!(
                later == record || changed_since,
                "{id}: {record:?} then {later:?}"
            );
        }
        assert!(snapshot.len() >= acknowledged_before);
        assert!(
            snapshot.len() < original.len(),
            "later creates are not in it"
        );
        let newest = store.newest_id().unwrap().unwrap();
        (snapshot, newest)
    };
    customers_tests::report(&format!(
        "backup: {} customers in the snapshot ({} acknowledged when it started), {} bytes",
        snapshot.len(),
        acknowledged_before,
        summary["bytes"]
    ));

    // A worker on the restored directory serves them, keeps their emails, goes on creating.
    let restored_worker = start_worker_process(&url, &restored, &[]).await;
    let client = async_nats::connect(&url).await.unwrap();
    let (id, json) = snapshot
        .iter()
        .find(|(_, record)| stored_version(record) == Some(1))
        .expect("a customer never changed");
    let got = client
        .request(subject(Endpoint::Get), id.to_string().into())
        .await
        .unwrap();
    assert_eq!(&got.payload[..], &json[..]);
    let email = serde_json::from_slice::<serde_json::Value>(json).unwrap()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let twice = client
        .request(
            subject(Endpoint::Create),
            customer_with_email(&email).into(),
        )
        .await
        .unwrap();
    assert_eq!(
        nats_header(&twice, headers::SERVICE_ERROR_CODE),
        Some("409")
    );
    let fresh = client
        .request(
            subject(Endpoint::Create),
            customer_with_email("after-restore@backup.example.com").into(),
        )
        .await
        .unwrap();
    let fresh_id: CustomerId = nats_header(&fresh, headers::CUSTOMER_ID)
        .unwrap()
        .parse()
        .unwrap();
    assert!(fresh_id > newest, "ids go on above the restored ones");
    assert_eq!(restored_worker.terminate().await.code(), Some(0));

    // A damaged snapshot loads nothing.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    let damaged = backups.path().join("damaged.snap");
    std::fs::write(&damaged, bytes).unwrap();
    let target = restored_dir.path().join("from-damaged");
    let refused = worker_command(&[
        "restore",
        "--from",
        damaged.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ])
    .await;
    assert!(!refused.status.success());
    assert!(!target.exists());
}

/// `POST /backup` names a file in the backup directory, nothing else: paths are refused
/// whatever they point at; without `--backup-dir` backups are off; with a token, only a
/// request that presents it gets one.
#[tokio::test]
async fn the_admin_listener_writes_only_into_the_backup_directory() {
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let admin_without = format!("127.0.0.1:{}", free_port());
    let data_without = dir.path().join("without");
    let without = start_worker_process(
        &url,
        &data_without,
        &["--admin-listen", &admin_without, "--events", "off"],
    )
    .await;
    let off = HttpClient::new(admin_without.parse().unwrap());
    let refused = off.send(backup_request(&off, "any.snap", None)).await;
    assert_eq!(refused.status, 403, "backups are off without --backup-dir");
    assert!(
        String::from_utf8_lossy(&refused.body).contains("--backup-dir"),
        "{:?}",
        refused.body
    );
    assert_eq!(without.terminate().await.code(), Some(0));

    let backup_dir = dir.path().join("backups");
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "0123456789abcdef-admin-token\n").unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let worker = start_worker_process(
        &url,
        &dir.path().join("data"),
        &[
            "--admin-listen",
            &admin,
            "--backup-dir",
            backup_dir.to_str().unwrap(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .await;
    let client = HttpClient::new(admin.parse().unwrap());
    let token = Some("0123456789abcdef-admin-token");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for (description, name, presented, status) in [
        ("no token", "a.snap", None, 401),
        ("a wrong token", "a.snap", Some("not-the-admin-token"), 401),
        ("an absolute path", victim.to_str().unwrap(), token, 400),
        ("a path up and out", "../victim", token, 400),
        ("a path into a subdirectory", "sub/a.snap", token, 400),
        ("a hidden name", ".a.snap", token, 400),
        ("an empty name", "", token, 400),
        ("a name, with the token", "a.snap", token, 200),
        ("the same name again", "a.snap", token, 409),
    ] {
        let response = client.send(backup_request(&client, name, presented)).await;
        assert_eq!(
            response.status, status,
            "{description}: {:?}",
            response.body
        );
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let mut written: Vec<String> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["a.snap"], "one backup, no partial file left");
    // The command sends the token from its file.
    let output = worker_command(&[
        "backup",
        "--admin-url",
        &format!("http://{admin}"),
        "--name",
        "b.snap",
        "--token-file",
        token_file.to_str().unwrap(),
    ])
    .await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(worker.terminate().await.code(), Some(0));
}

/// `POST /backup` with `name` as the body, and `Authorization: Bearer {token}` when given.
fn backup_request(
    client: &HttpClient,
    name: &str,
    token: Option<&str>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut request = client.request("POST", "/backup");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            name.to_owned(),
        )))
        .unwrap()
}
