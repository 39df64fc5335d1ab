//! The entity store: the whole twin in memory, and the one place its rules are applied
//! (spec/twin.md §3–§9). Synchronous and free of I/O: every input (an MQTT message, an HTTP
//! request, a step of the sync procedure) mutates the store and leaves [`Effects`] behind, which
//! the owner task (`twin::task`) persists and publishes. This file holds the state, loading and
//! persistence records, and the dispatch of MQTT messages; the rules live beside it in
//! `registry` (entities), `data` (channel payloads), `sync` (§7.4) and `query` (reads).

use super::data::CHANNEL_KINDS;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use serde_json::{json, Value};

use super::changes::Changes;
use super::effects::{Effects, Publication, Rejection};
use super::error::TwinError;
use super::history::History;
use super::model::{Entity, EntityType, SeriesNode};
use super::names::Names;
use super::outbox::{Outbox, Outgoing, Verdict};
use super::persist::{Op, RawJson};
use super::records::{self, Key, Record, ENTITY_KEY, MAIN_KEY, OUTBOX_KEY};
use super::sync::Window;
use super::time::Timestamp;
use super::vecmap::VecMap;
use crate::config::{Config, HistoryConfig};
use crate::topic::{parse_topic, Channel, EntityTopicId, TopicError};

/// The store's settings, resolved from the agent config.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub root: String,
    pub main: EntityTopicId,
    pub agent: EntityTopicId,
    pub auto_register: bool,
    pub max_entities: usize,
    pub max_pending: usize,
    pub events_kept: usize,
    /// Items per section of one entity (§9).
    pub max_section_items: usize,
    /// Messages held during a sync window (§7.4 step 4).
    pub max_window_held: usize,
    pub pid: u32,
    /// The measurement history (issue #7).
    pub history: HistoryConfig,
}

impl StoreConfig {
    pub fn from_config(config: &Config, pid: u32) -> Self {
        StoreConfig {
            root: config.mqtt.topic_root.clone(),
            main: config.twin.main_device.clone(),
            agent: config.twin.agent_service.clone(),
            auto_register: config.twin.auto_register,
            max_entities: config.twin.max_entities,
            max_pending: config.twin.max_pending,
            events_kept: config.twin.events_kept,
            max_section_items: 10_000,
            max_window_held: 10_000,
            pid,
            history: config.twin.history,
        }
    }
}

/// How soon a change must reach the disk (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// Measurements and events: within `twin.telemetry_flush_interval`.
    Telemetry,
    /// Other retained-kind items: within 1 s.
    Retained,
    /// Registrations, deregistrations, clean-ups: before the publications go out.
    Now,
}

/// Why the persisted state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the persisted main device {persisted} differs from the configured twin.main_device {configured}; empty the twin directory to reset it")]
    MainMismatch {
        persisted: String,
        configured: EntityTopicId,
    },
}

/// Counters of §9, read by logs and (later) metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    /// Messages on entity topics, by channel kind: indexed like [`CHANNEL_KINDS`], so that
    /// counting a message costs no lookup on the ingest path.
    pub received: [u64; CHANNEL_KINDS.len()],
    /// Changes applied to entities' records (each marks a record for saving).
    pub changes: u64,
    pub mqtt_ignored_topic: u64,
    pub mqtt_dropped_oversize: u64,
    pub payload_rejected: BTreeMap<&'static str, u64>,
    pub registration_rejected: BTreeMap<&'static str, u64>,
    pub data_dropped_unknown_entity: u64,
    pub pending_dropped: u64,
    pub window_held_dropped: u64,
    pub config_ignored: u64,
    pub sync_completed: u64,
    pub sync_pruned_entities: u64,
    /// Commands seen going from a running status to `successful` or `failed`, whoever asked
    /// for them (the operations API, a cloud mapper…), by operation label
    /// ([`crate::ops::store::operation_label`]) and final status.
    pub commands_ended: BTreeMap<(&'static str, &'static str), u64>,
}

impl Counters {
    /// Messages received on channels of `kind` (one of [`CHANNEL_KINDS`]; 0 for another).
    pub fn received(&self, kind: &str) -> u64 {
        CHANNEL_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.received[i])
    }
}

