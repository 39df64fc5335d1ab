//! The `te/` topic schema (spec/twin.md §2): validated entity topic ids and channels.
//!
//! Owns the grammar only: turning MQTT topic strings and topic-id strings from payloads, HTTP
//! paths and queries into [`EntityTopicId`] and [`Channel`], and printing them back. `Display` is
//! the exact inverse of parsing for canonical input, which the tests check by round trip. What a
//! channel's payload means is the twin's business, not this module's.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a topic-id string was refused (§2.2). The messages are part of the HTTP API (§5.8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicIdError {
    #[error("An entity topic identifier has at most 4 segments")]
    TooManySegments,
    #[error("An entity topic identifier must be a valid MQTT topic")]
    InvalidMqttTopic,
    #[error("An entity topic identifier must have at least one non-empty segment")]
    AllEmpty,
}

/// A canonical entity topic id: exactly four segments joined by three slashes, at least one of
/// them non-empty, none containing `+`, `#` or NUL. Clones share one allocation: the twin keeps
/// an id in its index, its entity, its children's `parent` and its parent's `children`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityTopicId(Arc<str>);

impl EntityTopicId {
    /// Validates four segments taken from an MQTT topic or a split HTTP path.
    pub fn from_segments(segments: [&str; 4]) -> Result<Self, TopicIdError> {
        if segments
            .iter()
            .any(|s| s.contains(['+', '#', '\0']) || s.contains('/'))
        {
            return Err(TopicIdError::InvalidMqttTopic);
        }
        if segments.iter().all(|s| s.is_empty()) {
            return Err(TopicIdError::AllEmpty);
        }
        Ok(EntityTopicId(segments.join("/").into()))
    }

    /// The default main device, `device/main//`.
    pub fn default_main() -> Self {
        EntityTopicId(Arc::from("device/main//"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> [&str; 4] {
        let mut it = self.0.splitn(4, '/');
        let mut out = [""; 4];
        for slot in &mut out {
            *slot = it.next().unwrap_or("");
        }
        out
    }

    /// `Some(d)` for a default-scheme child or main device id `device/<d>//`.
    pub fn default_device_name(&self) -> Option<&str> {
        match self.segments() {
            ["device", d, "", ""] if !d.is_empty() => Some(d),
            _ => None,
        }
    }

    /// `Some((d, s))` for a default-scheme service id `device/<d>/service/<s>`.
    pub fn default_service_names(&self) -> Option<(&str, &str)> {
        match self.segments() {
            ["device", d, "service", s] if !d.is_empty() && !s.is_empty() => Some((d, s)),
            _ => None,
        }
    }

    /// True for the three forms of the default scheme (§2.3).
    pub fn is_default_scheme(&self) -> bool {
        self.default_device_name().is_some() || self.default_service_names().is_some()
    }

    /// The device `device/<d>//` a default-scheme service id belongs to.
    pub fn default_service_device(&self) -> Option<EntityTopicId> {
        self.default_service_names()
            .map(|(d, _)| EntityTopicId(format!("device/{d}//").into()))
    }

    /// The topic `<root>/<id>` (registration) or `<root>/<id>/<channel>`.
    pub fn topic(&self, root: &str, channel: &Channel) -> String {
        match channel {
            Channel::Registration => format!("{root}/{self}"),
            other => format!("{root}/{self}/{other}"),
        }
    }
}

impl FromStr for EntityTopicId {
    type Err = TopicIdError;

    /// Normalises a topic-id string from a payload, path or query: pads to four segments.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 4 {
            return Err(TopicIdError::TooManySegments);
        }
        let mut segments = [""; 4];
        segments[..parts.len()].copy_from_slice(&parts);
        Self::from_segments(segments)
    }
}

impl fmt::Display for EntityTopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EntityTopicId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntityTopicId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The channel of an entity topic: everything after the four id levels (§2.4).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Registration,
    /// `twin/<key>`; the key may be empty here and is rejected by the twin key rules.
    Twin(String),
    Config,
    Measurement(String),
    MeasurementMeta(String),
    Event(String),
    EventMeta(String),
    Alarm(String),
    AlarmMeta(String),
    Capability(String),
    Command {
        op: String,
        id: String,
    },
    /// `cmd/health/check`: a health-check request, never a command instance.
    HealthCheck,
    Health,
    Status(String),
    Signal(String),
}

