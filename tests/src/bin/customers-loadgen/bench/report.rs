//! The Markdown report: the main table with every line's ratios to the ceiling, the durable
//! bound and the peer, the targets checked against this run, the peer's pool sweep, CPU per
//! request, the cost as data grows, replicated mode and recovery.

use std::fmt::Write;
use std::path::Path;

use super::changes::Change;
use super::lines::{Line, PEER_POOL_SIZES, ROLES, Row, find, find_row, ratio};
use super::setups::EventsApart;
use super::{BenchArgs, EVENTS_ROUNDS, Footprint, GROWTH_CONCURRENCY, Recovery};

/// What `program args` prints, trimmed (`unknown` when it prints nothing or cannot run).
pub(super) fn command_output(program: &Path, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The peer at each pool size and concurrency, and which pool the peer line took.
pub(super) fn peer_sweep_section(w: &mut String, rows: &[Row], levels: &[usize]) {
    if !rows.iter().any(|r| r.line.is_peer_sweep()) {
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
        PEER_POOL_SIZES
            .map(|pool| format!("pool {pool}"))
            .join(" | ")
    );
    let _ = writeln!(w, "|---:|{}---|", "---:|".repeat(PEER_POOL_SIZES.len()));
    for &c in levels {
        let cells = PEER_POOL_SIZES.map(|pool| {
            find(rows, Line::PeerSweep { pool }, c).map_or("–".to_owned(), |s| {
                format!("{:.0} ({:.1})", s.throughput, s.latency_ms[2])
            })
        });
        let used = PEER_POOL_SIZES
            .iter()
            .filter_map(|&pool| Some((pool, find(rows, Line::PeerSweep { pool }, c)?)))
            .max_by(|a, b| a.1.throughput.total_cmp(&b.1.throughput))
            .map_or("–".to_owned(), |(pool, _)| format!("pool {pool}"));
        let _ = writeln!(w, "| {c} | {} | {used} |", cells.join(" | "));
    }
}

/// Updates, deletes and the mixed load, the service beside the peer (issue 21's targets).
/// Finding and mirroring at a million customers, beside the peer.
pub(super) fn finds_section(w: &mut String, rows: &[Row], stored: u64) {
    use super::finds::Find;
    if !rows.iter().any(|r| matches!(r.line, Line::Find { .. })) {
        return;
    }
    let c = super::FIND_CONCURRENCY;
    let _ = writeln!(
        w,
        "
## Finding and mirroring customers (issue 22)

On the service's database after the preload ({stored} customers as the generator makes them: a tenth inactive, a twentieth suspended, three in four with an address in one of six countries, a third with `custom_data`), and on the peer loaded with as many through its own create endpoint, with the indexes a team would add for these queries (btree on each filter column with the sort order, GIN `jsonb_path_ops` on `custom_data`, btree on `(updated_at, id)`, btree on `lower(name)`, `pg_trgm` GIN on name, email and phone; `ANALYZE` after the load). Searches are first pages of 10 with `total_count` (the peer: `ILIKE '%…%'` or `lower(name) = lower(…)`, with a `SELECT count(*)` pipelined beside the page's `SELECT … LIMIT 11`: `count(*) OVER ()` in one statement made the planner walk the whole `created_at` index, 500 ms at a million). {c} requesters, closed loop; lists are newest-first pages of 10; feed requesters follow `next_cursor` from the start in pages of 100. Requests/s, p50 / p99 ms.

| query | service | peer | service ÷ peer |
|---|---:|---:|---:|"
    );
    let cell = |s: &crate::load::Summary| {
        format!(
            "{:.0} ({:.1} / {:.1})",
            s.throughput, s.latency_ms[0], s.latency_ms[2]
        )
    };
    for find in Find::ALL {
        let service = Line::Find { find, peer: false };
        let peer = Line::Find { find, peer: true };
        let Some(measured) = super::lines::find(rows, service, c) else {
            continue;
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            find.label(),
            cell(measured),
            super::lines::find(rows, peer, c).map_or("–".to_owned(), cell),
            fmt_ratio(ratio(rows, service, peer, c)),
        );
    }
    let feed = Line::Find {
        find: Find::Feed,
        peer: false,
    };
    if let Some(feed) = super::lines::find(rows, feed, c) {
        let _ = writeln!(
            w,
            "\nTargets (issue 22): exact filters and `field:value` searches p50 ≤ 5 ms and p99 ≤ 20 ms at {c} clients and ≥ 1× the peer (the four list lines and the exact-name search); substring searches p50 ≤ 50 ms and ≥ 1× the peer; the change feed ≥ 20,000 changes/s: {:.0} pages/s of up to 100, so at most {:.0} changes/s.",
            feed.throughput,
            feed.throughput * 100.0
        );
        let _ = writeln!(
            w,
            "\nWhat bounds the search lines (read with the profile of `storage::store::search`; docs/PROFILE.md): every search counts all its matches for `total_count`. One indexed value alone (`name:'Amina Mboya'`) takes its count from `storage::store::attribute_counts`, kept in memory for every value with at least 1,024 customers, and reads its page from the newest end of its range, so it costs a page read. A substring is a SIMD pass (`memchr::memmem`) over one column of the in-memory text index (13 MB of names, 50 MB of emails at a million) plus each hit's id read afterwards (62,500 hits for `ami`): the pass is most of the CPU, and at 16 clients on two cores the p50 is that CPU times the queue. A positive `status:` beside a substring is checked inside the pass (the index holds each customer's status). The three combined list filters walk the `attributes` range of the rarest (`custom_data[loyalty_program]=Gold`, a twelfth of the customers) in sled, about 0.5 µs an entry, and probe each customer's status and country in memory (the text index keeps both), until ten match one in a thousand; PostgreSQL answers that with a bitmap AND of three btrees. The next steps: the driving range from memory too (posting lists beside the text index), and a trigram index for substrings if the scan must get faster than memory bandwidth."
        );
    }
}

