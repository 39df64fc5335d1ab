//! Building blocks for connection and persistence scenarios: a TCP proxy that cuts or holds off
//! the agent's broker connection while the broker stays up, the pid of a test's own mosquitto
//! (to freeze it or kill it without a save with `process::send_signal`), ordered collection of MQTT traffic, and small probes of
//! the agent (its state documents, its readiness, the bytes in its twin directory).
//!
//! It starts no broker and no agent itself: `mosquitto.rs` and `agent.rs` do. The agent's topics
//! are in `agent.rs`; `(topic, payload)` pairs and retained messages in `mqtt.rs`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::agent::{is_up_health, TestAgent, AGENT_HEALTH};
use super::http;
use super::mosquitto::Broker;
use super::mqtt::{describe, Message, TestClient};

/// How long the agent may take to reconnect: its back-off starts at 1 s and doubles.
pub const RECONNECT: Duration = Duration::from_secs(20);

/// The `down` payload of §8, exactly: the last will and the graceful-shutdown message.
pub fn down_health() -> String {
    format!(r#"{{"pid":{},"status":"down"}}"#, std::process::id())
}

/// A TCP proxy in front of a broker: point the agent's `mqtt.port` at [`Proxy::port`], then
/// [`Proxy::close`] cuts its connection (the broker sees an abrupt drop, as on a network
/// failure) and refuses new ones until [`Proxy::open`]. Lets a test arrange what happens on the
/// broker before the agent can come back, instead of racing the agent's reconnection.
pub struct Proxy {
    port: u16,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards each accepted connection to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("the proxy binds 127.0.0.1:0");
        let port = listener.local_addr().expect("the proxy's address").port();
        let (open, open_rx) = watch::channel(true);
        let task = tokio::spawn(accept_loop(listener, target, open_rx));
        Proxy { port, open, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts every forwarded connection now and refuses new ones.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Forwards new connections again.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: u16, open: watch::Receiver<bool>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        if !*open.borrow() {
            // Dropped unanswered: the client's CONNECT fails and it backs off.
            continue;
        }
        let mut open = open.clone();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                // Also ends when the proxy is dropped (the sender goes away).
                _ = open.wait_for(|open| !*open) => {}
            }
        });
    }
}

/// The pid of `broker`'s mosquitto process, found through its private config path in
/// `/proc/<pid>/cmdline`; for signals the harness does not offer (`process::send_signal`).
pub fn broker_pid(broker: &Broker) -> u32 {
    let conf = broker.dir().join("mosquitto.conf");
    let conf = conf.to_string_lossy();
    let entries = std::fs::read_dir("/proc").expect("/proc is readable");
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.iter().any(|a| *a == conf.as_bytes()) {
            return pid;
        }
    }
    panic!("no mosquitto process runs with {conf}");
}

/// Every message `client` receives, in arrival order, up to and including the first one that
/// satisfies `last`; panics after `timeout`, listing what did arrive.
pub async fn collect_through(
    client: &TestClient,
    what: &str,
    timeout: Duration,
    mut last: impl FnMut(&Message) -> bool,
) -> Vec<Message> {
    let deadline = Instant::now() + timeout;
    let mut collected = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv(left).await {
            Some(message) => {
                let done = last(&message);
                collected.push(message);
                if done {
                    return collected;
                }
            }
            None => panic!(
                "no {what} within {timeout:?}; received meanwhile:\n{}",
                describe(&collected)
            ),
        }
    }
}

/// True for a live (not retained) `up` health of the agent: its answer to a health check or
/// the announcement that ends a sync (§7.4 step 9, §8).
pub fn is_live_up_health(message: &Message) -> bool {
    !message.retain && is_up_health(message)
}

/// Waits until `client`, subscribed to the agent's health topic, has received the `up` health the
/// agent announced after its sync (retained or live, depending on who reached the broker first),
/// so that a later `up` can only be an answer to something the test did.
pub async fn expect_announced_up(client: &TestClient) {
    client
        .expect_message_within("the agent's announced up health", RECONNECT, |m| {
            m.topic == AGENT_HEALTH
                && serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["status"] == "up")
        })
        .await;
}

/// `GET url` → (status, JSON body).
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = http::get(url).await;
    (response.status, response.json())
}

/// Polls `/readyz` until it reports `status` (`ready`, `starting`, `disconnected`); returns the
/// body. Panics after `timeout`.
pub async fn wait_readiness(agent: &TestAgent, status: &str, timeout: Duration) -> Value {
    let url = agent.url("/readyz");
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = get_json(&url).await;
        if body["status"] == status {
            let expected_code = if status == "ready" { 200 } else { 503 };
            assert_eq!(code, expected_code, "/readyz {body}");
            return body;
        }
        if Instant::now() >= deadline {
            panic!("/readyz did not say {status:?} within {timeout:?}; last: {code} {body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether any file directly in `dir` contains `needle`: the twin's on-disk format is internal
/// (§7.2), but a unique JSON string value appears verbatim in whichever file holds it.
pub fn dir_contains(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        std::fs::read(entry.path())
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}
