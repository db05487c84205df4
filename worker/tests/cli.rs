//! The `customers-worker` binary's command line: `--help` documents the flags (each
//! subcommand only its own), and every bad start exits non-zero with a one-line reason, a
//! value outside a flag's range included (never a panic).

use std::process::Command;

#[test]
fn help_and_one_line_failures() {
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir = data_dir.path().to_str().unwrap();
    // (arguments, expected exit success, text expected in the output)
    let not_a_directory = tempfile::NamedTempFile::new().unwrap();
    let not_a_directory = not_a_directory.path().to_str().unwrap();
    let cases: [(&[&str], bool, &str); 8] = [
        (&["--help"], true, "--data-dir <DATA_DIR>"),
        (&["restore", "--help"], true, "--data-dir <DATA_DIR>"),
        (&["verify", "--help"], true, "--data-dir <DATA_DIR>"),
        (
            &["--cache-capacity-bytes", "0"],
            false,
            "customers-worker: invalid value '0' for '--cache-capacity-bytes <CACHE_CAPACITY_BYTES>': 0 is not in 1048576..=",
        ),
        (
            &[
                "--data-dir",
                not_a_directory,
                "--nats-url",
                "nats://127.0.0.1:1",
            ],
            false,
            "is not a directory",
        ),
        (
            &["--bogus"],
            false,
            "customers-worker: unexpected argument '--bogus'",
        ),
        (
            &["--max-pending", "many"],
            false,
            "customers-worker: invalid value 'many'",
        ),
        (
            &["--nats-url", "nats://127.0.0.1:1", "--data-dir", data_dir],
            false,
            "customers-worker: cannot connect to NATS at nats://127.0.0.1:1",
        ),
    ];
    for (args, success, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_customers-worker"))
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(output.status.success(), success, "{args:?}");
        let text = if success {
            output.stdout
        } else {
            output.stderr
        };
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(expected), "{args:?}: {text}");
        if !success {
            assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
        }
    }
    // A backup is written by the worker into its own --backup-dir: the command has no
    // data directory to be confused with.
    let output = Command::new(env!("CARGO_BIN_EXE_customers-worker"))
        .args(["backup", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("--name") && !help.contains("--data-dir"),
        "{help}"
    );
}
