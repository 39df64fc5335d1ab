//! The raw configuration: the file as typed, every key optional (`None`: the default), and the
//! value syntaxes of sizes and durations.
//!
//! These structs are also the schema of the file. [`check_keys`] asks them about one key at a
//! time, so that every unknown key and wrong type is found, where deserializing the whole tree
//! would stop at serde's first error. Defaults and value checks are [`super::resolve`]'s business.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::{CloudKind, Direction, LogFormat};

pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawConfig {
    pub(super) device: RawDevice,
    pub(super) mqtt: RawMqtt,
    pub(super) http: RawHttp,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) twin: RawTwin,
    pub(super) files: RawFiles,
    pub(super) bridge: RawBridge,
    pub(super) operations: RawOperations,
    pub(super) log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawOperations {
    pub(super) keep_final: Option<Interval>,
    pub(super) default_timeout: Option<Interval>,
    pub(super) timeouts: Option<BTreeMap<String, Interval>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawDevice {
    pub(super) id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawMqtt {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) client_id: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) tls: RawTls,
    pub(super) topic_root: Option<String>,
    pub(super) max_packet_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawTls {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawHttp {
    pub(super) bind: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) tls: RawHttpTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawHttpTls {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawFiles {
    pub(super) dir: Option<PathBuf>,
    pub(super) max_file_bytes: Option<ByteSize>,
    pub(super) quota_bytes: Option<ByteSize>,
    pub(super) ttl: Option<Interval>,
}

/// The `bridge` section. A list item that failed its key check is `None`: it was reported and is
/// left out, without shifting the index of the items after it (their keys name that index).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawBridge {
    pub(super) dir: Option<PathBuf>,
    pub(super) mosquitto_bin: Option<PathBuf>,
    pub(super) restart_command: Option<Vec<String>>,
    pub(super) clouds: Option<Vec<Option<RawCloud>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawCloud {
    pub(super) name: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: Option<CloudKind>,
    pub(super) url: Option<String>,
    pub(super) device_id: Option<String>,
    pub(super) ca: Option<PathBuf>,
    pub(super) auth: RawCloudAuth,
    pub(super) keepalive: Option<Interval>,
    pub(super) clean_session: Option<bool>,
    pub(super) local_prefix: Option<String>,
    pub(super) remote_prefix: Option<String>,
    pub(super) default_topics: Option<bool>,
    pub(super) topics: Option<Vec<Option<RawTopicRule>>>,
    pub(super) options: Option<BTreeMap<String, Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawCloudAuth {
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawTopicRule {
    pub(super) pattern: Option<String>,
    pub(super) direction: Option<Direction>,
    pub(super) qos: Option<u8>,
    pub(super) local_prefix: Option<String>,
    pub(super) remote_prefix: Option<String>,
}

/// A scalar option value as typed (`restart_timeout: 5`, `… "5 30"`, `… true`), kept as its text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scalar(pub(super) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar(s.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar(b.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawTwin {
    pub(super) main_device: Option<String>,
    pub(super) agent_service: Option<String>,
    pub(super) auto_register: Option<bool>,
    pub(super) max_entities: Option<usize>,
    pub(super) max_pending: Option<usize>,
    pub(super) events_kept: Option<usize>,
    pub(super) telemetry_flush_interval: Option<Interval>,
    pub(super) history: RawHistory,
    pub(super) changes_kept: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawHistory {
    pub(super) points: Option<usize>,
    pub(super) max_age: Option<Interval>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a mapping")]
pub(super) struct RawLog {
    pub(super) level: Option<String>,
    pub(super) format: Option<LogFormat>,
}

/// A size as typed: a number of bytes, or a string like `"16MiB"`, `"512 KiB"` or `"1024"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ByteSize(pub(super) u64);

impl std::str::FromStr for ByteSize {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let unit = match unit.trim_start() {
            "" | "B" => 1,
            "KiB" => KIB,
            "MiB" => MIB,
            "GiB" => GIB,
            _ => return Err(()),
        };
        let n: u64 = digits.parse().map_err(drop)?;
        n.checked_mul(unit).map(ByteSize).ok_or(())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0"),
            n if n % GIB == 0 => write!(f, "{}GiB", n / GIB),
            n if n % MIB == 0 => write!(f, "{}MiB", n / MIB),
            n if n % KIB == 0 => write!(f, "{}KiB", n / KIB),
            n => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: a number of bytes, or a string like \"512KiB\" or \"16MiB\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse()
                    .map_err(|()| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as typed: `"500ms"`, `"5s"`, `"1m"`, `"1h"`, or a whole number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Interval(pub(super) Duration);

impl std::str::FromStr for Interval {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let s = s.trim();
        let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: u64 = digits.parse().map_err(drop)?;
        let millis = match unit.trim_start() {
            "ms" => Some(n),
            "" | "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => None,
        };
        millis
            .map(|ms| Interval(Duration::from_millis(ms)))
            .ok_or(())
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => f.write_str("0s"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Interval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"500ms\", \"5s\" or \"1m\", or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Interval, E> {
                Ok(Interval(Duration::from_secs(n)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Interval, E> {
                s.parse()
                    .map_err(|()| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks every key of `node` (at `path`) on its own, removing and recording the unknown ones and
/// those of the wrong type, so that the tree left behind deserializes into [`RawConfig`]. A null
/// section (`tls:` with every key commented out) counts as an empty one. The items of a list of
/// sections (`bridge.clouds`) are checked one by one; a bad item becomes null, so the items after
/// it keep their index.
pub(super) fn check_keys(
    path: &mut Vec<Value>,
    node: &mut Value,
    found: &mut Vec<(Vec<String>, String)>,
) -> bool {
    let is_section = path.is_empty() || check_one(path, Value::Mapping(Mapping::new())).is_ok();
    if is_section && node.is_null() {
        *node = Value::Mapping(Mapping::new());
    }
    if let (true, Value::Mapping(map)) = (is_section, &mut *node) {
        map.retain(|key, value| {
            path.push(key.clone());
            let keep = check_keys(path, value, found);
            path.pop();
            keep
        });
        return true;
    }
    let list_of_sections =
        || check_one(path, Value::Sequence(vec![Value::Mapping(Mapping::new())])).is_ok();
    if let (false, Value::Sequence(_)) = (is_section, &*node) {
        if list_of_sections() {
            if let Value::Sequence(items) = node {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(index_key(i));
                    if !check_keys(path, item, found) {
                        *item = Value::Null;
                    }
                    path.pop();
                }
            }
            return true;
        }
    }
    match check_one(path, node.clone()) {
        Ok(()) => true,
        Err(message) => {
            found.push((path.iter().map(key_name).collect(), message));
            false
        }
    }
}

/// The path segment of the `i`th item of a list: a one-element sequence holding the index, which
/// no mapping key of a config file is.
pub(super) fn index_key(i: usize) -> Value {
    Value::Sequence(vec![Value::from(i as u64)])
}

fn as_index(key: &Value) -> Option<usize> {
    match key {
        Value::Sequence(items) if items.len() == 1 => {
            items[0].as_u64().and_then(|i| usize::try_from(i).ok())
        }
        _ => None,
    }
}

/// Deserializes a tree holding only `value` at `path` into [`RawConfig`]. The raw structs are the
/// schema: this asks them "is this key known, and is this value of its type?" for one key.
pub(super) fn check_one(path: &[Value], value: Value) -> Result<(), String> {
    let tree = path
        .iter()
        .rev()
        .fold(value, |inner, key| match as_index(key) {
            Some(_) => Value::Sequence(vec![inner]),
            None => {
                let mut map = Mapping::new();
                map.insert(key.clone(), inner);
                Value::Mapping(map)
            }
        });
    RawConfig::deserialize(tree)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A key as written, for a problem's key path; a list index as `[i]`.
fn key_name(key: &Value) -> String {
    if let Some(i) = as_index(key) {
        return format!("[{i}]");
    }
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_their_largest_whole_unit_and_read_back() {
        for (text, bytes) in [
            ("2GiB", 2 << 30),
            ("16MiB", 16 << 20),
            ("512KiB", 512 << 10),
            ("1000", 1000),
        ] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size, ByteSize(bytes));
            assert_eq!(size.to_string(), text);
        }
        assert_eq!("2 GiB".parse(), Ok(ByteSize(2 << 30)));
        assert_eq!("7B".parse(), Ok(ByteSize(7)));
        for bad in [
            "",
            "MiB",
            "16MB",
            "16mib",
            "1.5MiB",
            "-1",
            "99999999999999999999GiB",
        ] {
            assert_eq!(bad.parse::<ByteSize>(), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit_and_read_back() {
        for (text, ms) in [
            ("500ms", 500),
            ("5s", 5_000),
            ("90s", 90_000),
            ("1m", 60_000),
            ("2h", 7_200_000),
        ] {
            let interval: Interval = text.parse().unwrap();
            assert_eq!(interval, Interval(Duration::from_millis(ms)));
            assert_eq!(interval.to_string(), text);
        }
        assert_eq!("7".parse(), Ok(Interval(Duration::from_secs(7))));
        for bad in ["", "s", "1.5s", "5 minutes", "-1s", "1d"] {
            assert_eq!(bad.parse::<Interval>(), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn one_key_is_checked_against_the_raw_structs() {
        let path = |p: &str| p.split('.').map(Value::from).collect::<Vec<_>>();
        assert!(check_one(&path("mqtt.port"), Value::from(1884)).is_ok());
        assert!(check_one(&path("mqtt.port"), Value::from("x")).is_err());
        assert!(check_one(&path("mqtt.tls"), Value::Mapping(Mapping::new())).is_ok());
        let unknown = check_one(&path("mqtt.tls.pem"), Value::Null).unwrap_err();
        assert!(unknown.starts_with("unknown field `pem`"), "{unknown}");
    }
}
