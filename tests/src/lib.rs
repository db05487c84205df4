//! Test helpers for the system tests in `tests/tests/`: a real `nats-server` on an ephemeral
//! loopback port ([`NatsServer`]), a real worker on a temporary sled directory
//! ([`TestWorker`]), a real ingress on port 0 ([`TestIngress`]), and [`spawn_app`], which
//! starts all three and offers HTTP and NATS clients.
//!
//! `nats-server` is taken from `NATS_SERVER_BIN`, else from `PATH`; the README's test
//! command provides it. A missing binary fails the tests; it never skips them.
//!
//! [`events`] reads the events stream as a consumer does. [`ledger`] drives creates under load and checks afterwards that every acknowledged one
//! survived whatever the test did to the worker.

pub mod events;
pub mod ledger;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use customers_ingress::Ingress;
use customers_ingress::auth::api_key::Environment;
use customers_ingress::auth::keys_file::{KeysFile, Scope};
use customers_ingress::config::AuthMode;
use customers_ingress::rate_limit::Policy;
use customers_worker::Worker;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The seed document's example request, verbatim.
pub const SEED_REQUEST: &str = r#"{
  "name": "Brighton Mboya",
  "email": "brighton@jani.com",
  "phone": "+2557881234567",
  "address": {
    "city": "Dar es Salaam",
    "country": "Tanzania"
  },
  "payment_method": "card_01h3vjs3b16yc3f9q8q9pfrb79",
  "status": "active",
  "custom_data": {
    "loyalty_program": "Gold"
  }
}"#;

/// A `nats-server` process on 127.0.0.1 and a port it chose, with JetStream (storing in a
/// temporary directory that outlives restarts) unless told otherwise; killed on drop.
pub struct NatsServer {
    child: Child,
    port: u16,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    store: tempfile::TempDir,
    jetstream: bool,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// Starts on `port`, or on an ephemeral port when `None`; returns once the server
    /// reports that it is ready.
    pub fn start_on(port: Option<u16>) -> Self {
        Self::spawn(port, None, Vec::new(), store_dir(), true)
    }

    /// A server without JetStream, as a plain NATS deployment is.
    pub fn start_without_jetstream() -> Self {
        Self::spawn(None, None, Vec::new(), store_dir(), false)
    }

    /// Starts with the configuration file `config` (authorization, TLS, ...), on 127.0.0.1
    /// and an ephemeral port whatever the file says.
    pub fn start_with_config(config: &Path) -> Self {
        Self::start_with_config_and_env(config, &[])
    }

