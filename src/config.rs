//! The agent's configuration (issue #2, spec/twin.md §1): YAML file + environment → validated
//! [`Config`], in one place.
//!
//! The pipeline, in [`from_yaml_str`]: the file is parsed into a YAML value tree; `EDGE_AGENT_*`
//! variables are merged into that tree; every key is checked on its own against the raw structs,
//! so that all unknown keys and wrong types are found at once; the checked tree is deserialized
//! into the raw structs; the defaults are applied and the values checked. Every [`Problem`] names
//! its key path and, when the value came from the file, its line. Besides reading the file and the
//! host name this module does no I/O: it does not check that the files it names exist.
//!
//! # Layout
//! - this file: the resolved [`Config`] and its defaults, [`ConfigError`], loading, the environment
//!   overrides, `config show`.
//! - `raw`: the file as typed, and the per-key check that uses it as the schema.
//! - `resolve`: raw → resolved, with the defaults and the value checks.
//! - `locate`: the line of a key in the file.

mod bridge;
mod locate;
mod raw;
mod resolve;

pub use bridge::{
    check_pattern, check_prefix, BridgeConfig, CloudAuth, CloudConfig, CloudKind, Direction,
    TopicRuleConfig, DEFAULT_BRIDGE_DIR,
};

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::topic::EntityTopicId;
use raw::{ByteSize, Interval, RawConfig};

/// The file read when neither `--config` nor `$EDGE_AGENT_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/edge-agent/edge-agent.yaml";

/// `data_dir` when the configuration does not set it.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/edge-agent";

/// The environment variable naming the config file; not a key override.
pub const CONFIG_PATH_VAR: &str = "EDGE_AGENT_CONFIG";

/// Prefix of the variables that override keys: `EDGE_AGENT_MQTT__PORT` sets `mqtt.port`.
pub const ENV_PREFIX: &str = "EDGE_AGENT_";

/// The documented default file (`edge-agent config default`): every key, its default and what it does.
pub const DEFAULT_YAML: &str = include_str!("../deploy/edge-agent.yaml");

/// Keys whose values `config show` masks. None of today's keys holds a secret inline (the password
/// lives in `mqtt.password_file`); an inline secret added later belongs here.
const SECRET_KEYS: &[&str] = &[];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub device: DeviceConfig,
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub data_dir: PathBuf,
    pub twin: TwinConfig,
    pub files: FilesConfig,
    pub bridge: BridgeConfig,
    pub operations: OperationsConfig,
    pub log: LogConfig,
}

/// Operations on child devices (`/te/v1/operations`).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationsConfig {
    /// How long a finished command stays on its topic before it is cleared.
    pub keep_final: Duration,
    /// How long a child may take to reach a final status, unless `timeouts` or the request
    /// says otherwise.
    pub default_timeout: Duration,
    /// Per operation type; the built-in ones (firmware and software updates: 1 h) unless set.
    pub timeouts: std::collections::BTreeMap<String, Duration>,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        OperationsConfig {
            keep_final: Duration::from_secs(60),
            default_timeout: Duration::from_secs(600),
            timeouts: [
                ("firmware_update".to_owned(), Duration::from_secs(3600)),
                ("software_update".to_owned(), Duration::from_secs(3600)),
            ]
            .into(),
        }
    }
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
    /// HTTPS only, when `http.tls.cert_file` and `http.tls.key_file` are set.
    pub tls: Option<HttpTlsConfig>,
}

impl HttpConfig {
    /// Where a client on this machine reaches the agent (`edge-agent health`): the bound address,
    /// with the loopback address in place of an unspecified one (0.0.0.0, [::]). With TLS,
    /// `public_url`: the server's certificate names the host, not an address.
    pub fn local_url(&self) -> String {
        if self.tls.is_some() {
            return self.public_url.clone();
        }
        let mut addr = self.bind;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{addr}")
    }
}

/// The HTTP server's certificate, and the CA its clients' certificates must chain to.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, a client certificate signed by this CA is required.
    pub client_ca_file: Option<PathBuf>,
}

/// The file transfer service (`/te/v1/files`).
#[derive(Debug, Clone, PartialEq)]
pub struct FilesConfig {
    /// The root of the store; default `<data_dir>/file-transfer`.
    pub dir: PathBuf,
    /// The largest file accepted (413 above it).
    pub max_file_bytes: u64,
    /// The most bytes all stored files may take together (507 above it).
    pub quota_bytes: u64,
    /// Files older than this are removed by a background sweep; `None`: kept until deleted.
    pub ttl: Option<Duration>,
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
    /// The measurement history kept per series (issue #7).
    pub history: HistoryConfig,
    /// Changes kept for `/te/v1/changes` clients to resume from (issue #7).
    pub changes_kept: usize,
}

