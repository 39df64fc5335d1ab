//! The worked examples of spec/twin.md §10 that start on the MQTT bus, end to end: a real
//! mosquitto, the agent in-process, a test client publishing and asserting what the agent
//! publishes and what its HTTP API answers. Each test names its example (`#n`).
//!
//! Rejections are reported on `te/errors` at most once a minute per (kind, topic id) (§2.6), so
//! a test that expects several reports makes each on another entity, or another test.

mod common;

use std::path::Path;

use common::agent::{TestAgent, AGENT_HEALTH, AGENT_REGISTRATION, AGENT_TOPIC};
use common::http;
use common::mosquitto::Broker;
use common::mqtt::{msgs, retained, TestClient};
use common::twin::{System, ERRORS};
use serde_json::{json, Value};

/// The registration of §10 #4, and the form the agent keeps and republishes: compact, with its
/// keys sorted (§1).
const C1_FULL: &str = r#"{"@type":"child-device","@id":"c1","name":"c1","maintenance_mode":true,"maintenance_window":5}"#;
const C1_FULL_SORTED: &str = r#"{"@id":"c1","@type":"child-device","maintenance_mode":true,"maintenance_window":5,"name":"c1"}"#;
const CHILD: &str = r#"{"@type":"child-device"}"#;

fn c1_inline_twin() -> Vec<(String, String)> {
    msgs(&[
        ("te/device/c1///twin/maintenance_mode", "true"),
        ("te/device/c1///twin/maintenance_window", "5"),
        ("te/device/c1///twin/name", r#""c1""#),
    ])
}

fn not_found(id: &str) -> (u16, Value) {
    (
        404,
        json!({"error":format!("Entity with topic id: {id} not found")}),
    )
}

/// #1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_syncs_announces_itself_and_becomes_ready() {
    let broker = Broker::start().await;
    let client = TestClient::connect(broker.port()).await;
    client.subscribe("te/#").await;
    let agent = TestAgent::start(&broker).await;

    // The health message comes last; everything before it arrived in this order.
    let health = client.expect(AGENT_HEALTH).await;
    let before = client.collect_until_marker().await;
    let topics: Vec<&str> = before.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics.len(), 4, "{topics:?}");
    let marker = &before[0];
    let nonce = marker
        .topic
        .strip_prefix(&format!("{AGENT_TOPIC}/signal/sync-"))
        .unwrap_or_else(|| panic!("not a sync marker: {}", marker.topic));
    assert_eq!(nonce.len(), 32, "{}", marker.topic);
    assert!(nonce
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(marker.payload_str(), "{}");
    assert_eq!(
        before[1..]
            .iter()
            .map(|m| (m.topic.as_str(), m.payload_str()))
            .collect::<Vec<_>>(),
        [
            (AGENT_TOPIC, AGENT_REGISTRATION),
            (
                "te/device/main/service/edge-agent/twin/name",
                r#""edge-agent""#
            ),
            (
                "te/device/main/service/edge-agent/twin/type",
                r#""service""#
            ),
        ]
    );
    let health = health.payload_json();
    assert_eq!(health["status"], "up");
    assert_eq!(health["pid"], std::process::id());
    assert!(health["time"].as_f64().is_some());
    assert_eq!(health.as_object().map(|o| o.len()), Some(3), "{health}");

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

    // Everything but the sync marker is retained.
    let kept = retained(broker.port(), &[&format!("{AGENT_TOPIC}/#")]).await;
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert_eq!(
        kept[0],
        (AGENT_TOPIC.to_owned(), AGENT_REGISTRATION.to_owned())
    );
    assert_eq!(kept[1].0, AGENT_HEALTH);
    assert_eq!(
        serde_json::from_str::<Value>(&kept[1].1).expect("JSON health")["status"],
        "up"
    );
    assert_eq!(
        kept[2..],
        msgs(&[
            (
                "te/device/main/service/edge-agent/twin/name",
                r#""edge-agent""#
            ),
            (
                "te/device/main/service/edge-agent/twin/type",
                r#""service""#
            ),
        ])
    );
}

