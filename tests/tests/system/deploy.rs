//! The files in `deploy/` that this machine can check: nats-server accepts its
//! configurations (`-t`; the permissions themselves are exercised in nats_security.rs); systemd accepts both units (`systemd-analyze verify`); the compose
//! file and the Kubernetes manifests are well-formed YAML whose commands the binaries accept
//! and whose probes and volumes match those commands. The Dockerfile is not built here (no
//! Docker engine); the README says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use customers_tests::workspace_binary;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy_file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn yaml(name: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(name)).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

fn strings(list: &Yaml) -> Vec<String> {
    list.as_vec()
        .expect("a list")
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

/// The binary named by `command[0]` accepts the rest of `command` (flags and values).
fn assert_accepted(command: &[String]) {
    let (binary, args) = command.split_first().expect("a command");
    assert!(
        ["customers-worker", "customers-ingress"].contains(&binary.as_str()),
        "{binary}"
    );
    let output = Command::new(workspace_binary(binary))
        .args(args)
        .arg("--help")
        .output()
        .expect("run the binary");
    assert!(
        output.status.success(),
        "{binary} rejects {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The value after `flag` in `command`.
fn flag<'a>(command: &'a [String], flag: &str) -> &'a str {
    let at = command.iter().position(|a| a == flag);
    at.and_then(|i| command.get(i + 1))
        .unwrap_or_else(|| panic!("{flag} missing in {command:?}"))
}

fn nats_server_accepts(config: &Path, env: &[(&str, &str)]) {
    let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
    let output = Command::new(&binary)
        .arg("-c")
        .arg(config)
        .arg("-t")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    assert!(
        output.status.success(),
        "nats-server rejects {}: {}",
        config.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The passwords `nats-authorization.conf` reads from the environment.
const NATS_PASSWORDS: [(&str, &str); 4] = [
    ("CUSTOMERS_INGRESS_NATS_PASSWORD", "a"),
    ("CUSTOMERS_WORKER_NATS_PASSWORD", "b"),
    ("BILLING_NATS_PASSWORD", "c"),
    ("REPORTING_NATS_PASSWORD", "d"),
];

#[test]
fn nats_server_accepts_the_local_secure_and_cluster_configurations() {
    nats_server_accepts(&deploy_file("nats-server.conf"), &[]);
    nats_server_accepts(&deploy_file("nats-server-secure.conf"), &NATS_PASSWORDS);
    let mut cluster = NATS_PASSWORDS.to_vec();
    cluster.push(("NATS_SERVER_NAME", "nats-1"));
    nats_server_accepts(&deploy_file("nats-server-cluster.conf"), &cluster);
}

#[test]
fn systemd_accepts_the_units() {
    let dir = tempfile::tempdir().unwrap();
    for binary in ["customers-worker", "customers-ingress"] {
        let name = format!("{binary}.service");
        // verify checks that ExecStart exists: point it at the binary this build made.
        let unit = read(&format!("systemd/{name}")).replace(
            &format!("/usr/local/bin/{binary}"),
            workspace_binary(binary).to_str().expect("UTF-8 path"),
        );
        let path = dir.path().join(&name);
        std::fs::write(&path, unit).unwrap();
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (the test command's machine has it)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "{name}: {stderr}"
        );
    }
}

/// Each unit sets the reply prefix its role's NATS user is granted, and says which user and
/// password the secure configuration needs.
#[test]
fn the_units_carry_their_roles_nats_settings() {
    let grants = read("nats-authorization.conf");
    for (binary, user) in [
        ("customers-worker", "customers-worker"),
        ("customers-ingress", "customers-ingress"),
    ] {
        let unit = read(&format!("systemd/{binary}.service"));
        let prefix = unit
            .lines()
            .find_map(|line| line.strip_prefix("Environment=NATS_INBOX_PREFIX="))
            .unwrap_or_else(|| panic!("{binary}.service sets NATS_INBOX_PREFIX"));
        assert!(
            grants.contains(&format!("\"{prefix}.>\"")),
            "{binary}: {prefix}.> is granted in nats-authorization.conf"
        );
        assert!(
            unit.contains(&format!("NATS_USER={user}")) && unit.contains("NATS_PASSWORD="),
            "{binary}.service names its NATS user and password"
        );
    }
}

#[test]
fn compose_services_match_the_binaries() {
    let docs = yaml("docker-compose.yml");
    let services = &docs[0]["services"];
    for name in ["nats", "worker", "ingress"] {
        assert!(!services[name].is_badvalue(), "service {name} missing");
    }
    let worker = strings(&services["worker"]["command"]);
    let ingress = strings(&services["ingress"]["command"]);
    assert_eq!(worker[0], "customers-worker");
    assert_eq!(ingress[0], "customers-ingress");
    for command in [&worker, &ingress] {
        assert_accepted(command);
        assert_eq!(flag(command, "--nats-url"), "nats://nats:4222");
    }
    // The data directory lies on the named volume.
    let data_dir = flag(&worker, "--data-dir");
    let mounts = strings(&services["worker"]["volumes"]);
    assert!(
        mounts.iter().any(|m| {
            let target = m.split(':').nth(1).unwrap_or_default();
            m.starts_with("worker-data:") && data_dir.starts_with(target)
        }),
        "{data_dir} is not on the worker-data volume: {mounts:?}"
    );
    assert!(!docs[0]["volumes"]["worker-data"].is_badvalue());
    // The ingress's keys file lies on its volume.
    let keys_file = flag(&ingress, "--keys-file");
    let mounts = strings(&services["ingress"]["volumes"]);
    assert!(
        mounts.iter().any(|m| {
            let target = m.split(':').nth(1).unwrap_or_default();
            m.starts_with("ingress-keys:") && keys_file.starts_with(target)
        }),
        "{keys_file} is not on the ingress-keys volume: {mounts:?}"
    );
    let dockerfile = read("Dockerfile");
    for binary in ["customers-worker", "customers-ingress"] {
        assert!(
            dockerfile.contains(&format!("-p {binary}")),
            "{binary} not built"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} not copied"
        );
    }
}

#[test]
fn kubernetes_manifests_match_the_binaries() {
    kubernetes_manifest_matches_the_binaries("k8s/customers.yaml");
    let docs = kubernetes_manifest_matches_the_binaries("k8s/customers-replicated.yaml");
    let worker = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("StatefulSet"))
        .expect("the worker StatefulSet");
    assert_eq!(worker["spec"]["replicas"].as_i64(), Some(3));
    let env = &worker["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_vec()
            .into_iter()
            .flatten()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(value("CUSTOMERS_REPLICATION").as_deref(), Some("jetstream"));
    assert_eq!(
        value("CUSTOMERS_REPLICATION_REPLICAS").as_deref(),
        Some("3")
    );
}

#[test]
fn the_replicated_compose_file_runs_three_workers_on_a_nats_cluster() {
    let docs = yaml("docker-compose-cluster.yml");
    let services = &docs[0]["services"];
    let urls = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222";
    for n in 1..=3 {
        let nats = strings(&services[format!("nats-{n}").as_str()]["command"]);
        assert!(
            nats.iter()
                .any(|arg| arg.ends_with("nats-server-cluster.conf"))
        );
        let worker = strings(&services[format!("worker-{n}").as_str()]["command"]);
        assert_accepted(&worker);
        assert_eq!(flag(&worker, "--nats-url"), urls);
        assert_eq!(flag(&worker, "--replication"), "jetstream");
        let mounts = strings(&services[format!("worker-{n}").as_str()]["volumes"]);
        assert!(
            mounts[0].starts_with(&format!("worker-{n}-data:"))
                && flag(&worker, "--data-dir").starts_with(mounts[0].split(':').nth(1).unwrap()),
            "each worker has its own data volume: {mounts:?}"
        );
    }
    let ingress = strings(&services["ingress"]["command"]);
    assert_accepted(&ingress);
    assert_eq!(flag(&ingress, "--nats-url"), urls);
}

/// The worker StatefulSet and the ingress Deployment of `file`, checked against the binaries.
fn kubernetes_manifest_matches_the_binaries(file: &str) -> Vec<Yaml> {
    let docs = yaml(file);
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let worker = find("StatefulSet", "customers-worker");
    let ingress = find("Deployment", "customers-ingress");
    find("Service", "customers-ingress");
    for (workload, listen_flag) in [(worker, "--admin-listen"), (ingress, "--listen")] {
        let container = &workload["spec"]["template"]["spec"]["containers"][0];
        let args = strings(&container["args"]);
        assert_accepted(&args);
        // Probes hit the health endpoints on the port the binary listens on.
        let listen_port: i64 = flag(&args, listen_flag)
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        let port = &container["ports"][0];
        assert_eq!(port["containerPort"].as_i64(), Some(listen_port));
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{probe}");
            assert_eq!(get["port"].as_str(), port["name"].as_str(), "{probe}");
        }
    }
    // The worker's data directory is on its PersistentVolumeClaim.
    let container = &worker["spec"]["template"]["spec"]["containers"][0];
    let data_dir = flag(&strings(&container["args"]), "--data-dir").to_owned();
    let mount = &container["volumeMounts"][0];
    assert!(data_dir.starts_with(mount["mountPath"].as_str().expect("a mount path")));
    let claim = &worker["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"].as_str(), mount["name"].as_str());
    // The ingress's keys file is in the mounted Secret.
    let pod = &ingress["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let keys_file = flag(&strings(&container["args"]), "--keys-file").to_owned();
    let mount = &container["volumeMounts"][0];
    assert!(keys_file.starts_with(mount["mountPath"].as_str().expect("a mount path")));
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"].as_str(), mount["name"].as_str());
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("customers-ingress-keys")
    );
    docs
}

