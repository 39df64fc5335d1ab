//! The agent's configuration (issue #2, spec/twin.md §1): the validated [`Config`] every other
//! module reads. Loading, environment overrides and validation are added by the config work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::topic::EntityTopicId;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub device: DeviceConfig,
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub data_dir: PathBuf,
    pub twin: TwinConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// The main device's external id (`device.id`); default: the host name.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// TLS is on when `mqtt.tls.ca_file` is set.
    pub tls: Option<TlsConfig>,
    pub topic_root: String,
    pub max_packet_size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    /// Base URL put in links for other devices, without a trailing `/`.
    pub public_url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TwinConfig {
    pub main_device: EntityTopicId,
    pub agent_service: EntityTopicId,
    pub auto_register: bool,
    pub max_entities: usize,
    pub max_pending: usize,
    pub events_kept: usize,
    pub telemetry_flush_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for TwinConfig {
    fn default() -> Self {
        TwinConfig {
            main_device: EntityTopicId::default_main(),
            agent_service: "device/main/service/edge-agent"
                .parse()
                .unwrap_or_else(|_| EntityTopicId::default_main()),
            auto_register: true,
            max_entities: 100_000,
            max_pending: 10_000,
            events_kept: 10,
            telemetry_flush_interval: Duration::from_secs(5),
        }
    }
}
