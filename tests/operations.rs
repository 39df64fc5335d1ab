//! `/te/v1/operations` end to end (issue #5), with the child played by a test MQTT client: a real
//! mosquitto, the agent in-process, a real remote HTTP origin, real files. The reference child
//! runner (`edge-agent child`) is exercised in tests/child.rs and tests/operations_cli.rs.

mod common;

use common::data::sha256_hex;

use std::time::Duration;

use common::agent::TestAgent;
use common::http;
use common::mosquitto::Broker;
use common::mqtt::TestClient;
use common::origin::Origin;
use serde_json::{json, Value};

const FIRMWARE: &[u8] = b"firmware image 1.2, not very large, but real bytes\n";

/// A broker, an agent (clearing finished commands after `keep_final`), and a child `name` that
/// registered and announced `ops`, observed on its command topics.
struct Rig {
    broker: Broker,
    agent: TestAgent,
    child: TestClient,
}

impl Rig {
    async fn start(keep_final: Duration, children: &[(&str, &[&str])]) -> Rig {
        let broker = Broker::start().await;
        let agent = TestAgent::start_with(&broker, |c| {
            c.operations.keep_final = keep_final;
        })
        .await;
        let child = TestClient::connect(broker.port()).await;
        child.subscribe("te/device/+///cmd/+/+").await;
        for (name, ops) in children {
            child
                .publish(
                    &format!("te/device/{name}//"),
                    r#"{"@type":"child-device"}"#,
                    true,
                )
                .await;
            for op in *ops {
                child
                    .publish(&format!("te/device/{name}///cmd/{op}"), "{}", true)
                    .await;
            }
            for op in *ops {
                let url = agent.url(&format!("/te/v1/entities/device/{name}///state"));
                let op = op.to_string();
                http::get_until(&url, move |r| {
                    r.status == 200 && r.json()["capabilities"].get(&op).is_some()
                })
                .await;
            }
        }
        Rig {
            broker,
            agent,
            child,
        }
    }

    async fn start_op(&self, body: Value) -> http::Response {
        http::post_json(&self.agent.url("/te/v1/operations"), &body).await
    }

    /// The child's side: the next command on `topic` (retained or live), as JSON.
    async fn command(&self, topic: &str) -> Value {
        let message = self.child.expect(topic).await;
        serde_json::from_slice(&message.payload).expect("a JSON command")
    }

    async fn report(&self, topic: &str, payload: &Value) {
        self.child.publish(topic, payload.to_string(), true).await;
    }

    async fn wait_status(&self, cmd_id: &str, status: &'static str) -> Value {
        let url = self.agent.url(&format!("/te/v1/operations/{cmd_id}"));
        http::get_until(&url, move |r| r.json()["status"] == status)
            .await
            .json()
    }
}

fn statuses(op: &Value) -> Vec<String> {
    op["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_firmware_update_from_a_url_is_served_locally_followed_to_its_end_and_cleared() {
    let rig = Rig::start(Duration::from_secs(1), &[("child1", &["firmware_update"])]).await;
    let origin = Origin::start(FIRMWARE).await;
    let sha = sha256_hex(FIRMWARE);
    let started = rig
        .start_op(
            json!({"entity":"device/child1//","operation":"firmware_update","cmd_id":"fw-1",
            "url": origin.url(), "sha256": sha, "payload": {"name":"fw","version":"1.2"}}),
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.text());
    assert_eq!(started.header("location"), Some("/te/v1/operations/fw-1"));
    let topic = "te/device/child1///cmd/firmware_update/fw-1";
    assert_eq!(started.json()["topic"], topic);

    let command = rig.command(topic).await;
    let tedge_url = command["tedgeUrl"].as_str().expect("a tedgeUrl").to_owned();
    assert_eq!(
        tedge_url,
        rig.agent
            .url("/te/v1/files/child1/firmware_update/fw.bin-fw-1")
    );
    assert_eq!(
        command,
        json!({"status":"init","tedgeUrl":tedge_url,"remoteUrl":origin.url(),"sha256":sha,
               "name":"fw","version":"1.2"})
    );
    let served = http::get(&tedge_url).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body.as_ref(), FIRMWARE);
    assert_eq!(served.header("x-checksum-sha256"), Some(sha.as_str()));

    let mut executing = command.clone();
    executing["status"] = json!("executing");
    rig.report(topic, &executing).await;
    rig.wait_status("fw-1", "executing").await;
    let mut done = command.clone();
    done["status"] = json!("successful");
    rig.report(topic, &done).await;
    let op = rig.wait_status("fw-1", "successful").await;
    assert_eq!(
        statuses(&op),
        ["preparing", "init", "executing", "successful"]
    );

    // After keep_final the retained command is cleared and the served file removed.
    rig.child
        .expect_message("the cleared command", |m| {
            m.topic == topic && m.payload.is_empty()
        })
        .await;
    http::get_until(&tedge_url, |r| r.status == 404).await;
    assert_eq!(origin.full_downloads(), 1);
}

