//! The integration-test harness: a real mosquitto per test, an MQTT test client and HTTP helpers.
//!
//! - [`browser`]: `Browser`, headless chromium driven over the DevTools protocol (the page).
//! - [`data`]: deterministic test bytes and their SHA-256.
//! - [`certs`]: `Pki`, a CA, server and client certificates made with `openssl` per test.
//! - [`mosquitto`]: `Broker`, a mosquitto child process on a free port in a temp dir.
//! - [`mqtt`]: `TestClient`, acknowledged publish/subscribe and message expectations;
//!   `(topic, payload)` pairs (`pairs`, `msgs`) and what a new subscriber gets (`retained`).
//! - [`http`]: one-shot reqwest helpers returning status, headers and body; exact assertions on
//!   answers.
//! - [`agent`]: `TestAgent`, the agent in-process; its own topics (`AGENT_TOPIC`, `AGENT_HEALTH`).
//! - [`origin`]: `Origin`, a remote HTTP server for the downloader: one file with `ETag` and
//!   ranges, request log and download count; it can cut, stall, fail (500), or answer 404.
//! - [`raw`]: raw HTTP/1.1 over TCP: unnormalized paths, bodies in parts, clients that vanish.
//! - [`process`]: the real `edge-agent` binary as a child process, killed on drop.
//! - [`twin`]: `System`, a broker, a ready agent, an input client and a `te/#` observer, with the
//!   "caught up" barrier; the one fixture of the twin's end-to-end tests (MQTT and HTTP).
//! - [`scenario`]: a proxy to cut the agent's connection, the broker's pid, traffic collection.
//! - [`bridge`]: a TLS "cloud" broker and a restartable local broker with a bridge directory, a
//!   persistent-session subscriber, and the bridge files and config of the bridge tests.
//!
//! Everything is per test (ports, directories, client ids), so tests run in parallel, and every
//! wait has a timeout. Each test binary uses a subset, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod agent;
pub mod bridge;
pub mod browser;
pub mod certs;
pub mod data;
pub mod http;
pub mod mosquitto;
pub mod mqtt;
pub mod origin;
pub mod process;
pub mod raw;
pub mod scenario;
pub mod sse;
pub mod twin;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Installs a tracing subscriber writing through the test harness (`RUST_LOG`, default
/// `info`); later calls are no-ops.
pub fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let info = || Targets::new().with_default(LevelFilter::INFO);
    let filter = match std::env::var("RUST_LOG") {
        Ok(level) if !level.trim().is_empty() => level.parse().unwrap_or_else(|_| info()),
        _ => info(),
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_ansi(false)
        .with_test_writer()
        .finish()
        .with(filter)
        .try_init();
}

/// Polls `condition` every 20 ms until it holds; panics after `timeout`, naming `what`.
/// For observable state (an HTTP answer, a file); never a substitute for an event to await.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, condition()).await {
            Ok(true) => return,
            Ok(false) if Instant::now() < deadline => tokio::time::sleep(POLL_INTERVAL).await,
            _ => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}
