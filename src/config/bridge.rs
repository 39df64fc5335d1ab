//! The `bridge` section (issue #4): the clouds whose Mosquitto bridge files edge-agent renders,
//! resolved from the raw section with their per-type defaults, and every value that ends up in a
//! bridge file checked for what would break the file or the bridge: spaces, newlines, `#`,
//! wildcards in prefixes, a prefix without its `/`, a QoS outside 0–2.
//!
//! Pure, like the rest of `config`: whether the named certificate, key, CA and password files
//! exist and fit together is `crate::bridge::check`'s business.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::raw::{RawBridge, RawCloud, RawTopicRule};
use super::Origins;
use super::Problem;

/// Where rendered files go when `bridge.dir` is not set: the directory the Debian package's
/// mosquitto configuration includes with `include_dir`.
pub const DEFAULT_BRIDGE_DIR: &str = "/etc/edge-agent/mosquitto-conf";

/// The port of every cloud's MQTT over TLS, used when `url` has none.
pub const DEFAULT_CLOUD_PORT: u16 = 8883;

/// Where the public clouds' CA certificates are when `ca` is not set (Debian's hashed store).
pub const SYSTEM_CA_DIR: &str = "/etc/ssl/certs";

#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConfig {
    pub dir: PathBuf,
    pub mosquitto_bin: PathBuf,
    /// Run once after bridge files change; empty: only say what to do.
    pub restart_command: Vec<String>,
    pub clouds: Vec<CloudConfig>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            dir: PathBuf::from(DEFAULT_BRIDGE_DIR),
            mosquitto_bin: PathBuf::from("mosquitto"),
            restart_command: Vec::new(),
            clouds: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudKind {
    C8y,
    Azure,
    Aws,
    Mqtt,
}