#[tokio::test]
async fn two_children_updated_from_one_url_download_it_once() {
    let rig = Rig::start(
        Duration::from_secs(60),
        &[("c1", &["firmware_update"]), ("c2", &["firmware_update"])],
    )
    .await;
    let origin = Origin::start(FIRMWARE).await;
    let sha = sha256_hex(FIRMWARE);
    for child in ["c1", "c2"] {
        let started = rig
            .start_op(
                json!({"entity": format!("device/{child}//"), "operation":"firmware_update",
                "cmd_id": format!("up-{child}"), "url": origin.url(), "sha256": sha}),
            )
            .await;
        assert_eq!(started.status, 201, "{}", started.text());
    }
    for child in ["c1", "c2"] {
        let command = rig
            .command(&format!(
                "te/device/{child}///cmd/firmware_update/up-{child}"
            ))
            .await;
        let served = http::get(command["tedgeUrl"].as_str().unwrap()).await;
        assert_eq!(served.body.as_ref(), FIRMWARE, "{child}");
    }
    assert_eq!(origin.full_downloads(), 1, "{:?}", origin.requests());
}

#[tokio::test]
async fn a_digest_mismatch_fails_the_operation_before_the_child_is_told() {
    let rig = Rig::start(Duration::from_secs(60), &[("child1", &["firmware_update"])]).await;
    let origin = Origin::start(FIRMWARE).await;
    let wrong = sha256_hex(b"something else");
    let started = rig
        .start_op(
            json!({"entity":"device/child1//","operation":"firmware_update","cmd_id":"bad",
            "url": origin.url(), "sha256": wrong}),
        )
        .await;
    assert_eq!(started.status, 201);
    let op = rig.wait_status("bad", "failed").await;
    let reason = op["reason"].as_str().unwrap();
    assert!(
        reason.contains("sha256") || reason.contains("SHA-256"),
        "{reason}"
    );
    assert_eq!(statuses(&op), ["preparing", "failed"]);
    let served = http::get(
        &rig.agent
            .url("/te/v1/files/child1/firmware_update/fw.bin-bad"),
    )
    .await;
    assert_eq!(served.status, 404);
    rig.child
        .expect_nothing("te/device/child1///cmd/firmware_update/bad")
        .await;
}