    /// [`NatsServer::start_with_config`] with environment variables for the file's
    /// `$VARIABLE` references (e.g. passwords).
    pub fn start_with_config_and_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let env = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        Self::spawn(None, Some(config.to_owned()), env, store_dir(), true)
    }

    fn spawn(
        port: Option<u16>,
        config: Option<PathBuf>,
        env: Vec<(String, String)>,
        store: tempfile::TempDir,
        jetstream: bool,
    ) -> Self {
        let binary = std::env::var_os("NATS_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut command = Command::new(&binary);
        let own_store_dir = config
            .as_deref()
            .and_then(|config| with_store_dir(config, store.path()));
        match (&own_store_dir, &config) {
            (Some(copy), _) => {
                command.arg("-c").arg(copy);
            }
            (None, Some(config)) => {
                command.arg("-c").arg(config);
            }
            (None, None) => {}
        }
        if jetstream && own_store_dir.is_none() {
            command.arg("-js").arg("-sd").arg(store.path());
        }
        let mut child = command
            .envs(env.iter().map(|(name, value)| (name, value)))
            .args(["-a", "127.0.0.1", "-p", &port_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; run the tests with the README's test command, which provides nats-server",
                    binary.display()
                )
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut port = None;
        for line in lines.by_ref() {
            let line = line.expect("nats-server log line");
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                port = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        let port = port.expect("nats-server did not report its client port");
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            port,
            config,
            env,
            store,
            jetstream,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The operating system's id of the server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the server again on the same port, with the same JetStream store.
    pub fn restart(&mut self) {
        self.restart_with_jetstream(self.jetstream);
    }

    /// Starts the server again on the same port with JetStream off (`false`), or on (`true`)
    /// with the store it had.
    pub fn restart_with_jetstream(&mut self, on: bool) {
        self.stop();
        let store = std::mem::replace(&mut self.store, store_dir());
        *self = Self::spawn(
            Some(self.port),
            self.config.clone(),
            self.env.clone(),
            store,
            on,
        );
    }

    /// Stops the server and waits for the process to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// For a configuration that names its own JetStream `store_dir` (the deploy files do, and
/// nats-server refuses `-sd` beside it): a copy of it and the `.conf` files beside it (its
/// includes) under `store`, storing in `store` instead; `None` for any other configuration.
fn with_store_dir(config: &Path, store: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).expect("the nats-server configuration");
    if !text.contains("store_dir") {
        return None;
    }
    let copies = store.join("config");
    std::fs::create_dir_all(&copies).expect("a directory for the configuration");
    let dir = config.parent().expect("the configuration's directory");
    for entry in std::fs::read_dir(dir)
        .expect("the configuration's directory")
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "conf") {
            std::fs::copy(entry.path(), copies.join(entry.file_name())).expect("copy");
        }
    }
    let rewritten: String = text
        .lines()
        .map(|line| match line.split_once("store_dir:") {
            Some((indent, _)) => {
                format!("{indent}store_dir: \"{}\"\n", store.join("data").display())
            }
            None => format!("{line}\n"),
        })
        .collect();
    let copy = copies.join(config.file_name().expect("a file name"));
    std::fs::write(&copy, rewritten).expect("write the configuration");
    Some(copy)
}

/// Three nats-servers clustered on loopback, each with JetStream (its own store), as
/// `deploy/nats-server-cluster.conf` describes for production; clients get all three URLs.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    _configs: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts the three nodes; returns once JetStream answers through each of them.
    pub async fn start() -> Self {
        let configs = tempfile::tempdir().expect("temporary directory");
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = route_ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                let config = configs.path().join(format!("node{n}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: node{n}\n\
                         jetstream {{\n  store_dir: \"unset\"\n}}\n\
                         cluster {{ name: customers-test, listen: 127.0.0.1:{port}, routes: [{routes}] }}\n"
                    ),
                )
                .expect("write the node's configuration");
                NatsServer::start_with_config(&config)
            })
            .collect();
        let cluster = Self {
            nodes,
            _configs: configs,
        };
        for node in &cluster.nodes {
            wait_for_jetstream(&node.url()).await;
        }
        cluster
    }

    /// A client that knows every node (and fails over between them).
    pub async fn client(&self) -> async_nats::Client {
        let urls: Vec<String> = self.nodes.iter().map(NatsServer::url).collect();
        async_nats::connect(urls.as_slice())
            .await
            .expect("connect to the cluster")
    }

    /// Every node's URL, comma-separated, as the binaries' `--nats-url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Waits until JetStream answers through the server at `url` (a cluster elects its