pub(super) fn changes_section(w: &mut String, rows: &[Row], levels: &[usize]) {
    let changes = [
        Change::Updates,
        Change::Gets,
        Change::Deletes,
        Change::Mixed,
    ];
    if !rows.iter().any(|r| matches!(r.line, Line::Changes { .. })) {
        return;
    }
    let _ = writeln!(
        w,
        "
## A customer's whole life: updates, gets, deletes, a mixed load

Each requester first creates the customers it then reads or changes, alone, so it always sends the right `If-Match` and no `412` is measured. Updates are a merge patch of `custom_data` (the peer: `UPDATE … SET custom_data = custom_data || $patch, version = version + 1 WHERE id = $1 AND version = $2`, unique index on `lower(email)`, `synchronous_commit` on, the pool that won the create sweep at that concurrency, every statement prepared once per connection); gets by id read one of the requester's 50 customers at random (the peer: `SELECT … WHERE id = $1`, the primary key); deletes `DELETE` under `If-Match` (the peer: `DELETE … WHERE id = $1 AND version = $2`); the mixed load is 70 % gets by id, 20 % updates, 10 % creates. The service runs with events on: every change writes its event into the outbox in the same journal record. Requests/s, with p50 and p99 in ms.

| load | concurrency | service | peer | service ÷ peer | errors (service, peer) |
|---|---:|---:|---:|---:|---:|"
    );
    for change in changes {
        for &c in levels {
            let service = Line::Changes {
                change,
                peer: false,
            };
            let peer = Line::Changes { change, peer: true };
            let Some(measured) = find(rows, service, c) else {
                continue;
            };
            let cell = |s: &crate::load::Summary| {
                format!(
                    "{:.0} ({:.1} / {:.1})",
                    s.throughput, s.latency_ms[0], s.latency_ms[2]
                )
            };
            let name = service.to_string();
            let name = name.trim_start_matches("service over HTTP: ");
            let peer_errors =
                find(rows, peer, c).map_or("–".to_owned(), |s| s.errors().to_string());
            let _ = writeln!(
                w,
                "| {name} | {c} | {} | {} | {} | {}, {peer_errors} |",
                cell(measured),
                find(rows, peer, c).map_or("–".to_owned(), cell),
                fmt_ratio(ratio(rows, service, peer, c)),
                measured.errors()
            );
        }
    }
    let updates = |peer| Line::Changes {
        change: Change::Updates,
        peer,
    };
    let at_64 = ratio(rows, updates(false), updates(true), GROWTH_CONCURRENCY);
    let _ = writeln!(
        w,
        "\nTarget (issue 21): updates ≥ 2× the peer's at {GROWTH_CONCURRENCY} clients: {} ({}).",
        fmt_ratio(at_64),
        met(at_64.map(|r| r >= 2.0))
    );
}