/// `twin.history`: how much of each measurement series is kept, in memory and on disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryConfig {
    /// Points per series; 0 keeps no history.
    pub points: usize,
    /// Points older than this are dropped.
    pub max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for Config {
    /// The built-in defaults, used when the default config file does not exist.
    fn default() -> Self {
        Config {
            device: DeviceConfig::default(),
            mqtt: MqttConfig::default(),
            http: HttpConfig::default(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            twin: TwinConfig::default(),
            files: FilesConfig::in_data_dir(Path::new(DEFAULT_DATA_DIR)),
            bridge: BridgeConfig::default(),
            operations: OperationsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig { id: host_name() }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id: "edge-agent".to_owned(),
            username: None,
            password_file: None,
            tls: None,
            topic_root: "te".to_owned(),
            max_packet_size: 16 << 20,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        let bind = SocketAddr::from(([127, 0, 0, 1], 8000));
        HttpConfig {
            bind,
            public_url: public_url_for(bind, false),
            tls: None,
        }
    }
}

impl FilesConfig {
    /// The defaults, with the store in `<data_dir>/file-transfer`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        FilesConfig {
            dir: data_dir.join("file-transfer"),
            max_file_bytes: 1 << 30,
            quota_bytes: 10 << 30,
            ttl: None,
        }
    }
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
            history: HistoryConfig {
                points: 300,
                max_age: Duration::from_secs(3600),
            },
            changes_kept: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The default `http.public_url`: the bound address, or the host name when the listener is bound
/// to every address (0.0.0.0 or [::]), which other devices cannot use; `https://` with TLS.
fn public_url_for(bind: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if bind.ip().is_unspecified() {
        format!("{scheme}://{}:{}", host_name(), bind.port())
    } else {
        format!("{scheme}://{bind}")
    }
}

/// The host name, from the kernel; `localhost` if it cannot be read.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why no [`Config`] could be built. `main` exits with code 64 on either.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}", ProblemList { path: path.as_deref(), problems })]
    Invalid {
        /// The file, if the configuration came from one.
        path: Option<PathBuf>,
        /// Every problem found, in file order; those without a line come last.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems of an invalid configuration; empty for a file that could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, like `mqtt.port`; empty for a problem with the whole file (YAML syntax).
    pub key: String,
    /// The 1-based line in the file, when the value came from the file and serde could place it.
    pub line: Option<usize>,
    /// The environment variable the value came from, if it did.
    pub env: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            // Syntax errors: serde_yaml's message already says where.
            return f.write_str(&self.message);
        }
        f.write_str(&self.key)?;
        match (&self.env, self.line) {
            (Some(var), _) => write!(f, " ({var})")?,
            (None, Some(line)) => write!(f, " (line {line})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

struct ProblemList<'a> {
    path: Option<&'a Path>,
    problems: &'a [Problem],
}

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        if let Some(path) = self.path {
            write!(f, " in {}", path.display())?;
        }
        for problem in self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Loads the configuration from `--config FILE` (`cli_path`), else `$EDGE_AGENT_CONFIG`, else
/// [`DEFAULT_PATH`], and applies the `EDGE_AGENT_*` overrides. A missing default file means the
/// built-in defaults; a missing file that was named explicitly is an error. `env` is the process
/// environment (`std::env::vars()` in `main`), passed in so tests never touch the real one.
pub fn load(cli_path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    load_with_default(cli_path, env, Path::new(DEFAULT_PATH))
}

/// A duration as the configuration file writes it (`"500ms"`, `"5s"`, `"10m"`, `"1h"`, or whole
/// seconds), for command-line options that take one.
pub fn parse_duration(text: &str) -> Option<Duration> {
    text.parse::<Interval>().ok().map(|interval| interval.0)
}

/// The file the configuration is read from: `--config FILE` (`cli_path`), else
/// `$EDGE_AGENT_CONFIG`, else [`DEFAULT_PATH`] (which may not exist).
/// Made absolute, so that it names the same file wherever it is shown or read again.
pub fn path(cli_path: Option<&Path>, env: &[(String, String)]) -> PathBuf {
    let path = source(cli_path, env, Path::new(DEFAULT_PATH)).0;
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The file and whether it was named explicitly.
fn source<'a>(
    cli_path: Option<&'a Path>,
    env: &'a [(String, String)],
    default_path: &'a Path,
) -> (&'a Path, bool) {
    let env_path = env
        .iter()
        .rev()
        .find(|(name, value)| name == CONFIG_PATH_VAR && !value.is_empty())
        .map(|(_, value)| Path::new(value));
    match cli_path.or(env_path) {
        Some(path) => (path, true),
        None => (default_path, false),
    }
}

fn load_with_default(
    cli_path: Option<&Path>,
    env: &[(String, String)],
    default_path: &Path,
) -> Result<Config, ConfigError> {
    let (path, explicit) = source(cli_path, env, default_path);
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if !explicit && e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    from_yaml_str(&text, env).map_err(|e| match e {
        ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
            path: Some(path.to_owned()),
            problems,
        },
        other => other,
    })
}

/// Builds the configuration from the text of a config file (empty text: all defaults) and the
/// `EDGE_AGENT_*` overrides in `env`. Reports every problem at once.
pub fn from_yaml_str(text: &str, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: None,
        problems,
    };
    let mut tree = match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Null) => Value::Mapping(Mapping::new()),
        Ok(tree) => tree,
        Err(e) => {
            return Err(invalid(vec![Problem {
                key: String::new(),
                line: e.location().map(|l| l.line()),
                env: None,
                message: e.to_string(),
            }]))
        }
    };
    let mut origins = Origins {
        text,
        env: HashMap::new(),
    };
    let mut problems = Vec::new();
    if !tree.is_mapping() {
        problems.push(origins.problem(&[], "the file must hold a mapping of keys"));
        tree = Value::Mapping(Mapping::new());
    }
    apply_env(&mut tree, env, &mut origins.env);
    let mut bad_keys = Vec::new();
    raw::check_keys(&mut Vec::new(), &mut tree, &mut bad_keys);
    problems.extend(bad_keys.iter().map(|(path, m)| origins.problem(path, m)));

    let config = match RawConfig::deserialize(tree) {
        Ok(raw) => resolve::resolve(raw, &origins, &mut problems),
        // Unreachable when check_keys did its job; reported rather than trusted.
        Err(e) => {
            problems.push(origins.problem(&[], e.to_string()));
            None
        }
    };
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            problems.sort_by_key(|p| (p.line.is_none(), p.line));
            Err(invalid(problems))
        }
    }
}