impl CloudKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CloudKind::C8y => "c8y",
            CloudKind::Azure => "azure",
            CloudKind::Aws => "aws",
            CloudKind::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        }
    }

    /// Local → remote.
    pub fn goes_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Remote → local.
    pub fn comes_in(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One cloud, with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudConfig {
    /// Its position in `bridge.clouds`, for the key paths of later problems.
    pub index: usize,
    pub name: String,
    pub kind: CloudKind,
    pub host: String,
    pub port: u16,
    pub device_id: String,
    /// A CA file (`bridge_cafile`) or directory (`bridge_capath`); `None`: plain TCP.
    pub ca: Option<PathBuf>,
    pub auth: CloudAuth,
    pub keepalive_secs: u16,
    pub clean_session: bool,
    /// The local prefix of the cloud's own topics, with its trailing `/` (or empty).
    pub local_prefix: String,
    /// The remote prefix (type `mqtt`), with its trailing `/` (or empty).
    pub remote_prefix: String,
    /// Whether the type's default topic rules are rendered.
    pub default_topics: bool,
    pub topics: Vec<TopicRuleConfig>,
    /// Extra mosquitto bridge options, in name order.
    pub options: Vec<(String, String)>,
}

impl CloudConfig {
    /// `url` as it would be written: `host:port`, `[v6]:port` for an IPv6 literal.
    pub fn url(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// The key path of one of this cloud's keys, like `bridge.clouds[0].auth.key_file`.
    pub fn key(&self, key: &str) -> String {
        format!("bridge.clouds[{}].{key}", self.index)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CloudAuth {
    None,
    Certificate {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    Password {
        /// `None` for Azure, whose user name is derived from the hub and the device id.
        username: Option<String>,
        password_file: PathBuf,
    },
}

/// A rule of `topics`, as configured: prefixes not given take the cloud's.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRuleConfig {
    pub pattern: String,
    pub direction: Direction,
    pub qos: u8,
    pub local_prefix: Option<String>,
    pub remote_prefix: Option<String>,
}

/// The options `options` may set: those of one bridge (mosquitto.conf(5), "Bridges") that
/// edge-agent does not write from the cloud's own keys. Anything else is refused: a general
/// option (`listener`, `allow_anonymous`, `max_queued_messages`…) in a bridge file would change
/// the whole broker.
pub const BRIDGE_OPTIONS: &[&str] = &[
    "bridge_alpn",
    "bridge_bind_address",
    "bridge_insecure",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_receive_maximum",
    "bridge_require_ocsp",
    "bridge_session_expiry_interval",
    "bridge_tls_version",
    "idle_timeout",
    "local_password",
    "local_username",
    "restart_timeout",
    "round_robin",
    "threshold",
];

pub(super) fn resolve(
    raw: RawBridge,
    device_id: &str,
    o: &Origins,
    problems: &mut Vec<Problem>,
) -> BridgeConfig {
    let defaults = BridgeConfig::default();
    let mut bad = |key: &str, message: String| problems.push(o.at(key, message));
    let dir = raw.dir.unwrap_or(defaults.dir);
    if dir.as_os_str().is_empty() {
        bad("bridge.dir", "must not be empty".into());
    }
    let mosquitto_bin = raw.mosquitto_bin.unwrap_or(defaults.mosquitto_bin);
    if mosquitto_bin.as_os_str().is_empty() {
        bad("bridge.mosquitto_bin", "must not be empty".into());
    }
    let restart_command = raw.restart_command.unwrap_or_default();
    if restart_command.first().is_some_and(|c| c.trim().is_empty()) {
        bad(
            "bridge.restart_command",
            "the program (first item) must not be empty".into(),
        );
    }
    let mut clouds = Vec::new();
    let mut names = BTreeSet::new();
    for (index, raw_cloud) in raw.clouds.unwrap_or_default().into_iter().enumerate() {
        let Some(raw_cloud) = raw_cloud else { continue };
        let mut cloud_problems = Vec::new();
        let cloud = resolve_cloud(index, raw_cloud, device_id, &mut |key, message| {
            // `#key`: a key outside the cloud (a default it took).
            let key = match key.strip_prefix('#') {
                Some(absolute) => absolute.to_owned(),
                None => format!("bridge.clouds[{index}].{key}"),
            };
            cloud_problems.push(o.at(&key, message))
        });
        if let Some(cloud) = &cloud {
            if !names.insert(cloud.name.clone()) {
                cloud_problems.push(o.at(
                    &format!("bridge.clouds[{index}].name"),
                    format!("{:?} names another cloud already", cloud.name),
                ));
            }
        }
        // A key whose value failed its type check was removed, and reads as missing here: it
        // was reported once already.
        cloud_problems.retain(|p| !problems.iter().any(|q| q.key == p.key));
        problems.extend(cloud_problems);
        clouds.extend(cloud);
    }
    BridgeConfig {
        dir,
        mosquitto_bin,
        restart_command,
        clouds,
    }
}

fn resolve_cloud(
    index: usize,
    raw: RawCloud,
    default_device_id: &str,
    bad: &mut dyn FnMut(&str, String),
) -> Option<CloudConfig> {
    let name = match raw.name {
        None => {
            bad("name", "is required".into());
            None
        }
        Some(name) if !valid_name(&name) => {
            bad(
                "name",
                format!("must be 1 to 32 of a-z, 0-9, '_' and '-': {name:?}"),
            );
            None
        }
        Some(name) => Some(name),
    };
    let kind = raw.kind;
    if kind.is_none() {
        bad("type", "is required: c8y, azure, aws or mqtt".into());
    }
    let (host, port) = match raw.url.as_deref().map(parse_url) {
        None => {
            bad("url", "is required: host[:port]".into());
            (None, DEFAULT_CLOUD_PORT)
        }
        Some(Ok((host, port))) => (Some(host), port),
        Some(Err(message)) => {
            bad("url", message);
            (None, DEFAULT_CLOUD_PORT)
        }
    };
    // A problem with the default is `device.id`'s, the key the user wrote.
    let device_key = match raw.device_id {
        Some(_) => "device_id",
        None => "#device.id",
    };
    let device_id = raw
        .device_id
        .unwrap_or_else(|| default_device_id.to_owned());
    if let Err(message) = check_token(&device_id) {
        bad(device_key, message);
    } else if device_id.contains(['+', '#', '/']) {
        bad(
            device_key,
            format!(
                "must not contain '/', '+' or '#', which it would add to topics: {device_id:?}"
            ),
        );
    }
    let kind_is = |k| kind == Some(k);
    let public_cloud = kind.is_some_and(|k| k != CloudKind::Mqtt);
    let ca = match raw.ca {
        Some(path) if path.as_os_str().is_empty() => {
            bad("ca", "must not be empty".into());
            None
        }
        Some(path) => {
            check_path(&path).unwrap_or_else(|message| bad("ca", message));
            Some(path)
        }
        // The public clouds are reached over TLS with certificates of public CAs.
        None if public_cloud => Some(PathBuf::from(SYSTEM_CA_DIR)),
        None => None,
    };
    let auth = resolve_auth(raw.auth, kind, bad);
    let keepalive_secs = match raw.keepalive.map(|i| i.0) {
        None => 60,
        Some(d) => match u16::try_from(d.as_secs()) {
            Ok(secs) if secs >= 1 && d.subsec_nanos() == 0 => secs,
            _ => {
                bad(
                    "keepalive",
                    "must be a whole number of seconds from 1 to 65535".into(),
                );
                60
            }
        },
    };
    let clean_session = raw.clean_session.unwrap_or(kind_is(CloudKind::C8y));
    let local_prefix = match raw.local_prefix {
        Some(prefix) => {
            check_prefix(&prefix).unwrap_or_else(|message| bad("local_prefix", message));
            prefix
        }
        None => name.as_deref().map(|n| format!("{n}/")).unwrap_or_default(),
    };
    let remote_prefix = match raw.remote_prefix {
        Some(prefix) if public_cloud => {
            bad(
                "remote_prefix",
                format!(
                    "is only for type mqtt: the topics of {} are fixed",
                    kind.map_or("", CloudKind::as_str)
                ),
            );
            prefix
        }
        Some(prefix) => {
            check_prefix(&prefix).unwrap_or_else(|message| bad("remote_prefix", message));
            prefix
        }
        None if public_cloud => String::new(),
        None => format!("{device_id}/"),
    };
    let mut topics = Vec::new();
    for (i, rule) in raw.topics.unwrap_or_default().into_iter().enumerate() {
        let Some(rule) = rule else { continue };
        let mut bad_rule = |key: &str, message: String| bad(&format!("topics[{i}].{key}"), message);
        topics.extend(resolve_rule(
            rule,
            &local_prefix,
            &remote_prefix,
            &mut bad_rule,
        ));
    }
    let mut options = Vec::new();
    for (option, value) in raw.options.unwrap_or_default() {
        let key = format!("options.{option}");
        if !valid_option_name(&option) {
            bad(
                &key,
                format!("is not a mosquitto option name (a-z and '_'): {option:?}"),
            );
        } else if !BRIDGE_OPTIONS.contains(&option.as_str()) {
            bad(
                &key,
                format!(
                    "is not an option edge-agent passes to a bridge (either it writes it from \
                     the cloud's own keys, or it is not a bridge option); the options are: {}",
                    BRIDGE_OPTIONS.join(", ")
                ),
            );
        } else if let Err(message) = check_option_value(&value.0) {
            bad(&key, message);
        } else {
            options.push((option, value.0));
        }
    }
    Some(CloudConfig {
        index,
        name: name?,
        kind: kind?,
        host: host?,
        port,
        device_id,
        ca,
        auth: auth?,
        keepalive_secs,
        clean_session,
        local_prefix,
        remote_prefix,
        default_topics: raw.default_topics.unwrap_or(true),
        topics,
        options,
    })
}

fn resolve_auth(
    raw: super::raw::RawCloudAuth,
    kind: Option<CloudKind>,
    bad: &mut dyn FnMut(&str, String),
) -> Option<CloudAuth> {
    let cert = raw.cert_file.is_some() || raw.key_file.is_some();
    let password = raw.username.is_some() || raw.password_file.is_some();
    for (key, path) in [
        ("auth.cert_file", &raw.cert_file),
        ("auth.key_file", &raw.key_file),
        ("auth.password_file", &raw.password_file),
    ] {
        if let Some(path) = path {
            if let Err(message) = check_path(path) {
                bad(key, message);
                return None;
            }
        }
    }
    let auth = match (cert, password) {
        (true, true) => {
            bad(
                "auth",
                "holds both a certificate (cert_file, key_file) and a password (username, \
                 password_file): mosquitto would send only one; keep one pair"
                    .into(),
            );
            return None;
        }
        (true, false) => match (raw.cert_file, raw.key_file) {
            (Some(cert_file), Some(key_file)) => CloudAuth::Certificate {
                cert_file,
                key_file,
            },
            (Some(_), None) => {
                bad("auth.cert_file", "needs auth.key_file".into());
                return None;
            }
            _ => {
                bad("auth.key_file", "needs auth.cert_file".into());
                return None;
            }
        },
        (false, true) => {
            let username = match (raw.username, kind) {
                (Some(_), Some(CloudKind::Azure)) => {
                    bad(
                        "auth.username",
                        "is derived for Azure IoT Hub (<hub>/<device_id>/?api-version=…); \
                         remove it"
                            .into(),
                    );
                    return None;
                }
                (Some(username), _) => {
                    check_token(&username).unwrap_or_else(|m| bad("auth.username", m));
                    Some(username)
                }
                (None, Some(CloudKind::Azure)) => None,
                (None, _) => {
                    bad("auth.username", "is needed with auth.password_file".into());
                    return None;
                }
            };
            let Some(password_file) = raw.password_file else {
                bad("auth.password_file", "is needed with auth.username".into());
                return None;
            };
            CloudAuth::Password {
                username,
                password_file,
            }
        }
        (false, false) => CloudAuth::None,
    };
    let needs = match (kind, &auth) {
        (Some(CloudKind::Aws), CloudAuth::None | CloudAuth::Password { .. }) => Some(
            "a device certificate (AWS IoT Core takes no password): auth.cert_file and \
             auth.key_file",
        ),
        (Some(CloudKind::Azure), CloudAuth::None) => Some(
            "a device certificate (auth.cert_file, auth.key_file) or a SAS token in \
             auth.password_file",
        ),
        (Some(CloudKind::C8y), CloudAuth::None) => Some(
            "a device certificate (auth.cert_file, auth.key_file) or a password \
             (auth.username as <tenant>/<user>, auth.password_file)",
        ),
        _ => None,
    };
    if let Some(needs) = needs {
        bad("auth", format!("needs {needs}"));
        return None;
    }
    Some(auth)
}

fn resolve_rule(
    raw: RawTopicRule,
    cloud_local: &str,
    cloud_remote: &str,
    bad: &mut dyn FnMut(&str, String),
) -> Option<TopicRuleConfig> {
    let pattern = match raw.pattern {
        None => {
            bad(
                "pattern",
                "is required (\"\" maps one topic to another)".into(),
            );
            None
        }
        Some(p) => match check_pattern(&p) {
            Ok(()) => Some(p),
            Err(message) => {
                bad("pattern", message);
                None
            }
        },
    };
    let direction = raw.direction;
    if direction.is_none() {
        bad("direction", "is required: in, out or both".into());
    }
    let qos = raw.qos.unwrap_or(1);
    if qos > 2 {
        bad("qos", format!("must be 0, 1 or 2, not {qos}"));
    }
    let one_topic = pattern.as_deref() == Some("");
    for (key, prefix) in [
        ("local_prefix", &raw.local_prefix),
        ("remote_prefix", &raw.remote_prefix),
    ] {
        if let Some(prefix) = prefix {
            // With an empty pattern, the prefixes are the two topics mapped to each other.
            let checked = match one_topic {
                true => check_topic(prefix),
                false => check_prefix(prefix),
            };
            checked.unwrap_or_else(|message| bad(key, message));
        }
    }
    let pattern = pattern?;
    if pattern.is_empty() {
        let local = raw.local_prefix.as_deref().unwrap_or(cloud_local);
        let remote = raw.remote_prefix.as_deref().unwrap_or(cloud_remote);
        if local.is_empty() || remote.is_empty() {
            bad(
                "pattern",
                "is empty, which maps the topic named by local_prefix to the one named by \
                 remote_prefix: both must be set"
                    .into(),
            );
            return None;
        }
    }
    Some(TopicRuleConfig {
        pattern,
        direction: direction?,
        qos: if qos > 2 { return None } else { qos },
        local_prefix: raw.local_prefix,
        remote_prefix: raw.remote_prefix,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_option_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// A value written as one token of a bridge file line: mosquitto splits lines on spaces, reads
/// a token starting with `#` as a comment, and has no quoting.
fn check_token(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain spaces, tabs, newlines or control characters: {value:?}"
        ));
    }
    if value.contains('#') {
        return Err(format!(
            "must not contain '#', which mosquitto may read as a comment: {value:?}"
        ));
    }
    Ok(())
}

/// A path written at the end of a bridge file line.
fn check_path(path: &std::path::Path) -> Result<(), String> {
    let text = path.to_str().ok_or("must be valid UTF-8")?;
    check_token(text)
}

/// A topic prefix: empty, or topic levels without wildcards and with the trailing `/`, since
/// mosquitto concatenates prefix and pattern literally.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_token(prefix)?;
    if prefix.contains(['+', '#']) {
        return Err(format!(
            "must not contain the wildcards '+' or '#': {prefix:?}"
        ));
    }
    if !prefix.ends_with('/') {
        return Err(format!(
            "must end with '/', since mosquitto joins it to the topic as it is: {prefix:?} \
             would map \"{prefix}a/b\"; write \"{prefix}/\""
        ));
    }
    Ok(())
}

/// A topic name (no wildcards), one token.
fn check_topic(topic: &str) -> Result<(), String> {
    check_token(topic)?;
    if topic.contains(['+', '#']) {
        return Err(format!(
            "must not contain the wildcards '+' or '#': {topic:?}"
        ));
    }
    Ok(())
}

/// A topic filter: `""`, or levels where `+` and `#` stand alone and `#` comes last.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Ok(());
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain spaces, tabs, newlines or control characters: {pattern:?}"
        ));
    }
    let levels: Vec<&str> = pattern.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wildcard_misuse = (level.contains('+') && *level != "+")
            || (level.contains('#') && (*level != "#" || i + 1 != levels.len()));
        if wildcard_misuse {
            return Err(format!(
                "is not a topic filter: '+' must be a whole level and '#' the whole last level: \
                 {pattern:?}"
            ));
        }
    }
    Ok(())
}

