//! The standard benchmark: a fresh stack on this machine (nats-server, and the release
//! binaries next to this one), the architecture's ceiling (ingress → NATS → echo responder),
//! then the real service over HTTP and over NATS direct, at each concurrency; then a
//! Markdown report with the ratio of each figure to the ceiling and an SVG chart.

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use customers_tests::{NatsServer, ServiceProcess};

use crate::load::{self, Plan, Shape, Summary, Target};

#[derive(Args)]
pub struct BenchArgs {
    /// Measured time of each run.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before each run's measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrency levels (closed loop).
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 256])]
    concurrency: Vec<usize>,
    /// Customers stored before the "cost as data grows" runs at concurrency 64 (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    preload: u64,
    /// Markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// SVG chart of throughput and p99 against concurrency.
    #[arg(long, default_value = "docs/benchmark.svg")]
    chart: PathBuf,
}

const CEILING: &str = "ceiling: HTTP → NATS → echo";
const HTTP: &str = "service over HTTP";
const NATS: &str = "service over NATS direct";
const HTTP_LOADED: &str = "service over HTTP, after preload";
const NATS_LOADED: &str = "service over NATS direct, after preload";
const GROWTH_CONCURRENCY: usize = 64;

/// Size and memory of the worker at one point of the run.
struct Footprint {
    stored: u64,
    disk_bytes: u64,
    rss_kib: u64,
}

fn footprint(stored: u64, data_dir: &std::path::Path, worker: &ServiceProcess) -> Footprint {
    fn size(path: &std::path::Path) -> u64 {
        std::fs::read_dir(path).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
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
        disk_bytes: size(data_dir),
        rss_kib,
    }
}

struct Row {
    line: &'static str,
    concurrency: usize,
    summary: Summary,
    /// CPU time per request of each process of the run, in microseconds, in [`ROLES`] order.
    cpu_us: [f64; ROLES.len()],
}

/// The processes whose CPU time the benchmark accounts for; the responder is the echo
/// responder for the ceiling and the worker otherwise.
const ROLES: [&str; 4] = ["ingress", "responder", "nats-server", "load generator"];

