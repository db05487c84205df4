//! The standard benchmark: everything started fresh on this machine, every line measured in
//! one run, so that the ratios between lines hold even though this machine's absolute
//! figures drift. Lines, each at every concurrency:
//!
//! * the ceiling: a bare forwarder → NATS → an echo responder (`baselines`);
//! * the product's own ingress in front of the same echo (what the ingress itself costs);
//! * the durable bound: the bare forwarder → NATS → a responder that appends each group to
//!   a file with one `fdatasync`;
//! * the peer: the same service on PostgreSQL (`bench/peer-postgres`), when a PostgreSQL
//!   server is available (`scripts/bench` finds one), with its connection pool swept
//!   (4, 8, 16, 32) at each concurrency and the best taken, as an operator would tune it;
//! * the service over HTTP (ingress → worker) and over NATS direct, with `customer.created`
//!   events on (the default), and over HTTP with events off (what the events cost);
//! * the replicated topology over HTTP: a 3-node NATS cluster, three workers in replicated
//!   mode, the ingress (what replication costs).
//!
//! Then the cost as data grows (a preload through the create path), and the time to
//! recover a journal of N creates after `kill -9`. Writes a Markdown report with ratios,
//! the targets of issue 10 checked against this run, CPU per request, and an SVG chart.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use customers_ingress::auth::keys_file::Scope;
use customers_tests::{NatsCluster, NatsServer, ServiceProcess, UNLIMITED, mint_key};

use crate::load::{self, Plan, Shape, Summary, Target};

#[derive(Args)]
pub struct BenchArgs {
    /// Measured time of each run.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before each run's measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrency levels (closed loop); 1 is one sequential client.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64, 256])]
    concurrency: Vec<usize>,
    /// Customers in the database when the worker's memory is checked; the "cost as data
    /// grows" runs at concurrency 64 then run at twice that (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    preload: u64,
    /// Creates left in the journal for the recovery measurement (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    recovery_creates: u64,
    /// The PostgreSQL peer's binary (scripts/bench builds it); no peer line without it.
    #[arg(long, env = "PEER_BIN")]
    peer_bin: Option<PathBuf>,
    /// Directory of PostgreSQL's server programs (initdb, postgres).
    #[arg(long, env = "PG_BIN_DIR")]
    pg_bin_dir: Option<PathBuf>,
    /// Where that PostgreSQL comes from, for the report.
    #[arg(long, env = "PG_SOURCE", default_value = "unknown")]
    pg_source: String,
    /// Also measure the replicated topology (a 3-node NATS cluster, three workers).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    replicated: bool,
    /// Markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// SVG chart of throughput and p99 against concurrency.
    #[arg(long, default_value = "docs/benchmark.svg")]
    chart: PathBuf,
}

const CEILING: &str = "ceiling: forwarder → NATS → echo";
const INGRESS_ECHO: &str = "product ingress → NATS → echo";
const DURABLE: &str = "durable bound: forwarder → NATS → append + fdatasync";
const PEER: &str = "peer: axum + PostgreSQL";
/// The peer's pool sizes tried at each concurrency, and their lines (kept out of the main
/// table: the peer line is the best of them).
const PEER_POOLS: [(usize, &str); 4] = [
    (4, "peer sweep: pool 4"),
    (8, "peer sweep: pool 8"),
    (16, "peer sweep: pool 16"),
    (32, "peer sweep: pool 32"),
];
const HTTP: &str = "service over HTTP";
const HTTP_EVENTS_OFF: &str = "service over HTTP, events off";
const HTTP_REPLICATED: &str = "service over HTTP, replicated (3 NATS nodes, 3 workers)";
const NATS: &str = "service over NATS direct";
const HTTP_LOADED: &str = "service over HTTP, after preload";
const NATS_LOADED: &str = "service over NATS direct, after preload";
const EVENTS_OFF_APART: &str = "events off, nats-server on cores of its own (median run)";
const EVENTS_ON_APART: &str = "events on, nats-server on cores of its own (median run)";
/// Pairs of runs (events off and on) per concurrency with the broker apart.
const EVENTS_ROUNDS: usize = 5;
const GROWTH_CONCURRENCY: usize = 64;

/// The processes whose CPU time the benchmark accounts for.
const ROLES: [&str; 5] = [
    "HTTP front",
    "responder",
    "nats-server",
    "PostgreSQL",
    "load generator",
];

/// The process ids playing each role in a line (a role may have none or several).
type Pids = [Vec<u32>; ROLES.len()];

#[derive(Clone)]
struct Row {
    line: &'static str,
    concurrency: usize,
    summary: Summary,
    /// CPU time per request of each role, in microseconds.
    cpu_us: [f64; ROLES.len()],
}

/// Size and memory of the worker at one point of the run.
struct Footprint {
    stored: u64,
    disk_bytes: u64,
    rss_kib: u64,
}

/// What the recovery measurement found.
struct Recovery {
    replayed_creates: u64,
    journal_bytes: u64,
    creates: u64,
    recovery_ms: u64,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    let nats = NatsServer::start();
    let url = nats.url();
    let cpu_times_before = machine_cpu_times();
    let scratch = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let keys_file = scratch.path().join("keys.json");
    let keys_file_arg = keys_file.display().to_string();
    let mut bench = Bench {
        args: &args,
        api_key: mint_key(&keys_file, &[Scope::Write], Some(UNLIMITED)),
        rows: Vec::new(),
        own_pid: std::process::id(),
        nats_pid: nats.pid(),
    };

    let forwarder = start_forwarder(&url).await;
    let forwarder_url = listen_url(&forwarder.ready_line, "listening on ");
    let ingress = ServiceProcess::start(
        "customers-ingress",
        &[
            "--nats-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--keys-file",
            &keys_file_arg,
            // One key drives every client of a line.
            "--max-in-flight-per-credential",
            PER_KEY_IN_FLIGHT,
        ],
        "serving",
    )
    .await;
    let ingress_url = listen_url(&ingress.ready_line, "listen=");

