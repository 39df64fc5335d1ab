//! Entity data (spec/twin.md §3): twin fragments, config, measurements, events, alarms,
//! capabilities, commands and health, from MQTT messages and from the HTTP twin routes (§5.7).
//! Extends [`Store`]; no I/O. Entity structure (registration, removal) is `registry`'s business.

use std::collections::VecDeque;

use serde_json::{Map, Value};

use super::api::Reply;
use super::error::TwinError;
use super::history::Point;
use super::model::{Entity, Health, Name, Record, Series, SeriesNode};
use super::outbox::Stale;
use super::payload::{self, ConfigPayload, MeasurementValue};
use super::registry::to_json;
use super::store::{Durability, Store};
use super::time::Timestamp;
use super::vecmap::VecMap;
use crate::ops::model::{FAILED, SUCCESSFUL};
use crate::ops::store::operation_label;
use crate::topic::{Channel, EntityTopicId};

impl Store {
    /// Applies a data message to a registered entity. Rejections keep the previous state.
    pub(super) fn apply_data(
        &mut self,
        id: &EntityTopicId,
        topic: &str,
        channel: &Channel,
        bytes: &[u8],
        now: Timestamp,
    ) {
        let result = match channel {
            Channel::Twin(key) => self.mqtt_twin(id, key, bytes),
            Channel::Config => self.mqtt_config(id, bytes),
            Channel::Measurement(t) => self.mqtt_measurement(id, t, bytes, now),
            Channel::Event(t) => self.mqtt_event(id, t, bytes, now),
            Channel::Alarm(t) => self.mqtt_alarm(id, t, bytes, now),
            Channel::Capability(op) => self.mqtt_capability(id, op, bytes),
            Channel::Command { op, id: cmd } => self.mqtt_command(id, op, cmd, bytes),
            Channel::Health => {
                self.mqtt_health(id, bytes, now);
                Ok(())
            }
            Channel::MeasurementMeta(_) | Channel::EventMeta(_) | Channel::AlarmMeta(_) => {
                self.mqtt_meta(id, &channel.to_string(), bytes)
            }
            Channel::Status(_)
            | Channel::Registration
            | Channel::HealthCheck
            | Channel::Signal(_) => Ok(()),
        };
        // Only accepted items (and clears) are tracked for the clean-up of §4.8: a rejected one
        // must not grow the entity past the limits of §9.
        if channel.is_retained_kind() && (result.is_ok() || bytes.is_empty()) {
            if let Some(entity) = self.entities.get_mut(id) {
                entity.set_retained(&channel.to_string(), !bytes.is_empty());
            }
        }
        if let Err(error) = result {
            let kind = channel_kind(channel);
            *self.counters.payload_rejected.entry(kind).or_default() += 1;
            self.reject(kind, Some(id), topic, error.to_string(), true);
        }
    }

    fn mqtt_twin(&mut self, id: &EntityTopicId, key: &str, bytes: &[u8]) -> Result<(), TwinError> {
        payload::validate_twin_key(key)?;
        let value = payload::parse_twin_value(bytes).map_err(TwinError::InvalidPayload)?;
        self.set_twin_key(id, key, value, false)?;
        Ok(())
    }

    fn mqtt_config(&mut self, id: &EntityTopicId, bytes: &[u8]) -> Result<(), TwinError> {
        let document = match payload::parse_config(bytes)? {
            ConfigPayload::Clear => None,
            ConfigPayload::Document(map) => Some(map),
            ConfigPayload::Ignored => {
                self.counters.config_ignored += 1;
                tracing::debug!(entity = %id, "ignored a config payload that is not an object");
                return Ok(());
            }
        };
        if let Some(entity) = self.entities.get_mut(id) {
            entity.extra_mut().config = document;
        }
        self.touch(id, Durability::Retained);
        self.item_changed(id, &Channel::Config);
        Ok(())
    }