/// CPU time (user + system, all threads) of each process in [`ROLES`] order, in seconds.
/// On this machine the processes share two cores, so CPU per request, not wall time, is
/// what bounds the throughput of each line (see docs/PROFILE.md).
fn cpu_seconds(pids: &[Option<u32>; ROLES.len()]) -> [f64; ROLES.len()] {
    // /proc reports utime and stime in USER_HZ ticks, which Linux fixes at 100 per second.
    const TICKS_PER_SECOND: f64 = 100.0;
    pids.map(|pid| {
        pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|stat| {
                // Fields after the parenthesised command name; utime and stime are the 14th and
                // 15th fields of the whole line.
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let ticks =
                    fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / TICKS_PER_SECOND)
            })
            .unwrap_or(0.0)
    })
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    let nats = NatsServer::start();
    let url = nats.url();
    let data_dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let plan = |concurrency| Plan {
        shape: Shape::Closed(concurrency),
        warmup: args.warmup,
        duration: args.duration,
        duplicate_ratio: 0.0,
        idempotency_keys: false,
        progress: false,
        requests: None,
    };
    let cpu_times_before = machine_cpu_times();
    let mut rows = Vec::new();
    let measure = async |line: &'static str,
                         target: Target,
                         concurrency: usize,
                         pids: [Option<u32>; ROLES.len()]| {
        eprintln!("bench: {line}, concurrency {concurrency} ...");
        let started = std::time::Instant::now();
        let cpu_before = cpu_seconds(&pids);
        let summary = load::run(target, plan(concurrency)).await;
        let cpu_after = cpu_seconds(&pids);
        // Warm-up and measurement run at the same steady load, so each process's CPU
        // utilisation over the whole run divided by the measured rate is its cost per request.
        let wall = started.elapsed().as_secs_f64();
        let cpu_us = std::array::from_fn(|i| {
            (cpu_after[i] - cpu_before[i]) / wall / summary.throughput.max(1.0) * 1e6
        });
        eprintln!(
            "bench:   {:.0}/s, p99 {:.2} ms, errors {}, CPU {:.0} us per request",
            summary.throughput,
            summary.latency_ms[2],
            summary.errors(),
            cpu_us.iter().sum::<f64>()
        );
        Row {
            line,
            concurrency,
            summary,
            cpu_us,
        }
    };

    let ingress = ServiceProcess::start(
        "customers-ingress",
        &["--nats-url", &url, "--listen", "127.0.0.1:0"],
        "serving",
    )
    .await;
    let base_url = format!(
        "http://{}",
        ingress
            .ready_line
            .rsplit("listen=")
            .next()
            .unwrap_or_default()
            .trim()
    );
    let echo = ServiceProcess::start(
        "customers-loadgen",
        &["echo", "--nats-url", &url],
        "echo responder serving",
    )
    .await;
    let own_pid = Some(std::process::id());
    let ceiling_pids = [ingress.pid(), echo.pid(), Some(nats.pid()), own_pid];
    for &c in &args.concurrency {
        rows.push(measure(CEILING, Target::http(&base_url).await?, c, ceiling_pids).await);
    }
    echo.terminate().await;

    let data = data_dir.path().to_str().unwrap_or_default().to_owned();
    let worker = ServiceProcess::start(
        "customers-worker",
        &["--nats-url", &url, "--data-dir", &data],
        "serving",
    )
    .await;
    let pids = [ingress.pid(), worker.pid(), Some(nats.pid()), own_pid];
    for &c in &args.concurrency {
        rows.push(measure(HTTP, Target::http(&base_url).await?, c, pids).await);
    }
    for &c in &args.concurrency {
        let connections = c.clamp(1, 4);
        let target = Target::nats(&url, "customers.v1.create", connections).await?;
        rows.push(measure(NATS, target, c, pids).await);
    }
    rows.push(measure(HTTP, Target::http(&base_url).await?, 1, pids).await);
    let created = |rows: &[Row]| -> u64 {
        rows.iter()
            .filter(|r| r.line != CEILING)
            .map(|r| r.summary.statuses.get(&201).copied().unwrap_or(0))
            .sum()
    };
    let mut growth = None;
    if args.preload > 0 {
        let before = footprint(created(&rows), data_dir.path(), &worker);
        eprintln!("bench: preloading {} customers over NATS ...", args.preload);
        let preload = load::run(
            Target::nats(&url, "customers.v1.create", 4).await?,
            Plan {
                duration: Duration::from_secs(3600),
                warmup: Duration::ZERO,
                requests: Some(args.preload),
                progress: true,
                ..plan(GROWTH_CONCURRENCY)
            },
        )
        .await;
        let preloaded = preload.statuses.get(&201).copied().unwrap_or(0);
        eprintln!("bench:   {preloaded} stored in {:.0} s", preload.seconds);
        rows.push(
            measure(
                HTTP_LOADED,
                Target::http(&base_url).await?,
                GROWTH_CONCURRENCY,
                pids,
            )
            .await,
        );
        rows.push(
            measure(
                NATS_LOADED,
                Target::nats(&url, "customers.v1.create", 4).await?,
                GROWTH_CONCURRENCY,
                pids,
            )
            .await,
        );
        let after = footprint(created(&rows) + preloaded, data_dir.path(), &worker);
        growth = Some((before, after));
    }
    worker.terminate().await;
    ingress.terminate().await;

    let stolen = stolen_share(&cpu_times_before, &machine_cpu_times());
    let mut report = report(&rows, &args, &chart_relative(&args), stolen)?;
    if let Some((before, after)) = &growth {
        growth_section(&mut report, &rows, before, after);
    }
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

fn growth_section(out: &mut String, rows: &[Row], before: &Footprint, after: &Footprint) {
    let c = GROWTH_CONCURRENCY;
    let _ = writeln!(out, "\n## Cost as data grows\n");
    let _ = writeln!(
        out,
        "Concurrency {c}. \"Fresh\" is the runs above, on a database that starts empty and holds {} customers after them; then the preload adds customers through the normal create path (NATS direct) before the same runs.\n",
        before.stored
    );
    let _ = writeln!(out, "| | fresh | after preload | ratio |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (fresh, loaded) in [(HTTP, HTTP_LOADED), (NATS, NATS_LOADED)] {
        if let (Some(a), Some(b)) = (find(rows, fresh, c), find(rows, loaded, c)) {
            let _ = writeln!(
                out,
                "| {fresh}, creates/s | {:.0} | {:.0} | {:.2} |",
                a.throughput,
                b.throughput,
                b.throughput / a.throughput
            );
            let _ = writeln!(
                out,
                "| {fresh}, p99 ms | {:.2} | {:.2} | |",
                a.latency_ms[2], b.latency_ms[2]
            );
        }
    }
    let _ = writeln!(
        out,
        "| customers stored (at least) | {} | {} | |",
        before.stored, after.stored
    );
    let _ = writeln!(
        out,
        "| database size on disk, MiB | {:.0} | {:.0} | |",
        before.disk_bytes as f64 / 1048576.0,
        after.disk_bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        out,
        "| worker RSS, MiB | {:.0} | {:.0} | |",
        before.rss_kib as f64 / 1024.0,
        after.rss_kib as f64 / 1024.0
    );
}