/// JetStream leader a moment after the nodes are up).
pub async fn wait_for_jetstream(url: &str) {
    let client = async_nats::connect(url).await.expect("connect to the node");
    let jetstream = async_nats::jetstream::new(client);
    tokio::time::timeout(Duration::from_secs(30), async {
        while jetstream.query_account().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("JetStream is available on the node");
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A new temporary directory for a server's JetStream store.
fn store_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

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

/// An HTTP response with its body read and, when it is JSON, parsed.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A keep-alive HTTP/1.1 client for the ingress.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    authorization: Option<http::HeaderValue>,
}

impl HttpClient {
    /// A client without credentials.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            authorization: None,
        }
    }

    /// The same client, sending `Authorization: Bearer {key}` with every request.
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.authorization =
            Some(http::HeaderValue::try_from(format!("Bearer {key}")).expect("a header value"));
        self
    }

    /// `POST /api/v1/customers` with a JSON body.
    pub async fn create(&self, body: &str) -> TestResponse {
        self.send(self.create_request(body, None)).await
    }

    /// `POST /api/v1/customers` with a JSON body and an `Idempotency-Key`.
    pub async fn create_idempotent(&self, body: &str, key: &str) -> TestResponse {
        self.send(self.create_request(body, Some(key))).await
    }

    fn create_request(&self, body: &str, key: Option<&str>) -> http::Request<Full<Bytes>> {
        let mut request = self
            .request("POST", "/api/v1/customers")
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("valid request")
    }

    /// `GET` of `path` (relative to the ingress).
    pub async fn get(&self, path: &str) -> TestResponse {
        self.without_body("GET", path).await
    }

    /// `method` on `path` (relative to the ingress), with an empty body.
    pub async fn without_body(&self, method: &str, path: &str) -> TestResponse {
        self.send(
            self.request(method, path)
                .body(Full::default())
                .expect("valid request"),
        )
        .await
    }

    /// Any request; `path` is relative to the ingress.
    /// The value of the metric series `series` (name and labels as rendered) on this
    /// client's `/metrics`, 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await;
        let text = String::from_utf8_lossy(&text.body).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        let builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        match &self.authorization {
            Some(value) => builder.header(http::header::AUTHORIZATION, value),
            None => builder,
        }
    }

    pub async fn send(&self, request: http::Request<Full<Bytes>>) -> TestResponse {
        let response = self.client.request(request).await.expect("HTTP request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
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
            .request("customers.v1.create", payload.into())
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

/// A request body with the given email and otherwise valid fields.
pub fn customer_with_email(email: &str) -> String {
    serde_json::json!({"name": "Test Customer", "email": email}).to_string()
}

/// Header value of a NATS message.
pub use customers_shared::wire::protocol::headers::value as nats_header;

/// Gets customer `id` over NATS and asserts it was found (no service error header); `case`
/// names what is checked in the failure message.
pub async fn assert_found_over_nats(client: &async_nats::Client, id: &str, case: &str) {
    let reply = client
        .request("customers.v1.get", id.to_owned().into())
        .await
        .unwrap();
    assert_eq!(
        nats_header(
            &reply,
            customers_shared::wire::protocol::headers::SERVICE_ERROR_CODE
        ),
        None,
        "{id} ({case})"
    );
}

/// A binary of this workspace: next to the running executable (a binary in
/// `target/<profile>/`) or one level up (a test in `target/<profile>/deps/`), as built by
/// `cargo build` or `cargo test --workspace`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let beside = exe.parent().expect("executable directory");
    let candidates = [
        beside.join(name),
        beside.parent().unwrap_or(beside).join(name),
    ];
    candidates
        .iter()
        .find(|path| path.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built next to {}; run `cargo test --workspace` (scripts/test) or `scripts/bench`",
                exe.display()
            )
        })
}

/// A stand-in for the worker on the create subject: the test sees exactly what arrives and
/// decides whether and how to answer.
pub struct StandInWorker {
    pub client: async_nats::Client,
    pub requests: async_nats::Subscriber,
}

/// The id a stand-in worker reports for the customers it "creates".
pub const STAND_IN_CUSTOMER_ID: &str = "cus_01h3vjs3b16yc3f9q8q9pfrb80";

impl StandInWorker {
    /// Subscribed (and known to the server) when this returns.
    pub async fn start(nats: &NatsServer) -> Self {
        let client = async_nats::connect(nats.url()).await.expect("NATS client");
        let requests = client
            .subscribe("customers.v1.create")
            .await
            .expect("subscribe to the create subject");
        customers_shared::runtime::nats::round_trip(&client)
            .await
            .expect("round trip");
        Self { client, requests }
    }

    /// The next request that reaches the stand-in.
    pub async fn next_request(&mut self) -> async_nats::Message {
        use futures_util::StreamExt;
        self.requests
            .next()
            .await
            .expect("a request reaches the stand-in worker")
    }

    /// Answers `request` as a worker that created [`STAND_IN_CUSTOMER_ID`] with `body`.
    pub async fn reply_created(&self, request: &async_nats::Message, body: &'static str) {
        let mut reply_headers = async_nats::HeaderMap::new();
        reply_headers.insert(
            customers_shared::wire::protocol::headers::CUSTOMER_ID,
            STAND_IN_CUSTOMER_ID,
        );
        self.client
            .publish_with_headers(
                request.reply.clone().expect("a reply subject"),
                reply_headers,
                body.into(),
            )
            .await
            .expect("publish the reply");
    }
}