#[tokio::test]
async fn a_silent_child_times_out_and_a_cancel_fails_and_clears_the_command() {
    let rig = Rig::start(
        Duration::from_secs(60),
        &[("child1", &["restart", "custom"])],
    )
    .await;
    let started = rig
        .start_op(
            json!({"entity":"device/child1//","operation":"restart","cmd_id":"r1","timeout_s":1}),
        )
        .await;
    assert_eq!(started.status, 201);
    let topic = "te/device/child1///cmd/restart/r1";
    assert_eq!(rig.command(topic).await, json!({"status":"init"}));
    let failed = rig.command(topic).await;
    assert_eq!(failed, json!({"status":"failed","reason":"timeout"}));
    let op = rig.wait_status("r1", "failed").await;
    assert_eq!(op["reason"], "timeout");

    let started = rig
        .start_op(json!({"entity":"device/child1//","operation":"custom","cmd_id":"c1","payload":{"x":1}}))
        .await;
    assert_eq!(started.status, 201);
    let topic = "te/device/child1///cmd/custom/c1";
    assert_eq!(rig.command(topic).await, json!({"status":"init","x":1}));
    let cancelled = http::delete(&rig.agent.url("/te/v1/operations/c1")).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["reason"], "cancelled");
    assert_eq!(
        rig.command(topic).await,
        json!({"status":"failed","reason":"cancelled","x":1})
    );
    let cleared = rig.child.expect(topic).await;
    assert!(cleared.payload.is_empty());
    let again = http::delete(&rig.agent.url("/te/v1/operations/c1")).await;
    http::assert_error(&again, 409, "operation c1 is already failed");
}

#[tokio::test]
async fn refusals_unknown_entity_no_capability_duplicate_and_bad_requests() {
    let rig = Rig::start(Duration::from_secs(60), &[("child1", &["restart"])]).await;
    let unknown = rig
        .start_op(json!({"entity":"device/nobody//","operation":"restart"}))
        .await;
    http::assert_error(
        &unknown,
        404,
        "The specified entity: device/nobody// does not exist in the entity store",
    );
    let no_cap = rig
        .start_op(json!({"entity":"device/child1//","operation":"firmware_update"}))
        .await;
    assert_eq!(no_cap.status, 409);
    let forced = rig
        .start_op(json!({"entity":"device/child1//","operation":"firmware_update","force":true,"cmd_id":"f"}))
        .await;
    assert_eq!(forced.status, 201, "{}", forced.text());
    let first = rig
        .start_op(json!({"entity":"device/child1//","operation":"restart","cmd_id":"r1"}))
        .await;
    assert_eq!(first.status, 201);
    let second = rig
        .start_op(json!({"entity":"device/child1//","operation":"restart"}))
        .await;
    http::assert_error(
        &second,
        409,
        "device/child1// is already running a restart operation: r1",
    );
    let bad = rig
        .start_op(json!({"entity":"device/child1//","operation":"restart","sha256":"x"}))
        .await;
    http::assert_error(&bad, 400, "sha256 must be 64 hex digits: \"x\"");
    let missing = http::get(&rig.agent.url("/te/v1/operations/nope")).await;
    http::assert_error(&missing, 404, "operation not found: nope");
    let listed = http::get(
        &rig.agent
            .url("/te/v1/operations?entity=device/child1&operation=restart"),
    )
    .await;
    assert_eq!(listed.status, 200);
    let ids: Vec<Value> = listed
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|o| o["cmd_id"].clone())
        .collect();
    assert_eq!(ids, [json!("r1")]);
    let missing_file = rig
        .start_op(json!({"entity":"device/child1//","operation":"firmware_update","force":true,"file":"no/such.bin"}))
        .await;
    http::assert_error(
        &missing_file,
        404,
        "File not found in the file store: \"no/such.bin\"",
    );
    let wrong_method = http::request(
        reqwest::Method::PATCH,
        &rig.agent.url("/te/v1/operations"),
        "",
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD, POST"));
}

#[tokio::test]
async fn an_operation_survives_an_agent_restart_and_a_status_sent_meanwhile_is_not_lost() {
    let mut rig = Rig::start(Duration::from_secs(60), &[("child1", &["restart"])]).await;
    let started = rig
        .start_op(json!({"entity":"device/child1//","operation":"restart","cmd_id":"r1"}))
        .await;
    assert_eq!(started.status, 201);
    let topic = "te/device/child1///cmd/restart/r1";
    assert_eq!(rig.command(topic).await, json!({"status":"init"}));
    rig.report(topic, &json!({"status":"executing"})).await;
    rig.wait_status("r1", "executing").await;

    rig.agent.stop().await;
    // The child finishes while the agent is away; its status is retained on the broker.
    rig.report(topic, &json!({"status":"successful"})).await;
    rig.agent.restart().await;

    let op = rig.wait_status("r1", "successful").await;
    assert_eq!(
        statuses(&op),
        ["preparing", "init", "executing", "successful"]
    );
    // The history is in the entity's state document too.
    let state = http::get(&rig.agent.url("/te/v1/entities/device/child1///state")).await;
    let operations = &state.json()["operations"];
    assert_eq!(operations[0]["cmd_id"], "r1");
    assert_eq!(statuses(&operations[0]), statuses(&op));
}