/// #3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_registration_publishes_nothing_and_is_served_over_http() {
    let sys = System::start().await;
    sys.publish("te/device/child1//", CHILD, true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/child1").await,
        (
            200,
            json!({"@topic-id":"device/child1//","@parent":"device/main//","@type":"child-device"})
        )
    );
}

/// #4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_registration_data_is_republished_as_retained_twin_fragments() {
    let sys = System::start().await;
    sys.publish("te/device/c1//", C1_FULL, true).await;
    assert_eq!(sys.published().await, c1_inline_twin());
    assert_eq!(
        sys.retained("te/device/c1///twin/+").await,
        c1_inline_twin()
    );
    let (status, state) = sys.get("/te/v1/entities/device/c1///state").await;
    assert_eq!(status, 200);
    assert_eq!(state["@id"], "c1");
    assert_eq!(
        state["twin"],
        json!({"maintenance_mode":true,"maintenance_window":5,"name":"c1"})
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/c1").await,
        (
            200,
            json!({"@topic-id":"device/c1//","@parent":"device/main//","@type":"child-device","@id":"c1"})
        )
    );
}

/// The bytes appended to the journal since it was `since` bytes long; panics if it shrank
/// (a compaction would hide what was written).
fn journal_since(journal: &Path, since: usize) -> String {
    let bytes = std::fs::read(journal).expect("the journal exists");
    assert!(bytes.len() >= since, "the journal was compacted meanwhile");
    String::from_utf8_lossy(&bytes[since..]).into_owned()
}

fn journal_len(journal: &Path) -> usize {
    std::fs::metadata(journal).map_or(0, |m| m.len() as usize)
}

/// #5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_registration_is_a_no_op_before_and_after_a_restart() {
    let mut sys = System::start().await;
    let journal = sys.agent.twin_dir().join("journal.jsonl");
    sys.publish("te/device/c1//", C1_FULL, true).await;
    assert_eq!(sys.published().await, c1_inline_twin());
    let accepted = journal_len(&journal);
    assert!(
        journal_since(&journal, 0).contains("device/c1//"),
        "the accepted registration is on disk"
    );

    sys.publish("te/device/c1//", C1_FULL, true).await;
    assert_eq!(sys.published().await, []);
    let appended = journal_since(&journal, accepted);
    assert!(!appended.contains("device/c1/"), "persisted: {appended}");

    // The broker still holds the registration and the fragments: the sync finds nothing to do.
    let around_restart = sys.restart_agent().await;
    assert!(
        around_restart
            .iter()
            .all(|(t, _)| !t.contains("device/c1/")),
        "{around_restart:?}"
    );
    sys.caught_up().await;
    let restarted = journal_len(&journal);
    sys.publish("te/device/c1//", C1_FULL, true).await;
    assert_eq!(sys.published().await, []);
    let appended = journal_since(&journal, restarted);
    assert!(!appended.contains("device/c1/"), "persisted: {appended}");
    assert_eq!(
        sys.retained("te/device/c1///twin/+").await,
        c1_inline_twin()
    );
}

