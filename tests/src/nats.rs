//! NATS for the tests: a real `nats-server` on an ephemeral loopback port
//! ([`NatsServer`], from `NATS_SERVER_BIN` or `PATH`; a missing binary fails the test, never
//! skips it), a 3-node cluster on loopback ([`NatsCluster`]), and a stand-in for the worker
//! on the create subject ([`StandInWorker`]) for tests of what the ingress sends.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use customers_shared::wire::protocol::Endpoint;

use crate::fixtures::{free_port, subject};

/// A `nats-server` process on 127.0.0.1 and a port it chose, with JetStream (storing in a
/// temporary directory that outlives restarts) unless told otherwise; killed on drop.
pub struct NatsServer {
    child: Child,
    /// The server's last log lines, for a failure message.
    log_tail: Arc<Mutex<VecDeque<String>>>,
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
        let mut start_log = VecDeque::new();
        for line in lines.by_ref() {
            let line = line.expect("nats-server log line");
            start_log.push_back(line.clone());
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                port = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        let port = port.expect("nats-server did not report its client port");
        // Keep draining the log so the server never blocks on a full pipe; keep its tail.
        let log_tail = Arc::new(Mutex::new(start_log));
        let tail = log_tail.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() >= LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Self {
            child,
            log_tail,
            port,
            config,
            env,
            store,
            jetstream,
        }
    }

    /// The server's last log lines, one per line.
    pub fn log_tail(&self) -> String {
        let tail = self.log_tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
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
            if !jetstream_answers(&node.url(), JETSTREAM_PATIENCE).await {
                let logs: Vec<String> = cluster.nodes.iter().map(NatsServer::log_tail).collect();
                panic!(
                    "JetStream is not available on {} within {JETSTREAM_PATIENCE:?}; the nodes' last log lines:\n{}",
                    node.url(),
                    logs.join("\n---\n")
                );
            }
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
    assert!(
        jetstream_answers(url, JETSTREAM_PATIENCE).await,
        "JetStream is not available on {url} within {JETSTREAM_PATIENCE:?}"
    );
}

/// Log lines kept of each server (its start, then the newest).
const LOG_TAIL_LINES: usize = 80;

/// How long a node may take to offer JetStream (a cluster's election, on a loaded machine).
const JETSTREAM_PATIENCE: Duration = Duration::from_secs(30);

/// Whether JetStream answers through the server at `url` within `patience`.
async fn jetstream_answers(url: &str, patience: Duration) -> bool {
    let client = async_nats::connect(url).await.expect("connect to the node");
    let jetstream = async_nats::jetstream::new(client);
    tokio::time::timeout(patience, async {
        while jetstream.query_account().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok()
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
            .subscribe(subject(Endpoint::Create))
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