/// Where the values came from: the file's text (to find lines) and the variables that set keys.
struct Origins<'a> {
    text: &'a str,
    /// Key path → the `EDGE_AGENT_*` variable that set it.
    env: HashMap<Vec<String>, String>,
}

impl Origins<'_> {
    fn problem(&self, path: &[String], message: impl Into<String>) -> Problem {
        let env = self.env.get(path).cloned();
        Problem {
            key: join_key(path),
            line: match env {
                Some(_) => None,
                None if path.is_empty() => None,
                None => locate::line_of(self.text, path),
            },
            env,
            message: message.into(),
        }
    }

    /// A problem with a known key, written as its dotted path (`"mqtt.port"`,
    /// `"bridge.clouds[0].name"`).
    fn at(&self, key: &str, message: impl Into<String>) -> Problem {
        self.problem(&split_key(key), message)
    }
}

/// A key path as shown in problems: segments joined with `.`, list indexes as `[i]` without a dot
/// before them (`bridge.clouds[0].auth.key_file`).
fn join_key(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if !key.is_empty() && !part.starts_with('[') {
            key.push('.');
        }
        key.push_str(part);
    }
    key
}

/// The inverse of [`join_key`] for keys without `.` or `[` in their names.
fn split_key(key: &str) -> Vec<String> {
    let mut path = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            path.push(name.to_owned());
        }
        while let Some(end) = rest.find(']') {
            path.push(rest[..=end].to_owned());
            rest = &rest[end + 1..];
        }
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Environment overrides, merged into the YAML value tree
// ---------------------------------------------------------------------------------------------

/// Merges `EDGE_AGENT_A__B=v` into the tree as `a.b: v`, creating sections as needed. An empty
/// value means the default (YAML null). Unknown keys are left for [`raw::check_keys`] to report.
fn apply_env(
    tree: &mut Value,
    env: &[(String, String)],
    origins: &mut HashMap<Vec<String>, String>,
) {
    for (name, text) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == CONFIG_PATH_VAR {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let keys: Vec<Value> = path.iter().map(|k| Value::String(k.clone())).collect();
        let value = env_value(&keys, text);
        set(tree, &keys, value);
        origins.insert(path, name.clone());
    }
}

