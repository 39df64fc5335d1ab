//! The twin's data types: what the store keeps for each entity (spec/twin.md §6.1, §7.1) and
//! how metadata and state documents are shaped on the HTTP API (§5.3, §6.1).
//!
//! Plain data with serde; no rules live here. The rules are in `store`, the payload parsers in
//! `payload`, and the persisted form is exactly the serde form of [`Entity`] (except the fields
//! marked `serde(skip)`, which restart with the agent).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, LazyLock};

use super::vecmap::VecMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::payload::is_mosquitto_bridge;
use super::time::Timestamp;
use crate::topic::EntityTopicId;

/// `@type` of a registration (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityType {
    #[serde(rename = "device")]
    Device,
    #[serde(rename = "child-device")]
    ChildDevice,
    #[serde(rename = "service")]
    Service,
}

impl EntityType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Device => "device",
            EntityType::ChildDevice => "child-device",
            EntityType::Service => "service",
        }
    }

    /// Parses the `type` filter of the listing routes (§5.4 (l)).
    pub fn from_filter(s: &str) -> Option<EntityType> {
        match s {
            "device" => Some(EntityType::Device),
            "child-device" => Some(EntityType::ChildDevice),
            "service" => Some(EntityType::Service),
            _ => None,
        }
    }
}

/// A parsed registration message (§4.1): the `@` fields and the inline twin data.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub etype: EntityType,
    pub parent: Option<EntityTopicId>,
    pub external_id: Option<String>,
    pub health: Option<EntityTopicId>,
    /// Inline twin data with validated keys; `Value::Null` deletes the key.
    pub inline: BTreeMap<String, Value>,
    /// Unknown `@` keys, ignored with a warning (§4.1 (j)).
    pub ignored: Vec<String>,
}

/// A measurement type or series name, or a registration payload, interned by the store:
/// thousands of children usually report the same few names and register the same way.
pub type Name = Arc<str>;

/// One measurement value: `{"value":<number>,"time":<time>}` (§6.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub value: serde_json::Number,
    pub time: Timestamp,
}

/// A measurement name holds either a single series or a one-level group of series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SeriesNode {
    Single(Series),
    /// Boxed: groups are the rarer shape, and a single series then fits in 24 bytes.
    Group(Box<VecMap<Name, Series>>),
}

/// A received alarm or event: the payload object (without `time`), its time and reception time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub payload: Map<String, Value>,
    pub time: Timestamp,
    pub received: Timestamp,
}

/// The last health message of an entity (§3.4, §6.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub raw: String,
    pub received: Timestamp,
}

/// How the health of a mosquitto bridge service has changed (issue #4, beyond the reference):
/// the `since`, `flaps` and `last_down` members of its state document.
///
/// `since` and `last_down` are persisted (records without them, written before they existed,
/// load as `None`), so that the retained `1` the broker delivers again after a restart is not
/// mistaken for a change. `flaps` counts since the agent started, as the issue asks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BridgeHealth {
    /// When the derived status last changed to its current value; `None` while the entity has
    /// no health record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// When the derived status last became `down` (the first status seen counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_down: Option<Timestamp>,
    /// `up` → `down` transitions since the agent started.
    #[serde(skip)]
    pub flaps: u64,
}

/// Everything the twin keeps about one registered entity. `children` is derived from the other
/// entities' `parent` and never persisted. Sections are [`VecMap`]s and rare parts are boxed, to
/// keep an entity with one measurement series within a few hundred bytes (issue #2, memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub id: EntityTopicId,
    #[serde(rename = "type")]
    pub etype: EntityType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<EntityTopicId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_endpoint: Option<EntityTopicId>,
    /// The last accepted registration payload as compact, key-sorted JSON (§4.5); interned,
    /// since most children of a fleet register with the same payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_payload: Option<Name>,
    #[serde(default, skip_serializing_if = "VecMap::is_empty")]
    pub twin: VecMap<String, Value>,
    #[serde(default, skip_serializing_if = "VecMap::is_empty")]
    pub measurements: VecMap<Name, VecMap<Name, SeriesNode>>,
    /// Config, health, capabilities, alarms, events and commands: absent for most entities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<Extra>>,
    /// Exact channels (`twin/k`, `a/`, `m/t/meta`, …) of retained topics seen for this entity,
    /// sorted, so that deregistration can clear each of them (§4.8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<String>,
    /// Boxed: most entities have no children.
    #[serde(skip)]
    pub children: Option<Box<BTreeSet<EntityTopicId>>>,
}

