//! The `customers-worker` binary's command line: `--help` documents the flags, and every bad
//! start exits non-zero with a one-line reason.

use std::process::Command;

#[test]
fn help_and_one_line_failures() {
    let data_dir = tempfile::tempdir().unwrap();
    let data_dir = data_dir.path().to_str().unwrap();
    // (arguments, expected exit success, text expected in the output)
    let cases: [(&[&str], bool, &str); 4] = [
        (&["--help"], true, "--data-dir <DATA_DIR>"),
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
}