    fn mqtt_measurement(
        &mut self,
        id: &EntityTopicId,
        topic_type: &str,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), TwinError> {
        let m = payload::parse_measurement(bytes, topic_type).map_err(TwinError::InvalidPayload)?;
        let limit = self.cfg.max_section_items;
        let names = &mut self.names;
        let history = &mut self.history;
        let Some(entity) = self.entities.get_mut(id) else {
            return Ok(());
        };
        // Counted before anything is stored: a message is accepted or rejected as a whole (§3.2).
        let stored = entity.measurements.get(m.mtype.as_str());
        if stored.is_none() && entity.measurements.len() >= limit {
            return Err(section_full("measurement types", id, limit));
        }
        let (added, dropped) = series_delta(stored, &m.values);
        if added > 0 && (stored.map_or(0, series_count).saturating_sub(dropped) + added) > limit {
            return Err(section_full("series", id, limit));
        }
        let time = m.time.unwrap_or(now);
        // Names are interned only when a type, series or member is new: the steady state of a
        // stream of measurements updates points in place.
        if stored.is_none() {
            entity
                .measurements
                .insert(names.intern(&m.mtype), VecMap::new());
        }
        let Some(series) = entity.measurements.get_mut(m.mtype.as_str()) else {
            return Ok(());
        };
        for v in m.values {
            let value = v.value.as_f64().unwrap_or(f64::NAN);
            let as_point = |s: &Series| Point {
                time: s.time,
                value: s.value.as_f64().unwrap_or(f64::NAN),
            };
            let previous = match (series.get(v.name.as_str()), v.member.as_deref()) {
                (Some(SeriesNode::Single(s)), None) => Some(as_point(s)),
                (Some(SeriesNode::Group(group)), Some(member)) => group.get(member).map(as_point),
                _ => None,
            };
            history.record(
                id,
                (&m.mtype, &v.name, v.member.as_deref()),
                Point { time, value },
                previous,
                now,
                |s| names.intern(s),
            );
            let point = Series {
                value: v.value,
                time,
            };
            match v.member {
                None => match series.get_mut(v.name.as_str()) {
                    Some(SeriesNode::Single(current)) => *current = point,
                    _ => {
                        series.insert(names.intern(&v.name), SeriesNode::Single(point));
                    }
                },
                Some(member) => match series.get_mut(v.name.as_str()) {
                    Some(SeriesNode::Group(group)) => match group.get_mut(member.as_str()) {
                        Some(current) => *current = point,
                        None => {
                            group.insert(names.intern(&member), point);
                        }
                    },
                    _ => {
                        let group: VecMap<_, _> =
                            [(names.intern(&member), point)].into_iter().collect();
                        series.insert(names.intern(&v.name), SeriesNode::Group(Box::new(group)));
                    }
                },
            }
        }
        self.touch(id, Durability::Telemetry);
        self.changed(id, &format_args!("m/{}", m.mtype), |e| {
            to_json(&e.measurements.get(m.mtype.as_str()))
        });
        Ok(())
    }

    /// `m|e|a/<t>/meta`: free JSON, not interpreted; only the retained topic is remembered, within
    /// the limit of §9.
    fn mqtt_meta(
        &mut self,
        id: &EntityTopicId,
        channel: &str,
        bytes: &[u8],
    ) -> Result<(), TwinError> {
        let limit = self.cfg.max_section_items;
        let Some(entity) = self.entities.get(id) else {
            return Ok(());
        };
        if !bytes.is_empty()
            && entity
                .retained
                .binary_search_by(|c| c.as_str().cmp(channel))
                .is_err()
            && entity.retained.iter().filter(|c| is_meta(c)).count() >= limit
        {
            return Err(section_full("meta topics", id, limit));
        }
        self.touch(id, Durability::Retained);
        Ok(())
    }