/// `scripts/run-local` with a stand-in for `cargo` that "builds" into `CARGO_TARGET_DIR` by
/// linking this build's binaries there and reports that directory as `cargo metadata` does:
/// the script must run the binaries from where cargo put them. Every port and path is a test
/// one; the NATS server is the test's.
struct RunLocal {
    nats: customers_tests::NatsServer,
    dir: tempfile::TempDir,
    listen: String,
    admin: String,
}

impl RunLocal {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stub = dir.path().join("bin");
        std::fs::create_dir(&stub).unwrap();
        let cargo = stub.join("cargo");
        std::fs::write(
            &cargo,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n  build) mkdir -p \"$CARGO_TARGET_DIR/release\" && ln -sf {} {} \"$CARGO_TARGET_DIR/release/\" ;;\n  metadata) printf '{{\"packages\":[],\"target_directory\":\"%s\",\"version\":1}}\\n' \"$CARGO_TARGET_DIR\" ;;\n  *) exit 1 ;;\nesac\n",
                workspace_binary("customers-worker").display(),
                workspace_binary("customers-ingress").display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self {
            nats: customers_tests::NatsServer::start(),
            dir,
            listen: format!("127.0.0.1:{}", customers_tests::free_port()),
            admin: format!("127.0.0.1:{}", customers_tests::free_port()),
        }
    }

    fn spawn(&self) -> tokio::process::Child {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        tokio::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/run-local"),
        )
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", self.dir.path().join("target"))
        .env("NATS_PORT", self.nats.port().to_string())
        .env("CUSTOMERS_LISTEN", &self.listen)
        .env("CUSTOMERS_ADMIN_LISTEN", &self.admin)
        .env("CUSTOMERS_DATA_DIR", self.dir.path().join("data"))
        .env("CUSTOMERS_LOCAL_DIR", self.dir.path().join("local"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
    }
}