/// A workspace binary running as a child process, with its log on stderr.
pub struct ServiceProcess {
    /// The log line that announced readiness.
    pub ready_line: String,
    child: tokio::process::Child,
    /// Log lines not read yet. A task reads the process's stderr as it comes, so the process
    /// never blocks on a full pipe, however much it logs and whether or not the test reads.
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ServiceProcess {
    /// Starts `name` with `args` and returns once it logs a line containing `ready`.
    pub async fn start(name: &str, args: &[&str], ready: &str) -> Self {
        Self::start_with_env(name, args, &[], ready).await
    }

    /// [`ServiceProcess::start`] with extra environment variables.
    pub async fn start_with_env(
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> Self {
        Self::start_program(&workspace_binary(name), args, env, ready).await
    }

    /// [`ServiceProcess::start_with_env`] for any program, not only this workspace's.
    pub async fn start_program(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready: &str,
    ) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut stderr =
            tokio::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let (lines, log) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = lines.send(line);
            }
        });
        let mut process = Self {
            ready_line: String::new(),
            child,
            log,
        };
        process.ready_line = process.wait_for_log(ready).await;
        process
    }

    /// Waits until the process logs a line containing `text`; returns that line.
    pub async fn wait_for_log(&mut self, text: &str) -> String {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.log.recv().await {
                    Some(line) if line.contains(text) => return line,
                    Some(_) => {}
                    None => panic!("the process exited before logging {text:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line containing {text:?} within {PATIENCE:?}"))
    }

    /// Waits (up to [`PATIENCE`]) for the process to end on its own; returns how it ended and
    /// the log lines it wrote since the last one read.
    pub async fn exited(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let mut lines = Vec::new();
        let status = tokio::time::timeout(PATIENCE, async {
            // The log ends when the process (and whatever inherited its stderr) is gone.
            while let Some(line) = self.log.recv().await {
                lines.push(line);
            }
            self.child.wait().await.expect("wait for the process")
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the process did not exit within {PATIENCE:?}; log: {lines:#?}")
        });
        (status, lines)
    }

    /// The operating system's id of the process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL the process");
    }

    /// Sends `signal` (a `kill` name such as `HUP`) to the running process.
    pub fn send_signal(&self, signal: &str) {
        let pid = self.child.id().expect("a running process").to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.send_signal("TERM");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the process exits within the grace period")
            .expect("wait for the process")
    }
}

/// Runs the workspace binary `name` with `args` until it exits on its own (within
/// [`PATIENCE`]), logging warnings and errors only: its exit code and what it wrote to
/// stderr. For starts that must fail, and for commands.
pub async fn run_to_exit(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new(workspace_binary(name))
            .args(args)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} {args:?} did not exit within {PATIENCE:?}"))
    .expect("run the binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes a measurement line to stderr past the test harness's capture, so that figures
/// (acknowledged/lost counts, recovery times) appear in the test command's output.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "[report] {line}");
}

/// Starts the `customers-worker` binary on `data_dir` with `extra` flags; returns once it
/// serves.
pub async fn start_worker_process(
    nats_url: &str,
    data_dir: &Path,
    extra: &[&str],
) -> ServiceProcess {
    start_worker_process_with_failpoints(nats_url, data_dir, extra, "").await
}

/// [`start_worker_process`] with failpoints set (the `fail` crate's `FAILPOINTS` syntax,
/// e.g. `journal-sync=20*off->return`); the test build of the worker has them compiled in.
pub async fn start_worker_process_with_failpoints(
    nats_url: &str,
    data_dir: &Path,
    extra: &[&str],
    failpoints: &str,
) -> ServiceProcess {
    let data_dir = data_dir.to_str().expect("a UTF-8 temporary path");
    let mut args = vec!["--nats-url", nats_url, "--data-dir", data_dir];
    args.extend_from_slice(extra);
    ServiceProcess::start_with_env(
        "customers-worker",
        &args,
        &[("FAILPOINTS", failpoints)],
        "serving",
    )
    .await
}

/// Random moments for kills: xorshift seeded from the clock, so runs differ, with the seed
/// reported for a rerun. No dependency for a few numbers.
pub struct KillMoments(u64);

impl KillMoments {
    pub fn seeded_from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos() as u64
            | 1;
        report(&format!("kill-moment seed: {seed}"));
        Self(seed)
    }

    /// The next number, below `bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Upper bound used where a test waits for something that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);
