//! The one end-to-end fixture for the twin's tests (`twin_mqtt`, `twin_http`, `bad_input`):
//! [`System`], a broker, a ready agent, an input client and a bus observer, plus the "the agent
//! has caught up" barrier.
//!
//! The barrier asks the agent for a health check (spec/twin.md §8) and waits for its live answer.
//! The agent applies its inputs one at a time in arrival order (§5.1) and publishes in order on
//! one connection, so once the answer is back, every message the broker received before the
//! request has been applied, and every publication it caused has been routed to subscribers.
//!
//! [`System::published`] then returns exactly what the agent published since the previous call:
//! everything the observer saw up to a marker, minus the test's own inputs and the barriers'
//! requests and answers. Retention is checked with a fresh subscriber ([`System::retained`]),
//! because mosquitto clears the retain flag on live delivery.
//!
//! Not here: broker and client mechanics (`mosquitto.rs`, `mqtt.rs`, which also has the
//! `(topic, payload)` helpers), the agent harness (`agent.rs`), answer assertions (`http.rs`).

use std::sync::Mutex;

use bytes::Bytes;
use serde_json::Value;

use super::agent::{is_up_health, TestAgent, AGENT_HEALTH, AGENT_HEALTH_CHECK};
use super::http;
use super::mosquitto::Broker;
use super::mqtt::{pairs, Message, TestClient};
use edge_agent::config::Config;

pub const ERRORS: &str = "te/errors";

/// When [`System::bus`] subscribes to `te/#`. Either way its start-up backlog is consumed before
/// the system is handed over.
#[derive(Clone, Copy, Debug)]
pub enum Watch {
    /// Before the agent starts: the bus sees the start-up announcements live.
    FromBoot,
    /// Once the agent is ready: the start-up reaches the bus as retained messages.
    FromReady,
}

/// A broker, a ready agent, a client for inputs and one observing `te/#`.
pub struct System {
    pub broker: Broker,
    pub agent: TestAgent,
    /// Publishes the test's inputs; they are left out of [`System::published`].
    pub input: TestClient,
    /// Subscribed to `te/#` (since when: [`Watch`]). What it publishes itself is not an input
    /// of [`System::publish`], so it shows in [`System::published`].
    pub bus: TestClient,
    sent: Mutex<Vec<(String, Bytes)>>,
    barriers: Mutex<usize>,
}

impl System {
    /// A system with the default configuration, past the agent's start-up announcements.
    pub async fn start() -> System {
        System::start_with(|_| {}).await
    }

