//! NATS authentication, TLS and permissions for both binaries, against a nats-server
//! configured for them: with the right settings a create goes through end to end; with wrong
//! or missing ones the worker refuses to start with a clear error; with the deployed
//! permissions (deploy/nats-authorization.conf) each role may do its job and nothing more.

use std::path::{Path, PathBuf};
use std::time::Duration;

use customers_shared::runtime::nats::NatsOptions;
use customers_shared::wire::protocol::headers;
use customers_tests::{
    NatsServer, PATIENCE, TestIngress, TestWorker, assert_found_over_nats, customer_with_email,
    nats_header,
};
use futures_util::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a test file");
    path
}

/// Starts worker and ingress with `nats` settings and creates one customer over HTTP.
async fn create_through(nats: &NatsOptions, email: &str) -> u16 {
    let data_dir = tempfile::tempdir().unwrap();
    let mut worker_config = customers_worker::Config::new(&nats.url, data_dir.path());
    worker_config.nats = nats.clone();
    let _worker = TestWorker::start_with(worker_config).await;
    let mut ingress_config = customers_ingress::Config::new(&nats.url);
    ingress_config.nats = nats.clone();
    let ingress = TestIngress::start_with(ingress_config).await;
    ingress
        .http()
        .create(&customer_with_email(email))
        .await
        .status
}

/// Why a worker with `nats` settings cannot start.
async fn refusal(nats: NatsOptions) -> String {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = customers_worker::Config::new(&nats.url, data_dir.path());
    config.nats = nats;
    customers_worker::Worker::start(config)
        .await
        .err()
        .expect("the worker must not start")
        .to_string()
}

#[tokio::test]
async fn user_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "auth.conf",
        "authorization { user: customers, password: \"s3cret pass\" }\n",
    );
    let server = NatsServer::start_with_config(&config);
    let mut nats = NatsOptions::new(server.url());
    nats.user = Some("customers".to_owned());
    nats.password = Some("s3cret pass".to_owned());
    assert_eq!(create_through(&nats, "auth@example.com").await, 201);

    nats.password = Some("wrong".to_owned());
    let error = refusal(nats.clone()).await;
    assert!(
        error.contains("cannot connect to NATS") && error.contains("authorization"),
        "{error}"
    );
    nats.user = None;
    nats.password = None;
    let error = refusal(nats).await;
    assert!(error.contains("authorization"), "{error}");
}

#[tokio::test]
async fn token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "token.conf", "authorization { token: t0k3n }\n");
    let server = NatsServer::start_with_config(&config);
    let mut nats = NatsOptions::new(server.url());
    nats.token = Some("t0k3n".to_owned());
    assert_eq!(create_through(&nats, "token@example.com").await, 201);
    nats.token = Some("other".to_owned());
    let error = refusal(nats).await;
    assert!(error.contains("authorization"), "{error}");
}

#[tokio::test]
async fn mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let signed = |names: &[&str]| {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = signed(&["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = signed(&["customers-client"]);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let server_cert = write(dir.path(), "server.pem", &server_cert);
    let server_key = write(dir.path(), "server-key.pem", &server_key);
    let config = write(
        dir.path(),
        "tls.conf",
        &format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 2\n}}\n",
            server_cert, server_key, ca_file
        ),
    );
    let server = NatsServer::start_with_config(&config);

    let mut nats = NatsOptions::new(server.url());
    nats.tls_required = true;
    nats.tls_ca = Some(ca_file);
    nats.tls_cert = Some(write(dir.path(), "client.pem", &client_cert));
    nats.tls_key = Some(write(dir.path(), "client-key.pem", &client_key));
    assert_eq!(create_through(&nats, "tls@example.com").await, 201);

    // The server verifies clients: without a client certificate the worker cannot start.
    nats.tls_cert = None;
    nats.tls_key = None;
    let error = refusal(nats).await;
    assert!(error.contains("cannot connect to NATS"), "{error}");
}

/// A client of the permissions server as `user`, with its inbox prefix, and the events its
/// connection reports (permission violations among them).
async fn client_as(
    url: &str,
    user: &str,
    password: &str,
    inbox_prefix: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (sender, events) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox_prefix)
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(event.to_string());
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    (client, events)
}

/// Waits for the server to report a permission violation naming `subject`.
async fn violation(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) {
    tokio::time::timeout(PATIENCE, async {
        while let Some(event) = events.recv().await {
            if event.to_lowercase().contains("permissions violation") && event.contains(subject) {
                return;
            }
        }
        panic!("the connection closed without a violation");
    })
    .await
    .unwrap_or_else(|_| panic!("no permission violation for {subject}"));
}

