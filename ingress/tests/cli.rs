//! The `customers-ingress` binary's command line: `--help` documents the flags; a bad flag,
//! listen address, missing keys file or unreachable NATS exits non-zero with a one-line
//! reason; `keys mint`, `list` and `revoke` edit the keys file and never show a secret twice.

use std::process::Command;

#[test]
fn help_and_one_line_failures() {
    let help = Command::new(env!("CARGO_BIN_EXE_customers-ingress"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in [
        "--nats-url",
        "--listen",
        "--request-timeout",
        "[env: CUSTOMERS_LISTEN=]",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }

    let failures: [(&[&str], &str); 9] = [
        (
            &["--auth", "none", "--keys-file", "/tmp/keys.json"],
            "--auth none serves without authentication, so --keys-file would be ignored",
        ),
        (
            &["--rate-limit-per-second", "0"],
            "invalid value '0' for '--rate-limit-per-second <RATE_LIMIT_PER_SECOND>': must be a number above 0",
        ),
        (
            &["--request-timeout", "0s"],
            "invalid value '0s' for '--request-timeout <REQUEST_TIMEOUT>': must be from 10ms to 5m",
        ),
        (
            &["--listen", "nowhere"],
            "invalid value 'nowhere' for '--listen",
        ),
        (&["--request-timeout", "soon"], "invalid value 'soon'"),
        (
            &["--listen", "127.0.0.1:0"],
            "no keys file: pass --keys-file",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--keys-file",
                "/nonexistent/keys.json",
            ],
            "cannot read the keys file /nonexistent/keys.json",
        ),
        (
            &["--tls-cert", "/nonexistent/cert.pem"],
            "--tls-key <TLS_PRIVATE_KEY>",
        ),
        (
            &[
                "--nats-url",
                "nats://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
                "--auth",
                "none",
            ],
            "cannot connect to NATS at nats://127.0.0.1:1",
        ),
    ];
    for (args, expected) in failures {
        let output = Command::new(env!("CARGO_BIN_EXE_customers-ingress"))
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("customers-ingress: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

fn keys(file: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_customers-ingress"))
        .arg("keys")
        .args(args)
        .arg("--keys-file")
        .arg(file)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

#[test]
fn keys_are_minted_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let minted = keys(
        &file,
        &[
            "mint",
            "--name",
            "billing",
            "--scope",
            "customers:read",
            "--expires-in",
            "30d",
        ],
    );
    assert!(minted.status.success(), "{minted:?}");
    let key = String::from_utf8(minted.stdout).unwrap();
    let key = key.trim_end();
    assert_eq!(key.lines().count(), 1, "stdout holds the key alone");
    assert!(key.starts_with("ck_live_"), "{key}");
    let id = key.split('_').nth(2).unwrap();
    let stderr = String::from_utf8(minted.stderr).unwrap();
    assert!(stderr.contains(id) && !stderr.contains(key), "{stderr}");
    assert!(!std::fs::read_to_string(&file).unwrap().contains(key));

    let listed = keys(&file, &["list"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(id) && listed.contains("name=billing"),
        "{listed}"
    );
    assert!(listed.contains("scopes=customers:read"), "{listed}");
    assert!(
        listed.contains("revoked=no") && !listed.contains("expires=never"),
        "{listed}"
    );
    assert!(!listed.contains(key), "{listed}");

    assert!(keys(&file, &["revoke", id]).status.success());
    let listed = String::from_utf8(keys(&file, &["list"]).stdout).unwrap();
    assert!(!listed.contains("revoked=no"), "{listed}");

    let unknown = keys(&file, &["revoke", "nosuchkey"]);
    assert!(!unknown.status.success());
    let no_scope = keys(&file, &["mint", "--name", "x"]);
    assert!(!no_scope.status.success(), "a key needs a scope");
    let unknown_scope = keys(&file, &["mint", "--scope", "customers:admin"]);
    let stderr = String::from_utf8(unknown_scope.stderr).unwrap();
    assert!(
        stderr.contains("[possible values: customers:read, customers:write]"),
        "the valid scopes are listed: {stderr}"
    );
}

/// A rewrite keeps the keys file's mode and owner (a `DynamicUser` ingress reads it through
/// its group or others); a new file is the owner's alone.
#[test]
fn rewrites_keep_the_keys_files_mode_and_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let mint = ["mint", "--scope", "customers:read"];
    assert!(keys(&file, &mint).status.success());
    let mode =
        |file: &std::path::Path| std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "a new file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Another owner and group, as an operator's chown would leave it (the tests run as root).
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    let id = {
        let minted = keys(&file, &mint);
        assert!(minted.status.success(), "{minted:?}");
        String::from_utf8(minted.stdout)
            .unwrap()
            .split('_')
            .nth(2)
            .unwrap()
            .to_owned()
    };
    assert!(keys(&file, &["revoke", &id]).status.success());
    let metadata = std::fs::metadata(&file).unwrap();
    assert_eq!(mode(&file), 0o644, "kept through mint and revoke");
    assert_eq!(
        (metadata.uid(), metadata.gid()),
        (65534, 65534),
        "owner kept"
    );
}