/// An `options` value: one line, not starting a comment.
fn check_option_value(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "must not contain newlines or control characters: {value:?}"
        ));
    }
    if value.trim_start().starts_with('#') {
        return Err(format!("must not start with '#': {value:?}"));
    }
    Ok(())
}

/// `host[:port]`, `[v6]:port` or `[v6]`, without a scheme.
fn parse_url(url: &str) -> Result<(String, u16), String> {
    let malformed = || format!("must be host[:port] (no scheme, no path): {url:?}");
    check_token(url)?;
    if url.contains("://") || url.contains('/') {
        return Err(malformed());
    }
    let (host, port) = if let Some(rest) = url.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(malformed)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(malformed)?)),
        }
    } else {
        match url.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => return Err(malformed()),
            Some((host, port)) => (host, Some(port)),
            None => (url, None),
        }
    };
    if host.is_empty() || host.contains(['+', '[', ']']) {
        return Err(malformed());
    }
    let port = match port {
        None => DEFAULT_CLOUD_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("has a bad port (1 to 65535): {url:?}")),
        },
    };
    // mosquitto resolves `address <host>:<port>` by splitting at the last ':', so an IPv6
    // literal is written bare (`::1:8883`); brackets would be looked up as a name.
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_yaml_str;

    fn problems(text: &str) -> Vec<String> {
        match from_yaml_str(text, &[]) {
            Ok(config) => panic!("expected problems, got {:?}", config.bridge),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_cloud_gets_the_defaults_of_its_type() {
        let text = "device: {id: gw-1}\nbridge:\n  clouds:\n    - name: c8y\n      type: c8y\n      url: t.example.com\n      auth: {cert_file: /c.pem, key_file: /c.key}\n    - name: hub\n      type: mqtt\n      url: 10.0.0.1:1883\n      topics:\n        - {pattern: \"x/#\", direction: in}\n";
        let bridge = from_yaml_str(text, &[]).unwrap().bridge;
        assert_eq!(bridge.dir, PathBuf::from(DEFAULT_BRIDGE_DIR));
        let [c8y, hub] = &bridge.clouds[..] else {
            panic!("{:?}", bridge.clouds)
        };
        assert_eq!(
            (c8y.host.as_str(), c8y.port, c8y.device_id.as_str()),
            ("t.example.com", 8883, "gw-1")
        );
        assert_eq!(c8y.ca, Some(PathBuf::from(SYSTEM_CA_DIR)));
        assert!(c8y.clean_session);
        assert_eq!(
            (c8y.local_prefix.as_str(), c8y.remote_prefix.as_str()),
            ("c8y/", "")
        );
        assert_eq!(c8y.keepalive_secs, 60);
        assert_eq!(
            (
                hub.index,
                hub.ca.as_ref(),
                hub.clean_session,
                hub.auth.clone()
            ),
            (1, None, false, CloudAuth::None)
        );
        assert_eq!(hub.remote_prefix, "gw-1/");
        assert_eq!(
            hub.topics,
            [TopicRuleConfig {
                pattern: "x/#".into(),
                direction: Direction::In,
                qos: 1,
                local_prefix: None,
                remote_prefix: None,
            }]
        );
    }

    #[test]
    fn every_bad_value_is_one_problem_with_its_key_and_line() {
        let text = "\
bridge:
  restart_command: ['']
  clouds:
    - name: Bad.Name
      type: mqtt
      url: 'h:99999'
    - name: ok
      type: aws
      url: h
      device_id: 'gw 1'
      auth: {username: u, password_file: /p}
      local_prefix: nope
      keepalive: 70000
      topics:
        - {pattern: 'a b', direction: out}
        - {pattern: x, direction: sideways}
        - {pattern: '', direction: out, qos: 3, remote_prefix: r/}
        - {pattern: x, direction: in, local_prefix: 'l/', remote_prefix: 'r'}
      options:
        connection: x
        restart_timeout: \"1\\n2\"
        Bad-Name: 1
    - c8y
    - name: ok
      type: c8y
      url: h
      auth: {cert_file: /c, username: u}
";
        assert_eq!(
            problems(text),
            [
                "bridge.restart_command (line 2): the program (first item) must not be empty",
                "bridge.clouds[0].name (line 4): must be 1 to 32 of a-z, 0-9, '_' and '-': \"Bad.Name\"",
                "bridge.clouds[0].url (line 6): has a bad port (1 to 65535): \"h:99999\"",
                "bridge.clouds[1].device_id (line 10): must not contain spaces, tabs, newlines or control characters: \"gw 1\"",
                "bridge.clouds[1].auth (line 11): needs a device certificate (AWS IoT Core takes no password): auth.cert_file and auth.key_file",
                "bridge.clouds[1].local_prefix (line 12): must end with '/', since mosquitto joins it to the topic as it is: \"nope\" would map \"nopea/b\"; write \"nope/\"",
                "bridge.clouds[1].keepalive (line 13): must be a whole number of seconds from 1 to 65535",
                "bridge.clouds[1].topics[0].pattern (line 15): must not contain spaces, tabs, newlines or control characters: \"a b\"",
                "bridge.clouds[1].topics[1].direction (line 16): unknown variant `sideways`, expected one of `in`, `out`, `both`",
                "bridge.clouds[1].topics[2].qos (line 17): must be 0, 1 or 2, not 3",
                "bridge.clouds[1].topics[3].remote_prefix (line 18): must end with '/', since mosquitto joins it to the topic as it is: \"r\" would map \"ra/b\"; write \"r/\"",
                "bridge.clouds[1].options.connection (line 20): is not an option edge-agent passes to a bridge (either it writes it from the cloud's own keys, or it is not a bridge option); the options are: bridge_alpn, bridge_bind_address, bridge_insecure, bridge_max_packet_size, bridge_outgoing_retain, bridge_protocol_version, bridge_receive_maximum, bridge_require_ocsp, bridge_session_expiry_interval, bridge_tls_version, idle_timeout, local_password, local_username, restart_timeout, round_robin, threshold",
                "bridge.clouds[1].options.restart_timeout (line 21): must not contain newlines or control characters: \"1\\n2\"",
                "bridge.clouds[1].options.Bad-Name (line 22): is not a mosquitto option name (a-z and '_'): \"Bad-Name\"",
                "bridge.clouds[2] (line 23): invalid type: string \"c8y\", expected a mapping",
                "bridge.clouds[3].auth (line 27): holds both a certificate (cert_file, key_file) and a password (username, password_file): mosquitto would send only one; keep one pair",
            ]
        );
    }

    #[test]
    fn config_show_prints_the_clouds_so_that_they_read_back_the_same() {
        let text = "bridge:\n  restart_command: [systemctl, restart, mosquitto]\n  clouds:\n    - {name: c8y, type: c8y, url: h, auth: {username: t/u, password_file: /p}, options: {restart_timeout: 5}}\n    - {name: az, type: azure, url: 'h:1', auth: {password_file: /p}}\n    - {name: m, type: mqtt, url: h, ca: /ca.pem, auth: {cert_file: /c, key_file: /k}, default_topics: false, topics: [{pattern: '', direction: both, qos: 0, local_prefix: l/, remote_prefix: r/}]}\n";
        let config = from_yaml_str(text, &[]).unwrap();
        assert_eq!(config.bridge.clouds.len(), 3);
        let shown = config.to_yaml_masked();
        assert_eq!(from_yaml_str(&shown, &[]).unwrap(), config, "{shown}");
    }

    #[test]
    fn broker_wide_options_a_bad_topic_root_and_a_bad_default_device_id_are_refused() {
        let text = "device: {id: 'gw 1'}\nmqtt: {topic_root: \"te\\nlistener 1\"}\nbridge:\n  clouds:\n    - {name: a, type: mqtt, url: h, options: {listener: '1886 0.0.0.0', allow_anonymous: 'true'}}\n    - {name: b, type: mqtt, url: h}\n";
        let found = problems(text);
        let keys: Vec<&str> = found
            .iter()
            .map(|p| p.split(" (").next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "device.id",
                "mqtt.topic_root",
                "bridge.clouds[0].options.allow_anonymous",
                "bridge.clouds[0].options.listener",
            ],
            "{found:#?}"
        );
        assert!(found[0]
            .ends_with("must not contain spaces, tabs, newlines or control characters: \"gw 1\""));
    }

    #[test]
    fn an_empty_pattern_needs_both_prefixes_and_names_are_unique() {
        let text = "bridge:\n  clouds:\n    - {name: a, type: mqtt, url: h, local_prefix: '', topics: [{pattern: '', direction: out}]}\n    - {name: a, type: mqtt, url: h}\n";
        assert_eq!(
            problems(text),
            [
                "bridge.clouds[0].topics[0].pattern (line 3): is empty, which maps the topic named by local_prefix to the one named by remote_prefix: both must be set",
                "bridge.clouds[1].name (line 4): \"a\" names another cloud already",
            ]
        );
    }

    #[test]
    fn urls_take_a_host_and_an_optional_port() {
        assert_eq!(parse_url("a.example:1883"), Ok(("a.example".into(), 1883)));
        assert_eq!(parse_url("a.example"), Ok(("a.example".into(), 8883)));
        assert_eq!(parse_url("[::1]:9"), Ok(("::1".into(), 9)));
        assert_eq!(parse_url("[::1]"), Ok(("::1".into(), 8883)));
        for bad in [
            "",
            "mqtts://a:1",
            "a/b",
            "a:0",
            "a:70000",
            "a:x",
            ":1",
            "a b",
            "a\n",
            "::1",
            "[::1",
            "a#1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_need_their_slash_and_no_wildcards() {
        assert_eq!(check_prefix(""), Ok(()));
        assert_eq!(check_prefix("c8y/"), Ok(()));
        assert_eq!(check_prefix("a/b/"), Ok(()));
        for bad in ["c8y", "a/+/", "#/", "a b/", "a\n/", "a#/"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn patterns_are_topic_filters_of_one_token() {
        for good in ["", "#", "a/#", "+/+/b", "s/us", "a/+/c/#"] {
            assert_eq!(check_pattern(good), Ok(()), "{good:?}");
        }
        for bad in ["a b", "a/#/b", "a#", "a+/b", "a\tb", "a\nb", "##"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_short_lowercase_words() {
        assert!(valid_name("c8y"));
        assert!(valid_name("my_cloud-2"));
        assert!(!valid_name(""));
        assert!(!valid_name("C8y"));
        assert!(!valid_name("a.b"));
        assert!(!valid_name(&"a".repeat(33)));
    }
}
