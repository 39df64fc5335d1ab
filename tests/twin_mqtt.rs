//! The worked examples of spec/twin.md §10 that start on the MQTT bus, end to end: a real
//! mosquitto, the agent in-process, a test client publishing and asserting what the agent
//! publishes and what its HTTP API answers.

mod common;

use common::agent::{TestAgent, AGENT_REGISTRATION, AGENT_TOPIC};
use common::http;
use common::mosquitto::Broker;
use common::mqtt::TestClient;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_syncs_announces_itself_and_becomes_ready() {
    let broker = Broker::start().await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe("te/#").await;
    let agent = TestAgent::start(&broker).await;

    let marker = client.expect(&format!("{AGENT_TOPIC}/signal/+")).await;
    let nonce = marker.topic.rsplit("sync-").next().unwrap_or_default();
    assert_eq!(nonce.len(), 32, "{}", marker.topic);
    assert!(nonce
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(marker.payload_str(), "{}");
    assert!(!marker.retain);
    client.expect_payload(AGENT_TOPIC, AGENT_REGISTRATION).await;
    client
        .expect_payload(&format!("{AGENT_TOPIC}/twin/name"), "\"edge-agent\"")
        .await;
    client
        .expect_payload(&format!("{AGENT_TOPIC}/twin/type"), "\"service\"")
        .await;
    let health = client.expect(&format!("{AGENT_TOPIC}/status/health")).await;
    let health = health.payload_json();
    assert_eq!(health["status"], "up");
    assert_eq!(health["pid"], std::process::id());
    assert!(health["time"].as_f64().is_some());

    let ready = http::get(&agent.url("/readyz")).await;
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"status":"ready"}))
    );
    let listing = http::get(&agent.url("/te/v1/entities")).await;
    assert_eq!(listing.status, 200);
    assert_eq!(
        listing.json(),
        json!([{"@topic-id":"device/main//","@type":"device"},{"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_an_unknown_service_auto_registers_it_and_its_device() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe("te/device/auto_child/#").await;
    client
        .publish(
            "te/device/auto_child/service/collectd/m/ram",
            r#"{"current":6}"#,
            false,
        )
        .await;
    client
        .expect_payload(
            "te/device/auto_child//",
            r#"{"@parent":"device/main//","@type":"child-device","name":"auto_child"}"#,
        )
        .await;
    client
        .expect_payload("te/device/auto_child///twin/name", r#""auto_child""#)
        .await;
    client
        .expect_payload(
            "te/device/auto_child/service/collectd",
            r#"{"@parent":"device/auto_child//","@type":"service","name":"collectd"}"#,
        )
        .await;
    client
        .expect_payload(
            "te/device/auto_child/service/collectd/twin/name",
            r#""collectd""#,
        )
        .await;
    let state = http::get_until(
        &agent.url("/te/v1/entities/device/auto_child/service/collectd/state"),
        |r| r.status == 200,
    )
    .await;
    assert_eq!(state.json()["measurements"]["ram"]["current"]["value"], 6);
}
