//! Driving load: the two targets (HTTP through the ingress, NATS straight to the worker),
//! what each requester sends ([`Workload`]: creates by default, or the changes the benchmark
//! drives), the closed loop (N requesters back to back) and the open loop (a fixed arrival
//! rate, with latency measured from each request's intended send time so that stalls are not
//! hidden by coordinated omission), and the statistics with live progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::client::RequestErrorKind;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use customers_shared::wire::protocol::headers;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::generator::Generator;

/// One request: over HTTP its method and path; its body and extra headers (over NATS the
/// body and headers go to the target's subject).
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

/// What one requester sends, request after request, and what it learns from the answers.
pub trait Workload: Send + 'static {
    fn next(&mut self) -> Request;
    /// The answer to the request `next` made last: its status and body.
    fn answered(&mut self, _status: u16, _body: &[u8]) {}
    /// Whether it has nothing more to send (closed loop: its requester stops).
    fn done(&self) -> bool {
        false
    }
}

/// Creates with realistic, unique bodies (see [`Generator`]), with an `Idempotency-Key` each
/// when asked.
pub struct Creates {
    generator: Generator,
    keys: bool,
}

impl Creates {
    pub fn new(run: &str, stream: usize, duplicate_ratio: f64, keys: bool) -> Self {
        Self {
            generator: Generator::new(run, stream, duplicate_ratio),
            keys,
        }
    }
}

impl Workload for Creates {
    fn next(&mut self) -> Request {
        let (body, key) = self.generator.next_body();
        let headers = match self.keys {
            true => vec![(headers::IDEMPOTENCY_KEY, key)],
            false => Vec::new(),
        };
        Request {
            method: "POST",
            path: "/api/v1/customers".into(),
            body,
            headers,
        }
    }
}

/// Where requests go.
#[derive(Clone)]
pub enum Target {
    Http {
        addr: SocketAddr,
        /// The fixed headers of every request (host, authorization).
        fixed: Arc<str>,
    },
    Nats {
        clients: Arc<Vec<async_nats::Client>>,
        subject: String,
        timeout: Duration,
    },
}

impl Target {
    /// `base_url` is `http://host:port`; `api_key`, when set, is sent as a bearer token.
    pub async fn http(base_url: &str, api_key: Option<&str>) -> Result<Self, String> {
        let authority = base_url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url must start with http://: {base_url}"))?
            .trim_end_matches('/');
        let addr = tokio::net::lookup_host(authority)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("cannot resolve {authority}"))?;
        let mut fixed = format!("host: {authority}\r\n");
        if let Some(key) = api_key {
            fixed.push_str(&format!("authorization: Bearer {key}\r\n"));
        }
        Ok(Self::Http {
            addr,
            fixed: fixed.into(),
        })
    }

    /// `connections` NATS clients, used round-robin by the requesters.
    pub async fn nats(url: &str, subject: &str, connections: usize) -> Result<Self, String> {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            clients.push(
                async_nats::connect(url)
                    .await
                    .map_err(|e| format!("cannot connect to {url}: {e}"))?,
            );
        }
        Ok(Self::Nats {
            clients: Arc::new(clients),
            subject: subject.to_owned(),
            timeout: Duration::from_secs(10),
        })
    }

    /// A requester: one keep-alive connection (HTTP) or one of the NATS clients.
    fn requester(&self, stream: usize) -> Requester {
        match self {
            Self::Http { addr, fixed } => Requester::Http {
                addr: *addr,
                fixed: fixed.clone(),
                connection: None,
            },
            Self::Nats {
                clients,
                subject,
                timeout,
            } => Requester::Nats {
                client: clients[stream % clients.len()].clone(),
                subject: subject.clone(),
                timeout: *timeout,
            },
        }
    }
}

/// Sends requests one at a time. Over HTTP it keeps one connection and speaks HTTP/1.1
/// itself (like wrk), so the load generator spends as little of the machine as it can.
enum Requester {
    Http {
        addr: SocketAddr,
        fixed: Arc<str>,
        connection: Option<HttpConnection>,
    },
    Nats {
        client: async_nats::Client,
        subject: String,
        timeout: Duration,
    },
}

