//! `edge-agent run` under a service manager (issue #6, "The unit: `Type=notify`…",
//! "`systemctl reload edge-agent` re-reads the config (SIGHUP)"): the real binary, a real
//! mosquitto, and the notify socket systemd would give it, a datagram socket in a temp dir.
//! The notifications are asserted as the exact datagrams sd_notify(3) defines; the commands
//! generated from the CLI definition for packaging (`man`, `completions`) and the container
//! health check (`health`) run as an operator would run them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::mosquitto::Broker;
use common::process::{self, AgentSetup};
use tokio::net::UnixDatagram;
use tokio::time::Instant;

/// Every notification expected comes within this time of what causes it.
const NOTIFY_WITHIN: Duration = Duration::from_secs(10);
/// WATCHDOG_USEC given to the agent: it feeds the watchdog every half of it.
const WATCHDOG_USEC: &str = "200000";

/// The manager's end of the notify socket, and every datagram it received.
struct Manager {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        Manager {
            socket,
            seen: Vec::new(),
        }
    }

    /// The next datagram for which `wanted` holds, skipping others (recorded in `seen`).
    async fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + NOTIFY_WITHIN;
        let mut buf = vec![0u8; 4096];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await;
            let n = match received {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("the notify socket failed: {e}"),
                Err(_) => panic!(
                    "no {what} within {NOTIFY_WITHIN:?}; received so far: {:?}",
                    self.seen
                ),
            };
            let message = String::from_utf8(buf[..n].to_vec()).expect("notifications are text");
            self.seen.push(message.clone());
            if wanted(&message) {
                return message;
            }
        }
    }
}

fn cloud_config(bridge_dir: &Path, clouds: &str) -> String {
    format!(
        "bridge:\n  dir: {}\n  clouds:{clouds}\n",
        serde_json::to_string(&bridge_dir.to_string_lossy()).expect("a JSON string")
    )
}

#[tokio::test]
async fn the_manager_hears_ready_status_watchdog_reload_and_stopping() {
    let broker = Broker::start().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket_path = dir.path().join("notify");
    let mut manager = Manager::bind(&socket_path);
    let bridge_dir = dir.path().join("bridges");
    let setup = AgentSetup::with_extra_config(broker.port(), cloud_config(&bridge_dir, " []"));
    let socket = socket_path.to_str().expect("a UTF-8 path");
    let mut agent = setup
        .start_with_env(&[("NOTIFY_SOCKET", socket), ("WATCHDOG_USEC", WATCHDOG_USEC)])
        .await;

    // READY comes first, once the HTTP API answers, with the state of the broker connection.
    let first = manager.until("READY", |_| true).await;
    assert!(
        first.starts_with("READY=1\nSTATUS=") && first.ends_with('\n'),
        "{first:?}"
    );
    manager
        .until("the connected status", |m| {
            m.contains("STATUS=ready: connected to the broker\n")
        })
        .await;
    for _ in 0..2 {
        let fed = manager
            .until("a watchdog ping", |m| m.contains("WATCHDOG"))
            .await;
        assert_eq!(fed, "WATCHDOG=1\n");
    }

    // `systemctl reload`: the file, now with a cloud, is read at once; READY again once the
    // bridge file is written.
    std::fs::write(
        setup.config_path(),
        std::fs::read_to_string(setup.config_path())
            .expect("the config")
            .replace(
                "  clouds: []\n",
                "  clouds:\n    - {name: site, type: mqtt, url: \"127.0.0.1:1\"}\n",
            ),
    )
    .expect("rewrite the config");
    agent.process.signal("HUP");
    let reloading = manager
        .until("RELOADING", |m| m.starts_with("RELOADING"))
        .await;
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(
        usec.parse::<u64>().is_ok_and(|usec| usec > 0),
        "{reloading:?}"
    );
    let ready = manager
        .until("READY after the reload", |m| m.starts_with("READY"))
        .await;
    assert_eq!(ready, "READY=1\nSTATUS=ready: connected to the broker\n");
    let rendered = std::fs::read_to_string(bridge_dir.join("site-bridge.conf"))
        .expect("the bridge file is written when READY comes");
    assert!(rendered.contains("address 127.0.0.1:1\n"), "{rendered}");

    // A configuration that does not load is refused; the agent goes on, ready again.
    std::fs::write(setup.config_path(), "mqtt: [\n").expect("break the config");
    agent.process.signal("HUP");
    manager
        .until("RELOADING", |m| m.starts_with("RELOADING"))
        .await;
    manager
        .until("READY after the refusal", |m| m.starts_with("READY"))
        .await;
    let state = agent.get("/readyz").await;
    assert_eq!(state.status, 200, "{:?}", state.body);

    agent.process.signal("TERM");
    let stopping = manager
        .until("STOPPING", |m| m.starts_with("STOPPING"))
        .await;
    assert_eq!(stopping, "STOPPING=1\nSTATUS=stopping\n");
    let status = agent.process.wait_exit(process::EXIT_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "{}", agent.process.stderr());
    assert!(
        !agent.process.stderr().contains("cannot notify"),
        "{}",
        agent.process.stderr()
    );
}

