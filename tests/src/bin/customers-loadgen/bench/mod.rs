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
//! * updates, deletes and a mixed load (`changes`), by the service over HTTP and by the peer
//!   with its best pool of the create sweep.
//!
//! Then the cost as data grows (a preload through the create path), and the time to
//! recover a journal of N creates after `kill -9`. Writes a Markdown report with ratios,
//! the targets of issue 10 checked against this run, CPU per request, and an SVG chart.

//!
//! The parts: [`lines`] (what is measured), [`setups`] (lines with a set-up of their own),
//! [`postgres`] (the peer's database), [`procfs`] (CPU and memory from /proc),
//! [`report`](mod@report) (the Markdown) and [`chart`] (the SVG).

mod changes;
mod chart;
mod finds;
mod lines;
mod postgres;
mod procfs;
mod report;
mod setups;

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use customers_ingress::auth::keys_file::Scope;
use customers_tests::{NatsServer, ServiceProcess, UNLIMITED, mint_key};

use self::changes::{Change, Changes, Seed};
use self::finds::{Find, Finds};
use self::lines::{Line, PEER_POOL_SIZES, Pids, Row};
use self::postgres::Postgres;
use self::procfs::{cpu_seconds, dir_size, machine_cpu_times, process_tree, rss_kib, stolen_share};
use self::report::{
    changes_section, command_output, cpu_section, finds_section, growth_section,
    peer_sweep_section, peer_targets_section, recovery_section, replication_section, report,
    targets_section,
};
use self::setups::{events_with_the_broker_apart, replicated_line};
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

/// Pairs of runs (events off and on) per concurrency with the broker apart.
const EVENTS_ROUNDS: usize = 5;
const GROWTH_CONCURRENCY: usize = 64;
/// The changes measured at every concurrency.
const EVERY_CONCURRENCY: [Change; 2] = [Change::Updates, Change::Gets];
/// The changes measured once, at [`GROWTH_CONCURRENCY`]: each requester deletes customers it
/// created first, so deletes are bounded by what was created. The mixed load comes first.
const ONCE: [Change; 2] = [Change::Mixed, Change::Deletes];
/// Requesters of the find lines.
const FIND_CONCURRENCY: usize = 16;

/// Size and memory of the worker at one point of the run.
struct Footprint {
    stored: u64,
    disk_bytes: u64,
    rss_kib: u64,
    /// How long the relay took, after the preload that led here, to publish every stored
    /// customer's event (the runs and the memory figure wait for it).
    relay_caught_up: Duration,
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
        api_key: mint_key(&keys_file, &[Scope::Read, Scope::Write], Some(UNLIMITED)),
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
        .http_line(Line::Ceiling, &forwarder_url, &forwarder, &echo, None)
        .await?;
    bench
        .http_line(Line::IngressEcho, &ingress_url, &ingress, &echo, None)
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
        .http_line(Line::Durable, &forwarder_url, &forwarder, &durable, None)
        .await?;
    durable.terminate().await;
    forwarder.terminate().await;

