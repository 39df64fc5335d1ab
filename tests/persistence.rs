//! Persistence (spec/twin.md §7.1–§7.3, §7.6, worked example #25): the agent restarts from its
//! data dir after a graceful stop or a crash, serves the persisted twin at once even with the
//! broker down, repairs a damaged journal, and finishes the clean-ups a crash interrupted.
//! Real mosquitto, the agent in-process, real MQTT and HTTP.

mod common;

use std::time::Duration;

use common::agent::{TestAgent, AGENT_HEALTH};
use common::http;
use common::mosquitto::Broker;
use common::mqtt::{msgs, pairs, retained, TestClient};
use common::process::send_signal;
use common::scenario::{
    broker_pid, collect_through, dir_contains, get_json, is_live_up_health, wait_readiness,
    RECONNECT,
};
use serde_json::{json, Value};
use tokio::time::Instant;

const CHILD1: &str = "/te/v1/entities/device/child1//";

/// Registers `te/<id>` with `payload` (retained) and waits until the agent serves it.
async fn register(agent: &TestAgent, client: &TestClient, id: &str, payload: &str) {
    client
        .publish(&format!("te/{id}"), payload.to_owned(), true)
        .await;
    http::get_until(&agent.url(&format!("/te/v1/entities/{id}")), |r| {
        r.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_deleted_before_a_restart_stays_deleted_with_the_broker_down_and_after_it_returns()
{
    let mut broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    register(
        &agent,
        &client,
        "device/child1//",
        r#"{"@type":"child-device"}"#,
    )
    .await;
    register(
        &agent,
        &client,
        "device/child2//",
        r#"{"@type":"child-device"}"#,
    )
    .await;

    let deleted = http::delete(&agent.url(CHILD1)).await;
    assert_eq!(
        (deleted.status, deleted.json()),
        (
            200,
            json!([{"@topic-id":"device/child1//","@parent":"device/main//","@type":"child-device"}])
        )
    );
    agent.stop().await;
    broker.stop().await;
    agent.relaunch().await;

    let readyz = wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    assert!(
        readyz["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{readyz}"
    );
    assert_eq!(
        get_json(&agent.url(CHILD1)).await,
        (
            404,
            json!({"error":"Entity with topic id: device/child1// not found"})
        )
    );
    assert_eq!(
        get_json(&agent.url("/te/v1/entities")).await,
        (
            200,
            json!([
                {"@topic-id":"device/main//","@type":"device"},
                {"@topic-id":"device/child2//","@parent":"device/main//","@type":"child-device"},
                {"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}
            ])
        )
    );
    let (status, readyz) = get_json(&agent.url("/readyz")).await;
    assert_eq!((status, &readyz["status"]), (503, &json!("disconnected")));

    broker.start_again().await;
    wait_readiness(&agent, "ready", RECONNECT).await;
    assert_eq!(get_json(&agent.url(CHILD1)).await.0, 404);
    assert_eq!(
        get_json(&agent.url("/te/v1/entities/device/child2//"))
            .await
            .0,
        200
    );
    assert_eq!(
        retained(broker.port(), &["te/device/child1/#"]).await,
        vec![]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_serves_its_persisted_state_at_once_while_the_broker_is_down() {
    let mut broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    // The agent's own `up` health comes back to it and lands in its state: wait for that echo,
    // so that the state captured below is final.
    http::get_until(
        &agent.url("/te/v1/entities/device/main/service/edge-agent/state"),
        |r| r.status == 200 && r.json()["health"]["status"] == "up",
    )
    .await;
    let client = TestClient::connect(broker.port()).await;
    let messages: &[(&str, &str, bool)] = &[
        (
            "te/device/child1//",
            r#"{"@id":"gw:child1","@type":"child-device","name":"child1"}"#,
            true,
        ),
        (
            "te/device/child1/service/app",
            r#"{"@type":"service"}"#,
            true,
        ),
        (
            "te/device/child1/service/app/status/health",
            r#"{"status":"up"}"#,
            true,
        ),
        ("te/device/child1///twin/type", r#""RPi""#, true),
        ("te/device/child1///config", r#"{"interval":5}"#, true),
        ("te/device/child1///cmd/restart", "{}", true),
        (
            "te/device/child1///a/high_temp",
            r#"{"severity":"major","text":"Too hot","time":1701949168}"#,
            true,
        ),
        (
            "te/device/child1///m/environment",
            r#"{"time":"2021-04-30T17:03:14.123+02:00","temperature":25,"current":{"L1":9.5}}"#,
            false,
        ),
        (
            "te/device/child1///e/login",
            r#"{"text":"user bob","time":1701949168}"#,
            false,
        ),
        (
            "te/device/child1///cmd/restart/17",
            r#"{"status":"executing"}"#,
            true,
        ),
    ];
    for (topic, payload, retain) in messages {
        client.publish(topic, *payload, *retain).await;
    }
    let child1_state = agent.url("/te/v1/entities/device/child1///state");
    http::get_until(&child1_state, |r| {
        r.status == 200 && r.json()["commands"]["restart"]["17"]["status"] == "executing"
    })
    .await;
    let put = http::put_json(
        &agent.url("/te/v1/entities/device/main///twin/maintainer"),
        &json!("J"),
    )
    .await;
    assert_eq!((put.status, put.json()), (200, json!("J")));

    let before = http::get(&agent.url("/te/v1/state")).await;
    assert_eq!(before.status, 200);
    let before = before.json();
    let child1 = &before.as_array().expect("an array of state documents")[1];
    assert_eq!(child1["@topic-id"], "device/child1//");
    assert_eq!(child1["twin"], json!({"name":"child1","type":"RPi"}));
    assert_eq!(
        child1["measurements"],
        json!({"environment":{
            "current":{"L1":{"value":9.5,"time":"2021-04-30T15:03:14.123Z"}},
            "temperature":{"value":25,"time":"2021-04-30T15:03:14.123Z"}}})
    );
    assert_eq!(
        child1["events"]["login"][0]["payload"],
        json!({"text":"user bob"})
    );
    assert_eq!(child1["children"], json!(["device/child1/service/app"]));

    agent.stop().await;
    broker.stop().await;
    let relaunched = Instant::now();
    agent.relaunch().await;
    http::get_until(&agent.url("/te/v1/entities"), |r| r.status == 200).await;
    // The issue asks for 100 ms; the bound leaves room for a loaded test machine while still
    // failing if serving waited for the broker.
    let elapsed = relaunched.elapsed();
    assert!(elapsed < Duration::from_secs(1), "served after {elapsed:?}");

    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    assert_eq!(get_json(&agent.url("/te/v1/state")).await, (200, before));
    let (status, readyz) = get_json(&agent.url("/readyz")).await;
    assert_eq!((status, &readyz["status"]), (503, &json!("disconnected")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_a_crash_right_after_they_were_published_or_answered() {
    let mut broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe("te/device/c1///twin/+").await;

    // The agent publishes the inline twin key only once the registration is on disk (§7.1).
    client
        .publish(
            "te/device/c1//",
            r#"{"@type":"child-device","name":"c1"}"#,
            true,
        )
        .await;
    client
        .expect_payload("te/device/c1///twin/name", r#""c1""#)
        .await;
    // An HTTP registration is on disk before it is answered.
    let created = http::post_json(
        &agent.url("/te/v1/entities"),
        &json!({"@topic-id":"device/c2//","@type":"child-device","@parent":"device/c1//"}),
    )
    .await;
    assert_eq!(
        (created.status, created.json()),
        (201, json!({"@topic-id":"device/c2//"}))
    );
    // A twin key is an "other retained-kind item": durable within 1 s, not before the answer
    // (§7.1), so after a crash at this instant only the broker's retained copy may hold it.
    let put = http::put_json(
        &agent.url("/te/v1/entities/device/c2///twin/location"),
        &json!("hall-7"),
    )
    .await;
    assert_eq!(put.status, 200);
    agent.crash();
    broker.stop().await;
    agent.relaunch().await;

    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    assert_eq!(
        get_json(&agent.url("/te/v1/entities?root=device/c1//")).await,
        (
            200,
            json!([
                {"@topic-id":"device/c1//","@parent":"device/main//","@type":"child-device"},
                {"@topic-id":"device/c2//","@parent":"device/c1//","@type":"child-device"}
            ])
        )
    );
    assert_eq!(
        get_json(&agent.url("/te/v1/entities/device/c1///twin")).await,
        (200, json!({"name":"c1"}))
    );

    broker.start_again().await;
    wait_readiness(&agent, "ready", RECONNECT).await;
    assert_eq!(
        get_json(&agent.url("/te/v1/entities/device/c2///twin")).await,
        (200, json!({"location":"hall-7"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_key_written_over_http_reaches_the_disk_within_a_second_without_a_stop() {
    let mut broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let value = format!("durable-{}", std::process::id());
    const KEY: &str = "/te/v1/entities/device/main///twin/k";
    let put = http::put_json(&agent.url(KEY), &json!(value)).await;
    assert_eq!((put.status, put.json()), (200, json!(value)));

    // §7.1: within 1 s; the timeout leaves room for a loaded machine.
    let needle = format!("\"{value}\"");
    let dir = agent.twin_dir();
    common::wait_until(
        "the twin key to reach the disk",
        Duration::from_secs(3),
        || {
            let found = dir_contains(&dir, &needle);
            async move { found }
        },
    )
    .await;
    agent.crash();
    broker.stop().await;
    agent.relaunch().await;
    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    assert_eq!(get_json(&agent.url(KEY)).await, (200, json!(value)));
}

/// §7.6: a deregistration whose clean-up messages the broker never acknowledged is cleaned up
/// after a restart, and the stale retained copies the broker still holds do not bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_ups_interrupted_by_a_crash_are_published_after_the_restart() {
    let mut broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe("te/device/c8/#").await;
    client
        .publish(
            "te/device/c8//",
            r#"{"@type":"child-device","name":"c8"}"#,
            true,
        )
        .await;
    client
        .expect_payload("te/device/c8///twin/name", r#""c8""#)
        .await;
    // A clean broker stop saves c8's retained registration and twin key to its database.
    broker.stop().await;
    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    broker.start_again().await;
    wait_readiness(&agent, "ready", RECONNECT).await;

    // Frozen, the broker takes the clean-up messages into its socket buffer and never
    // acknowledges them; killed, it forgets them and comes back with its saved state.
    let pid = broker_pid(&broker);
    send_signal(pid, "STOP");
    const C8: &str = "/te/v1/entities/device/c8//";
    let delete = tokio::spawn(http::try_send(http::client().delete(agent.url(C8))));
    // Once the removal is visible its clean-up records are on disk: they are written before the
    // clean-up messages go out, in the same step.
    http::get_until(&agent.url(C8), |r| r.status == 404).await;
    agent.crash();
    send_signal(pid, "KILL");
    broker.stop().await;
    broker.start_again().await;

    let watcher = TestClient::connect(broker.port()).await;
    watcher.subscribe("te/device/c8/#").await;
    watcher.subscribe(AGENT_HEALTH).await;
    let stale: Vec<(String, String)> = pairs(&watcher.collect_until_marker().await)
        .into_iter()
        .filter(|(topic, _)| topic.starts_with("te/device/c8/"))
        .collect();
    assert_eq!(
        stale,
        msgs(&[
            ("te/device/c8//", r#"{"@type":"child-device","name":"c8"}"#),
            ("te/device/c8///twin/name", r#""c8""#),
        ]),
        "the broker still holds the stale copies"
    );

    agent.relaunch().await;
    let traffic = collect_through(
        &watcher,
        "up health after the sync",
        RECONNECT,
        is_live_up_health,
    )
    .await;
    let mut clears = pairs(&traffic);
    clears.retain(|(topic, _)| topic.starts_with("te/device/c8/"));
    clears.sort();
    assert_eq!(
        clears,
        msgs(&[("te/device/c8//", ""), ("te/device/c8///twin/name", "")])
    );
    wait_readiness(&agent, "ready", RECONNECT).await;
    assert_eq!(
        get_json(&agent.url(C8)).await,
        (
            404,
            json!({"error":"Entity with topic id: device/c8// not found"})
        )
    );
    assert_eq!(retained(broker.port(), &["te/device/c8/#"]).await, vec![]);
    // The interrupted DELETE was never acknowledged, so it could not have answered 200.
    if let Ok(Ok(Ok(answer))) = tokio::time::timeout(Duration::from_secs(15), delete).await {
        assert_eq!(answer.status, 503, "{}", answer.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_line_and_a_leftover_temp_snapshot_do_not_stop_the_agent() {
    let mut broker = Broker::start().await;
    let mut agent = TestAgent::start(&broker).await;
    let client = TestClient::connect(broker.port()).await;
    register(
        &agent,
        &client,
        "device/c1//",
        r#"{"@type":"child-device"}"#,
    )
    .await;
    agent.stop().await;
    broker.stop().await;

    let dir = agent.twin_dir();
    let journal = dir.join("journal.jsonl");
    let mut bytes = std::fs::read(&journal).expect("the journal exists after a stop");
    bytes.extend_from_slice(br#"{"seq":999999,"op":"put","key":"e/device/ghost//","val"#);
    std::fs::write(&journal, bytes).expect("the journal is writable");
    let tmp = dir.join("state.json.tmp");
    std::fs::write(&tmp, r#"{"version":1,"seq":12,"entr"#).expect("the twin dir is writable");

    agent.relaunch().await;
    assert!(
        !tmp.exists(),
        "the unfinished snapshot is removed at start-up"
    );
    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    let entities = json!([
        {"@topic-id":"device/main//","@type":"device"},
        {"@topic-id":"device/c1//","@parent":"device/main//","@type":"child-device"},
        {"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}
    ]);
    assert_eq!(
        get_json(&agent.url("/te/v1/entities")).await,
        (200, entities.clone())
    );

    // The next record starts on a line of its own: written now, it is there after a restart.
    broker.start_again().await;
    wait_readiness(&agent, "ready", RECONNECT).await;
    let created = http::post_json(
        &agent.url("/te/v1/entities"),
        &json!({"@topic-id":"device/c2//","@type":"child-device"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    agent.stop().await;
    broker.stop().await;
    agent.relaunch().await;
    wait_readiness(&agent, "disconnected", Duration::from_secs(10)).await;
    let mut expected = entities;
    if let Value::Array(list) = &mut expected {
        list.insert(
            2,
            json!({"@topic-id":"device/c2//","@parent":"device/main//","@type":"child-device"}),
        );
    }
    assert_eq!(
        get_json(&agent.url("/te/v1/entities")).await,
        (200, expected)
    );
}
