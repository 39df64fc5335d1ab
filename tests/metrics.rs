//! `GET /metrics` end to end (issue #7, "Metrics and logs"): a real mosquitto, the agent
//! in-process, real MQTT in and real HTTP out; each figure read from the OpenMetrics text and
//! compared with what the test did, between two scrapes where the agent's own traffic (its
//! health, the test's barrier) makes absolute counts unknowable.

mod common;

use std::collections::BTreeMap;

use common::http;
use common::twin::System;
use reqwest::Method;

/// The figures of one scrape: `name{labels}` → value.
async fn scrape(rig: &System) -> BTreeMap<String, f64> {
    let response = http::get(&rig.url("/metrics")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let value = value.parse().unwrap_or_else(|_| panic!("{l:?}"));
            (name.to_owned(), value)
        })
        .collect()
}

fn figure(figures: &BTreeMap<String, f64>, name: &str) -> f64 {
    figures.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_what_came_in_what_was_served_and_the_process() {
    let rig = System::start().await;
    rig.register("device/child1//", r#"{"@type":"child-device"}"#)
        .await;
    rig.caught_up().await;
    let before = scrape(&rig).await;

    rig.publish("te/device/child1///m/env", r#"{"temp":21.5}"#, false)
        .await;
    rig.publish("te/device/child1///m/env", "not json", false)
        .await;
    rig.publish("te/device/ghost///m/env", r#"{"temp":1}"#, false)
        .await;
    // Commands from any requester (here a mapper's): counted when they end, once.
    let restart = "te/device/child1///cmd/restart/c8y-1";
    for status in ["init", "executing", "successful", "successful"] {
        rig.publish(restart, format!(r#"{{"status":"{status}"}}"#), true)
            .await;
    }
    rig.publish(
        "te/device/child1///cmd/my_op/x-1",
        r#"{"status":"executing"}"#,
        true,
    )
    .await;
    rig.publish(
        "te/device/child1///cmd/my_op/x-1",
        r#"{"status":"failed","reason":"no"}"#,
        true,
    )
    .await;
    // Already final when first seen: it ended before (a retained command after a restart).
    rig.publish(
        "te/device/child1///cmd/restart/old",
        r#"{"status":"failed"}"#,
        true,
    )
    .await;
    rig.caught_up().await;
    let put = http::request(
        Method::PUT,
        &rig.url("/te/v1/files/child1/log.txt"),
        "0123456789",
    )
    .await;
    assert_eq!(put.status, 201);
    let got = http::get(&rig.url("/te/v1/files/child1/log.txt")).await;
    assert_eq!(got.text(), "0123456789");
    let missing = http::get(&rig.url("/te/v1/files/child1/nothing")).await;
    assert_eq!(missing.status, 404);
    let after = scrape(&rig).await;

    let delta = |name: &str| figure(&after, name) - figure(&before, name);
    assert_eq!(
        delta("edge_agent_mqtt_messages_received_total{channel=\"measurement\"}"),
        3.0
    );
    assert_eq!(
        delta("edge_agent_mqtt_messages_rejected_total{reason=\"invalid_measurement\"}"),
        1.0
    );
    // A measurement of an unregistered device auto-registers it (spec/twin.md §4.7).
    assert_eq!(
        figure(&after, "edge_agent_entities{type=\"child-device\"}"),
        2.0
    );
    assert_eq!(figure(&after, "edge_agent_entities{type=\"device\"}"), 1.0);
    assert_eq!(figure(&after, "edge_agent_entities{type=\"service\"}"), 1.0);
    assert!(delta("edge_agent_twin_changes_total") >= 2.0);
    assert_eq!(
        delta("edge_agent_commands_ended_total{operation=\"restart\",status=\"successful\"}"),
        1.0
    );
    assert_eq!(
        delta("edge_agent_commands_ended_total{operation=\"other\",status=\"failed\"}"),
        1.0
    );
    assert_eq!(
        delta("edge_agent_commands_ended_total{operation=\"restart\",status=\"failed\"}"),
        0.0
    );
    assert_eq!(figure(&after, "edge_agent_mqtt_connected"), 1.0);
    assert_eq!(figure(&after, "edge_agent_mqtt_reconnects_total"), 0.0);
    assert_eq!(delta("edge_agent_file_transfer_received_bytes_total"), 10.0);
    assert_eq!(delta("edge_agent_file_transfer_sent_bytes_total"), 10.0);
    assert_eq!(
        delta("edge_agent_http_responses_total{route=\"files\",status=\"201\"}"),
        1.0
    );
    assert_eq!(
        delta("edge_agent_http_responses_total{route=\"files\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        delta("edge_agent_http_responses_total{route=\"files\",status=\"404\"}"),
        1.0
    );
    // The first scrape itself was counted once it was answered.
    assert_eq!(
        delta("edge_agent_http_responses_total{route=\"metrics\",status=\"200\"}"),
        1.0
    );
    let rss = figure(&after, "edge_agent_process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "{rss}");
    assert!(figure(&after, "edge_agent_process_open_fds") >= 3.0);
    // No label names a device, a topic or a file.
    for name in after.keys() {
        assert!(
            !name.contains("child1") && !name.contains("ghost") && !name.contains("log.txt"),
            "{name}"
        );
    }
}