fn met(outcome: Option<bool>) -> &'static str {
    match outcome {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    }
}

fn fmt_ratio(value: Option<f64>) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.2}"))
}

pub(super) fn report(
    rows: &[Row],
    args: &BenchArgs,
    peer_note: &str,
    stolen: Option<f64>,
) -> String {
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
    // The peer's sweep and the changes have tables of their own.
    let creates = rows
        .iter()
        .filter(|r| !r.line.is_peer_sweep() && !matches!(r.line, Line::Changes { .. }));
    for row in creates {
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
            fmt_ratio(ratio(rows, row.line, Line::Ceiling, c)),
            fmt_ratio(ratio(rows, row.line, Line::Durable, c)),
            fmt_ratio(ratio(rows, row.line, Line::Peer, c)),
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
pub(super) fn targets_section(
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
            ratio(rows, Line::Http, Line::Peer, c),
            "×",
            &|v| v >= at_least,
        );
    }
    for c in [64, 256] {
        row(
            format!("service over HTTP ≥ 0.5× the ceiling at c={c}"),
            ratio(rows, Line::Http, Line::Ceiling, c),
            "×",
            &|v| v >= 0.5,
        );
    }
    for c in [16, 64, 256] {
        row(
            format!("service over HTTP ≥ 0.8× the durable bound at c={c}"),
            ratio(rows, Line::Http, Line::Durable, c),
            "×",
            &|v| v >= 0.8,
        );
    }
    for c in [1, 16, 64, 256] {
        row(
            format!(
                "events on ≥ 0.9× events off (HTTP), every process sharing the cores, one run each, at c={c}"
            ),
            ratio(rows, Line::Http, Line::HttpEventsOff, c),
            "×",
            &|v| v >= 0.9,
        );
    }
    row(
        "p99 ≤ 5 ms at c=64 (HTTP)".to_owned(),
        find(rows, Line::Http, 64).map(|s| s.latency_ms[2]),
        " ms",
        &|v| v <= 5.0,
    );
    row(
        "one sequential client: p50 ≤ 0.5 ms (HTTP)".to_owned(),
        find(rows, Line::Http, 1).map(|s| s.latency_ms[0]),
        " ms",
        &|v| v <= 0.5,
    );
    row(
        "worker CPU per create ≤ 40 µs at c=64 (HTTP)".to_owned(),
        find_row(rows, Line::Http, 64).map(|r| r.cpu_us[1]),
        " µs",
        &|v| v <= 40.0,
    );
    row(
        format!(
            "at {} customers ≥ 0.8× fresh throughput (HTTP, c=64)",
            growth.map_or(0, |[_, _, grown]| grown.stored)
        ),
        growth.and_then(|_| ratio(rows, Line::HttpLoaded, Line::Http, 64)),
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

/// Issue 23's targets: the service against the best-pool peer, and what bounds the misses.
pub(super) fn peer_targets_section(w: &mut String, rows: &[Row], levels: &[usize]) {
    use super::finds::Find;
    let _ = writeln!(
        w,
        "\n## Targets (issue 23), against the best-pool peer\n\n| target | measured | met |\n|---|---:|---|"
    );
    let mut row = |target: String, shown: Option<String>, verdict: Option<bool>| {
        let _ = writeln!(
            w,
            "| {target} | {} | {} |",
            shown.unwrap_or_else(|| "–".to_owned()),
            match verdict {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            }
        );
    };
    let times = |v: f64| format!("{v:.2}×");
    for (c, at_least) in [(16, 1.5), (64, 2.0), (256, 2.5)] {
        let measured = ratio(rows, Line::Http, Line::Peer, c);
        row(
            format!("creates ≥ {at_least}× the peer at c={c}"),
            measured.map(times),
            measured.map(|v| v >= at_least),
        );
    }
    let measured = ratio(rows, Line::Http, Line::Durable, 16);
    row(
        "creates ≥ 0.8× the durable bound at c=16".to_owned(),
        measured.map(times),
        measured.map(|v| v >= 0.8),
    );
    let gets = |peer| Line::Changes {
        change: Change::Gets,
        peer,
    };
    for &c in levels {
        let measured = ratio(rows, gets(false), gets(true), c);
        row(
            format!("gets by id ≥ 2× the peer at c={c}"),
            measured.map(times),
            measured.map(|v| v >= 2.0),
        );
        let p99 = find(rows, gets(false), c)
            .zip(find(rows, gets(true), c))
            .map(|(service, peer)| (service.latency_ms[2], peer.latency_ms[2]));
        row(
            format!("gets by id: p99 ≤ the peer's at c={c}"),
            p99.map(|(s, p)| format!("{s:.2} ms (peer {p:.2})")),
            p99.map(|(s, p)| s <= p),
        );
    }
    let newest = |peer| Line::Find {
        find: Find::Newest,
        peer,
    };
    let measured = ratio(rows, newest(false), newest(true), super::FIND_CONCURRENCY);
    row(
        format!(
            "list pages (newest first, no filter) ≥ 1.5× the peer at c={}",
            super::FIND_CONCURRENCY
        ),
        measured.map(times),
        measured.map(|v| v >= 1.5),
    );
    let p99 = find(rows, Line::Http, 64).map(|s| s.latency_ms[2]);
    row(
        "creates: p99 ≤ 5 ms at c=64".to_owned(),
        p99.map(|v| format!("{v:.2} ms")),
        p99.map(|v| v <= 5.0),
    );
    let p50 = find(rows, Line::Http, 1).map(|s| s.latency_ms[0]);
    row(
        "creates: one sequential client p50 ≤ 0.5 ms".to_owned(),
        p50.map(|v| format!("{v:.2} ms")),
        p50.map(|v| v <= 0.5),
    );
    // Every process but the load generator (the last role).
    let cpu =
        find_row(rows, Line::Http, 64).map(|r| r.cpu_us[..ROLES.len() - 1].iter().sum::<f64>());
    row(
        "total CPU per create at c=64 ≤ 80 µs (all processes but the load generator)".to_owned(),
        cpu.map(|v| format!("{v:.0} µs")),
        cpu.map(|v| v <= 80.0),
    );
    for &c in levels {
        let measured = ratio(rows, Line::Http, Line::HttpEventsOff, c);
        row(
            format!("events on ≥ 0.9× events off at c={c}, every process sharing the cores"),
            measured.map(times),
            measured.map(|v| v >= 0.9),
        );
    }
    let measured = ratio(rows, Line::HttpReplicated, Line::Peer, 64);
    row(
        "replicated (3 NATS nodes, 3 workers) ≥ 1× the peer at c=64".to_owned(),
        measured.map(times),
        measured.map(|v| v >= 1.0),
    );
    let ceiling_gets = find(rows, Line::Ceiling, 1)
        .zip(find(rows, gets(true), 1))
        .map(|(ceiling, peer)| ceiling.throughput / peer.throughput);
    let worker = find_row(rows, Line::Http, 64).map(|r| r.cpu_us[1]);
    let _ = writeln!(
        w,
        "\nWhat bounds the misses (docs/PROFILE.md, section 8): CPU. At 64 clients every process shares two cores, and a create costs {} µs of CPU in the service's processes (the worker {} µs) against the peer's {} µs (its HTTP front and PostgreSQL). In the worker, the committer is most of it, and sled's inserts are three quarters of the committer's: about eight per create (the customer, its email, its `changes` entry, four or five `attributes` entries), each cloning the leaf it changes, splitting it every ninth insert at the end of a range, and writing the fragment into sled's own log. The applier thread would apply a group while the next is synced, but only under a flood (a whole `--max-group`, 1,024, queued behind it), which these lines never make: on two busy cores the smaller groups of an always-on overlap cost more CPU than it saved. One client at a time, the architecture's own ceiling (forwarder → NATS → echo, no work) answers {} as fast as the peer reads by id (two NATS hops against the peer's one round trip to PostgreSQL), so gets at one client cannot reach 2× the peer's on this architecture; and the durable bound's p50 at one client is {} ms before any of the service's work. The next step is fewer sled inserts per create: the `attributes` entries held in memory beside the text index as posting lists, rebuilt at open like it, for about 100 MB more memory at a million customers.",
        cpu.map_or("–".to_owned(), |v| format!("{v:.0}")),
        worker.map_or("–".to_owned(), |v| format!("{v:.0}")),
        find_row(rows, Line::Peer, 64).map_or("–".to_owned(), |r| format!(
            "{:.0}",
            r.cpu_us[..ROLES.len() - 1].iter().sum::<f64>()
        )),
        ceiling_gets.map_or("–".to_owned(), times),
        find(rows, Line::Durable, 1)
            .map_or("–".to_owned(), |s| format!("{:.2}", s.latency_ms[0])),
    );
}

/// Where the CPU goes at concurrency 64: with every process on the same cores, a line's
/// throughput is bounded by cores ÷ its total CPU time per request.
pub(super) fn cpu_section(w: &mut String, rows: &[Row]) {
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
        find_row(rows, Line::Ceiling, GROWTH_CONCURRENCY).map(|r| r.cpu_us.iter().sum::<f64>());
    for row in rows
        .iter()
        .filter(|r| r.concurrency == GROWTH_CONCURRENCY && !r.line.is_peer_sweep())
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

pub(super) fn growth_section(
    out: &mut String,
    rows: &[Row],
    [fresh, at_target, grown]: &[Footprint; 3],
) {
    let c = GROWTH_CONCURRENCY;
    let _ = writeln!(out, "\n## Cost as data grows\n");
    let _ = writeln!(
        out,
        "Concurrency {c}. \"Fresh\" is the runs above, on a database that starts empty and holds {} customers after them. Then customers are created through the normal create path (NATS direct) until the database holds {} (where size and memory are taken for the target) and on until it holds {}, where the same runs are repeated. A preload outruns the relay; each figure after one waits until the events stream holds every stored customer's event ({:.1} s and {:.1} s after the two preloads).\n",
        fresh.stored,
        at_target.stored,
        grown.stored,
        at_target.relay_caught_up.as_secs_f64(),
        grown.relay_caught_up.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| | fresh | at {} | at {} | ratio to fresh |",
        at_target.stored, grown.stored
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for (line, loaded) in [
        (Line::Http, Line::HttpLoaded),
        (Line::Nats, Line::NatsLoaded),
    ] {
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

/// Replicated mode beside the single worker, from this run.
pub(super) fn replication_section(w: &mut String, rows: &[Row]) {
    if find(rows, Line::HttpReplicated, 64).is_none() {
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
    for row in rows.iter().filter(|r| r.line == Line::HttpReplicated) {
        let c = row.concurrency;
        let single = find(rows, Line::Http, c);
        let _ = writeln!(
            w,
            "| {c} | {} | {:.0} ({:.2}) | {} |",
            single.map_or("–".to_owned(), |s| format!(
                "{:.0} ({:.2})",
                s.throughput, s.latency_ms[2]
            )),
            row.summary.throughput,
            row.summary.latency_ms[2],
            fmt_ratio(ratio(rows, Line::HttpReplicated, Line::Http, c)),
        );
    }
}

pub(super) fn recovery_section(out: &mut String, recovery: &Recovery) {
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
