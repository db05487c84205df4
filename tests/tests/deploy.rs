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
