//! Who may call the customer endpoints: API keys with scopes (401 without a valid one, 403
//! without the scope), rate limits per credential (429 with `Retry-After` and the IETF
//! `RateLimit` fields, within a few percent of the policy), and the keys file reloaded on
//! change and on SIGHUP, under load, without failing a request and without a secret in the
//! logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use customers_ingress::auth::api_key::{Environment, MintedKey};
use customers_ingress::auth::keys_file::{KeysFile, Scope};
use customers_ingress::config::AuthMode;
use customers_ingress::rate_limit::Policy;
use customers_tests::{
    HttpClient, NatsServer, PATIENCE, ServiceProcess, TestIngress, TestResponse, TestWorker,
    UNLIMITED, customer_with_email, mint_key, report,
};
use http_body_util::Full;

/// NATS, a worker and an ingress reading the keys file `keys_file`.
struct Stack {
    _nats: NatsServer,
    _worker: TestWorker,
    ingress: TestIngress,
    _data_dir: tempfile::TempDir,
}

impl Stack {
    async fn start(
        keys_file: &Path,
        configure: impl FnOnce(&mut customers_ingress::Config),
    ) -> Self {
        let nats = NatsServer::start();
        let data_dir = tempfile::tempdir().unwrap();
        let worker = TestWorker::start(&nats.url(), data_dir.path()).await;
        let mut config = customers_ingress::Config::new(nats.url());
        config.keys_file = Some(keys_file.to_owned());
        configure(&mut config);
        let ingress = TestIngress::start_with(config).await;
        Self {
            _nats: nats,
            _worker: worker,
            ingress,
            _data_dir: data_dir,
        }
    }

    fn client(&self, key: &str) -> HttpClient {
        HttpClient::new(self.ingress.addr).with_api_key(key)
    }

    fn anonymous(&self) -> HttpClient {
        HttpClient::new(self.ingress.addr)
    }

    /// The value of the metric series `series` (name and labels as rendered), 0 if absent.
    async fn metric(&self, series: &str) -> f64 {
        self.anonymous().metric(series).await
    }
}

fn keys_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    (dir, path)
}

/// The id inside a key `ck_{environment}_{id}_{secret}`.
fn id_of(key: &str) -> &str {
    key.split('_').nth(2).expect("a key id")
}

/// `key` with the last character of its secret changed.
fn with_wrong_secret(key: &str) -> String {
    let (kept, last) = key.split_at(key.len() - 1);
    format!("{kept}{}", if last == "a" { 'b' } else { 'a' })
}

/// How many customers have `email`, asked with `client`.
async fn customers_with_email(client: &HttpClient, email: &str) -> usize {
    let page = client
        .get(&format!("/api/v1/customers?email={email}"))
        .await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.json()["data"].as_array().unwrap().len()
}

struct Case {
    description: &'static str,
    authorization: Option<String>,
    method: &'static str,
    path: String,
    status: u16,
    code: Option<&'static str>,
    detail: Option<&'static str>,
    challenge: Option<String>,
}

