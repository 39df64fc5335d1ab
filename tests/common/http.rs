//! Small HTTP client helpers for tests: one request, a 10 s timeout, the whole answer; and exact
//! assertions on an answer (status, content type, whole body) and on the times the agent prints.
//!
//! Each call builds its own `reqwest::Client`: a pooled client must not outlive the tokio
//! runtime of the test that used it, and every `#[tokio::test]` has its own runtime.
//! Transport failures panic (naming the method and URL); use [`try_send`] to observe them.
//! For HTTPS, [`ClientTls`] says what a client trusts and presents; build requests on
//! [`ClientTls::client`] and pass them to [`send`] or [`try_send`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

#[allow(unused_imports)]
pub use super::wait_until;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A complete HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as UTF-8; panics if it is not.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not UTF-8: {e}", self.status))
    }

    /// The body parsed as JSON; panics with the status and body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A client with the rustls ring provider installed and a 10 s timeout per request.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("cannot build the reqwest client")
}

/// An HTTPS client's trust and identity: it trusts only the CA certificates in `ca` (not the
/// system's) and presents `identity` (certificate file, key file) when the server asks.
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// Trusts `ca`, presents no certificate.
    pub fn trusting(ca: impl Into<PathBuf>) -> ClientTls {
        ClientTls {
            ca: ca.into(),
            identity: None,
        }
    }

    /// Also presents the certificate in `cert` with the key in `key`.
    pub fn with_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ClientTls {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// A client like [`client()`], with this trust and identity.
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem_bundle(&read_pem(&self.ca))
            .unwrap_or_else(|e| panic!("{} is not a PEM bundle: {e}", self.ca.display()));
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .tls_certs_only(ca);
        if let Some((cert, key)) = &self.identity {
            let mut pem = read_pem(cert);
            pem.extend(read_pem(key));
            let identity = reqwest::Identity::from_pem(&pem)
                .unwrap_or_else(|e| panic!("{} + {}: {e}", cert.display(), key.display()));
            builder = builder.identity(identity);
        }
        builder.build().expect("cannot build the reqwest client")
    }
}

fn read_pem(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub async fn get(url: &str) -> Response {
    send(client().get(url)).await
}

pub async fn delete(url: &str) -> Response {
    send(client().delete(url)).await
}

pub async fn put_json(url: &str, body: &serde_json::Value) -> Response {
    send(client().put(url).json(body)).await
}

pub async fn post_json(url: &str, body: &serde_json::Value) -> Response {
    send(client().post(url).json(body)).await
}

pub async fn patch_json(url: &str, body: &serde_json::Value) -> Response {
    send(client().patch(url).json(body)).await
}

/// Any method with a raw body, e.g. a file upload.
pub async fn request(method: Method, url: &str, body: impl Into<Bytes>) -> Response {
    send(client().request(method, url).body(body.into())).await
}

/// Sends a request built on [`client()`] (custom headers, bodies); panics on transport errors.
pub async fn send(request: RequestBuilder) -> Response {
    let description = describe(&request);
    try_send(request)
        .await
        .unwrap_or_else(|e| panic!("{description} failed: {e:#}"))
}

/// Sends a request; `Err` on connection failure or timeout (e.g. the server is down).
pub async fn try_send(request: RequestBuilder) -> Result<Response, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn describe(request: &RequestBuilder) -> String {
    match request.try_clone().and_then(|r| r.build().ok()) {
        Some(r) => format!("HTTP {} {}", r.method(), r.url()),
        None => "HTTP request".to_owned(),
    }
}

/// Polls `GET url` until `check` accepts the answer, and returns that answer; panics with the
/// last answer after [`TIMEOUT`]. For state the agent reaches asynchronously (MQTT input).
pub async fn get_until(url: &str, check: impl Fn(&Response) -> bool) -> Response {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let response = get(url).await;
        if check(&response) {
            return response;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out waiting for GET {url} to match; last answer: {} {}",
                response.status,
                response.text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a JSON answer: status, `Content-Type: application/json` and the whole body.
#[track_caller]
pub fn assert_json(response: &Response, status: u16, body: &Value) {
    assert_eq!(
        (response.status, response.header("content-type")),
        (status, Some("application/json")),
        "body: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(&response.json(), body);
}

/// Asserts a JSON answer whose exact text is given, key order included (§5.3 metadata).
#[track_caller]
pub fn assert_text(response: &Response, status: u16, body: &str) {
    assert_eq!(
        (
            response.status,
            response.header("content-type"),
            response.text()
        ),
        (status, Some("application/json"), body)
    );
}

/// Asserts an error answer: `status` and exactly `{"error":"<message>"}` (§5.1).
#[track_caller]
pub fn assert_error(response: &Response, status: u16, message: &str) {
    assert_json(response, status, &serde_json::json!({ "error": message }));
}

/// Asserts a 204 with an empty body.
#[track_caller]
pub fn assert_no_content(response: &Response) {
    assert_eq!(
        (response.status, response.text()),
        (204, ""),
        "expected 204 without a body"
    );
}

/// Parses a time the agent printed, asserting the §1 format (RFC 3339 UTC, 3 fractional digits,
/// `Z`), e.g. `2024-05-02T19:12:41.361Z`.
#[track_caller]
pub fn agent_time(text: &str) -> DateTime<Utc> {
    const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";
    let parsed = NaiveDateTime::parse_from_str(text, FORMAT)
        .unwrap_or_else(|e| panic!("{text:?} is not an agent time: {e}"))
        .and_utc();
    assert_eq!(
        parsed.format(FORMAT).to_string(),
        text,
        "not in the canonical format"
    );
    parsed
}

/// Asserts that `value` is an agent time within `[from, to]` (milliseconds), then replaces it
/// with `"<received>"` so that the surrounding document can be compared whole.
#[track_caller]
pub fn take_received(value: &mut Value, from: DateTime<Utc>, to: DateTime<Utc>) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("received is not a string: {value}"));
    let at = agent_time(text).timestamp_millis();
    assert!(
        (from.timestamp_millis()..=to.timestamp_millis()).contains(&at),
        "received {text} is outside [{from}, {to}]"
    );
    *value = Value::from("<received>");
}
