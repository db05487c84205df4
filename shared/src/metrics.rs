//! What both binaries' Prometheus endpoints share: the content type and the encoding of a
//! registry in the OpenMetrics text format.

use prometheus_client::registry::Registry;

/// Content type of the rendered metrics.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}
