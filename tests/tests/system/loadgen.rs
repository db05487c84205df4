//! `customers-loadgen` against a real stack: both targets, both loop shapes, duplicates and
//! the echo responder, each checked through the JSON summary it prints.

use customers_tests::{ServiceProcess, spawn_app, workspace_binary};
use serde_json::Value;

async fn loadgen(args: &[&str]) -> Value {
    let output = tokio::process::Command::new(workspace_binary("customers-loadgen"))
        .arg("run")
        .args(args)
        .args(["--warmup", "0s", "--duration", "1s", "--json"])
        .output()
        .await
        .expect("run customers-loadgen");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON summary")
}

fn count(summary: &Value, status: &str) -> u64 {
    summary["statuses"][status].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drives_http_and_nats_in_closed_and_open_loops() {
    let _alone = customers_tests::exclusive().await;
    let app = spawn_app().await;
    let url = format!("http://{}", app.ingress.addr);
    let key = app.ingress.api_key.clone().expect("a minted key");
    let nats = app.nats.url();

    let http = loadgen(&["--url", &url, "--api-key", &key, "--concurrency", "4"]).await;
    assert!(
        count(&http, "201") > 0 && count(&http, "201") == http["requests"].as_u64().unwrap(),
        "{http}"
    );
    for key in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(
            http["latency_ms"][key].as_f64().unwrap() > 0.0,
            "{key}: {http}"
        );
    }

    let direct = loadgen(&["--nats-url", &nats, "--concurrency", "4"]).await;
    assert!(
        count(&direct, "201") > 0 && count(&direct, "201") == direct["requests"].as_u64().unwrap(),
        "{direct}"
    );

    // An open loop sends at its intended times whatever the machine does (a late send is
    // late, not skipped), so 1 s at 200/s is exactly 200 requests.
    let open = loadgen(&["--url", &url, "--api-key", &key, "--rate", "200"]).await;
    assert_eq!(open["requests"].as_u64(), Some(200), "{open}");
    assert_eq!(count(&open, "201"), 200, "{open}");

    let duplicates = loadgen(&[
        "--url",
        &url,
        "--api-key",
        &key,
        "--concurrency",
        "2",
        "--duplicate-ratio",
        "0.5",
    ])
    .await;
    assert!(
        count(&duplicates, "409") > 0 && count(&duplicates, "201") > 0,
        "{duplicates}"
    );
    assert_eq!(
        count(&duplicates, "400"),
        0,
        "generated customers are valid: {duplicates}"
    );
}

#[tokio::test]
async fn echo_responder_answers_like_a_worker() {
    let nats = customers_tests::NatsServer::start();
    let url = nats.url();
    let _echo = ServiceProcess::start(
        "customers-loadgen",
        &["echo", "--nats-url", &url],
        "echo responder serving",
    )
    .await;
    let summary = loadgen(&["--nats-url", &url, "--concurrency", "4"]).await;
    assert!(count(&summary, "201") > 0, "{summary}");
}