impl Requester {
    /// Sends one request; returns the HTTP status (or its NATS equivalent; 0 for a transport
    /// failure) and the body.
    async fn send(&mut self, request: Request) -> (u16, Bytes) {
        match self {
            Self::Http {
                addr,
                fixed,
                connection,
            } => {
                let Request {
                    method,
                    path,
                    body,
                    headers,
                } = request;
                let mut bytes = String::with_capacity(fixed.len() + body.len() + 160);
                let _ = write!(bytes, "{method} {path} HTTP/1.1\r\n{fixed}");
                if !body.is_empty() {
                    let media = match method {
                        "PATCH" => "application/merge-patch+json",
                        _ => "application/json",
                    };
                    let _ = write!(bytes, "content-type: {media}\r\n");
                }
                for (name, value) in headers {
                    let _ = write!(bytes, "{name}: {value}\r\n");
                }
                let _ = write!(bytes, "content-length: {}\r\n\r\n{body}", body.len());
                if connection.is_none() {
                    *connection = HttpConnection::connect(*addr).await.ok();
                }
                let Some(open) = connection else {
                    return (0, Bytes::new());
                };
                match open.exchange(bytes.as_bytes()).await {
                    Ok((status, keep_alive, body)) => {
                        if !keep_alive {
                            *connection = None;
                        }
                        (status, body)
                    }
                    Err(_) => {
                        *connection = None;
                        (0, Bytes::new())
                    }
                }
            }
            Self::Nats {
                client,
                subject,
                timeout,
            } => {
                let mut nats_request = async_nats::Request::new()
                    .payload(Bytes::from(request.body))
                    .timeout(Some(*timeout));
                if !request.headers.is_empty() {
                    let mut request_headers = async_nats::HeaderMap::new();
                    for (name, value) in &request.headers {
                        request_headers.insert(*name, value.as_str());
                    }
                    nats_request = nats_request.headers(request_headers);
                }
                match client.send_request(subject.clone(), nats_request).await {
                    Ok(reply) => {
                        let status = reply
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(headers::SERVICE_ERROR_CODE))
                            .and_then(|code| code.as_str().parse().ok())
                            .unwrap_or(201);
                        (status, reply.payload)
                    }
                    Err(e) if e.kind() == RequestErrorKind::NoResponders => (503, Bytes::new()),
                    Err(e) if e.kind() == RequestErrorKind::TimedOut => (504, Bytes::new()),
                    Err(_) => (0, Bytes::new()),
                }
            }
        }
    }
}

/// One HTTP/1.1 keep-alive connection: write a request, read one response.
struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Returns the status, whether the connection may be reused, and the body.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, bool, Bytes)> {
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(i) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).map_err(std::io::Error::other)?;
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let mut length = 0;
        let mut keep_alive = true;
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().map_err(std::io::Error::other)?;
                } else if name.eq_ignore_ascii_case("connection")
                    && value.trim().eq_ignore_ascii_case("close")
                {
                    keep_alive = false;
                }
            }
        }
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        let body = Bytes::copy_from_slice(&self.buffer[head_end..head_end + length]);
        self.buffer.drain(..head_end + length);
        Ok((status, keep_alive, body))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// How requests are issued.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `n` requesters, each sending its next request when the previous one is answered.
    Closed(usize),
    /// Requests start at this many per second, whatever the answers do.
    Open(f64),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub shape: Shape,
    pub warmup: Duration,
    pub duration: Duration,
    pub duplicate_ratio: f64,
    pub idempotency_keys: bool,
    pub progress: bool,
    /// Closed loop: stop after this many requests (warm-up included), if sooner.
    pub requests: Option<u64>,
}

struct Stats {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub requests: u64,
    pub seconds: f64,
    pub throughput: f64,
    /// p50, p90, p99, p99.9 and max, in milliseconds.
    pub latency_ms: [f64; 5],
    pub statuses: BTreeMap<u16, u64>,
}