/// A nats-server on the deployed configuration with users and permissions
/// (`deploy/nats-server-secure.conf`), its passwords set.
fn deployed_server() -> NatsServer {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats-server-secure.conf");
    let passwords = [
        ("CUSTOMERS_INGRESS_NATS_PASSWORD", "ingress-secret"),
        ("CUSTOMERS_WORKER_NATS_PASSWORD", "worker-secret"),
        ("BILLING_NATS_PASSWORD", "billing-secret"),
        ("REPORTING_NATS_PASSWORD", "reporting-secret"),
    ];
    NatsServer::start_with_config_and_env(&config, &passwords)
}

#[tokio::test]
async fn each_nats_role_may_do_only_its_job() {
    let server = deployed_server();
    let url = server.url();
    let role = |user: &str, password: &str, inbox: &str| {
        let mut nats = NatsOptions::new(&url);
        nats.user = Some(user.to_owned());
        nats.password = Some(password.to_owned());
        nats.inbox_prefix = inbox.to_owned();
        nats
    };

    // The deployed roles suffice for the service: an HTTP create and a readiness ping.
    let data_dir = tempfile::tempdir().unwrap();
    let mut worker_config = customers_worker::Config::new(&url, data_dir.path());
    worker_config.nats = role(
        "customers-worker",
        "worker-secret",
        "_INBOX_customers_worker",
    );
    let _worker = TestWorker::start_with(worker_config).await;
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.nats = role(
        "customers-ingress",
        "ingress-secret",
        "_INBOX_customers_ingress",
    );
    let ingress = TestIngress::start_with(ingress_config).await;
    let http = ingress.http();
    assert_eq!(
        http.create(&customer_with_email("via-http@example.com"))
            .await
            .status,
        201
    );
    assert_eq!(http.get("/readyz").await.status, 200);

    // A service granted creates may create.
    let (billing, _) = client_as(&url, "billing", "billing-secret", "_INBOX_billing").await;
    let created = billing
        .request(
            "customers.v1.create",
            customer_with_email("via-billing@example.com").into(),
        )
        .await
        .expect("a reply");
    assert_eq!(nats_header(&created, headers::SERVICE_ERROR_CODE), None);

    // A reader may read, and nothing else.
    let (reporting, mut events) =
        client_as(&url, "reporting", "reporting-secret", "_INBOX_reporting").await;
    let page = reporting
        .request("customers.v1.list", r#"{"limit":"5"}"#.into())
        .await
        .expect("a reply");
    assert_eq!(nats_header(&page, headers::SERVICE_ERROR_CODE), None);
    reporting
        .publish(
            "customers.v1.create",
            customer_with_email("via-reporting@example.com").into(),
        )
        .await
        .unwrap();
    violation(&mut events, "customers.v1.create").await;
    for change in ["customers.v1.update", "customers.v1.delete"] {
        reporting.publish(change, "{}".into()).await.unwrap();
        violation(&mut events, change).await;
    }
    // Nor may it take the worker's place, or read other clients' replies.
    let _stolen = reporting.subscribe("customers.v1.create").await.unwrap();
    violation(&mut events, "customers.v1.create").await;
    let _snooped = reporting.subscribe("_INBOX_billing.>").await.unwrap();
    violation(&mut events, "_INBOX_billing.>").await;

    // Events: a reader consumes them with its own durable consumer, but may neither forge
    // one nor use another service's consumer.
    let stream = async_nats::jetstream::new(reporting.clone())
        .get_stream(customers_shared::wire::event::DEFAULT_STREAM)
        .await
        .expect("the reader may look up the events stream");
    let durable = |name: &str| async_nats::jetstream::consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: "customers.v1.events.created.*".into(),
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer("reporting", durable("reporting"))
        .await
        .expect("its own durable consumer");
    let mut batch = consumer
        .batch()
        .max_messages(2)
        .expires(PATIENCE)
        .messages()
        .await
        .unwrap();
    let mut subjects = Vec::new();
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        subjects.push(event["data"]["email"].as_str().unwrap().to_owned());
        message.ack().await.unwrap();
    }
    assert_eq!(
        subjects,
        ["via-http@example.com", "via-billing@example.com"]
    );
    let forged = "customers.v1.events.created.cus_01h3vjs3b16yc3f9q8q9pfrb80";
    reporting.publish(forged, "{}".into()).await.unwrap();
    violation(&mut events, forged).await;
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        stream.get_or_create_consumer("billing", durable("billing")),
    )
    .await;
    violation(&mut events, "CUSTOMERS_EVENTS.billing").await;

    let check = billing
        .request(
            "customers.v1.list",
            r#"{"email":"via-reporting@example.com"}"#.into(),
        )
        .await
        .expect("a reply");
    let page: serde_json::Value = serde_json::from_slice(&check.payload).unwrap();
    assert_eq!(page["data"].as_array().map(Vec::len), Some(0), "{page}");

    // The ingress's user may not serve requests either.
    let (ingress_user, mut ingress_events) = client_as(
        &url,
        "customers-ingress",
        "ingress-secret",
        "_INBOX_customers_ingress",
    )
    .await;
    let _serving = ingress_user.subscribe("customers.v1.create").await.unwrap();
    violation(&mut ingress_events, "customers.v1.create").await;

    // Without the password, no connection.
    let refused =
        async_nats::ConnectOptions::with_user_and_password("billing".into(), "wrong".into())
            .connect(&url)
            .await;
    assert!(refused.is_err());
}

