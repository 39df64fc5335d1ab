//! Store-level tests of spec/twin.md §10's worked examples: the rules alone, no runtime, no I/O.
//! The same examples run end to end against a real broker in `tests/`.

use serde_json::{json, Value};

use super::api::{Filter, NewEntity, Query, Write};
use super::effects::Publication;
use super::error::TwinError;
use super::payload;
use super::persist::{Op, RawJson};
use super::store::{Durability, Store, StoreConfig};
use super::time::Timestamp;
use crate::topic::EntityTopicId;

const AGENT: &str = "te/device/main/service/edge-agent";
const AGENT_PAYLOAD: &str =
    r#"{"@parent":"device/main//","@type":"service","name":"edge-agent","type":"service"}"#;

fn config() -> StoreConfig {
    StoreConfig {
        root: "te".into(),
        main: EntityTopicId::default_main(),
        agent: "device/main/service/edge-agent".parse().unwrap(),
        auto_register: true,
        max_entities: 100_000,
        max_pending: 10_000,
        events_kept: 10,
        max_section_items: 10_000,
        max_window_held: 10_000,
        pid: 42,
        history: crate::config::HistoryConfig {
            points: 300,
            max_age: std::time::Duration::from_secs(3600),
        },
    }
}

fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2024-05-02T19:12:41.361Z").unwrap()
}

fn id(s: &str) -> EntityTopicId {
    s.parse().unwrap()
}

/// A store after its first sync against an empty broker (§10 start state), effects drained.
fn synced(cfg: StoreConfig) -> Store {
    let mut store = Store::new(cfg);
    store.begin_sync("00".into());
    store.on_message(&format!("{AGENT}/signal/sync-00"), b"{}", now());
    store.take_effects();
    store
}

/// What a snapshot of the store would hold, as the loader reads it back.
fn persisted(store: &mut Store) -> std::collections::BTreeMap<String, RawJson> {
    store
        .snapshot_entries()
        .into_iter()
        .map(|(key, value)| {
            let key = serde_json::to_value(&key).unwrap();
            (
                key.as_str().unwrap().to_string(),
                RawJson::from_serialize(&value).unwrap(),
            )
        })
        .collect()
}

fn fresh() -> Store {
    synced(config())
}

fn send(store: &mut Store, topic: &str, payload: &str) {
    store.on_message(topic, payload.as_bytes(), now());
}

/// Publications since the last call as (topic, payload, retained).
/// Registers `device/<name>//` as a child device, under `parent` (a topic id) when given.
fn child(store: &mut Store, name: &str, parent: Option<&str>) {
    let payload = match parent {
        Some(parent) => format!(r#"{{"@type":"child-device","@parent":"{parent}"}}"#),
        None => r#"{"@type":"child-device"}"#.to_owned(),
    };
    send(store, &format!("te/device/{name}//"), &payload);
}

fn published(store: &mut Store) -> Vec<(String, String, bool)> {
    store
        .take_effects()
        .publications
        .into_iter()
        .map(|p: Publication| {
            (
                p.topic,
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.retain,
            )
        })
        .collect()
}

fn r(topic: &str, payload: &str) -> (String, String, bool) {
    (topic.to_string(), payload.to_string(), true)
}

fn errors(store: &mut Store) -> Vec<String> {
    store
        .take_effects()
        .rejections
        .into_iter()
        .filter(|r| r.report)
        .map(|r| format!("{}: {}", r.topic, r.reason))
        .collect()
}

fn get(store: &Store, query: Query) -> Value {
    let reply = store.query(&query).unwrap();
    serde_json::from_str(&reply.body.unwrap()).unwrap()
}

fn list(store: &Store, root: Option<&str>, parent: Option<&str>) -> Vec<String> {
    let filter = Filter::from_query(root, parent, None).unwrap();
    get(store, Query::List(filter))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["@topic-id"].as_str().unwrap().to_string())
        .collect()
}

fn state(store: &Store, s: &str) -> Value {
    get(store, Query::State(id(s)))
}

