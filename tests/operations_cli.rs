//! `edge-agent op start|list|show|cancel|fetch` (issue #5, "CLI"): the real binary against an
//! in-process agent, a real mosquitto, and as the child either the real runner
//! (`edge-agent child`, with small `sh` handlers that leave evidence in the test's directory) or
//! a plain MQTT client that announces a capability and never answers.
//!
//! Asserted exactly: the lines `op start --wait` prints and its exit code (0 successful, 1
//! failed, 2 timed out), the bytes the handler installed, the file `op fetch` downloads, the
//! `op list` table and the `op show` JSON, the one-line refusals. Waits are on processes,
//! messages and HTTP answers, each with a timeout; a `sleep` inside a handler only keeps it
//! running.

mod common;

use common::data::{bytes, sha256_hex};

use std::time::Duration;

use common::agent::TestAgent;
use common::http;
use common::mosquitto::Broker;
use common::mqtt::TestClient;
use common::process::{self, Finished, Process, EXIT_TIMEOUT};
use serde_json::{json, Value};
use tempfile::TempDir;

const CHILD: &str = "device/child1//";

/// A broker, an agent clearing finished commands after `keep_final`, and a directory for local
/// files and the handlers' evidence.
struct Fixture {
    broker: Broker,
    agent: TestAgent,
    dir: TempDir,
}

impl Fixture {
    async fn start(keep_final: Duration) -> Fixture {
        let broker = Broker::start().await;
        let agent = TestAgent::start_with(&broker, |c| c.operations.keep_final = keep_final).await;
        let dir = tempfile::tempdir().expect("a temp dir");
        Fixture { broker, agent, dir }
    }

    /// A path in the test's directory, as a string (temp paths are UTF-8, without quotes).
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join(name)).ok()
    }

    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["op".to_owned()];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(["--gateway-url".to_owned(), self.agent.url("")]);
        all
    }

    /// `edge-agent op <args> --gateway-url <agent>`, to its end.
    async fn op(&self, args: &[&str]) -> Finished {
        process::run(&self.args(args), &[]).await
    }

    /// The real child runner for `device/child1//`, with one `--handler` per `op=command`;
    /// returns once the agent knows every capability.
    async fn child(&self, handlers: &[String]) -> Process {
        self.child_named("child1", handlers).await
    }

    /// The real child runner for `device/<name>//`.
    async fn child_named(&self, name: &str, handlers: &[String]) -> Process {
        let args = process::child_args(
            &format!("device/{name}//"),
            &self.agent.url(""),
            self.broker.port(),
            &self.dir.path().join(format!("work-{name}")),
            handlers,
        );
        let child = Process::spawn(&args, &[]);
        for handler in handlers {
            let op = handler.split_once('=').expect("op=command").0;
            self.wait_capability_of(name, op).await;
        }
        child
    }

    /// A plain MQTT client that registers `device/child1//` and announces `ops`, and then only
    /// watches its command topics: a child that never answers.
    async fn silent_child(&self, ops: &[&str]) -> TestClient {
        let client = TestClient::connect(self.broker.port()).await;
        client.subscribe("te/device/child1///cmd/+/+").await;
        client
            .publish("te/device/child1//", r#"{"@type":"child-device"}"#, true)
            .await;
        for op in ops {
            client
                .publish(&format!("te/device/child1///cmd/{op}"), "{}", true)
                .await;
            self.wait_capability(op).await;
        }
        client
    }

    async fn wait_capability(&self, op: &str) {
        self.wait_capability_of("child1", op).await;
    }

    async fn wait_capability_of(&self, name: &str, op: &str) {
        let url = self
            .agent
            .url(&format!("/te/v1/entities/device/{name}///state"));
        let op = op.to_owned();
        http::get_until(&url, move |r| {
            r.status == 200 && r.json()["capabilities"].get(&op).is_some()
        })
        .await;
    }

    async fn operation(&self, cmd_id: &str) -> Value {
        let answer = http::get(&self.agent.url(&format!("/te/v1/operations/{cmd_id}"))).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()
    }

    /// The agent's store on disk.
    fn store_dir(&self) -> std::path::PathBuf {
        self.agent.config.files.dir.clone()
    }
}

fn topic(op: &str, cmd_id: &str) -> String {
    format!("te/device/child1///cmd/{op}/{cmd_id}")
}

