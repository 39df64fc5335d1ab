//! `edge-agent child` (issue #5, "A reference child device"): the real binary as the child, a
//! real mosquitto, and an in-process agent whose file store serves the downloads and takes the
//! uploads. The test plays the agent's operations side: it stores files, publishes retained
//! `init` commands and watches every message on the child's topics, asserting the exact
//! sequence of statuses and what the handlers saw and wrote.
//!
//! Handlers are small `sh` commands that leave evidence in the test's temp dir. Waits are on
//! messages, with timeouts; a `sleep` inside a handler only keeps it running, it never orders
//! the test.

mod common;

use common::data::{bytes, sha256_hex};

use std::time::Duration;

use common::agent::TestAgent;
use common::http;
use common::mosquitto::Broker;
use common::mqtt::{self, describe, Message, TestClient};
use common::process::{self, Process, EXIT_TIMEOUT};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::time::Instant;

const CHILD: &str = "te/device/c1//";
/// The child's commands and capabilities (not the twin fragments the agent publishes).
const COMMANDS: &str = "te/device/c1///cmd/#";
const REGISTRATION: &str = r#"{"@type":"child-device","name":"c1"}"#;
/// The longest wait for a command to reach its final status.
const FINAL_WAIT: Duration = Duration::from_secs(20);

fn cmd_topic(op: &str, id: &str) -> String {
    format!("te/device/c1///cmd/{op}/{id}")
}

/// A broker, an agent, an observer of the child's registration and command topics, and a
/// directory for the handlers' evidence.
struct Fixture {
    broker: Broker,
    agent: TestAgent,
    observer: TestClient,
    dir: TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let broker = Broker::start().await;
        let agent = TestAgent::start(&broker).await;
        let observer = TestClient::connect(broker.port()).await;
        observer.subscribe(CHILD).await;
        observer.subscribe(COMMANDS).await;
        let dir = tempfile::tempdir().expect("a temp dir");
        Fixture {
            broker,
            agent,
            observer,
            dir,
        }
    }

    /// A path in the test's directory, as a string for handler commands (temp paths are UTF-8
    /// and have no quote in them).
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(name)).ok()
    }

    /// Spawns `edge-agent child` for `device/c1//` against this broker and agent, with one
    /// `--handler` per `op=command` and `options` after them.
    fn spawn_child(&self, handlers: &[String], options: &[&str]) -> Process {
        let mut args = process::child_args(
            "device/c1//",
            &self.agent.url(""),
            self.broker.port(),
            &self.dir.path().join("work"),
            handlers,
        );
        args.extend(options.iter().map(|s| s.to_string()));
        Process::spawn(&args, &[])
    }

    /// [`Fixture::spawn_child`], then waits for its registration and one capability per
    /// handler, in that order.
    async fn child(&self, handlers: &[String], options: &[&str]) -> Process {
        let child = self.spawn_child(handlers, options);
        let mut expected = vec![(CHILD.to_owned(), REGISTRATION.to_owned())];
        for handler in handlers {
            let op = handler.split_once('=').expect("op=command").0;
            expected.push((format!("te/device/c1///cmd/{op}"), "{}".to_owned()));
        }
        let got = self.collect(&child, expected.len(), |_| false).await;
        assert_eq!(
            mqtt::pairs(&got),
            expected,
            "registration, then capabilities"
        );
        child
    }

    /// Stores `bytes` in the agent's file store at `path`; the file's URL on the agent.
    async fn store(&self, path: &str, bytes: &[u8]) -> String {
        let url = self.agent.url(&format!("/te/v1/files/{path}"));
        let response = http::request(Method::PUT, &url, bytes.to_vec()).await;
        assert_eq!(response.status, 201, "PUT {url}: {}", response.text());
        url
    }

    /// Publishes a retained command, as the agent does.
    async fn command(&self, op: &str, id: &str, payload: impl Into<bytes::Bytes>) {
        self.observer
            .publish(&cmd_topic(op, id), payload, true)
            .await;
    }

    /// Every message observed until `count` have arrived or one satisfies `last` (included);
    /// panics after [`FINAL_WAIT`] with what arrived and the child's stderr.
    async fn collect(
        &self,
        child: &Process,
        count: usize,
        mut last: impl FnMut(&Message) -> bool,
    ) -> Vec<Message> {
        let deadline = Instant::now() + FINAL_WAIT;
        let mut got = Vec::new();
        while got.len() < count || count == 0 {
            let Some(message) = self.observer.recv(deadline - Instant::now()).await else {
                panic!(
                    "timed out; observed:\n{}\nthe child's stderr:\n{}",
                    describe(&got),
                    child.stderr()
                );
            };
            let done = last(&message);
            got.push(message);
            if done {
                break;
            }
        }
        got
    }

    /// Every message observed until the command on `topic` is `successful` or `failed`.
    async fn until_final(&self, child: &Process, topic: &str) -> Vec<Message> {
        self.collect(child, 0, |m| m.topic == topic && is_final(&m.payload))
            .await
    }
}