    fn mqtt_event(
        &mut self,
        id: &EntityTopicId,
        topic_type: &str,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), TwinError> {
        let event = payload::parse_event(bytes, topic_type).map_err(TwinError::InvalidPayload)?;
        let (kept, limit) = (self.cfg.events_kept, self.cfg.max_section_items);
        let Some(entity) = self.entities.get_mut(id) else {
            return Ok(());
        };
        if !entity.extra_mut().events.contains_key(&event.etype)
            && entity.extra_mut().events.len() >= limit
        {
            return Err(section_full("event types", id, limit));
        }
        let etype = event.etype;
        let list = entity
            .extra_mut()
            .events
            .get_or_insert_with(etype.clone(), VecDeque::new);
        list.push_front(Record {
            payload: event.payload,
            time: event.time.unwrap_or(now),
            received: now,
        });
        list.truncate(kept);
        self.touch(id, Durability::Telemetry);
        self.changed(id, &format_args!("e/{etype}"), |e| {
            to_json(&e.extra().events.get(etype.as_str()).and_then(|l| l.front()))
        });
        Ok(())
    }

    fn mqtt_alarm(
        &mut self,
        id: &EntityTopicId,
        topic_type: &str,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(), TwinError> {
        let key = payload::alarm_key(topic_type).to_string();
        let limit = self.cfg.max_section_items;
        let record = unless_clear(bytes, payload::parse_alarm)?.map(|(time, payload)| Record {
            payload,
            time: time.unwrap_or(now),
            received: now,
        });
        let Some(entity) = self.entities.get_mut(id) else {
            return Ok(());
        };
        set_limited(&mut entity.extra_mut().alarms, key, record, limit)
            .map_err(|()| section_full("alarms", id, limit))?;
        self.touch(id, Durability::Retained);
        self.item_changed(id, &Channel::Alarm(topic_type.to_string()));
        Ok(())
    }

    fn mqtt_capability(
        &mut self,
        id: &EntityTopicId,
        op: &str,
        bytes: &[u8],
    ) -> Result<(), TwinError> {
        let limit = self.cfg.max_section_items;
        let capability = unless_clear(bytes, payload::parse_capability)?;
        let Some(entity) = self.entities.get_mut(id) else {
            return Ok(());
        };
        let capability = capability.map(Value::Object);
        set_limited(
            &mut entity.extra_mut().capabilities,
            op.to_string(),
            capability,
            limit,
        )
        .map_err(|()| section_full("capabilities", id, limit))?;
        self.touch(id, Durability::Retained);
        self.item_changed(id, &Channel::Capability(op.to_string()));
        Ok(())
    }

    fn mqtt_command(
        &mut self,
        id: &EntityTopicId,
        op: &str,
        cmd: &str,
        bytes: &[u8],
    ) -> Result<(), TwinError> {
        let limit = self.cfg.max_section_items;
        let command = unless_clear(bytes, payload::parse_command)?;
        let Some(entity) = self.entities.get_mut(id) else {
            return Ok(());
        };
        match command {
            None => {
                if let Some(ops) = entity.extra_mut().commands.get_mut(op) {
                    ops.remove(cmd);
                    if ops.is_empty() {
                        entity.extra_mut().commands.remove(op);
                    }
                }
            }
            Some(map) => {
                let previous = entity
                    .extra()
                    .commands
                    .get(op)
                    .and_then(|c| c.get(cmd))
                    .and_then(|p| p.get("status"))
                    .and_then(Value::as_str);
                if let Some(ended) = ended_now(previous, map.get("status")) {
                    *self
                        .counters
                        .commands_ended
                        .entry((operation_label(op), ended))
                        .or_default() += 1;
                }
                let count: usize = entity.extra_mut().commands.values().map(|c| c.len()).sum();
                let known = entity
                    .extra_mut()
                    .commands
                    .get(op)
                    .is_some_and(|ops| ops.contains_key(cmd));
                if !known && count >= limit {
                    return Err(section_full("commands", id, limit));
                }
                entity
                    .extra_mut()
                    .commands
                    .get_or_insert_with(op.to_string(), VecMap::new)
                    .insert(cmd.to_string(), map);
            }
        }
        self.touch(id, Durability::Retained);
        self.item_changed(
            id,
            &Channel::Command {
                op: op.to_string(),
                id: cmd.to_string(),
            },
        );
        Ok(())
    }

    fn mqtt_health(&mut self, id: &EntityTopicId, bytes: &[u8], now: Timestamp) {
        let health = (!bytes.is_empty()).then(|| {
            let (status, raw) = payload::health_status(id, bytes);
            Health {
                status,
                raw,
                received: now,
            }
        });
        if let Some(entity) = self.entities.get_mut(id) {
            set_health(entity, health);
        }
        self.touch(id, Durability::Retained);
        self.item_changed(id, &Channel::Health);
    }

    /// Sets (`Some`) or deletes (`None`) one twin key; true when that changed the twin. With
    /// `publish`, a change is published retained on `twin/<key>` (an empty message for a delete).
    pub(super) fn set_twin_key(
        &mut self,
        id: &EntityTopicId,
        key: &str,
        value: Option<Value>,
        publish: bool,
    ) -> Result<bool, TwinError> {
        self.write_twin_key(id, key, value, publish, self.cfg.max_section_items)
    }

    /// [`Store::set_twin_key`] with the limit on twin keys given by the caller.
    fn write_twin_key(
        &mut self,
        id: &EntityTopicId,
        key: &str,
        value: Option<Value>,
        publish: bool,
        limit: usize,
    ) -> Result<bool, TwinError> {
        let Some(entity) = self.entities.get_mut(id) else {
            return Err(TwinError::UnknownEntity(id.clone()));
        };
        let channel = format!("twin/{key}");
        let (message, previous) = match value {
            None => {
                let Some(previous) = entity.twin.remove(key) else {
                    return Ok(false);
                };
                if publish {
                    entity.set_retained(&channel, false);
                }
                (None, Some(previous))
            }
            Some(v) => {
                if entity.twin.get(key) == Some(&v) {
                    return Ok(false);
                }
                if !entity.twin.contains_key(key) && entity.twin.len() >= limit {
                    return Err(section_full("twin keys", id, limit));
                }
                let text = v.to_string();
                let previous = entity.twin.insert(key.to_string(), v);
                if publish {
                    entity.set_retained(&channel, true);
                }
                (Some(text), previous)
            }
        };
        self.touch(id, Durability::Retained);
        self.changed(id, &channel, |e| to_json(&e.twin.get(key)));
        if publish {
            let topic = format!("{}/{id}/{channel}", self.cfg.root);
            let stale = previous.map_or(Stale::Nothing, |p| Stale::Value(p.to_string()));
            self.publish_tracked(topic, message, stale);
        }
        Ok(true)
    }

    // ---- HTTP twin writes (§5.7) ---------------------------------------------------------

    /// `PUT …/twin`: replaces the whole map; the first invalid key in byte order refuses it.
    pub(super) fn http_twin_replace(
        &mut self,
        id: &EntityTopicId,
        body: Map<String, Value>,
    ) -> Result<Reply, TwinError> {
        let Some(entity) = self.entities.get(id) else {
            return Err(TwinError::UnknownEntity(id.clone()));
        };
        let mut keys: Vec<&String> = body.keys().collect();
        keys.sort();
        for key in keys {
            payload::validate_twin_key(key)?;
        }
        let echo = Value::Object(body.clone()).to_string();
        let mut changes: Vec<(String, Option<Value>)> = entity
            .twin
            .keys()
            .filter(|k| body.get(*k).is_none_or(Value::is_null))
            .map(|k| (k.clone(), None))
            .collect();
        changes.extend(
            body.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, Some(v))),
        );
        // Checked once, for the result: a replacement of a full twin neither fails because of the
        // keys it removes nor stops half-way.
        let limit = self.cfg.max_section_items;
        if changes.iter().filter(|(_, v)| v.is_some()).count() > limit {
            return Err(section_full("twin keys", id, limit));
        }
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in changes {
            // The result fits: a key added before one removed (key order) may not be refused.
            self.write_twin_key(id, &key, value, true, usize::MAX)?;
        }
        Ok(Reply::json(echo))
    }

    /// `DELETE …/twin`: an empty retained message per existing key.
    pub(super) fn http_twin_clear(&mut self, id: &EntityTopicId) -> Result<Reply, TwinError> {
        let Some(entity) = self.entities.get(id) else {
            return Err(TwinError::UnknownEntity(id.clone()));
        };
        let keys: Vec<String> = entity.twin.keys().cloned().collect();
        for key in keys {
            self.set_twin_key(id, &key, None, true)?;
        }
        Ok(Reply::empty())
    }

    /// `PUT …/twin/{key}`: `null` deletes, and the answer still echoes `null`.
    pub(super) fn http_twin_set(
        &mut self,
        id: &EntityTopicId,
        key: &str,
        value: Value,
    ) -> Result<Reply, TwinError> {
        if !self.entities.contains_key(id) {
            return Err(TwinError::UnknownEntity(id.clone()));
        }
        payload::validate_twin_key(key)?;
        let echo = value.to_string();
        self.set_twin_key(id, key, (!value.is_null()).then_some(value), true)?;
        Ok(Reply::json(echo))
    }

    /// `DELETE …/twin/{key}`.
    pub(super) fn http_twin_delete(
        &mut self,
        id: &EntityTopicId,
        key: &str,
    ) -> Result<Reply, TwinError> {
        if !self.entities.contains_key(id) {
            return Err(TwinError::UnknownEntity(id.clone()));
        }
        payload::validate_twin_key(key)?;
        self.set_twin_key(id, key, None, true)?;
        Ok(Reply::empty())
    }
}

