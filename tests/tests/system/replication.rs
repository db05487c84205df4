//! Replicated mode on a real 3-node nats-server cluster on loopback, with three worker
//! processes (`--replication jetstream`) and the ingress: failover after kill -9 of the
//! primary under load (five rounds, each first 201 within 5 s), fencing of a paused primary,
//! a NATS node killed under load, and a standby rebuilt from an empty data directory. After
//! each: nothing acknowledged lost, no email twice, and every instance's database a copy of
//! the same log.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use customers_shared::CustomerId;
use customers_shared::wire::protocol::{Endpoint, headers};
use customers_tests::ledger::Load;
use customers_tests::subject;
use customers_tests::{
    HttpClient, KillMoments, NatsCluster, PATIENCE, ServiceProcess, TestIngress,
    customer_with_email, free_port, nats_header, start_worker_process_with_failpoints,
};
use customers_worker::Store;

/// One worker instance: its process (while it runs), data directory and admin port.
struct Instance {
    process: Option<ServiceProcess>,
    data_dir: tempfile::TempDir,
    admin_port: u16,
    /// Flags beyond the replicated mode's own.
    flags: Vec<String>,
    /// `FAILPOINTS` of its process.
    failpoints: &'static str,
}

impl Instance {
    async fn start(urls: &str, flags: &[&str]) -> Self {
        Self::start_with_failpoints(urls, flags, "").await
    }

    async fn start_with_failpoints(urls: &str, flags: &[&str], failpoints: &'static str) -> Self {
        let mut instance = Self {
            process: None,
            data_dir: tempfile::tempdir().unwrap(),
            admin_port: free_port(),
            flags: flags.iter().map(|flag| (*flag).to_owned()).collect(),
            failpoints,
        };
        instance.restart(urls).await;
        instance
    }

    async fn restart(&mut self, urls: &str) {
        let admin = format!("127.0.0.1:{}", self.admin_port);
        let mut args = vec![
            "--replication",
            "jetstream",
            "--replication-replicas",
            "3",
            "--lease-ttl",
            "2s",
            "--admin-listen",
            &admin,
        ];
        args.extend(self.flags.iter().map(String::as_str));
        self.process = Some(
            start_worker_process_with_failpoints(
                urls,
                self.data_dir.path(),
                &args,
                self.failpoints,
            )
            .await,
        );
    }

    /// Whether its admin listener accepts connections (the process runs and is not paused
    /// at the kernel's accept queue; a dead one refuses).
    fn listening(&self) -> bool {
        std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.admin_port).into(),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    /// A supervisor's job: an instance that exited (a primary that lost its lease exits 75)
    /// is started again, as a standby.
    async fn restart_if_exited(&mut self, urls: &str) {
        if self.process.is_some() && !self.listening() {
            let (status, _) = self.process.take().unwrap().exited().await;
            assert_eq!(status.code(), Some(75), "only a lost lease ends a worker");
            self.restart(urls).await;
        }
    }

    /// `primary` or `standby` from the admin listener's readiness (`{"status":"ready",
    /// "role":…}`; none when it does not answer at once: stopped, paused or not ready).
    async fn role(&self) -> Option<String> {
        if !self.listening() {
            return None;
        }
        let admin = HttpClient::new(([127, 0, 0, 1], self.admin_port).into());
        let ready = tokio::time::timeout(Duration::from_millis(300), admin.get("/readyz"))
            .await
            .ok()?;
        let body: serde_json::Value = serde_json::from_slice(&ready.body).ok()?;
        body["role"].as_str().map(str::to_owned)
    }

    async fn applied(&self) -> f64 {
        self.metric("customers_worker_log_applied_sequence").await
    }

    /// The same, or `None` when the instance does not answer (stopping, or exited).
    async fn try_applied(&self) -> Option<f64> {
        let admin = HttpClient::new(([127, 0, 0, 1], self.admin_port).into());
        let series = "customers_worker_log_applied_sequence";
        tokio::time::timeout(Duration::from_millis(500), admin.try_metric(series))
            .await
            .ok()
            .flatten()
    }

    async fn metric(&self, series: &str) -> f64 {
        let admin = HttpClient::new(([127, 0, 0, 1], self.admin_port).into());
        admin.metric(series).await
    }
}

/// A 3-node cluster, its URLs and three worker instances in replicated mode on it.
async fn three_instances() -> (NatsCluster, String, Vec<Instance>) {
    three_instances_with(&[]).await
}

async fn three_instances_with(flags: &[&str]) -> (NatsCluster, String, Vec<Instance>) {
    let cluster = NatsCluster::start().await;
    let urls = cluster.urls();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start(&urls, flags).await);
    }
    (cluster, urls, instances)
}