/// An MQTT topic that is not an entity topic the agent handles (§2.1, §2.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("not an entity topic")]
    NotEntityTopic,
    #[error("invalid topic id: {0}")]
    InvalidId(TopicIdError),
    #[error("unknown channel")]
    UnknownChannel,
}

impl Channel {
    /// Parses the levels after the topic id; `levels` is empty for a registration.
    pub fn from_levels(levels: &[&str]) -> Option<Channel> {
        let owned = |s: &str| s.to_string();
        Some(match levels {
            [] => Channel::Registration,
            ["twin", k] => Channel::Twin(owned(k)),
            ["config"] => Channel::Config,
            ["m", t] => Channel::Measurement(owned(t)),
            ["m", t, "meta"] => Channel::MeasurementMeta(owned(t)),
            ["e", t] => Channel::Event(owned(t)),
            ["e", t, "meta"] => Channel::EventMeta(owned(t)),
            ["a", t] => Channel::Alarm(owned(t)),
            ["a", t, "meta"] => Channel::AlarmMeta(owned(t)),
            ["cmd", op] if !op.is_empty() => Channel::Capability(owned(op)),
            ["cmd", "health", "check"] => Channel::HealthCheck,
            ["cmd", op, id] if !op.is_empty() && !id.is_empty() => Channel::Command {
                op: owned(op),
                id: owned(id),
            },
            ["status", "health"] => Channel::Health,
            ["status", c] if !c.is_empty() => Channel::Status(owned(c)),
            ["signal", t] if !t.is_empty() => Channel::Signal(owned(t)),
            _ => return None,
        })
    }

    /// Retained-kind channels (§1 conventions): the agent tracks these topics per entity.
    pub fn is_retained_kind(&self) -> bool {
        matches!(
            self,
            Channel::Registration
                | Channel::Twin(_)
                | Channel::Config
                | Channel::MeasurementMeta(_)
                | Channel::EventMeta(_)
                | Channel::AlarmMeta(_)
                | Channel::Alarm(_)
                | Channel::Capability(_)
                | Channel::Command { .. }
                | Channel::Health
        )
    }
}

impl fmt::Display for Channel {
    /// The channel levels as they follow the topic id (empty for a registration).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Registration => Ok(()),
            Channel::Twin(k) => write!(f, "twin/{k}"),
            Channel::Config => f.write_str("config"),
            Channel::Measurement(t) => write!(f, "m/{t}"),
            Channel::MeasurementMeta(t) => write!(f, "m/{t}/meta"),
            Channel::Event(t) => write!(f, "e/{t}"),
            Channel::EventMeta(t) => write!(f, "e/{t}/meta"),
            Channel::Alarm(t) => write!(f, "a/{t}"),
            Channel::AlarmMeta(t) => write!(f, "a/{t}/meta"),
            Channel::Capability(op) => write!(f, "cmd/{op}"),
            Channel::Command { op, id } => write!(f, "cmd/{op}/{id}"),
            Channel::HealthCheck => f.write_str("cmd/health/check"),
            Channel::Health => f.write_str("status/health"),
            Channel::Status(c) => write!(f, "status/{c}"),
            Channel::Signal(t) => write!(f, "signal/{t}"),
        }
    }
}