/// The series of one measurement type: single series plus group members.
fn series_count(series: &VecMap<Name, SeriesNode>) -> usize {
    series
        .values()
        .map(|node| match node {
            SeriesNode::Single(_) => 1,
            SeriesNode::Group(group) => group.len(),
        })
        .sum()
}

/// How a message changes the series count of its type: the series it adds (a new name or group
/// member; the first member of a group that replaces a single series takes its place), and those
/// it drops by turning a group back into a single series.
fn series_delta(
    stored: Option<&VecMap<Name, SeriesNode>>,
    values: &[MeasurementValue],
) -> (usize, usize) {
    let (mut added, mut dropped) = (0, 0);
    let mut previous: Option<&str> = None;
    for v in values {
        let first_of_name = previous != Some(v.name.as_str());
        previous = Some(v.name.as_str());
        match (stored.and_then(|s| s.get(v.name.as_str())), &v.member) {
            (Some(SeriesNode::Group(group)), Some(member)) => {
                added += usize::from(!group.contains_key(member.as_str()));
            }
            (Some(SeriesNode::Group(group)), None) => dropped += group.len().saturating_sub(1),
            (Some(SeriesNode::Single(_)), None) => {}
            (Some(SeriesNode::Single(_)), Some(_)) if first_of_name => {}
            _ => added += 1,
        }
    }
    (added, dropped)
}

