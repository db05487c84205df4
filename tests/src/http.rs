//! An HTTP/1.1 client for the ingress ([`HttpClient`], keep-alive, with or without an API
//! key) and what it returns ([`TestResponse`]: status, headers, body, JSON).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The customers collection.
const CUSTOMERS_PATH: &str = "/api/v1/customers";

/// An HTTP response with its body read and, when it is JSON, parsed.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A keep-alive HTTP/1.1 client for the ingress.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    authorization: Option<http::HeaderValue>,
}

impl HttpClient {
    /// A client without credentials.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            authorization: None,
        }
    }

    /// The same client, sending `Authorization: Bearer {key}` with every request.
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.authorization =
            Some(http::HeaderValue::try_from(format!("Bearer {key}")).expect("a header value"));
        self
    }

    /// `POST /api/v1/customers` with a JSON body.
    pub async fn create(&self, body: &str) -> TestResponse {
        self.send(self.create_request(body, None)).await
    }

    /// `POST /api/v1/customers` with a JSON body and an `Idempotency-Key`.
    pub async fn create_idempotent(&self, body: &str, key: &str) -> TestResponse {
        self.send(self.create_request(body, Some(key))).await
    }

    fn create_request(&self, body: &str, key: Option<&str>) -> http::Request<Full<Bytes>> {
        let mut request = self
            .request("POST", CUSTOMERS_PATH)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("valid request")
    }

    /// `GET` of `path` (relative to the ingress).
    pub async fn get(&self, path: &str) -> TestResponse {
        self.without_body("GET", path).await
    }

    /// `method` on `path` (relative to the ingress), with an empty body.
    pub async fn without_body(&self, method: &str, path: &str) -> TestResponse {
        self.send(
            self.request(method, path)
                .body(Full::default())
                .expect("valid request"),
        )
        .await
    }

    /// `method` on `path` with `body` and extra `headers` (name, value).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut request = self.request(method, path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = Full::new(Bytes::copy_from_slice(body.as_bytes()));
        self.send(request.body(body).expect("valid request")).await
    }

    /// `PATCH` of customer `id` with a merge patch and extra `headers` (a `content-type`
    /// among them replaces `application/merge-patch+json`).
    pub async fn patch(&self, id: &str, patch: &str, headers: &[(&str, &str)]) -> TestResponse {
        let mut all = headers.to_vec();
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            all.push(("content-type", "application/merge-patch+json"));
        }
        let path = format!("{CUSTOMERS_PATH}/{id}");
        self.send_with("PATCH", &path, patch, &all).await
    }

    /// `DELETE` of customer `id` with extra `headers`.
    pub async fn delete(&self, id: &str, headers: &[(&str, &str)]) -> TestResponse {
        let path = format!("{CUSTOMERS_PATH}/{id}");
        self.send_with("DELETE", &path, "", headers).await
    }

    /// The value of the metric series `series` (name and labels as rendered) on this
    /// client's `/metrics`, 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await;
        series_value(&text.body, series)
    }

    /// The same, or `None` when the server does not answer (it is stopping, or gone).
    pub async fn try_metric(&self, series: &str) -> Option<f64> {
        let request = self
            .request("GET", "/metrics")
            .body(Full::default())
            .expect("valid request");
        let response = self.client.request(request).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some(series_value(&body, series))
    }

    /// Any request; `path` is relative to the ingress.
    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        let builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        match &self.authorization {
            Some(value) => builder.header(http::header::AUTHORIZATION, value),
            None => builder,
        }
    }

    pub async fn send(&self, request: http::Request<Full<Bytes>>) -> TestResponse {
        let response = self.client.request(request).await.expect("HTTP request");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        TestResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }
}

/// The value of `series` in a Prometheus text exposition, 0 if absent.
fn series_value(text: &[u8], series: &str) -> f64 {
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