    let echo = ServiceProcess::start(
        "customers-loadgen",
        &["echo", "--nats-url", &url],
        "echo responder serving",
    )
    .await;
    bench
        .http_line(CEILING, &forwarder_url, &forwarder, &echo, None)
        .await?;
    bench
        .http_line(INGRESS_ECHO, &ingress_url, &ingress, &echo, None)
        .await?;
    echo.terminate().await;

    let durable_dir = scratch.path().join("durable-echo");
    std::fs::create_dir_all(&durable_dir).map_err(|e| e.to_string())?;
    let durable = ServiceProcess::start(
        "customers-loadgen",
        &[
            "durable-echo",
            "--nats-url",
            &url,
            "--dir",
            durable_dir.to_str().unwrap_or_default(),
        ],
        "durable echo responder serving",
    )
    .await;
    bench
        .http_line(DURABLE, &forwarder_url, &forwarder, &durable, None)
        .await?;
    durable.terminate().await;
    forwarder.terminate().await;

    let peer_note = match (&args.peer_bin, &args.pg_bin_dir) {
        (Some(peer_bin), Some(pg_bin_dir)) => {
            let postgres = Postgres::start(pg_bin_dir, scratch.path()).await?;
            let postgres_root = postgres.postmaster_pid();
            for (pool, line) in PEER_POOLS {
                // The peer starts on an empty table: each pool size sees the same database.
                let pool = pool.to_string();
                let peer = ServiceProcess::start_program(
                    peer_bin,
                    &[],
                    &[
                        ("DATABASE_URL", &postgres.url()),
                        ("PEER_LISTEN", "127.0.0.1:0"),
                        ("PEER_POOL_SIZE", &pool),
                    ],
                    "peer listening on",
                )
                .await;
                let peer_url = listen_url(&peer.ready_line, "listening on ");
                bench
                    .http_line(line, &peer_url, &peer, &peer, Some(postgres_root))
                    .await?;
                peer.terminate().await;
            }
            bench.take_best_peer_pool();
            postgres.stop().await;
            format!(
                "PostgreSQL {} from {} (fsync on, synchronous_commit on, defaults otherwise), its connection pool the best of {} at each concurrency (the sweep is under \"Peer pool sweep\")",
                command_output(&pg_bin_dir.join("postgres"), &["--version"]),
                args.pg_source,
                PEER_POOLS.map(|(pool, _)| pool.to_string()).join(", ")
            )
        }
        _ => "no PostgreSQL server was found (scripts/bench looks for one on the machine, then installs pgserver from PyPI): the peer line is missing".to_owned(),
    };

    // Without events first, on a data directory of its own; then the default worker, whose
    // relay publishes every create's event to JetStream (nats-server's CPU counts in both).
    let quiet_dir = scratch.path().join("worker-events-off");
    let quiet = ServiceProcess::start(
        "customers-worker",
        &[
            "--nats-url",
            &url,
            "--data-dir",
            quiet_dir.to_str().unwrap_or_default(),
            "--events",
            "off",
        ],
        "serving",
    )
    .await;
    bench
        .http_line(HTTP_EVENTS_OFF, &ingress_url, &ingress, &quiet, None)
        .await?;
    quiet.terminate().await;
    let _ = std::fs::remove_dir_all(&quiet_dir);
    settle().await;

    let data_dir = scratch.path().join("worker");
    let data = data_dir.to_str().unwrap_or_default().to_owned();
    let worker = ServiceProcess::start(
        "customers-worker",
        &["--nats-url", &url, "--data-dir", &data],
        "serving",
    )
    .await;
    bench
        .http_line(HTTP, &ingress_url, &ingress, &worker, None)
        .await?;
    settle().await;
    for &c in &args.concurrency {
        let target = Target::nats(&url, "customers.v1.create", c.clamp(1, 4)).await?;
        let pids = bench.pids(None, &worker, None);
        bench.measure(NATS, target, c, pids).await;
    }
    let mut growth = None;
    if args.preload > 0 {
        let fresh = footprint(bench.created(), &data_dir, &worker);
        // Memory is checked when the database holds `preload` customers, throughput when it
        // holds twice that, well past what the fresh runs saw.
        let at_target = preload_to(&url, fresh.stored, args.preload, &data_dir, &worker).await?;
        let grown =
            preload_to(&url, at_target.stored, 2 * args.preload, &data_dir, &worker).await?;
        settle().await;
        let pids = bench.pids(Some(&ingress), &worker, None);
        let target = Target::http(&ingress_url, Some(&bench.api_key)).await?;
        bench
            .measure(HTTP_LOADED, target, GROWTH_CONCURRENCY, pids)
            .await;
        let pids = bench.pids(None, &worker, None);
        let target = Target::nats(&url, "customers.v1.create", 4).await?;
        bench
            .measure(NATS_LOADED, target, GROWTH_CONCURRENCY, pids)
            .await;
        growth = Some([fresh, at_target, grown]);
    }
    worker.terminate().await;
    let events_apart =
        events_with_the_broker_apart(&mut bench, &url, &ingress, &ingress_url, scratch.path())
            .await?;
    ingress.terminate().await;
    let recovery = if args.recovery_creates > 0 {
        Some(
            measure_recovery(
                &url,
                &scratch.path().join("recovery"),
                args.recovery_creates,
            )
            .await?,
        )
    } else {
        None
    };

    if args.replicated {
        replicated_line(&mut bench, scratch.path(), &keys_file_arg).await?;
    }

    let stolen = stolen_share(&cpu_times_before, &machine_cpu_times());
    let rows = bench.rows;
    let mut report = report(&rows, &args, &peer_note, stolen);
    if let Some(events_apart) = &events_apart {
        let _ = writeln!(report, "\n{}", events_apart.note);
    }
    targets_section(
        &mut report,
        &rows,
        growth.as_ref(),
        recovery.as_ref(),
        events_apart.as_ref(),
    );
    peer_sweep_section(&mut report, &rows, &args.concurrency);
    cpu_section(&mut report, &rows);
    if let Some(growth) = &growth {
        growth_section(&mut report, &rows, growth);
    }
    if let Some(recovery) = &recovery {
        recovery_section(&mut report, recovery);
    }
    replication_section(&mut report, &rows);
    std::fs::write(&args.out, report)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    if let Some(dir) = args.chart.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&args.chart, chart(&rows, &args.concurrency))
        .map_err(|e| format!("cannot write {}: {e}", args.chart.display()))?;
    eprintln!(
        "bench: wrote {} and {}",
        args.out.display(),
        args.chart.display()
    );
    Ok(())
}