/// A registration held until its parent exists (§4.4).
#[derive(Debug, Clone)]
pub(super) struct PendingEntry {
    pub parent: EntityTopicId,
    pub payload: Value,
    pub seq: u64,
    /// Latest non-telemetry message per topic for the pending entity, applied on release.
    pub held: Vec<(String, Bytes)>,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    pub entries: HashMap<EntityTopicId, PendingEntry>,
    pub by_parent: BTreeMap<EntityTopicId, BTreeSet<EntityTopicId>>,
    pub by_age: BTreeMap<u64, EntityTopicId>,
    pub next_seq: u64,
}

impl Pending {
    pub fn remove(&mut self, id: &EntityTopicId) -> Option<PendingEntry> {
        let entry = self.entries.remove(id)?;
        if let Some(children) = self.by_parent.get_mut(&entry.parent) {
            children.remove(id);
            if children.is_empty() {
                self.by_parent.remove(&entry.parent);
            }
        }
        self.by_age.remove(&entry.seq);
        Some(entry)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.by_parent.clear();
        self.by_age.clear();
    }
}

/// Where the store stands with the broker (§6.3, §7.4).
#[derive(Debug)]
pub(super) enum Phase {
    Disconnected,
    Window(Box<Window>),
    Ready,
}

pub struct Store {
    pub(super) cfg: StoreConfig,
    /// Boxed: the index's buckets stay small, and a resize moves pointers, not entities.
    pub(super) entities: HashMap<EntityTopicId, Box<Entity>>,
    pub(super) pending: Pending,
    /// Retained messages of the agent not yet acknowledged by the broker (`outbox`).
    pub(super) outbox: Outbox,
    pub(super) next_generation: u64,
    /// Clean-up topics already published on the current connection: §7.4 step 7 republishes
    /// only the clean-ups left over from an earlier connection or process.
    pub(super) outbox_sent: HashSet<String>,
    /// Clean-ups the broker acknowledged while no sync had completed on this connection: they
    /// stay outstanding until the window closes, so that the stale retained copies the broker
    /// sent before clearing them are discarded by step 8 instead of re-registering the entity.
    pub(super) outbox_acked: Vec<(String, u64)>,
    pub(super) phase: Phase,
    /// Data that would auto-register an entity, received on a connection before its SUBACK (a
    /// persistent session's queued messages): held for the window the SUBACK opens, so that the
    /// retained registrations arrive first (§7.4 step 4, §4.7).
    pub(super) held_before_sync: Vec<(String, Bytes)>,
    pub(super) dirty: HashMap<EntityTopicId, Durability>,
    pub(super) removed: BTreeSet<EntityTopicId>,
    pub(super) outbox_dirty: BTreeSet<String>,
    pub(super) main_dirty: bool,
    pub(super) fx: Effects,
    pub(super) names: Names,
    pub counters: Counters,
    /// The measurement history of every series (issue #7).
    pub history: History,
    /// The numbering of changes and their events for `/te/v1/changes` (issue #7).
    pub changes: Changes,
}

impl Store {
    /// A store on a first start: the main device and the agent's own service (§7.3, §8).
    pub fn new(cfg: StoreConfig) -> Self {
        let history = History::new(cfg.history);
        let mut store = Store {
            cfg,
            entities: HashMap::new(),
            pending: Pending::default(),
            outbox: Outbox::new(),
            next_generation: 0,
            outbox_sent: HashSet::new(),
            outbox_acked: Vec::new(),
            phase: Phase::Disconnected,
            held_before_sync: Vec::new(),
            dirty: HashMap::new(),
            removed: BTreeSet::new(),
            outbox_dirty: BTreeSet::new(),
            main_dirty: true,
            fx: Effects::default(),
            names: Names::default(),
            counters: Counters::default(),
            history,
            changes: Changes::new(Changes::first_seq()),
        };
        store.ensure_protected_entities();
        store
    }