/// Parses an MQTT topic under `root` into an entity topic id and a channel.
/// True for a name that is one plain topic level (a topic root, an operation): not empty, not
/// `.` or `..`, without `/`, `+`, `#`, spaces or control characters. It also goes into bridge
/// files, which mosquitto splits on spaces, and into file names.
pub fn is_plain_level(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '+', '#'])
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub fn parse_topic(root: &str, topic: &str) -> Result<(EntityTopicId, Channel), TopicError> {
    let levels: Vec<&str> = topic.split('/').collect();
    if levels.len() < 5 || levels[0] != root {
        return Err(TopicError::NotEntityTopic);
    }
    let id = EntityTopicId::from_segments([levels[1], levels[2], levels[3], levels[4]])
        .map_err(TopicError::InvalidId)?;
    let channel = Channel::from_levels(&levels[5..]).ok_or(TopicError::UnknownChannel)?;
    Ok((id, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EntityTopicId {
        s.parse().unwrap()
    }

    #[test]
    fn topic_id_strings_are_padded_to_four_segments() {
        for input in ["abc", "abc/", "abc//", "abc///"] {
            assert_eq!(id(input).as_str(), "abc///");
        }
        assert_eq!(id("device/child0").as_str(), "device/child0//");
        assert_eq!(
            id("device/c/service/s").default_service_names(),
            Some(("c", "s"))
        );
    }

    #[test]
    fn topic_id_strings_are_refused_with_the_spec_messages() {
        let err = |s: &str| s.parse::<EntityTopicId>().unwrap_err().to_string();
        assert_eq!(
            err("a/b/c/d/e"),
            "An entity topic identifier has at most 4 segments"
        );
        assert_eq!(
            err("device/+//"),
            "An entity topic identifier must be a valid MQTT topic"
        );
        assert_eq!(
            err("device/#"),
            "An entity topic identifier must be a valid MQTT topic"
        );
        assert_eq!(
            err("a\0"),
            "An entity topic identifier must be a valid MQTT topic"
        );
        for s in ["", "/", "///"] {
            assert_eq!(
                err(s),
                "An entity topic identifier must have at least one non-empty segment"
            );
        }
    }

    #[test]
    fn default_scheme_is_recognised_and_custom_ids_are_not() {
        assert_eq!(id("device/main//").default_device_name(), Some("main"));
        assert_eq!(
            id("device/c1/service/x").default_service_device(),
            Some(id("device/c1//"))
        );
        for custom in [
            "factory01/hallA/packaging/belt001",
            "device///",
            "device/main//foo",
            "device/c/service/",
            "device//service/x",
            "device/main/custom_service/x",
        ] {
            assert!(!id(custom).is_default_scheme(), "{custom}");
        }
    }

    /// The parse table of spec §2.5, row by row.
    #[test]
    fn mqtt_topics_parse_as_in_the_spec_table() {
        let ok = |t: &str| parse_topic("te", t).unwrap();
        let bad = |t: &str| parse_topic("te", t).unwrap_err();
        assert_eq!(
            ok("te/device/main//"),
            (id("device/main"), Channel::Registration)
        );
        assert_eq!(ok("te/device/child01//").0, id("device/child01"));
        assert_eq!(
            ok("te/device/child01/service/nodered").0,
            id("device/child01/service/nodered")
        );
        assert_eq!(
            ok("te/factory01/hallA/packaging/belt001").0,
            id("factory01/hallA/packaging/belt001")
        );
        assert_eq!(bad("te/device/child01"), TopicError::NotEntityTopic);
        assert_eq!(bad("te/device/child01///"), TopicError::UnknownChannel);
        assert_eq!(
            ok("te/device/main///m/environment").1,
            Channel::Measurement("environment".into())
        );
        assert_eq!(
            ok("te/device/main///m/").1,
            Channel::Measurement(String::new())
        );
        assert_eq!(bad("te/device/main///m"), TopicError::UnknownChannel);
        assert_eq!(
            ok("te/device/main///m/environment/meta").1,
            Channel::MeasurementMeta("environment".into())
        );
        assert_eq!(bad("te/device/main///m/a/b"), TopicError::UnknownChannel);
        assert_eq!(
            ok("te/device/child01/service/nodered/e/login").1,
            Channel::Event("login".into())
        );
        assert_eq!(
            ok("te/device/main///a/high_temp").1,
            Channel::Alarm("high_temp".into())
        );
        assert_eq!(
            ok("te/device/child001///a/sensors/meta").1,
            Channel::AlarmMeta("sensors".into())
        );
        assert_eq!(
            ok("te/device/main///twin/device_OS").1,
            Channel::Twin("device_OS".into())
        );
        assert_eq!(bad("te/device/main///twin"), TopicError::UnknownChannel);
        assert_eq!(bad("te/device/main///twin/a/b"), TopicError::UnknownChannel);
        assert_eq!(ok("te/device/main///twin/").1, Channel::Twin(String::new()));
        assert_eq!(
            ok("te/device/main/service/tedge-agent/config").1,
            Channel::Config
        );
        assert_eq!(
            ok("te/device/main///cmd/restart").1,
            Channel::Capability("restart".into())
        );
        assert_eq!(
            ok("te/device/main///cmd/restart/c8y-mapper-17").1,
            Channel::Command {
                op: "restart".into(),
                id: "c8y-mapper-17".into()
            }
        );
        assert_eq!(
            bad("te/device/main///cmd/restart/1/2"),
            TopicError::UnknownChannel
        );
        assert_eq!(bad("te/device/main///cmd/"), TopicError::UnknownChannel);
        assert_eq!(
            ok("te/device/main///cmd/health/check").1,
            Channel::HealthCheck
        );
        assert_eq!(
            ok("te/device/main/service/edge-agent/cmd/health/check").1,
            Channel::HealthCheck
        );
        assert_eq!(
            ok("te/device/main/service/nodered/status/health").1,
            Channel::Health
        );
        assert_eq!(
            ok("te/device/main///status/foo").1,
            Channel::Status("foo".into())
        );
        assert_eq!(
            ok("te/device/main///signal/sync").1,
            Channel::Signal("sync".into())
        );
        assert_eq!(
            bad("te/device/main///incorrect_category/x"),
            TopicError::UnknownChannel
        );
        assert_eq!(
            ok("te/a/b/c/d/m/t"),
            (id("a/b/c/d"), Channel::Measurement("t".into()))
        );
        assert_eq!(
            bad("te/////"),
            TopicError::InvalidId(TopicIdError::AllEmpty)
        );
        assert_eq!(bad("tx/device/main///m/t"), TopicError::NotEntityTopic);
        assert_eq!(bad("te/errors"), TopicError::NotEntityTopic);
        for empty in ["cmd//", "signal/", "status/"] {
            assert_eq!(
                bad(&format!("te/device/main///{empty}")),
                TopicError::UnknownChannel
            );
        }
    }

    #[test]
    fn topics_round_trip_through_display() {
        let topics = [
            "te/device/main//",
            "te/device/c1///twin/name",
            "te/device/c1///config",
            "te/device/c1///m/",
            "te/device/c1///m/env/meta",
            "te/device/c1///e/login",
            "te/device/c1///e/login/meta",
            "te/device/c1///a/temp",
            "te/device/c1///a/temp/meta",
            "te/device/c1///cmd/restart",
            "te/device/c1///cmd/restart/42",
            "te/device/c1///cmd/health/check",
            "te/device/c1/service/s/status/health",
            "te/device/c1///status/foo",
            "te/device/c1///signal/sync",
            "te/a b/ü/c/d/m/x y",
        ];
        for topic in topics {
            let (id, channel) = parse_topic("te", topic).unwrap();
            assert_eq!(id.topic("te", &channel), topic);
        }
    }

    #[test]
    fn topic_ids_round_trip_through_display_and_serde() {
        for s in [
            "device/main//",
            "a/b/c/d",
            "x///",
            "/x//",
            "device/c/service/s",
        ] {
            let parsed = id(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(parsed.to_string().parse::<EntityTopicId>().unwrap(), parsed);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(
                serde_json::from_str::<EntityTopicId>(&json).unwrap(),
                parsed
            );
        }
        assert!(serde_json::from_str::<EntityTopicId>("\"a/b/c/d/e\"").is_err());
    }
}
