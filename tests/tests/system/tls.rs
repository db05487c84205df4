//! TLS at the ingress with certificates made in the test: HTTPS with API keys, client
//! certificates (mTLS) granted by the keys file as an alternative to keys, certificate
//! reload without dropping open connections (a mismatched key and certificate keep the old
//! pair in force), and a handshake deadline for silent clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use customers_ingress::auth::keys_file::{ClientCertificateEntry, KeysFile, Scope};
use customers_tests::{
    NatsServer, PATIENCE, TestIngress, TestResponse, TestWorker, UNLIMITED, customer_with_email,
    mint_key,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate authority that signs server and client certificates.
struct Authority(CertifiedIssuer<'static, KeyPair>);

/// A certificate and its key, as PEM.
struct Issued {
    certificate: String,
    key: String,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names = names
            .iter()
            .map(|name| (*name).to_owned())
            .collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let certificate = params.signed_by(&key, &self.0).unwrap();
        Issued {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    fn pem(&self) -> String {
        self.0.pem()
    }
}

fn server_certificate(authority: &Authority) -> Issued {
    authority.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

fn client_certificate(authority: &Authority, name: &str) -> Issued {
    authority.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// NATS, a worker and an ingress serving HTTPS with `server` (and client certificates signed
/// by `client_ca` when set).
struct Stack {
    _nats: NatsServer,
    _worker: TestWorker,
    ingress: TestIngress,
    dir: tempfile::TempDir,
    keys_file: PathBuf,
    /// A key with every scope.
    key: String,
    _data_dir: tempfile::TempDir,
}

impl Stack {
    async fn start(
        server: &Issued,
        client_ca: Option<&Authority>,
        configure: impl FnOnce(&mut customers_ingress::Config, &Path),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys_file = dir.path().join("keys.json");
        let key = mint_key(&keys_file, &[Scope::Read, Scope::Write], Some(UNLIMITED));
        let nats = NatsServer::start();
        let data_dir = tempfile::tempdir().unwrap();
        let worker = TestWorker::start(&nats.url(), data_dir.path()).await;
        let mut config = customers_ingress::Config::new(nats.url());
        config.keys_file = Some(keys_file.clone());
        config.tls_certificate = Some(write(dir.path(), "server.pem", &server.certificate));
        config.tls_private_key = Some(write(dir.path(), "server-key.pem", &server.key));
        config.tls_client_ca = client_ca.map(|ca| write(dir.path(), "client-ca.pem", &ca.pem()));
        configure(&mut config, &keys_file);
        let ingress = TestIngress::start_with(config).await;
        Self {
            _nats: nats,
            _worker: worker,
            ingress,
            dir,
            keys_file,
            key,
            _data_dir: data_dir,
        }
    }
}

/// A TLS client trusting `server_ca`, presenting `client` when set.
fn client_config(server_ca: &Authority, client: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match client {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(issued.certificate.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// One HTTPS connection: its requests, and the certificate the server presented.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    server_certificate: Vec<u8>,
}

impl Connection {
    async fn open(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<Self, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let server_certificate = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            server_certificate,
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: &str,
    ) -> Result<TestResponse, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        Ok(TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.map_err(|e| e.to_string())?.to_bytes(),
        })
    }
}

/// A create over a new connection with `config`, with `key` when set.
async fn create(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    key: Option<&str>,
    email: &str,
) -> Result<TestResponse, String> {
    let mut connection = Connection::open(addr, config).await?;
    connection
        .send(
            "POST",
            "/api/v1/customers",
            key,
            &customer_with_email(email),
        )
        .await
}

#[tokio::test]
async fn https_with_an_api_key_and_no_plain_http() {
    let ca = Authority::new("server CA");
    let stack = Stack::start(&server_certificate(&ca), None, |_, _| {}).await;
    let addr = stack.ingress.addr;
    let created = create(
        addr,
        client_config(&ca, None),
        Some(&stack.key),
        "tls@example.com",
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201);
    let refused = create(addr, client_config(&ca, None), None, "nokey@example.com")
        .await
        .unwrap();
    assert_eq!(refused.status, 401);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer))
        .await
        .expect("the ingress closes the connection")
        .ok();
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    // A client that does not trust the server's CA refuses it.
    let stranger = Authority::new("another CA");
    let untrusted = Connection::open(addr, client_config(&stranger, None)).await;
    assert!(untrusted.is_err());
}

#[tokio::test]
async fn client_certificates_stand_in_for_keys_when_granted() {
    let server_ca = Authority::new("server CA");
    let client_ca = Authority::new("client CA");
    let mut read_only = String::new();
    let stack = Stack::start(
        &server_certificate(&server_ca),
        Some(&client_ca),
        |_, keys| {
            read_only = mint_key(keys, &[Scope::Read], Some(UNLIMITED));
            KeysFile::edit(keys, |file| {
                file.client_certificates.push(ClientCertificateEntry {
                    id: "billing".into(),
                    subject: "billing.internal".into(),
                    scopes: vec![Scope::Read, Scope::Write],
                    revoked_at: None,
                    rate_limit: None,
                });
                Ok(())
            })
            .unwrap();
        },
    )
    .await;
    let addr = stack.ingress.addr;
    let billing = client_config(
        &server_ca,
        Some(&client_certificate(&client_ca, "billing.internal")),
    );
    let stranger = client_config(
        &server_ca,
        Some(&client_certificate(&client_ca, "stranger.internal")),
    );
    let rogue = client_config(
        &server_ca,
        Some(&client_certificate(
            &Authority::new("rogue CA"),
            "billing.internal",
        )),
    );

    let granted = create(addr, billing.clone(), None, "mtls@example.com")
        .await
        .unwrap();
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    assert!(granted.header("ratelimit").is_some());

    let not_granted = create(addr, stranger, None, "stranger@example.com")
        .await
        .unwrap();
    assert_eq!(not_granted.status, 401);
    assert_eq!(
        not_granted.json()["detail"],
        "the client certificate is not granted access; send an API key"
    );

    // A bearer key, when sent, is the credential, whatever the certificate.
    let bearer_wins = create(addr, billing.clone(), Some(&read_only), "both@example.com")
        .await
        .unwrap();
    assert_eq!(bearer_wins.status, 403);

    // A certificate from a CA the ingress does not trust fails the handshake (TLS 1.3
    // reports it on the first read, so the request fails either way).
    assert!(
        create(addr, rogue, None, "rogue@example.com")
            .await
            .is_err()
    );

    // Keys keep working for clients without a certificate.
    let keyed = create(
        addr,
        client_config(&server_ca, None),
        Some(&stack.key),
        "keyed@example.com",
    )
    .await
    .unwrap();
    assert_eq!(keyed.status, 201);

    KeysFile::edit(&stack.keys_file, |file| file.revoke("billing")).unwrap();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let response = create(addr, billing.clone(), None, "after@example.com")
                .await
                .unwrap();
            if response.status == 401 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a revoked certificate is refused after the reload");
}

#[tokio::test]
async fn a_new_certificate_is_served_without_dropping_open_connections() {
    let ca = Authority::new("server CA");
    let first = server_certificate(&ca);
    let stack = Stack::start(&first, None, |config, _| {
        config.reload_interval = Duration::from_millis(50);
    })
    .await;
    let addr = stack.ingress.addr;
    let config = client_config(&ca, None);
    let mut open = Connection::open(addr, config.clone()).await.unwrap();
    let first_der = open.server_certificate.clone();
    let health = open.send("GET", "/healthz", None, "").await.unwrap();
    assert_eq!(health.status, 200);

    // The new key first: with the old certificate it is no pair, so that reload fails and
    // the old pair stays in force.
    let second = server_certificate(&ca);
    write(stack.dir.path(), "server-key.pem", &second.key);
    let failed = r#"customers_ingress_reloads_total{source="tls",result="error"} 1"#;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let metrics = open.send("GET", "/metrics", None, "").await.unwrap();
            if String::from_utf8_lossy(&metrics.body)
                .lines()
                .any(|l| l == failed)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the mismatched pair is refused");
    let meanwhile = Connection::open(addr, config.clone()).await.unwrap();
    assert_eq!(meanwhile.server_certificate, first_der);

    write(stack.dir.path(), "server.pem", &second.certificate);
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let connection = Connection::open(addr, config.clone()).await.unwrap();
            if connection.server_certificate != first_der {
                return connection.server_certificate;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("new connections get the new certificate");
    let second_der = CertificateDer::from_pem_slice(second.certificate.as_bytes()).unwrap();
    assert_eq!(served, second_der.to_vec());

    // The connection opened before the reload still works.
    let again = open.send("GET", "/healthz", None, "").await.unwrap();
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn a_silent_client_cannot_hold_a_connection_in_the_handshake() {
    let ca = Authority::new("server CA");
    let stack = Stack::start(&server_certificate(&ca), None, |config, _| {
        config.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(stack.ingress.addr)
        .await
        .unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut buffer))
        .await
        .expect("the ingress closes a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