#[tokio::test]
async fn health_answers_0_when_ready_and_1_with_the_reason_when_not() {
    let broker = Broker::start().await;
    let setup = AgentSetup::new(broker.port());
    let agent = setup.start().await;
    agent.wait_ready(NOTIFY_WITHIN).await;
    let config = setup.config_path();
    let config = config.to_str().expect("a UTF-8 path");

    // From the configuration (127.0.0.1:<port>), as the container's HEALTHCHECK asks.
    let ready = process::run(&["--config", config, "health"], &[]).await;
    assert_eq!(ready.code, Some(0), "{}", ready.stderr);
    assert_eq!(ready.stdout, "{\"status\":\"ready\"}\n");

    // Liveness, at an explicit URL.
    let url = agent.url("");
    let live = process::run(&["health", "--live", "--url", &url], &[]).await;
    assert_eq!(live.code, Some(0), "{}", live.stderr);
    assert_eq!(live.stdout, "{\"status\":\"alive\"}\n");

    // No broker: not ready, and why.
    drop(broker);
    let healthz = agent.get("/healthz").await;
    assert_eq!(healthz.status, 200);
    let deadline = Instant::now() + NOTIFY_WITHIN;
    let down = loop {
        let down = process::run(&["--config", config, "health"], &[]).await;
        if down.code != Some(0) || Instant::now() > deadline {
            break down;
        }
        // Polling a state that changes on its own (the agent notices the broker is gone).
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(down.code, Some(1), "{}", down.stdout);
    assert_eq!(down.stdout, "");
    assert!(
        down.stderr.starts_with(&format!("edge-agent: GET {url}/readyz: 503 Service Unavailable: {{\"status\":\"disconnected\",\"reason\":\"")),
        "{}",
        down.stderr
    );

    // Nothing listening: 1, and the address tried.
    let port = process::free_port();
    let none = format!("http://127.0.0.1:{port}");
    let refused = process::run(&["health", "--url", &none], &[]).await;
    assert_eq!(refused.code, Some(1));
    assert!(
        refused
            .stderr
            .starts_with(&format!("edge-agent: cannot reach {none}/readyz")),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn the_manual_and_completions_come_from_the_command_line() {
    let page = process::run(&["man"], &[]).await;
    assert_eq!(page.code, Some(0), "{}", page.stderr);
    assert!(
        page.stdout.contains(".TH edge-agent 1"),
        "{:.200}",
        page.stdout
    );
    for command in ["run", "bridge", "files", "op", "child", "health"] {
        assert!(
            page.stdout
                .contains(&format!("edge\\-agent\\-{command}(1)")),
            "edge-agent(1) does not list {command}"
        );
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("man1");
    let out_arg = out.to_str().expect("a UTF-8 path");
    let pages = process::run(&["man", "--dir", out_arg], &[]).await;
    assert_eq!(pages.code, Some(0), "{}", pages.stderr);
    let run_page =
        std::fs::read_to_string(out.join("edge-agent-run.1")).expect("a page per command");
    assert!(run_page.contains(".TH edge-agent-run 1"), "{run_page:.200}");

    for (shell, start) in [
        ("bash", "_edge__agent() {"),
        ("zsh", "#compdef edge-agent"),
        ("fish", "# Print an optspec for argparse"),
    ] {
        let script = process::run(&["completions", shell], &[]).await;
        assert_eq!(script.code, Some(0), "{shell}: {}", script.stderr);
        assert!(
            script.stdout.starts_with(start),
            "{shell}: {:.80}",
            script.stdout
        );
        assert!(script.stdout.contains("health"), "{shell} misses `health`");
    }
    let unknown = process::run(&["completions", "tcsh"], &[]).await;
    assert_eq!(unknown.code, Some(2));
}