/// `<cmd_id> <topic>` then the status lines.
fn printed(op: &str, cmd_id: &str, statuses: &[&str]) -> String {
    let mut out = format!("{cmd_id} {}\n", topic(op, cmd_id));
    for status in statuses {
        out.push_str(status);
        out.push('\n');
    }
    out
}

/// The cmd id `op start` printed first.
fn cmd_id_of(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no cmd id in {stdout:?}"))
        .to_owned()
}

fn statuses(op: &Value) -> Vec<String> {
    op["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_firmware_is_uploaded_installed_byte_exact_and_followed_to_success() {
    let fx = Fixture::start(Duration::from_secs(1)).await;
    let firmware = bytes(700 * 1024 + 3, 1);
    std::fs::write(fx.path("fw.bin"), &firmware).unwrap();
    let handler = format!(
        "firmware_update=cp \"$EDGE_FILE\" '{installed}' && printf '%s' \"$EDGE_PAYLOAD\" > '{payload}'",
        installed = fx.path("installed.bin"),
        payload = fx.path("payload.json"),
    );
    let _child = fx.child(&[handler]).await;

    let started = fx
        .op(&[
            "start",
            "firmware_update",
            "--entity",
            CHILD,
            "--file",
            &fx.path("fw.bin"),
            "--set",
            "name=fw",
            "--set",
            "version=1.2",
            "--wait",
        ])
        .await;

    assert_eq!(started.code, Some(0), "stderr:\n{}", started.stderr);
    let cmd_id = cmd_id_of(&started.stdout);
    let (prefix, rest) = cmd_id.split_at(4);
    let (millis, hex) = rest.split_once('-').expect("cli-<ms>-<hex>");
    assert_eq!(prefix, "cli-");
    assert!(millis.parse::<u64>().is_ok(), "{cmd_id}");
    assert!(
        hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cmd_id}"
    );
    assert_eq!(
        started.stdout,
        printed(
            "firmware_update",
            &cmd_id,
            &["init", "executing", "successful"]
        )
    );
    let path = format!("child1/firmware_update/fw.bin-{cmd_id}");
    let file_url = fx.agent.url(&format!("/te/v1/files/{path}"));
    let heading = format!(
        "uploading {} to {file_url}: {} bytes",
        fx.path("fw.bin"),
        firmware.len()
    );
    assert_eq!(
        started.stderr.lines().next(),
        Some(heading.as_str()),
        "{}",
        started.stderr
    );
    assert!(
        fx.read("installed.bin") == Some(firmware.clone()),
        "the handler installed the file byte for byte"
    );
    let payload: Value = serde_json::from_slice(&fx.read("payload.json").unwrap()).unwrap();
    assert_eq!(
        payload,
        json!({"status": "init", "tedgeUrl": file_url, "sha256": sha256_hex(&firmware),
               "name": "fw", "version": "1.2"}),
        "the command the child ran: served where it was uploaded, version as text"
    );
    let op = fx.operation(&cmd_id).await;
    assert_eq!(op["file"], path.as_str());
    assert_eq!(op["from_file"], path.as_str());
    assert_eq!(
        statuses(&op),
        ["preparing", "init", "executing", "successful"]
    );

    // After keep_final the upload, which was the served file, is gone, and the store keeps no
    // temp name of it.
    http::get_until(&file_url, |r| r.status == 404).await;
    let tmp = fx.store_dir().join(".edge-agent").join("tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_exits_1_with_its_reason() {
    let fx = Fixture::start(Duration::from_secs(60)).await;
    std::fs::write(fx.path("fw.bin"), b"a bad image").unwrap();
    let handler = "firmware_update=echo 'flash write failed at block 7' >&2; exit 3".to_owned();
    let _child = fx.child(&[handler]).await;

    let started = fx
        .op(&[
            "start",
            "firmware_update",
            "--entity",
            CHILD,
            "--file",
            &fx.path("fw.bin"),
            "--cmd-id",
            "fw-bad",
            "--wait",
        ])
        .await;

    let reason = "handler exited with status 3: flash write failed at block 7";
    assert_eq!(started.code, Some(1), "stderr:\n{}", started.stderr);
    assert_eq!(
        started.stdout,
        printed(
            "firmware_update",
            "fw-bad",
            &["init", "executing", &format!("failed: {reason}")]
        )
    );
    assert!(
        started
            .stderr
            .ends_with(&format!("edge-agent: operation fw-bad failed: {reason}\n")),
        "{}",
        started.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_never_answers_times_out_and_exits_2() {
    let fx = Fixture::start(Duration::from_secs(60)).await;
    let silent = fx.silent_child(&["restart"]).await;

    let started = fx
        .op(&[
            "start",
            "restart",
            "--entity",
            CHILD,
            "--cmd-id",
            "r-1",
            "--timeout",
            "1s",
            "--wait",
        ])
        .await;

    assert_eq!(started.code, Some(2), "stderr:\n{}", started.stderr);
    assert_eq!(
        started.stdout,
        printed("restart", "r-1", &["init", "failed: timeout"])
    );
    assert_eq!(
        started.stderr,
        "edge-agent: operation r-1 timed out: the child did not finish in time\n"
    );
    let topic = topic("restart", "r-1");
    silent.expect_payload(&topic, r#"{"status":"init"}"#).await;
    silent
        .expect_payload(&topic, r#"{"reason":"timeout","status":"failed"}"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_snapshot_is_followed_then_fetched_byte_exact() {
    let fx = Fixture::start(Duration::from_secs(60)).await;
    let handler =
        "config_snapshot=printf 'listener 1883\\n# %s\\n\\001\\377' \"$EDGE_CMD_ID\" > \"$EDGE_OUTPUT\""
            .to_owned();
    let _child = fx.child(&[handler]).await;

    let started = fx
        .op(&[
            "start",
            "config_snapshot",
            "--entity",
            CHILD,
            "--set",
            "type=mosquitto",
            "--wait",
        ])
        .await;

    assert_eq!(started.code, Some(0), "stderr:\n{}", started.stderr);
    let cmd_id = cmd_id_of(&started.stdout);
    assert_eq!(
        started.stdout,
        printed(
            "config_snapshot",
            &cmd_id,
            &["init", "executing", "successful"]
        )
    );
    let out = fx.path("out.conf");
    let fetched = fx.op(&["fetch", &cmd_id, &out]).await;
    assert_eq!(fetched.code, Some(0), "stderr:\n{}", fetched.stderr);
    let mut expected = format!("listener 1883\n# {cmd_id}\n").into_bytes();
    expected.extend([0x01, 0xff]);
    assert!(
        fx.read("out.conf") == Some(expected.clone()),
        "the file the child sent, byte for byte"
    );
    let url = fx.agent.url(&format!(
        "/te/v1/files/child1/config_snapshot/mosquitto-{cmd_id}"
    ));
    assert_eq!(
        fetched.stdout,
        format!(
            "downloaded {url} to {out}: {} bytes, sha256 {}\n",
            expected.len(),
            sha256_hex(&expected)
        )
    );

    // Only a successful upload-type operation has a file to fetch.
    let missing = fx.op(&["fetch", "nope", &out]).await;
    assert_eq!(missing.code, Some(1));
    assert_eq!(
        missing.stderr,
        "edge-agent: 404 Not Found: operation not found: nope\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_operation_is_cancelled_and_its_waiter_exits_1() {
    let fx = Fixture::start(Duration::from_secs(60)).await;
    let handler = format!("restart=touch '{}'; sleep 30", fx.path("running"));
    let mut child = fx.child(&[handler]).await;

    let mut waiter = Process::spawn(
        &fx.args(&[
            "start", "restart", "--entity", CHILD, "--cmd-id", "r-2", "--wait",
        ]),
        &[],
    );
    let url = fx.agent.url("/te/v1/operations/r-2");
    http::get_until(&url, |r| r.json()["status"] == "executing").await;

    let cancelled = fx.op(&["cancel", "r-2"]).await;
    assert_eq!(cancelled.code, Some(0), "stderr:\n{}", cancelled.stderr);
    assert_eq!(cancelled.stdout, "cancelled r-2\n");

    let status = waiter.wait_exit(EXIT_TIMEOUT).await;
    assert_eq!(status.code(), Some(1), "stderr:\n{}", waiter.stderr());
    assert_eq!(
        waiter.stdout(),
        printed(
            "restart",
            "r-2",
            &["init", "executing", "failed: cancelled"]
        )
    );
    assert_eq!(
        waiter.stderr(),
        "edge-agent: operation r-2 failed: cancelled\n"
    );
    assert!(fx.read("running").is_some(), "the handler had started");

    let again = fx.op(&["cancel", "r-2"]).await;
    assert_eq!(again.code, Some(1));
    assert_eq!(
        again.stderr,
        "edge-agent: 409 Conflict: operation r-2 is already failed\n"
    );
    // The child stays alive and usable after the cancellation.
    assert!(child.try_status().is_none(), "{}", child.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_a_table_and_show_the_operation_as_json() {
    let fx = Fixture::start(Duration::from_secs(60)).await;
    let _silent = fx.silent_child(&["restart", "custom_op"]).await;
    for (op, id, more) in [
        ("restart", "l-1", vec![]),
        (
            "custom_op",
            "l-2",
            vec!["--set", "mode=fast", "--set", "level:=3"],
        ),
    ] {
        let mut args = vec!["start", op, "--entity", CHILD, "--cmd-id", id];
        args.extend(more);
        let started = fx.op(&args).await;
        assert_eq!(started.code, Some(0), "stderr:\n{}", started.stderr);
        assert_eq!(started.stdout, printed(op, id, &[]));
        http::get_until(&fx.agent.url(&format!("/te/v1/operations/{id}")), |r| {
            r.json()["status"] == "init"
        })
        .await;
    }
    let cancelled = fx.op(&["cancel", "l-1"]).await;
    assert_eq!(cancelled.code, Some(0), "stderr:\n{}", cancelled.stderr);
    let first = fx.operation("l-1").await;
    let second = fx.operation("l-2").await;

    let listed = fx.op(&["list"]).await;
    assert_eq!(listed.code, Some(0), "stderr:\n{}", listed.stderr);
    let updated = |op: &Value| op["updated"].as_str().unwrap().to_owned();
    assert_eq!(
        listed.stdout,
        format!(
            "CMD ID  ENTITY           OPERATION  STATUS  UPDATED\n\
             l-1     device/child1//  restart    failed  {}\n\
             l-2     device/child1//  custom_op  init    {}\n",
            updated(&first),
            updated(&second)
        )
    );
    let filtered = fx
        .op(&["list", "--entity", "device/child1", "--status", "init"])
        .await;
    assert_eq!(
        filtered.stdout,
        format!(
            "CMD ID  ENTITY           OPERATION  STATUS  UPDATED\n\
             l-2     device/child1//  custom_op  init    {}\n",
            updated(&second)
        )
    );
    let none = fx.op(&["list", "--operation", "firmware_update"]).await;
    assert_eq!(none.stdout, "CMD ID  ENTITY  OPERATION  STATUS  UPDATED\n");

    let shown = fx.op(&["show", "l-2"]).await;
    assert_eq!(shown.code, Some(0), "stderr:\n{}", shown.stderr);
    assert!(
        shown
            .stdout
            .starts_with("{\n  \"cmd_id\": \"l-2\",\n  \"entity\": \"device/child1//\",\n"),
        "{}",
        shown.stdout
    );
    assert_eq!(
        serde_json::from_str::<Value>(&shown.stdout).unwrap(),
        second,
        "the agent's record, whole"
    );
    assert_eq!(
        second["payload"],
        json!({"status": "init", "mode": "fast", "level": 3})
    );
    assert_eq!(statuses(&second), ["preparing", "init"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_print_the_agents_status_and_message_and_leave_no_upload_behind() {
    let fx = Fixture::start(Duration::from_secs(60)).await;
    let _silent = fx.silent_child(&["restart", "firmware_update"]).await;
    let image = b"image".to_vec();
    std::fs::write(fx.path("fw.bin"), &image).unwrap();
    let upload_url = |id: &str| {
        fx.agent
            .url(&format!("/te/v1/files/child1/config_update/fw.bin-{id}"))
    };

    // Not announced: refused, and the upload made for it removed.
    let refused = fx
        .op(&[
            "start",
            "config_update",
            "--entity",
            CHILD,
            "--file",
            &fx.path("fw.bin"),
            "--cmd-id",
            "u-1",
        ])
        .await;
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stderr.ends_with(
            "edge-agent: 409 Conflict: device/child1// has not announced the config_update \
             operation (no retained cmd/config_update capability); give \"force\": true to send \
             it anyway\n"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stdout, "");
    assert_eq!(http::get(&upload_url("u-1")).await.status, 404);

    let unknown = fx
        .op(&["start", "restart", "--entity", "device/nobody//"])
        .await;
    assert_eq!(unknown.code, Some(1));
    assert_eq!(
        unknown.stderr,
        "edge-agent: 404 Not Found: The specified entity: device/nobody// does not exist in the \
         entity store\n"
    );

    // A local file that is not the one --sha256 names is never sent.
    let wrong = sha256_hex(b"another image");
    let mismatch = fx
        .op(&[
            "start",
            "firmware_update",
            "--entity",
            CHILD,
            "--file",
            &fx.path("fw.bin"),
            "--sha256",
            &wrong,
            "--cmd-id",
            "f-1",
        ])
        .await;
    assert_eq!(mismatch.code, Some(1));
    assert_eq!(
        mismatch.stderr,
        format!(
            "edge-agent: {}'s SHA-256 is {}, not {wrong} as given\n",
            fx.path("fw.bin"),
            sha256_hex(&image)
        )
    );
    let served = fx
        .agent
        .url("/te/v1/files/child1/firmware_update/fw.bin-f-1");
    assert_eq!(http::get(&served).await.status, 404);

    // A command id whose file exists already: the file is not replaced.
    let first = fx
        .op(&[
            "start",
            "firmware_update",
            "--entity",
            CHILD,
            "--file",
            &fx.path("fw.bin"),
            "--cmd-id",
            "f-2",
        ])
        .await;
    assert_eq!(first.code, Some(0), "stderr:\n{}", first.stderr);
    std::fs::write(fx.path("fw.bin"), b"another image").unwrap();
    let taken = fx
        .op(&[
            "start",
            "firmware_update",
            "--entity",
            CHILD,
            "--file",
            &fx.path("fw.bin"),
            "--cmd-id",
            "f-2",
        ])
        .await;
    assert_eq!(taken.code, Some(1));
    assert!(
        taken.stderr.ends_with(
            "edge-agent: command id f-2 is taken: child1/firmware_update/fw.bin-f-2 exists \
             already in the agent's file store\n"
        ),
        "{}",
        taken.stderr
    );
    let kept = http::get(
        &fx.agent
            .url("/te/v1/files/child1/firmware_update/fw.bin-f-2"),
    )
    .await;
    assert_eq!(kept.body.as_ref(), image.as_slice());

    let missing = fx.op(&["show", "nope"]).await;
    assert_eq!(missing.code, Some(1));
    assert_eq!(
        missing.stderr,
        "edge-agent: 404 Not Found: operation not found: nope\n"
    );
}

#[tokio::test]
async fn usage_errors_exit_2_and_an_unreadable_configuration_64() {
    let usage = process::run(&["op", "start", "restart"], &[]).await;
    assert_eq!(
        usage.code,
        Some(2),
        "--entity is required: {}",
        usage.stderr
    );
    let both = process::run(
        &[
            "op",
            "start",
            "x",
            "--entity",
            CHILD,
            "--file",
            "a",
            "--url",
            "http://gw/a",
        ],
        &[],
    )
    .await;
    assert_eq!(both.code, Some(2), "{}", both.stderr);

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let config = process::run(&["--config", missing.to_str().unwrap(), "op", "list"], &[]).await;
    assert_eq!(config.code, Some(64), "{}", config.stderr);
    assert!(
        config
            .stderr
            .starts_with("edge-agent: cannot read the configuration file"),
        "{}",
        config.stderr
    );
}

#[tokio::test]
async fn two_real_children_updated_from_one_remote_url_download_it_once_and_install_it() {
    let fx = Fixture::start(Duration::from_secs(60)).await;
    let image = bytes(300 * 1024, 11);
    let sha = sha256_hex(&image);
    let origin = common::origin::Origin::start(image.clone()).await;
    let mut children = Vec::new();
    for name in ["c1", "c2"] {
        let install = format!(
            "firmware_update=cp \"$EDGE_FILE\" {}",
            fx.path(&format!("{name}.bin"))
        );
        children.push(fx.child_named(name, &[install]).await);
    }
    let url = origin.url();
    let start = |name: &'static str| {
        let entity = format!("device/{name}//");
        let args = fx.args(&[
            "start",
            "firmware_update",
            "--entity",
            &entity,
            "--url",
            &url,
            "--sha256",
            &sha,
            "--set",
            "version=1.2",
            "--wait",
        ]);
        async move { process::run(&args, &[]).await }
    };
    let (one, two) = tokio::join!(start("c1"), start("c2"));
    for (name, done) in [("c1", one), ("c2", two)] {
        assert_eq!(
            done.code,
            Some(0),
            "{name}: {} {}",
            done.stdout,
            done.stderr
        );
        assert!(
            done.stdout.ends_with("successful\n"),
            "{name}: {}",
            done.stdout
        );
        assert_eq!(
            fx.read(&format!("{name}.bin")).as_deref(),
            Some(&image[..]),
            "{name}"
        );
    }
    assert_eq!(origin.full_downloads(), 1, "{:?}", origin.requests());
    drop(children);
}