    let peer_note = match (&args.peer_bin, &args.pg_bin_dir) {
        (Some(peer_bin), Some(pg_bin_dir)) => {
            let postgres = Postgres::start(pg_bin_dir, scratch.path()).await?;
            let postgres_root = postgres.postmaster_pid();
            for pool in PEER_POOL_SIZES {
                // The peer starts on an empty table: each pool size sees the same database.
                let line = Line::PeerSweep { pool };
                let (peer, peer_url) = start_peer(peer_bin, &postgres, pool).await;
                bench
                    .http_line(line, &peer_url, &peer, &peer, Some(postgres_root))
                    .await?;
                peer.terminate().await;
            }
            bench.take_best_peer_pool();
            for &c in &args.concurrency {
                let pool = bench.best_peer_pool(c);
                let (peer, peer_url) = start_peer(peer_bin, &postgres, pool).await;
                let mut pids = bench.pids(Some(&peer), &peer, Some(postgres_root));
                pids[1].clear();
                bench
                    .changes_lines(true, &peer_url, c, &EVERY_CONCURRENCY, &pids)
                    .await?;
                if c == GROWTH_CONCURRENCY {
                    bench
                        .changes_lines(true, &peer_url, c, &ONCE, &pids)
                        .await?;
                }
                peer.terminate().await;
            }
            if args.preload > 0 {
                // As many customers as the service holds for its find lines, with the
                // indexes those queries need.
                let pool = bench.best_peer_pool(FIND_CONCURRENCY);
                let (peer, peer_url) = start_find_peer(peer_bin, &postgres, pool).await;
                let count = 2 * args.preload;
                eprintln!("bench: preloading {count} customers into the peer ...");
                let target = Target::http(&peer_url, None).await?;
                let loaded = load::run(target, preload_plan(count)).await;
                eprintln!("bench:   stored in {:.0} s", loaded.seconds);
                post(&peer_url, "/admin/analyze").await?;
                let mut pids = bench.pids(Some(&peer), &peer, Some(postgres_root));
                pids[1].clear();
                bench.find_lines(true, &peer_url, &pids).await?;
                peer.terminate().await;
            }
            postgres.stop().await;
            format!(
                "PostgreSQL {} from {} (fsync on, synchronous_commit on, defaults otherwise), its connection pool the best of {} at each concurrency (the sweep is under \"Peer pool sweep\")",
                command_output(&pg_bin_dir.join("postgres"), &["--version"]),
                args.pg_source,
                PEER_POOL_SIZES.map(|pool| pool.to_string()).join(", ")
            )
        }
        _ => "no PostgreSQL server was found (scripts/bench looks for one on the machine, then installs pgserver from PyPI): the peer line is missing".to_owned(),
    };

    // Without events first, on a data directory of its own; then the default worker, whose
    // relay publishes every create's event to JetStream (nats-server's CPU counts in both).
    let quiet_dir = scratch.path().join("worker-events-off");
    let quiet = start_worker(&url, &quiet_dir, &["--events", "off"]).await;
    bench
        .http_line(Line::HttpEventsOff, &ingress_url, &ingress, &quiet, None)
        .await?;
    quiet.terminate().await;
    let _ = std::fs::remove_dir_all(&quiet_dir);
    settle().await;