/// Replaces an entity's health record (`None` removes it) and, for a mosquitto bridge service,
/// follows the changes of its derived status ([`super::model::BridgeHealth`], issue #4).
///
/// A status equal to the recorded one (the retained `1` delivered again after a reconnect) is
/// not a change. The first status after a removal, or after a start without a record, is one;
/// so is the first after loading a record written before `since` existed. `flaps` counts direct
/// `up` → `down` changes only: after a removal, or through another status, the previous state
/// is not known to have been `up`.
pub(super) fn set_health(entity: &mut Entity, health: Option<Health>) {
    let is_bridge = payload::is_mosquitto_bridge(&entity.id);
    let extra = entity.extra_mut();
    if is_bridge {
        match &health {
            None => {
                if let Some(bridge) = &mut extra.bridge {
                    bridge.since = None;
                }
            }
            Some(new) => {
                let previous = extra.health.as_ref().map(|h| h.status.as_str());
                let bridge = extra.bridge.get_or_insert_with(Box::default);
                if bridge.since.is_none() || previous != Some(new.status.as_str()) {
                    bridge.since = Some(new.received);
                    if new.status == "down" {
                        bridge.last_down = Some(new.received);
                        if previous == Some("up") {
                            bridge.flaps += 1;
                        }
                    }
                }
            }
        }
    }
    extra.health = health;
}

