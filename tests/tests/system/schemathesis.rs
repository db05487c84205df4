//! schemathesis (property-based API testing from the OpenAPI document) against the real
//! stack: generated valid and invalid requests for every operation, including stateful
//! sequences (create, then get and list what was created), with an API key; its
//! `ignored_auth` check sends requests without it and expects 401. Every check runs but
//! `positive_data_acceptance`: JSON Schema cannot express all of the validator's rules
//! (country names, digit counts after trimming), so some schema-valid bodies are rightly
//! refused with 400, and a reused Idempotency-Key is rightly 422; an invalid patch to a
//! deleted customer or at a stale `If-Match` is rightly 410 or 412 (`tests/schemathesis.toml`).
//! Server errors, responses
//! that violate the document, undocumented statuses or content types, and invalid requests
//! that are accepted all fail the test. The seed is fixed so a run can be repeated.

use std::path::PathBuf;
use std::process::Command;

use customers_tests::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failures() {
    let _alone = customers_tests::exclusive().await;
    let st = std::env::var_os("SCHEMATHESIS_BIN").map(PathBuf::from).expect(
        "SCHEMATHESIS_BIN is not set; run the tests with the README's test command, which installs schemathesis",
    );
    let python_path = st
        .parent()
        .and_then(|bin| bin.parent())
        .expect("st lives in <target>/bin")
        .to_owned();
    let app = spawn_app().await;
    let schema = format!("http://{}/api/v1/openapi.json", app.ingress.addr);
    let authorization = format!(
        "Authorization: Bearer {}",
        app.ingress.api_key.as_deref().expect("a minted key")
    );
    let output = tokio::task::spawn_blocking(move || {
        // 410 and 412 count as rejections of invalid data (the file says why).
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis.toml");
        Command::new(&st)
            .env("PYTHONPATH", &python_path)
            .args(["--config-file", config])
            .args(["run", &schema, "--checks", "all"])
            .args(["--header", &authorization])
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", "25", "--seed", "1", "--no-color"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()))
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report
        .lines()
        .rev()
        .find(|line| line.contains(" in ") && line.contains('='))
        .unwrap_or("no summary");
    customers_tests::report(&format!(
        "schemathesis: {}",
        summary.trim_matches(['=', ' '])
    ));
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