/// Options for the deployed server's `user`, with `inbox` as the reply-subject prefix.
fn as_user(url: &str, user: &str, password: &str, inbox: &str) -> NatsOptions {
    let mut nats = NatsOptions::new(url);
    nats.user = Some(user.to_owned());
    nats.password = Some(password.to_owned());
    nats.inbox_prefix = inbox.to_owned();
    nats
}

/// A permission nats-server refuses is named where the operator looks: a start that needs
/// it fails with the server's words (a refused inbox or ping for the ingress, a refused inbox
/// for the worker) instead of carrying on deaf; a refused publish met later is a fast 503
/// and the ingress's readiness says so (its grants, not the worker, are at fault); and the
/// example consumer given another role's durable name stops with the refusal instead of
/// hanging.
#[tokio::test]
async fn a_refused_permission_is_named_instead_of_silence() {
    let server = deployed_server();
    let url = server.url();
    let default_inbox = |user: &str, password: &str| as_user(&url, user, password, "_INBOX");

    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.auth = customers_ingress::config::AuthMode::None;
    ingress_config.nats = default_inbox("customers-ingress", "ingress-secret");
    let error = customers_ingress::Ingress::connect(&ingress_config)
        .await
        .err()
        .expect("an ingress that may not read its replies does not start")
        .to_string();
    assert!(
        error.contains("Permissions Violation for Subscription to") && error.contains("_INBOX."),
        "{error}"
    );
    ingress_config.nats = as_user(&url, "reporting", "reporting-secret", "_INBOX_reporting");
    let error = customers_ingress::Ingress::connect(&ingress_config)
        .await
        .err()
        .expect("an ingress that may not ping the worker does not start")
        .to_string();
    assert!(
        error.contains("Publish to \"$SRV.PING.customers\""),
        "{error}"
    );

    let started = std::time::Instant::now();
    let error = refusal(default_inbox("customers-worker", "worker-secret")).await;
    assert!(
        error.contains("Permissions Violation for Subscription to") && error.contains("_INBOX."),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "at once: {:?}",
        started.elapsed()
    );

    // A worker on its own grants makes the events stream the example reads.
    let data_dir = tempfile::tempdir().unwrap();
    let mut worker_config = customers_worker::Config::new(&url, data_dir.path());
    worker_config.nats = as_user(
        &url,
        "customers-worker",
        "worker-secret",
        "_INBOX_customers_worker",
    );
    let _worker = TestWorker::start_with(worker_config).await;
    let examples = customers_tests::workspace_binary("examples/consume_customer_events");
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(examples)
            .args([
                "--nats-url",
                &url,
                "--nats-user",
                "billing",
                "--nats-password",
            ])
            .args(["billing-secret", "--nats-inbox-prefix", "_INBOX_billing"])
            .args(["--durable", "reporting", "--max-events", "1"])
            .output(),
    )
    .await
    .expect("the example stops instead of hanging")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("nats-server refused this user")
            && stderr.contains("CUSTOMERS_EVENTS.reporting"),
        "{stderr}"
    );
}