/// Lets the machine calm down before a line: `sync` writes back what earlier lines left dirty
/// (PostgreSQL's shutdown checkpoint, sled's files), which would otherwise compete with the
/// next line's fsyncs, then a moment for background threads to finish.
async fn settle() {
    let _ = tokio::process::Command::new("sync").status().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn plan(args: &BenchArgs, concurrency: usize) -> Plan {
    Plan {
        shape: Shape::Closed(concurrency),
        warmup: args.warmup,
        duration: args.duration,
        duplicate_ratio: 0.0,
        idempotency_keys: false,
        progress: false,
        requests: None,
    }
}

async fn start_forwarder(url: &str) -> ServiceProcess {
    ServiceProcess::start(
        "customers-loadgen",
        &["forward", "--nats-url", url, "--listen", "127.0.0.1:0"],
        "forwarder listening on",
    )
    .await
}

/// `http://` + the address that follows `marker` in a process's readiness line.
fn listen_url(ready_line: &str, marker: &str) -> String {
    let addr = ready_line.rsplit(marker).next().unwrap_or_default().trim();
    format!("http://{addr}")
}

struct Bench<'a> {
    args: &'a BenchArgs,
    /// Sent by every HTTP line, so each pays for the same request bytes; only the ingress
    /// checks it.
    api_key: String,
    rows: Vec<Row>,
    own_pid: u32,
    nats_pid: u32,
}

impl Bench<'_> {
    fn pids(
        &self,
        front: Option<&ServiceProcess>,
        responder: &ServiceProcess,
        postgres_root: Option<u32>,
    ) -> Pids {
        let front = front.and_then(ServiceProcess::pid).into_iter().collect();
        let responder = responder.pid().into_iter().collect();
        let postgres = postgres_root.map(process_tree).unwrap_or_default();
        [
            front,
            responder,
            vec![self.nats_pid],
            postgres,
            vec![self.own_pid],
        ]
    }

    /// One line over HTTP at every concurrency. The PostgreSQL peer is its own front and
    /// responder: it is counted once, as the front.
    async fn http_line(
        &mut self,
        line: &'static str,
        base_url: &str,
        front: &ServiceProcess,
        responder: &ServiceProcess,
        postgres_root: Option<u32>,
    ) -> Result<(), String> {
        settle().await;
        for &c in &self.args.concurrency {
            let mut pids = self.pids(Some(front), responder, postgres_root);
            if std::ptr::eq(front, responder) {
                pids[1].clear();
            }
            let target = Target::http(base_url, Some(&self.api_key)).await?;
            self.measure(line, target, c, pids).await;
        }
        Ok(())
    }

    async fn measure(
        &mut self,
        line: &'static str,
        target: Target,
        concurrency: usize,
        pids: Pids,
    ) {
        eprintln!("bench: {line}, concurrency {concurrency} ...");
        let started = std::time::Instant::now();
        let cpu_before = cpu_seconds(&pids);
        let summary = load::run(target, plan(self.args, concurrency)).await;
        // PostgreSQL starts a backend per new connection: count those too.
        let pids_after = [
            pids[0].clone(),
            pids[1].clone(),
            pids[2].clone(),
            pids[3]
                .first()
                .map(|&root| process_tree(root))
                .unwrap_or_default(),
            pids[4].clone(),
        ];
        let cpu_after = cpu_seconds(&pids_after);
        // Warm-up and measurement run at the same steady load, so each process's CPU
        // utilisation over the whole run divided by the measured rate is its cost per request.
        let wall = started.elapsed().as_secs_f64();
        let cpu_us = std::array::from_fn(|i| {
            ((cpu_after[i] - cpu_before[i]) / wall / summary.throughput.max(1.0) * 1e6).max(0.0)
        });
        eprintln!(
            "bench:   {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}, CPU {:.0} us per request",
            summary.throughput,
            summary.latency_ms[0],
            summary.latency_ms[2],
            summary.errors(),
            cpu_us.iter().sum::<f64>()
        );
        self.rows.push(Row {
            line,
            concurrency,
            summary,
            cpu_us,
        });
    }

    /// The peer line: at each concurrency, the pool size of the sweep that created the most.
    fn take_best_peer_pool(&mut self) {
        for &c in &self.args.concurrency {
            let best = self
                .rows
                .iter()
                .filter(|r| r.concurrency == c && is_peer_sweep(r.line))
                .max_by(|a, b| a.summary.throughput.total_cmp(&b.summary.throughput))
                .cloned();
            if let Some(best) = best {
                self.rows.push(Row { line: PEER, ..best });
            }
        }
    }

    /// Customers the service lines created so far.
    fn created(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| [HTTP, NATS, HTTP_LOADED, NATS_LOADED].contains(&r.line))
            .map(|r| r.summary.statuses.get(&201).copied().unwrap_or(0))
            .sum()
    }
}

/// The events on/off comparison with the broker apart, for the report.
struct EventsApart {
    /// How it was measured.
    note: String,
    /// Per concurrency, events on ÷ off of each pair of back-to-back runs.
    pair_ratios: Vec<(usize, Vec<f64>)>,
}

impl EventsApart {
    /// The median pair's ratio at `concurrency`, and the lowest and highest.
    fn ratio(&self, concurrency: usize) -> Option<(f64, f64, f64)> {
        let (_, ratios) = self.pair_ratios.iter().find(|(c, _)| *c == concurrency)?;
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        Some((
            *sorted.get(sorted.len() / 2)?,
            *sorted.first()?,
            *sorted.last()?,
        ))
    }
}

