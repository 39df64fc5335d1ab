//! The "Bad input" list of issue #2, end to end against a real mosquitto (spec/twin.md §9): for
//! each kind of bad input the agent answers as the spec says, keeps every existing entity and
//! its state, and keeps serving other clients.
//!
//! Every test starts from the same baseline (`keep` with a service and data on every retained
//! channel) and ends by comparing it with what the agent still holds. Rejections are reported
//! on `te/errors` at most once a minute per (kind, topic id) and 10 times a second overall
//! (§2.6), so each expected report is for another (kind, entity) pair.

mod common;

use std::time::Duration;

use common::agent::{TestAgent, AGENT_REGISTRATION, AGENT_TOPIC};
use common::http;
use common::mosquitto::Broker;
use common::mqtt::{msgs, TestClient};
use common::twin::{caught_up_within, split_errors, System, ERRORS};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEEP: &str = "te/device/keep//";
const KEEP_REGISTRATION: &str = r#"{"@type":"child-device","name":"keep"}"#;
const KEEP_STATE: &str = "/te/v1/entities/device/keep///state";
const SVC_STATE: &str = "/te/v1/entities/device/keep/service/svc/state";
const MIB: usize = 1024 * 1024;

/// What the baseline looked like before the bad input.
struct Baseline {
    ids: Vec<String>,
    keep: Value,
    svc: Value,
}

