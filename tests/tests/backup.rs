//! Single-node backups: `customers-worker backup`, run while creates go on, has the worker
//! write a consistent snapshot; `customers-worker restore` loads it into a new data directory,
//! where a worker then serves every customer the snapshot holds, keeps emails unique and goes
//! on creating. A snapshot is never loaded into a directory in use, nor loaded in part.

use std::collections::HashMap;

use customers_shared::CustomerId;
use customers_shared::wire::protocol::headers;
use customers_tests::ledger::Load;
use customers_tests::{
    NatsServer, TestIngress, customer_with_email, free_port, nats_header, start_worker_process,
    workspace_binary,
};
use customers_worker::store::Store;

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
        .customers_after(None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(id, json)| (id, json.to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_into_a_working_database() {
    let nats = NatsServer::start();
    let url = nats.url();
    let data_dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let worker = start_worker_process(&url, data_dir.path(), &["--admin-listen", &admin]).await;
    let ingress = TestIngress::start(&url).await;
    let load = Load::start(&ingress.http(), 8, "backup");
    load.wait_for_acknowledged(300).await;
    let acknowledged_before = load.acknowledged();

    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("customers.snap");
    let file_arg = file.to_str().unwrap();
    let admin_url = format!("http://{admin}");
    let backup = worker_command(&["backup", "--admin-url", &admin_url, "--out", file_arg]).await;
    assert!(backup.status.success(), "{backup:?}");
    let summary: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    assert!(summary["entries"].as_u64().unwrap() > 0, "{summary}");
    let again = worker_command(&["backup", "--admin-url", &admin_url, "--out", file_arg]).await;
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
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
    // original's, byte for byte, and it holds at least what was acknowledged before it.
    let (snapshot, newest) = {
        let original = customers(&Store::open(data_dir.path(), 16 << 20).unwrap().store);
        let store = Store::open(&restored, 16 << 20).unwrap().store;
        assert!(store.verify().unwrap().is_consistent());
        let snapshot = customers(&store);
        for (id, json) in &snapshot {
            assert_eq!(original.get(id), Some(json), "{id}");
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
    let (id, json) = snapshot.iter().next().unwrap();
    let got = client
        .request("customers.v1.get", id.to_string().into())
        .await
        .unwrap();
    assert_eq!(&got.payload[..], &json[..]);
    let email = serde_json::from_slice::<serde_json::Value>(json).unwrap()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let twice = client
        .request("customers.v1.create", customer_with_email(&email).into())
        .await
        .unwrap();
    assert_eq!(
        nats_header(&twice, headers::SERVICE_ERROR_CODE),
        Some("409")
    );
    let fresh = client
        .request(
            "customers.v1.create",
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