fn chart_relative(args: &BenchArgs) -> String {
    let base = args.out.parent().unwrap_or(std::path::Path::new(""));
    args.chart
        .strip_prefix(base)
        .unwrap_or(&args.chart)
        .display()
        .to_string()
}

fn find_row<'a>(rows: &'a [Row], line: &str, concurrency: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.line == line && r.concurrency == concurrency)
}

fn find<'a>(rows: &'a [Row], line: &str, concurrency: usize) -> Option<&'a Summary> {
    find_row(rows, line, concurrency).map(|r| &r.summary)
}

fn command_output(program: &str, args: &[&str]) -> String {
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

fn report(
    rows: &[Row],
    args: &BenchArgs,
    chart: &str,
    stolen: Option<f64>,
) -> Result<String, String> {
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
        "Written by `scripts/bench` (`customers-loadgen bench`) on {}.\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let _ = writeln!(
        w,
        "* Machine: {cores} cores, {cpu}; load generator, nats-server, worker and ingress all on this machine; CPU time stolen by the hypervisor during the run: {}.",
        stolen.map_or("unknown".to_owned(), |s| format!("{:.0} %", s * 100.0))
    );
    let _ = writeln!(
        w,
        "* Versions: customers {}, {}, {}.",
        env!("CARGO_PKG_VERSION"),
        command_output(&nats_bin, &["--version"]),
        command_output("rustc", &["--version"])
    );
    let _ = writeln!(
        w,
        "* Method: closed loop, unique ~300-byte customers (varied optional fields), {} s measured after {} s warm-up per run; creates are durable (fsync before the reply). The ceiling is the same ingress with an echo responder instead of the worker: no validation, no disk.\n",
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "| line | concurrency | creates/s | p50 ms | p99 ms | p99.9 ms | errors | ratio to ceiling |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let s = &row.summary;
        let ratio = find(rows, CEILING, row.concurrency).map_or("–".to_owned(), |ceiling| {
            format!("{:.2}", s.throughput / ceiling.throughput)
        });
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {ratio} |",
            row.line,
            row.concurrency,
            s.throughput,
            s.latency_ms[0],
            s.latency_ms[2],
            s.latency_ms[3],
            s.errors()
        );
    }
    let _ = writeln!(w, "\n![throughput and p99 against concurrency]({chart})");
    cpu_section(w, rows);
    Ok(out)
}

/// Where the CPU goes at concurrency 64: with every process on the same cores, a line's
/// throughput is bounded by cores ÷ its total CPU time per request, so the ratio of two
/// totals bounds the ratio of two throughputs whatever the scheduling.
fn cpu_section(w: &mut String, rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let _ = writeln!(
        w,
        "\n## CPU per request (concurrency {GROWTH_CONCURRENCY})\n"
    );
    let _ = writeln!(
        w,
        "CPU time (user + system, all threads) each process used during the run, divided by the requests it served. The bound is {cores} cores ÷ the total; the ratio bound is the ceiling's total ÷ this line's total. How to profile inside a process: docs/PROFILE.md.\n"
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
    for row in rows.iter().filter(|r| r.concurrency == GROWTH_CONCURRENCY) {
        let total: f64 = row.cpu_us.iter().sum();
        let ratio = ceiling_total.map_or("–".to_owned(), |c| format!("{:.2}", c / total));
        let _ = writeln!(
            w,
            "| {} | {} | {total:.0} | {:.0} | {ratio} | {:.0} |",
            row.line,
            row.cpu_us.map(|us| format!("{us:.0}")).join(" | "),
            cores * 1e6 / total,
            row.summary.throughput
        );
    }
}

/// One figure of a run, as plotted.
type Metric = fn(&Summary) -> f64;

/// Two panels (throughput, p99) with one line per series, concurrency on a log scale.
fn chart(rows: &[Row], levels: &[usize]) -> String {
    const SERIES: [(&str, &str); 3] = [(CEILING, "#888888"), (HTTP, "#1f77b4"), (NATS, "#d62728")];
    let (width, height, margin) = (900.0, 380.0, 60.0);
    let panel_width = (width - 3.0 * margin) / 2.0;
    let plot_height = height - 2.0 * margin - 40.0;
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
            r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##,
            top + plot_height,
            left + panel_width,
            top + plot_height
        );
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
            top + plot_height
        );
        for k in 0..=4 {
            let v = max * k as f64 / 4.0;
            let y = top + plot_height - v / max * plot_height;
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/>"##,
                left - 5.0,
                y + 4.0,
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                },
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
        let x = margin + i as f64 * 260.0;
        let y = height - 15.0;
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
