//! The files in `deploy/` that this machine can check: the nats-server configuration must
//! be accepted by the real nats-server (`-t` tests a configuration without serving).

use std::path::Path;
use std::process::Command;

#[test]
fn nats_server_accepts_the_local_configuration() {
    let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats-server.conf");
    let output = Command::new(&binary)
        .arg("-c")
        .arg(&config)
        .arg("-t")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    assert!(
        output.status.success(),
        "nats-server rejects {}: {}",
        config.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
