//! The lines that need a set-up of their own: events on against off with nats-server on
//! cores apart (pairs of back-to-back runs, pinned with `taskset`), and the replicated
//! topology (a 3-node NATS cluster, three workers, the ingress).

use std::path::Path;
use std::time::Duration;

use customers_tests::{NatsCluster, NatsServer, ServiceProcess};

use super::lines::{Line, Pids, Row};
use super::{Bench, EVENTS_ROUNDS, PER_KEY_IN_FLIGHT, listen_url, settle};
use crate::load::Target;

/// The events on/off comparison with the broker apart, for the report.
pub(super) struct EventsApart {
    /// How it was measured.
    pub(super) note: String,
    /// Per concurrency, events on ÷ off of each pair of back-to-back runs.
    pair_ratios: Vec<(usize, Vec<f64>)>,
}

impl EventsApart {
    /// The median pair's ratio at `concurrency`, and the lowest and highest.
    pub(super) fn ratio(&self, concurrency: usize) -> Option<(f64, f64, f64)> {
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
pub(super) async fn events_with_the_broker_apart(
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
            let mut order = [(Line::EventsOffApart, "off"), (Line::EventsOnApart, "on")];
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
    for line in [Line::EventsOffApart, Line::EventsOnApart] {
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

/// The replicated topology over HTTP at every concurrency: a 3-node NATS cluster with
/// JetStream, three workers in replicated mode (the primary appends each group to a
/// 3-replica stream before it answers; the standbys apply it too) and the ingress.
pub(super) async fn replicated_line(
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
        bench.measure(Line::HttpReplicated, target, c, pids).await;
    }
    ingress.terminate().await;
    for worker in workers {
        worker.terminate().await;
    }
    Ok(())
}
