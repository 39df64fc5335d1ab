//! Connection handling and synchronisation with the broker (spec/twin.md §7.4–§7.6, §8, worked
//! examples #26, #27, #42, #43): reconnection after a broker restart or a dropped connection,
//! the persistent session, deregistrations that happened while the agent was away, a broker
//! that lost its retained store, the last will, the `down` message and health checks.
//! Real mosquitto, the agent in-process, real MQTT and HTTP.

mod common;

use std::time::Duration;

use common::agent::{TestAgent, AGENT_HEALTH, AGENT_REGISTRATION, AGENT_TOPIC};
use common::http;
use common::mosquitto::Broker;
use common::mqtt::{msgs, pairs, retained, TestClient};
use common::scenario::{
    collect_through, down_health, expect_announced_up, get_json, is_live_up_health, wait_readiness,
    Proxy, RECONNECT,
};
use serde_json::{json, Value};

/// The retained set-up of #26: c5 with a twin key and a child c55, plus a bystander c6.
async fn register_c5_family(agent: &TestAgent, client: &TestClient) {
    let messages: &[(&str, &str, bool)] = &[
        ("te/device/c5//", r#"{"@type":"child-device"}"#, true),
        ("te/device/c5///twin/x", "1", true),
        (
            "te/device/c55//",
            r#"{"@parent":"device/c5//","@type":"child-device"}"#,
            true,
        ),
        ("te/device/c55///twin/y", "true", true),
        ("te/device/c55///m/env", r#"{"t":1}"#, false),
        ("te/device/c6//", r#"{"@type":"child-device"}"#, true),
    ];
    for (topic, payload, retain) in messages {
        client.publish(topic, *payload, *retain).await;
    }
    http::get_until(&agent.url("/te/v1/entities/device/c6//"), |r| {
        r.status == 200
    })
    .await;
}

/// #26: `te/device/c5//` is cleared while the agent is stopped; after the restart c5 and its
/// subtree are gone and their remaining retained topics cleared, bottom-up as in §4.8.
/// `fresh_session` restarts the agent under a new client id, so the empty message is not queued
/// in its persistent session and only the sync (§7.5) can discover the deregistration.
async fn deregistration_while_stopped(fresh_session: bool) {
    let broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    register_c5_family(&agent, &client).await;
    agent.stop().await;
    client.publish("te/device/c5//", "", true).await;

    let watcher = TestClient::connect(broker.port()).await;
    watcher.subscribe("te/device/c5/#").await;
    watcher.subscribe("te/device/c55/#").await;
    watcher.subscribe(AGENT_HEALTH).await;
    let mut stale = pairs(&watcher.collect_until_marker().await);
    stale.sort();
    assert_eq!(
        stale,
        msgs(&[
            ("te/device/c5///twin/x", "1"),
            (
                "te/device/c55//",
                r#"{"@parent":"device/c5//","@type":"child-device"}"#
            ),
            ("te/device/c55///twin/y", "true"),
            (AGENT_HEALTH, &down_health()),
        ])
    );

    if fresh_session {
        agent.config.mqtt.client_id = "edge-agent-fresh".into();
    }
    agent.relaunch().await;
    let traffic = collect_through(
        &watcher,
        "up health after the sync",
        RECONNECT,
        is_live_up_health,
    )
    .await;
    let mut clears = pairs(&traffic);
    clears.retain(|(topic, _)| topic.starts_with("te/device/c5"));
    assert_eq!(
        clears,
        msgs(&[
            ("te/device/c55///twin/y", ""),
            ("te/device/c5///twin/x", ""),
            ("te/device/c55//", ""),
            ("te/device/c5//", ""),
        ])
    );
    wait_readiness(&agent, "ready", RECONNECT).await;
    for id in ["device/c5//", "device/c55//"] {
        assert_eq!(
            get_json(&agent.url(&format!("/te/v1/entities/{id}"))).await,
            (
                404,
                json!({"error":format!("Entity with topic id: {id} not found")})
            )
        );
    }
    assert_eq!(
        get_json(&agent.url("/te/v1/entities/device/c6//")).await,
        (
            200,
            json!({"@topic-id":"device/c6//","@parent":"device/main//","@type":"child-device"})
        )
    );
    assert_eq!(
        retained(broker.port(), &["te/device/c5/#", "te/device/c55/#"]).await,
        vec![]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cleared_on_the_broker_while_the_agent_was_stopped_is_removed_with_its_subtree() {
    deregistration_while_stopped(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_finds_a_deregistration_missed_while_away_even_without_a_session() {
    deregistration_while_stopped(true).await;
}

/// #27: the broker comes back without its retained store while the agent runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_lost_its_retained_store_the_agent_restores_it_and_removes_nothing() {
    let mut broker = Broker::start().await;
    let proxy = Proxy::start(broker.port()).await;
    let port = proxy.port();
    let agent = TestAgent::start_with(&broker, |c| c.mqtt.port = port).await;
    let client = TestClient::connect(broker.port()).await;
    let messages: &[(&str, &str)] = &[
        ("te/device/c1//", r#"{"@type":"child-device","name":"c1"}"#),
        ("te/device/c1///twin/x", "5"),
        (
            "te/device/c11//",
            r#"{"@parent":"device/c1//","@type":"child-device"}"#,
        ),
        ("te/device/c1/service/s1", r#"{"@type":"service"}"#),
        (
            "te/device/c1/service/s1/status/health",
            r#"{"status":"up"}"#,
        ),
    ];
    for (topic, payload) in messages {
        client.publish(topic, *payload, true).await;
    }
    http::get_until(
        &agent.url("/te/v1/entities/device/c1/service/s1/state"),
        |r| r.status == 200 && r.json()["health"]["status"] == "up",
    )
    .await;
    let put = http::put_json(
        &agent.url("/te/v1/entities/device/main///twin/maintainer"),
        &json!("J"),
    )
    .await;
    assert_eq!(put.status, 200);
    let before = get_json(&agent.url("/te/v1/state")).await;

    // The proxy keeps the agent away until a watcher is subscribed to the empty broker.
    proxy.close();
    broker.restart_without_persistence().await;
    let watcher = TestClient::connect(broker.port()).await;
    watcher.subscribe("te/#").await;
    assert_eq!(watcher.collect_until_marker().await, vec![]);
    proxy.open();

    let traffic = collect_through(
        &watcher,
        "up health after the sync",
        RECONNECT,
        is_live_up_health,
    )
    .await;
    let (marker, rest) = traffic.split_first().expect("at least the health");
    assert!(
        marker
            .topic
            .starts_with(&format!("{AGENT_TOPIC}/signal/sync-")),
        "{}",
        marker.topic
    );
    assert_eq!(marker.payload_str(), "{}");
    let (_health, restored) = rest.split_last().expect("at least the health");
    assert_eq!(
        pairs(restored),
        msgs(&[
            ("te/device/c1//", r#"{"@type":"child-device","name":"c1"}"#),
            ("te/device/c1/service/s1", r#"{"@type":"service"}"#),
            (
                "te/device/c11//",
                r#"{"@parent":"device/c1//","@type":"child-device"}"#
            ),
            ("te/device/main///twin/maintainer", r#""J""#),
            ("te/device/c1///twin/name", r#""c1""#),
            ("te/device/c1///twin/x", "5"),
            (&format!("{AGENT_TOPIC}/twin/name"), r#""edge-agent""#),
            (&format!("{AGENT_TOPIC}/twin/type"), r#""service""#),
            (AGENT_TOPIC, AGENT_REGISTRATION),
        ]),
        "registrations parents first, then twin fragments, then the announcement"
    );
    wait_readiness(&agent, "ready", RECONNECT).await;

    let mut on_broker = retained(broker.port(), &["te/#"]).await;
    let health = on_broker
        .iter()
        .position(|(topic, _)| topic == AGENT_HEALTH)
        .map(|i| on_broker.remove(i))
        .expect("the agent's health is retained");
    let health: Value = serde_json::from_str(&health.1).expect("JSON health");
    assert_eq!(
        (&health["pid"], &health["status"]),
        (&json!(std::process::id()), &json!("up"))
    );
    let mut restored = pairs(restored);
    restored.sort();
    assert_eq!(on_broker, restored);

    // Nothing was removed: every state document but the agent's own (its health was renewed)
    // is as before.
    let after = get_json(&agent.url("/te/v1/state")).await;
    let others = |(status, states): &(u16, Value)| -> (u16, Vec<Value>) {
        let list = states.as_array().cloned().unwrap_or_default();
        let list = list
            .into_iter()
            .filter(|s| s["@topic-id"] != "device/main/service/edge-agent")
            .collect();
        (*status, list)
    };
    assert_eq!(others(&after), others(&before));
    assert_eq!(others(&after).1.len(), 4);

    // The new session has the agent's subscription again.
    client.publish("te/device/c11///twin/z", "1", true).await;
    http::get_until(&agent.url("/te/v1/entities/device/c11///twin/z"), |r| {
        r.status == 200 && r.text() == "1"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_after_a_broker_restart_and_refuses_writes_meanwhile() {
    let mut broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let twin_key = agent.url("/te/v1/entities/device/main///twin/k");

    broker.stop().await;
    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    // #42: writes need the broker.
    let refused = http::put_json(&twin_key, &json!(1)).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.starts_with("The entity store is not ready: "),
        "{error}"
    );
    assert_eq!(
        get_json(&agent.url("/te/v1/entities/device/main///twin")).await,
        (200, json!({}))
    );

    broker.start_again().await;
    wait_readiness(&agent, "ready", RECONNECT).await;
    let client = TestClient::connect(broker.port()).await;
    client
        .publish("te/device/late//", r#"{"@type":"child-device"}"#, true)
        .await;
    http::get_until(&agent.url("/te/v1/entities/device/late//"), |r| {
        r.status == 200
    })
    .await;
    let put = http::put_json(&twin_key, &json!(1)).await;
    assert_eq!((put.status, put.json()), (200, json!(1)));
}

/// The persistent session (issue #2): telemetry published while the agent was down, with the
/// broker up, is delivered when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_published_while_the_agent_was_crashed_is_applied_after_its_relaunch() {
    let broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe(AGENT_HEALTH).await;
    expect_announced_up(&client).await;

    agent.crash();
    // The last will proves the broker has seen the connection go, so what follows is queued
    // in the agent's session rather than sent to a dead socket.
    client.expect_payload(AGENT_HEALTH, down_health()).await;
    client
        .publish("te/device/main///m/env", r#"{"temperature":21}"#, false)
        .await;
    client
        .publish("te/device/main///e/door", r#"{"text":"opened"}"#, false)
        .await;

    agent.relaunch().await;
    wait_readiness(&agent, "ready", RECONNECT).await;
    let state = http::get_until(&agent.url("/te/v1/entities/device/main///state"), |r| {
        r.json()["events"]["door"][0]["payload"] == json!({"text":"opened"})
    })
    .await;
    assert_eq!(
        state.json()["measurements"]["env"]["temperature"]["value"],
        21
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_connection_drops_the_agent_reconnects_and_gets_what_it_missed() {
    let broker = Broker::start().await;
    let proxy = Proxy::start(broker.port()).await;
    let port = proxy.port();
    let agent = TestAgent::start_with(&broker, |c| c.mqtt.port = port).await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe(AGENT_HEALTH).await;
    expect_announced_up(&client).await;

    proxy.close();
    client.expect_payload(AGENT_HEALTH, down_health()).await;
    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    client
        .publish("te/device/main///m/env", r#"{"t":7}"#, false)
        .await;
    proxy.open();

    client
        .expect_message_within("the agent's up health", RECONNECT, is_live_up_health)
        .await;
    wait_readiness(&agent, "ready", RECONNECT).await;
    let state = http::get(&agent.url("/te/v1/entities/device/main///state")).await;
    assert_eq!(state.json()["measurements"]["env"]["t"]["value"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_leaves_the_down_health_retained_and_disconnects_cleanly() {
    let broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    agent.stop().await;
    assert_eq!(
        retained(broker.port(), &[AGENT_HEALTH]).await,
        msgs(&[(AGENT_HEALTH, &down_health())])
    );
    // A clean DISCONNECT (not a dropped socket, which would fire the will instead).
    assert!(
        broker.log().contains("Client edge-agent disconnected."),
        "{}",
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_agent_is_reported_down_by_its_last_will() {
    let broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let watcher = TestClient::connect(broker.port()).await;
    watcher.subscribe(AGENT_HEALTH).await;
    expect_announced_up(&watcher).await;

    agent.crash();
    let will = watcher.expect(AGENT_HEALTH).await;
    assert_eq!(will.payload_str(), down_health());
    assert_eq!(
        retained(broker.port(), &[AGENT_HEALTH]).await,
        msgs(&[(AGENT_HEALTH, &down_health())])
    );
}

/// #43, §8: a watchdog gets a fresh `up` health whose time is no earlier than its request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_is_answered_with_a_fresh_up_health_and_stores_nothing() {
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe(AGENT_HEALTH).await;
    expect_announced_up(&client).await;

    for check in [
        "te/device/main///cmd/health/check",
        "te/device/main/service/edge-agent/cmd/health/check",
    ] {
        let requested_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis() as i64;
        client.publish(check, "", false).await;
        let answer = client
            .expect_message("the agent's up health", is_live_up_health)
            .await;
        let health = answer.payload_json();
        let keys: Vec<&String> = health.as_object().expect("an object").keys().collect();
        assert_eq!(keys, ["pid", "status", "time"], "{health}");
        let time_ms = (health["time"].as_f64().expect("a float time") * 1000.0).round() as i64;
        assert!(
            time_ms >= requested_ms,
            "{check}: answered with time {time_ms} ms, requested at {requested_ms} ms"
        );
    }
    assert_eq!(client.collect_until_marker().await, vec![]);

    let (status, main) = get_json(&agent.url("/te/v1/entities/device/main///state")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&main["commands"], &main["capabilities"]),
        (&json!({}), &json!({}))
    );
    assert_eq!(
        get_json(&agent.url("/te/v1/entities")).await.1,
        json!([
            {"@topic-id":"device/main//","@type":"device"},
            {"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}
        ])
    );
}
