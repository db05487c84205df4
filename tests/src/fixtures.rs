//! What many tests share: request bodies, the default subjects, a free port, the patience
//! for things that take milliseconds, reports past the harness's capture, a check over NATS,
//! and [`exclusive`] for the tests that load the machine's two cores.

use std::time::Duration;

use customers_shared::wire::protocol::{DEFAULT_SUBJECT_PREFIX, Endpoint};

/// The seed document's example request, verbatim.
pub const SEED_REQUEST: &str = r#"{
  "name": "Brighton Mboya",
  "email": "brighton@jani.com",
  "phone": "+2557881234567",
  "address": {
    "city": "Dar es Salaam",
    "country": "Tanzania"
  },
  "payment_method": "card_01h3vjs3b16yc3f9q8q9pfrb79",
  "status": "active",
  "custom_data": {
    "loyalty_program": "Gold"
  }
}"#;

/// A request body with the given email and otherwise valid fields.
pub fn customer_with_email(email: &str) -> String {
    serde_json::json!({"name": "Test Customer", "email": email}).to_string()
}

/// Header value of a NATS message.
pub use customers_shared::wire::protocol::headers::value as nats_header;

/// Gets customer `id` over NATS and asserts it was found (no service error header); `case`
/// names what is checked in the failure message.
pub async fn assert_found_over_nats(client: &async_nats::Client, id: &str, case: &str) {
    let reply = client
        .request(subject(Endpoint::Get), id.to_owned().into())
        .await
        .unwrap();
    assert_eq!(
        nats_header(
            &reply,
            customers_shared::wire::protocol::headers::SERVICE_ERROR_CODE
        ),
        None,
        "{id} ({case})"
    );
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Writes a measurement line to stderr past the test harness's capture, so that figures
/// (acknowledged/lost counts, recovery times) appear in the test command's output.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "[report] {line}");
}

/// Upper bound used where a test waits for something that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The subject of `endpoint` under the default prefix, e.g. `customers.v1.create`.
pub fn subject(endpoint: Endpoint) -> String {
    endpoint.subject(DEFAULT_SUBJECT_PREFIX)
}

/// Held by a test that loads the machine's two cores for long (a cluster, kills under load,
/// power cuts, overload, the load generator): no two of them run at once, so that none is
/// starved by another and its timings mean what they say. The other tests may run beside it.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}