/// Events on against events off with nats-server on cores of its own (the upper half; the
/// ingress, the worker and the load generator on the lower half), as deployed, where the
/// broker runs on machines of its own: what the events cost the service, apart from the
/// broker's work of storing them. This machine's speed drifts from minute to minute by more
/// than the 10 % being checked, so each comparison is a pair of back-to-back runs at one
/// concurrency (a fresh worker each, the order alternating), repeated; the ratio of the
/// median pair counts, and each line shows its median run. Skipped (`None`) on one core or
/// without `taskset`.
async fn events_with_the_broker_apart(
    bench: &mut Bench<'_>,
    url: &str,
    ingress: &ServiceProcess,
    ingress_url: &str,
    scratch: &Path,
) -> Result<Option<EventsApart>, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = |pid: Option<u32>, cpus: &str| {
        pid.is_some_and(|pid| {
            std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", cpus, &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
    };
    let (service, broker, all) = (
        format!("0-{}", cores / 2 - 1),
        format!("{}-{}", cores / 2, cores.max(2) - 1),
        format!("0-{}", cores.max(1) - 1),
    );
    if cores < 2 || !pin(Some(bench.nats_pid), &broker) {
        eprintln!("bench: events with the broker apart skipped (needs 2 cores and taskset)");
        return Ok(None);
    }
    pin(Some(bench.own_pid), &service);
    pin(ingress.pid(), &service);
    let mut runs: Vec<Row> = Vec::new();
    let mut pair_ratios = Vec::new();
    let args = bench.args;
    for &c in &args.concurrency {
        let mut ratios = Vec::new();
        for round in 0..EVENTS_ROUNDS {
            let mut order = [(EVENTS_OFF_APART, "off"), (EVENTS_ON_APART, "on")];
            if round % 2 == 1 {
                order.reverse();
            }
            // Throughput with events off, then on.
            let mut pair = [0.0; 2];
            for (line, events) in order {
                let dir = scratch.join(format!("worker-apart-{events}-{c}-{round}"));
                let worker = ServiceProcess::start(
                    "customers-worker",
                    &[
                        "--nats-url",
                        url,
                        "--data-dir",
                        dir.to_str().unwrap_or_default(),
                        "--events",
                        events,
                    ],
                    "serving",
                )
                .await;
                pin(worker.pid(), &service);
                settle().await;
                let pids = bench.pids(Some(ingress), &worker, None);
                let target = Target::http(ingress_url, Some(&bench.api_key)).await?;
                bench.measure(line, target, c, pids).await;
                worker.terminate().await;
                let _ = std::fs::remove_dir_all(&dir);
                let run = bench.rows.pop().ok_or("the run just measured is missing")?;
                pair[usize::from(events == "on")] = run.summary.throughput;
                runs.push(run);
            }
            ratios.push(pair[1] / pair[0].max(1.0));
        }
        eprintln!("bench:   events on ÷ off at concurrency {c}, pair by pair: {ratios:.2?}");
        pair_ratios.push((c, ratios));
    }
    for who in [Some(bench.nats_pid), Some(bench.own_pid), ingress.pid()] {
        pin(who, &all);
    }
    for line in [EVENTS_OFF_APART, EVENTS_ON_APART] {
        for &c in &bench.args.concurrency {
            let mut samples: Vec<Row> = runs
                .extract_if(.., |r| r.line == line && r.concurrency == c)
                .collect();
            samples.sort_by(|a, b| a.summary.throughput.total_cmp(&b.summary.throughput));
            if !samples.is_empty() {
                let median = samples.swap_remove(samples.len() / 2);
                bench.rows.push(median);
            }
        }
    }
    Ok(Some(EventsApart {
        note: format!(
            "The two \"nats-server on cores of its own\" lines pin nats-server to cores {broker} and the ingress, the worker and the load generator to cores {service} (`taskset`), as deployed, where the broker has machines of its own. This machine's speed drifts from minute to minute by more than the 10 % being checked, so they are measured as {EVENTS_ROUNDS} pairs of back-to-back runs per concurrency (a fresh worker each, off first in one pair, on first in the next); each line shows its median run, and the targets below use the median pair's ratio."
        ),
        pair_ratios,
    }))
}

/// A throwaway PostgreSQL server on 127.0.0.1 and a free port, its data in `scratch`.
struct Postgres {
    server: ServiceProcess,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    async fn start(bin_dir: &Path, scratch: &Path) -> Result<Self, String> {
        let data = scratch.join("postgres");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        // PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
        let as_user = is_root().then_some("postgres");
        if let Some(user) = as_user {
            let status = std::process::Command::new("chown")
                .args(["-R", &format!("{user}:"), data.to_str().unwrap_or_default()])
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("cannot hand {} to {user}", data.display()));
            }
        }
        let command = |program: &str| -> (PathBuf, Vec<String>) {
            let program = bin_dir.join(program);
            match as_user {
                Some(user) => (
                    PathBuf::from("runuser"),
                    vec![
                        "-u".into(),
                        user.into(),
                        "--".into(),
                        program.display().to_string(),
                    ],
                ),
                None => (program, Vec::new()),
            }
        };
        let (initdb, mut initdb_args) = command("initdb");
        initdb_args.extend(
            [
                "-D",
                data.to_str().unwrap_or_default(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
            .map(str::to_owned),
        );
        let output = std::process::Command::new(&initdb)
            .args(&initdb_args)
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let (postgres, mut args) = command("postgres");
        args.extend(
            [
                "-D",
                data.to_str().unwrap_or_default(),
                "-p",
                &port.to_string(),
                "-k",
                data.to_str().unwrap_or_default(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=100",
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = ServiceProcess::start_program(
            &postgres,
            &args,
            &[],
            "database system is ready to accept connections",
        )
        .await;
        Ok(Self { server, data, port })
    }

    fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The postmaster's process id (the first line of `postmaster.pid`).
    fn postmaster_pid(&self) -> u32 {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn stop(self) {
        let pid = self.postmaster_pid();
        // SIGINT: PostgreSQL's fast shutdown.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let _ = self.server.exited().await;
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// `root` and every process descending from it (PostgreSQL's backends and helpers).
fn process_tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                    let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                    let ppid = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

/// CPU time (user + system, all threads) of each role's processes, in seconds.
fn cpu_seconds(pids: &Pids) -> [f64; ROLES.len()] {
    // /proc reports utime and stime in USER_HZ ticks, which Linux fixes at 100 per second.
    const TICKS_PER_SECOND: f64 = 100.0;
    let one = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the parenthesised command name; utime and stime are the 14th
                // and 15th fields of the whole line.
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let ticks =
                    fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / TICKS_PER_SECOND)
            })
            .unwrap_or(0.0)
    };
    std::array::from_fn(|i| pids[i].iter().map(|&pid| one(pid)).sum())
}

/// Creates customers over NATS (64 at a time) until the database holds `total`; returns its
/// footprint then.
async fn preload_to(
    url: &str,
    stored: u64,
    total: u64,
    data_dir: &Path,
    worker: &ServiceProcess,
) -> Result<Footprint, String> {
    let missing = total.saturating_sub(stored);
    eprintln!("bench: preloading {missing} customers over NATS, to {total} stored ...");
    let preload = create_over_nats(url, missing, true).await?;
    let preloaded = preload.statuses.get(&201).copied().unwrap_or(0);
    eprintln!("bench:   {preloaded} stored in {:.0} s", preload.seconds);
    Ok(footprint(stored + preloaded, data_dir, worker))
}

/// `count` creates over NATS straight to the worker, 64 at a time, as fast as they go.
async fn create_over_nats(url: &str, count: u64, progress: bool) -> Result<Summary, String> {
    Ok(load::run(
        Target::nats(url, "customers.v1.create", 4).await?,
        Plan {
            shape: Shape::Closed(GROWTH_CONCURRENCY),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(3600),
            duplicate_ratio: 0.0,
            idempotency_keys: false,
            progress,
            requests: Some(count),
        },
    )
    .await)
}

fn footprint(stored: u64, data_dir: &Path, worker: &ServiceProcess) -> Footprint {
    let rss_kib = worker
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    Footprint {
        stored,
        disk_bytes: dir_size(data_dir),
        rss_kib,
    }
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_size(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

/// Fills a journal with `creates` creates (checkpoints pushed out of reach), kills the
/// worker with SIGKILL and measures how long the next start takes to open and replay it.
async fn measure_recovery(url: &str, data_dir: &Path, creates: u64) -> Result<Recovery, String> {
    let data = data_dir.to_str().unwrap_or_default().to_owned();
    let args = [
        "--nats-url",
        url,
        "--data-dir",
        &data,
        "--checkpoint-bytes",
        "4294967296",
    ];
    let worker = ServiceProcess::start("customers-worker", &args, "serving").await;
    eprintln!("bench: {creates} creates into the journal, then kill -9 ...");
    let summary = create_over_nats(url, creates, false).await?;
    let journal_bytes = dir_size(&data_dir.join("journal"));
    worker.kill().await;
    let worker = ServiceProcess::start(
        "customers-worker",
        &args,
        "database opened and journal replayed",
    )
    .await;
    let field = |name: &str| -> u64 {
        worker
            .ready_line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or(0)
    };
    let recovery = Recovery {
        replayed_creates: field("replayed_puts") / 2,
        journal_bytes,
        creates: summary.statuses.get(&201).copied().unwrap_or(0),
        recovery_ms: field("recovery_ms"),
    };
    eprintln!(
        "bench:   replayed {} creates ({} MiB of journal) in {} ms",
        recovery.replayed_creates,
        recovery.journal_bytes >> 20,
        recovery.recovery_ms
    );
    worker.kill().await;
    Ok(recovery)
}

fn find<'a>(rows: &'a [Row], line: &str, concurrency: usize) -> Option<&'a Summary> {
    find_row(rows, line, concurrency).map(|r| &r.summary)
}

fn find_row<'a>(rows: &'a [Row], line: &str, concurrency: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.line == line && r.concurrency == concurrency)
}

/// `line`'s throughput over `other`'s at the same concurrency.
fn ratio(rows: &[Row], line: &str, other: &str, concurrency: usize) -> Option<f64> {
    Some(find(rows, line, concurrency)?.throughput / find(rows, other, concurrency)?.throughput)
}

fn command_output(program: &Path, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The machine's CPU time counters (the `cpu` line of /proc/stat).
fn machine_cpu_times() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.strip_prefix("cpu ")?.to_owned();
            Some(
                line.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The share of the machine's CPU time the hypervisor gave to other guests between two
/// readings (the 8th counter, `steal`): on a shared VM the figures are only comparable within
/// one run, and this says how disturbed that run was.
fn stolen_share(before: &[u64], after: &[u64]) -> Option<f64> {
    let delta: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = delta.iter().take(8).sum();
    let steal = *delta.get(7)?;
    (total > 0).then(|| steal as f64 / total as f64)
}

/// Requests one key may have in flight at the ingress: one key drives every client of a
/// line, up to 256 at once.
const PER_KEY_IN_FLIGHT: &str = "1024";

fn is_peer_sweep(line: &str) -> bool {
    PEER_POOLS.iter().any(|(_, sweep)| *sweep == line)
}

/// The peer at each pool size and concurrency, and which pool the peer line took.
fn peer_sweep_section(w: &mut String, rows: &[Row], levels: &[usize]) {
    if !rows.iter().any(|r| is_peer_sweep(r.line)) {
        return;
    }
    let _ = writeln!(
        w,
        "
## Peer pool sweep
"
    );
    let _ = writeln!(
        w,
        "The peer ran with each connection pool size at each concurrency (creates/s, p99 ms); the peer line above is the best of them at that concurrency, the pool an operator tuning this machine would keep. PostgreSQL's own advice is about two connections per core plus the disks; on two cores the larger pools lose to contention.\n"
    );
    let _ = writeln!(
        w,
        "| concurrency | {} | peer line uses |",
        PEER_POOLS
            .map(|(pool, _)| format!("pool {pool}"))
            .join(" | ")
    );
    let _ = writeln!(w, "|---:|{}---|", "---:|".repeat(PEER_POOLS.len()));
    for &c in levels {
        let cells = PEER_POOLS.map(|(_, line)| {
            find(rows, line, c).map_or("–".to_owned(), |s| {
                format!("{:.0} ({:.1})", s.throughput, s.latency_ms[2])
            })
        });
        let used = PEER_POOLS
            .iter()
            .filter_map(|(pool, line)| Some((pool, find(rows, line, c)?)))
            .max_by(|a, b| a.1.throughput.total_cmp(&b.1.throughput))
            .map_or("–".to_owned(), |(pool, _)| format!("pool {pool}"));
        let _ = writeln!(w, "| {c} | {} | {used} |", cells.join(" | "));
    }
}

fn fmt_ratio(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.2}"))
}

fn report(rows: &[Row], args: &BenchArgs, peer_note: &str, stolen: Option<f64>) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nats_bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Written by `scripts/bench` (`customers-loadgen bench`) on {}. Every figure below comes from this one run; compare lines by their ratios, since this machine's absolute figures drift by 20–30 % between runs.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let _ = writeln!(
        w,
        "* Machine: {cores} cores, {cpu}; load generator, nats-server, PostgreSQL, the peer, worker and ingress all on this machine; CPU time stolen by the hypervisor during the run: {}.",
        stolen.map_or("unknown".to_owned(), |s| format!("{:.0} %", s * 100.0))
    );
    let _ = writeln!(
        w,
        "* Versions: customers {}, {}, {}.",
        env!("CARGO_PKG_VERSION"),
        command_output(Path::new(&nats_bin), &["--version"]),
        command_output(Path::new("rustc"), &["--version"])
    );
    let _ = writeln!(w, "* Peer: {peer_note}.");
    let _ = writeln!(
        w,
        "* Method: closed loop, unique ~300-byte customers (varied optional fields), {} s measured after {} s warm-up per run; every line that stores anything makes it durable (fsync) before it answers. The ceiling is a bare hyper forwarder (one async-nats request per HTTP request; no routing, metrics, tracing or limits) in front of a responder that answers a fixed customer. The durable bound is the same forwarder in front of a responder that parses the body, appends each group to a file and calls `fdatasync` once per group. The peer is `bench/peer-postgres`: axum, a pool, one `INSERT` per create, a unique index on `lower(email)`.\n",
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "| line | concurrency | creates/s | p50 ms | p99 ms | p99.9 ms | errors | × ceiling | × durable bound | × peer |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows.iter().filter(|r| !is_peer_sweep(r.line)) {
        let s = &row.summary;
        let c = row.concurrency;
        let _ = writeln!(
            w,
            "| {} | {c} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
            row.line,
            s.throughput,
            s.latency_ms[0],
            s.latency_ms[2],
            s.latency_ms[3],
            s.errors(),
            fmt_ratio(ratio(rows, row.line, CEILING, c)),
            fmt_ratio(ratio(rows, row.line, DURABLE, c)),
            fmt_ratio(ratio(rows, row.line, PEER, c)),
        );
    }
    let chart = args
        .chart
        .strip_prefix(args.out.parent().unwrap_or(Path::new("")))
        .unwrap_or(&args.chart)
        .display()
        .to_string();
    let _ = writeln!(w, "\n![throughput and p99 against concurrency]({chart})");
    out
}

