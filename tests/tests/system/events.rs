//! `customer.created` events (docs/API.md §8): one CloudEvent per stored customer on the
//! `CUSTOMERS_EVENTS` stream, none for a refused create; the stream made when missing and
//! otherwise left alone; no start without JetStream unless events are off; a JetStream outage
//! that neither fails creates nor loses events, with a bounded outbox; exactly one event per
//! customer after kill -9 of the worker under load and a broker restart; the example consumer;
//! the AsyncAPI document.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use customers_shared::wire::event::{self, DEFAULT_STREAM};
use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::events::{first_events, stored_count};
use customers_tests::ledger::Load;
use customers_tests::subject;
use customers_tests::{
    HttpClient, KillMoments, NatsServer, PATIENCE, ServiceProcess, TestIngress, TestWorker,
    customer_with_email, nats_header, spawn_app, start_worker_process, workspace_binary,
};
use futures_util::StreamExt;
use serde_json::Value;

#[tokio::test]
async fn each_stored_customer_gets_one_cloudevent_and_a_refused_create_none() {
    let app = spawn_app().await;
    let one = app
        .http
        .create(&customer_with_email("one@events.example.com"))
        .await;
    let keyed = customer_with_email("two@events.example.com");
    let two = app.http.create_idempotent(&keyed, "events-key").await;
    let replay = app.http.create_idempotent(&keyed, "events-key").await;
    let conflict = app
        .http
        .create(&customer_with_email("ONE@events.example.com"))
        .await;
    let invalid = app.http.create(r#"{"name":"","email":"x"}"#).await;
    let three = app
        .nats_create(customer_with_email("three@events.example.com"))
        .await;
    assert_eq!(
        [
            one.status,
            two.status,
            replay.status,
            conflict.status,
            invalid.status
        ],
        [201, 201, 201, 409, 400]
    );
    assert_eq!(replay.header("Idempotent-Replayed"), Some("true"));
    assert_eq!(nats_header(&three, headers::SERVICE_ERROR_CODE), None);

    // Commit order: a refused create's event, had there been one, would come before three's.
    let events = first_events(&app.nats_client, 3).await;
    let bodies = [&one.body[..], &two.body[..], &three.payload[..]];
    for (event, body) in events.iter().zip(bodies) {
        let customer: Value = serde_json::from_slice(body).unwrap();
        let id = customer["id"].as_str().unwrap();
        let e = &event.event;
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "customer.created");
        assert_eq!(e["source"], "/customers");
        assert_eq!(e["id"], format!("customer.created:{id}"));
        assert_eq!(e["subject"], id);
        assert_eq!(e["time"], customer["created_at"]);
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(event.message_id, format!("customer.created:{id}"));
        assert_eq!(event.content_type.as_deref(), Some(event::CONTENT_TYPE));
        let payload = std::str::from_utf8(&event.payload).unwrap();
        let data = payload
            .strip_suffix('}')
            .and_then(|p| p.split_once(r#""data":"#))
            .map(|(_, data)| data)
            .unwrap();
        assert_eq!(data.as_bytes(), body, "data is the 201 body, byte for byte");
    }
    assert_eq!(
        stored_count(&app.nats_client).await,
        3,
        "no event for the refusals"
    );
}

async fn stream_config(js: &jetstream::Context) -> stream::Config {
    let mut events = js.get_stream(DEFAULT_STREAM).await.unwrap();
    events.info().await.unwrap().config.clone()
}

#[tokio::test]
async fn the_stream_is_made_when_missing_and_otherwise_left_as_configured() {
    // Missing: the worker makes it from its settings.
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let worker = TestWorker::start(&nats.url(), data_dir.path()).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let made = stream_config(&js).await;
    assert_eq!(made.subjects, ["customers.v1.events.>"]);
    assert_eq!(made.storage, stream::StorageType::File);
    assert_eq!(made.retention, stream::RetentionPolicy::Limits);
    assert_eq!(made.num_replicas, 1);
    assert_eq!(made.duplicate_window, Duration::from_secs(120));
    worker.stop().await;

    // Configured by the operator: used as it is, through a restart of the worker.
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let operators = stream::Config {
        name: DEFAULT_STREAM.into(),
        subjects: vec!["customers.v1.events.>".into(), "audit.>".into()],
        retention: stream::RetentionPolicy::Interest,
        max_age: Duration::from_secs(3600),
        max_messages: 1000,
        duplicate_window: Duration::from_secs(300),
        ..Default::default()
    };
    js.create_stream(operators.clone()).await.unwrap();
    let before = stream_config(&js).await;
    for _ in 0..2 {
        let data_dir = tempfile::tempdir().unwrap();
        TestWorker::start(&nats.url(), data_dir.path())
            .await
            .stop()
            .await;
    }
    let after = stream_config(&js).await;
    assert_eq!(
        serde_json::to_value(&after).unwrap(),
        serde_json::to_value(&before).unwrap(),
        "the worker changed nothing"
    );

    // A stream of that name that does not capture the events subject: a clear refusal.
    js.create_stream(stream::Config {
        name: "ELSEWHERE".into(),
        subjects: vec!["elsewhere.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut config = customers_worker::Config::new(nats.url(), tempfile::tempdir().unwrap().path());
    config.events.stream = "ELSEWHERE".into();
    let refused = customers_worker::Worker::start(config)
        .await
        .err()
        .expect("refused");
    assert!(
        refused
            .to_string()
            .contains("does not capture customers.v1.events.created"),
        "{refused}"
    );
}

#[tokio::test]
async fn without_jetstream_the_worker_refuses_to_start_unless_events_are_off() {
    let nats = NatsServer::start_without_jetstream();
    let data_dir = tempfile::tempdir().unwrap();
    let data = data_dir.path().to_str().unwrap();
    let output = tokio::process::Command::new(workspace_binary("customers-worker"))
        .args(["--nats-url", &nats.url(), "--data-dir", data])
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("JetStream is not available") && stderr.contains("--events off"),
        "{stderr}"
    );

    let worker = ServiceProcess::start_with_env(
        "customers-worker",
        &["--nats-url", &nats.url(), "--data-dir", data],
        &[("CUSTOMERS_EVENTS", "off")],
        "serving",
    )
    .await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let reply = client
        .request(
            subject(Endpoint::Create),
            customer_with_email("off@events.example.com").into(),
        )
        .await
        .unwrap();
    assert!(
        nats_header(&reply, headers::CUSTOMER_ID).is_some(),
        "created"
    );
    assert_eq!(worker.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn customers_stored_while_events_were_off_get_none_when_events_are_switched_on() {
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let create = |email: &'static str| {
        let client = client.clone();
        async move {
            let reply = client
                .request(subject(Endpoint::Create), customer_with_email(email).into())
                .await
                .unwrap();
            nats_header(&reply, headers::CUSTOMER_ID)
                .unwrap()
                .to_owned()
        }
    };
    let mut config = customers_worker::Config::new(nats.url(), data_dir.path());
    config.events.mode = customers_worker::config::EventsMode::Off;
    let quiet = TestWorker::start_with(config).await;
    create("before1@switch.example.com").await;
    create("before2@switch.example.com").await;
    quiet.stop().await;

    let worker = TestWorker::start(&nats.url(), data_dir.path()).await;
    let first = create("after1@switch.example.com").await;
    let second = create("after2@switch.example.com").await;
    let events = first_events(&client, 2).await;
    let relayed: Vec<&str> = events.iter().map(|e| e.customer_id()).collect();
    assert_eq!(relayed, [first.as_str(), second.as_str()]);
    assert_eq!(stored_count(&client).await, 2);
    worker.stop().await;
}

/// A create over NATS, sent again until a worker answers (after a broker restart, the worker
/// reconnects in its own time).
async fn create_when_served(client: &async_nats::Client, email: &str) -> async_nats::Message {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(reply) = client
                .request(subject(Endpoint::Create), customer_with_email(email).into())
                .await
            {
                return reply;
            }
        }
    })
    .await
    .expect("a worker answers")
}

/// Waits until `series` on `admin`'s metrics is `value`.
async fn metric_reaches(admin: &HttpClient, series: &str, value: f64) {
    tokio::time::timeout(PATIENCE, async {
        while admin.metric(series).await != value {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{series} did not reach {value}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_outage_neither_fails_creates_nor_loses_events() {
    let _alone = customers_tests::exclusive().await;
    const BOUND: usize = 15;
    let mut nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = customers_worker::Config::new(nats.url(), data_dir.path());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    config.events.max_pending = BOUND;
    let worker = TestWorker::start_with(config).await;
    let admin = HttpClient::new(worker.admin_addr.unwrap());
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(create_when_served(&client, &format!("before{n}@outage.example.com")).await);
    }
    first_events(&client, 5).await;

    // JetStream gone, core NATS back: every create within the bound is stored and answered.
    nats.restart_with_jetstream(false);
    for n in 0..BOUND {
        let reply = create_when_served(&client, &format!("during{n}@outage.example.com")).await;
        assert_eq!(
            nats_header(&reply, headers::SERVICE_ERROR_CODE),
            None,
            "create {n}"
        );
        created.push(reply);
    }
    let refused = create_when_served(&client, "over@outage.example.com").await;
    assert_eq!(
        nats_header(&refused, headers::SERVICE_ERROR_CODE),
        Some("503")
    );
    assert_eq!(nats_header(&refused, headers::RETRY_AFTER), Some("5"));
    assert_eq!(
        admin.metric("customers_worker_events_pending").await,
        BOUND as f64
    );
    assert!(
        admin
            .metric("customers_worker_oldest_pending_event_age_seconds")
            .await
            > 0.0
    );
    assert!(
        admin
            .metric("customers_worker_event_publish_failures_total")
            .await
            >= 1.0
    );

    // JetStream back: the outbox drains, in order, and creates are taken again.
    nats.restart_with_jetstream(true);
    let events = first_events(&client, 5 + BOUND).await;
    let ids = |replies: &[async_nats::Message]| -> Vec<String> {
        replies
            .iter()
            .map(|r| nats_header(r, headers::CUSTOMER_ID).unwrap().to_owned())
            .collect()
    };
    let relayed: Vec<String> = events.iter().map(|e| e.customer_id().to_owned()).collect();
    assert_eq!(relayed, ids(&created));
    metric_reaches(&admin, "customers_worker_events_pending", 0.0).await;
    assert_eq!(
        admin
            .metric("customers_worker_oldest_pending_event_age_seconds")
            .await,
        0.0
    );
    let after = create_when_served(&client, "over@outage.example.com").await;
    assert_eq!(nats_header(&after, headers::SERVICE_ERROR_CODE), None);
    first_events(&client, 6 + BOUND).await;
    assert_eq!(stored_count(&client).await, 6 + BOUND as u64);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_event_per_customer_after_kill_9_under_load_and_a_broker_restart() {
    let _alone = customers_tests::exclusive().await;
    const KILLS: usize = 5;
    let mut nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.request_timeout = Duration::from_millis(1000);
    let ingress = TestIngress::start_with(ingress_config).await;
    let load = Load::start(&ingress.http(), 16, "events");
    let mut moments = KillMoments::seeded();
    for round in 0..KILLS {
        let worker =
            start_worker_process(&url, data_dir.path(), &["--checkpoint-bytes", "65536"]).await;
        load.wait_for_acknowledged(load.acknowledged() + 50 + moments.below(300) as usize)
            .await;
        if round == KILLS / 2 {
            // The broker too, under load: events in flight get no acknowledgement.
            nats.restart();
            load.wait_for_acknowledged(load.acknowledged() + 50).await;
        }
        worker.kill().await;
    }
    let ledger = load.stop().await;

    let mut config = customers_worker::Config::new(&url, data_dir.path());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let worker = TestWorker::start_with(config).await;
    let admin = HttpClient::new(worker.admin_addr.unwrap());
    let client = async_nats::connect(&url).await.unwrap();
    let verdict = ledger.verify(&client).await;
    verdict.assert_nothing_lost();
    metric_reaches(&admin, "customers_worker_events_pending", 0.0).await;

    let held = customers_tests::events::assert_one_event_per_change(&client, &verdict).await;
    customers_tests::report(&format!(
        "kills: {KILLS}, broker restarts: 1, customers: {}, events in the stream: {held}, {verdict}",
        verdict.customers.len()
    ));
    worker.stop().await;
}

#[tokio::test]
async fn the_example_consumer_reads_with_a_durable_consumer_resumes_and_replays() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let created = app
            .http
            .create(&customer_with_email(&format!("c{n}@consumer.example.com")))
            .await;
        ids.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    first_events(&app.nats_client, 4).await;
    let consume = |args: Vec<String>| {
        let url = app.nats.url();
        async move {
            let child =
                tokio::process::Command::new(workspace_binary("examples/consume_customer_events"))
                    .arg("--nats-url")
                    .arg(url)
                    .args(args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap();
            let pid = child.id().unwrap();
            let output = match tokio::time::timeout(PATIENCE, child.wait_with_output()).await {
                Ok(output) => output.unwrap(),
                Err(_) => {
                    std::process::Command::new("kill")
                        .arg(pid.to_string())
                        .status()
                        .unwrap();
                    panic!("the example did not stop after --max-events");
                }
            };
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .map(|line| line.split(' ').take(3).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
        }
    };
    let line = |sequence: usize| {
        let id = &ids[sequence - 1];
        format!("{sequence} customer.created:{id} {id}")
    };
    // A start that is not a time says what it wants.
    let not_a_time =
        tokio::process::Command::new(workspace_binary("examples/consume_customer_events"))
            .args(["--from-time", "yesterday"])
            .output()
            .await
            .unwrap();
    let stderr = String::from_utf8_lossy(&not_a_time.stderr);
    assert!(!not_a_time.status.success());
    assert!(
        stderr.contains("invalid value 'yesterday' for '--from-time <FROM_TIME>': expected an RFC 3339 time such as 2026-11-29T00:00:00Z"),
        "{stderr}"
    );
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    assert_eq!(
        consume(args(&["--durable", "billing", "--max-events", "3"])).await,
        [line(1), line(2), line(3)]
    );
    assert_eq!(
        consume(args(&["--durable", "billing", "--max-events", "1"])).await,
        [line(4)],
        "the durable consumer resumes after what it acknowledged"
    );
    assert_eq!(
        consume(args(&[
            "--durable",
            "replay",
            "--from-sequence",
            "2",
            "--max-events",
            "3"
        ]))
        .await,
        [line(2), line(3), line(4)]
    );
    assert_eq!(
        consume(args(&[
            "--durable",
            "since",
            "--from-time",
            "2000-01-01T00:00:00Z",
            "--max-events",
            "4"
        ]))
        .await,
        [line(1), line(2), line(3), line(4)]
    );
}

#[tokio::test]
async fn the_asyncapi_document_is_valid_asyncapi_3_and_served_beside_openapi() {
    let app = spawn_app().await;
    let served = app.http.get("/api/v1/asyncapi.json").await;
    assert_eq!(served.status, 200);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let committed: Value =
        serde_json::from_slice(&std::fs::read(root.join("docs/asyncapi.json")).unwrap()).unwrap();
    assert_eq!(served.json(), committed);

    // Validated against the AsyncAPI 3.0.0 JSON Schema (tests/schemas/, from the AsyncAPI
    // project) with the validator schemathesis brings.
    let st = std::env::var_os("SCHEMATHESIS_BIN")
        .map(std::path::PathBuf::from)
        .expect("SCHEMATHESIS_BIN is not set; run the tests with the README's test command");
    let python_path = st.parent().and_then(|bin| bin.parent()).unwrap().to_owned();
    let output = std::process::Command::new("python3")
        .env("PYTHONPATH", python_path)
        .arg("-c")
        .arg(
            "import json, sys, jsonschema_rs\n\
             schema = json.load(open(sys.argv[1])); document = json.load(open(sys.argv[2]))\n\
             errors = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(document)]\n\
             print(len(errors)); print('\\n'.join(errors[:5]))\n\
             sys.exit(1 if errors else 0)",
        )
        .arg(root.join("tests/schemas/asyncapi-3.0.0.json"))
        .arg(root.join("docs/asyncapi.json"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "not valid AsyncAPI 3.0: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A change over NATS (update or delete of `id`), sent again until a worker answers.
async fn change_when_served(
    client: &async_nats::Client,
    endpoint: Endpoint,
    id: &str,
    payload: &'static str,
) -> async_nats::Message {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let mut map = async_nats::HeaderMap::new();
            map.insert(headers::CUSTOMER_ID, id);
            if let Ok(reply) = client
                .request_with_headers(subject(endpoint), map, payload.into())
                .await
            {
                return reply;
            }
        }
    })
    .await
    .expect("a worker answers")
}

/// The `data` member of an event as published, byte for byte.
fn data_of(payload: &[u8]) -> &[u8] {
    let text = std::str::from_utf8(payload).unwrap();
    let (_, data) = text.split_once(r#""data":"#).unwrap();
    data.strip_suffix('}').unwrap().as_bytes()
}

#[tokio::test]
async fn each_change_gives_one_event_on_its_customers_subject_and_a_delete_erases_the_earlier_ones()
{
    let app = spawn_app().await;
    let mut published = app
        .nats_client
        .subscribe("customers.v1.events.>")
        .await
        .unwrap();
    app.nats_client.flush().await.unwrap();
    // Each change's event is awaited before the next change: a delete erases its customer's
    // events that are still pending, unpublished (the next test).
    let mut messages = Vec::new();
    macro_rules! next_event {
        () => {
            messages.push(
                tokio::time::timeout(PATIENCE, published.next())
                    .await
                    .expect("the change's event is published")
                    .unwrap(),
            )
        };
    }
    let created = app
        .http
        .create(&customer_with_email("life@events.example.com"))
        .await;
    next_event!();
    let customer = created.json();
    let id = customer["id"].as_str().unwrap().to_owned();
    let renamed = app.http.patch(&id, r#"{"name":"Renamed"}"#, &[]).await;
    next_event!();
    let unchanged = app.http.patch(&id, r#"{"name":"Renamed"}"#, &[]).await;
    let moved = app
        .http
        .patch(
            &id,
            r#"{"email":"moved@events.example.com","custom_data":{"k":1}}"#,
            &[],
        )
        .await;
    next_event!();
    let deleted = app.http.delete(&id, &[]).await;
    next_event!();
    assert_eq!(
        [
            renamed.status,
            unchanged.status,
            moved.status,
            deleted.status
        ],
        [200, 200, 200, 200]
    );
    let other = app
        .http
        .create(&customer_with_email("stays@events.example.com"))
        .await;
    next_event!();
    let other_id = other.json()["id"].as_str().unwrap().to_owned();

    // Four changes of the first customer (none for the patch that changed nothing), then the
    // second's creation.
    let subjects: Vec<String> = messages.iter().map(|m| m.subject.to_string()).collect();
    assert_eq!(
        subjects,
        [
            format!("customers.v1.events.created.{id}"),
            format!("customers.v1.events.updated.{id}"),
            format!("customers.v1.events.updated.{id}"),
            format!("customers.v1.events.deleted.{id}"),
            format!("customers.v1.events.created.{other_id}"),
        ]
    );
    let events: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let renamed_customer = renamed.json();
    assert_eq!(events[1]["type"], "customer.updated");
    assert_eq!(events[1]["id"], format!("customer.updated:{id}:2"));
    assert_eq!(events[1]["subject"], id.as_str());
    assert_eq!(events[1]["time"], renamed_customer["updated_at"]);
    let data = data_of(&messages[1].payload);
    let expected = format!(
        r#"{{"customer":{},"previous_attributes":{{"name":"Test Customer","updated_at":{}}}}}"#,
        String::from_utf8_lossy(&renamed.body),
        customer["updated_at"]
    );
    assert_eq!(
        String::from_utf8_lossy(data),
        expected,
        "the 200 body, byte for byte"
    );
    assert_eq!(events[2]["id"], format!("customer.updated:{id}:3"));
    assert_eq!(
        events[2]["data"]["previous_attributes"],
        serde_json::json!({
            "email": "life@events.example.com",
            "updated_at": renamed_customer["updated_at"],
            "custom_data": null,
        })
    );
    assert_eq!(events[2]["data"]["customer"], moved.json());
    let erased = &events[3];
    assert_eq!(erased["type"], "customer.deleted");
    assert_eq!(erased["id"], format!("customer.deleted:{id}"));
    let deleted_at = erased["data"]["deleted_at"].as_str().unwrap();
    assert_eq!(
        erased["data"],
        serde_json::json!({"id": id, "deleted": true, "deleted_at": deleted_at})
    );
    assert_eq!(erased["time"], deleted_at);
    let text = String::from_utf8_lossy(&messages[3].payload);
    assert!(
        !text.contains("events.example.com") && !text.contains("Renamed"),
        "{text}"
    );

    // In the stream, the deleted customer's earlier events are gone before its deletion's.
    let kept = first_events(&app.nats_client, 2).await;
    let kept: Vec<&str> = kept.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(
        kept,
        [
            format!("customer.deleted:{id}"),
            format!("customer.created:{other_id}")
        ]
    );
    assert_eq!(stored_count(&app.nats_client).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_while_jetstream_is_down_erases_its_customers_pending_events_unpublished() {
    let _alone = customers_tests::exclusive().await;
    let mut nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = customers_worker::Config::new(nats.url(), data_dir.path());
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let worker = TestWorker::start_with(config).await;
    let admin = HttpClient::new(worker.admin_addr.unwrap());
    let client = async_nats::connect(nats.url()).await.unwrap();
    let published = create_when_served(&client, "published@outage.example.com").await;
    let published_id = nats_header(&published, headers::CUSTOMER_ID)
        .unwrap()
        .to_owned();
    first_events(&client, 1).await;

    nats.restart_with_jetstream(false);
    let updated = change_when_served(&client, Endpoint::Update, &published_id, r#"{"name":"P"}"#);
    assert_eq!(
        nats_header(&updated.await, headers::SERVICE_ERROR_CODE),
        None
    );
    let pending = create_when_served(&client, "pending@outage.example.com").await;
    let pending_id = nats_header(&pending, headers::CUSTOMER_ID)
        .unwrap()
        .to_owned();
    let renamed = change_when_served(&client, Endpoint::Update, &pending_id, r#"{"name":"Q"}"#);
    assert_eq!(
        nats_header(&renamed.await, headers::SERVICE_ERROR_CODE),
        None
    );
    let kept = create_when_served(&client, "kept@outage.example.com").await;
    let kept_id = nats_header(&kept, headers::CUSTOMER_ID).unwrap().to_owned();
    for id in [&published_id, &pending_id] {
        let deleted = change_when_served(&client, Endpoint::Delete, id, "").await;
        assert_eq!(nats_header(&deleted, headers::SERVICE_ERROR_CODE), None);
    }
    assert_eq!(
        admin.metric("customers_worker_events_pending").await,
        3.0,
        "the deleted customers' events left the outbox with them"
    );

    nats.restart_with_jetstream(true);
    metric_reaches(&admin, "customers_worker_events_pending", 0.0).await;
    let events = first_events(&client, 3).await;
    let ids: Vec<&str> = events.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            format!("customer.created:{kept_id}"),
            format!("customer.deleted:{published_id}"),
            format!("customer.deleted:{pending_id}"),
        ],
        "nothing of the deleted customers but their deletion"
    );
    assert_eq!(stored_count(&client).await, 3);
    assert_eq!(
        admin.metric("customers_worker_events_erased_total").await,
        1.0
    );
    worker.stop().await;
}