/// Creates customers `c{n}@{domain}` over NATS, each answered 201; their ids and bodies.
async fn create_customers(
    client: &async_nats::Client,
    domain: &str,
    numbers: std::ops::Range<u32>,
) -> HashMap<String, bytes::Bytes> {
    let mut created = HashMap::new();
    for n in numbers {
        let reply = client
            .request(
                subject(Endpoint::Create),
                customer_with_email(&format!("c{n}@{domain}")).into(),
            )
            .await
            .unwrap();
        let id = nats_header(&reply, headers::CUSTOMER_ID).unwrap_or_else(|| {
            panic!("not created: {:?}", String::from_utf8_lossy(&reply.payload))
        });
        created.insert(id.to_owned(), reply.payload.clone());
    }
    created
}

/// The log's first sequence (above 1 once it was trimmed after a snapshot).
async fn log_first_sequence(client: &async_nats::Client) -> u64 {
    let jetstream = async_nats::jetstream::new(client.clone());
    let mut log = jetstream.get_stream("CUSTOMERS_LOG").await.unwrap();
    log.info().await.unwrap().state.first_sequence
}

/// The index of the one instance that reports being the primary (waits for it).
async fn primary(instances: &[Instance]) -> usize {
    tokio::time::timeout(PATIENCE, async {
        loop {
            for (n, instance) in instances.iter().enumerate() {
                if instance.process.is_some() && instance.role().await.as_deref() == Some("primary")
                {
                    return n;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("an instance becomes the primary")
}

/// Waits until every running instance applied the log as far as `sequence`.
async fn all_applied(instances: &[Instance], sequence: f64) {
    for instance in instances.iter().filter(|i| i.process.is_some()) {
        tokio::time::timeout(PATIENCE, async {
            while instance.applied().await < sequence {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the instance catches up with the log");
    }
}

/// Stops every instance, then checks that each database is consistent and holds the same
/// customers, byte for byte: copies of one log.
async fn assert_copies_of_one_log(instances: &mut [Instance]) -> usize {
    for instance in instances.iter_mut() {
        if let Some(process) = instance.process.take() {
            stop_cleanly(process).await;
        }
    }
    let mut reference: Option<Vec<(CustomerId, Vec<u8>)>> = None;
    for instance in instances.iter() {
        let store = Store::open(instance.data_dir.path(), 16 << 20)
            .unwrap()
            .store;
        let consistency = store.verify().unwrap();
        assert!(consistency.is_consistent(), "{consistency:?}");
        let customers = records(&store);
        match &reference {
            None => reference = Some(customers),
            Some(reference) => assert!(reference == &customers, "the instances diverged"),
        }
    }
    reference.map_or(0, |r| r.len())
}

/// SIGTERM; the instance must stop cleanly (its last log lines tell why when it does not).
async fn stop_cleanly(process: ServiceProcess) {
    process.send_signal("TERM");
    let (status, log) = process.exited().await;
    let tail = &log[log.len().saturating_sub(30)..];
    assert_eq!(
        status.code(),
        Some(0),
        "a clean stop; its log ends: {tail:#?}"
    );
}

/// Every stored customer, oldest first.
fn records(store: &Store) -> Vec<(CustomerId, Vec<u8>)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.records_after(after, 1000).unwrap();
        let Some((last, _)) = page.last() else {
            return all;
        };
        after = Some(*last);
        all.extend(page.into_iter().map(|(id, json)| (id, json.to_vec())));
    }
}

/// The `role` in the `$SRV.INFO.customers` metadata of every instance that answers, sorted.
async fn service_roles(client: &async_nats::Client) -> Vec<String> {
    use futures_util::StreamExt;
    // Waits for the primary first: right after the start, nobody may hold the lease yet.
    tokio::time::timeout(PATIENCE, async {
        loop {
            let inbox = client.new_inbox();
            let mut replies = client.subscribe(inbox.clone()).await.unwrap();
            client
                .publish_with_reply("$SRV.INFO.customers", inbox, "".into())
                .await
                .unwrap();
            let mut roles = Vec::new();
            while let Ok(Some(reply)) =
                tokio::time::timeout(Duration::from_millis(300), replies.next()).await
            {
                let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                roles.push(info["metadata"]["role"].as_str().unwrap_or("").to_owned());
            }
            roles.sort();
            if roles.first().map(String::as_str) == Some("primary") {
                return roles;
            }
        }
    })
    .await
    .expect("a primary answers $SRV.INFO")
}

async fn ingress(urls: &str) -> TestIngress {
    let mut config = customers_ingress::Config::new(urls);
    config.request_timeout = Duration::from_millis(1500);
    TestIngress::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_primary_under_load_fails_over_within_5_s_five_times() {
    let _alone = customers_tests::exclusive().await;
    const ROUNDS: usize = 5;
    let (cluster, urls, mut instances) = three_instances().await;
    let ingress = ingress(&urls).await;
    let load = Load::start(&ingress.http(), 16, "failover");
    let mut moments = KillMoments::seeded();
    let mut failovers = Vec::new();
    for _ in 0..ROUNDS {
        let current = primary(&instances).await;
        load.wait_for_acknowledged(load.acknowledged() + 50 + moments.below(200) as usize)
            .await;
        instances[current].process.take().unwrap().kill().await;
        let killed_at = Instant::now();
        // At most one request per client was in flight: the 17th acknowledgement from now is
        // one the new primary gave.
        load.wait_for_acknowledged(load.acknowledged() + 17).await;
        failovers.push(killed_at.elapsed());
        instances[current].restart(&urls).await;
    }
    let ledger = load.stop().await;
    let client = cluster.client().await;
    let verdict = ledger.verify(&client).await;
    customers_tests::report(&format!(
        "failovers (kill -9 → first new 201): {failovers:?}; {verdict}"
    ));
    verdict.assert_nothing_lost();
    for failover in &failovers {
        assert!(*failover < Duration::from_secs(5), "{failovers:?}");
    }
    // Events carried over the failovers: one per stored customer, none twice.
    let leader = primary(&instances).await;
    let admin = HttpClient::new(([127, 0, 0, 1], instances[leader].admin_port).into());
    tokio::time::timeout(PATIENCE, async {
        while admin.metric("customers_worker_events_pending").await > 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the new primary's relay catches up");
    let listed = customers_tests::events::stored_count(&client).await;
    let newest = instances[leader].applied().await;
    all_applied(&instances, newest).await;
    // The verdict's retries of keyed creates may have created some more; every copy holds
    // the same customers, one per email.
    let stored = assert_copies_of_one_log(&mut instances).await;
    assert!(stored >= verdict.acknowledged + verdict.stored_anyway);
    assert_eq!(
        stored,
        verdict.customers.len(),
        "every stored record is one the check saw"
    );
    let held = customers_tests::events::assert_one_event_per_change(&client, &verdict).await;
    assert_eq!(
        held, listed,
        "the stream held as many before the check's reading"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_acknowledges_nothing_after_it_resumes() {
    let _alone = customers_tests::exclusive().await;
    let (cluster, urls, mut instances) = three_instances().await;
    let client = cluster.client().await;
    // Until the server drops the paused instance's connection, the queue group may hand a
    // create to it: that one goes unanswered, and the client tries again.
    let create = |email: String| {
        let client = client.clone();
        async move { create_within_a_second(&client, &email).await }
    };
    for n in 0..20 {
        create(format!("before{n}@pause.example.com")).await;
    }
    let paused = primary(&instances).await;
    instances[paused]
        .process
        .as_ref()
        .unwrap()
        .send_signal("STOP");
    // Creates sent while it is paused: some are queued on its connection, unanswered.
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..40 {
        waiting.spawn(create(format!("during{n}@pause.example.com")));
    }
    // Longer than the lease: another instance takes over and commits.
    let successor = tokio::time::timeout(PATIENCE, async {
        loop {
            let found = primary(&instances).await;
            if found != paused {
                return found;
            }
        }
    })
    .await
    .expect("a standby takes over");
    let taken = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some((None, Some(id))) = create("after@pause.example.com".into()).await {
                return id;
            }
        }
    })
    .await
    .expect("the new primary commits");
    // Reads of the customer the successor acknowledged, sent while the old primary is still
    // paused: the queue group hands some of them to it. Whoever answers, none may miss it.
    let mut reads = tokio::task::JoinSet::new();
    for n in 0..60 {
        let (client, id) = (client.clone(), taken.clone());
        reads.spawn(async move {
            let (subject, payload) = if n % 2 == 0 {
                ("customers.v1.get", id.clone())
            } else {
                (
                    "customers.v1.list",
                    r#"{"email":"after@pause.example.com"}"#.to_owned(),
                )
            };
            // A read the fenced instance took but never answered (it exits) ends here.
            let reply = tokio::time::timeout(
                Duration::from_secs(3),
                client.request(subject, payload.into()),
            )
            .await
            .ok()?
            .ok()?;
            let status = nats_header(&reply, headers::SERVICE_ERROR_CODE).map(str::to_owned);
            let found = status.is_none()
                && (subject == "customers.v1.get"
                    || String::from_utf8_lossy(&reply.payload).contains(&id));
            Some((subject, status, found))
        });
    }
    // Let the reads reach the servers (and the paused instance's connection) first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    instances[paused]
        .process
        .as_ref()
        .unwrap()
        .send_signal("CONT");
    let resumed_at = Instant::now();
    let (status, log) = instances[paused].process.take().unwrap().exited().await;
    let exit_after = resumed_at.elapsed();
    assert_eq!(
        status.code(),
        Some(75),
        "fail-stop after losing the lease: {log:#?}"
    );
    let (mut found, mut refused, mut unanswered) = (0, 0, 0);
    while let Some(read) = reads.join_next().await {
        match read.unwrap() {
            Some((_, None, true)) => found += 1,
            Some((_, Some(status), _)) if status == "503" => refused += 1,
            None => unanswered += 1,
            Some((subject, status, _)) => {
                panic!("a read missed an acknowledged customer: {subject} answered {status:?}")
            }
        }
    }
    customers_tests::report(&format!(
        "paused primary: reads of a customer its successor acknowledged: {found} found, {refused} answered 503, {unanswered} unanswered, none missed it; it exited {exit_after:?} after it resumed"
    ));
    assert!(
        exit_after < Duration::from_secs(5),
        "the fenced primary exits promptly: {exit_after:?}"
    );
    let mut acknowledged = HashMap::new();
    while let Some(outcome) = waiting.join_next().await {
        if let Some((None, Some(id))) = outcome.unwrap() {
            acknowledged.insert(id, ());
        }
    }
    // Every create answered 201, by whichever instance, is in the log: the survivors have it.
    for id in acknowledged.keys().chain([&taken]) {
        customers_tests::assert_found_over_nats(&client, id, "acknowledged before the pause").await;
    }
    customers_tests::report(&format!(
        "paused primary: {} creates acknowledged while it was paused or after, successor instance {successor}",
        acknowledged.len()
    ));
    instances[paused].restart(&urls).await;
    let newest = instances[successor].applied().await;
    all_applied(&instances, newest).await;
    assert_copies_of_one_log(&mut instances).await;
}

/// A create that is answered within a second, or `None`: the paused instance may hold it.
async fn create_within_a_second(
    client: &async_nats::Client,
    email: &str,
) -> Option<(Option<String>, Option<String>)> {
    let reply = tokio::time::timeout(
        Duration::from_millis(1000),
        client.request(subject(Endpoint::Create), customer_with_email(email).into()),
    )
    .await;
    reply.ok().and_then(Result::ok).map(|reply| {
        (
            nats_header(&reply, headers::SERVICE_ERROR_CODE).map(str::to_owned),
            nats_header(&reply, headers::CUSTOMER_ID).map(str::to_owned),
        )
    })
}

/// A primary paused past its lease that has not yet noticed the loss (the failpoint
/// `lease-loss-unnoticed` keeps its renewal from telling it) goes on taking reads when it
/// resumes. It answers none of them from its stale database: reads of a customer its
/// successor acknowledged meanwhile are answered 503 by it, and found by the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_primary_serves_no_stale_read() {
    let _alone = customers_tests::exclusive().await;
    let cluster = NatsCluster::start().await;
    let urls = cluster.urls();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(
            // Events off: the relay's own groups would fence the instance at once.
            Instance::start_with_failpoints(
                &urls,
                &["--events", "off"],
                "lease-loss-unnoticed=return",
            )
            .await,
        );
    }
    let client = cluster.client().await;
    create_customers(&client, "fenced.example.com", 0..5).await;
    let fenced = primary(&instances).await;
    let process = instances[fenced].process.as_ref().unwrap();
    process.send_signal("STOP");
    tokio::time::timeout(PATIENCE, async {
        while primary(&instances).await == fenced {}
    })
    .await
    .expect("a standby takes over");
    // With a deadline: a create the paused instance holds is dropped unread when it resumes,
    // rather than fencing it at once (which would end the test's point).
    let late = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut request_headers = async_nats::HeaderMap::new();
            let deadline = std::time::SystemTime::now() + Duration::from_millis(900);
            let deadline_ms = deadline
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            request_headers.insert(headers::DEADLINE, deadline_ms.to_string().as_str());
            let reply = tokio::time::timeout(
                Duration::from_millis(1000),
                client.request_with_headers(
                    subject(Endpoint::Create),
                    request_headers,
                    customer_with_email("late@fenced.example.com").into(),
                ),
            )
            .await;
            if let Ok(Ok(reply)) = reply
                && let Some(id) = nats_header(&reply, headers::CUSTOMER_ID)
            {
                return id.to_owned();
            }
        }
    })
    .await
    .expect("the successor acknowledges a create");
    process.send_signal("CONT");
    let mut answers: HashMap<String, usize> = HashMap::new();
    for n in 0..60 {
        let (subject, payload) = if n % 2 == 0 {
            ("customers.v1.get", late.clone())
        } else {
            (
                "customers.v1.list",
                r#"{"email":"late@fenced.example.com"}"#.to_owned(),
            )
        };
        let reply = client.request(subject, payload.into()).await.unwrap();
        let answer = match nats_header(&reply, headers::SERVICE_ERROR_CODE) {
            Some(status) => status.to_owned(),
            None if subject == "customers.v1.get"
                || String::from_utf8_lossy(&reply.payload).contains(&late) =>
            {
                "found".to_owned()
            }
            None => "an empty page".to_owned(),
        };
        *answers.entry(format!("{subject}: {answer}")).or_default() += 1;
    }
    customers_tests::report(&format!(
        "reads while a fenced primary that has not noticed takes its share: {answers:?}"
    ));
    for answer in answers.keys() {
        assert!(
            answer.ends_with("found") || answer.ends_with("503"),
            "a read missed an acknowledged customer: {answers:?}"
        );
    }
    let mut refused_by_fenced = 0.0;
    for operation in ["get", "list"] {
        refused_by_fenced += instances[fenced]
            .metric(&format!(
                r#"customers_worker_replies_total{{operation="{operation}",status="503"}}"#
            ))
            .await;
    }
    assert!(
        refused_by_fenced > 0.0,
        "the fenced primary took some of the reads and refused them: {answers:?}"
    );
    instances[fenced].process.take().unwrap().kill().await;
    instances[fenced].restart(&urls).await;
    let successor = primary(&instances).await;
    let newest = instances[successor].applied().await;
    all_applied(&instances, newest).await;
    assert_copies_of_one_log(&mut instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_under_load_stops_nothing_and_rejoins() {
    let _alone = customers_tests::exclusive().await;
    let (mut cluster, urls, mut instances) = three_instances().await;
    let ingress = ingress(&urls).await;
    let load = Load::start(&ingress.http(), 16, "node");
    load.wait_for_acknowledged(200).await;
    cluster.nodes[0].stop();
    let killed_at = Instant::now();
    // When the node led the log's or the lease's stream, JetStream elects a new leader first
    // (nats-server's Raft election timeout: seconds), and a primary whose lease ran out
    // meanwhile hands over: creates pause for that long, then go on (12–15 s measured here;
    // an election alone may take up to 9 s, so a slower machine gets some room).
    load.wait_for_acknowledged_within(load.acknowledged() + 17, Duration::from_secs(30))
        .await;
    let stall = killed_at.elapsed();
    // The node is still down: the other stream's leader may be elected only now, and a lease
    // that ran out meanwhile hands over, which pauses creates once more for as long.
    load.wait_for_acknowledged_within(load.acknowledged() + 300, Duration::from_secs(30))
        .await;
    cluster.nodes[0].restart();
    customers_tests::wait_for_jetstream(&cluster.nodes[0].url()).await;
    load.wait_for_acknowledged(load.acknowledged() + 300).await;
    let ledger = load.stop().await;
    for instance in &mut instances {
        instance.restart_if_exited(&urls).await;
    }
    // The check reads through every instance: first let them all catch up with the log (a
    // standby whose consumer was on the killed node re-makes it within seconds).
    let newest = instances[primary(&instances).await].applied().await;
    all_applied(&instances, newest).await;
    let client = cluster.client().await;
    let verdict = ledger.verify(&client).await;
    customers_tests::report(&format!(
        "a NATS node killed and restarted under load: first new 201 {stall:?} after the kill; {verdict}"
    ));
    assert!(stall < Duration::from_secs(25), "{stall:?}");
    verdict.assert_nothing_lost();
    // The lease's stream may have moved while the node rejoined: a primary that lost it
    // during the check, or while the instances catch up now, exits (75) and comes back as
    // a standby.
    all_applied_restarting(&mut instances, &urls).await;
    assert_copies_of_one_log(&mut instances).await;
}

/// Waits until every instance applied the log as far as the primary, restarting those that
/// exited (75: a lost lease) on the way.
async fn all_applied_restarting(instances: &mut [Instance], urls: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for instance in instances.iter_mut() {
            instance.restart_if_exited(urls).await;
        }
        let newest = instances[primary(instances).await].try_applied().await;
        let mut behind = newest.is_none();
        for instance in instances.iter() {
            behind |= instance
                .try_applied()
                .await
                .is_none_or(|at| Some(at) < newest);
        }
        if !behind {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the instances catch up with the log"
        );
        // Nothing announces a catch-up: the metrics are read again.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A change of `id` over NATS, answered by the primary: its reply.
async fn change(
    client: &async_nats::Client,
    endpoint: Endpoint,
    id: &str,
    payload: String,
) -> async_nats::Message {
    let mut map = async_nats::HeaderMap::new();
    map.insert(headers::CUSTOMER_ID, id);
    client
        .request_with_headers(subject(endpoint), map, payload.into())
        .await
        .unwrap()
}

/// A 3-node cluster and three instances whose standbys apply each log group late (the
/// failpoint `standby-apply=sleep(ms)`).
async fn instances_with_late_standbys(late: &'static str) -> (NatsCluster, Vec<Instance>) {
    let cluster = NatsCluster::start().await;
    let urls = cluster.urls();
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(Instance::start_with_failpoints(&urls, &[], late).await);
    }
    (cluster, instances)
}

/// The successful replies to `operation` the standbys sent.
async fn standby_replies(instances: &[Instance], operation: &str) -> f64 {
    let leader = primary(instances).await;
    let series =
        format!(r#"customers_worker_replies_total{{operation="{operation}",status="200"}}"#);
    let mut total = 0.0;
    for (n, instance) in instances.iter().enumerate() {
        if n != leader {
            total += instance.metric(&series).await;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_reads_an_acknowledged_update_or_delete_at_once() {
    let _alone = customers_tests::exclusive().await;
    // Standbys that apply each log group 50 ms late: a read they answered without catching
    // up would show the version before.
    let (cluster, instances) = instances_with_late_standbys("standby-apply=sleep(50)").await;
    let client = cluster.client().await;
    let created = create_customers(&client, "ryw.example.com", 0..1).await;
    let id = created.keys().next().unwrap().clone();
    for n in 0..40 {
        let patch = format!(r#"{{"custom_data":{{"n":{n}}}}}"#);
        let updated = change(&client, Endpoint::Update, &id, patch).await;
        assert_eq!(nats_header(&updated, headers::SERVICE_ERROR_CODE), None);
        // Whichever instance the queue group picks, it shows this version.
        let read = client
            .request(subject(Endpoint::Get), id.clone().into())
            .await
            .unwrap();
        assert_eq!(
            nats_header(&read, headers::ETAG),
            nats_header(&updated, headers::ETAG),
            "round {n}"
        );
        assert_eq!(read.payload, updated.payload, "round {n}");
    }
    let deleted = change(&client, Endpoint::Delete, &id, String::new()).await;
    assert_eq!(nats_header(&deleted, headers::SERVICE_ERROR_CODE), None);
    for n in 0..10 {
        let read = client
            .request(subject(Endpoint::Get), id.clone().into())
            .await
            .unwrap();
        assert_eq!(
            nats_header(&read, headers::SERVICE_ERROR_CODE),
            Some("410"),
            "read {n} after the delete"
        );
    }
    let standby_reads = standby_replies(&instances, "get").await;
    assert!(standby_reads > 0.0, "the standbys served some of the reads");
}

/// The `total_count` of a search over NATS, from whichever instance answers.
async fn search_total(client: &async_nats::Client, query: &str) -> u64 {
    let payload = serde_json::json!({ "query": query }).to_string();
    let reply = client
        .request(subject(Endpoint::Search), payload.into())
        .await
        .unwrap();
    assert_eq!(
        nats_header(&reply, headers::SERVICE_ERROR_CODE),
        None,
        "{query}: {:?}",
        String::from_utf8_lossy(&reply.payload)
    );
    let page: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    page["total_count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_searches_an_acknowledged_write_at_once() {
    let _alone = customers_tests::exclusive().await;
    // Standbys that apply each log group 50 ms late: a search they answered without catching
    // up would find the name before.
    let (cluster, instances) = instances_with_late_standbys("standby-apply=sleep(50)").await;
    let client = cluster.client().await;
    let created = create_customers(&client, "search.ryw.example", 0..1).await;
    let id = created.keys().next().unwrap().clone();
    assert_eq!(
        search_total(&client, "email:'c0@search.ryw.example'").await,
        1
    );
    for n in 0..30 {
        let patch = format!(r#"{{"name":"Round {n}"}}"#);
        let updated = change(&client, Endpoint::Update, &id, patch).await;
        assert_eq!(nats_header(&updated, headers::SERVICE_ERROR_CODE), None);
        assert_eq!(
            search_total(&client, &format!("name:'round {n}'")).await,
            1,
            "round {n}"
        );
        if n > 0 {
            let before = format!("name:'round {}'", n - 1);
            assert_eq!(search_total(&client, &before).await, 0, "round {n}");
        }
    }
    let deleted = change(&client, Endpoint::Delete, &id, String::new()).await;
    assert_eq!(nats_header(&deleted, headers::SERVICE_ERROR_CODE), None);
    for n in 0..10 {
        let found = search_total(&client, "email~'@search.ryw.example'").await;
        assert_eq!(found, 0, "search {n} after the delete");
    }
    let standby_searches = standby_replies(&instances, "search").await;
    assert!(
        standby_searches > 0.0,
        "the standbys served some of the searches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_rebuilds_from_the_log_after_its_data_directory_is_wiped() {
    let _alone = customers_tests::exclusive().await;
    let (cluster, urls, mut instances) = three_instances().await;
    let client = cluster.client().await;
    assert_eq!(
        service_roles(&client).await,
        ["primary", "standby", "standby"],
        "$SRV.INFO metadata"
    );
    let created = create_customers(&client, "wipe.example.com", 0..300).await;
    let leader = primary(&instances).await;
    let wiped = (leader + 1) % 3;
    for (n, instance) in instances.iter().enumerate() {
        let admin = HttpClient::new(([127, 0, 0, 1], instance.admin_port).into());
        let is_primary = admin
            .metric(r#"customers_worker_role{role="primary"}"#)
            .await;
        let is_standby = admin
            .metric(r#"customers_worker_role{role="standby"}"#)
            .await;
        assert_eq!(
            (is_primary, is_standby),
            if n == leader { (1.0, 0.0) } else { (0.0, 1.0) }
        );
    }
    instances[wiped].process.take().unwrap().kill().await;
    instances[wiped].data_dir = tempfile::tempdir().unwrap();
    instances[wiped].restart(&urls).await;
    let newest = instances[leader].applied().await;
    all_applied(&instances, newest).await;

    // Only the rebuilt instance left: every read is its answer, and matches what was created.
    let other = 3 - leader - wiped;
    for n in [other, leader] {
        let process = instances[n].process.take().unwrap();
        stop_cleanly(process).await;
    }
    assert_eq!(primary(&instances).await, wiped, "the survivor takes over");
    for (id, body) in &created {
        let reply = client
            .request(subject(Endpoint::Get), id.clone().into())
            .await
            .unwrap();
        assert_eq!(&reply.payload, body, "{id}");
    }
    for n in [other, leader] {
        instances[n].restart(&urls).await;
    }
    let newest = instances[wiped].applied().await;
    all_applied(&instances, newest).await;
    assert_eq!(assert_copies_of_one_log(&mut instances).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_behind_the_trimmed_log_start_from_the_snapshot() {
    let _alone = customers_tests::exclusive().await;
    let (cluster, urls, mut instances) =
        three_instances_with(&["--snapshot-interval", "300ms"]).await;
    let client = cluster.client().await;
    service_roles(&client).await; // a primary is serving
    create_customers(&client, "snapshot.example.com", 0..100).await;
    let leader = primary(&instances).await;
    let (stale, wiped) = ((leader + 1) % 3, (leader + 2) % 3);
    // One standby stops with its data (applied up to where the log is now) ...
    all_applied(&instances, instances[leader].applied().await).await;
    let stale_applied = instances[stale].applied().await as u64;
    stop_cleanly(instances[stale].process.take().unwrap()).await;
    // ... while the primary goes on, stores snapshots and trims the log past that point.
    let mut created = 100;
    tokio::time::timeout(PATIENCE, async {
        while log_first_sequence(&client).await <= stale_applied + 1 {
            create_customers(&client, "snapshot.example.com", created..created + 20).await;
            created += 20;
        }
    })
    .await
    .expect("the log is trimmed after snapshots");
    // The other standby loses its disk.
    instances[wiped].process.take().unwrap().kill().await;
    instances[wiped].data_dir = tempfile::tempdir().unwrap();
    for n in [stale, wiped] {
        instances[n].restart(&urls).await;
    }
    let first = log_first_sequence(&client).await;
    for n in [stale, wiped] {
        let snapshot = instances[n]
            .metric("customers_worker_snapshot_log_sequence")
            .await;
        assert!(
            snapshot as u64 + 1 >= first && snapshot as u64 > stale_applied,
            "instance {n} started from the snapshot through {snapshot} (log starts at {first})"
        );
    }
    let stored = instances[leader]
        .metric(r#"customers_worker_snapshots_total{result="ok"}"#)
        .await;
    customers_tests::report(&format!(
        "snapshots: {stored} stored, the log trimmed to start at {first}; two standbys restarted from the snapshot"
    ));
    // Both followed the log from the snapshot on: every instance holds the same customers.
    create_customers(&client, "snapshot.example.com", created..created + 20).await;
    created += 20;
    all_applied(&instances, instances[leader].applied().await).await;
    assert_eq!(
        assert_copies_of_one_log(&mut instances).await,
        created as usize
    );
}

/// Replicated mode keeps three copies of the log: a single nats-server cannot, and the worker
/// says so at once instead of retrying as if a cluster were still electing its leader.
#[tokio::test]
async fn replicated_mode_on_a_single_server_is_refused_at_once() {
    let nats = customers_tests::NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, stderr) = customers_tests::run_to_exit(
        "customers-worker",
        &[
            "--nats-url",
            &nats.url(),
            "--data-dir",
            data_dir.path().to_str().unwrap(),
            "--replication",
            "jetstream",
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--replication-replicas 3 keeps a copy on each of 3 NATS nodes")
            && stderr.contains("is not part of a cluster"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after retries: {:?}",
        started.elapsed()
    );
}

/// One change-feed page over NATS from `cursor`, with tombstones: its items, `has_more` and
/// `next_cursor`.
async fn feed_page_over_nats(
    client: &async_nats::Client,
    cursor: Option<&str>,
) -> (Vec<serde_json::Value>, bool, String) {
    let mut query =
        serde_json::json!({"order": "updated_asc", "include_deleted": true, "limit": 7});
    if let Some(cursor) = cursor {
        query["cursor"] = cursor.into();
    }
    let reply = client
        .request(subject(Endpoint::List), query.to_string().into())
        .await
        .unwrap();
    assert_eq!(
        nats_header(&reply, headers::SERVICE_ERROR_CODE),
        None,
        "{reply:?}"
    );
    let page: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    (
        page["data"].as_array().unwrap().clone(),
        page["has_more"].as_bool().unwrap(),
        page["next_cursor"].as_str().unwrap().to_owned(),
    )
}

/// Keeps each feed item in `mirror` by id; fails on a change (id, time) delivered twice.
fn mirror_items(
    mirror: &mut HashMap<String, serde_json::Value>,
    seen: &mut std::collections::HashSet<(String, String)>,
    items: Vec<serde_json::Value>,
) {
    for item in items {
        let id = item["id"].as_str().unwrap().to_owned();
        let at = item.get("deleted_at").or(item.get("updated_at")).unwrap();
        let change = (id.clone(), at.as_str().unwrap().to_owned());
        assert!(seen.insert(change.clone()), "delivered twice: {change:?}");
        mirror.insert(id, item);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_feed_read_from_every_instance_skips_and_repeats_nothing() {
    let _alone = customers_tests::exclusive().await;
    // Standbys a little behind the log: a feed page they answered before catching up, or
    // past what they applied, would skip a change.
    let (cluster, instances) = instances_with_late_standbys("standby-apply=sleep(5)").await;
    let client = cluster.client().await;
    let mut expected: HashMap<String, bytes::Bytes> = HashMap::new();
    let mut mirror: HashMap<String, serde_json::Value> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    for round in 0..8u32 {
        // Writes and feed pages interleaved, each page from whichever instance answers.
        let created = create_customers(&client, &format!("r{round}.feed.example"), 0..6).await;
        expected.extend(created);
        let ids: Vec<String> = expected.keys().cloned().collect();
        for id in ids.iter().step_by(4) {
            let patch = format!(r#"{{"custom_data":{{"round":{round}}}}}"#);
            let updated = change(&client, Endpoint::Update, id, patch).await;
            if nats_header(&updated, headers::SERVICE_ERROR_CODE).is_none() {
                expected.insert(id.clone(), updated.payload.clone());
            }
            let (items, _, next) = feed_page_over_nats(&client, cursor.as_deref()).await;
            mirror_items(&mut mirror, &mut seen, items);
            cursor = Some(next);
        }
    }
    // Caught up once a page says so after a later write: a standby shows the changes of its
    // newest applied millisecond only once a later one lands.
    let mut flushes = 0;
    loop {
        let (items, more, next) = feed_page_over_nats(&client, cursor.as_deref()).await;
        mirror_items(&mut mirror, &mut seen, items);
        cursor = Some(next);
        if more {
            continue;
        }
        let missing = expected
            .iter()
            .filter(|(id, body)| {
                let body: serde_json::Value = serde_json::from_slice(body).unwrap();
                mirror.get(*id) != Some(&body)
            })
            .count();
        if missing == 0 {
            break;
        }
        flushes += 1;
        assert!(flushes < 50, "{missing} changes never reached the mirror");
        create_customers(&client, &format!("flush{flushes}.feed.example"), 0..1).await;
    }
    let served_by_standbys = standby_replies(&instances, "list").await;
    assert!(
        served_by_standbys > 0.0,
        "the standbys served some of the pages"
    );
    customers_tests::report(&format!(
        "replicated change feed: {} customers mirrored, {} changes delivered, {flushes} flush writes",
        expected.len(),
        seen.len()
    ));
}