/// The sections of an entity that most entities never use (a child with one sensor has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Mosquitto bridge services only, from their first health message on; boxed, being rarer
    /// still.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Box<BridgeHealth>>,
    #[serde(default, skip_serializing_if = "VecMap::is_empty")]
    pub capabilities: VecMap<String, Value>,
    /// Active alarms keyed by topic type (`ThinEdgeAlarm` for an empty one).
    #[serde(default, skip_serializing_if = "VecMap::is_empty")]
    pub alarms: VecMap<String, Record>,
    /// Recent events per effective type, newest arrival first.
    #[serde(default, skip_serializing_if = "VecMap::is_empty")]
    pub events: VecMap<String, VecDeque<Record>>,
    #[serde(default, skip_serializing_if = "VecMap::is_empty")]
    pub commands: VecMap<String, VecMap<String, Map<String, Value>>>,
}

static NO_EXTRA: LazyLock<Extra> = LazyLock::new(Extra::default);
static NO_BRIDGE_HEALTH: BridgeHealth = BridgeHealth {
    since: None,
    last_down: None,
    flaps: 0,
};

impl Entity {
    /// The rarely used sections, empty when the entity has none.
    pub fn extra(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// The rarely used sections, created on first use.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub fn new(id: EntityTopicId, etype: EntityType, parent: Option<EntityTopicId>) -> Self {
        Entity {
            id,
            etype,
            parent,
            external_id: None,
            health_endpoint: None,
            last_payload: None,
            twin: VecMap::new(),
            measurements: VecMap::new(),
            extra: None,
            retained: Vec::new(),
            children: None,
        }
    }

    /// The direct children, in byte order.
    pub fn children(&self) -> impl DoubleEndedIterator<Item = &EntityTopicId> {
        self.children.iter().flat_map(|c| c.iter())
    }

    pub fn add_child(&mut self, id: EntityTopicId) {
        self.children.get_or_insert_with(Box::default).insert(id);
    }

    pub fn remove_child(&mut self, id: &EntityTopicId) {
        if let Some(children) = &mut self.children {
            children.remove(id);
            if children.is_empty() {
                self.children = None;
            }
        }
    }

    /// Records whether the retained topic `channel` currently holds a message for this entity.
    pub fn set_retained(&mut self, channel: &str, present: bool) {
        match (
            self.retained.binary_search_by(|c| c.as_str().cmp(channel)),
            present,
        ) {
            (Err(i), true) => self.retained.insert(i, channel.to_string()),
            (Ok(i), false) => {
                self.retained.remove(i);
            }
            _ => {}
        }
    }

    /// The metadata object of §5.3, keys in the documented order.
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata(self)
    }

    /// The state document of §6.1.
    pub fn state(&self) -> State<'_> {
        State(self)
    }
}

/// Serializes as `{"@topic-id","@parent","@type","@id","@health"}` (§5.3).
pub struct Metadata<'a>(&'a Entity);

impl Serialize for Metadata<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@topic-id", &e.id)?;
        if let Some(p) = &e.parent {
            m.serialize_entry("@parent", p)?;
        }
        m.serialize_entry("@type", e.etype.as_str())?;
        if let Some(x) = &e.external_id {
            m.serialize_entry("@id", x)?;
        }
        if let Some(h) = &e.health_endpoint {
            m.serialize_entry("@health", h)?;
        }
        m.end()
    }
}

/// Serializes the state document of §6.1, members in the documented order; a mosquitto bridge
/// service's also has `since`, `flaps` and `last_down` right after `health` ([`BridgeHealth`]).
pub struct State<'a>(&'a Entity);

impl Serialize for State<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("@topic-id", &e.id)?;
        m.serialize_entry("@type", e.etype.as_str())?;
        if let Some(p) = &e.parent {
            m.serialize_entry("@parent", p)?;
        }
        if let Some(x) = &e.external_id {
            m.serialize_entry("@id", x)?;
        }
        if let Some(h) = &e.health_endpoint {
            m.serialize_entry("@health", h)?;
        }
        m.serialize_entry("twin", &e.twin)?;
        let x = e.extra();
        match &x.config {
            Some(c) => m.serialize_entry("config", c)?,
            None => m.serialize_entry("config", &Map::new())?,
        }
        m.serialize_entry("health", &x.health)?;
        if is_mosquitto_bridge(&e.id) {
            let b = x.bridge.as_deref().unwrap_or(&NO_BRIDGE_HEALTH);
            m.serialize_entry("since", &b.since)?;
            m.serialize_entry("flaps", &b.flaps)?;
            m.serialize_entry("last_down", &b.last_down)?;
        }
        m.serialize_entry("capabilities", &x.capabilities)?;
        m.serialize_entry("measurements", &e.measurements)?;
        m.serialize_entry("alarms", &x.alarms)?;
        m.serialize_entry("events", &x.events)?;
        m.serialize_entry("commands", &x.commands)?;
        m.serialize_entry("children", &Children(e))?;
        m.end()
    }
}

/// Serializes the children of an entity as an array of topic ids.
struct Children<'a>(&'a Entity);

impl Serialize for Children<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.children())
    }
}