/// Issue 10's targets, each against this run's figures.
fn targets_section(
    w: &mut String,
    rows: &[Row],
    growth: Option<&[Footprint; 3]>,
    recovery: Option<&Recovery>,
    events_apart: Option<&EventsApart>,
) {
    let _ = writeln!(w, "\n## Targets (issue 10), checked against this run\n");
    let _ = writeln!(w, "| target | measured | met |");
    let _ = writeln!(w, "|---|---:|---|");
    let mut row = |target: String, measured: Option<f64>, unit: &str, met: &dyn Fn(f64) -> bool| {
        let (shown, verdict) = match measured {
            Some(v) => (
                format!("{v:.2}{unit}"),
                if met(v) { "yes" } else { "**no**" },
            ),
            None => ("–".to_owned(), "not measured"),
        };
        let _ = writeln!(w, "| {target} | {shown} | {verdict} |");
    };
    for (c, at_least) in [(16, 1.3), (64, 2.5), (256, 3.0)] {
        row(
            format!("service over HTTP ≥ {at_least}× the peer at c={c}"),
            ratio(rows, HTTP, PEER, c),
            "×",
            &|v| v >= at_least,
        );
    }
    for c in [64, 256] {
        row(
            format!("service over HTTP ≥ 0.5× the ceiling at c={c}"),
            ratio(rows, HTTP, CEILING, c),
            "×",
            &|v| v >= 0.5,
        );
    }
    for c in [16, 64, 256] {
        row(
            format!("service over HTTP ≥ 0.8× the durable bound at c={c}"),
            ratio(rows, HTTP, DURABLE, c),
            "×",
            &|v| v >= 0.8,
        );
    }
    for c in [1, 16, 64, 256] {
        row(
            format!(
                "events on ≥ 0.9× events off (HTTP), every process sharing the cores, one run each, at c={c}"
            ),
            ratio(rows, HTTP, HTTP_EVENTS_OFF, c),
            "×",
            &|v| v >= 0.9,
        );
    }
    row(
        "p99 ≤ 5 ms at c=64 (HTTP)".to_owned(),
        find(rows, HTTP, 64).map(|s| s.latency_ms[2]),
        " ms",
        &|v| v <= 5.0,
    );
    row(
        "one sequential client: p50 ≤ 0.5 ms (HTTP)".to_owned(),
        find(rows, HTTP, 1).map(|s| s.latency_ms[0]),
        " ms",
        &|v| v <= 0.5,
    );
    row(
        "worker CPU per create ≤ 40 µs at c=64 (HTTP)".to_owned(),
        find_row(rows, HTTP, 64).map(|r| r.cpu_us[1]),
        " µs",
        &|v| v <= 40.0,
    );
    row(
        format!(
            "at {} customers ≥ 0.8× fresh throughput (HTTP, c=64)",
            growth.map_or(0, |[_, _, grown]| grown.stored)
        ),
        growth.and_then(|_| ratio(rows, HTTP_LOADED, HTTP, 64)),
        "×",
        &|v| v >= 0.8,
    );
    row(
        format!(
            "worker RSS at {} customers ≤ 300 MB",
            growth.map_or(0, |[_, at_target, _]| at_target.stored)
        ),
        growth.map(|[_, at_target, _]| at_target.rss_kib as f64 * 1024.0 / 1e6),
        " MB",
        &|v| v <= 300.0,
    );
    row(
        format!(
            "replaying a journal of {} creates ≤ 2 s",
            recovery.map_or(0, |r| r.replayed_creates)
        ),
        recovery.map(|r| r.recovery_ms as f64 / 1000.0),
        " s",
        &|v| v <= 2.0,
    );
    for c in [1, 16, 64, 256] {
        let measured = events_apart.and_then(|events| events.ratio(c));
        let (shown, verdict) = match measured {
            Some((median, lowest, highest)) => (
                format!("{median:.2}× (pairs {lowest:.2}–{highest:.2})"),
                if median >= 0.9 { "yes" } else { "**no**" },
            ),
            None => ("–".to_owned(), "not measured"),
        };
        let _ = writeln!(
            w,
            "| events on ≥ 0.9× events off (HTTP), nats-server on cores of its own, median of {EVENTS_ROUNDS} back-to-back pairs, at c={c} (issue 13) | {shown} | {verdict} |"
        );
    }
}