    /// A system whose agent configuration is adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> System {
        System::start_watching(Watch::FromBoot, adjust).await
    }

    /// A system whose bus subscribes at `watch`, with the agent configuration adjusted by
    /// `adjust`.
    pub async fn start_watching(watch: Watch, adjust: impl FnOnce(&mut Config)) -> System {
        let broker = Broker::start().await;
        let bus = TestClient::connect(broker.port()).await;
        let agent = match watch {
            Watch::FromBoot => {
                bus.subscribe("te/#").await;
                TestAgent::start_with(&broker, adjust).await
            }
            Watch::FromReady => {
                let agent = TestAgent::start_with(&broker, adjust).await;
                bus.subscribe("te/#").await;
                agent
            }
        };
        // The health message ends the announcements (§7.4 step 9), whether it arrives live or
        // retained: once it is here, nothing from the start-up is still in flight.
        bus.expect(AGENT_HEALTH).await;
        bus.collect_until_marker().await;
        let input = TestClient::connect(broker.port()).await;
        System {
            broker,
            agent,
            input,
            bus,
            sent: Mutex::new(Vec::new()),
            barriers: Mutex::new(0),
        }
    }

    /// The agent's URL of `path`, e.g. `/readyz`.
    pub fn url(&self, path: &str) -> String {
        self.agent.url(path)
    }

    /// The agent's URL of `/te/v1/entities` followed by `rest`, e.g. `/device/c1//`.
    pub fn entities(&self, rest: &str) -> String {
        self.agent.url(&format!("/te/v1/entities{rest}"))
    }

    /// Publishes an input at QoS 1 (acknowledged), remembered so that the observer's copy is
    /// not mistaken for something the agent published.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, retain: bool) {
        let payload = payload.into();
        self.sent
            .lock()
            .expect("sent")
            .push((topic.to_owned(), payload.clone()));
        self.input.publish(topic, payload, retain).await;
    }

    /// Returns once the agent has applied everything the broker received before this call (see
    /// the module doc). Panics after 10 s.
    pub async fn caught_up(&self) {
        *self.barriers.lock().expect("barriers") += 1;
        caught_up(&self.broker).await;
    }

    /// What the agent published since the previous call, as (topic, payload) in order; the
    /// barrier is passed first, so after an HTTP answer it also proves that nothing else was
    /// published. Panics if an input never reached the observer.
    pub async fn published(&self) -> Vec<(String, String)> {
        self.caught_up().await;
        let mut seen = self.bus.collect_until_marker().await;
        for (topic, payload) in std::mem::take(&mut *self.sent.lock().expect("sent")) {
            let at = seen
                .iter()
                .position(|m| m.topic == topic && m.payload == payload)
                .unwrap_or_else(|| panic!("the observer never saw the input on {topic}"));
            seen.remove(at);
        }
        let answers = std::mem::take(&mut *self.barriers.lock().expect("barriers"));
        for _ in 0..answers {
            for (what, is) in [
                ("request", is_barrier_request as fn(&Message) -> bool),
                ("answer", is_up_health),
            ] {
                let at = seen
                    .iter()
                    .position(is)
                    .unwrap_or_else(|| panic!("the observer never saw a barrier {what}"));
                seen.remove(at);
            }
        }
        pairs(&seen)
    }

    /// What the broker retains under `filter`, as a new subscriber receives it, sorted by topic;
    /// see [`super::mqtt::retained`].
    pub async fn retained(&self, filter: &str) -> Vec<(String, String)> {
        super::mqtt::retained(self.broker.port(), &[filter]).await
    }

    /// Publishes the retained registration of `id` as an input and waits until the agent serves
    /// the entity.
    pub async fn register(&self, id: &str, payload: &str) {
        self.publish(&format!("te/{id}"), payload.to_owned(), true)
            .await;
        http::get_until(&self.entities(&format!("/{id}")), |r| r.status == 200).await;
    }

    /// Restarts the agent gracefully on its data dir (§8) and waits for its announcements;
    /// returns what the observer saw meanwhile (the `down` health, the sync marker, the
    /// announcements...).
    pub async fn restart_agent(&mut self) -> Vec<(String, String)> {
        self.agent.restart().await;
        let up = self
            .bus
            .expect_message("the agent's announcement after its restart", is_up_health)
            .await;
        let mut seen = vec![up];
        seen.extend(self.bus.collect_until_marker().await);
        pairs(&seen)
    }

    /// `GET path` on the agent: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = http::get(&self.url(path)).await;
        (response.status, response.json())
    }

    /// The `@topic-id`s of `GET /te/v1/entities<query>`, in order.
    pub async fn ids(&self, query: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/te/v1/entities{query}")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .expect("a listing is an array")
            .iter()
            .map(|e| e["@topic-id"].as_str().expect("a topic id").to_owned())
            .collect()
    }

    /// Proves the agent still serves other clients: a new client's registration of
    /// `device/<name>//` is applied and visible over HTTP.
    pub async fn still_serves_others(&self, name: &str) {
        let other = TestClient::connect(self.broker.port()).await;
        let topic = format!("te/device/{name}//");
        let payload = r#"{"@type":"child-device"}"#;
        self.sent
            .lock()
            .expect("sent")
            .push((topic.clone(), Bytes::from_static(payload.as_bytes())));
        other.publish(&topic, payload, true).await;
        self.caught_up().await;
        assert_eq!(
            self.get(&format!("/te/v1/entities/device/{name}")).await,
            (
                200,
                serde_json::json!({"@topic-id":format!("device/{name}//"),"@parent":"device/main//","@type":"child-device"})
            )
        );
    }
}

/// The barrier of the module doc, for tests without a [`System`].
pub async fn caught_up(broker: &Broker) {
    caught_up_within(broker, super::mqtt::WAIT).await;
}

/// [`caught_up`] for an agent with a long backlog.
pub async fn caught_up_within(broker: &Broker, timeout: std::time::Duration) {
    let probe = TestClient::connect(broker.port()).await;
    // The retained copy arrives with the retain flag; the answer is the first live one.
    probe.subscribe(AGENT_HEALTH).await;
    probe.publish(AGENT_HEALTH_CHECK, Bytes::new(), false).await;
    probe
        .expect_message_within("the agent's answer to a health check", timeout, |m| {
            !m.retain && is_up_health(m)
        })
        .await;
}

fn is_barrier_request(m: &Message) -> bool {
    m.topic == AGENT_HEALTH_CHECK && m.payload.is_empty()
}

/// Splits [`System::published`] into the `te/errors` texts and the other publications, each in
/// order. Within one input, its report comes before its other publications; across inputs the
/// agent may send the reports of a batch of inputs first (group commit, §7.1), so tests with
/// several inputs compare the two lists separately.
pub fn split_errors(published: Vec<(String, String)>) -> (Vec<String>, Vec<(String, String)>) {
    let (errors, others): (Vec<_>, Vec<_>) = published.into_iter().partition(|(t, _)| t == ERRORS);
    (errors.into_iter().map(|(_, text)| text).collect(), others)
}