    /// Rebuilds the store from persisted entries (see [`Store::snapshot_entries`]).
    pub fn load(
        cfg: StoreConfig,
        entries: BTreeMap<String, RawJson>,
    ) -> Result<(Self, Vec<String>), LoadError> {
        let mut warnings = Vec::new();
        let persisted_main = entries.get(MAIN_KEY).and_then(|main| {
            records::parse::<String>(main.get())
                .map_err(|e| warnings.push(format!("ignored the persisted main device id: {e}")))
                .ok()
        });
        if let Some(persisted) = persisted_main.as_deref() {
            if persisted != cfg.main.as_str() {
                return Err(LoadError::MainMismatch {
                    persisted: persisted.to_owned(),
                    configured: cfg.main.clone(),
                });
            }
        }
        let mut store = Store::new(cfg);
        store.main_dirty = persisted_main.is_none();
        store.dirty.clear();
        for (key, value) in entries {
            if let Some(id) = key.strip_prefix(ENTITY_KEY) {
                match records::parse::<Entity>(value.get()) {
                    Ok(entity) if entity.id.as_str() == id => {
                        store.entities.insert(entity.id.clone(), Box::new(entity));
                    }
                    Ok(_) => warnings.push(format!("skipped persisted entity {id}: id mismatch")),
                    Err(e) => warnings.push(format!("skipped persisted entity {id}: {e}")),
                }
            } else if let Some(topic) = key.strip_prefix(OUTBOX_KEY) {
                match records::parse::<Outgoing>(value.get()) {
                    Ok(outgoing) => {
                        store.next_generation = store.next_generation.max(outgoing.generation);
                        store.outbox.insert(topic.to_string(), outgoing);
                    }
                    Err(e) => {
                        warnings.push(format!("skipped a persisted outbox entry for {topic}: {e}"))
                    }
                }
            }
        }
        store.ensure_protected_entities();
        store.relink(&mut warnings);
        store.intern_loaded_names();
        Ok((store, warnings))
    }

    /// Names and payloads read from disk are separate copies: share them again.
    fn intern_loaded_names(&mut self) {
        let names = &mut self.names;
        for entity in self.entities.values_mut() {
            if let Some(payload) = &entity.last_payload {
                entity.last_payload = Some(names.intern(payload));
            }
            let loaded = std::mem::take(&mut entity.measurements);
            entity.measurements = loaded
                .iter()
                .map(|(mtype, series)| {
                    let series = series
                        .iter()
                        .map(|(name, node)| {
                            let node = match node {
                                SeriesNode::Group(group) => SeriesNode::Group(Box::new(
                                    group
                                        .iter()
                                        .map(|(member, s)| (names.intern(member), s.clone()))
                                        .collect::<VecMap<_, _>>(),
                                )),
                                single => single.clone(),
                            };
                            (names.intern(name), node)
                        })
                        .collect::<VecMap<_, _>>();
                    (names.intern(mtype), series)
                })
                .collect();
        }
    }

    /// Creates the main device and the agent service when missing.
    fn ensure_protected_entities(&mut self) {
        let main = self.cfg.main.clone();
        if let Some(entity) = self.entities.get_mut(&main) {
            entity.etype = EntityType::Device;
            entity.parent = None;
        } else {
            self.entities.insert(
                main.clone(),
                Box::new(Entity::new(main.clone(), EntityType::Device, None)),
            );
            self.touch(&main, Durability::Now);
        }
        let agent = self.cfg.agent.clone();
        if !self.entities.contains_key(&agent) {
            let mut entity = Entity::new(agent.clone(), EntityType::Service, Some(main));
            entity.last_payload = Some(self.agent_registration().to_string().into());
            self.entities.insert(agent.clone(), Box::new(entity));
            if let Some(main) = self.entities.get_mut(&self.cfg.main) {
                main.add_child(agent.clone());
            }
            self.touch(&agent, Durability::Now);
        }
    }

