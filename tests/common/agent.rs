//! The agent under test, started in-process with `edge_agent::app::start` on `127.0.0.1:0`, a
//! temp data dir and a real broker; or as the release-built binary, for crash tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_agent::app::{self, Agent};
use edge_agent::config::{
    BridgeConfig, Config, DeviceConfig, FilesConfig, HttpConfig, LogConfig, LogFormat, MqttConfig,
    OperationsConfig, TwinConfig,
};
use tempfile::TempDir;

use super::http;
use super::mosquitto::Broker;
use super::mqtt::Message;

/// The agent's own service topic and its sync-marker prefix.
pub const AGENT_TOPIC: &str = "te/device/main/service/edge-agent";
/// The agent's health topic (§8): `AGENT_TOPIC` + `/status/health`.
pub const AGENT_HEALTH: &str = "te/device/main/service/edge-agent/status/health";
/// Where a health check is requested (§8); the agent answers on [`AGENT_HEALTH`].
pub const AGENT_HEALTH_CHECK: &str = "te/device/main/service/edge-agent/cmd/health/check";
pub const AGENT_REGISTRATION: &str =
    r#"{"@parent":"device/main//","@type":"service","name":"edge-agent","type":"service"}"#;

/// True for the `up` health of this test process's agent (§8), retained or live.
pub fn is_up_health(m: &Message) -> bool {
    m.topic == AGENT_HEALTH
        && serde_json::from_slice::<serde_json::Value>(&m.payload)
            .is_ok_and(|v| v["status"] == "up" && v["pid"] == std::process::id())
}

/// The configuration for an agent on `broker`'s port, with its state in `data_dir`.
pub fn config(port: u16, data_dir: &Path) -> Config {
    Config {
        device: DeviceConfig {
            id: "test-device".into(),
        },
        mqtt: MqttConfig {
            host: "127.0.0.1".into(),
            port,
            client_id: "edge-agent".into(),
            username: None,
            password_file: None,
            tls: None,
            topic_root: "te".into(),
            max_packet_size: 16 * 1024 * 1024,
        },
        http: HttpConfig {
            bind: "127.0.0.1:0".parse().expect("a socket address"),
            public_url: "http://127.0.0.1:0".into(),
            tls: None,
        },
        data_dir: data_dir.to_path_buf(),
        twin: TwinConfig::default(),
        files: FilesConfig::in_data_dir(data_dir),
        bridge: BridgeConfig::default(),
        operations: OperationsConfig::default(),
        log: LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        },
    }
}

/// A running in-process agent and the data dir it owns.
pub struct TestAgent {
    agent: Option<Agent>,
    dir: TempDir,
    pub config: Config,
    base: String,
    /// How this test reaches an HTTPS agent; `None` for plain HTTP.
    client_tls: Option<http::ClientTls>,
}

impl TestAgent {
    /// Starts an agent against `broker` and waits until `/readyz` answers 200.
    pub async fn start(broker: &Broker) -> TestAgent {
        Self::start_with(broker, |_| {}).await
    }

    /// Starts with a config adjusted by `adjust`, and waits until ready.
    pub async fn start_with(broker: &Broker, adjust: impl FnOnce(&mut Config)) -> TestAgent {
        let agent = Self::launch_with(broker, adjust).await;
        agent.wait_ready().await;
        agent
    }

    /// Starts with a config adjusted by `adjust`, which must set `http.tls`, and waits until
    /// `/readyz` answers 200 to a client with `client_tls`.
    pub async fn start_https(
        broker: &Broker,
        client_tls: http::ClientTls,
        adjust: impl FnOnce(&mut Config),
    ) -> TestAgent {
        let mut agent = Self::launch_with(broker, adjust).await;
        assert!(
            agent.config.http.tls.is_some(),
            "start_https needs http.tls"
        );
        agent.client_tls = Some(client_tls);
        agent.wait_ready().await;
        agent
    }

    /// Starts without waiting for readiness (broker down, slow sync…).
    pub async fn launch_with(broker: &Broker, adjust: impl FnOnce(&mut Config)) -> TestAgent {
        super::init_tracing();
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = config(broker.port(), dir.path());
        adjust(&mut config);
        let agent = app::start(config.clone()).await.expect("the agent starts");
        let base = base_url(&config, &agent);
        TestAgent {
            agent: Some(agent),
            dir,
            config,
            base,
            client_tls: None,
        }
    }

    /// `http://` + the bound address, or `https://` when `http.tls` is set.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The running agent (its file store's counters, its address).
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the agent is running")
    }

    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.agent().http_addr()
    }

    /// A client for this agent: plain, or with the trust and identity given to `start_https`.
    pub fn client(&self) -> reqwest::Client {
        match &self.client_tls {
            Some(tls) => tls.client(),
            None => http::client(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn twin_dir(&self) -> PathBuf {
        self.dir.path().join("twin")
    }

    pub async fn wait_ready(&self) {
        let url = self.url("/readyz");
        super::wait_until("the agent to be ready", Duration::from_secs(20), || {
            let request = self.client().get(&url);
            async move { http::send(request).await.status == 200 }
        })
        .await;
    }

    /// Graceful stop (§8); asserts it finished within the grace period.
    pub async fn stop(&mut self) {
        if let Some(agent) = self.agent.take() {
            assert!(
                agent.shutdown().await,
                "the agent stops within its grace period"
            );
        }
    }

    /// Stops the agent the way a crash would: no flush, no `down` message.
    pub fn crash(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.abort();
        }
    }

    /// Starts the agent again on the same data dir (after `stop` or `crash`), without waiting
    /// for readiness.
    pub async fn relaunch(&mut self) {
        assert!(self.agent.is_none(), "stop or crash the agent first");
        let agent = app::start(self.config.clone())
            .await
            .expect("the agent starts again");
        self.base = base_url(&self.config, &agent);
        self.agent = Some(agent);
    }

    /// `stop` then `relaunch` then wait until ready.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.relaunch().await;
        self.wait_ready().await;
    }
}

fn base_url(config: &Config, agent: &Agent) -> String {
    let scheme = if config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", agent.http_addr())
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.crash();
    }
}