#[test]
fn first_sync_announces_the_agent_and_lists_main_and_agent() {
    let mut store = Store::new(config());
    store.begin_sync("9f86d081884c7d659a2feaa0c55ad015".into());
    assert_eq!(
        published(&mut store),
        vec![(
            format!("{AGENT}/signal/sync-9f86d081884c7d659a2feaa0c55ad015"),
            "{}".to_string(),
            false
        )]
    );
    send(&mut store, &format!("{AGENT}/signal/sync-other"), "{}");
    assert!(!store.is_synced());
    send(
        &mut store,
        &format!("{AGENT}/signal/sync-9f86d081884c7d659a2feaa0c55ad015"),
        "{}",
    );
    assert!(store.is_synced());
    let pubs = published(&mut store);
    assert_eq!(
        pubs[..3],
        [
            r(
                AGENT,
                r#"{"@parent":"device/main//","@type":"service","name":"edge-agent","type":"service"}"#
            ),
            r(&format!("{AGENT}/twin/name"), r#""edge-agent""#),
            r(&format!("{AGENT}/twin/type"), r#""service""#),
        ]
    );
    assert_eq!(pubs[3].0, format!("{AGENT}/status/health"));
    let health: Value = serde_json::from_str(&pubs[3].1).unwrap();
    assert_eq!(health["pid"], 42);
    assert_eq!(health["status"], "up");
    assert_eq!(health["time"], json!(now().unix_seconds_f64()));
    assert_eq!(
        get(&store, Query::List(Filter::default())),
        json!([{"@topic-id":"device/main//","@type":"device"},{"@topic-id":"device/main/service/edge-agent","@parent":"device/main//","@type":"service"}])
    );
}

#[test]
fn explicit_registration_publishes_nothing_and_inline_data_goes_to_the_twin() {
    let mut store = fresh();
    child(&mut store, "child1", None);
    assert!(published(&mut store).is_empty());
    assert_eq!(
        get(&store, Query::Entity(id("device/child1"))),
        json!({"@topic-id":"device/child1//","@parent":"device/main//","@type":"child-device"})
    );
    let payload = r#"{"@type":"child-device","@id":"c1","name":"c1","maintenance_mode":true,"maintenance_window":5}"#;
    send(&mut store, "te/device/c1//", payload);
    assert_eq!(
        published(&mut store),
        vec![
            r("te/device/c1///twin/maintenance_mode", "true"),
            r("te/device/c1///twin/maintenance_window", "5"),
            r("te/device/c1///twin/name", r#""c1""#),
        ]
    );
    // #5: the same payload again is a no-op, also after a persistence round trip.
    send(&mut store, "te/device/c1//", payload);
    let fx = store.take_effects();
    assert!(fx.publications.is_empty() && !fx.durable);
    let entries = persisted(&mut store);
    let (mut reloaded, warnings) = Store::load(config(), entries).unwrap();
    assert!(warnings.is_empty());
    reloaded.take_effects();
    reloaded.begin_sync("01".into());
    send(&mut reloaded, &format!("{AGENT}/signal/sync-01"), "{}");
    reloaded.take_effects();
    send(&mut reloaded, "te/device/c1//", payload);
    let fx = reloaded.take_effects();
    assert!(fx.publications.is_empty() && !fx.durable);
}

#[test]
fn re_registration_merges_twin_and_keeps_the_external_id() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/c1//",
        r#"{"@type":"child-device","@id":"c1","name":"c1","maintenance_mode":true,"maintenance_window":5}"#,
    );
    store.take_effects();
    send(&mut store, "te/device/c1///twin/name", r#""x""#);
    send(
        &mut store,
        "te/device/c1//",
        r#"{"@type":"child-device","name":"y"}"#,
    );
    assert_eq!(
        published(&mut store),
        vec![r("te/device/c1///twin/name", r#""y""#)]
    );
    let s = state(&store, "device/c1//");
    assert_eq!(s["@id"], "c1");
    assert_eq!(
        s["twin"],
        json!({"maintenance_mode":true,"maintenance_window":5,"name":"y"})
    );
}

#[test]
fn re_typing_or_changing_the_external_id_is_rejected_and_the_last_payload_republished() {
    let mut store = fresh();
    let accepted = r#"{"@id":"c1","@type":"child-device"}"#;
    send(&mut store, "te/device/c1//", accepted);
    store.take_effects();
    send(&mut store, "te/device/c1//", r#"{"@type":"service"}"#);
    let fx = store.take_effects();
    assert_eq!(
        fx.rejections[0].reason,
        "Updating the entity type of device/c1// is not supported"
    );
    assert_eq!(
        fx.publications,
        vec![Publication::retained("te/device/c1//".into(), accepted)]
    );
    send(
        &mut store,
        "te/device/c1//",
        r#"{"@type":"child-device","@id":"other"}"#,
    );
    let fx = store.take_effects();
    assert_eq!(
        fx.rejections[0].reason,
        "Updating the external id of device/c1// is not supported"
    );
    assert_eq!(fx.publications.len(), 1);
    assert_eq!(state(&store, "device/c1//")["@type"], "child-device");
}

#[test]
fn pending_children_register_depth_first_once_their_parent_arrives() {
    let mut store = fresh();
    child(&mut store, "child000", Some("device/child00//"));
    child(&mut store, "child00", Some("device/child0//"));
    assert_eq!(
        store
            .query(&Query::Entity(id("device/child00")))
            .unwrap_err(),
        TwinError::EntityNotFound(id("device/child00"))
    );
    child(&mut store, "child0", None);
    assert_eq!(
        list(&store, Some("device/child0//"), None),
        ["device/child0//", "device/child00//", "device/child000//"]
    );
}

#[test]
fn a_service_of_an_unknown_device_waits_for_its_device() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/ghost/service/svc",
        r#"{"@type":"service"}"#,
    );
    assert!(store.entity(&id("device/ghost/service/svc")).is_none());
    child(&mut store, "ghost", None);
    assert_eq!(
        state(&store, "device/ghost/service/svc")["@parent"],
        "device/ghost//"
    );
    // Counted once, when it arrived, not again when it was applied (metrics, issue #7).
    assert_eq!(store.counters.received("registration"), 2);
}

#[test]
fn explicit_parents_and_custom_schemes_default_to_the_main_device() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/c9/service/svc",
        r#"{"@type":"service","@parent":"device/main//"}"#,
    );
    send(
        &mut store,
        "te/factory/shop/plc1/metrics",
        r#"{"@type":"service"}"#,
    );
    assert_eq!(
        state(&store, "device/c9/service/svc")["@parent"],
        "device/main//"
    );
    assert_eq!(
        state(&store, "factory/shop/plc1/metrics")["@parent"],
        "device/main//"
    );
}

#[test]
fn data_for_an_unknown_default_scheme_service_auto_registers_device_and_service() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/auto_child/service/collectd/m/ram",
        r#"{"current":6}"#,
    );
    assert_eq!(
        published(&mut store),
        vec![
            r(
                "te/device/auto_child//",
                r#"{"@parent":"device/main//","@type":"child-device","name":"auto_child"}"#
            ),
            r("te/device/auto_child///twin/name", r#""auto_child""#),
            r(
                "te/device/auto_child/service/collectd",
                r#"{"@parent":"device/auto_child//","@type":"service","name":"collectd"}"#
            ),
            r(
                "te/device/auto_child/service/collectd/twin/name",
                r#""collectd""#
            ),
        ]
    );
    let s = state(&store, "device/auto_child/service/collectd");
    assert_eq!(s["measurements"]["ram"]["current"]["value"], 6);
    // The echoes of the agent's own publications are no-ops.
    send(
        &mut store,
        "te/device/auto_child//",
        r#"{"@parent":"device/main//","@type":"child-device","name":"auto_child"}"#,
    );
    send(
        &mut store,
        "te/device/auto_child///twin/name",
        r#""auto_child""#,
    );
    assert!(store.take_effects().is_empty());
}

#[test]
fn health_auto_registers_and_unknown_ids_stay_unknown_for_clears_commands_and_signals() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/external-sensor/service/childservice/status/health",
        r#"{"status":"unknown"}"#,
    );
    assert_eq!(
        state(&store, "device/external-sensor/service/childservice")["health"]["status"],
        "unknown"
    );
    store.take_effects();
    store.on_message("te/device/u1///a/x", b"", now());
    send(
        &mut store,
        "te/device/u2///cmd/restart/1",
        r#"{"status":"init"}"#,
    );
    send(&mut store, "te/device/u3///signal/sync", "{}");
    assert!(store.take_effects().is_empty());
    for unknown in ["device/u1//", "device/u2//", "device/u3//"] {
        assert!(store.entity(&id(unknown)).is_none());
    }
}