/// An ingress whose NATS user may ping and read but not create: its creates are a fast 503
/// naming the refused publish, and its readiness says its own grants are at fault.
#[tokio::test]
async fn a_refused_publish_is_a_fast_503_and_readiness_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "narrow.conf",
        r#"authorization {
  users: [
    {user: worker, password: worker-secret}
    {user: narrow, password: narrow-secret, permissions: {
      publish: ["customers.v1.get", "customers.v1.list", "$SRV.PING.customers"]
      subscribe: ["_INBOX_narrow.>"]
    }}
  ]
}
"#,
    );
    let server = NatsServer::start_with_config(&config);
    let url = server.url();
    let data_dir = tempfile::tempdir().unwrap();
    let mut worker_config = customers_worker::Config::new(&url, data_dir.path());
    worker_config.nats = as_user(&url, "worker", "worker-secret", "_INBOX");
    let _worker = TestWorker::start_with(worker_config).await;
    let mut ingress_config = customers_ingress::Config::new(&url);
    ingress_config.nats = as_user(&url, "narrow", "narrow-secret", "_INBOX_narrow");
    let ingress = TestIngress::start_with(ingress_config).await;
    let http = ingress.http();
    assert_eq!(http.get("/readyz").await.status, 200, "it may ping");
    assert_eq!(http.get("/api/v1/customers").await.status, 200, "and list");
    let started = std::time::Instant::now();
    let created = http
        .create(&customer_with_email("narrow@example.com"))
        .await;
    assert_eq!(created.status, 503, "{:?}", created.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at once, not after the 5 s timeout: {:?}",
        started.elapsed()
    );
    let detail = created.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("Publish to \"customers.v1.create\""),
        "{detail}"
    );
    let ready = http.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["detail"], detail.as_str());
    // The refusal stays fresh while attempts repeat it: the next create is refused at once.
    assert_eq!(
        http.create(&customer_with_email("narrow2@example.com"))
            .await
            .status,
        503
    );
}

/// A replicated worker on the worker role's grants, on the one-server deployment (one replica
/// of the log, the lease and the snapshot bucket), storing a snapshot every 200 ms.
async fn replicated_worker(url: &str, data_dir: &Path) -> TestWorker {
    let mut config = customers_worker::Config::new(url, data_dir);
    let mut nats = NatsOptions::new(url);
    nats.user = Some("customers-worker".into());
    nats.password = Some("worker-secret".into());
    nats.inbox_prefix = "_INBOX_customers_worker".into();
    config.nats = nats;
    config.replication.mode = customers_worker::config::ReplicationMode::Jetstream;
    config.replication.replicas = 1;
    config.replication.snapshot_interval = Duration::from_millis(200);
    TestWorker::start_with(config).await
}

/// Creates a customer as billing (retrying while no instance is the primary yet); its id.
async fn create_as_billing(billing: &async_nats::Client, email: &str) -> String {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let reply = billing
                .request("customers.v1.create", customer_with_email(email).into())
                .await
                .unwrap();
            if let Some(id) = nats_header(&reply, headers::CUSTOMER_ID) {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("one worker is the primary and creates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_workers_run_on_the_deployed_grants() {
    let _alone = customers_tests::exclusive().await;
    let server = deployed_server();
    let url = server.url();
    let data_dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut workers = Vec::new();
    for data_dir in &data_dirs {
        workers.push(replicated_worker(&url, data_dir.path()).await);
    }
    // The primary (log appends, the lease, snapshots, trimming) and the standby (following
    // the log) on the worker role's grants.
    let (billing, _) = client_as(&url, "billing", "billing-secret", "_INBOX_billing").await;
    let (observer, _) = client_as(
        &url,
        "customers-worker",
        "worker-secret",
        "_INBOX_customers_worker",
    )
    .await;
    let log = async_nats::jetstream::new(observer);
    let mut ids = Vec::new();
    // Two snapshots with creates between them: the log is trimmed below the first.
    let trimmed = tokio::time::timeout(PATIENCE, async {
        let mut n = 0;
        loop {
            ids.push(create_as_billing(&billing, &format!("replicated{n}@example.com")).await);
            n += 1;
            let mut stream = log.get_stream("CUSTOMERS_LOG").await.unwrap();
            let first = stream.info().await.unwrap().state.first_sequence;
            if first > 1 {
                return first;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the primary stores snapshots and trims the log");
    // A new instance on an empty disk starts from the snapshot (fetched on the same grants)
    // and then the log; alone, it takes over and finds every customer.
    let third = tempfile::tempdir().unwrap();
    workers.push(replicated_worker(&url, third.path()).await);
    let newest = workers.pop().unwrap();
    for worker in workers {
        worker.stop().await;
    }
    for id in &ids {
        assert_found_over_nats(&billing, id, &format!("log trimmed below {trimmed}")).await;
    }
    newest.stop().await;
}
