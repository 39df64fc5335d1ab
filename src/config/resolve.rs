//! Raw → resolved: applies the defaults to a [`RawConfig`] and checks every value, recording a
//! [`Problem`] with its key for each bad one. Pure, except for reading the host name when
//! `device.id` or `http.public_url` defaults to it.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::raw::{ByteSize, RawConfig, RawHttpTls, RawTls, KIB, MIB};
use super::{
    host_name, public_url_for, Config, DeviceConfig, FilesConfig, HistoryConfig, HttpConfig,
    HttpTlsConfig, LogConfig, MqttConfig, OperationsConfig, Origins, Problem, TlsConfig,
    TwinConfig, DEFAULT_DATA_DIR,
};
use crate::topic::EntityTopicId;

/// MQTT cannot carry more: a packet's remaining length is at most 268,435,455 bytes.
const MQTT_MAX_PACKET: u64 = 256 * MIB;
const MIN_PACKET: u64 = KIB;

/// Applies the defaults and checks each value, pushing a problem for each bad one. Returns the
/// configuration only when every value could be resolved; the caller still checks `problems`.
pub(super) fn resolve(raw: RawConfig, o: &Origins, problems: &mut Vec<Problem>) -> Option<Config> {
    let mut bad = |key: &str, message: String| problems.push(o.at(key, message));
    let mqtt_defaults = MqttConfig::default();
    let twin_defaults = TwinConfig::default();
    let log_defaults = LogConfig::default();

    let device_id = match raw.device.id {
        Some(id) if id.trim().is_empty() => {
            bad("device.id", "must not be empty".into());
            id
        }
        Some(id) => id,
        None => host_name(),
    };

    let host = raw.mqtt.host.unwrap_or(mqtt_defaults.host);
    if host.trim().is_empty() {
        bad("mqtt.host", "must not be empty".into());
    }
    let port = raw.mqtt.port.unwrap_or(mqtt_defaults.port);
    if port == 0 {
        bad("mqtt.port", "must be between 1 and 65535".into());
    }
    let client_id = raw.mqtt.client_id.unwrap_or(mqtt_defaults.client_id);
    if client_id.is_empty() {
        // The persistent session (clean_session = false) is found by its client id.
        bad("mqtt.client_id", "must not be empty".into());
    }
    if raw.mqtt.password_file.is_some() && raw.mqtt.username.is_none() {
        bad(
            "mqtt.password_file",
            "needs mqtt.username: MQTT sends a password only with a user name".into(),
        );
    }
    let RawTls {
        ca_file,
        cert_file,
        key_file,
    } = raw.mqtt.tls;
    match (&cert_file, &key_file) {
        (Some(_), None) => bad("mqtt.tls.cert_file", "needs mqtt.tls.key_file".into()),
        (None, Some(_)) => bad("mqtt.tls.key_file", "needs mqtt.tls.cert_file".into()),
        _ => {}
    }
    let tls = match ca_file {
        Some(ca_file) => Some(TlsConfig {
            ca_file,
            cert_file,
            key_file,
        }),
        None => {
            if cert_file.is_some() || key_file.is_some() {
                bad(
                    "mqtt.tls.ca_file",
                    "must be set to use a client certificate (TLS is on when it is set)".into(),
                );
            }
            None
        }
    };
    let topic_root = raw.mqtt.topic_root.unwrap_or(mqtt_defaults.topic_root);
    if !crate::topic::is_plain_level(&topic_root) {
        bad(
            "mqtt.topic_root",
            format!(
                "must be one non-empty topic level without '/', '+', '#', spaces or control \
                 characters: {topic_root:?}"
            ),
        );
    }
    let max_packet_size = raw
        .mqtt
        .max_packet_size
        .map_or(mqtt_defaults.max_packet_size as u64, |s| s.0);
    if !(MIN_PACKET..=MQTT_MAX_PACKET).contains(&max_packet_size) {
        bad(
            "mqtt.max_packet_size",
            format!(
                "must be between 1KiB and 256MiB, not {}",
                ByteSize(max_packet_size)
            ),
        );
    }

    let bind = match raw.http.bind {
        None => Some(HttpConfig::default().bind),
        Some(text) => {
            let parsed = text.parse::<SocketAddr>().ok();
            if parsed.is_none() {
                bad(
                    "http.bind",
                    format!(
                        "must be an IP address and a port, like 127.0.0.1:8000 or [::]:8000, not {text:?}"
                    ),
                );
            }
            parsed
        }
    };
    let RawHttpTls {
        cert_file,
        key_file,
        client_ca_file,
    } = raw.http.tls;
    let http_tls = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(HttpTlsConfig {
            cert_file,
            key_file,
            client_ca_file,
        }),
        (cert_file, key_file) => {
            if cert_file.is_some() {
                bad("http.tls.cert_file", "needs http.tls.key_file".into());
            }
            if key_file.is_some() {
                bad("http.tls.key_file", "needs http.tls.cert_file".into());
            }
            if client_ca_file.is_some() {
                bad(
                    "http.tls.client_ca_file",
                    "needs http.tls.cert_file and http.tls.key_file: client certificates are \
                     asked for only over TLS"
                        .into(),
                );
            }
            None
        }
    };
    let public_url = match raw.http.public_url {
        Some(url) => {
            let url = url.trim_end_matches('/').to_owned();
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/'))
                || url.contains(char::is_whitespace)
            {
                bad(
                    "http.public_url",
                    format!("must be an http:// or https:// URL with a host, not {url:?}"),
                );
            }
            url
        }
        None => bind
            .map(|b| public_url_for(b, http_tls.is_some()))
            .unwrap_or_default(),
    };

    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        bad("data_dir", "must not be empty".into());
    }

    let files_defaults = FilesConfig::in_data_dir(&data_dir);
    let files_dir = raw.files.dir.unwrap_or(files_defaults.dir);
    let twin_dir = data_dir.join("twin");
    if files_dir.as_os_str().is_empty() {
        bad("files.dir", "must not be empty".into());
    } else if twin_dir.starts_with(&files_dir) || files_dir.starts_with(&twin_dir) {
        // Served over HTTP and swept by the TTL: it must not hold the persisted twin.
        bad(
            "files.dir",
            format!(
                "must not contain, or be inside, the twin's directory {}",
                twin_dir.display()
            ),
        );
    }
    let max_file_bytes = raw
        .files
        .max_file_bytes
        .map_or(files_defaults.max_file_bytes, |s| s.0);
    if max_file_bytes == 0 {
        bad("files.max_file_bytes", "must be larger than zero".into());
    }
    let quota_bytes = raw
        .files
        .quota_bytes
        .map_or(files_defaults.quota_bytes, |s| s.0);
    if quota_bytes == 0 {
        bad("files.quota_bytes", "must be larger than zero".into());
    }
    let ttl = raw.files.ttl.map(|i| i.0);
    if ttl.is_some_and(|t| t.is_zero()) {
        bad(
            "files.ttl",
            "must be longer than zero (leave it unset to keep files until deleted)".into(),
        );
    }

    let mut topic_id = |key: &str, value: Option<String>, default: EntityTopicId| match value {
        None => Some(default),
        Some(text) => match text.parse::<EntityTopicId>() {
            Ok(id) => Some(id),
            Err(e) => {
                bad(key, format!("{e}: {text:?}"));
                None
            }
        },
    };
    let main_device = topic_id(
        "twin.main_device",
        raw.twin.main_device,
        twin_defaults.main_device,
    );
    let agent_service = topic_id(
        "twin.agent_service",
        raw.twin.agent_service,
        twin_defaults.agent_service,
    );
    if main_device.is_some() && main_device == agent_service {
        bad(
            "twin.agent_service",
            "must differ from twin.main_device".into(),
        );
    }
    let max_entities = raw.twin.max_entities.unwrap_or(twin_defaults.max_entities);
    if max_entities < 2 {
        bad(
            "twin.max_entities",
            "must be at least 2: the main device and the agent's service count".into(),
        );
    }
    let telemetry_flush_interval = raw
        .twin
        .telemetry_flush_interval
        .map_or(twin_defaults.telemetry_flush_interval, |i| i.0);
    if telemetry_flush_interval.is_zero() {
        bad(
            "twin.telemetry_flush_interval",
            "must be longer than zero".into(),
        );
    }
    let history = HistoryConfig {
        points: raw
            .twin
            .history
            .points
            .unwrap_or(twin_defaults.history.points),
        max_age: raw
            .twin
            .history
            .max_age
            .map_or(twin_defaults.history.max_age, |i| i.0),
    };
    if history.max_age.is_zero() {
        bad("twin.history.max_age", "must be longer than zero".into());
    }
    let changes_kept = raw.twin.changes_kept.unwrap_or(twin_defaults.changes_kept);
    if changes_kept == 0 {
        bad(
            "twin.changes_kept",
            "must be at least 1: clients resume from the changes kept".into(),
        );
    }

    let level = raw.log.level.unwrap_or(log_defaults.level);
    if level.trim().is_empty() {
        bad("log.level", "must not be empty".into());
    } else if let Err(e) = level.parse::<tracing_subscriber::filter::Targets>() {
        bad("log.level", format!("not a log filter ({e}): {level:?}"));
    }

    let bridge = super::bridge::resolve(raw.bridge, &device_id, o, problems);
    let operations = resolve_operations(raw.operations, o, problems);

    Some(Config {
        device: DeviceConfig { id: device_id },
        mqtt: MqttConfig {
            host,
            port,
            client_id,
            username: raw.mqtt.username,
            password_file: raw.mqtt.password_file,
            tls,
            topic_root,
            max_packet_size: usize::try_from(max_packet_size).ok()?,
        },
        http: HttpConfig {
            bind: bind?,
            public_url,
            tls: http_tls,
        },
        data_dir,
        twin: TwinConfig {
            main_device: main_device?,
            agent_service: agent_service?,
            auto_register: raw
                .twin
                .auto_register
                .unwrap_or(twin_defaults.auto_register),
            max_entities,
            max_pending: raw.twin.max_pending.unwrap_or(twin_defaults.max_pending),
            events_kept: raw.twin.events_kept.unwrap_or(twin_defaults.events_kept),
            telemetry_flush_interval,
            history,
            changes_kept,
        },
        files: FilesConfig {
            dir: files_dir,
            max_file_bytes,
            quota_bytes,
            ttl,
        },
        bridge,
        operations,
        log: LogConfig {
            level,
            format: raw.log.format.unwrap_or(log_defaults.format),
        },
    })
}

fn resolve_operations(
    raw: super::raw::RawOperations,
    o: &Origins,
    problems: &mut Vec<Problem>,
) -> OperationsConfig {
    let defaults = OperationsConfig::default();
    let positive = |problems: &mut Vec<Problem>,
                    key: &str,
                    value: Option<super::raw::Interval>,
                    default| match value {
        Some(i) if i.0.is_zero() => {
            problems.push(o.at(key, "must be longer than zero"));
            default
        }
        Some(i) => i.0,
        None => default,
    };
    let keep_final = raw.keep_final.map_or(defaults.keep_final, |i| i.0);
    let default_timeout = positive(
        problems,
        "operations.default_timeout",
        raw.default_timeout,
        defaults.default_timeout,
    );
    let mut timeouts = defaults.timeouts;
    for (op, interval) in raw.timeouts.unwrap_or_default() {
        let key = format!("operations.timeouts.{op}");
        if !crate::topic::is_plain_level(&op) {
            problems.push(o.at(&key, format!("is not an operation name: {op:?}")));
            continue;
        }
        let timeout = positive(problems, &key, Some(interval), default_timeout);
        timeouts.insert(op, timeout);
    }
    OperationsConfig {
        keep_final,
        default_timeout,
        timeouts,
    }
}