#[test]
fn custom_scheme_data_is_dropped_and_reported() {
    let mut store = fresh();
    send(&mut store, "te/custom/x///m/t", r#"{"a":1}"#);
    assert_eq!(
        errors(&mut store),
        ["te/custom/x///m/t: Auto registration of the entity with topic id custom/x// failed as it does not match the default topic scheme: 'device/<device-id>/service/<service-id>'. Try explicit registration instead."]
    );
    assert!(store.entity(&id("custom/x//")).is_none());
}

#[test]
fn re_parenting_moves_the_subtree() {
    let mut store = fresh();
    child(&mut store, "child_a", None);
    child(&mut store, "child_b", None);
    child(&mut store, "child_bb", Some("device/child_b//"));
    child(&mut store, "child_b", Some("device/child_a//"));
    assert!(!list(&store, None, Some("device/main//")).contains(&"device/child_b//".to_string()));
    assert_eq!(
        list(&store, None, Some("device/child_a//")),
        ["device/child_b//"]
    );
    assert_eq!(
        list(&store, Some("device/child_a//"), None),
        ["device/child_a//", "device/child_b//", "device/child_bb//"]
    );
}

#[test]
fn structural_rules_reject_services_as_parents_second_devices_and_main_changes() {
    let mut store = fresh();
    child(&mut store, "c2", Some("device/main/service/edge-agent"));
    send(&mut store, "te/device/other//", r#"{"@type":"device"}"#);
    assert_eq!(
        errors(&mut store),
        [
            "te/device/c2//: Entity: 'device/main/service/edge-agent' can not be a parent of 'device/c2//' because it is a service. Only devices can be parents",
            "te/device/other//: The main device was already registered at topic device/main//",
        ]
    );
    store.on_message("te/device/main//", b"", now());
    let fx = store.take_effects();
    assert_eq!(
        fx.rejections[0].reason,
        "The main device can not be deregistered"
    );
    assert_eq!(
        fx.publications,
        vec![Publication::retained(
            "te/device/main//".into(),
            r#"{"@type":"device"}"#
        )]
    );
    child(&mut store, "main", None);
    let fx = store.take_effects();
    assert_eq!(
        fx.rejections[0].reason,
        "Updating the entity type of device/main// is not supported"
    );
    assert_eq!(
        fx.publications,
        vec![Publication::retained(
            "te/device/main//".into(),
            r#"{"@type":"device"}"#
        )]
    );
}

#[test]
fn deregistration_clears_retained_data_then_the_registration() {
    let mut store = fresh();
    child(&mut store, "child0", None);
    for (channel, payload) in [
        ("twin/y", "true"),
        ("twin/x", "9"),
        ("a/high_temp", r#"{"text":"hot"}"#),
        ("cmd/restart", "{}"),
        ("cmd/restart/123", r#"{"status":"init"}"#),
        ("status/health", r#"{"status":"up"}"#),
        ("m/t", r#"{"v":1}"#),
    ] {
        send(
            &mut store,
            &format!("te/device/child0///{channel}"),
            payload,
        );
    }
    store.take_effects();
    store.on_message("te/device/child0//", b"", now());
    let fx = store.take_effects();
    assert!(fx.durable);
    let topics: Vec<&str> = fx.publications.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "te/device/child0///twin/x",
            "te/device/child0///twin/y",
            "te/device/child0///a/high_temp",
            "te/device/child0///cmd/restart",
            "te/device/child0///cmd/restart/123",
            "te/device/child0///status/health",
            "te/device/child0//",
        ]
    );
    assert!(fx
        .publications
        .iter()
        .all(|p| p.payload.is_empty() && p.retain && p.tracked.is_some()));
    assert!(store.entity(&id("device/child0//")).is_none());
}

#[test]
fn http_delete_removes_the_subtree_bottom_up_and_answers_in_bfs_order() {
    let mut store = fresh();
    child(&mut store, "child0", None);
    child(&mut store, "child1", None);
    child(&mut store, "child00", Some("device/child0//"));
    child(&mut store, "child000", Some("device/child00//"));
    send(
        &mut store,
        "te/device/child000/service/service0",
        r#"{"@type":"service"}"#,
    );
    store.take_effects();
    let reply = store.write(Write::Delete(id("device/child0"))).unwrap();
    let body: Value = serde_json::from_str(&reply.body.unwrap()).unwrap();
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["@topic-id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "device/child0//",
            "device/child00//",
            "device/child000//",
            "device/child000/service/service0"
        ]
    );
    let topics: Vec<String> = published(&mut store).into_iter().map(|p| p.0).collect();
    assert_eq!(
        topics,
        [
            "te/device/child000/service/service0",
            "te/device/child000//",
            "te/device/child00//",
            "te/device/child0//",
        ]
    );
    assert!(store.entity(&id("device/child1")).is_some());
    assert_eq!(
        store.write(Write::Delete(id("device/nope"))).unwrap().body,
        None
    );
    assert_eq!(
        store.write(Write::Delete(id("device/main"))).unwrap_err(),
        TwinError::MainNotDeregistrable
    );
}

#[test]
fn sync_prunes_entities_deregistered_while_the_agent_was_away() {
    let mut store = fresh();
    send(&mut store, "te/device/c5//", r#"{"@type":"child-device"}"#);
    send(&mut store, "te/device/c5///twin/k", "1");
    send(&mut store, "te/device/c6//", r#"{"@type":"child-device"}"#);
    send(&mut store, "te/device/c6///twin/k", "2");
    store.disconnected();
    store.take_effects();
    store.begin_sync("02".into());
    store.take_effects();
    // The broker still has c6 and the agent's registration, but not c5.
    let agent_payload =
        r#"{"@parent":"device/main//","@type":"service","name":"edge-agent","type":"service"}"#;
    send(&mut store, AGENT, agent_payload);
    send(&mut store, "te/device/c6//", r#"{"@type":"child-device"}"#);
    send(&mut store, "te/device/c6///twin/k", "2");
    send(&mut store, &format!("{AGENT}/signal/sync-02"), "{}");
    let pubs = published(&mut store);
    assert_eq!(pubs[0], r("te/device/c5///twin/k", ""));
    assert_eq!(pubs[1], r("te/device/c5//", ""));
    assert!(store.entity(&id("device/c5")).is_none());
    assert!(store.entity(&id("device/c6")).is_some());
    assert_eq!(store.counters.sync_pruned_entities, 1);
}

#[test]
fn data_delivered_before_the_suback_waits_for_the_window_instead_of_auto_registering() {
    let mut store = fresh();
    send(&mut store, "te/device/gw//", r#"{"@type":"child-device"}"#);
    store.disconnected();
    store.take_effects();
    // A persistent session delivers its queued messages between the CONNACK and the SUBACK.
    send(&mut store, "te/device/c7///m/env", r#"{"temperature":1}"#);
    assert!(store.entity(&id("device/c7")).is_none());
    assert_eq!(published(&mut store), vec![]);
    store.begin_sync("04".into());
    store.take_effects();
    let agent_payload =
        r#"{"@parent":"device/main//","@type":"service","name":"edge-agent","type":"service"}"#;
    send(&mut store, AGENT, agent_payload);
    send(&mut store, "te/device/gw//", r#"{"@type":"child-device"}"#);
    child(&mut store, "c7", Some("device/gw//"));
    send(&mut store, &format!("{AGENT}/signal/sync-04"), "{}");
    let c7: Vec<_> = published(&mut store)
        .into_iter()
        .filter(|(topic, _, _)| topic.starts_with("te/device/c7/"))
        .collect();
    assert_eq!(c7, vec![], "the retained registration stands");
    assert_eq!(list(&store, None, Some("device/gw//")), vec!["device/c7//"]);
    assert_eq!(
        state(&store, "device/c7//")["measurements"]["env"]["temperature"]["value"],
        json!(1)
    );
    // Held for the window, applied after it: counted once.
    assert_eq!(store.counters.received("measurement"), 1);
}

#[test]
fn sync_restores_a_broker_that_lost_its_retained_state() {
    let mut store = fresh();
    send(&mut store, "te/device/c5//", r#"{"@type":"child-device"}"#);
    send(&mut store, "te/device/c5///twin/k", "1");
    store.disconnected();
    store.begin_sync("03".into());
    store.take_effects();
    send(&mut store, &format!("{AGENT}/signal/sync-03"), "{}");
    let pubs = published(&mut store);
    assert_eq!(pubs[0], r("te/device/c5//", r#"{"@type":"child-device"}"#));
    assert_eq!(pubs[1], r("te/device/c5///twin/k", "1"));
    assert!(store.entity(&id("device/c5")).is_some());
}

#[test]
fn twin_fragments_set_and_delete_without_publishing() {
    let mut store = fresh();
    send(&mut store, "te/device/main///twin/x", "9");
    assert_eq!(state(&store, "device/main//")["twin"]["x"], 9);
    store.on_message("te/device/main///twin/x", b"", now());
    assert_eq!(state(&store, "device/main//")["twin"], json!({}));
    assert!(store.take_effects().publications.is_empty());
}

#[test]
fn replacing_a_full_twin_is_judged_by_its_result_and_never_half_applied() {
    let mut store = synced(StoreConfig {
        max_section_items: 2,
        ..config()
    });
    let main = id("device/main//");
    let body = |v: Value| v.as_object().unwrap().clone();
    store
        .write(Write::TwinReplace(main.clone(), body(json!({"b":1,"c":1}))))
        .unwrap();
    store.take_effects();
    // "a" comes before the removed "b" and "c" in key order: the twin never holds 3 keys at rest.
    store
        .write(Write::TwinReplace(main.clone(), body(json!({"a":1,"d":1}))))
        .unwrap();
    assert_eq!(
        published(&mut store),
        vec![
            r("te/device/main///twin/a", "1"),
            r("te/device/main///twin/b", ""),
            r("te/device/main///twin/c", ""),
            r("te/device/main///twin/d", "1"),
        ]
    );
    let err = store
        .write(Write::TwinReplace(
            main.clone(),
            body(json!({"x":1,"y":1,"z":1})),
        ))
        .unwrap_err();
    assert!(matches!(err, TwinError::SectionFull { .. }), "{err}");
    assert_eq!(published(&mut store), vec![], "nothing applied");
    assert_eq!(state(&store, "device/main//")["twin"], json!({"a":1,"d":1}));
}

#[test]
fn twin_put_replaces_the_map_and_publishes_only_changes() {
    let mut store = fresh();
    let main = id("device/main//");
    let body = |v: Value| v.as_object().unwrap().clone();
    let reply = store
        .write(Write::TwinReplace(
            main.clone(),
            body(json!({"maintainer":"J","mode":true,"window":5})),
        ))
        .unwrap();
    assert_eq!(
        reply.body.unwrap(),
        r#"{"maintainer":"J","mode":true,"window":5}"#
    );
    store.take_effects();
    store
        .write(Write::TwinReplace(
            main.clone(),
            body(json!({"last":"2025-01-01","maintainer":"J","mode":false})),
        ))
        .unwrap();
    assert_eq!(
        published(&mut store),
        vec![
            r("te/device/main///twin/last", r#""2025-01-01""#),
            r("te/device/main///twin/mode", "false"),
            r("te/device/main///twin/window", ""),
        ]
    );
    assert_eq!(
        store
            .write(Write::TwinReplace(main.clone(), body(json!({"@x":1}))))
            .unwrap_err()
            .to_string(),
        "Invalid twin key: '@x'. Keys that are empty, containing '/' or starting with '@' are not allowed"
    );
    store
        .write(Write::TwinSet(
            main.clone(),
            "maintenance_window".into(),
            json!(5),
        ))
        .unwrap();
    store
        .write(Write::TwinSet(
            main.clone(),
            "maintenance_window".into(),
            json!(5),
        ))
        .unwrap();
    assert_eq!(
        published(&mut store),
        vec![r("te/device/main///twin/maintenance_window", "5")]
    );
    store
        .write(Write::TwinDelete(main.clone(), "maintenance_window".into()))
        .unwrap();
    store
        .write(Write::TwinDelete(main, "maintenance_window".into()))
        .unwrap();
    assert_eq!(
        published(&mut store),
        vec![r("te/device/main///twin/maintenance_window", "")]
    );
}

#[test]
fn health_alarms_measurements_commands_and_config_follow_their_payload_rules() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/main/service/mosquitto-c8y-bridge/status/health",
        "1",
    );
    assert_eq!(
        state(&store, "device/main/service/mosquitto-c8y-bridge")["health"]["status"],
        "up"
    );
    send(
        &mut store,
        "te/device/main/service/mosquitto-c8y-bridge/status/health",
        "0",
    );
    assert_eq!(
        state(&store, "device/main/service/mosquitto-c8y-bridge")["health"]["status"],
        "down"
    );
    send(
        &mut store,
        "te/device/main/service/app/status/health",
        r#"{"status":""}"#,
    );
    assert_eq!(
        state(&store, "device/main/service/app")["health"]["status"],
        "unknown"
    );

    send(
        &mut store,
        "te/device/main///a/temp",
        r#"{"severity":"major","text":"hot","time":1701949168}"#,
    );
    assert_eq!(
        state(&store, "device/main//")["alarms"]["temp"]["time"],
        "2023-12-07T11:39:28.000Z"
    );
    store.on_message("te/device/main///a/temp", b"", now());
    assert_eq!(state(&store, "device/main//")["alarms"], json!({}));

    send(
        &mut store,
        "te/device/main///m/env",
        r#"{"time":"2021-04-30T17:03:14.123+02:00","t":24,"c":{"x":1,"y":2.5}}"#,
    );
    store.take_effects();
    for bad in ["{}", r#"{"t":true}"#, r#"{"time":null,"t":1}"#] {
        send(&mut store, "te/device/main///m/env", bad);
    }
    assert_eq!(errors(&mut store).len(), 3);
    assert_eq!(
        state(&store, "device/main//")["measurements"],
        json!({"env":{"c":{"x":{"value":1,"time":"2021-04-30T15:03:14.123Z"},"y":{"value":2.5,"time":"2021-04-30T15:03:14.123Z"}},"t":{"value":24,"time":"2021-04-30T15:03:14.123Z"}}})
    );

    send(
        &mut store,
        "te/device/main///cmd/restart/42",
        r#"{"foo":1}"#,
    );
    send(&mut store, "te/device/main///config", r#"{"a":1}"#);
    send(&mut store, "te/device/main///config", r#""str""#);
    let s = state(&store, "device/main//");
    assert_eq!(
        s["commands"]["restart"]["42"],
        json!({"foo":1,"status":"init"})
    );
    assert_eq!(s["config"], json!({"a":1}));
}

#[test]
fn unknown_at_keys_are_ignored_and_never_become_twin_keys() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/c3//",
        r#"{"@type":"child-device","@custom":1,"name":"n"}"#,
    );
    assert_eq!(
        published(&mut store),
        vec![r("te/device/c3///twin/name", r#""n""#)]
    );
    assert_eq!(state(&store, "device/c3//")["twin"], json!({"name":"n"}));
}

#[test]
fn patch_checks_every_rule_before_applying() {
    let mut store = fresh();
    child(&mut store, "child_x", None);
    send(
        &mut store,
        "te/device/child_x/service/service0",
        r#"{"@type":"service"}"#,
    );
    child(&mut store, "child_xx", Some("device/child_x//"));
    child(&mut store, "child_xxx", Some("device/child_xx//"));
    child(&mut store, "child_xy", Some("device/child_x//"));
    child(&mut store, "child_y", None);
    store.take_effects();
    let patch = |store: &mut Store, target: &str, parent: Option<&str>, health: Option<&str>| {
        store
            .write(Write::Patch {
                id: id(target),
                parent: parent.map(id),
                health: health.map(id),
            })
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        patch(
            &mut store,
            "device/child_x//",
            Some("device/child_x//"),
            None
        ),
        "Entity: 'device/child_x//' can not be its own parent"
    );
    assert_eq!(
        patch(&mut store, "device/child_xy//", Some("device/child_x/service/service0"), None),
        "Entity: 'device/child_x/service/service0' can not be a parent of 'device/child_xy//' because it is a service. Only devices can be parents"
    );
    assert_eq!(
        patch(&mut store, "device/main//", Some("device/child_x//"), None),
        "The parent of main device can not be updated"
    );
    assert_eq!(
        patch(&mut store, "device/child_x//", Some("device/child_xxx//"), None),
        "Entity: 'device/child_xxx//' can not be a parent of 'device/child_x//' because 'device/child_xxx//' is a descendent of 'device/child_x//'"
    );
    assert_eq!(
        patch(
            &mut store,
            "device/child_y//",
            Some("device/unknown//"),
            None
        ),
        "The specified parent \"device/unknown//\" does not exist in the entity store"
    );
    assert_eq!(
        patch(
            &mut store,
            "device/child_y//",
            None,
            Some("device/unknown//")
        ),
        "The specified health endpoint: device/unknown// does not exist in the entity store"
    );
    assert!(store.take_effects().publications.is_empty());
    let reply = store
        .write(Write::Patch {
            id: id("device/child_xx//"),
            parent: Some(id("device/child_y//")),
            health: None,
        })
        .unwrap();
    assert_eq!(
        reply.body.unwrap(),
        r#"{"@topic-id":"device/child_xx//","@parent":"device/child_y//","@type":"child-device"}"#
    );
    assert_eq!(
        published(&mut store),
        vec![r(
            "te/device/child_xx//",
            r#"{"@parent":"device/child_y//","@type":"child-device"}"#
        )]
    );
    assert_eq!(
        list(&store, Some("device/child_y//"), None),
        [
            "device/child_y//",
            "device/child_xx//",
            "device/child_xxx//"
        ]
    );
}

#[test]
fn post_registers_publishes_and_refuses_duplicates() {
    let mut store = fresh();
    let new = |body: Value| payload::parse_new_entity(body).unwrap();
    let reply = store
        .write(Write::Create(new(
            json!({"@topic-id":"device/c7//","@type":"child-device","name":"c7"}),
        )))
        .unwrap();
    assert_eq!(reply.body.unwrap(), r#"{"@topic-id":"device/c7//"}"#);
    assert_eq!(
        published(&mut store),
        vec![
            r(
                "te/device/c7//",
                r#"{"@parent":"device/main//","@type":"child-device","name":"c7"}"#
            ),
            r("te/device/c7///twin/name", r#""c7""#),
        ]
    );
    assert_eq!(
        store
            .write(Write::Create(new(
                json!({"@topic-id":"device/c7//","@type":"child-device"})
            )))
            .unwrap_err()
            .to_string(),
        "An entity with topic id: device/c7// is already registered"
    );
    assert_eq!(
        store
            .write(Write::Create(new(
                json!({"@topic-id":"device/ghost2/service/svc","@type":"service"})
            )))
            .unwrap_err()
            .to_string(),
        "The specified parent \"device/ghost2//\" does not exist in the entity store"
    );
    let _ = NewEntity {
        id: id("x"),
        registration: payload::parse_registration(br#"{"@type":"child-device"}"#).unwrap(),
    };
}

#[test]
fn a_full_store_rejects_new_entities_but_keeps_updating_existing_ones() {
    let mut store = synced(StoreConfig {
        max_entities: 3,
        ..config()
    });
    send(&mut store, "te/device/a//", r#"{"@type":"child-device"}"#);
    send(&mut store, "te/device/n//", r#"{"@type":"child-device"}"#);
    assert_eq!(
        errors(&mut store),
        ["te/device/n//: The entity store is full: the limit of 3 entities has been reached"]
    );
    send(&mut store, "te/device/a///twin/k", "1");
    assert_eq!(state(&store, "device/a//")["twin"]["k"], 1);
    let err = store
        .write(Write::Create(
            payload::parse_new_entity(json!({"@topic-id":"device/b","@type":"child-device"}))
                .unwrap(),
        ))
        .unwrap_err();
    assert_eq!(err, TwinError::StoreFull(3));
}

#[test]
fn health_checks_are_answered_and_never_stored() {
    let mut store = fresh();
    store.on_message("te/device/main///cmd/health/check", b"", now());
    let pubs = published(&mut store);
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].0, format!("{AGENT}/status/health"));
    assert!(pubs[0].2);
    assert_eq!(state(&store, "device/main//")["commands"], json!({}));
}

#[test]
fn writes_are_refused_until_the_sync_completed() {
    let mut store = Store::new(config());
    assert_eq!(
        store
            .write(Write::TwinSet(id("device/main"), "k".into(), json!(1)))
            .unwrap_err(),
        TwinError::NotReady("waiting for the retained-message sync marker".into())
    );
}

#[test]
fn a_persisted_main_device_that_differs_from_the_config_refuses_to_load() {
    let mut store = fresh();
    let entries = persisted(&mut store);
    let other = StoreConfig {
        main: id("custom/main//"),
        ..config()
    };
    assert!(Store::load(other, entries).is_err());
}

#[test]
fn payloads_nested_as_deep_as_accepted_survive_a_restart() {
    let mut store = fresh();
    child(&mut store, "c1", None);
    let deep = format!("{}{}", "[".repeat(126), "]".repeat(126));
    send(&mut store, "te/device/c1///twin/k", &deep);
    send(
        &mut store,
        "te/device/c1///a/hot",
        &format!(r#"{{"text":"t","x":{deep}}}"#),
    );
    assert_eq!(errors(&mut store), Vec::<String>::new());
    let (reloaded, warnings) = Store::load(config(), persisted(&mut store)).unwrap();
    assert_eq!(warnings, Vec::<String>::new());
    // Compared as text: the state document nests them deeper than serde_json reads by default.
    let text = |s: &Store| {
        s.query(&Query::State(id("device/c1//")))
            .unwrap()
            .body
            .unwrap()
    };
    assert_eq!(text(&reloaded), text(&store));
    assert!(text(&reloaded).contains(&deep));
}

#[test]
fn a_corrupt_persisted_main_device_id_is_a_warning_not_a_refusal_to_start() {
    let mut store = fresh();
    let mut entries = persisted(&mut store);
    entries.insert("main".into(), RawJson::from_serialize(&1).unwrap());
    let (_, warnings) = Store::load(config(), entries).unwrap();
    assert_eq!(
        warnings,
        ["ignored the persisted main device id: invalid type: integer `1`, expected a string at line 1 column 1"]
    );
}

#[test]
fn inline_twin_data_not_acknowledged_before_a_crash_is_published_again_after_the_sync() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/c3//",
        r#"{"@type":"child-device","name":"c3"}"#,
    );
    assert_eq!(
        published(&mut store),
        vec![r("te/device/c3///twin/name", r#""c3""#)]
    );
    // Crash: the group commit happened, the broker never acknowledged twin/name.
    let entries = persisted(&mut store);
    let (mut restarted, _) = Store::load(config(), entries).unwrap();
    restarted.take_effects();
    restarted.begin_sync("04".into());
    restarted.take_effects();
    send(&mut restarted, AGENT, AGENT_PAYLOAD);
    send(
        &mut restarted,
        "te/device/c3//",
        r#"{"@type":"child-device","name":"c3"}"#,
    );
    send(&mut restarted, &format!("{AGENT}/signal/sync-04"), "{}");
    let c3: Vec<_> = published(&mut restarted)
        .into_iter()
        .filter(|p| p.0.starts_with("te/device/c3/"))
        .collect();
    assert_eq!(c3, vec![r("te/device/c3///twin/name", r#""c3""#)]);
    assert_eq!(
        state(&restarted, "device/c3//")["twin"],
        json!({"name":"c3"})
    );
}

#[test]
fn a_stale_copy_in_the_window_is_ignored_and_a_newer_write_cancels_the_outbox_entry() {
    let mut store = fresh();
    let main = id("device/main//");
    store
        .write(Write::TwinSet(main.clone(), "k".into(), json!(1)))
        .unwrap();
    store
        .write(Write::TwinSet(main.clone(), "j".into(), json!(1)))
        .unwrap();
    store.take_effects();
    // Never acknowledged; the connection drops and comes back.
    store.disconnected();
    store.begin_sync("05".into());
    store.take_effects();
    send(&mut store, AGENT, AGENT_PAYLOAD);
    // The broker still has an older value of k (none was retained before: anything there is
    // someone else's newer write) and the agent's own value of j.
    send(&mut store, "te/device/main///twin/k", "7");
    send(&mut store, "te/device/main///twin/j", "1");
    send(&mut store, &format!("{AGENT}/signal/sync-05"), "{}");
    let twin_pubs: Vec<_> = published(&mut store)
        .into_iter()
        .filter(|p| p.0.starts_with("te/device/main///twin/"))
        .collect();
    assert_eq!(twin_pubs, vec![r("te/device/main///twin/j", "1")]);
    assert_eq!(state(&store, "device/main//")["twin"], json!({"j":1,"k":7}));
}

#[test]
fn a_persisted_parent_cycle_is_re_attached_to_the_main_device_on_load() {
    let mut store = fresh();
    send(&mut store, "te/device/a//", r#"{"@type":"child-device"}"#);
    send(&mut store, "te/device/b//", r#"{"@type":"child-device"}"#);
    child(&mut store, "c", Some("device/a//"));
    send(&mut store, "te/device/d//", r#"{"@type":"child-device"}"#);
    store.take_effects();
    // What a skipped journal line can leave behind (§7.2): a and b are each other's parent, and
    // d has lost its parent altogether.
    let mut entries = persisted(&mut store);
    for (entity, parent) in [
        ("device/a//", json!("device/b//")),
        ("device/b//", json!("device/a//")),
        ("device/d//", Value::Null),
    ] {
        let key = format!("e/{entity}");
        let mut value: Value = serde_json::from_str(entries[&key].get()).unwrap();
        value["parent"] = parent;
        entries.insert(key, RawJson::from_serialize(&value).unwrap());
    }
    let (mut loaded, warnings) = Store::load(config(), entries).unwrap();
    assert_eq!(
        warnings,
        [
            "persisted entity device/a// was on a parent cycle; re-attached to device/main//",
            "persisted entity device/b// was on a parent cycle; re-attached to device/main//",
            "persisted entity device/d// had no parent; re-attached to device/main//",
        ]
    );
    assert_eq!(
        list(&loaded, None, None),
        [
            "device/main//",
            "device/a//",
            "device/b//",
            "device/d//",
            "device/main/service/edge-agent",
            "device/c//",
        ]
    );
    assert_eq!(loaded.unsaved(), Some(Durability::Now));
    let mut saved: Vec<(String, Value)> = loaded
        .take_persist_ops(Durability::Now)
        .into_iter()
        .map(|op| match op {
            Op::Put(key, value) => (
                serde_json::to_value(&key)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                serde_json::to_value(value).unwrap()["parent"].clone(),
            ),
            Op::Del(key) => panic!("unexpected removal of {key:?}"),
        })
        .collect();
    saved.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        saved,
        [
            ("e/device/a//".to_string(), json!("device/main//")),
            ("e/device/b//".to_string(), json!("device/main//")),
            ("e/device/d//".to_string(), json!("device/main//")),
        ]
    );

    loaded.begin_sync("06".into());
    send(&mut loaded, AGENT, AGENT_PAYLOAD);
    send(&mut loaded, "te/device/a//", r#"{"@type":"child-device"}"#);
    send(&mut loaded, "te/device/b//", r#"{"@type":"child-device"}"#);
    send(
        &mut loaded,
        "te/device/c//",
        r#"{"@type":"child-device","@parent":"device/a//"}"#,
    );
    send(&mut loaded, "te/device/d//", r#"{"@type":"child-device"}"#);
    send(&mut loaded, &format!("{AGENT}/signal/sync-06"), "{}");
    loaded.take_effects();
    send(&mut loaded, "te/device/a//", "");
    assert_eq!(
        published(&mut loaded),
        vec![r("te/device/c//", ""), r("te/device/a//", "")]
    );
    assert_eq!(
        list(&loaded, None, None),
        [
            "device/main//",
            "device/b//",
            "device/d//",
            "device/main/service/edge-agent"
        ]
    );
}

#[test]
fn an_empty_payload_deregisters_an_entity_whose_re_parenting_is_pending() {
    let mut store = fresh();
    send(&mut store, "te/device/c1//", r#"{"@type":"child-device"}"#);
    child(&mut store, "c1", Some("device/p//"));
    store.take_effects();
    assert_eq!(state(&store, "device/c1//")["@parent"], "device/main//");
    send(&mut store, "te/device/c1//", "");
    assert_eq!(published(&mut store), vec![r("te/device/c1//", "")]);
    assert!(store.entity(&id("device/c1//")).is_none());
    send(&mut store, "te/device/p//", r#"{"@type":"child-device"}"#);
    assert!(published(&mut store).is_empty());
    assert_eq!(
        list(&store, None, None),
        [
            "device/main//",
            "device/main/service/edge-agent",
            "device/p//"
        ]
    );
}

#[test]
fn an_http_delete_drops_the_pending_updates_of_every_removed_entity() {
    let mut store = fresh();
    send(&mut store, "te/device/c1//", r#"{"@type":"child-device"}"#);
    child(&mut store, "c2", Some("device/c1//"));
    for child in ["c1", "c2"] {
        send(
            &mut store,
            &format!("te/device/{child}//"),
            r#"{"@type":"child-device","@parent":"device/p//"}"#,
        );
    }
    store.take_effects();
    store.write(Write::Delete(id("device/c1"))).unwrap();
    assert_eq!(
        published(&mut store),
        vec![r("te/device/c2//", ""), r("te/device/c1//", "")]
    );
    send(&mut store, "te/device/p//", r#"{"@type":"child-device"}"#);
    assert!(published(&mut store).is_empty());
    assert_eq!(
        list(&store, None, None),
        [
            "device/main//",
            "device/main/service/edge-agent",
            "device/p//"
        ]
    );
}

#[test]
fn re_publishing_the_last_accepted_registration_cancels_a_pending_re_parenting() {
    let mut store = fresh();
    let accepted = r#"{"@type":"child-device"}"#;
    send(&mut store, "te/device/c1//", accepted);
    child(&mut store, "c1", Some("device/p//"));
    send(&mut store, "te/device/c1//", accepted);
    send(&mut store, "te/device/p//", r#"{"@type":"child-device"}"#);
    let fx = store.take_effects();
    assert!(fx.publications.is_empty() && fx.rejections.is_empty());
    assert_eq!(state(&store, "device/c1//")["@parent"], "device/main//");
    assert_eq!(list(&store, None, Some("device/p//")), Vec::<String>::new());
}

#[test]
fn measurement_group_members_count_against_the_series_limit() {
    let mut store = synced(StoreConfig {
        max_section_items: 2,
        ..config()
    });
    send(
        &mut store,
        "te/device/main///m/env",
        r#"{"g":{"x":1,"y":2}}"#,
    );
    send(&mut store, "te/device/main///m/env", r#"{"g":{"z":3}}"#);
    send(&mut store, "te/device/main///m/env", r#"{"t":4}"#);
    send(&mut store, "te/device/main///m/env", r#"{"g":{"x":5}}"#);
    assert_eq!(
        errors(&mut store),
        [
            "te/device/main///m/env: Too many series for entity device/main//: the limit of 2 has been reached",
            "te/device/main///m/env: Too many series for entity device/main//: the limit of 2 has been reached",
        ]
    );
    assert_eq!(
        state(&store, "device/main//")["measurements"],
        json!({"env":{"g":{"x":{"value":5,"time":"2024-05-02T19:12:41.361Z"},"y":{"value":2,"time":"2024-05-02T19:12:41.361Z"}}}})
    );
}

#[test]
fn rejected_retained_items_are_not_tracked_for_clean_up() {
    let mut store = synced(StoreConfig {
        max_section_items: 1,
        ..config()
    });
    send(&mut store, "te/device/c1//", r#"{"@type":"child-device"}"#);
    for (topic, payload) in [
        ("twin/a", "1"),
        ("twin/b", "2"),
        ("config", r#"{"@k":1}"#),
        ("a/x", r#"{"text":"x"}"#),
        ("a/y", r#"{"text":"y"}"#),
        ("cmd/restart", "{}"),
        ("cmd/reboot", "{}"),
        ("cmd/restart/1", "{}"),
        ("cmd/restart/2", "{}"),
    ] {
        send(&mut store, &format!("te/device/c1///{topic}"), payload);
    }
    let full = |section: &str| {
        format!("Too many {section} for entity device/c1//: the limit of 1 has been reached")
    };
    assert_eq!(
        errors(&mut store),
        [
            format!("te/device/c1///twin/b: {}", full("twin keys")),
            "te/device/c1///config: Invalid config key: '@k'. Keys that are empty, containing '/' or starting with '@' are not allowed".to_string(),
            format!("te/device/c1///a/y: {}", full("alarms")),
            format!("te/device/c1///cmd/reboot: {}", full("capabilities")),
            format!("te/device/c1///cmd/restart/2: {}", full("commands")),
        ]
    );
    send(&mut store, "te/device/c1//", "");
    assert_eq!(
        published(&mut store),
        vec![
            r("te/device/c1///twin/a", ""),
            r("te/device/c1///a/x", ""),
            r("te/device/c1///cmd/restart", ""),
            r("te/device/c1///cmd/restart/1", ""),
            r("te/device/c1//", ""),
        ]
    );
}

#[test]
fn meta_topics_beyond_the_section_limit_are_rejected() {
    let mut store = synced(StoreConfig {
        max_section_items: 2,
        ..config()
    });
    send(&mut store, "te/device/c1//", r#"{"@type":"child-device"}"#);
    // A twin key and an alarm type named `meta` are not meta topics.
    send(&mut store, "te/device/c1///twin/meta", "1");
    send(&mut store, "te/device/c1///a/meta", r#"{"text":"m"}"#);
    send(&mut store, "te/device/c1///m/t/meta", r#"{"unit":"C"}"#);
    send(&mut store, "te/device/c1///e/login/meta", "{}");
    send(&mut store, "te/device/c1///a/hot/meta", "{}");
    assert_eq!(
        errors(&mut store),
        ["te/device/c1///a/hot/meta: Too many meta topics for entity device/c1//: the limit of 2 has been reached"]
    );
    send(&mut store, "te/device/c1///m/t/meta", r#"{"unit":"K"}"#);
    store.on_message("te/device/c1///e/login/meta", b"", now());
    send(&mut store, "te/device/c1///a/hot/meta", "{}");
    assert!(errors(&mut store).is_empty());
    send(&mut store, "te/device/c1//", "");
    assert_eq!(
        published(&mut store),
        vec![
            r("te/device/c1///twin/meta", ""),
            r("te/device/c1///m/t/meta", ""),
            r("te/device/c1///a/hot/meta", ""),
            r("te/device/c1///a/meta", ""),
            r("te/device/c1//", ""),
        ]
    );
}

#[test]
fn a_measurement_over_the_series_limit_is_rejected_as_a_whole() {
    let mut store = synced(StoreConfig {
        max_section_items: 2,
        ..config()
    });
    let full =
        "te/device/main///m/env: Too many series for entity device/main//: the limit of 2 has been reached";
    send(
        &mut store,
        "te/device/main///m/env",
        r#"{"a":10,"b":20,"c":30}"#,
    );
    assert_eq!(errors(&mut store), [full]);
    assert_eq!(state(&store, "device/main//")["measurements"], json!({}));
    send(
        &mut store,
        "te/device/main///m/env",
        r#"{"g":{"x":1,"y":2,"z":3}}"#,
    );
    assert_eq!(errors(&mut store), [full]);
    assert_eq!(state(&store, "device/main//")["measurements"], json!({}));
    // At the limit, a message updating a stored series and adding a new one changes nothing.
    send(&mut store, "te/device/main///m/env", r#"{"a":1,"b":2}"#);
    send(&mut store, "te/device/main///m/env", r#"{"a":5,"c":6}"#);
    assert_eq!(errors(&mut store), [full]);
    assert_eq!(
        state(&store, "device/main//")["measurements"],
        json!({"env":{"a":{"value":1,"time":"2024-05-02T19:12:41.361Z"},"b":{"value":2,"time":"2024-05-02T19:12:41.361Z"}}})
    );
    // A group's first member takes the place of the single series it replaces; a second one
    // would be a third series.
    send(
        &mut store,
        "te/device/main///m/env",
        r#"{"a":{"p":3,"q":4}}"#,
    );
    assert_eq!(errors(&mut store), [full]);
    send(
        &mut store,
        "te/device/main///m/env",
        r#"{"a":{"p":3},"b":5}"#,
    );
    assert!(errors(&mut store).is_empty());
    assert_eq!(
        state(&store, "device/main//")["measurements"],
        json!({"env":{"a":{"p":{"value":3,"time":"2024-05-02T19:12:41.361Z"}},"b":{"value":5,"time":"2024-05-02T19:12:41.361Z"}}})
    );
}

#[test]
fn a_stale_registration_delivered_before_the_subscription_does_not_undo_a_pending_clean_up() {
    let mut store = fresh();
    send(
        &mut store,
        "te/device/c8//",
        r#"{"@type":"child-device","name":"c8"}"#,
    );
    store.take_effects();
    store.write(Write::Delete(id("device/c8"))).unwrap();
    store.take_effects();
    // The clears were never acknowledged; after a reconnection a persistent session delivers
    // the broker's stale copy between CONNACK and SUBACK, before any window is open.
    store.disconnected();
    send(
        &mut store,
        "te/device/c8//",
        r#"{"@type":"child-device","name":"c8"}"#,
    );
    assert!(store.entity(&id("device/c8")).is_none());
    store.begin_sync("06".into());
    store.take_effects();
    send(&mut store, AGENT, AGENT_PAYLOAD);
    send(&mut store, &format!("{AGENT}/signal/sync-06"), "{}");
    let clears: Vec<_> = published(&mut store)
        .into_iter()
        .filter(|p| p.0.starts_with("te/device/c8/"))
        .collect();
    assert_eq!(
        clears,
        vec![r("te/device/c8///twin/name", ""), r("te/device/c8//", "")]
    );
    assert!(store.entity(&id("device/c8")).is_none());
}

// ---- mosquitto bridge health history (issue #4) ----------------------------------------------

const BRIDGE: &str = "device/main/service/mosquitto-c8y-bridge";
const BRIDGE_HEALTH: &str = "te/device/main/service/mosquitto-c8y-bridge/status/health";

/// `2024-05-02T19:13:<s>.000Z`, a reception time of the agent clock.
fn at(s: u32) -> Timestamp {
    Timestamp::parse_rfc3339(&at_text(s)).unwrap()
}

fn at_text(s: u32) -> String {
    format!("2024-05-02T19:13:{s:02}.000Z")
}

/// A registered bridge service, without any health message yet.
fn with_bridge() -> Store {
    let mut store = fresh();
    send(
        &mut store,
        &format!("te/{BRIDGE}"),
        r#"{"@type":"service"}"#,
    );
    store
}

/// The `health`, `since`, `flaps` and `last_down` members of a state document.
fn bridge_members(store: &Store, s: &str) -> Value {
    let state = state(store, s);
    json!([
        state["health"],
        state["since"],
        state["flaps"],
        state["last_down"]
    ])
}

fn health(status: &str, raw: &str, received: u32) -> Value {
    json!({"status": status, "raw": raw, "received": at_text(received)})
}

#[test]
fn a_bridge_state_document_has_since_flaps_and_last_down_right_after_health() {
    let mut store = with_bridge();
    let text = |store: &Store| {
        store
            .query(&Query::State(id(BRIDGE)))
            .unwrap()
            .body
            .unwrap()
    };
    assert_eq!(
        text(&store),
        r#"{"@topic-id":"device/main/service/mosquitto-c8y-bridge","@type":"service","@parent":"device/main//","twin":{},"config":{},"health":null,"since":null,"flaps":0,"last_down":null,"capabilities":{},"measurements":{},"alarms":{},"events":{},"commands":{},"children":[]}"#
    );
    store.on_message(BRIDGE_HEALTH, b"0", at(1));
    store.on_message(BRIDGE_HEALTH, b"1", at(2));
    assert_eq!(
        text(&store),
        r#"{"@topic-id":"device/main/service/mosquitto-c8y-bridge","@type":"service","@parent":"device/main//","twin":{},"config":{},"health":{"status":"up","raw":"1","received":"2024-05-02T19:13:02.000Z"},"since":"2024-05-02T19:13:02.000Z","flaps":0,"last_down":"2024-05-02T19:13:01.000Z","capabilities":{},"measurements":{},"alarms":{},"events":{},"commands":{},"children":[]}"#
    );
    // The listing of state documents carries them too.
    let states = get(
        &store,
        Query::States(Filter::from_query(None, None, None).unwrap()),
    );
    let bridge = states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["@topic-id"] == BRIDGE)
        .unwrap();
    assert_eq!(bridge, &state(&store, BRIDGE));
}

#[test]
fn a_bridge_counts_up_to_down_flaps_and_ignores_a_repeated_status() {
    let mut store = with_bridge();
    store.on_message(BRIDGE_HEALTH, b"1", at(1));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([health("up", "1", 1), at_text(1), 0, null])
    );
    // The retained `1` delivered again after a reconnect is not a change.
    store.on_message(BRIDGE_HEALTH, b"1", at(2));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([health("up", "1", 2), at_text(1), 0, null])
    );
    store.on_message(BRIDGE_HEALTH, b"0", at(3));
    store.on_message(BRIDGE_HEALTH, b"0", at(4));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([health("down", "0", 4), at_text(3), 1, at_text(3)])
    );
    store.on_message(BRIDGE_HEALTH, b"1", at(5));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([health("up", "1", 5), at_text(5), 1, at_text(3)])
    );
    store.on_message(BRIDGE_HEALTH, b"0", at(6));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([health("down", "0", 6), at_text(6), 2, at_text(6)])
    );
}

#[test]
fn removing_a_bridge_health_resets_since_and_the_next_status_is_a_first_one() {
    let mut store = with_bridge();
    store.on_message(BRIDGE_HEALTH, b"0", at(1));
    store.on_message(BRIDGE_HEALTH, b"1", at(2));
    store.on_message(BRIDGE_HEALTH, b"", at(3));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([null, null, 0, at_text(1)])
    );
    // The status before the removal is forgotten: this `0` is a first status, not a flap.
    store.on_message(BRIDGE_HEALTH, b"0", at(4));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([health("down", "0", 4), at_text(4), 0, at_text(4)])
    );
    // Neither is a change through another status.
    store.on_message(BRIDGE_HEALTH, b"1", at(5));
    store.on_message(BRIDGE_HEALTH, b"{}", at(6));
    store.on_message(BRIDGE_HEALTH, b"0", at(7));
    assert_eq!(
        bridge_members(&store, BRIDGE),
        json!([health("down", "0", 7), at_text(7), 0, at_text(7)])
    );
}

#[test]
fn a_bridge_health_cleared_while_the_agent_was_away_resets_since() {
    let mut store = with_bridge();
    store.on_message(BRIDGE_HEALTH, b"1", at(1));
    store.disconnected();
    store.begin_sync("07".into());
    store.take_effects();
    // The broker still has the bridge's registration, but no longer its health.
    send(&mut store, AGENT, AGENT_PAYLOAD);
    send(
        &mut store,
        &format!("te/{BRIDGE}"),
        r#"{"@type":"service"}"#,
    );
    send(&mut store, &format!("{AGENT}/signal/sync-07"), "{}");
    assert_eq!(bridge_members(&store, BRIDGE), json!([null, null, 0, null]));
}

#[test]
fn since_and_last_down_survive_a_restart_and_flaps_start_again_at_zero() {
    let mut store = with_bridge();
    store.on_message(BRIDGE_HEALTH, b"1", at(1));
    store.on_message(BRIDGE_HEALTH, b"0", at(2));
    store.on_message(BRIDGE_HEALTH, b"1", at(3));
    let (mut reloaded, warnings) = Store::load(config(), persisted(&mut store)).unwrap();
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(
        bridge_members(&reloaded, BRIDGE),
        json!([health("up", "1", 3), at_text(3), 0, at_text(2)])
    );
    // The broker delivers the retained `1` again to the restarted agent: not a change.
    reloaded.on_message(BRIDGE_HEALTH, b"1", at(4));
    assert_eq!(
        bridge_members(&reloaded, BRIDGE),
        json!([health("up", "1", 4), at_text(3), 0, at_text(2)])
    );
}

#[test]
fn a_bridge_record_persisted_before_since_existed_loads_and_its_next_status_sets_since() {
    let mut store = with_bridge();
    store.on_message(BRIDGE_HEALTH, b"1", at(1));
    let mut entries = persisted(&mut store);
    let key = format!("e/{BRIDGE}");
    let mut record: Value = serde_json::from_str(entries[&key].get()).unwrap();
    assert_eq!(record["extra"]["bridge"], json!({"since": at_text(1)}));
    record["extra"].as_object_mut().unwrap().remove("bridge");
    entries.insert(key, RawJson::from_serialize(&record).unwrap());

    let (mut reloaded, warnings) = Store::load(config(), entries).unwrap();
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(
        bridge_members(&reloaded, BRIDGE),
        json!([health("up", "1", 1), null, 0, null])
    );
    reloaded.on_message(BRIDGE_HEALTH, b"0", at(2));
    assert_eq!(
        bridge_members(&reloaded, BRIDGE),
        json!([health("down", "0", 2), at_text(2), 1, at_text(2)])
    );
}

#[test]
fn other_entities_have_no_bridge_members_and_persist_no_bridge_history() {
    let mut store = fresh();
    for (topic, payload) in [
        ("te/device/main/service/app/status/health", "1"),
        ("te/device/main/service/app/status/health", "0"),
        ("te/device/main/service/mosquitto-bridge/status/health", "0"),
        (
            "te/device/main/service/my-mosquitto-c8y-bridge/status/health",
            "0",
        ),
        ("te/device/main///status/health", r#"{"status":"down"}"#),
    ] {
        send(&mut store, topic, payload);
    }
    let entries = persisted(&mut store);
    for s in [
        "device/main/service/app",
        "device/main/service/mosquitto-bridge",
        "device/main/service/my-mosquitto-c8y-bridge",
        "device/main//",
    ] {
        let state = state(&store, s);
        assert!(state["health"].is_object(), "{s}: {state}");
        for member in ["since", "flaps", "last_down"] {
            assert!(state.get(member).is_none(), "{s}: {state}");
        }
        let record = entries[&format!("e/{}", id(s))].get();
        assert!(!record.contains("bridge\":"), "{s}: {record}");
    }
}