/// True for the channel of a retained meta topic: `m/<t>/meta`, `e/<t>/meta` or `a/<t>/meta`.
fn is_meta(channel: &str) -> bool {
    let mut levels = channel.split('/');
    matches!(
        (levels.next(), levels.next(), levels.next(), levels.next()),
        (Some("m" | "e" | "a"), Some(_), Some("meta"), None)
    )
}

/// Parses a retained item's payload; an empty payload is a clear (`None`, §3.3).
fn unless_clear<T>(
    bytes: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<Option<T>, TwinError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    parse(bytes).map(Some).map_err(TwinError::InvalidPayload)
}

/// Sets (`Some`) or clears (`None`) one item of a section holding at most `limit` items (§9):
/// a new item beyond the limit is refused, existing ones still update.
fn set_limited<V>(
    section: &mut VecMap<String, V>,
    key: String,
    value: Option<V>,
    limit: usize,
) -> Result<(), ()> {
    match value {
        None => {
            section.remove(key.as_str());
        }
        Some(value) => {
            if !section.contains_key(key.as_str()) && section.len() >= limit {
                return Err(());
            }
            section.insert(key, value);
        }
    }
    Ok(())
}

fn section_full(section: &'static str, id: &EntityTopicId, limit: usize) -> TwinError {
    TwinError::SectionFull {
        section,
        id: id.clone(),
        limit,
    }
}

/// The kinds of channel, in [`channel_index`] order: the `channel` labels of the counters.
pub const CHANNEL_KINDS: [&str; 10] = [
    "registration",
    "twin",
    "config",
    "measurement",
    "event",
    "alarm",
    "capability",
    "command",
    "health",
    "signal",
];

/// The position of a channel's kind in [`CHANNEL_KINDS`].
pub(super) fn channel_index(channel: &Channel) -> usize {
    match channel {
        Channel::Registration => 0,
        Channel::Twin(_) => 1,
        Channel::Config => 2,
        Channel::Measurement(_) | Channel::MeasurementMeta(_) => 3,
        Channel::Event(_) | Channel::EventMeta(_) => 4,
        Channel::Alarm(_) | Channel::AlarmMeta(_) => 5,
        Channel::Capability(_) => 6,
        Channel::Command { .. } | Channel::HealthCheck => 7,
        Channel::Health | Channel::Status(_) => 8,
        Channel::Signal(_) => 9,
    }
}

/// The `payload_rejected{channel}` label of a channel.
pub(super) fn channel_kind(channel: &Channel) -> &'static str {
    CHANNEL_KINDS[channel_index(channel)]
}

/// The final status a command reached with this message, when it was running before: a command
/// first seen already final (a retained one after a restart) ended earlier, and is not counted
/// again.
fn ended_now(previous: Option<&str>, status: Option<&Value>) -> Option<&'static str> {
    let is_final = |s: &str| s == SUCCESSFUL || s == FAILED;
    match (previous, status.and_then(Value::as_str)) {
        (Some(before), Some(SUCCESSFUL)) if !is_final(before) => Some(SUCCESSFUL),
        (Some(before), Some(FAILED)) if !is_final(before) => Some(FAILED),
        _ => None,
    }
}