    let data_dir = scratch.path().join("worker");
    let worker = start_worker(&url, &data_dir, &[]).await;
    bench
        .http_line(Line::Http, &ingress_url, &ingress, &worker, None)
        .await?;
    settle().await;
    for &c in &args.concurrency {
        let target = Target::nats(&url, "customers.v1.create", c.clamp(1, 4)).await?;
        let pids = bench.pids(None, &worker, None);
        bench.measure(Line::Nats, target, c, pids).await;
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
            .measure(Line::HttpLoaded, target, GROWTH_CONCURRENCY, pids)
            .await;
        let pids = bench.pids(None, &worker, None);
        let target = Target::nats(&url, "customers.v1.create", 4).await?;
        bench
            .measure(Line::NatsLoaded, target, GROWTH_CONCURRENCY, pids)
            .await;
        settle().await;
        let pids = bench.pids(Some(&ingress), &worker, None);
        bench.find_lines(false, &ingress_url, &pids).await?;
        growth = Some([fresh, at_target, grown]);
    }
    worker.terminate().await;
    // The changes on a worker of their own: its relay's erasures (deletes) go on for a while
    // after the delete line and would weigh on the next line's nats-server; stopping the
    // worker ends them.
    let changes_dir = scratch.path().join("worker-changes");
    let changes_worker = start_worker(&url, &changes_dir, &[]).await;
    settle().await;
    for &c in &args.concurrency {
        let pids = bench.pids(Some(&ingress), &changes_worker, None);
        bench
            .changes_lines(false, &ingress_url, c, &EVERY_CONCURRENCY, &pids)
            .await?;
    }
    // Last: the relay goes on erasing the deleted customers' messages from the stream for a
    // while after the delete line, which would weigh on any line after it.
    let pids = bench.pids(Some(&ingress), &changes_worker, None);
    bench
        .changes_lines(false, &ingress_url, GROWTH_CONCURRENCY, &ONCE, &pids)
        .await?;
    changes_worker.terminate().await;
    let _ = std::fs::remove_dir_all(&changes_dir);
    settle().await;
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
    peer_targets_section(&mut report, &rows, &args.concurrency);
    changes_section(&mut report, &rows, &args.concurrency);
    if let Some([_, _, grown]) = &growth {
        finds_section(&mut report, &rows, grown.stored);
    }
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
    std::fs::write(&args.chart, chart::chart(&rows, &args.concurrency))
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

/// A worker on `nats_url` with its data in `data_dir` and `flags`, once it serves.
async fn start_worker(nats_url: &str, data_dir: &Path, flags: &[&str]) -> ServiceProcess {
    let data_dir = data_dir.to_str().unwrap_or_default();
    let mut args = vec!["--nats-url", nats_url, "--data-dir", data_dir];
    args.extend_from_slice(flags);
    ServiceProcess::start("customers-worker", &args, "serving").await
}

/// The peer on `postgres` with a pool of `pool` connections (on an empty table), and its URL.
async fn start_peer(peer_bin: &Path, postgres: &Postgres, pool: usize) -> (ServiceProcess, String) {
    start_peer_with(peer_bin, postgres, pool, "0").await
}

/// The peer with the indexes its list filters and change feed need.
async fn start_find_peer(
    peer_bin: &Path,
    postgres: &Postgres,
    pool: usize,
) -> (ServiceProcess, String) {
    start_peer_with(peer_bin, postgres, pool, "1").await
}

async fn start_peer_with(
    peer_bin: &Path,
    postgres: &Postgres,
    pool: usize,
    find_indexes: &str,
) -> (ServiceProcess, String) {
    let pool = pool.to_string();
    let peer = ServiceProcess::start_program(
        peer_bin,
        &[],
        &[
            ("DATABASE_URL", &postgres.url()),
            ("PEER_LISTEN", "127.0.0.1:0"),
            ("PEER_POOL_SIZE", &pool),
            ("PEER_FIND_INDEXES", find_indexes),
        ],
        "peer listening on",
    )
    .await;
    let url = listen_url(&peer.ready_line, "listening on ");
    (peer, url)
}

/// A `POST` of `path` with no body at `base_url`; an error unless it answers 2xx.
async fn post(base_url: &str, path: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("{base_url}: {e}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    match answer.split(' ').nth(1) {
        Some(status) if status.starts_with('2') => Ok(()),
        _ => Err(format!(
            "POST {path}: {}",
            answer.lines().next().unwrap_or("")
        )),
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
        line: Line,
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

    /// Every find line at [`FIND_CONCURRENCY`], by the peer or the service at `base_url`.
    async fn find_lines(&mut self, peer: bool, base_url: &str, pids: &Pids) -> Result<(), String> {
        for find in Find::ALL {
            let target = Target::http(base_url, Some(&self.api_key)).await?;
            let plan = plan(self.args, FIND_CONCURRENCY);
            let run = load::run_workloads(target, plan, |_| Finds::new(find));
            let run = async { run.await.0 };
            let line = Line::Find { find, peer };
            self.measure_run(line, FIND_CONCURRENCY, pids.clone(), run)
                .await;
        }
        Ok(())
    }

    async fn measure(&mut self, line: Line, target: Target, concurrency: usize, pids: Pids) {
        let run = load::run(target, plan(self.args, concurrency));
        self.measure_run(line, concurrency, pids, run).await;
    }

    /// The `kinds` of changes at `concurrency`, by the peer or the service at `base_url`.
    async fn changes_lines(
        &mut self,
        peer: bool,
        base_url: &str,
        concurrency: usize,
        kinds: &[Change],
        pids: &Pids,
    ) -> Result<(), String> {
        let run = format!("{}-{concurrency}", self.rows.len());
        // About what either side deletes per second at this concurrency, with room to spare.
        let span = (self.args.warmup + self.args.duration).as_secs_f64();
        let deletes = (span * 25_000.0 / concurrency as f64).ceil() as usize;
        for &change in kinds {
            let target = Target::http(base_url, Some(&self.api_key)).await?;
            let seeds = change.seeds_per_requester(deletes);
            let seed_plan = Plan {
                warmup: Duration::ZERO,
                duration: Duration::from_secs(3600),
                ..plan(self.args, concurrency)
            };
            let tag = format!("{run}-{change:?}-{peer}");
            let (_, seeded) =
                load::run_workloads(target.clone(), seed_plan, |s| Seed::new(&tag, s, seeds)).await;
            let mut owned: Vec<_> = seeded.into_iter().map(|seed| seed.owned).collect();
            let line = Line::Changes { change, peer };
            let measured = load::run_workloads(target, plan(self.args, concurrency), |s| {
                Changes::new(change, &tag, s, std::mem::take(&mut owned[s]))
            });
            let measured = async { measured.await.0 };
            self.measure_run(line, concurrency, pids.clone(), measured)
                .await;
        }
        Ok(())
    }

    /// Measures the run `run` makes (of `line` at `concurrency`), with the CPU of `pids`.
    async fn measure_run(
        &mut self,
        line: Line,
        concurrency: usize,
        pids: Pids,
        run: impl std::future::Future<Output = Summary>,
    ) {
        eprintln!("bench: {line}, concurrency {concurrency} ...");
        let started = std::time::Instant::now();
        let cpu_before = cpu_seconds(&pids);
        let summary = run.await;
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
                .filter(|r| r.concurrency == c && r.line.is_peer_sweep())
                .max_by(|a, b| a.summary.throughput.total_cmp(&b.summary.throughput))
                .cloned();
            if let Some(best) = best {
                self.rows.push(Row {
                    line: Line::Peer,
                    ..best
                });
            }
        }
    }

    /// The pool of the sweep that created the most at `concurrency` (8 without a sweep).
    fn best_peer_pool(&self, concurrency: usize) -> usize {
        self.rows
            .iter()
            .filter(|r| r.concurrency == concurrency)
            .filter_map(|r| match r.line {
                Line::PeerSweep { pool } => Some((pool, r.summary.throughput)),
                _ => None,
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(8, |(pool, _)| pool)
    }

    /// Customers the service lines created so far (in the main worker's database; the
    /// changes run on a worker of their own).
    fn created(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| {
                [Line::Http, Line::Nats, Line::HttpLoaded, Line::NatsLoaded].contains(&r.line)
            })
            .map(|r| r.summary.statuses.get(&201).copied().unwrap_or(0))
            .sum()
    }
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
    // A preload outruns the relay: measured before it catches up, the runs after it would
    // share the cores with the publication of the preload's events.
    let relay_caught_up = events_published(url, stored + preloaded).await?;
    eprintln!(
        "bench:   the relay published every event {:.1} s later",
        relay_caught_up.as_secs_f64()
    );
    Ok(Footprint {
        relay_caught_up,
        ..footprint(stored + preloaded, data_dir, worker)
    })
}

/// Waits until the events stream holds at least `count` messages (one `customer.created`
/// per stored customer counted; the warm-ups stored more) and stops growing; how long that
/// took.
async fn events_published(url: &str, count: u64) -> Result<Duration, String> {
    const PATIENCE: Duration = Duration::from_secs(300);
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut before = None;
    loop {
        let now = customers_tests::events::stored_count(&client).await;
        if now >= count && before == Some(now) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            return Err(format!(
                "the relay did not publish {count} events in {PATIENCE:?}"
            ));
        }
        before = Some(now);
        // The stream announces nothing: its count is read again.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `count` creates over NATS straight to the worker, 64 at a time, as fast as they go.
async fn create_over_nats(url: &str, count: u64, progress: bool) -> Result<Summary, String> {
    let plan = Plan {
        progress,
        ..preload_plan(count)
    };
    Ok(load::run(Target::nats(url, "customers.v1.create", 4).await?, plan).await)
}

/// `count` creates, 64 at a time, as fast as they go.
fn preload_plan(count: u64) -> Plan {
    Plan {
        shape: Shape::Closed(GROWTH_CONCURRENCY),
        warmup: Duration::ZERO,
        duration: Duration::from_secs(3600),
        duplicate_ratio: 0.0,
        idempotency_keys: false,
        progress: false,
        requests: Some(count),
    }
}

fn footprint(stored: u64, data_dir: &Path, worker: &ServiceProcess) -> Footprint {
    Footprint {
        stored,
        disk_bytes: dir_size(data_dir),
        rss_kib: worker.pid().map_or(0, rss_kib),
        relay_caught_up: Duration::ZERO,
    }
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
    let creates = summary.statuses.get(&201).copied().unwrap_or(0);
    let recovery = Recovery {
        // With checkpoints out of reach, the journal holds every acknowledged create (each
        // a record of several puts: the customer, its email, its event, its index entries).
        replayed_creates: creates.min(field("replayed_puts")),
        journal_bytes,
        creates,
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

/// Requests one key may have in flight at the ingress: one key drives every client of a
/// line, up to 256 at once.
const PER_KEY_IN_FLIGHT: &str = "1024";