#[tokio::test]
async fn a_download_cut_half_way_is_resumed_and_served_whole() {
    let rig = Rig::start(Duration::from_secs(60), &[("child1", &["firmware_update"])]).await;
    let origin = Origin::start(FIRMWARE).await;
    origin.cut_first_after(FIRMWARE.len() / 2);
    let started = rig
        .start_op(
            json!({"entity":"device/child1//","operation":"firmware_update","cmd_id":"cut",
            "url": origin.url(), "sha256": sha256_hex(FIRMWARE)}),
        )
        .await;
    assert_eq!(started.status, 201);
    let command = rig
        .command("te/device/child1///cmd/firmware_update/cut")
        .await;
    let served = http::get(command["tedgeUrl"].as_str().unwrap()).await;
    assert_eq!(served.body.as_ref(), FIRMWARE);
    let ranges: Vec<Option<String>> = origin.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(
        ranges,
        [None, Some(format!("bytes={}-", FIRMWARE.len() / 2))]
    );
}

#[tokio::test]
async fn a_success_reported_while_the_agent_was_down_beats_a_timeout_that_ran_out_meanwhile() {
    let mut rig = Rig::start(Duration::from_secs(60), &[("child1", &["restart"])]).await;
    let started = rig
        .start_op(
            json!({"entity":"device/child1//","operation":"restart","cmd_id":"r1","timeout_s":2}),
        )
        .await;
    assert_eq!(started.status, 201);
    let topic = "te/device/child1///cmd/restart/r1";
    assert_eq!(rig.command(topic).await, json!({"status":"init"}));
    rig.report(topic, &json!({"status":"executing"})).await;
    rig.wait_status("r1", "executing").await;
    rig.agent.stop().await;
    rig.report(topic, &json!({"status":"successful"})).await;
    // The deadline passes while the agent is away (a deadline, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.agent.restart().await;
    let op = rig.wait_status("r1", "successful").await;
    assert_eq!(
        statuses(&op),
        ["preparing", "init", "executing", "successful"]
    );
    let retained = common::mqtt::retained(rig.broker.port(), &[topic]).await;
    assert_eq!(
        retained,
        [(topic.to_owned(), r#"{"status":"successful"}"#.to_owned())]
    );
}

#[tokio::test]
async fn a_cancel_while_the_file_is_downloading_leaves_nothing_served_or_cached() {
    let rig = Rig::start(Duration::from_secs(60), &[("child1", &["firmware_update"])]).await;
    let origin = Origin::start(FIRMWARE).await;
    origin.fail_next(2);
    let started = rig
        .start_op(
            json!({"entity":"device/child1//","operation":"firmware_update","cmd_id":"k",
            "url": origin.url()}),
        )
        .await;
    assert_eq!(started.status, 201);
    let cancelled = http::delete(&rig.agent.url("/te/v1/operations/k")).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["reason"], "cancelled");
    let served = rig
        .agent
        .url("/te/v1/files/child1/firmware_update/fw.bin-k");
    let cache = rig.agent.config.files.dir.join(".edge-agent").join("cache");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let downloaded = origin.full_downloads() == 1;
        let cached = std::fs::read_dir(&cache)
            .map(|d| d.flatten().any(|e| e.file_name().len() == 64))
            .unwrap_or(false);
        if downloaded && !cached {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the download did not end and leave the cache (downloaded: {downloaded}, cached: {cached})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http::get(&served).await.status, 404);
    rig.child
        .expect_nothing("te/device/child1///cmd/firmware_update/k")
        .await;
}