    /// Recomputes the derived `children` sets. An entity whose parent is missing, or which sits
    /// on a parent cycle or on a chain not reaching the main device (a skipped journal line can
    /// leave one behind, §7.2), is re-attached to the main device rather than lost: every walk
    /// of the tree relies on it being a tree rooted at the main device.
    fn relink(&mut self, warnings: &mut Vec<String>) {
        let main = self.cfg.main.clone();
        for entity in self.entities.values_mut() {
            entity.children = None;
        }
        let mut ids: Vec<EntityTopicId> = self.entities.keys().cloned().collect();
        ids.sort();
        for id in &ids {
            let parent = self.entities.get(id).and_then(|e| e.parent.clone());
            let Some(parent) = parent else { continue };
            if !self.entities.contains_key(&parent) || parent == *id {
                warnings.push(format!(
                    "persisted entity {id} had a missing parent {parent}; re-attached to {main}"
                ));
                self.reattach_to_main(id);
            }
        }
        let mut rooted: HashSet<EntityTopicId> = HashSet::from([main.clone()]);
        for id in &ids {
            let mut path: Vec<EntityTopicId> = Vec::new();
            let mut on_path: HashSet<EntityTopicId> = HashSet::new();
            let mut cursor = id.clone();
            while !rooted.contains(&cursor) {
                if !on_path.insert(cursor.clone()) {
                    let start = path.iter().position(|p| *p == cursor).unwrap_or(0);
                    for member in &path[start..] {
                        warnings.push(format!(
                            "persisted entity {member} was on a parent cycle; re-attached to {main}"
                        ));
                        self.reattach_to_main(member);
                    }
                    break;
                }
                path.push(cursor.clone());
                match self.entities.get(&cursor).and_then(|e| e.parent.clone()) {
                    Some(parent) => cursor = parent,
                    None => {
                        warnings.push(format!(
                            "persisted entity {cursor} had no parent; re-attached to {main}"
                        ));
                        self.reattach_to_main(&cursor);
                        break;
                    }
                }
            }
            rooted.extend(path);
        }
        let links: Vec<(EntityTopicId, EntityTopicId)> = self
            .entities
            .values()
            .filter_map(|e| e.parent.clone().map(|p| (p, e.id.clone())))
            .collect();
        for (parent, child) in links {
            if let Some(p) = self.entities.get_mut(&parent) {
                p.add_child(child);
            }
        }
    }

    fn reattach_to_main(&mut self, id: &EntityTopicId) {
        let main = self.cfg.main.clone();
        if let Some(e) = self.entities.get_mut(id) {
            e.parent = Some(main);
        }
        self.touch(id, Durability::Now);
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    pub fn entity(&self, id: &EntityTopicId) -> Option<&Entity> {
        self.entities.get(id).map(|e| &**e)
    }

    /// The parent, grandparent… of an entity, up to a root. Bounded by the number of entities,
    /// so that even a parent cycle (which loading repairs) cannot make a walk endless.
    pub(super) fn ancestors<'a>(
        &'a self,
        id: &EntityTopicId,
    ) -> impl Iterator<Item = &'a EntityTopicId> + 'a {
        let parent_of =
            move |id: &EntityTopicId| self.entities.get(id).and_then(|e| e.parent.as_ref());
        std::iter::successors(parent_of(id), move |p| parent_of(p)).take(self.entities.len())
    }

    /// The stored copy of an id, so that references to an entity share its allocation.
    pub(super) fn canonical(&self, id: &EntityTopicId) -> EntityTopicId {
        self.entities
            .get_key_value(id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| id.clone())
    }

    /// True once the sync of the current connection completed (§6.3).
    pub fn is_synced(&self) -> bool {
        matches!(self.phase, Phase::Ready)
    }

    /// Takes what the inputs applied since the last call produced.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    // ---- persistence records -------------------------------------------------------------

    pub(super) fn touch(&mut self, id: &EntityTopicId, level: Durability) {
        self.counters.changes += 1;
        if level == Durability::Now {
            self.fx.durable = true;
        }
        let entry = self.dirty.entry(id.clone()).or_insert(level);
        if *entry < level {
            *entry = level;
        }
    }

    /// The most urgent level among unsaved changes, if any.
    pub fn unsaved(&self) -> Option<Durability> {
        let mut level = self.dirty.values().max().copied();
        // New outbox entries come with a durable batch; what is left to save are the entries
        // forgotten on acknowledgement, which at worst are published once more after a crash.
        if !self.outbox_dirty.is_empty() {
            level = level.max(Some(Durability::Retained));
        }
        if !self.removed.is_empty() || self.main_dirty {
            level = Some(Durability::Now);
        }
        level
    }

