//! Helpers for the HTTP entity API tests (`tests/twin_http.rs`): a broker, a ready agent and a
//! bus watcher subscribed to the whole `te/` tree, plus exact assertions on HTTP answers, on what
//! the agent published and on what the broker retains.
//!
//! Not here: broker and client mechanics (`mosquitto.rs`, `mqtt.rs`) and the agent harness
//! (`agent.rs`).

use chrono::{DateTime, NaiveDateTime, Utc};
use edge_agent::config::Config;
use serde_json::Value;

use super::agent::{TestAgent, AGENT_TOPIC};
use super::http::Response;
use super::mosquitto::Broker;
use super::mqtt::TestClient;

/// One broker, one ready agent, and `bus`, a client subscribed to `te/#` whose backlog (the
/// agent's start-up publications) is already consumed.
pub struct Rig {
    pub broker: Broker,
    pub agent: TestAgent,
    pub bus: TestClient,
}

impl Rig {
    pub async fn start() -> Rig {
        Rig::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Rig {
        let broker = Broker::start().await;
        let agent = TestAgent::start_with(&broker, adjust).await;
        let bus = TestClient::connect(broker.port()).await;
        bus.subscribe("te/#").await;
        // The `up` health is the agent's last start-up publication (§7.4 step 9), whether it
        // arrives retained or live; the barrier then takes everything before it.
        bus.expect(&format!("{AGENT_TOPIC}/status/health")).await;
        bus.collect_until_marker().await;
        Rig { broker, agent, bus }
    }

    /// The URL of `path`, e.g. `/readyz`.
    pub fn url(&self, path: &str) -> String {
        self.agent.url(path)
    }

    /// The URL of `/te/v1/entities` followed by `rest`, e.g. `/device/c1//`.
    pub fn entities(&self, rest: &str) -> String {
        self.agent.url(&format!("/te/v1/entities{rest}"))
    }

    /// Everything published under `te/` since the previous call, as (topic, payload text), in
    /// arrival order. Call it after the HTTP answer arrived: the barrier then proves that nothing
    /// else was published.
    pub async fn published(&self) -> Vec<(String, String)> {
        self.bus
            .collect_until_marker()
            .await
            .into_iter()
            .map(|m| (m.topic.clone(), m.payload_str().to_owned()))
            .collect()
    }

    /// What the broker retains under `filter`, seen by a new subscriber, sorted by topic. Asserts
    /// that every message came with the retain flag.
    pub async fn retained(&self, filter: &str) -> Vec<(String, String)> {
        retained(self.broker.port(), filter).await
    }

    /// Publishes a retained registration and waits until the agent serves the entity.
    pub async fn register(&self, id: &str, payload: &str) {
        self.bus
            .publish(&format!("te/{id}"), payload.to_owned(), true)
            .await;
        let url = self.entities(&format!("/{id}"));
        super::http::get_until(&url, |r| r.status == 200).await;
    }
}

/// See [`Rig::retained`].
pub async fn retained(port: u16, filter: &str) -> Vec<(String, String)> {
    let reader = TestClient::connect(port).await;
    reader.subscribe(filter).await;
    let mut messages: Vec<(String, String)> = reader
        .collect_until_marker()
        .await
        .into_iter()
        .map(|m| {
            assert!(m.retain, "{} arrived without the retain flag", m.topic);
            (m.topic.clone(), m.payload_str().to_owned())
        })
        .collect();
    reader.disconnect().await;
    messages.sort();
    messages
}

/// Expected publications from `(topic, payload)` literals.
pub fn pubs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
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