/// #6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_registration_merges_inline_data_and_keeps_the_external_id() {
    let sys = System::start().await;
    sys.publish("te/device/c1//", C1_FULL, true).await;
    assert_eq!(sys.published().await, c1_inline_twin());
    sys.publish("te/device/c1///twin/name", r#""x""#, true)
        .await;
    assert_eq!(sys.published().await, []);
    sys.publish(
        "te/device/c1//",
        r#"{"@type":"child-device","name":"y"}"#,
        true,
    )
    .await;
    assert_eq!(
        sys.published().await,
        msgs(&[("te/device/c1///twin/name", r#""y""#)])
    );
    assert_eq!(
        sys.retained("te/device/c1///twin/name").await,
        msgs(&[("te/device/c1///twin/name", r#""y""#)])
    );
    let (_, state) = sys.get("/te/v1/entities/device/c1///state").await;
    assert_eq!(state["@id"], "c1");
    assert_eq!(
        state["twin"],
        json!({"maintenance_mode":true,"maintenance_window":5,"name":"y"})
    );
}

/// #7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_typing_an_entity_is_reported_and_its_last_accepted_registration_republished() {
    let sys = System::start().await;
    sys.publish("te/device/c1//", C1_FULL, true).await;
    assert_eq!(sys.published().await, c1_inline_twin());
    sys.publish("te/device/c1//", r#"{"@type":"service"}"#, true)
        .await;
    assert_eq!(
        sys.published().await,
        msgs(&[
            (
                ERRORS,
                "te/device/c1//: Updating the entity type of device/c1// is not supported"
            ),
            ("te/device/c1//", C1_FULL_SORTED),
        ])
    );
    assert_eq!(
        sys.retained("te/device/c1//").await,
        msgs(&[("te/device/c1//", C1_FULL_SORTED)])
    );
    assert_eq!(sys.retained(ERRORS).await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/c1").await,
        (
            200,
            json!({"@topic-id":"device/c1//","@parent":"device/main//","@type":"child-device","@id":"c1"})
        )
    );
}

/// #8
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_external_id_is_reported_and_the_last_accepted_registration_republished() {
    let sys = System::start().await;
    sys.publish("te/device/c1//", C1_FULL, true).await;
    assert_eq!(sys.published().await, c1_inline_twin());
    sys.publish(
        "te/device/c1//",
        r#"{"@type":"child-device","@id":"other"}"#,
        true,
    )
    .await;
    assert_eq!(
        sys.published().await,
        msgs(&[
            (
                ERRORS,
                "te/device/c1//: Updating the external id of device/c1// is not supported"
            ),
            ("te/device/c1//", C1_FULL_SORTED),
        ])
    );
    assert_eq!(
        sys.retained("te/device/c1//").await,
        msgs(&[("te/device/c1//", C1_FULL_SORTED)])
    );
    let (_, state) = sys.get("/te/v1/entities/device/c1///state").await;
    assert_eq!(state["@id"], "c1");
}

/// #9
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_children_are_registered_once_their_ancestor_arrives() {
    let sys = System::start().await;
    sys.publish(
        "te/device/child000//",
        r#"{"@type":"child-device","@parent":"device/child00//"}"#,
        true,
    )
    .await;
    sys.publish(
        "te/device/child00//",
        r#"{"@type":"child-device","@parent":"device/child0//"}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/child000").await,
        not_found("device/child000//")
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/child00").await,
        not_found("device/child00//")
    );

    sys.publish("te/device/child0//", CHILD, true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.ids("?root=device/child0//").await,
        ["device/child0//", "device/child00//", "device/child000//"]
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/child000").await,
        (
            200,
            json!({"@topic-id":"device/child000//","@parent":"device/child00//","@type":"child-device"})
        )
    );
}

/// #10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_of_an_unknown_device_waits_for_its_device() {
    let sys = System::start().await;
    sys.publish(
        "te/device/ghost/service/svc",
        r#"{"@type":"service"}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/ghost/service/svc").await,
        not_found("device/ghost/service/svc")
    );
    assert_eq!(sys.get("/healthz").await, (200, json!({"status":"alive"})));

    sys.publish("te/device/ghost//", CHILD, true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/ghost/service/svc").await,
        (
            200,
            json!({"@topic-id":"device/ghost/service/svc","@parent":"device/ghost//","@type":"service"})
        )
    );
    assert_eq!(
        sys.ids("?root=device/ghost//").await,
        ["device/ghost//", "device/ghost/service/svc"]
    );
}

/// #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_parent_wins_and_custom_scheme_entities_default_to_the_main_device() {
    let sys = System::start().await;
    sys.publish(
        "te/device/c9/service/svc",
        r#"{"@type":"service","@parent":"device/main//"}"#,
        true,
    )
    .await;
    sys.publish(
        "te/factory/shop/plc1/metrics",
        r#"{"@type":"service"}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/c9/service/svc").await,
        (
            200,
            json!({"@topic-id":"device/c9/service/svc","@parent":"device/main//","@type":"service"})
        )
    );
    assert_eq!(
        sys.get("/te/v1/entities/factory/shop/plc1/metrics").await,
        (
            200,
            json!({"@topic-id":"factory/shop/plc1/metrics","@parent":"device/main//","@type":"service"})
        )
    );
}

fn auto_registration(device: &str, service: &str) -> Vec<(String, String)> {
    let d = format!("te/device/{device}//");
    let s = format!("te/device/{device}/service/{service}");
    let pairs = [
        (
            d.clone(),
            format!(r#"{{"@parent":"device/main//","@type":"child-device","name":"{device}"}}"#),
        ),
        (format!("{d}/twin/name"), format!(r#""{device}""#)),
        (
            s.clone(),
            format!(r#"{{"@parent":"device/{device}//","@type":"service","name":"{service}"}}"#),
        ),
        (format!("{s}/twin/name"), format!(r#""{service}""#)),
    ];
    pairs.into_iter().collect()
}

/// #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_an_unknown_service_auto_registers_it_and_its_device() {
    let sys = System::start().await;
    sys.publish(
        "te/device/auto_child/service/collectd/m/ram",
        r#"{"current":6}"#,
        false,
    )
    .await;
    let expected = auto_registration("auto_child", "collectd");
    assert_eq!(sys.published().await, expected);
    let kept = sys.retained("te/device/auto_child/#").await;
    let mut expected_kept = expected;
    expected_kept.sort();
    assert_eq!(kept, expected_kept);
    let (status, state) = sys
        .get("/te/v1/entities/device/auto_child/service/collectd/state")
        .await;
    assert_eq!(status, 200);
    assert_eq!(state["measurements"]["ram"]["current"]["value"], 6);
    assert_eq!(
        sys.get("/te/v1/entities/device/auto_child").await,
        (
            200,
            json!({"@topic-id":"device/auto_child//","@parent":"device/main//","@type":"child-device"})
        )
    );
}

/// #14
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_of_an_unknown_service_auto_registers_it_and_its_device() {
    let sys = System::start().await;
    sys.publish(
        "te/device/external-sensor/service/childservice/status/health",
        r#"{"status":"unknown"}"#,
        true,
    )
    .await;
    assert_eq!(
        sys.published().await,
        auto_registration("external-sensor", "childservice")
    );
    let (status, state) = sys
        .get("/te/v1/entities/device/external-sensor/service/childservice/state")
        .await;
    assert_eq!(status, 200);
    assert_eq!(state["health"]["status"], "unknown");
    assert_eq!(state["health"]["raw"], r#"{"status":"unknown"}"#);
}

/// #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clears_commands_and_signals_for_unknown_ids_register_nothing() {
    let sys = System::start().await;
    let before = sys.ids("").await;
    sys.publish("te/device/u1///a/x", "", true).await;
    sys.publish("te/device/u2///cmd/restart/1", r#"{"status":"init"}"#, true)
        .await;
    sys.publish("te/device/u3///signal/sync", "{}", false).await;
    assert_eq!(sys.published().await, []);
    for id in ["device/u1//", "device/u2//", "device/u3//"] {
        assert_eq!(
            sys.get(&format!("/te/v1/entities/{id}")).await,
            not_found(id)
        );
    }
    assert_eq!(sys.ids("").await, before);
}

/// #16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_an_unknown_custom_scheme_entity_is_dropped_and_reported() {
    let sys = System::start().await;
    sys.publish("te/custom/x///m/t", r#"{"a":1}"#, false).await;
    assert_eq!(
        sys.published().await,
        msgs(&[(
            ERRORS,
            "te/custom/x///m/t: Auto registration of the entity with topic id custom/x// failed as it does not match the default topic scheme: 'device/<device-id>/service/<service-id>'. Try explicit registration instead."
        )])
    );
    assert_eq!(
        sys.get("/te/v1/entities/custom/x").await,
        not_found("custom/x//")
    );
    assert_eq!(sys.retained(ERRORS).await, []);
}

/// #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_another_parent_moves_the_entity_with_its_subtree() {
    let sys = System::start().await;
    sys.publish("te/device/child_a//", CHILD, true).await;
    sys.publish("te/device/child_b//", CHILD, true).await;
    sys.publish(
        "te/device/child_bb//",
        r#"{"@type":"child-device","@parent":"device/child_b//"}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.ids("?parent=device/main//").await,
        [
            "device/child_a//",
            "device/child_b//",
            "device/main/service/edge-agent"
        ]
    );

    sys.publish(
        "te/device/child_b//",
        r#"{"@type":"child-device","@parent":"device/child_a//"}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.ids("?parent=device/main//").await,
        ["device/child_a//", "device/main/service/edge-agent"]
    );
    assert_eq!(
        sys.ids("?parent=device/child_a//").await,
        ["device/child_b//"]
    );
    assert_eq!(
        sys.ids("?root=device/child_a//").await,
        ["device/child_a//", "device/child_b//", "device/child_bb//"]
    );
}

/// #18
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_can_not_be_a_parent() {
    let sys = System::start().await;
    let payload = r#"{"@type":"child-device","@parent":"device/main/service/edge-agent"}"#;
    sys.publish("te/device/c2//", payload, true).await;
    assert_eq!(
        sys.published().await,
        msgs(&[(
            ERRORS,
            "te/device/c2//: Entity: 'device/main/service/edge-agent' can not be a parent of 'device/c2//' because it is a service. Only devices can be parents"
        )])
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/c2").await,
        not_found("device/c2//")
    );
    // A rejected new registration stays on the broker untouched (§4.2).
    assert_eq!(
        sys.retained("te/device/c2//").await,
        msgs(&[("te/device/c2//", payload)])
    );
}

/// #19
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_is_rejected() {
    let sys = System::start().await;
    sys.publish("te/device/other//", r#"{"@type":"device"}"#, true)
        .await;
    assert_eq!(
        sys.published().await,
        msgs(&[(
            ERRORS,
            "te/device/other//: The main device was already registered at topic device/main//"
        )])
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/other").await,
        not_found("device/other//")
    );
}

const MAIN_METADATA: &str = r#"{"@topic-id":"device/main//","@type":"device"}"#;

/// #20, first message
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_the_main_device_is_refused_and_its_registration_republished() {
    let sys = System::start().await;
    sys.publish("te/device/child1//", CHILD, true).await;
    sys.publish("te/device/main//", "", true).await;
    assert_eq!(
        sys.published().await,
        msgs(&[
            (
                ERRORS,
                "te/device/main//: The main device can not be deregistered"
            ),
            ("te/device/main//", r#"{"@type":"device"}"#),
        ])
    );
    assert_eq!(
        sys.retained("te/device/main//").await,
        msgs(&[("te/device/main//", r#"{"@type":"device"}"#)])
    );
    assert_eq!(
        sys.ids("").await,
        [
            "device/main//",
            "device/child1//",
            "device/main/service/edge-agent"
        ]
    );
}

/// #20, second message
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_typing_the_main_device_is_refused_and_its_registration_republished() {
    let sys = System::start().await;
    sys.publish("te/device/main//", CHILD, true).await;
    assert_eq!(
        sys.published().await,
        msgs(&[
            (
                ERRORS,
                "te/device/main//: Updating the entity type of device/main// is not supported"
            ),
            ("te/device/main//", r#"{"@type":"device"}"#),
        ])
    );
    assert_eq!(
        sys.retained("te/device/main//").await,
        msgs(&[("te/device/main//", r#"{"@type":"device"}"#)])
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/main").await,
        (200, serde_json::from_str(MAIN_METADATA).expect("JSON"))
    );
}

/// #22
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistration_clears_every_retained_topic_then_the_registration() {
    let sys = System::start().await;
    sys.publish("te/device/child0//", CHILD, true).await;
    for (channel, payload) in [
        ("twin/y", "true"),
        ("twin/x", "9"),
        ("a/high_temp", r#"{"severity":"major","text":"hot"}"#),
        ("cmd/restart", "{}"),
        ("cmd/restart/123", r#"{"status":"executing"}"#),
        ("status/health", r#"{"status":"up"}"#),
    ] {
        sys.publish(&format!("te/device/child0///{channel}"), payload, true)
            .await;
    }
    sys.publish("te/device/child0///m/env", r#"{"t":1}"#, false)
        .await;
    sys.publish("te/device/child0///e/login", r#"{"text":"bob"}"#, false)
        .await;
    assert_eq!(sys.published().await, []);
    assert_eq!(sys.retained("te/device/child0/#").await.len(), 7);

    sys.publish("te/device/child0//", "", true).await;
    assert_eq!(
        sys.published().await,
        msgs(&[
            ("te/device/child0///twin/x", ""),
            ("te/device/child0///twin/y", ""),
            ("te/device/child0///a/high_temp", ""),
            ("te/device/child0///cmd/restart", ""),
            ("te/device/child0///cmd/restart/123", ""),
            ("te/device/child0///status/health", ""),
            ("te/device/child0//", ""),
        ])
    );
    assert_eq!(sys.retained("te/device/child0/#").await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/child0").await,
        not_found("device/child0//")
    );
}

/// #28
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_fragment_from_mqtt_is_stored_and_deleted_without_publishing() {
    let sys = System::start().await;
    sys.publish("te/device/main///twin/x", "9", true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/main///twin").await,
        (200, json!({"x":9}))
    );
    sys.publish("te/device/main///twin/x", "", true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/main///twin").await,
        (200, json!({}))
    );
}

/// #32
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_health_1_and_0_mean_up_and_down_and_an_empty_status_is_unknown() {
    let sys = System::start().await;
    let bridge = "te/device/main/service/mosquitto-c8y-bridge";
    let state = "/te/v1/entities/device/main/service/mosquitto-c8y-bridge/state";
    sys.publish(&format!("{bridge}/status/health"), "1", true)
        .await;
    assert_eq!(
        sys.published().await,
        msgs(&[
            (
                bridge,
                r#"{"@parent":"device/main//","@type":"service","name":"mosquitto-c8y-bridge"}"#
            ),
            (
                "te/device/main/service/mosquitto-c8y-bridge/twin/name",
                r#""mosquitto-c8y-bridge""#
            ),
        ])
    );
    assert_eq!(sys.get(state).await.1["health"]["status"], "up");
    sys.publish(&format!("{bridge}/status/health"), "0", true)
        .await;
    assert_eq!(sys.published().await, []);
    assert_eq!(sys.get(state).await.1["health"]["status"], "down");

    sys.publish("te/device/main/service/app", r#"{"@type":"service"}"#, true)
        .await;
    sys.publish(
        "te/device/main/service/app/status/health",
        r#"{"status":""}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    let (_, app) = sys
        .get("/te/v1/entities/device/main/service/app/state")
        .await;
    assert_eq!(app["health"]["status"], "unknown");
    assert_eq!(app["health"]["raw"], r#"{"status":""}"#);
}

/// #33
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_is_active_until_an_empty_message_clears_it() {
    let sys = System::start().await;
    let state = "/te/v1/entities/device/main///state";
    sys.publish(
        "te/device/main///a/temp",
        r#"{"severity":"major","text":"hot","time":1701949168}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    let alarm = &sys.get(state).await.1["alarms"]["temp"];
    assert_eq!(alarm["payload"], json!({"severity":"major","text":"hot"}));
    assert_eq!(alarm["time"], "2023-12-07T11:39:28.000Z");

    sys.publish("te/device/main///a/temp", "", true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(sys.get(state).await.1["alarms"], json!({}));
}

/// #34. The three rejections are made on three entities: reports are rate limited per (kind,
/// topic id), and each one is asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measurement_is_stored_and_invalid_ones_are_rejected_without_losing_values() {
    let sys = System::start().await;
    sys.publish("te/device/m2//", CHILD, true).await;
    sys.publish("te/device/m3//", CHILD, true).await;
    let good = r#"{"time":"2021-04-30T17:03:14.123+02:00","t":24,"c":{"x":1,"y":2.5}}"#;
    let entities = ["device/main//", "device/m2//", "device/m3//"];
    for id in entities {
        sys.publish(&format!("te/{id}/m/env"), good, false).await;
    }
    assert_eq!(sys.published().await, []);
    let stored = json!({"env":{
        "c":{"x":{"value":1,"time":"2021-04-30T15:03:14.123Z"},
             "y":{"value":2.5,"time":"2021-04-30T15:03:14.123Z"}},
        "t":{"value":24,"time":"2021-04-30T15:03:14.123Z"}}});
    for id in entities {
        let (_, state) = sys.get(&format!("/te/v1/entities/{id}/state")).await;
        assert_eq!(state["measurements"], stored, "{id}");
    }

    sys.publish("te/device/main///m/env", "{}", false).await;
    sys.publish("te/device/m2///m/env", r#"{"t":true}"#, false)
        .await;
    sys.publish("te/device/m3///m/env", r#"{"time":null,"t":1}"#, false)
        .await;
    assert_eq!(
        sys.published().await,
        msgs(&[
            (
                ERRORS,
                "te/device/main///m/env: Empty Thin Edge measurement: it must contain at least one measurement"
            ),
            (
                ERRORS,
                "te/device/m2///m/env: Unexpected value type for \"t\": expected a number or an object, got a boolean"
            ),
            (
                ERRORS,
                "te/device/m3///m/env: invalid type: null, expected a date formatted as a unix timestamp (as an integer number of seconds) or an ISO-8601 string"
            ),
        ])
    );
    for id in entities {
        let (_, state) = sys.get(&format!("/te/v1/entities/{id}/state")).await;
        assert_eq!(state["measurements"], stored, "{id}");
    }
}

/// #35
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_without_status_is_init_and_a_non_object_config_is_ignored() {
    let sys = System::start().await;
    sys.publish("te/device/main///cmd/restart/42", r#"{"foo":1}"#, true)
        .await;
    sys.publish("te/device/main///config", r#"{"a":1}"#, true)
        .await;
    assert_eq!(sys.published().await, []);
    sys.publish("te/device/main///config", r#""str""#, true)
        .await;
    assert_eq!(sys.published().await, []);
    let (_, state) = sys.get("/te/v1/entities/device/main///state").await;
    assert_eq!(
        state["commands"],
        json!({"restart":{"42":{"foo":1,"status":"init"}}})
    );
    assert_eq!(state["config"], json!({"a":1}));
}

/// #36
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_at_keys_are_ignored_and_never_become_twin_keys() {
    let sys = System::start().await;
    sys.publish(
        "te/device/c3//",
        r#"{"@type":"child-device","@custom":1,"name":"n"}"#,
        true,
    )
    .await;
    assert_eq!(
        sys.published().await,
        msgs(&[("te/device/c3///twin/name", r#""n""#)])
    );
    assert_eq!(
        sys.retained("te/device/c3///twin/#").await,
        msgs(&[("te/device/c3///twin/name", r#""n""#)])
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/c3///twin").await,
        (200, json!({"name":"n"}))
    );
    assert_eq!(
        sys.get("/te/v1/entities/device/c3").await,
        (
            200,
            json!({"@topic-id":"device/c3//","@parent":"device/main//","@type":"child-device"})
        )
    );
}

/// #43
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_of_the_main_device_is_answered_by_the_agent_and_never_stored() {
    let sys = System::start().await;
    // The answer's time is no earlier than the request (§8); the agent rounds to milliseconds.
    let asked = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as f64
        / 1000.0;
    sys.publish("te/device/main///cmd/health/check", "", false)
        .await;
    let answer = sys.bus.expect(AGENT_HEALTH).await;
    let health = answer.payload_json();
    assert_eq!(health["status"], "up");
    assert_eq!(health["pid"], std::process::id());
    let time = health["time"].as_f64().expect("a float time");
    assert!(time >= asked, "answered at {time}, asked at {asked}");
    assert_eq!(health.as_object().map(|o| o.len()), Some(3), "{health}");
    assert_eq!(sys.published().await, []);
    let kept = sys.retained(AGENT_HEALTH).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&kept[0].1).expect("JSON")["status"],
        "up"
    );
    let (_, state) = sys.get("/te/v1/entities/device/main///state").await;
    assert_eq!(state["commands"], json!({}));
    assert_eq!(sys.retained("te/device/main///cmd/#").await, []);
}
