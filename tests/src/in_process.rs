//! The worker and the ingress running in the test's own process ([`TestWorker`],
//! [`TestIngress`], on port 0 and a temporary sled directory), and [`spawn_app`], which starts
//! both with a [`NatsServer`] and offers HTTP and NATS clients ([`TestApp`]).

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use customers_ingress::Ingress;
use customers_ingress::auth::api_key::Environment;
use customers_ingress::auth::keys_file::{KeysFile, Scope};
use customers_ingress::config::AuthMode;
use customers_ingress::rate_limit::Policy;
use customers_shared::wire::protocol::Endpoint;
use customers_worker::Worker;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fixtures::subject;
use crate::http::HttpClient;
use crate::nats::NatsServer;

/// A server task of this process with its shutdown trigger.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Spawns `serve`, handing it a future that resolves when [`Running::stop`] is called.
    fn spawn<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (shutdown, stop) = oneshot::channel();
        Self {
            shutdown,
            task: tokio::spawn(serve(stop)),
        }
    }

    /// Triggers a graceful shutdown and waits until it is complete.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.expect("server task");
    }
}

/// A worker running in this process; `stop` shuts it down gracefully.
pub struct TestWorker {
    running: Running,
    /// The admin listener's address, when the configuration asked for one.
    pub admin_addr: Option<SocketAddr>,
}

impl TestWorker {
    pub async fn start(nats_url: &str, data_dir: &Path) -> Self {
        Self::start_with(customers_worker::Config::new(nats_url, data_dir)).await
    }

    pub async fn start_with(config: customers_worker::Config) -> Self {
        let worker = Worker::start(config).await.expect("worker starts");
        let admin_addr = worker.admin_addr();
        let running = Running::spawn(|stop| async move {
            let stopped = worker
                .run(async {
                    let _ = stop.await;
                })
                .await;
            if let Err(failure) = stopped {
                panic!("the worker failed: {failure}");
            }
        });
        Self {
            running,
            admin_addr,
        }
    }

    /// Graceful shutdown; returns when the worker has closed its database.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// An ingress running in this process on 127.0.0.1 and an ephemeral port.
pub struct TestIngress {
    pub addr: SocketAddr,
    /// A key with every scope and no practical rate limit, minted into a temporary keys
    /// file, when the configuration named no keys file of its own.
    pub api_key: Option<String>,
    _keys_dir: Option<tempfile::TempDir>,
    running: Running,
}

/// A rate limit no test reaches.
pub const UNLIMITED: customers_ingress::rate_limit::Policy =
    customers_ingress::rate_limit::Policy {
        per_second: 1e9,
        burst: 1_000_000_000,
    };

/// Mints a key into the keys file at `path` (created when missing); returns the key.
pub fn mint_key(path: &Path, scopes: &[Scope], rate_limit: Option<Policy>) -> String {
    KeysFile::edit(path, |file| {
        file.mint(Environment::Test, None, scopes.to_vec(), None, rate_limit)
    })
    .expect("mint a key")
    .key
}

impl TestIngress {
    pub async fn start(nats_url: &str) -> Self {
        Self::start_with(customers_ingress::Config::new(nats_url)).await
    }

    pub async fn start_with(mut config: customers_ingress::Config) -> Self {
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        let (mut api_key, mut keys_dir) = (None, None);
        if config.auth == AuthMode::Keys && config.keys_file.is_none() {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("keys.json");
            api_key = Some(mint_key(
                &path,
                &[Scope::Read, Scope::Write],
                Some(UNLIMITED),
            ));
            config.keys_file = Some(path);
            keys_dir = Some(dir);
        }
        let listener = Ingress::bind(&config).await.expect("ingress binds");
        let addr = listener.local_addr().expect("bound address");
        let ingress = Ingress::connect(&config).await.expect("ingress connects");
        let running = Running::spawn(|stop| {
            ingress.run(listener, async {
                let _ = stop.await;
            })
        });
        Self {
            addr,
            api_key,
            _keys_dir: keys_dir,
            running,
        }
    }

    /// A client of this ingress with its minted key.
    pub fn http(&self) -> HttpClient {
        let client = HttpClient::new(self.addr);
        match &self.api_key {
            Some(key) => client.with_api_key(key),
            None => client,
        }
    }

    /// Graceful shutdown; returns when in-flight requests are answered.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// NATS server, worker, ingress and clients for one test, each on its own ports and
/// temporary database.
pub struct TestApp {
    pub nats: NatsServer,
    pub worker: Option<TestWorker>,
    pub ingress: TestIngress,
    pub data_dir: tempfile::TempDir,
    pub http: HttpClient,
    pub nats_client: async_nats::Client,
}

pub async fn spawn_app() -> TestApp {
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let worker = TestWorker::start(&nats.url(), data_dir.path()).await;
    let ingress = TestIngress::start(&nats.url()).await;
    let nats_client = async_nats::connect(nats.url()).await.expect("NATS client");
    TestApp {
        http: ingress.http(),
        nats,
        worker: Some(worker),
        ingress,
        data_dir,
        nats_client,
    }
}

impl TestApp {
    /// Sends a create request straight to the worker over NATS.
    pub async fn nats_create(&self, payload: impl Into<Bytes>) -> async_nats::Message {
        self.nats_client
            .request(subject(Endpoint::Create), payload.into())
            .await
            .expect("NATS reply")
    }

    pub async fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
    }

    pub async fn restart_worker(&mut self) {
        self.stop_worker().await;
        self.worker = Some(TestWorker::start(&self.nats.url(), self.data_dir.path()).await);
    }
}