/// Where the CPU goes at concurrency 64: with every process on the same cores, a line's
/// throughput is bounded by cores ÷ its total CPU time per request.
fn cpu_section(w: &mut String, rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let _ = writeln!(
        w,
        "\n## CPU per request (concurrency {GROWTH_CONCURRENCY})\n"
    );
    let _ = writeln!(
        w,
        "CPU time (user + system, all threads) each process used during the run, divided by the requests it served. The HTTP front is the forwarder, the product ingress or the peer; the responder is the echo, the durable echo or the worker. The bound is {cores} cores ÷ the total; the ratio bound is the ceiling's total ÷ this line's total. How to profile inside a process: docs/PROFILE.md.\n"
    );
    let _ = writeln!(
        w,
        "| line | {} | total µs | bound/s | ratio bound | measured/s |",
        ROLES.map(|r| format!("{r} µs")).join(" | ")
    );
    let _ = writeln!(
        w,
        "|---|{}---:|---:|---:|---:|",
        "---:|".repeat(ROLES.len())
    );
    let ceiling_total =
        find_row(rows, CEILING, GROWTH_CONCURRENCY).map(|r| r.cpu_us.iter().sum::<f64>());
    for row in rows
        .iter()
        .filter(|r| r.concurrency == GROWTH_CONCURRENCY && !is_peer_sweep(r.line))
    {
        let total: f64 = row.cpu_us.iter().sum();
        let _ = writeln!(
            w,
            "| {} | {} | {total:.0} | {:.0} | {} | {:.0} |",
            row.line,
            row.cpu_us.map(|us| format!("{us:.0}")).join(" | "),
            cores * 1e6 / total,
            fmt_ratio(ceiling_total.map(|c| c / total)),
            row.summary.throughput
        );
    }
}

