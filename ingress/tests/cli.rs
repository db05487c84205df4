//! The `customers-ingress` binary's command line: `--help` documents the flags, and a bad
//! flag, listen address or NATS URL exits non-zero with a one-line reason.

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

    let failures: [(&[&str], &str); 3] = [
        (
            &["--listen", "nowhere"],
            "invalid value 'nowhere' for '--listen",
        ),
        (&["--request-timeout", "soon"], "invalid value 'soon'"),
        (
            &[
                "--nats-url",
                "nats://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
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