#[tokio::test]
async fn every_credential_gets_the_answer_it_deserves() {
    let (_dir, keys) = keys_dir();
    let full = mint_key(&keys, &[Scope::Read, Scope::Write], Some(UNLIMITED));
    let reader = mint_key(&keys, &[Scope::Read], Some(UNLIMITED));
    let writer = mint_key(&keys, &[Scope::Write], Some(UNLIMITED));
    let revoked = mint_key(&keys, &[Scope::Read, Scope::Write], None);
    KeysFile::edit(&keys, |file| file.revoke(id_of(&revoked))).unwrap();
    let expired = KeysFile::edit(&keys, |file| {
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let scopes = vec![Scope::Read, Scope::Write];
        file.mint(Environment::Test, None, scopes, Some(an_hour_ago), None)
    })
    .unwrap()
    .key;
    let unknown = MintedKey::generate(Environment::Live).unwrap().key;
    let wrong_secret = with_wrong_secret(&full);
    let stack = Stack::start(&keys, |_| {}).await;
    let created = stack
        .client(&full)
        .create(&customer_with_email("existing@example.com"))
        .await;
    assert_eq!(created.status, 201);
    let customer = created.header("location").unwrap().to_owned();

    let bearer = |key: &str| Some(format!("Bearer {key}"));
    let basic = r#"Bearer realm="customers""#.to_owned();
    let invalid = r#"Bearer realm="customers", error="invalid_token""#.to_owned();
    let scope = |scope: &str| {
        format!(r#"Bearer realm="customers", error="insufficient_scope", scope="{scope}""#)
    };
    let create = |description, authorization, status, code, detail, challenge| Case {
        description,
        authorization,
        method: "POST",
        path: "/api/v1/customers".into(),
        status,
        code,
        detail,
        challenge,
    };
    let get = |description, authorization, path: &str, status, code, challenge| Case {
        description,
        authorization,
        method: "GET",
        path: path.to_owned(),
        status,
        code,
        detail: None,
        challenge,
    };
    let not_valid = Some("the API key is not valid");
    let cases = [
        create(
            "no credentials",
            None,
            401,
            Some("unauthorized"),
            None,
            Some(basic.clone()),
        ),
        create(
            "the Basic scheme",
            Some("Basic dXNlcjpwYXNz".into()),
            401,
            Some("unauthorized"),
            Some("the Authorization header must use the Bearer scheme"),
            Some(invalid.clone()),
        ),
        create(
            "a bearer token that is not a key",
            bearer("not-a-key"),
            401,
            Some("unauthorized"),
            Some("the bearer token is not an API key"),
            Some(invalid.clone()),
        ),
        create(
            "a key that was never minted",
            bearer(&unknown),
            401,
            Some("unauthorized"),
            not_valid,
            Some(invalid.clone()),
        ),
        create(
            "a known id with a wrong secret (same answer as unknown)",
            bearer(&wrong_secret),
            401,
            Some("unauthorized"),
            not_valid,
            Some(invalid.clone()),
        ),
        create(
            "a revoked key",
            bearer(&revoked),
            401,
            Some("unauthorized"),
            Some("the API key has been revoked"),
            Some(invalid.clone()),
        ),
        create(
            "an expired key",
            bearer(&expired),
            401,
            Some("unauthorized"),
            Some("the API key has expired"),
            Some(invalid.clone()),
        ),
        create(
            "a read-only key creating",
            bearer(&reader),
            403,
            Some("forbidden"),
            Some("this credential lacks the customers:write scope"),
            Some(scope("customers:write")),
        ),
        create(
            "a write key creating",
            bearer(&writer),
            201,
            None,
            None,
            None,
        ),
        get(
            "a write-only key listing",
            bearer(&writer),
            "/api/v1/customers",
            403,
            Some("forbidden"),
            Some(scope("customers:read")),
        ),
        get(
            "a write-only key reading a customer",
            bearer(&writer),
            &customer,
            403,
            Some("forbidden"),
            Some(scope("customers:read")),
        ),
        get(
            "no credentials reading a customer",
            None,
            &customer,
            401,
            Some("unauthorized"),
            Some(basic.clone()),
        ),
        get(
            "a read key listing",
            bearer(&reader),
            "/api/v1/customers",
            200,
            None,
            None,
        ),
        get(
            "a read key reading a customer",
            bearer(&reader),
            &customer,
            200,
            None,
            None,
        ),
        get("health needs no key", None, "/healthz", 200, None, None),
        get("readiness needs no key", None, "/readyz", 200, None, None),
        get("metrics need no key", None, "/metrics", 200, None, None),
        get(
            "the OpenAPI document needs no key",
            None,
            "/api/v1/openapi.json",
            200,
            None,
            None,
        ),
        get(
            "an unknown path",
            None,
            "/nowhere",
            404,
            Some("not_found"),
            None,
        ),
    ];

    let client = stack.anonymous();
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let mut request = client
            .request(case.method, &case.path)
            .header("content-type", "application/json");
        if let Some(authorization) = &case.authorization {
            request = request.header("authorization", authorization);
        }
        let body = customer_with_email(&format!("case{n}@example.com"));
        let response = client
            .send(request.body(Full::new(body.into())).unwrap())
            .await;
        if let Some(problem) = check(case, &response) {
            failures.push(format!("{}: {problem}", case.description));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Only the writer's create (case 8) stored a customer.
    for (n, case) in cases.iter().enumerate() {
        let email = format!("case{n}@example.com");
        let stored = customers_with_email(&stack.client(&full), &email).await;
        assert_eq!(stored, usize::from(n == 8), "{}", case.description);
    }
    for (reason, count) in [
        ("missing", 2.0),
        ("not_bearer", 1.0),
        ("malformed", 1.0),
        ("invalid", 2.0),
        ("revoked", 1.0),
        ("expired", 1.0),
    ] {
        let series = format!(r#"customers_ingress_auth_failures_total{{reason="{reason}"}}"#);
        assert_eq!(stack.metric(&series).await, count, "{reason}");
    }
}

/// What is wrong with `response` for `case`, if anything.
fn check(case: &Case, response: &TestResponse) -> Option<String> {
    if response.status != case.status {
        return Some(format!("status {} {:?}", response.status, response.body));
    }
    let challenge = response.header("www-authenticate").map(str::to_owned);
    if challenge != case.challenge {
        return Some(format!("WWW-Authenticate {challenge:?}"));
    }
    if let Some(code) = case.code {
        let problem = response.json();
        if response.header("content-type") != Some("application/problem+json")
            || problem["code"] != code
        {
            return Some(format!("problem {problem}"));
        }
        if case
            .detail
            .is_some_and(|detail| problem["detail"] != detail)
        {
            return Some(format!("detail {}", problem["detail"]));
        }
    }
    // A request that reached the rate limiter is told where its credential stands.
    let customer_endpoint = case.path.starts_with("/api/v1/customers");
    let limited = customer_endpoint && ![401, 403].contains(&case.status);
    let reports_limit =
        response.header("ratelimit").is_some() && response.header("ratelimit-policy").is_some();
    if limited != reports_limit {
        return Some("RateLimit fields on exactly the rate-limited answers".to_owned());
    }
    None
}

/// Two `Authorization` headers: a proxy that checks the last one would see another
/// credential than the first, which would decide here. Refused, whichever they are (RFC 6750
/// §3.1 `invalid_request`), before anything else.
#[tokio::test]
async fn a_repeated_authorization_header_is_400() {
    let (_dir, keys) = keys_dir();
    let writer = mint_key(&keys, &[Scope::Read, Scope::Write], Some(UNLIMITED));
    let reader = mint_key(&keys, &[Scope::Read], Some(UNLIMITED));
    let stack = Stack::start(&keys, |_| {}).await;
    let anonymous = stack.anonymous();
    for (description, first, second) in [
        ("a key with the scope, then one without", &writer, &reader),
        ("a key without the scope, then one with", &reader, &writer),
        ("the same key twice", &writer, &writer),
    ] {
        let request = anonymous
            .request("POST", "/api/v1/customers")
            .header("authorization", format!("Bearer {first}"))
            .header("authorization", format!("Bearer {second}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                customer_with_email("twice@example.com"),
            )))
            .unwrap();
        let response = anonymous.send(request).await;
        assert_eq!(response.status, 400, "{description}");
        assert_eq!(
            response.json()["code"],
            "invalid_authorization",
            "{description}"
        );
        assert_eq!(
            response.header("www-authenticate"),
            Some(r#"Bearer realm="customers", error="invalid_request""#),
            "{description}"
        );
    }
    assert_eq!(
        customers_with_email(&stack.client(&writer), "twice@example.com").await,
        0
    );
    assert_eq!(
        stack
            .metric(r#"customers_ingress_auth_failures_total{reason="repeated"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn past_its_rate_limit_a_key_gets_429_and_creates_nothing() {
    let (_dir, keys) = keys_dir();
    let full = mint_key(&keys, &[Scope::Read, Scope::Write], Some(UNLIMITED));
    let slow = Policy {
        per_second: 0.5,
        burst: 3,
    };
    let limited = mint_key(&keys, &[Scope::Write], Some(slow));
    let stack = Stack::start(&keys, |_| {}).await;
    let client = stack.client(&limited);

    for remaining in (0..3).rev() {
        let response = client
            .create(&customer_with_email(&format!(
                "limited{remaining}@example.com"
            )))
            .await;
        assert_eq!(response.status, 201);
        assert_eq!(
            response.header("ratelimit-policy"),
            Some(r#""requests";q=3;w=6"#)
        );
        // t is the time until the bucket is full again: 2 s per token spent.
        let spent = 3 - remaining;
        assert_eq!(
            response.header("ratelimit"),
            Some(format!(r#""requests";r={remaining};t={}"#, 2 * spent).as_str())
        );
    }
    let refused = client
        .create(&customer_with_email("over@example.com"))
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["code"], "rate_limited");
    // The next token comes 2 s after the first request.
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Retry-After is the wait for one token; RateLimit's t the wait until the bucket is
    // full (three tokens spent at 2 s each), as §7 and the IETF draft define it.
    assert_eq!(refused.header("ratelimit"), Some(r#""requests";r=0;t=6"#));
    assert_eq!(
        customers_with_email(&stack.client(&full), "over@example.com").await,
        0
    );
    let series = format!(
        r#"customers_ingress_rate_limited_total{{credential="{}"}}"#,
        id_of(&limited)
    );
    assert_eq!(stack.metric(&series).await, 1.0);
}

#[tokio::test]
async fn without_authentication_each_address_is_rate_limited() {
    let (_dir, keys) = keys_dir();
    let stack = Stack::start(&keys, |config| {
        config.auth = AuthMode::None;
        config.keys_file = None;
        config.rate_limit_per_second = 0.5;
        config.rate_limit_burst = 2;
    })
    .await;
    let client = stack.anonymous();
    assert_eq!(client.get("/api/v1/customers").await.status, 200);
    assert_eq!(
        client
            .create(&customer_with_email("open@example.com"))
            .await
            .status,
        201
    );
    let refused = client.get("/api/v1/customers").await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowed_count_matches_the_policy() {
    let _alone = customers_tests::exclusive().await;
    let (_dir, keys) = keys_dir();
    let policy = Policy {
        per_second: 100.0,
        burst: 10,
    };
    let key = mint_key(&keys, &[Scope::Read], Some(policy));
    let stack = Stack::start(&keys, |_| {}).await;
    let client = stack.client(&key);
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut statuses = BTreeMap::<u16, u64>::new();
                while started.elapsed() < window {
                    let response = client.get("/api/v1/customers/cus_nosuchcustomer").await;
                    *statuses.entry(response.status).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses = BTreeMap::<u16, u64>::new();
    for task in tasks {
        for (status, count) in task.await.unwrap() {
            *statuses.entry(status).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = statuses
        .iter()
        .filter(|(status, _)| **status != 429)
        .map(|(_, count)| *count)
        .sum::<u64>() as f64;
    let expected = f64::from(policy.burst) + policy.per_second * elapsed;
    let error = (allowed - expected).abs() / expected;
    report(&format!(
        "rate limit {}/s burst {}: {allowed} allowed in {elapsed:.3} s, policy says {expected:.1} ({:+.2} %); statuses {statuses:?}",
        policy.per_second,
        policy.burst,
        100.0 * (allowed - expected) / expected
    ));
    assert!(statuses.get(&429).is_some_and(|&n| n > 0), "{statuses:?}");
    assert!(error <= 0.03, "{allowed} allowed, {expected:.1} expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reload_and_revocations_take_effect_under_load_without_failing_a_request() {
    let _alone = customers_tests::exclusive().await;
    let (_dir, keys) = keys_dir();
    let steady = mint_key(&keys, &[Scope::Read, Scope::Write], Some(UNLIMITED));
    let stack = Stack::start(&keys, |config| {
        config.reload_interval = Duration::from_millis(50);
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|n| {
            let client = stack.client(&steady);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut statuses = BTreeMap::<u16, u64>::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let response = if i % 4 == 0 {
                        client
                            .create(&customer_with_email(&format!("load{n}-{i}@example.com")))
                            .await
                    } else {
                        client.get("/api/v1/customers?limit=1").await
                    };
                    *statuses.entry(response.status).or_default() += 1;
                    i += 1;
                }
                statuses
            })
        })
        .collect();

    let rounds = 10;
    let mut revocation_delays = Vec::new();
    for _ in 0..rounds {
        let key = mint_key(&keys, &[Scope::Read], Some(UNLIMITED));
        let client = stack.client(&key);
        wait_for_status(&client, 200).await;
        KeysFile::edit(&keys, |file| file.revoke(id_of(&key))).unwrap();
        let revoked_at = Instant::now();
        wait_for_status(&client, 401).await;
        revocation_delays.push(revoked_at.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut statuses = BTreeMap::<u16, u64>::new();
    for task in load {
        for (status, count) in task.await.unwrap() {
            *statuses.entry(status).or_default() += count;
        }
    }
    let slowest = revocation_delays.iter().max().unwrap();
    report(&format!(
        "{rounds} mint/revoke reloads under load: steady key's answers {statuses:?}; revocation effective within {slowest:?} (reload interval 50 ms)"
    ));
    assert!(
        statuses.keys().all(|status| [200, 201].contains(status)),
        "{statuses:?}"
    );
    let ok = r#"customers_ingress_reloads_total{source="keys",result="ok"}"#;
    assert!(stack.metric(ok).await >= f64::from(2 * rounds));
    let failed = r#"customers_ingress_reloads_total{source="keys",result="error"}"#;
    assert_eq!(stack.metric(failed).await, 0.0);
}

/// Polls (as a client would) until `client`'s list request is answered `status`.
async fn wait_for_status(client: &HttpClient, status: u16) {
    tokio::time::timeout(PATIENCE, async {
        while client.get("/api/v1/customers?limit=1").await.status != status {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {status} within {PATIENCE:?}"));
}

#[tokio::test]
async fn a_broken_keys_file_leaves_the_keys_in_force() {
    let (_dir, keys) = keys_dir();
    let key = mint_key(&keys, &[Scope::Read], Some(UNLIMITED));
    let stack = Stack::start(&keys, |config| {
        config.reload_interval = Duration::from_millis(50);
    })
    .await;
    let good = std::fs::read(&keys).unwrap();
    let failed = r#"customers_ingress_reloads_total{source="keys",result="error"}"#;
    for (description, broken) in [
        ("cut short", &good[..good.len() / 2]),
        ("an unknown field", br#"{"version":1,"keyz":[]}"#.as_slice()),
    ] {
        let before = stack.metric(failed).await;
        std::fs::write(&keys, broken).unwrap();
        tokio::time::timeout(PATIENCE, async {
            while stack.metric(failed).await == before {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{description}: no failed reload counted"));
        let response = stack.client(&key).get("/api/v1/customers").await;
        assert_eq!(response.status, 200, "{description}");
    }
}

#[tokio::test]
async fn sighup_reloads_and_logs_name_keys_never_secrets() {
    let (_dir, keys) = keys_dir();
    let first = mint_key(&keys, &[Scope::Read], Some(UNLIMITED));
    let nats = NatsServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let _worker = TestWorker::start(&nats.url(), data_dir.path()).await;
    let keys_arg = keys.display().to_string();
    let mut ingress = ServiceProcess::start_with_env(
        "customers-ingress",
        &[
            "--nats-url",
            &nats.url(),
            "--listen",
            "127.0.0.1:0",
            "--keys-file",
            &keys_arg,
            // Only SIGHUP can reload within this test.
            "--reload-interval",
            "1h",
            "--log-format",
            "json",
        ],
        &[("RUST_LOG", "info,customers_ingress=debug")],
        "serving",
    )
    .await;
    let ready: serde_json::Value = serde_json::from_str(&ingress.ready_line).unwrap();
    let addr = ready["fields"]["listen"].as_str().unwrap().parse().unwrap();

    let second = mint_key(&keys, &[Scope::Read], Some(UNLIMITED));
    let second_client = HttpClient::new(addr).with_api_key(&second);
    assert_eq!(second_client.get("/api/v1/customers").await.status, 401);
    ingress.send_signal("HUP");
    ingress.wait_for_log("keys file reloaded").await;
    assert_eq!(second_client.get("/api/v1/customers").await.status, 200);

    let first_client = HttpClient::new(addr).with_api_key(&first);
    assert_eq!(first_client.get("/api/v1/customers").await.status, 200);
    let wrong = with_wrong_secret(&first);
    let wrong_client = HttpClient::new(addr).with_api_key(&wrong);
    assert_eq!(wrong_client.get("/api/v1/customers").await.status, 401);

    ingress.send_signal("TERM");
    let (status, lines) = ingress.exited().await;
    assert!(status.success());
    let named = lines.iter().any(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|line| line["span"]["credential"] == id_of(&first))
    });
    assert!(named, "a log line names the key id: {lines:#?}");
    for secret in [&first, &second, &wrong] {
        assert!(
            !lines.iter().any(|line| line.contains(secret.as_str())),
            "a key appears in the log"
        );
    }
}

/// The refusal to start without a keys file is in `ingress/tests/cli.rs`; this is the other
/// half: told `--auth none`, the ingress serves, and says so at warn level on every start.
#[tokio::test]
async fn without_keys_the_ingress_serves_only_when_told_and_warns() {
    let nats = NatsServer::start();
    let mut open = ServiceProcess::start_with_env(
        "customers-ingress",
        &["--nats-url", &nats.url(), "--listen", "127.0.0.1:0"],
        &[("CUSTOMERS_AUTH", "none")],
        "authentication is off",
    )
    .await;
    assert!(open.ready_line.contains("WARN"), "{}", open.ready_line);
    open.wait_for_log("serving").await;
    assert_eq!(open.terminate().await.code(), Some(0));
}
