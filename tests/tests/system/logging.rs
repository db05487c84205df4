//! `--log-format json`: one JSON object per line on stderr, carrying the request's span fields,
//! so one request's lines can be found by its `X-Request-Id` (or its W3C `traceparent`).

use customers_tests::{HttpClient, NatsServer, ServiceProcess, customer_with_email};
use serde_json::Value;

#[tokio::test]
async fn json_lines_carry_the_request_id_and_no_customer_data() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut ingress = ServiceProcess::start(
        "customers-ingress",
        &[
            "--nats-url",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--auth",
            "none",
        ],
        "serving",
    )
    .await;
    let ready: Value = serde_json::from_str(&ingress.ready_line).expect("a JSON log line");
    assert_eq!(ready["fields"]["message"], "serving");
    assert_eq!(ready["level"], "INFO");
    let listen = ready["fields"]["listen"].as_str().expect("listen address");

    // No worker: the create fails with 503, which the ingress logs at warn.
    let http = HttpClient::new(listen.parse().expect("a socket address"));
    let response = http
        .send(
            http.request("POST", "/api/v1/customers")
                .header("content-type", "application/json")
                .header("x-request-id", "log-test-1")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(customer_with_email("secret.person@example.com").into())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status, 503);
    let line = ingress.wait_for_log("request failed").await;
    let line: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["span"]["request_id"], "log-test-1");
    assert_eq!(
        line["span"]["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(line["fields"]["status"], 503);
    assert!(!line.to_string().contains("secret.person"));
    ingress.terminate().await;
}