impl Summary {
    pub fn errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let [p50, p90, p99, p999, max] = self.latency_ms;
        json!({
            "requests": self.requests,
            "seconds": self.seconds,
            "throughput_per_s": self.throughput,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "p99_9": p999, "max": max},
            "statuses": self.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Runs `plan`'s creates against `target` and returns what was measured after the warm-up.
pub async fn run(target: Target, plan: Plan) -> Summary {
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let (ratio, keys) = (plan.duplicate_ratio, plan.idempotency_keys);
    run_workloads(target, plan, |stream| {
        Creates::new(&run_id, stream, ratio, keys)
    })
    .await
    .0
}

/// Runs `plan` against `target`, each requester (the open loop has one) sending what its
/// workload makes; returns what was measured after the warm-up, and the closed loop's
/// workloads as they ended.
pub async fn run_workloads<W: Workload>(
    target: Target,
    plan: Plan,
    mut workload: impl FnMut(usize) -> W,
) -> (Summary, Vec<W>) {
    let stats = Arc::new(Mutex::new(Stats {
        latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        statuses: BTreeMap::new(),
    }));
    let recording = Arc::new(AtomicBool::new(plan.warmup.is_zero()));
    let started = Instant::now();
    let measuring_from = started + plan.warmup;
    let stop_at = measuring_from + plan.duration;
    let mut ended = Vec::new();
    let record = {
        let (stats, recording) = (stats.clone(), recording.clone());
        move |latency: Duration, status: u16| {
            if recording.load(Ordering::Relaxed) {
                let mut stats = stats.lock().expect("stats");
                stats
                    .latency_us
                    .saturating_record(latency.as_micros() as u64);
                *stats.statuses.entry(status).or_default() += 1;
            }
        }
    };
    let progress = plan
        .progress
        .then(|| tokio::spawn(report_progress(stats.clone(), recording.clone(), stop_at)));
    let warmup_done = {
        let recording = recording.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measuring_from.into()).await;
            recording.store(true, Ordering::Relaxed);
        })
    };

    match plan.shape {
        Shape::Closed(concurrency) => {
            let budget = Arc::new(std::sync::atomic::AtomicU64::new(
                plan.requests.unwrap_or(u64::MAX),
            ));
            let requesters: Vec<_> = (0..concurrency.max(1))
                .map(|stream| {
                    let mut requester = target.requester(stream);
                    let (record, budget) = (record.clone(), budget.clone());
                    let mut workload = workload(stream);
                    let take = move || {
                        budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                                left.checked_sub(1)
                            })
                            .is_ok()
                    };
                    tokio::spawn(async move {
                        while Instant::now() < stop_at && !workload.done() && take() {
                            let request = workload.next();
                            let sent = Instant::now();
                            let (status, body) = requester.send(request).await;
                            record(sent.elapsed(), status);
                            workload.answered(status, &body);
                        }
                        workload
                    })
                })
                .collect();
            for requester in requesters {
                if let Ok(workload) = requester.await {
                    ended.push(workload);
                }
            }
        }
        Shape::Open(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut workload = workload(0);
            let mut in_flight = tokio::task::JoinSet::new();
            // Idle requesters (connections) for reuse; a new one when all are busy.
            let idle: Arc<Mutex<Vec<Requester>>> = Arc::default();
            let mut intended = started;
            let mut stream = 0;
            while intended < stop_at {
                tokio::time::sleep_until(intended.into()).await;
                let request = workload.next();
                let reused = idle.lock().expect("idle requesters").pop();
                let mut requester = reused.unwrap_or_else(|| {
                    stream += 1;
                    target.requester(stream)
                });
                let (idle, record) = (idle.clone(), record.clone());
                let sent_at = intended;
                in_flight.spawn(async move {
                    let (status, _) = requester.send(request).await;
                    // From the intended start: a stalled sender shows up as latency.
                    record(sent_at.elapsed(), status);
                    idle.lock().expect("idle requesters").push(requester);
                });
                while in_flight.try_join_next().is_some() {}
                intended += interval;
            }
            while in_flight.join_next().await.is_some() {}
        }
    }
    warmup_done.abort();
    if let Some(progress) = progress {
        progress.abort();
    }
    let seconds = measuring_from
        .elapsed()
        .as_secs_f64()
        .min(plan.duration.as_secs_f64())
        .max(1e-9);
    let stats = stats.lock().expect("stats");
    let requests = stats.latency_us.len();
    let ms = |q: f64| stats.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let summary = Summary {
        requests,
        seconds,
        throughput: requests as f64 / seconds,
        latency_ms: [
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            stats.latency_us.max() as f64 / 1000.0,
        ],
        statuses: stats.statuses.clone(),
    };
    (summary, ended)
}

async fn report_progress(stats: Arc<Mutex<Stats>>, recording: Arc<AtomicBool>, stop_at: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = 0;
    loop {
        ticker.tick().await;
        let (count, errors, p99) = {
            let stats = stats.lock().expect("stats");
            let errors: u64 = stats
                .statuses
                .iter()
                .filter(|(s, _)| !(200..300).contains(*s))
                .map(|(_, n)| n)
                .sum();
            (
                stats.latency_us.len(),
                errors,
                stats.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            )
        };
        let phase = if recording.load(Ordering::Relaxed) {
            "measuring"
        } else {
            "warming up"
        };
        let left = stop_at.saturating_duration_since(Instant::now()).as_secs();
        eprintln!(
            "[{phase}, {left}s left] {}/s, errors {errors}, p99 {p99:.2} ms",
            count - last
        );
        last = count;
    }
}