fn growth_section(out: &mut String, rows: &[Row], [fresh, at_target, grown]: &[Footprint; 3]) {
    let c = GROWTH_CONCURRENCY;
    let _ = writeln!(out, "\n## Cost as data grows\n");
    let _ = writeln!(
        out,
        "Concurrency {c}. \"Fresh\" is the runs above, on a database that starts empty and holds {} customers after them. Then customers are created through the normal create path (NATS direct) until the database holds {} (where size and memory are taken for the target) and on until it holds {}, where the same runs are repeated.\n",
        fresh.stored, at_target.stored, grown.stored
    );
    let _ = writeln!(
        out,
        "| | fresh | at {} | at {} | ratio to fresh |",
        at_target.stored, grown.stored
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (line, loaded) in [(HTTP, HTTP_LOADED), (NATS, NATS_LOADED)] {
        if let (Some(a), Some(b)) = (find(rows, line, c), find(rows, loaded, c)) {
            let _ = writeln!(
                out,
                "| {line}, creates/s | {:.0} | | {:.0} | {:.2} |",
                a.throughput,
                b.throughput,
                b.throughput / a.throughput
            );
            let _ = writeln!(
                out,
                "| {line}, p99 ms | {:.2} | | {:.2} | |",
                a.latency_ms[2], b.latency_ms[2]
            );
        }
    }
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let _ = writeln!(
        out,
        "| data directory on disk, MiB | {:.0} | {:.0} | {:.0} | |",
        mib(fresh.disk_bytes),
        mib(at_target.disk_bytes),
        mib(grown.disk_bytes)
    );
    let _ = writeln!(
        out,
        "| worker RSS, MiB | {:.0} | {:.0} | {:.0} | |",
        fresh.rss_kib as f64 / 1024.0,
        at_target.rss_kib as f64 / 1024.0,
        grown.rss_kib as f64 / 1024.0
    );
}

/// The replicated topology over HTTP at every concurrency: a 3-node NATS cluster with
/// JetStream, three workers in replicated mode (the primary appends each group to a
/// 3-replica stream before it answers; the standbys apply it too) and the ingress.
async fn replicated_line(
    bench: &mut Bench<'_>,
    scratch: &Path,
    keys_file: &str,
) -> Result<(), String> {
    settle().await;
    let cluster = NatsCluster::start().await;
    let urls = cluster.urls();
    let mut workers = Vec::new();
    for n in 0..3 {
        let dir = scratch.join(format!("replica-{n}"));
        let dir = dir.to_str().unwrap_or_default();
        let args = [
            "--nats-url",
            &urls,
            "--data-dir",
            dir,
            "--replication",
            "jetstream",
            "--replication-replicas",
            "3",
            "--events-replicas",
            "3",
        ];
        workers.push(ServiceProcess::start("customers-worker", &args, "serving").await);
    }
    let ingress = ServiceProcess::start(
        "customers-ingress",
        &[
            "--nats-url",
            &urls,
            "--listen",
            "127.0.0.1:0",
            "--keys-file",
            keys_file,
            "--max-in-flight-per-credential",
            PER_KEY_IN_FLIGHT,
        ],
        "serving",
    )
    .await;
    let url = listen_url(&ingress.ready_line, "listen=");
    // One of the workers takes the lease a moment after they start.
    let client = cluster.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client
            .request(
                "customers.v1.create",
                r#"{"name":"Warm Up","email":"warm-up@bench.example.com"}"#.into(),
            )
            .await;
        if reply.is_ok_and(|r| {
            r.headers
                .is_none_or(|h| h.get("Nats-Service-Error-Code") != Some(&"503".into()))
        }) {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err("no replicated worker became the primary".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &c in &bench.args.concurrency {
        let pids: Pids = [
            ingress.pid().into_iter().collect(),
            workers.iter().filter_map(ServiceProcess::pid).collect(),
            cluster.nodes.iter().map(NatsServer::pid).collect(),
            Vec::new(),
            vec![bench.own_pid],
        ];
        let target = Target::http(&url, Some(&bench.api_key)).await?;
        bench.measure(HTTP_REPLICATED, target, c, pids).await;
    }
    ingress.terminate().await;
    for worker in workers {
        worker.terminate().await;
    }
    Ok(())
}

/// Replicated mode beside the single worker, from this run.
fn replication_section(w: &mut String, rows: &[Row]) {
    if find(rows, HTTP_REPLICATED, 64).is_none() {
        return;
    }
    let _ = writeln!(w, "\n## Replicated mode (issue 14)\n");
    let _ = writeln!(
        w,
        "Three workers in replicated mode on a 3-node NATS cluster (all on this machine's two cores), over HTTP, beside one worker on its own disk. Replicated, a group is durable once JetStream's quorum (2 of 3 nodes) has it: the primary's local journal is not fsynced, the append is one request–reply to the stream's leader, which replicates to a follower before it acknowledges; the two standbys apply every group too.\n"
    );
    let _ = writeln!(
        w,
        "| concurrency | single worker creates/s (p99 ms) | replicated creates/s (p99 ms) | replicated ÷ single |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|");
    for row in rows.iter().filter(|r| r.line == HTTP_REPLICATED) {
        let c = row.concurrency;
        let single = find(rows, HTTP, c);
        let _ = writeln!(
            w,
            "| {c} | {} | {:.0} ({:.2}) | {} |",
            single.map_or("–".to_owned(), |s| format!(
                "{:.0} ({:.2})",
                s.throughput, s.latency_ms[2]
            )),
            row.summary.throughput,
            row.summary.latency_ms[2],
            fmt_ratio(ratio(rows, HTTP_REPLICATED, HTTP, c)),
        );
    }
}

fn recovery_section(out: &mut String, recovery: &Recovery) {
    let _ = writeln!(out, "\n## Recovery after `kill -9`\n");
    let _ = writeln!(
        out,
        "A fresh worker with checkpoints pushed out of reach took {} creates (NATS direct, concurrency {GROWTH_CONCURRENCY}), leaving {:.1} MiB of journal; it was killed with SIGKILL and started again. Opening sled, replaying the journal ({} creates) and the checkpoint after it took **{} ms** (the worker's `recovery_ms`). With the default `--checkpoint-bytes` (32 MiB) the journal holds about {} creates at most.",
        recovery.creates,
        recovery.journal_bytes as f64 / 1048576.0,
        recovery.replayed_creates,
        recovery.recovery_ms,
        ((32u64 << 20) * recovery.replayed_creates)
            .checked_div(recovery.journal_bytes)
            .unwrap_or(0)
    );
}

/// One figure of a run, as plotted.
type Metric = fn(&Summary) -> f64;

/// Two panels (throughput, p99) with one line per series, concurrency on a log scale.
fn chart(rows: &[Row], levels: &[usize]) -> String {
    const SERIES: [(&str, &str); 7] = [
        (CEILING, "#888888"),
        (DURABLE, "#2ca02c"),
        (PEER, "#9467bd"),
        (HTTP_EVENTS_OFF, "#17becf"),
        (HTTP, "#1f77b4"),
        (NATS, "#d62728"),
        (HTTP_REPLICATED, "#ff7f0e"),
    ];
    let (width, height, margin) = (960.0, 420.0, 60.0);
    let panel_width = (width - 3.0 * margin) / 2.0;
    let plot_height = height - 2.0 * margin - 70.0;
    let x_of = |i: usize| {
        if levels.len() > 1 {
            i as f64 / (levels.len() - 1) as f64 * panel_width
        } else {
            panel_width / 2.0
        }
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    svg.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let panels: [(&str, Metric); 2] = [
        ("creates/s", |s| s.throughput),
        ("p99 latency, ms", |s| s.latency_ms[2]),
    ];
    for (p, (title, value)) in panels.iter().enumerate() {
        let left = margin + p as f64 * (panel_width + margin);
        let top = margin;
        let max = rows
            .iter()
            .filter(|r| SERIES.iter().any(|(line, _)| *line == r.line))
            .map(|r| value(&r.summary))
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.1;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="14" text-anchor="middle">{title}</text>"#,
            left + panel_width / 2.0,
            top - 20.0
        );
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
            top + plot_height,
            left + panel_width,
            top + plot_height,
            top + plot_height
        );
        for k in 0..=4 {
            let v = max * k as f64 / 4.0;
            let y = top + plot_height - v / max * plot_height;
            let label = if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            };
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end">{label}</text><line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/>"##,
                left - 5.0,
                y + 4.0,
                left + panel_width
            );
        }
        for (i, level) in levels.iter().enumerate() {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{level}</text>"#,
                left + x_of(i),
                top + plot_height + 16.0
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">concurrency</text>"#,
            left + panel_width / 2.0,
            top + plot_height + 32.0
        );
        for (line, color) in SERIES {
            let points: Vec<String> = levels
                .iter()
                .enumerate()
                .filter_map(|(i, &c)| {
                    find(rows, line, c).map(|s| {
                        format!(
                            "{:.1},{:.1}",
                            left + x_of(i),
                            top + plot_height - value(s) / max * plot_height
                        )
                    })
                })
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            for point in &points {
                let (x, y) = point.split_once(',').unwrap_or_default();
                let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
            }
        }
    }
    for (i, (line, color)) in SERIES.iter().enumerate() {
        let x = margin + (i % 3) as f64 * 290.0;
        let y = height - 40.0 + (i / 3) as f64 * 20.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{y}">{line}</text>"#,
            y - 6.0,
            x + 20.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