fn is_final(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload)
        .is_ok_and(|p| matches!(p["status"].as_str(), Some("successful" | "failed")))
}

/// The payloads observed on `topic`, in order.
fn on(messages: &[Message], topic: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.topic == topic)
        .map(|m| m.payload_str().to_owned())
        .collect()
}

/// `payload` with `status` (and `reason`) set: what the child publishes.
fn with_status(payload: &Value, status: &str, reason: Option<&str>) -> Value {
    let mut payload = payload.clone();
    payload["status"] = status.into();
    if let Some(reason) = reason {
        payload["reason"] = reason.into();
    }
    payload
}

fn json_of(payloads: &[String]) -> Vec<Value> {
    payloads
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect()
}

/// SIGTERM, then asserts a clean exit (0) within the usual bound.
async fn terminate(child: &mut Process) {
    child.signal("TERM");
    let status = child.wait_exit(EXIT_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", child.stderr());
}

#[tokio::test]
async fn a_firmware_update_is_downloaded_verified_handed_to_its_handler_and_reported_successful() {
    let fx = Fixture::start().await;
    let firmware = bytes(300 * 1024 + 7, 1);
    fx.store("c1/firmware_update/fw.bin-1", &firmware).await;
    let handler = format!(
        "firmware_update=cp \"$EDGE_FILE\" '{seen}' && printf '%s\\n%s\\n%s\\n%s\\n%s' \
         \"$EDGE_OPERATION\" \"$EDGE_CMD_ID\" \"$EDGE_PAYLOAD\" \"$(basename \"$EDGE_FILE\")\" \
         \"${{EDGE_OUTPUT-unset}}\" > '{env}'",
        seen = fx.path("seen.bin"),
        env = fx.path("env.txt"),
    );
    let mut child = fx.child(&[handler], &[]).await;

    // The URL the agent writes names it by its own public URL (here unreachable, port 0): the
    // child fetches the store path from --gateway-url.
    let tedge_url = format!(
        "{}/te/v1/files/c1/firmware_update/fw.bin-1",
        fx.agent.config.http.public_url
    );
    let init = json!({
        "status": "init",
        "tedgeUrl": tedge_url,
        "sha256": sha256_hex(&firmware),
        "name": "fw",
        "version": "1.2",
    });
    let topic = cmd_topic("firmware_update", "1");
    fx.command("firmware_update", "1", init.to_string()).await;
    let seen = fx.until_final(&child, &topic).await;

    let statuses = on(&seen, &topic);
    assert_eq!(
        json_of(&statuses),
        [
            init.clone(),
            with_status(&init, "executing", None),
            with_status(&init, "successful", None),
        ]
    );
    // Compact, keys sorted, every field of the command kept.
    assert_eq!(
        statuses[2],
        format!(
            r#"{{"name":"fw","sha256":"{}","status":"successful","tedgeUrl":"{tedge_url}","version":"1.2"}}"#,
            sha256_hex(&firmware)
        )
    );
    assert!(
        fx.read("seen.bin") == Some(firmware.clone()),
        "the handler got the file byte for byte"
    );
    let env = String::from_utf8(fx.read("env.txt").expect("the handler's env.txt")).unwrap();
    assert_eq!(
        env,
        format!("firmware_update\n1\n{init}\nfw.bin-1\nunset"),
        "EDGE_OPERATION, EDGE_CMD_ID, EDGE_PAYLOAD, EDGE_FILE's name, no EDGE_OUTPUT"
    );
    assert_eq!(
        mqtt::retained(fx.broker.port(), &[&topic]).await,
        [(topic.clone(), statuses[2].clone())],
        "the final status is retained"
    );
    let listing = http::get(&fx.agent.url("/te/v1/entities")).await;
    assert!(
        process::topic_ids(&listing).contains(&"device/c1//".to_owned()),
        "the agent registered the child: {}",
        listing.text()
    );
    // The command's directory is gone with it.
    let work = std::fs::read_dir(fx.dir.path().join("work")).unwrap();
    assert_eq!(work.count(), 0, "the work dir is empty again");

    terminate(&mut child).await;
    assert!(
        child.stderr().contains("stopped gracefully"),
        "{}",
        child.stderr()
    );
}

#[tokio::test]
async fn a_failing_handler_fails_the_command_with_its_exit_status_and_last_stderr_line() {
    let fx = Fixture::start().await;
    let handler = "restart=echo rebooting; echo 'preparing' >&2; \
                   echo 'flash write failed at block 7' >&2; echo >&2; exit 3"
        .to_owned();
    let child = fx.child(&[handler], &[]).await;

    // No status at all means init; no tedgeUrl is needed for an operation without a file.
    let topic = cmd_topic("restart", "r-1");
    fx.command("restart", "r-1", "{}").await;
    let seen = fx.until_final(&child, &topic).await;
    assert_eq!(
        on(&seen, &topic),
        [
            "{}",
            r#"{"status":"executing"}"#,
            r#"{"reason":"handler exited with status 3: flash write failed at block 7","status":"failed"}"#,
        ]
    );
}

#[tokio::test]
async fn a_sha256_mismatch_fails_the_command_and_the_handler_never_runs() {
    let fx = Fixture::start().await;
    let firmware = bytes(4096, 2);
    let url = fx.store("c1/firmware_update/fw.bin-2", &firmware).await;
    let handler = format!("firmware_update=touch '{}'", fx.path("ran"));
    let child = fx.child(&[handler], &[]).await;

    let wrong = sha256_hex(b"another firmware");
    let init = json!({"status": "init", "tedgeUrl": url, "sha256": wrong});
    let topic = cmd_topic("firmware_update", "2");
    fx.command("firmware_update", "2", init.to_string()).await;
    let seen = fx.until_final(&child, &topic).await;
    let reason = format!(
        "sha256 mismatch: the downloaded file's SHA-256 is {}, the command's sha256 is {wrong}",
        sha256_hex(&firmware)
    );
    assert_eq!(
        json_of(&on(&seen, &topic)),
        [
            init.clone(),
            with_status(&init, "executing", None),
            with_status(&init, "failed", Some(&reason)),
        ]
    );
    assert_eq!(fx.read("ran"), None, "the handler did not run");
}

#[tokio::test]
async fn a_config_snapshot_written_by_its_handler_is_uploaded_to_tedge_url_before_success() {
    let fx = Fixture::start().await;
    let handler = "config_snapshot=printf 'listener 1883\\n# %s for %s\\n\\001\\377' \
                   \"$EDGE_CMD_ID\" \"$EDGE_OPERATION\" > \"$EDGE_OUTPUT\""
        .to_owned();
    let child = fx.child(&[handler], &[]).await;

    let url = fx.agent.url("/te/v1/files/c1/config_snapshot/mosquitto-5");
    let init = json!({"status": "init", "tedgeUrl": url, "type": "mosquitto"});
    let topic = cmd_topic("config_snapshot", "5");
    fx.command("config_snapshot", "5", init.to_string()).await;
    let seen = fx.until_final(&child, &topic).await;
    assert_eq!(
        json_of(&on(&seen, &topic)),
        [
            init.clone(),
            with_status(&init, "executing", None),
            with_status(&init, "successful", None),
        ]
    );
    // Asked once, right after `successful`: the upload was complete before it.
    let stored = http::get(&url).await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(
        stored.body.as_ref(),
        b"listener 1883\n# 5 for config_snapshot\n\x01\xff"
    );
}

#[tokio::test]
async fn a_config_snapshot_whose_handler_writes_nothing_fails() {
    let fx = Fixture::start().await;
    let child = fx.child(&["config_snapshot=true".to_owned()], &[]).await;
    let url = fx.agent.url("/te/v1/files/c1/config_snapshot/x-6");
    let topic = cmd_topic("config_snapshot", "6");
    fx.command("config_snapshot", "6", json!({"tedgeUrl": url}).to_string())
        .await;
    let seen = fx.until_final(&child, &topic).await;
    assert_eq!(
        on(&seen, &topic).last().unwrap(),
        &json!({"tedgeUrl": url, "status": "failed",
                "reason": "the handler wrote no file to EDGE_OUTPUT"})
        .to_string()
    );
    assert_eq!(http::get(&url).await.status, 404, "nothing was uploaded");
}

#[tokio::test]
async fn bad_commands_fail_at_once_with_a_reason_and_the_child_carries_on() {
    let fx = Fixture::start().await;
    let handler = format!(
        "firmware_update=echo \"$EDGE_CMD_ID\" >> '{}'",
        fx.path("runs")
    );
    let mut child = fx.child(&[handler], &[]).await;

    let cases: [(&str, &str, &[u8], &str); 5] = [
        (
            "firmware_update",
            "b1",
            b"not json",
            r#"{"reason":"invalid command payload: not JSON (expected ident at line 1 column 2)","status":"failed"}"#,
        ),
        (
            "firmware_update",
            "b2",
            b"[1,2]",
            r#"{"reason":"invalid command payload: not a JSON object","status":"failed"}"#,
        ),
        (
            "firmware_update",
            "b3",
            br#"{"status":"init","name":"fw"}"#,
            r#"{"name":"fw","reason":"a firmware_update command needs a tedgeUrl to download from","status":"failed"}"#,
        ),
        (
            "firmware_update",
            "b4",
            br#"{"tedgeUrl":"/te/v1/files/c1/x","sha256":"abc"}"#,
            r#"{"reason":"invalid command payload: sha256 \"abc\" is not 64 hex digits","sha256":"abc","status":"failed","tedgeUrl":"/te/v1/files/c1/x"}"#,
        ),
        (
            "software_list",
            "b5",
            br#"{"status":"init"}"#,
            r#"{"reason":"no handler for software_list on this child","status":"failed"}"#,
        ),
    ];
    for (op, id, payload, expected) in cases {
        let topic = cmd_topic(op, id);
        fx.command(op, id, payload.to_vec()).await;
        let seen = fx.until_final(&child, &topic).await;
        assert_eq!(
            on(&seen, &topic),
            [
                String::from_utf8_lossy(payload).into_owned(),
                expected.to_owned()
            ],
            "refused without `executing`"
        );
    }
    assert_eq!(child.try_status(), None, "the child is still running");
    assert_eq!(fx.read("runs"), None, "no handler ran");
    terminate(&mut child).await;
}

#[tokio::test]
async fn commands_already_handled_are_not_run_again_after_a_redelivery_or_a_restart() {
    let fx = Fixture::start().await;
    let handler = format!("restart=echo \"$EDGE_CMD_ID\" >> '{}'", fx.path("runs"));
    let mut child = fx.child(std::slice::from_ref(&handler), &[]).await;
    let ok = |id: &str| {
        vec![
            r#"{"status":"init"}"#.to_owned(),
            r#"{"status":"executing"}"#.to_owned(),
            r#"{"status":"successful"}"#.to_owned(),
        ]
        .into_iter()
        .map(|p| (cmd_topic("restart", id), p))
        .collect::<Vec<_>>()
    };
    fx.command("restart", "1", r#"{"status":"init"}"#).await;
    let seen = fx.until_final(&child, &cmd_topic("restart", "1")).await;
    assert_eq!(mqtt::pairs(&seen), ok("1"));

    // A new process on the same session sees the retained `successful` and runs nothing.
    child.kill9().await;
    let child = fx.child(&[handler], &[]).await;
    fx.command("restart", "2", r#"{"status":"init"}"#).await;
    let seen = fx.until_final(&child, &cmd_topic("restart", "2")).await;
    assert_eq!(mqtt::pairs(&seen), ok("2"), "nothing but command 2 ran");

    // The same `init` again (a redelivery), then a new command: only the new one runs.
    fx.command("restart", "2", r#"{"status":"init"}"#).await;
    fx.command("restart", "3", r#"{"status":"init"}"#).await;
    let seen = fx.until_final(&child, &cmd_topic("restart", "3")).await;
    let mut expected = vec![(cmd_topic("restart", "2"), r#"{"status":"init"}"#.to_owned())];
    expected.extend(ok("3"));
    assert_eq!(mqtt::pairs(&seen), expected);
    assert_eq!(fx.read("runs").unwrap(), b"1\n2\n3\n");
}

#[tokio::test]
async fn commands_of_one_operation_run_one_at_a_time_while_other_operations_run_alongside() {
    let fx = Fixture::start().await;
    let log = fx.path("log");
    let go = fx.path("go");
    // `op_a` waits for `op_b` to run: were all operations serialized, it would wait forever.
    let op_a = format!(
        "op_a=echo \"start $EDGE_CMD_ID\" >> '{log}'; \
         while [ ! -e '{go}' ]; do sleep 0.02; done; echo \"end $EDGE_CMD_ID\" >> '{log}'"
    );
    let op_b = format!("op_b=touch '{go}'");
    let child = fx.child(&[op_a, op_b], &["--handler-timeout", "30s"]).await;

    fx.command("op_a", "1", "{}").await;
    fx.command("op_a", "2", "{}").await;
    let executing =
        |op: &str, id: &str| (cmd_topic(op, id), r#"{"status":"executing"}"#.to_owned());
    let seen = fx
        .collect(&child, 0, |m| {
            (m.topic.clone(), m.payload_str().to_owned()) == executing("op_a", "1")
        })
        .await;
    assert!(
        !mqtt::pairs(&seen).contains(&executing("op_a", "2")),
        "command 2 waits for command 1:\n{}",
        describe(&seen)
    );
    fx.command("op_b", "1", "{}").await;
    let seen = fx.until_final(&child, &cmd_topic("op_a", "2")).await;
    let pairs = mqtt::pairs(&seen);
    let at = |op: &str, id: &str, status: &str| {
        let pair = (cmd_topic(op, id), format!(r#"{{"status":"{status}"}}"#));
        pairs
            .iter()
            .position(|p| *p == pair)
            .unwrap_or_else(|| panic!("no {status} for {op}/{id}:\n{}", describe(&seen)))
    };
    // `op_b` started (its `executing` is queued before its handler runs) before `op_a`'s first
    // command could end; its own `successful` may come before or after that.
    assert!(at("op_b", "1", "executing") < at("op_a", "1", "successful"));
    assert!(at("op_a", "1", "successful") < at("op_a", "2", "executing"));
    assert_eq!(fx.read("log").unwrap(), b"start 1\nend 1\nstart 2\nend 2\n");
}

#[tokio::test]
async fn a_handler_past_its_time_limit_is_killed_and_its_command_fails() {
    let fx = Fixture::start().await;
    let handler = format!("restart=sleep 30; touch '{}'", fx.path("finished"));
    let child = fx.child(&[handler], &["--handler-timeout", "500ms"]).await;
    let topic = cmd_topic("restart", "t");
    fx.command("restart", "t", "{}").await;
    let seen = fx.until_final(&child, &topic).await;
    assert_eq!(
        on(&seen, &topic).last().unwrap(),
        r#"{"reason":"handler timed out after 0.5 s and was killed","status":"failed"}"#
    );
}

#[tokio::test]
async fn on_sigterm_a_running_command_may_finish_within_the_grace_period() {
    let fx = Fixture::start().await;
    let go = fx.path("go");
    let handler = format!("restart=while [ ! -e '{go}' ]; do sleep 0.02; done");
    let mut child = fx.child(&[handler], &["--shutdown-grace", "30s"]).await;
    let topic = cmd_topic("restart", "g");
    fx.command("restart", "g", "{}").await;
    fx.collect(&child, 0, |m| {
        m.topic == topic && m.payload_str() == r#"{"status":"executing"}"#
    })
    .await;
    child.signal("TERM");
    common::wait_until("the child to start stopping", EXIT_TIMEOUT, || async {
        child.stderr().contains("stopping")
    })
    .await;
    std::fs::write(&go, b"").unwrap();
    let seen = fx.until_final(&child, &topic).await;
    assert_eq!(on(&seen, &topic), [r#"{"status":"successful"}"#]);
    let status = child.wait_exit(EXIT_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", child.stderr());
    assert!(
        child.stderr().contains("stopped gracefully"),
        "{}",
        child.stderr()
    );
}

#[tokio::test]
async fn on_sigterm_a_command_still_running_after_the_grace_period_is_killed_and_fails() {
    let fx = Fixture::start().await;
    let handler = format!("restart=sleep 30; touch '{}'", fx.path("finished"));
    let mut child = fx.child(&[handler], &["--shutdown-grace", "200ms"]).await;
    let topic = cmd_topic("restart", "k");
    fx.command("restart", "k", "{}").await;
    fx.collect(&child, 0, |m| {
        m.topic == topic && m.payload_str() == r#"{"status":"executing"}"#
    })
    .await;
    terminate(&mut child).await;
    // Published before the DISCONNECT, so it is on the broker now.
    assert_eq!(
        mqtt::retained(fx.broker.port(), &[&topic]).await,
        [(
            topic.clone(),
            r#"{"reason":"interrupted: the child runner is stopping","status":"failed"}"#
                .to_owned()
        )]
    );
    assert!(
        child
            .stderr()
            .contains("stopped after killing what did not end in time"),
        "{}",
        child.stderr()
    );
}

#[tokio::test]
async fn a_command_the_agent_ends_meanwhile_is_stopped_and_the_child_stays_silent_on_it() {
    let fx = Fixture::start().await;
    let runs = fx.path("runs");
    // Command 1 hangs until killed; the others finish at once.
    let handler = format!(
        "restart=if [ \"$EDGE_CMD_ID\" = 1 ]; then sleep 30; fi; echo \"$EDGE_CMD_ID\" >> '{runs}'"
    );
    let child = fx.child(&[handler], &[]).await;
    let topic = cmd_topic("restart", "1");
    fx.command("restart", "1", "{}").await;
    fx.collect(&child, 0, |m| {
        m.topic == topic && m.payload_str() == r#"{"status":"executing"}"#
    })
    .await;
    // The agent cancels it. Were the handler still running, command 2 would wait 30 s for it.
    let cancelled = r#"{"reason":"cancelled","status":"failed"}"#;
    fx.command("restart", "1", cancelled).await;
    fx.command("restart", "2", "{}").await;
    let seen = fx.until_final(&child, &cmd_topic("restart", "2")).await;
    assert_eq!(
        on(&seen, &topic),
        [cancelled],
        "nothing after the cancellation"
    );
    assert_eq!(fx.read("runs").unwrap(), b"2\n");
    assert_eq!(
        mqtt::retained(fx.broker.port(), &[&topic]).await,
        [(topic.clone(), cancelled.to_owned())]
    );
}

#[tokio::test]
async fn invalid_options_exit_with_64_and_name_every_problem() {
    let finished = process::run(
        &[
            "child",
            "--entity",
            "device/c1/service/s",
            "--gateway-url",
            "http://127.0.0.1:1",
            "--topic-root",
            "a/b",
            "--handler",
            "restart=true",
            "--handler",
            "restart=false",
        ],
        &[],
    )
    .await;
    assert_eq!(finished.code, Some(64), "{finished:?}");
    assert_eq!(
        finished.stderr,
        "edge-agent: invalid child settings:\n  \
         --entity device/c1/service/s: a child device's topic id is device/<name>//\n  \
         --topic-root \"a/b\": a single non-empty topic level (no '/', '+', '#')\n  \
         --handler restart=false: restart has a handler already\n"
    );
    let finished = process::run(
        &[
            "child",
            "--entity",
            "device/c1//",
            "--gateway-url",
            "http://gw",
        ],
        &[],
    )
    .await;
    assert_eq!(
        finished.code,
        Some(2),
        "a handler is required: {finished:?}"
    );
}
