//! The integration-test harness: a real mosquitto per test, an MQTT test client and HTTP helpers.
//!
//! - [`mosquitto`]: `Broker`, a mosquitto child process on a free port in a temp dir.
//! - [`mqtt`]: `TestClient`, acknowledged publish/subscribe and message expectations.
//! - [`http`]: one-shot reqwest helpers returning status, headers and body.
//! - [`process`]: the real `edge-agent` binary as a child process, killed on drop.
//! - [`twin_http`]: a broker, a ready agent and a bus watcher, with exact HTTP and MQTT assertions.
//! - [`scenario`]: a proxy to cut the agent's connection, broker signals, traffic collection.
//! - [`twin`]: `System`, a broker, a ready agent and observers, for the twin's end-to-end tests.
//!
//! Everything is per test (ports, directories, client ids), so tests run in parallel, and every
//! wait has a timeout. Each test binary uses a subset, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod agent;
pub mod http;
pub mod mosquitto;
pub mod mqtt;
pub mod process;
pub mod scenario;
pub mod twin;
pub mod twin_http;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Installs a tracing subscriber writing through the test harness (`RUST_LOG`, default
/// `info`); later calls are no-ops.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
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