    /// Journal records for every unsaved change at `min` urgency or above (all of them for
    /// [`Durability::Telemetry`]). Removals come first so that a re-created id ends up present.
    pub fn take_persist_ops(&mut self, min: Durability) -> Vec<Record<'_>> {
        let main = std::mem::take(&mut self.main_dirty);
        let removed = std::mem::take(&mut self.removed);
        let due: Vec<EntityTopicId> = self
            .dirty
            .iter()
            .filter(|(_, level)| **level >= min)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            self.dirty.remove(id);
        }
        // A burst leaves a large, empty table behind: give it back.
        if self.dirty.is_empty() && self.dirty.capacity() > 1024 {
            self.dirty = HashMap::new();
        }
        let outbox = std::mem::take(&mut self.outbox_dirty);

        let mut ops =
            Vec::with_capacity(usize::from(main) + removed.len() + due.len() + outbox.len());
        if main {
            ops.push(Op::Put(Key::Main, records::Value::Main(&self.cfg.main)));
        }
        ops.extend(removed.into_iter().map(|id| Op::Del(Key::Entity(id))));
        for id in due {
            if let Some(entity) = self.entities.get(&id) {
                ops.push(Op::Put(Key::Entity(id), records::Value::Entity(entity)));
            }
        }
        for topic in outbox {
            match self.outbox.get(&topic) {
                Some(out) => ops.push(Op::Put(Key::Outbox(topic), records::Value::Outgoing(out))),
                None => ops.push(Op::Del(Key::Outbox(topic))),
            }
        }
        ops
    }

    /// Every live entry, for a full snapshot; also marks everything saved.
    pub fn snapshot_entries(&mut self) -> Vec<(Key, records::Value<'_>)> {
        self.dirty = HashMap::new();
        self.removed.clear();
        self.outbox_dirty.clear();
        self.main_dirty = false;
        let mut out = Vec::with_capacity(self.entities.len() + self.outbox.len() + 1);
        out.push((Key::Main, records::Value::Main(&self.cfg.main)));
        for (id, entity) in &self.entities {
            out.push((Key::Entity(id.clone()), records::Value::Entity(entity)));
        }
        for (topic, outgoing) in &self.outbox {
            out.push((
                Key::Outbox(topic.clone()),
                records::Value::Outgoing(outgoing),
            ));
        }
        out
    }

    // ---- MQTT input ----------------------------------------------------------------------

    /// Applies one MQTT message (§2–§4), as it arrives from the broker; counted in
    /// `counters.received`. Effects accumulate until [`Store::take_effects`].
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: Timestamp) {
        self.apply_message(topic, payload, now, true);
    }

    /// Applies a message held earlier (sync window, pending parent): counted when it arrived.
    pub(super) fn replay_message(&mut self, topic: &str, payload: &[u8], now: Timestamp) {
        self.apply_message(topic, payload, now, false);
    }

    fn apply_message(&mut self, topic: &str, payload: &[u8], now: Timestamp, arrived: bool) {
        let (id, channel) = match parse_topic(&self.cfg.root, topic) {
            Ok(parsed) => parsed,
            Err(
                TopicError::NotEntityTopic | TopicError::UnknownChannel | TopicError::InvalidId(_),
            ) => {
                self.counters.mqtt_ignored_topic += 1;
                tracing::debug!(topic, "ignored topic");
                return;
            }
        };
        if arrived {
            self.counters.received[super::data::channel_index(&channel)] += 1;
        }
        if let Phase::Window(window) = &mut self.phase {
            window.s0.remove(topic);
            if channel == Channel::Registration && id == self.cfg.agent {
                window.agent_seen = true;
            }
        }
        if let Verdict::Ignore = self.check_outbox(topic, payload) {
            return;
        }
        match channel {
            Channel::Registration if payload.is_empty() => self.deregister_mqtt(&id, topic),
            Channel::Registration => self.register_mqtt(&id, topic, payload),
            Channel::HealthCheck => {
                if id == self.cfg.agent || id == self.cfg.main {
                    self.publish_up_health(now);
                }
            }
            Channel::Signal(signal) => {
                if id == self.cfg.agent {
                    if let Some(nonce) = signal.strip_prefix("sync-") {
                        self.on_marker(nonce, now);
                    }
                }
            }
            channel => self.on_data(&id, topic, &channel, payload, now),
        }
    }

    /// Data on an entity channel: applied, held for a pending entity or a sync window, or
    /// auto-registered (§4.4, §4.7, §7.4).
    fn on_data(
        &mut self,
        id: &EntityTopicId,
        topic: &str,
        channel: &Channel,
        payload: &[u8],
        now: Timestamp,
    ) {
        if self.entities.contains_key(id) {
            self.apply_data(id, topic, channel, payload, now);
            return;
        }
        if let Some(entry) = self.pending.entries.get_mut(id) {
            if !matches!(channel, Channel::Measurement(_) | Channel::Event(_)) {
                if let Some(slot) = entry.held.iter_mut().find(|(t, _)| t == topic) {
                    slot.1 = Bytes::copy_from_slice(payload);
                } else if entry.held.len() < 100 {
                    entry
                        .held
                        .push((topic.to_string(), Bytes::copy_from_slice(payload)));
                }
            }
            return;
        }
        if !auto_registers(channel) || payload.is_empty() {
            self.counters.data_dropped_unknown_entity += 1;
            return;
        }
        if !self.cfg.auto_register {
            self.counters.data_dropped_unknown_entity += 1;
            return;
        }
        if !id.is_default_scheme() {
            self.counters.data_dropped_unknown_entity += 1;
            self.reject(
                "auto_registration",
                Some(id),
                topic,
                TwinError::AutoRegistrationScheme(id.clone()).to_string(),
                true,
            );
            return;
        }
        if let Some(device) = id.default_service_device() {
            if self.pending.entries.contains_key(&device) {
                self.counters.data_dropped_unknown_entity += 1;
                return;
            }
        }
        let held = match &mut self.phase {
            Phase::Window(window) => Some(&mut window.held),
            // Messages arrive in this phase only between a CONNACK and its SUBACK.
            Phase::Disconnected => Some(&mut self.held_before_sync),
            Phase::Ready => None,
        };
        if let Some(held) = held {
            if held.len() < self.cfg.max_window_held {
                held.push((topic.to_string(), Bytes::copy_from_slice(payload)));
            } else {
                self.counters.window_held_dropped += 1;
            }
            return;
        }
        if self.auto_register(id, topic) {
            self.apply_data(id, topic, channel, payload, now);
        }
    }

    /// Records a rejected input (§2.6).
    pub(super) fn reject(
        &mut self,
        kind: &'static str,
        id: Option<&EntityTopicId>,
        topic: &str,
        reason: String,
        report: bool,
    ) {
        self.fx.rejections.push(Rejection {
            kind,
            id: id.cloned(),
            topic: topic.to_string(),
            reason,
            report,
            at: self.fx.publications.len(),
        });
    }

    /// The agent's `up` health (§8), retained.
    pub(super) fn publish_up_health(&mut self, now: Timestamp) {
        let payload = json!({
            "pid": self.cfg.pid,
            "status": "up",
            "time": now.unix_seconds_f64(),
        });
        let topic = self.cfg.agent.topic(&self.cfg.root, &Channel::Health);
        self.fx
            .publications
            .push(Publication::retained(topic, payload.to_string()));
    }

    /// The agent's `down` health (§8): the last will and the shutdown message.
    pub fn down_health(&self) -> (String, Vec<u8>) {
        let payload = json!({ "pid": self.cfg.pid, "status": "down" });
        (
            self.cfg.agent.topic(&self.cfg.root, &Channel::Health),
            payload.to_string().into_bytes(),
        )
    }

    /// The agent's own registration payload (§8).
    pub(super) fn agent_registration(&self) -> Value {
        let name = self
            .cfg
            .agent
            .default_service_names()
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| "edge-agent".to_string());
        let parent = &self.cfg.main;
        json!({
            "@parent": parent.as_str(),
            "@type": "service",
            "name": name,
            "type": "service",
        })
    }
}

/// Channels whose data triggers auto-registration (§4.7).
fn auto_registers(channel: &Channel) -> bool {
    matches!(
        channel,
        Channel::Twin(_)
            | Channel::Config
            | Channel::Measurement(_)
            | Channel::MeasurementMeta(_)
            | Channel::Event(_)
            | Channel::EventMeta(_)
            | Channel::Alarm(_)
            | Channel::AlarmMeta(_)
            | Channel::Capability(_)
            | Channel::Health
            | Channel::Status(_)
    )
}