#[tokio::test]
async fn run_local_says_ready_only_once_the_stack_answers() {
    use tokio::io::AsyncBufReadExt;
    let run = RunLocal::new();
    let mut script = run.spawn();
    let mut lines = tokio::io::BufReader::new(script.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(customers_tests::PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("run-local: ready:") {
                return line;
            }
        }
        panic!("run-local ended without saying it is ready");
    })
    .await
    .expect("the stack comes up");
    let http = customers_tests::HttpClient::new(run.listen.parse().unwrap());
    assert_eq!(http.get("/readyz").await.status, 200, "{ready}");
    let key = std::fs::read_to_string(run.dir.path().join("local/api-key")).unwrap();
    assert!(
        key.trim().starts_with("ck_test_"),
        "a key was minted: {key:?}"
    );
    let created = http
        .with_api_key(key.trim())
        .create(&customers_tests::customer_with_email("local@example.com"))
        .await;
    assert_eq!(created.status, 201);
    // The worker's admin listener is on, so the README's backup command works against it.
    let admin = customers_tests::HttpClient::new(run.admin.parse().unwrap());
    assert_eq!(admin.get("/metrics").await.status, 200);
    let backup = Command::new(workspace_binary("customers-worker"))
        .args(["backup", "--admin-url", &format!("http://{}", run.admin)])
        .output()
        .unwrap();
    assert!(backup.status.success(), "{backup:?}");
    let pid = script.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::timeout(customers_tests::PATIENCE, script.wait())
        .await
        .expect("run-local stops its stack and exits")
        .unwrap();
}

#[tokio::test]
async fn run_local_fails_without_saying_ready_when_a_port_is_taken() {
    let run = RunLocal::new();
    let _taken = std::net::TcpListener::bind(&run.listen).unwrap();
    let output = tokio::time::timeout(customers_tests::PATIENCE, run.spawn().wait_with_output())
        .await
        .expect("run-local gives up")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(!stdout.contains("run-local: ready"), "{stdout}");
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("exited before it was ready"),
        "{stderr}"
    );
}