/// A system with the baseline entities: `device/keep//` (inline twin data, a twin fragment,
/// config, an alarm, a capability, a command, a measurement and an event) and its service
/// `device/keep/service/svc` (healthy).
async fn with_baseline() -> (System, Baseline) {
    let sys = System::start().await;
    sys.publish(KEEP, KEEP_REGISTRATION, true).await;
    sys.publish("te/device/keep/service/svc", r#"{"@type":"service"}"#, true)
        .await;
    for (channel, payload, retain) in [
        ("twin/k", "1", true),
        ("config", r#"{"a":1}"#, true),
        ("a/temp", r#"{"severity":"major","text":"hot"}"#, true),
        ("cmd/restart", "{}", true),
        ("cmd/restart/1", r#"{"status":"executing"}"#, true),
        ("m/env", r#"{"t":1}"#, false),
        ("e/login", r#"{"text":"bob"}"#, false),
    ] {
        sys.publish(&format!("te/device/keep///{channel}"), payload, retain)
            .await;
    }
    sys.publish(
        "te/device/keep/service/svc/status/health",
        r#"{"status":"up"}"#,
        true,
    )
    .await;
    assert_eq!(
        sys.published().await,
        msgs(&[("te/device/keep///twin/name", r#""keep""#)])
    );
    let ids = sys.ids("").await;
    assert_eq!(
        ids,
        [
            "device/main//",
            "device/keep//",
            "device/main/service/edge-agent",
            "device/keep/service/svc"
        ]
    );
    let (_, keep) = sys.get(KEEP_STATE).await;
    assert_eq!(keep["twin"], json!({"k":1,"name":"keep"}));
    assert_eq!(
        keep["alarms"]["temp"]["payload"],
        json!({"severity":"major","text":"hot"})
    );
    let (_, svc) = sys.get(SVC_STATE).await;
    assert_eq!(svc["health"]["status"], "up");
    (sys, Baseline { ids, keep, svc })
}

impl Baseline {
    /// Asserts that the baseline is intact (entities and their whole state documents) and that
    /// another client is still served.
    async fn assert_kept(&self, sys: &System) {
        assert_eq!(sys.ids("").await, self.ids);
        assert_eq!(sys.get(KEEP_STATE).await, (200, self.keep.clone()));
        assert_eq!(sys.get(SVC_STATE).await, (200, self.svc.clone()));
        assert_eq!(sys.get("/readyz").await, (200, json!({"status":"ready"})));
        sys.still_serves_others("another-client").await;
    }
}

fn error(topic: &str, reason: &str) -> String {
    format!("{topic}: {reason}")
}

fn republished_keep() -> (String, String) {
    (KEEP.to_owned(), KEEP_REGISTRATION.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_rejected_on_json_channels_and_health_becomes_unknown() {
    let (sys, baseline) = with_baseline().await;
    let new = b"{\"@type\":\"child-device\",\"name\":\"\xff\"}".to_vec();
    sys.publish("te/device/utf8//", new.clone(), true).await;
    sys.publish(KEEP, b"{\"@type\":\"child-\xc3\x28\"}".to_vec(), true)
        .await;
    sys.publish("te/device/keep///twin/k", b"\"\xff\"".to_vec(), true)
        .await;
    sys.publish(
        "te/device/keep///m/env",
        b"{\"t\":1,\"\xfe\":2}".to_vec(),
        false,
    )
    .await;
    sys.publish(
        "te/device/keep///a/temp",
        b"{\"text\":\"\xff\"}".to_vec(),
        true,
    )
    .await;
    // Config and health are not reported (§9).
    sys.publish(
        "te/device/keep///config",
        b"{\"a\":\"\xff\"}".to_vec(),
        true,
    )
    .await;
    let (errors, others) = split_errors(sys.published().await);
    assert_eq!(
        errors,
        [
            error("te/device/utf8//", "invalid UTF-8 payload"),
            error(KEEP, "invalid UTF-8 payload"),
            error("te/device/keep///twin/k", "invalid UTF-8 payload"),
            error("te/device/keep///m/env", "invalid UTF-8 payload"),
            error("te/device/keep///a/temp", "invalid UTF-8 payload"),
        ]
    );
    assert_eq!(others, [republished_keep()]);
    assert_eq!(
        sys.get("/te/v1/entities/device/utf8").await,
        (
            404,
            json!({"error":"Entity with topic id: device/utf8// not found"})
        )
    );
    // A rejected new registration stays on the broker untouched; an update is overwritten.
    let kept = sys.retained("te/device/utf8//").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].1.as_bytes(),
        String::from_utf8_lossy(&new).as_bytes()
    );
    assert_eq!(sys.retained(KEEP).await, [republished_keep()]);
    baseline.assert_kept(&sys).await;

    // Health is still accepted, as `unknown`, with the raw text made valid.
    sys.publish(
        "te/device/keep/service/svc/status/health",
        b"\xff\xfe".to_vec(),
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    let (_, svc) = sys.get(SVC_STATE).await;
    assert_eq!(svc["health"]["status"], "unknown");
    assert_eq!(svc["health"]["raw"], "\u{fffd}\u{fffd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_rejected_per_channel_and_the_previous_state_kept() {
    let (sys, baseline) = with_baseline().await;
    sys.publish("te/device/json//", r#"{"@type":"#, true).await;
    sys.publish(KEEP, r#"{"@type":"child-device",}"#, true)
        .await;
    sys.publish("te/device/keep///twin/k", "not json", true)
        .await;
    sys.publish("te/device/keep///m/env", r#"{"t":1"#, false)
        .await;
    sys.publish("te/device/keep///e/login", r#"{"text":"bob""#, false)
        .await;
    sys.publish("te/device/keep///a/temp", r#"{"severity":"#, true)
        .await;
    sys.publish("te/device/keep///cmd/restart", "{", true).await;
    sys.publish("te/device/keep///cmd/restart/1", "[", true)
        .await;
    // A config that is not a JSON object is ignored, not reported (§3.3).
    sys.publish("te/device/keep///config", r#"{"a":"#, true)
        .await;
    let (errors, others) = split_errors(sys.published().await);
    assert_eq!(
        errors,
        [
            error(
                "te/device/json//",
                "EOF while parsing a value at line 1 column 9"
            ),
            error(KEEP, "trailing comma at line 1 column 25"),
            error(
                "te/device/keep///twin/k",
                "expected ident at line 1 column 2"
            ),
            error(
                "te/device/keep///m/env",
                "EOF while parsing an object at line 1 column 6"
            ),
            error(
                "te/device/keep///e/login",
                "EOF while parsing an object at line 1 column 13"
            ),
            error(
                "te/device/keep///a/temp",
                "EOF while parsing a value at line 1 column 12"
            ),
            error(
                "te/device/keep///cmd/restart",
                "EOF while parsing an object at line 1 column 1"
            ),
            error(
                "te/device/keep///cmd/restart/1",
                "EOF while parsing a list at line 1 column 1"
            ),
        ]
    );
    assert_eq!(others, [republished_keep()]);
    assert_eq!(
        sys.get("/te/v1/entities/device/json").await,
        (
            404,
            json!({"error":"Entity with topic id: device/json// not found"})
        )
    );
    assert_eq!(sys.retained(KEEP).await, [republished_keep()]);
    baseline.assert_kept(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_or_a_string_where_an_object_is_expected_is_rejected() {
    let (sys, baseline) = with_baseline().await;
    sys.publish("te/device/array//", r#"[{"@type":"child-device"}]"#, true)
        .await;
    sys.publish(KEEP, r#""child-device""#, true).await;
    sys.publish("te/device/keep///m/env", "[1,2]", false).await;
    sys.publish("te/device/keep///e/login", r#""user bob""#, false)
        .await;
    sys.publish("te/device/keep///a/temp", "[]", true).await;
    sys.publish("te/device/keep///cmd/restart", r#""yes""#, true)
        .await;
    sys.publish("te/device/keep///cmd/restart/1", "[1]", true)
        .await;
    // Ignored, not reported (§3.3).
    sys.publish("te/device/keep///config", "[1]", true).await;
    sys.publish("te/device/keep///config", r#""str""#, true)
        .await;
    let sequence = "invalid type: sequence, expected a map";
    let (errors, others) = split_errors(sys.published().await);
    assert_eq!(
        errors,
        [
            error("te/device/array//", sequence),
            error(
                KEEP,
                r#"invalid type: string "child-device", expected a map"#
            ),
            error("te/device/keep///m/env", sequence),
            error(
                "te/device/keep///e/login",
                r#"invalid type: string "user bob", expected a map"#
            ),
            error("te/device/keep///a/temp", sequence),
            error(
                "te/device/keep///cmd/restart",
                r#"invalid type: string "yes", expected a map"#
            ),
            error("te/device/keep///cmd/restart/1", sequence),
        ]
    );
    assert_eq!(others, [republished_keep()]);
    assert_eq!(sys.retained(KEEP).await, [republished_keep()]);
    baseline.assert_kept(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_an_unknown_or_missing_type_is_rejected() {
    let (sys, baseline) = with_baseline().await;
    sys.publish("te/device/gw//", r#"{"@type":"gateway"}"#, true)
        .await;
    sys.publish("te/device/cased//", r#"{"@type":"Child-Device"}"#, true)
        .await;
    sys.publish(KEEP, r#"{"name":"renamed"}"#, true).await;
    let (errors, others) = split_errors(sys.published().await);
    assert_eq!(
        errors,
        [
            error(
                "te/device/gw//",
                "unknown variant `gateway`, expected one of `device`, `child-device`, `service`"
            ),
            error(
                "te/device/cased//",
                "unknown variant `Child-Device`, expected one of `device`, `child-device`, `service`"
            ),
            error(KEEP, "missing field `@type`"),
        ]
    );
    assert_eq!(others, [republished_keep()]);
    for id in ["device/gw//", "device/cased//"] {
        assert_eq!(
            sys.get(&format!("/te/v1/entities/{id}")).await,
            (
                404,
                json!({"error":format!("Entity with topic id: {id} not found")})
            )
        );
    }
    baseline.assert_kept(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_of_parents_is_refused_and_the_tree_kept() {
    let (sys, _) = with_baseline().await;
    sys.publish("te/device/a//", r#"{"@type":"child-device"}"#, true)
        .await;
    sys.publish(
        "te/device/b//",
        r#"{"@type":"child-device","@parent":"device/a//"}"#,
        true,
    )
    .await;
    sys.publish(
        "te/device/c//",
        r#"{"@type":"child-device","@parent":"device/b//"}"#,
        true,
    )
    .await;
    assert_eq!(sys.published().await, []);
    let baseline = Baseline {
        ids: sys.ids("").await,
        keep: sys.get(KEEP_STATE).await.1,
        svc: sys.get(SVC_STATE).await.1,
    };

    sys.publish(
        "te/device/a//",
        r#"{"@type":"child-device","@parent":"device/c//"}"#,
        true,
    )
    .await;
    sys.publish(
        "te/device/self//",
        r#"{"@type":"child-device","@parent":"device/self//"}"#,
        true,
    )
    .await;
    // Two unknown entities waiting for each other stay pending, harmlessly (§4.4).
    sys.publish(
        "te/device/x//",
        r#"{"@type":"child-device","@parent":"device/y//"}"#,
        true,
    )
    .await;
    sys.publish(
        "te/device/y//",
        r#"{"@type":"child-device","@parent":"device/x//"}"#,
        true,
    )
    .await;
    let (errors, others) = split_errors(sys.published().await);
    assert_eq!(
        errors,
        [
            error(
                "te/device/a//",
                "Entity: 'device/c//' can not be a parent of 'device/a//' because 'device/c//' is a descendent of 'device/a//'"
            ),
            error(
                "te/device/self//",
                "Entity: 'device/self//' can not be its own parent"
            ),
        ]
    );
    assert_eq!(
        others,
        [(
            "te/device/a//".to_owned(),
            r#"{"@type":"child-device"}"#.to_owned()
        )]
    );
    assert_eq!(
        sys.retained("te/device/a//").await,
        msgs(&[("te/device/a//", r#"{"@type":"child-device"}"#)])
    );
    for id in ["device/self//", "device/x//", "device/y//"] {
        assert_eq!(
            sys.get(&format!("/te/v1/entities/{id}")).await,
            (
                404,
                json!({"error":format!("Entity with topic id: {id} not found")})
            )
        );
    }

    let patch = http::patch_json(
        &sys.agent.url("/te/v1/entities/device/a"),
        &json!({"@parent":"device/c//"}),
    )
    .await;
    http::assert_error(&patch, 400, "Entity: 'device/c//' can not be a parent of 'device/a//' because 'device/c//' is a descendent of 'device/a//'");
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.ids("?root=device/a//").await,
        ["device/a//", "device/b//", "device/c//"]
    );
    baseline.assert_kept(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_typing_an_entity_is_refused_and_it_keeps_its_type_and_subtree() {
    let (sys, baseline) = with_baseline().await;
    sys.publish(KEEP, r#"{"@type":"service","name":"keep"}"#, true)
        .await;
    sys.publish(
        "te/device/keep/service/svc",
        r#"{"@type":"child-device"}"#,
        true,
    )
    .await;
    let (errors, others) = split_errors(sys.published().await);
    assert_eq!(
        errors,
        [
            error(
                KEEP,
                "Updating the entity type of device/keep// is not supported"
            ),
            error(
                "te/device/keep/service/svc",
                "Updating the entity type of device/keep/service/svc is not supported"
            ),
        ]
    );
    assert_eq!(
        others,
        [
            republished_keep(),
            (
                "te/device/keep/service/svc".to_owned(),
                r#"{"@type":"service"}"#.to_owned()
            )
        ]
    );
    let patch = http::patch_json(
        &sys.agent.url("/te/v1/entities/device/keep"),
        &json!({"@type":"service"}),
    )
    .await;
    http::assert_error(
        &patch,
        400,
        "unknown field `@type`, expected `@parent` or `@health` at line 1 column 8",
    );
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/keep").await,
        (
            200,
            json!({"@topic-id":"device/keep//","@parent":"device/main//","@type":"child-device"})
        )
    );
    baseline.assert_kept(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_main_device_or_the_agent_is_refused_and_nothing_is_lost() {
    let (sys, baseline) = with_baseline().await;
    sys.publish("te/device/main//", "", true).await;
    sys.publish(AGENT_TOPIC, "", true).await;
    let (errors, others) = split_errors(sys.published().await);
    assert_eq!(
        errors,
        [
            error(
                "te/device/main//",
                "The main device can not be deregistered"
            ),
            error(
                AGENT_TOPIC,
                "The entity: device/main/service/edge-agent is managed by edge-agent and can not be modified"
            ),
        ]
    );
    assert_eq!(
        others,
        [
            (
                "te/device/main//".to_owned(),
                r#"{"@type":"device"}"#.to_owned()
            ),
            (AGENT_TOPIC.to_owned(), AGENT_REGISTRATION.to_owned())
        ]
    );
    assert_eq!(
        sys.retained("te/device/main//").await,
        msgs(&[("te/device/main//", r#"{"@type":"device"}"#)])
    );
    assert_eq!(
        sys.retained(AGENT_TOPIC).await,
        msgs(&[(AGENT_TOPIC, AGENT_REGISTRATION)])
    );
    for path in ["device/main//", "device/main"] {
        let deleted = http::delete(&sys.agent.url(&format!("/te/v1/entities/{path}"))).await;
        assert_eq!(
            (deleted.status, deleted.json()),
            (
                400,
                json!({"error":"The main device can not be deregistered"})
            ),
            "{path}"
        );
    }
    let deleted = http::delete(
        &sys.agent
            .url("/te/v1/entities/device/main/service/edge-agent"),
    )
    .await;
    http::assert_error(&deleted, 400, "The entity: device/main/service/edge-agent is managed by edge-agent and can not be modified");
    assert_eq!(sys.published().await, []);
    baseline.assert_kept(&sys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_with_another_root_twelve_levels_or_no_valid_channel_are_ignored_silently() {
    let (sys, baseline) = with_baseline().await;
    // Never delivered to the agent, nor to the observer: published by the input client only.
    for topic in [
        "tx/device/keep///twin/k",
        "TE/device/keep///twin/k",
        "tedge/device/keep///twin/k",
    ] {
        sys.input.publish(topic, "2", true).await;
    }
    // Twelve levels: a channel the grammar does not know (§2.4).
    let twelve = [
        "te/device/keep///twin/k/a/b/c/d/e",
        "te/device/keep///m/env/a/b/c/d/e",
        "te/a/b/c/d/e/f/g/h/i/j/k",
        "te/device/new12///a/b/c/d/e/f/g",
    ];
    for topic in twelve {
        assert_eq!(topic.split('/').count(), 12, "{topic}");
        sys.publish(topic, r#"{"@type":"child-device","t":2}"#, true)
            .await;
    }
    // Other topics outside the grammar (§2.1, §2.4): also ignored, never reported.
    for topic in [
        "te/device/keep///",
        "te/device/keep////",
        "te/////m/t",
        "te/device/keep///twin",
        "te/device/keep///m",
        "te/device/keep///cmd/",
        "te/device/keep///cmd/restart/1/2",
        "te/device/keep///incorrect_category/x",
    ] {
        sys.publish(topic, r#"{"@type":"service","t":2}"#, true)
            .await;
    }
    assert_eq!(sys.published().await, []);
    // An empty twin key is a twin channel, whose key rule rejects it (§2.5 #17, §3.3).
    sys.publish("te/device/keep///twin/", "2", true).await;
    assert_eq!(
        sys.published().await,
        msgs(&[(
            ERRORS,
            "te/device/keep///twin/: Invalid twin key: ''. Keys that are empty, containing '/' or starting with '@' are not allowed"
        )])
    );
    for id in ["a/b/c/d", "device/new12//"] {
        assert_eq!(
            sys.get(&format!("/te/v1/entities/{id}")).await,
            (
                404,
                json!({"error":format!("Entity with topic id: {id} not found")})
            )
        );
    }
    baseline.assert_kept(&sys).await;

    // Later messages are still applied.
    sys.publish("te/device/keep///twin/later", "3", true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/keep///twin").await,
        (200, json!({"k":1,"later":3,"name":"keep"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mib_payload_is_dropped_without_losing_the_connection() {
    let (sys, baseline) = with_baseline().await;
    let pad = "x".repeat(20 * MIB);
    // Valid payloads: if they were not dropped, they would be applied.
    sys.publish("te/device/keep///twin/big", format!("\"{pad}\""), true)
        .await;
    sys.publish(
        "te/device/big//",
        format!(r#"{{"@type":"child-device","pad":"{pad}"}}"#),
        true,
    )
    .await;
    sys.publish(
        "te/device/keep///m/env",
        format!(r#"{{"t":2,"pad":"{pad}"}}"#),
        false,
    )
    .await;
    // Nothing published: no report, and no new sync marker (a reconnection would send one).
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/big").await,
        (
            404,
            json!({"error":"Entity with topic id: device/big// not found"})
        )
    );
    baseline.assert_kept(&sys).await;

    sys.publish("te/device/keep///twin/after", "1", true).await;
    assert_eq!(sys.published().await, []);
    assert_eq!(
        sys.get("/te/v1/entities/device/keep///twin").await,
        (200, json!({"after":1,"k":1,"name":"keep"}))
    );
    // The broker saw one connection of the agent, never closed.
    let log = sys.broker.log();
    assert_eq!(log.matches(" as edge-agent (").count(), 1, "{log}");
    assert!(!log.contains("lient edge-agent"), "{log}");
}

/// Publishes every (topic, payload) retained at QoS 1, many in flight at once, in order.
async fn publish_all(client: &TestClient, messages: impl IntoIterator<Item = (String, String)>) {
    let messages: Vec<(String, String)> = messages.into_iter().collect();
    for chunk in messages.chunks(5_000) {
        join_all(
            chunk
                .iter()
                .map(|(topic, payload)| client.publish(topic, payload.clone(), true)),
        )
        .await;
    }
}

fn store_full(limit: usize) -> String {
    format!("The entity store is full: the limit of {limit} entities has been reached")
}

/// Scaled down from the issue's 200,000 registrations against a limit of 100,000: a limit of
/// 1000 and 2000 registrations show every rule; the full scale runs below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_entities_beyond_max_entities_are_rejected_everywhere_and_existing_ones_still_update() {
    const LIMIT: usize = 1000;
    let sys = System::start_with(|c| c.twin.max_entities = LIMIT).await;
    let errors = TestClient::connect(sys.broker.port()).await;
    errors.subscribe(ERRORS).await;
    let child = r#"{"@type":"child-device"}"#;
    // A pending child, released (and refused) when its parent takes the last place.
    sys.input
        .publish(
            "te/device/late-child//",
            r#"{"@type":"child-device","@parent":"device/late-parent//"}"#,
            true,
        )
        .await;
    let name = |i: usize| format!("te/device/c{i:04}//");
    publish_all(
        &sys.input,
        (0..LIMIT - 3).map(|i| (name(i), child.to_owned())),
    )
    .await;
    sys.input
        .publish("te/device/late-parent//", child, true)
        .await;
    // Auto-registration is refused too.
    sys.input
        .publish("te/device/auto///m/t", r#"{"a":1}"#, false)
        .await;
    publish_all(
        &sys.input,
        (LIMIT - 3..2000).map(|i| (name(i), child.to_owned())),
    )
    .await;
    sys.caught_up().await;

    let full = store_full(LIMIT);
    for topic in [
        "te/device/late-child//",
        "te/device/auto///m/t",
        &name(LIMIT - 3),
    ] {
        errors
            .expect_payload(ERRORS, format!("{topic}: {full}"))
            .await;
    }
    // The 10-per-second limit may have let a few more through: each names a refused child.
    let mut last = LIMIT - 3;
    for m in errors.collect_until_marker().await {
        let text = m.payload_str();
        let index = text
            .strip_prefix("te/device/c")
            .and_then(|t| t.strip_suffix(&format!("//: {full}")))
            .and_then(|i| i.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("unexpected report: {text}"));
        assert!(index > last, "{text}");
        last = index;
    }

    let ids = sys.ids("").await;
    assert_eq!(ids.len(), LIMIT);
    let mut expected = vec!["device/main//".to_owned()];
    expected.extend((0..LIMIT - 3).map(|i| format!("device/c{i:04}//")));
    expected.push("device/late-parent//".to_owned());
    expected.push("device/main/service/edge-agent".to_owned());
    assert_eq!(ids, expected);

    let posted = http::post_json(
        &sys.agent.url("/te/v1/entities"),
        &json!({"@topic-id":"device/posted//","@type":"child-device"}),
    )
    .await;
    assert_eq!(
        (posted.status, posted.json()),
        (507, json!({ "error": full }))
    );

    // Existing entities still update, over MQTT and HTTP.
    sys.input
        .publish("te/device/c0000///twin/k", "1", true)
        .await;
    sys.input
        .publish(
            "te/device/c0001//",
            r#"{"@type":"child-device","name":"n"}"#,
            true,
        )
        .await;
    let put = http::put_json(
        &sys.agent.url("/te/v1/entities/device/c0002///twin/k"),
        &json!(2),
    )
    .await;
    assert_eq!((put.status, put.json()), (200, json!(2)));
    sys.caught_up().await;
    for (id, twin) in [
        ("c0000", json!({"k":1})),
        ("c0001", json!({"name":"n"})),
        ("c0002", json!({"k":2})),
    ] {
        assert_eq!(
            sys.get(&format!("/te/v1/entities/device/{id}///twin"))
                .await,
            (200, twin),
            "{id}"
        );
    }
    assert_eq!(sys.ids("").await, expected);
}

/// The issue's own numbers: 200,000 registrations against the default limit of 100,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10-20 s in a debug build on a 2-core machine, which starves the parallel tests' 10 s \
            waits; run alone with `cargo test --test bad_input -- --ignored`"]
async fn two_hundred_thousand_registrations_stop_at_the_default_limit_of_one_hundred_thousand() {
    const LIMIT: usize = 100_000;
    let broker = Broker::start().await;
    let agent = TestAgent::start(&broker).await;
    assert_eq!(agent.config.twin.max_entities, LIMIT);
    let errors = TestClient::connect(broker.port()).await;
    errors.subscribe(ERRORS).await;
    let mut options = TestClient::options(broker.port());
    options.set_inflight(1000);
    let input = TestClient::connect_with(options).await;
    let child = r#"{"@type":"child-device"}"#;
    publish_all(
        &input,
        (0..2 * LIMIT).map(|i| (format!("te/device/n{i:06}//"), child.to_owned())),
    )
    .await;
    caught_up_within(&broker, Duration::from_secs(60)).await;

    errors
        .expect_payload(
            ERRORS,
            format!("te/device/n{:06}//: {}", LIMIT - 2, store_full(LIMIT)),
        )
        .await;
    let listing = http::get(&agent.url("/te/v1/entities")).await;
    assert_eq!(listing.status, 200);
    let listing = listing.json();
    let ids = listing.as_array().expect("an array");
    assert_eq!(ids.len(), LIMIT);
    // Children in byte order: `device/main/service/edge-agent` sorts before `device/n…`.
    assert_eq!(
        ids[LIMIT - 1]["@topic-id"],
        format!("device/n{:06}//", LIMIT - 3)
    );
    let posted = http::post_json(
        &agent.url("/te/v1/entities"),
        &json!({"@topic-id":"device/posted//","@type":"child-device"}),
    )
    .await;
    assert_eq!(posted.status, 507);
    // Existing entities still update, over HTTP and MQTT.
    let put = http::put_json(
        &agent.url("/te/v1/entities/device/n000000///twin/k"),
        &json!(1),
    )
    .await;
    assert_eq!((put.status, put.json()), (200, json!(1)));
    input.publish("te/device/n000001///twin/k", "2", true).await;
    caught_up_within(&broker, Duration::from_secs(60)).await;
    let twin = http::get(&agent.url("/te/v1/entities/device/n000001///twin")).await;
    assert_eq!((twin.status, twin.json()), (200, json!({"k":2})));
}

/// `"xx…x"`: a JSON string body of exactly `len` bytes.
fn json_string_of(len: usize) -> String {
    format!("\"{}\"", "x".repeat(len - 2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_over_1_mib_is_refused_with_413_and_changes_nothing() {
    let (sys, baseline) = with_baseline().await;
    let too_large = json!({"error":"Failed to buffer the request body: length limit exceeded"});
    let over = json_string_of(MIB + 1);
    let map_over = format!(r#"{{"big":{}}}"#, json_string_of(MIB));
    let requests = [
        (
            Method::PUT,
            "/te/v1/entities/device/keep///twin/big",
            over.clone(),
        ),
        (
            Method::PUT,
            "/te/v1/entities/device/keep///twin",
            map_over.clone(),
        ),
        (
            Method::PATCH,
            "/te/v1/entities/device/keep",
            map_over.clone(),
        ),
        (Method::POST, "/te/v1/entities", map_over),
    ];
    for (method, path, body) in requests {
        let response = http::send(
            http::client()
                .request(method.clone(), sys.agent.url(path))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(
            (response.status, response.json()),
            (413, too_large.clone()),
            "{method} {path}"
        );
    }
    // Without a Content-Length, the limit applies while reading.
    let (status, body) = chunked_put(
        &sys.agent.url("/te/v1/entities/device/keep///twin/big"),
        over.as_bytes(),
    )
    .await;
    assert_eq!((status, body), (413, too_large));
    assert_eq!(sys.published().await, []);
    baseline.assert_kept(&sys).await;

    // Exactly 1 MiB is accepted.
    let limit = json_string_of(MIB);
    let put = http::request(
        Method::PUT,
        &sys.agent.url("/te/v1/entities/device/keep///twin/big"),
        limit.clone(),
    )
    .await;
    assert_eq!(put.status, 200);
    assert!(put.body == limit.as_bytes(), "the echo differs");
    assert_eq!(
        sys.published().await,
        [("te/device/keep///twin/big".to_owned(), limit)]
    );
}

/// `PUT url` with a chunked body over a raw socket: status and JSON body of the answer. The
/// body is written by another task, since the server may answer before reading it all.
async fn chunked_put(url: &str, body: &[u8]) -> (u16, Value) {
    let url = reqwest::Url::parse(url).expect("a URL");
    let addr = format!(
        "{}:{}",
        url.host_str().expect("a host"),
        url.port().expect("a port")
    );
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect to the agent");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        url.path()
    );
    let body = body.to_vec();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(64 * 1024) {
            writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            writer.write_all(chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await?;
        writer.flush().await
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                // A reset after the answer was read is fine; before it, the parse below fails.
                Err(_) => break,
            }
            if complete_response(&answer) {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no complete answer within 10 s");
    writing.abort();
    parse_response(&answer)
}

fn split_response(raw: &[u8]) -> Option<(&str, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    Some((head, &raw[end + 4..]))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

fn complete_response(raw: &[u8]) -> bool {
    split_response(raw)
        .and_then(|(head, body)| content_length(head).map(|n| body.len() >= n))
        .unwrap_or(false)
}

fn parse_response(raw: &[u8]) -> (u16, Value) {
    let (head, body) = split_response(raw).unwrap_or_else(|| {
        panic!(
            "no HTTP answer: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(300)])
        )
    });
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length = content_length(head).unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let json = serde_json::from_slice(&body[..length]).expect("a JSON body");
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_url_path_is_answered_with_the_spec_error_and_nothing_changes() {
    let (sys, baseline) = with_baseline().await;
    let invalid_topic = "An entity topic identifier must be a valid MQTT topic";
    let key_rule = "Keys that are empty, containing '/' or starting with '@' are not allowed";
    let cases: Vec<(&str, u16, String)> = vec![
        ("/te/v1/entities/device", 404, "Not Found".into()),
        ("/te/v1/entities/device/keep///", 404, "Not Found".into()),
        ("/te/v1/entities/device/+//", 400, invalid_topic.into()),
        ("/te/v1/entities/device/%2B//", 400, invalid_topic.into()),
        ("/te/v1/entities/device/%23/x/y", 400, invalid_topic.into()),
        ("/te/v1/entities/device%2Fkeep/x", 400, invalid_topic.into()),
        ("/te/v1/entities/device/ke%00ep", 400, invalid_topic.into()),
        ("/te/v1/entities/%ff/x", 400, invalid_topic.into()),
        (
            "/te/v1/entities////",
            400,
            "An entity topic identifier must have at least one non-empty segment".into(),
        ),
        (
            "/te/v1/entities/a/b/c/d/e",
            404,
            "Actions on channel: e are not supported".into(),
        ),
        (
            "/te/v1/entities/a/b/c/d/e/f/g/h/i/j/k/l",
            404,
            "Actions on channel: e are not supported".into(),
        ),
        (
            "/te/v1/entities/device/keep///cmd/restart",
            404,
            "Actions on channel: cmd are not supported".into(),
        ),
        (
            "/te/v1/entities/device/keep///twin/a/b",
            400,
            format!("Invalid twin key: 'a/b'. {key_rule}"),
        ),
        (
            "/te/v1/entities/device/keep///twin/",
            400,
            format!("Invalid twin key: ''. {key_rule}"),
        ),
        (
            "/te/v1/entities/device/keep/twin",
            404,
            "Entity with topic id: device/keep/twin/ not found".into(),
        ),
        (
            "/te/v1/entities?root=a/b/c/d/e",
            400,
            "An entity topic identifier has at most 4 segments".into(),
        ),
    ];
    for (path, status, message) in cases {
        assert_eq!(
            sys.get(path).await,
            (status, json!({ "error": message })),
            "GET {path}"
        );
    }
    // Writes on malformed paths are refused the same way, before any change.
    let put = http::put_json(
        &sys.agent.url("/te/v1/entities/device/+///twin/k"),
        &json!(1),
    )
    .await;
    assert_eq!(
        (put.status, put.json()),
        (400, json!({ "error": invalid_topic }))
    );
    let deleted = http::delete(&sys.agent.url("/te/v1/entities/device/keep///twin/a/b")).await;
    http::assert_error(
        &deleted,
        400,
        &format!("Invalid twin key: 'a/b'. {key_rule}"),
    );
    assert_eq!(sys.published().await, []);
    baseline.assert_kept(&sys).await;
}
