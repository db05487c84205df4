//! NATS authentication and TLS for both binaries, against a nats-server configured for them:
//! with the right settings a create goes through end to end; with wrong or missing ones the
//! worker refuses to start with a clear error.

use std::path::{Path, PathBuf};

use customers_shared::runtime::nats::NatsOptions;
use customers_tests::{HttpClient, NatsServer, TestIngress, TestWorker, customer_with_email};
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
    HttpClient::new(ingress.addr)
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