fn set(node: &mut Value, path: &[Value], value: Value) {
    let Some((key, rest)) = path.split_first() else {
        *node = value;
        return;
    };
    if !node.is_mapping() {
        *node = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(map) = node {
        set(map.entry(key.clone()).or_insert(Value::Null), rest, value);
    }
}

/// The value of an override: the text as it is when the key takes a string (so `007` stays `007`),
/// else the text read as a YAML scalar (so `1884` is a number and `true` a boolean).
fn env_value(path: &[Value], text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    let as_string = Value::String(text.to_owned());
    if raw::check_one(path, as_string.clone()).is_ok() {
        return as_string;
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => as_string,
    }
}

// ---------------------------------------------------------------------------------------------
// `config show`
// ---------------------------------------------------------------------------------------------

impl Config {
    /// The effective configuration as YAML, every key included (`null` for an unset one), secrets
    /// masked. Reading the output back gives the same configuration, secrets aside.
    pub fn to_yaml_masked(&self) -> String {
        let mut tree = self.to_value();
        mask(&mut tree, SECRET_KEYS);
        serde_yaml::to_string(&tree).unwrap_or_default()
    }

    fn to_value(&self) -> Value {
        fn path(p: Option<&Path>) -> Value {
            p.map_or(Value::Null, |p| p.to_string_lossy().into_owned().into())
        }
        fn text(s: Option<&str>) -> Value {
            s.map_or(Value::Null, Value::from)
        }
        let Config {
            device,
            mqtt,
            http,
            data_dir,
            twin,
            files,
            bridge,
            operations,
            log,
        } = self;
        let tls = mqtt.tls.as_ref();
        let http_tls = http.tls.as_ref();
        section([
            ("device", section([("id", device.id.as_str().into())])),
            (
                "mqtt",
                section([
                    ("host", mqtt.host.as_str().into()),
                    ("port", mqtt.port.into()),
                    ("client_id", mqtt.client_id.as_str().into()),
                    ("username", text(mqtt.username.as_deref())),
                    ("password_file", path(mqtt.password_file.as_deref())),
                    (
                        "tls",
                        section([
                            ("ca_file", path(tls.map(|t| t.ca_file.as_path()))),
                            ("cert_file", path(tls.and_then(|t| t.cert_file.as_deref()))),
                            ("key_file", path(tls.and_then(|t| t.key_file.as_deref()))),
                        ]),
                    ),
                    ("topic_root", mqtt.topic_root.as_str().into()),
                    (
                        "max_packet_size",
                        ByteSize(mqtt.max_packet_size as u64).to_string().into(),
                    ),
                ]),
            ),
            (
                "http",
                section([
                    ("bind", http.bind.to_string().into()),
                    ("public_url", http.public_url.as_str().into()),
                    (
                        "tls",
                        section([
                            ("cert_file", path(http_tls.map(|t| t.cert_file.as_path()))),
                            ("key_file", path(http_tls.map(|t| t.key_file.as_path()))),
                            (
                                "client_ca_file",
                                path(http_tls.and_then(|t| t.client_ca_file.as_deref())),
                            ),
                        ]),
                    ),
                ]),
            ),
            ("data_dir", path(Some(data_dir))),
            (
                "twin",
                section([
                    ("main_device", twin.main_device.as_str().into()),
                    ("agent_service", twin.agent_service.as_str().into()),
                    ("auto_register", twin.auto_register.into()),
                    ("max_entities", twin.max_entities.into()),
                    ("max_pending", twin.max_pending.into()),
                    ("events_kept", twin.events_kept.into()),
                    (
                        "telemetry_flush_interval",
                        Interval(twin.telemetry_flush_interval).to_string().into(),
                    ),
                    (
                        "history",
                        section([
                            ("points", twin.history.points.into()),
                            ("max_age", Interval(twin.history.max_age).to_string().into()),
                        ]),
                    ),
                    ("changes_kept", twin.changes_kept.into()),
                ]),
            ),
            (
                "files",
                section([
                    ("dir", path(Some(&files.dir))),
                    (
                        "max_file_bytes",
                        ByteSize(files.max_file_bytes).to_string().into(),
                    ),
                    (
                        "quota_bytes",
                        ByteSize(files.quota_bytes).to_string().into(),
                    ),
                    (
                        "ttl",
                        files
                            .ttl
                            .map_or(Value::Null, |t| Interval(t).to_string().into()),
                    ),
                ]),
            ),
            (
                "bridge",
                section([
                    ("dir", path(Some(&bridge.dir))),
                    ("mosquitto_bin", path(Some(&bridge.mosquitto_bin))),
                    (
                        "restart_command",
                        Value::Sequence(
                            bridge
                                .restart_command
                                .iter()
                                .map(|a| a.as_str().into())
                                .collect(),
                        ),
                    ),
                    (
                        "clouds",
                        Value::Sequence(bridge.clouds.iter().map(cloud_value).collect()),
                    ),
                ]),
            ),
            (
                "operations",
                section([
                    (
                        "keep_final",
                        Interval(operations.keep_final).to_string().into(),
                    ),
                    (
                        "default_timeout",
                        Interval(operations.default_timeout).to_string().into(),
                    ),
                    (
                        "timeouts",
                        Value::Mapping(
                            operations
                                .timeouts
                                .iter()
                                .map(|(op, t)| {
                                    (Value::from(op.as_str()), Interval(*t).to_string().into())
                                })
                                .collect(),
                        ),
                    ),
                ]),
            ),
            (
                "log",
                section([
                    ("level", log.level.as_str().into()),
                    ("format", log.format.to_string().into()),
                ]),
            ),
        ])
    }
}

/// One cloud of `bridge.clouds` as `config show` prints it: every key, defaults applied.
fn cloud_value(cloud: &CloudConfig) -> Value {
    let path = |p: &Path| Value::from(p.to_string_lossy().into_owned());
    let none = || Value::Null;
    let (cert_file, key_file, username, password_file) = match &cloud.auth {
        CloudAuth::None => (none(), none(), none(), none()),
        CloudAuth::Certificate {
            cert_file,
            key_file,
        } => (path(cert_file), path(key_file), none(), none()),
        CloudAuth::Password {
            username,
            password_file,
        } => (
            none(),
            none(),
            username.as_deref().map_or(Value::Null, Value::from),
            path(password_file),
        ),
    };
    let prefix = |p: &Option<String>| p.as_deref().map_or(Value::Null, Value::from);
    let topics = cloud
        .topics
        .iter()
        .map(|t| {
            section([
                ("pattern", t.pattern.as_str().into()),
                ("direction", t.direction.as_str().into()),
                ("qos", u64::from(t.qos).into()),
                ("local_prefix", prefix(&t.local_prefix)),
                ("remote_prefix", prefix(&t.remote_prefix)),
            ])
        })
        .collect();
    let options = cloud
        .options
        .iter()
        .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
        .collect();
    section([
        ("name", cloud.name.as_str().into()),
        ("type", cloud.kind.as_str().into()),
        ("url", cloud.url().into()),
        ("device_id", cloud.device_id.as_str().into()),
        ("ca", cloud.ca.as_deref().map_or(Value::Null, path)),
        (
            "auth",
            section([
                ("cert_file", cert_file),
                ("key_file", key_file),
                ("username", username),
                ("password_file", password_file),
            ]),
        ),
        (
            "keepalive",
            Interval(Duration::from_secs(cloud.keepalive_secs.into()))
                .to_string()
                .into(),
        ),
        ("clean_session", cloud.clean_session.into()),
        ("local_prefix", cloud.local_prefix.as_str().into()),
        (
            "remote_prefix",
            match cloud.kind {
                CloudKind::Mqtt => cloud.remote_prefix.as_str().into(),
                _ => Value::Null,
            },
        ),
        ("default_topics", cloud.default_topics.into()),
        ("topics", Value::Sequence(topics)),
        ("options", Value::Mapping(options)),
    ])
}

fn section<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// Replaces the value at each dotted key path in `secrets` that is set (not null) with `********`.
fn mask(tree: &mut Value, secrets: &[&str]) {
    for key in secrets {
        let mut node = Some(&mut *tree);
        for part in key.split('.') {
            node = node.and_then(|n| n.get_mut(part));
        }
        if let Some(value) = node.filter(|v| !v.is_null()) {
            *value = Value::String("********".to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(text: &str, vars: &[(&str, &str)]) -> Vec<Problem> {
        match from_yaml_str(text, &env(vars)) {
            Ok(config) => panic!("expected problems, got {config:?}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn the_defaults_are_those_of_the_spec() {
        let c = Config::default();
        assert_eq!(c.device.id, host_name());
        assert_eq!(c.mqtt.host, "127.0.0.1");
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.client_id, "edge-agent");
        assert_eq!(c.mqtt.username, None);
        assert_eq!(c.mqtt.password_file, None);
        assert_eq!(c.mqtt.tls, None);
        assert_eq!(c.mqtt.topic_root, "te");
        assert_eq!(c.mqtt.max_packet_size, 16 * 1024 * 1024);
        assert_eq!(c.http.bind, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(c.http.public_url, "http://127.0.0.1:8000");
        assert_eq!(c.data_dir, Path::new("/var/lib/edge-agent"));
        assert_eq!(c.http.tls, None);
        assert_eq!(c.files.dir, Path::new("/var/lib/edge-agent/file-transfer"));
        assert_eq!(c.files.max_file_bytes, 1 << 30);
        assert_eq!(c.files.quota_bytes, 10 << 30);
        assert_eq!(c.files.ttl, None);
        assert_eq!(c.twin.main_device.as_str(), "device/main//");
        assert_eq!(
            c.twin.agent_service.as_str(),
            "device/main/service/edge-agent"
        );
        assert!(c.twin.auto_register);
        assert_eq!(c.twin.max_entities, 100_000);
        assert_eq!(c.twin.max_pending, 10_000);
        assert_eq!(c.twin.events_kept, 10);
        assert_eq!(c.twin.telemetry_flush_interval, Duration::from_secs(5));
        assert_eq!(c.twin.history.points, 300);
        assert_eq!(c.twin.history.max_age, Duration::from_secs(3600));
        assert_eq!(c.twin.changes_kept, 10_000);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(from_yaml_str("", &[]).unwrap(), Config::default());
        assert_eq!(
            from_yaml_str("# nothing\n", &[]).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn the_documented_default_file_gives_exactly_the_defaults() {
        assert_eq!(from_yaml_str(DEFAULT_YAML, &[]).unwrap(), Config::default());
    }

    #[test]
    fn the_documented_default_file_names_every_key() {
        let shown: Value = serde_yaml::from_str(&Config::default().to_yaml_masked()).unwrap();
        let documented: Value = serde_yaml::from_str(DEFAULT_YAML).unwrap();
        let mut missing = Vec::new();
        leaf_paths(&shown, "", &mut |path| {
            // device.id is commented out: its default is the host name.
            if path != "device.id" && lookup(&documented, path).is_none() {
                missing.push(path.to_owned());
            }
        });
        assert!(
            missing.is_empty(),
            "not in deploy/edge-agent.yaml: {missing:?}"
        );
        assert!(DEFAULT_YAML.contains("# id:"));
    }

    fn leaf_paths(v: &Value, prefix: &str, f: &mut dyn FnMut(&str)) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().unwrap();
                    let path = if prefix.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaf_paths(v, &path, f);
                }
            }
            _ => f(prefix),
        }
    }

    fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
        path.split('.').try_fold(v, |v, k| v.get(k))
    }

    #[test]
    fn the_dev_config_of_make_run_is_valid() {
        let c = from_yaml_str(include_str!("../deploy/edge-agent.dev.yaml"), &[]).unwrap();
        assert_eq!(c.data_dir, Path::new(".run/edge-agent"));
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("127.0.0.1", 1883));
        assert_eq!(c.http.bind, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(c.bridge.dir, Path::new(".run/bridges"));
    }

    #[test]
    fn a_full_file_sets_every_key() {
        let text = "\
device:
  id: gw-17
mqtt:
  host: broker.local
  port: 8883
  client_id: agent-17
  username: gw
  password_file: /etc/edge-agent/password
  tls:
    ca_file: /etc/ssl/ca.pem
    cert_file: /etc/ssl/cert.pem
    key_file: /etc/ssl/key.pem
  topic_root: te2
  max_packet_size: 512KiB
http:
  bind: \"[::1]:8080\"
  public_url: https://gw-17.example.com/
  tls:
    cert_file: /etc/ssl/http.pem
    key_file: /etc/ssl/http.key
    client_ca_file: /etc/ssl/clients.pem
data_dir: /tmp/agent
files:
  dir: /srv/files
  max_file_bytes: 64MiB
  quota_bytes: 2GiB
  ttl: 12h
twin:
  main_device: factory/gw17//
  agent_service: factory/gw17/service/agent
  auto_register: false
  max_entities: 50
  max_pending: 5
  events_kept: 3
  telemetry_flush_interval: 500ms
  history:
    points: 20
    max_age: 10m
  changes_kept: 500
log:
  level: info,edge_agent=debug
  format: json
";
        let c = from_yaml_str(text, &[]).unwrap();
        assert_eq!(c.device.id, "gw-17");
        assert_eq!(c.mqtt.host, "broker.local");
        assert_eq!(c.mqtt.port, 8883);
        assert_eq!(c.mqtt.client_id, "agent-17");
        assert_eq!(c.mqtt.username.as_deref(), Some("gw"));
        assert_eq!(
            c.mqtt.password_file.as_deref(),
            Some(Path::new("/etc/edge-agent/password"))
        );
        assert_eq!(
            c.mqtt.tls,
            Some(TlsConfig {
                ca_file: "/etc/ssl/ca.pem".into(),
                cert_file: Some("/etc/ssl/cert.pem".into()),
                key_file: Some("/etc/ssl/key.pem".into()),
            })
        );
        assert_eq!(c.mqtt.topic_root, "te2");
        assert_eq!(c.mqtt.max_packet_size, 512 * 1024);
        assert_eq!(c.http.bind, "[::1]:8080".parse().unwrap());
        assert_eq!(c.http.public_url, "https://gw-17.example.com");
        assert_eq!(
            c.http.tls,
            Some(HttpTlsConfig {
                cert_file: "/etc/ssl/http.pem".into(),
                key_file: "/etc/ssl/http.key".into(),
                client_ca_file: Some("/etc/ssl/clients.pem".into()),
            })
        );
        assert_eq!(c.data_dir, Path::new("/tmp/agent"));
        assert_eq!(
            c.files,
            FilesConfig {
                dir: "/srv/files".into(),
                max_file_bytes: 64 << 20,
                quota_bytes: 2 << 30,
                ttl: Some(Duration::from_secs(12 * 3600)),
            }
        );
        assert_eq!(c.twin.main_device.as_str(), "factory/gw17//");
        assert_eq!(c.twin.agent_service.as_str(), "factory/gw17/service/agent");
        assert!(!c.twin.auto_register);
        assert_eq!(c.twin.max_entities, 50);
        assert_eq!(c.twin.max_pending, 5);
        assert_eq!(c.twin.events_kept, 3);
        assert_eq!(c.twin.telemetry_flush_interval, Duration::from_millis(500));
        assert_eq!(
            c.twin.history,
            HistoryConfig {
                points: 20,
                max_age: Duration::from_secs(600)
            }
        );
        assert_eq!(c.twin.changes_kept, 500);
        assert_eq!(c.log.level, "info,edge_agent=debug");
        assert_eq!(c.log.format, LogFormat::Json);

        let shown = from_yaml_str(&c.to_yaml_masked(), &[]).unwrap();
        assert_eq!(shown, c, "config show must read back as the same config");
    }

    #[test]
    fn sizes_and_durations_accept_numbers_and_units() {
        let size = |v: &str| from_yaml_str(&format!("mqtt: {{max_packet_size: {v}}}"), &[]);
        assert_eq!(size("16777216").unwrap().mqtt.max_packet_size, 16 << 20);
        assert_eq!(size("16MiB").unwrap().mqtt.max_packet_size, 16 << 20);
        assert_eq!(size("\"512 KiB\"").unwrap().mqtt.max_packet_size, 512 << 10);
        assert_eq!(size("\"2048\"").unwrap().mqtt.max_packet_size, 2048);
        assert!(size("16MB").is_err());
        assert!(size("-1").is_err());
        assert!(size("1.5MiB").is_err());
        assert!(size("100").is_err(), "below 1KiB");
        assert!(size("1GiB").is_err(), "above what MQTT can carry");

        let every = |v: &str| {
            from_yaml_str(&format!("twin: {{telemetry_flush_interval: {v}}}"), &[])
                .map(|c| c.twin.telemetry_flush_interval)
        };
        assert_eq!(every("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(every("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(every("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(every("2").unwrap(), Duration::from_secs(2));
        assert!(every("0").is_err());
        assert!(every("5 minutes").is_err());
        assert!(every("1.5").is_err());
    }

    #[test]
    fn env_overrides_set_numbers_booleans_and_nested_keys() {
        let vars = env(&[
            ("EDGE_AGENT_MQTT__PORT", "1884"),
            ("EDGE_AGENT_TWIN__AUTO_REGISTER", "false"),
            ("EDGE_AGENT_MQTT__TLS__CA_FILE", "/etc/ssl/ca.pem"),
            ("EDGE_AGENT_DATA_DIR", "/tmp/x"),
            ("EDGE_AGENT_DEVICE__ID", "007"),
            ("EDGE_AGENT_CONFIG", "/not/a/key.yaml"),
            ("PATH", "/usr/bin"),
        ]);
        let c = from_yaml_str("mqtt:\n  port: 1999\n", &vars).unwrap();
        assert_eq!(c.mqtt.port, 1884, "the environment wins over the file");
        assert!(!c.twin.auto_register);
        assert_eq!(c.mqtt.tls.unwrap().ca_file, Path::new("/etc/ssl/ca.pem"));
        assert_eq!(c.data_dir, Path::new("/tmp/x"));
        assert_eq!(c.device.id, "007", "a string key takes the text as it is");
    }

    #[test]
    fn an_empty_env_override_means_the_default() {
        let vars = env(&[("EDGE_AGENT_MQTT__PORT", "")]);
        assert_eq!(
            from_yaml_str("mqtt: {port: 1999}", &vars)
                .unwrap()
                .mqtt
                .port,
            1883
        );
    }

    #[test]
    fn unknown_or_mistyped_env_overrides_are_reported_with_their_variable() {
        let found = problems(
            "",
            &[
                ("EDGE_AGENT_MQTT__PROT", "1884"),
                ("EDGE_AGENT_TWIN__AUTO_REGISTER", "maybe"),
            ],
        );
        assert_eq!(keys(&found), ["mqtt.prot", "twin.auto_register"]);
        assert_eq!(found[0].env.as_deref(), Some("EDGE_AGENT_MQTT__PROT"));
        assert_eq!(found[0].line, None);
        assert!(
            found[0].message.contains("unknown field `prot`"),
            "{}",
            found[0].message
        );
        assert!(found[1]
            .to_string()
            .starts_with("twin.auto_register (EDGE_AGENT_TWIN__AUTO_REGISTER): "));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_and_line() {
        let text = "\
mqtt:
  host: broker
  bogus: 1
  port: \"abc\"
  topic_root: \"a/b\"
";
        let found = problems(text, &[]);
        assert_eq!(keys(&found), ["mqtt.bogus", "mqtt.port", "mqtt.topic_root"]);
        let lines: Vec<_> = found.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(3), Some(4), Some(5)]);
        assert!(found[0].message.contains("unknown field `bogus`"));
        assert!(found[1].message.contains("invalid type: string \"abc\""));
        assert!(found[2].message.contains("\"a/b\""));

        let shown = ConfigError::Invalid {
            path: Some("edge-agent.yaml".into()),
            problems: found,
        }
        .to_string();
        let lines: Vec<_> = shown.lines().collect();
        assert_eq!(lines.len(), 4, "{shown}");
        assert_eq!(lines[0], "invalid configuration in edge-agent.yaml");
        assert!(
            lines[2].starts_with("  mqtt.port (line 4): invalid type"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_sections_wrong_section_types_and_bad_values_are_all_reported() {
        let text = "\
mqtt: 5
twin:
  main_device: a/b/c/d/e
  max_entities: 1
  events_kept: -3
logs:
  level: debug
http:
  bind: localhost:8000
";
        let found = problems(text, &[]);
        assert_eq!(
            keys(&found),
            [
                "mqtt",
                "twin.main_device",
                "twin.max_entities",
                "twin.events_kept",
                "logs",
                "http.bind"
            ]
        );
        assert!(
            found[0].message.contains("expected a mapping"),
            "{}",
            found[0].message
        );
        assert_eq!(found[4].line, Some(6));
    }

    #[test]
    fn a_null_section_is_an_empty_one() {
        let c = from_yaml_str("device:\nmqtt:\n  tls:\n", &[]).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn tls_and_credentials_must_be_complete() {
        let found = problems(
            "mqtt:\n  password_file: /p\n  tls:\n    cert_file: /c\n",
            &[],
        );
        assert_eq!(
            keys(&found),
            [
                "mqtt.password_file",
                "mqtt.tls.cert_file",
                "mqtt.tls.ca_file"
            ]
        );
    }

    #[test]
    fn the_file_store_follows_the_data_dir_and_http_tls_must_be_complete() {
        for dir in ["/d", "/d/twin/x", "/"] {
            let text = format!("data_dir: /d\nfiles:\n  dir: {dir}\n");
            assert_eq!(keys(&problems(&text, &[])), ["files.dir"], "{dir}");
        }
        let c = from_yaml_str(
            "data_dir: /d\nhttp:\n  tls:\n    cert_file: /c\n    key_file: /k\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.files.dir, Path::new("/d/file-transfer"));
        assert_eq!(c.http.public_url, "https://127.0.0.1:8000");
        let found = problems(
            "http:\n  tls:\n    cert_file: /c\n    client_ca_file: /ca\nfiles:\n  max_file_bytes: 0\n  ttl: 0s\n",
            &[],
        );
        assert_eq!(
            keys(&found),
            [
                "http.tls.cert_file",
                "http.tls.client_ca_file",
                "files.max_file_bytes",
                "files.ttl"
            ]
        );
    }

    #[test]
    fn a_yaml_syntax_error_is_one_problem_with_its_line() {
        let found = problems("mqtt:\n  port: 1883\n bad indent: [\n", &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "");
        assert!(found[0].line.is_some());
    }

    #[test]
    fn a_file_that_is_not_a_mapping_is_reported() {
        assert_eq!(keys(&problems("- a\n- b\n", &[])), [""]);
    }

    #[test]
    fn the_public_url_follows_the_bind_address() {
        let url = |bind: &str| {
            from_yaml_str(&format!("http: {{bind: \"{bind}\"}}"), &[])
                .unwrap()
                .http
                .public_url
        };
        assert_eq!(url("192.168.1.5:8080"), "http://192.168.1.5:8080");
        assert_eq!(url("[::1]:8000"), "http://[::1]:8000");
        assert_eq!(url("0.0.0.0:8000"), format!("http://{}:8000", host_name()));
        assert_eq!(url("[::]:9000"), format!("http://{}:9000", host_name()));
    }

    #[test]
    fn config_show_prints_every_key_and_masks_secrets() {
        let shown = Config::default().to_yaml_masked();
        let tree: Value = serde_yaml::from_str(&shown).unwrap();
        assert_eq!(tree["mqtt"]["username"], Value::Null);
        assert_eq!(tree["mqtt"]["tls"]["ca_file"], Value::Null);
        assert_eq!(tree["mqtt"]["max_packet_size"], Value::from("16MiB"));
        assert_eq!(tree["twin"]["telemetry_flush_interval"], Value::from("5s"));

        let mut tree = tree;
        mask(&mut tree, &["mqtt.host", "mqtt.username"]);
        assert_eq!(tree["mqtt"]["host"], Value::from("********"));
        assert_eq!(
            tree["mqtt"]["username"],
            Value::Null,
            "an unset secret stays null"
        );
    }

    mod loading {
        use super::*;
        use std::fs;

        struct Files {
            dir: tempfile::TempDir,
        }

        impl Files {
            fn new() -> Self {
                Files {
                    dir: tempfile::tempdir().unwrap(),
                }
            }
            fn write(&self, name: &str, port: u16) -> PathBuf {
                let path = self.dir.path().join(name);
                fs::write(&path, format!("mqtt:\n  port: {port}\n")).unwrap();
                path
            }
            fn path(&self, name: &str) -> PathBuf {
                self.dir.path().join(name)
            }
        }

        fn port(r: Result<Config, ConfigError>) -> u16 {
            r.unwrap().mqtt.port
        }

        #[test]
        fn the_command_line_file_wins_over_the_env_file_and_the_default_file() {
            let f = Files::new();
            let (cli, from_env, default) = (
                f.write("cli.yaml", 1),
                f.write("env.yaml", 2),
                f.write("default.yaml", 3),
            );
            let vars = env(&[(CONFIG_PATH_VAR, from_env.to_str().unwrap())]);
            assert_eq!(port(load_with_default(Some(&cli), &vars, &default)), 1);
            assert_eq!(port(load_with_default(None, &vars, &default)), 2);
            assert_eq!(port(load_with_default(None, &[], &default)), 3);
        }

        #[test]
        fn a_missing_default_file_means_the_built_in_defaults() {
            let f = Files::new();
            let c = load_with_default(None, &[], &f.path("absent.yaml")).unwrap();
            assert_eq!(c, Config::default());
        }

        #[test]
        fn env_overrides_apply_to_a_missing_default_file_too() {
            let f = Files::new();
            let vars = env(&[("EDGE_AGENT_MQTT__PORT", "1884")]);
            assert_eq!(
                port(load_with_default(None, &vars, &f.path("absent.yaml"))),
                1884
            );
        }

        #[test]
        fn a_missing_named_file_is_an_error() {
            let f = Files::new();
            let absent = f.path("absent.yaml");
            let err = load_with_default(Some(&absent), &[], &f.write("d.yaml", 3)).unwrap_err();
            assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");

            let vars = env(&[(CONFIG_PATH_VAR, absent.to_str().unwrap())]);
            let err = load_with_default(None, &vars, &f.write("d.yaml", 3)).unwrap_err();
            assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        }

        #[test]
        fn an_invalid_file_is_named_in_the_error() {
            let f = Files::new();
            let path = f.path("bad.yaml");
            fs::write(&path, "mqtt:\n  port: 0\n").unwrap();
            let err = load_with_default(Some(&path), &[], &f.path("absent.yaml")).unwrap_err();
            assert!(err.to_string().contains("bad.yaml"), "{err}");
            assert_eq!(err.problems()[0].key, "mqtt.port");
            assert_eq!(err.problems()[0].line, Some(2));
        }
    }
}
