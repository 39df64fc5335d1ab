//! Entity registration rules (spec/twin.md §4): registration and its checks, pending parents and
//! their cascade, auto-registration, deregistration with clean-up, and the HTTP writes that change
//! the entity tree (§5.5, §5.6). Extends [`Store`]; no I/O.

use std::collections::{HashSet, VecDeque};

use serde_json::{Map, Value};

use super::api::{NewEntity, Reply};
use super::effects::Publication;
use super::error::TwinError;
use super::model::{Entity, EntityType, Registration};
use super::outbox::Stale;
use super::payload;
use super::store::{Durability, PendingEntry, Phase, Store};
use super::time::Timestamp;
use crate::topic::{Channel, EntityTopicId};

/// Where a registration comes from: only MQTT registrations may wait for their parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Mqtt,
    Http,
    Auto,
}

/// The outcome of the §4.3 checks.
enum Admission {
    Apply { parent: Option<EntityTopicId> },
    Pend { parent: EntityTopicId },
}

impl Store {
    // ---- MQTT registrations ----------------------------------------------------------------

    pub(super) fn register_mqtt(&mut self, id: &EntityTopicId, topic: &str, bytes: &[u8]) {
        let value = match payload::registration_json(bytes) {
            Ok(v) => v,
            Err(reason) => return self.reject_registration(id, topic, reason),
        };
        let canonical = value.to_string();
        if *id == self.cfg.agent {
            if value != self.agent_registration() {
                self.reject_registration(id, topic, TwinError::Managed(id.clone()).to_string());
            }
            return;
        }
        if let Some(entity) = self.entities.get(id) {
            if entity.last_payload.as_deref() == Some(canonical.as_str()) {
                // The newest registration wins (§4.4): an update held for its parent is void.
                self.pending.remove(id);
                return;
            }
        }
        let registration = match payload::parse_registration_value(value.clone()) {
            Ok(r) => r,
            Err(e) => return self.reject_registration(id, topic, e.to_string()),
        };
        self.warn_ignored_keys(id, &registration);
        match self.admit(id, &registration, Origin::Mqtt) {
            Ok(Admission::Apply { parent }) => {
                let held = self.pending.remove(id).map(|p| p.held).unwrap_or_default();
                self.apply_registration(id, registration, canonical, parent, false);
                self.replay(held);
                self.release_pending(id);
            }
            Ok(Admission::Pend { parent }) => self.hold_pending(id, parent, value),
            Err(e) => self.reject_registration(id, topic, e.to_string()),
        }
    }

    /// A rejected registration (§4.2): reported, and for an existing entity the last accepted
    /// payload is republished so that the broker agrees with the twin.
    fn reject_registration(&mut self, id: &EntityTopicId, topic: &str, reason: String) {
        *self
            .counters
            .registration_rejected
            .entry("invalid")
            .or_default() += 1;
        self.reject("registration", Some(id), topic, reason, true);
        self.republish_registration(id);
    }

    fn republish_registration(&mut self, id: &EntityTopicId) {
        let stored = || {
            self.entities
                .get(id)
                .and_then(|e| e.last_payload.as_deref().map(str::to_string))
        };
        let payload = if *id == self.cfg.agent {
            Some(self.agent_registration().to_string())
        } else if *id == self.cfg.main {
            Some(stored().unwrap_or_else(|| r#"{"@type":"device"}"#.to_string()))
        } else {
            stored()
        };
        if let Some(payload) = payload {
            let topic = id.topic(&self.cfg.root, &Channel::Registration);
            self.fx
                .publications
                .push(Publication::retained(topic, payload));
        }
    }

    fn warn_ignored_keys(&self, id: &EntityTopicId, registration: &Registration) {
        if !registration.ignored.is_empty() {
            tracing::warn!(
                entity = %id,
                keys = ?registration.ignored,
                "ignored unknown @ keys in a registration"
            );
        }
    }

    fn hold_pending(&mut self, id: &EntityTopicId, parent: EntityTopicId, payload: Value) {
        let held = self.pending.remove(id).map(|p| p.held).unwrap_or_default();
        while self.pending.entries.len() >= self.cfg.max_pending {
            let Some((_, oldest)) = self.pending.by_age.pop_first() else {
                break;
            };
            self.pending.remove(&oldest);
            self.counters.pending_dropped += 1;
        }
        let seq = self.pending.next_seq;
        self.pending.next_seq += 1;
        self.pending
            .by_parent
            .entry(parent.clone())
            .or_default()
            .insert(id.clone());
        self.pending.by_age.insert(seq, id.clone());
        self.pending.entries.insert(
            id.clone(),
            PendingEntry {
                parent,
                payload,
                seq,
                held,
            },
        );
    }

    /// Releases the pending children of a newly registered entity, depth-first, siblings in
    /// lexicographic order (§4.4). An explicit work stack keeps deep chains off the call stack.
    pub(super) fn release_pending(&mut self, id: &EntityTopicId) {
        let mut stack: Vec<EntityTopicId> = Vec::new();
        push_children_reversed(&mut stack, self.pending.by_parent.remove(id));
        while let Some(child) = stack.pop() {
            let Some(entry) = self.pending.remove(&child) else {
                continue;
            };
            let topic = child.topic(&self.cfg.root, &Channel::Registration);
            let canonical = entry.payload.to_string();
            let registration = match payload::parse_registration_value(entry.payload.clone()) {
                Ok(r) => r,
                Err(e) => {
                    self.reject_registration(&child, &topic, e.to_string());
                    continue;
                }
            };
            match self.admit(&child, &registration, Origin::Mqtt) {
                Ok(Admission::Apply { parent }) => {
                    self.apply_registration(&child, registration, canonical, parent, false);
                    self.replay(entry.held);
                    push_children_reversed(&mut stack, self.pending.by_parent.remove(&child));
                }
                Ok(Admission::Pend { parent }) => {
                    self.hold_pending(&child, parent, entry.payload);
                }
                Err(e) => self.reject_registration(&child, &topic, e.to_string()),
            }
        }
    }

    /// Applies held messages of a released entity in their arrival order.
    fn replay(&mut self, held: Vec<(String, bytes::Bytes)>) {
        let now = Timestamp::now();
        for (topic, payload) in held {
            self.replay_message(&topic, &payload, now);
        }
    }

    /// The checks of §4.3 and §4.5, in the spec's order.
    fn admit(
        &self,
        id: &EntityTopicId,
        reg: &Registration,
        origin: Origin,
    ) -> Result<Admission, TwinError> {
        let existing = self.entities.get(id);
        if let Some(entity) = existing {
            if entity.etype != reg.etype {
                return Err(TwinError::TypeUpdate(id.clone()));
            }
            if let (Some(old), Some(new)) = (&entity.external_id, &reg.external_id) {
                if old != new {
                    return Err(TwinError::ExternalIdUpdate(id.clone()));
                }
            }
        }
        if *id == self.cfg.main {
            if reg.etype != EntityType::Device {
                return Err(TwinError::TypeUpdate(id.clone()));
            }
            if reg.parent.is_some() {
                return Err(TwinError::MainParent);
            }
            return Ok(Admission::Apply { parent: None });
        }
        let parent = self.resolve_parent(id, reg);
        if parent == *id {
            return Err(TwinError::OwnParent(id.clone()));
        }
        if reg.etype == EntityType::Device {
            return Err(TwinError::MainAlreadyRegistered(self.cfg.main.clone()));
        }
        let Some(parent_entity) = self.entities.get(&parent) else {
            return match origin {
                Origin::Mqtt => Ok(Admission::Pend { parent }),
                Origin::Http | Origin::Auto => Err(TwinError::ParentNotFound(parent)),
            };
        };
        if parent_entity.etype == EntityType::Service {
            return Err(TwinError::ServiceParent {
                parent,
                id: id.clone(),
            });
        }
        if let Some(entity) = existing {
            if entity.parent.as_ref() != Some(&parent) && self.is_descendant(&parent, id) {
                return Err(TwinError::DescendantParent {
                    parent,
                    id: id.clone(),
                });
            }
        } else if self.entities.len() >= self.cfg.max_entities {
            return Err(TwinError::StoreFull(self.cfg.max_entities));
        }
        Ok(Admission::Apply {
            parent: Some(parent),
        })
    }

    /// Parent resolution of §4.3: an explicit `@parent` wins; otherwise a service's device from
    /// its default-scheme topic, else the main device.
    fn resolve_parent(&self, id: &EntityTopicId, reg: &Registration) -> EntityTopicId {
        if let Some(parent) = &reg.parent {
            return parent.clone();
        }
        match reg.etype {
            EntityType::Service => id
                .default_service_device()
                .unwrap_or_else(|| self.cfg.main.clone()),
            _ => self.cfg.main.clone(),
        }
    }

    /// True when `candidate` lies in the subtree below `ancestor`.
    pub(super) fn is_descendant(
        &self,
        candidate: &EntityTopicId,
        ancestor: &EntityTopicId,
    ) -> bool {
        self.ancestors(candidate).any(|a| a == ancestor)
    }

    /// Creates or updates the entity after its checks passed (§4.5), merges its inline twin data
    /// and optionally publishes the registration itself.
    fn apply_registration(
        &mut self,
        id: &EntityTopicId,
        reg: Registration,
        canonical: String,
        parent: Option<EntityTopicId>,
        publish: bool,
    ) {
        let parent = parent.map(|p| self.canonical(&p));
        let old_parent = self.entities.get(id).map(|e| e.parent.clone());
        match old_parent {
            None => {
                let mut entity = Entity::new(id.clone(), reg.etype, parent.clone());
                entity.external_id = reg.external_id.clone();
                entity.health_endpoint = reg.health.clone();
                self.entities.insert(id.clone(), Box::new(entity));
                self.removed.remove(id);
                self.link(id, parent.as_ref());
            }
            Some(old) => {
                if old != parent {
                    self.unlink(id, old.as_ref());
                    self.link(id, parent.as_ref());
                }
                if let Some(entity) = self.entities.get_mut(id) {
                    entity.parent = parent;
                    if reg.external_id.is_some() {
                        entity.external_id = reg.external_id.clone();
                    }
                    entity.health_endpoint = reg.health.clone();
                }
            }
        }
        let shared = self.names.intern(&canonical);
        let previous = self
            .entities
            .get_mut(id)
            .and_then(|entity| entity.last_payload.replace(shared));
        self.touch(id, Durability::Now);
        self.registration_changed(id);
        if publish {
            let topic = id.topic(&self.cfg.root, &Channel::Registration);
            let stale = previous.map_or(Stale::Nothing, |p| Stale::Value(p.to_string()));
            self.publish_tracked(topic, Some(canonical), stale);
        }
        self.merge_twin(id, reg.inline);
    }

    fn link(&mut self, id: &EntityTopicId, parent: Option<&EntityTopicId>) {
        if let Some(p) = parent.and_then(|p| self.entities.get_mut(p)) {
            p.add_child(id.clone());
        }
    }

    fn unlink(&mut self, id: &EntityTopicId, parent: Option<&EntityTopicId>) {
        if let Some(p) = parent.and_then(|p| self.entities.get_mut(p)) {
            p.remove_child(id);
        }
    }

    /// Merges twin data (inline registration fields, §4.1): changed keys are republished
    /// retained in key order, deleted keys get an empty retained message.
    pub(super) fn merge_twin(
        &mut self,
        id: &EntityTopicId,
        data: impl IntoIterator<Item = (String, Value)>,
    ) {
        for (key, value) in data {
            if let Err(error) =
                self.set_twin_key(id, &key, (!value.is_null()).then_some(value), true)
            {
                let topic = format!("{}/{id}/twin/{key}", self.cfg.root);
                self.reject("twin", Some(id), &topic, error.to_string(), true);
            }
        }
    }

    /// A local change to a retained item: it no longer counts as missing from the broker (§7.4).
    pub(super) fn local_change(&mut self, topic: &str) {
        if let Phase::Window(window) = &mut self.phase {
            window.s0.remove(topic);
        }
    }

    // ---- auto-registration ---------------------------------------------------------------

    /// Auto-registers a default-scheme entity (and its device), publishing the registrations
    /// (§4.7). False when the registration was refused (store full).
    pub(super) fn auto_register(&mut self, id: &EntityTopicId, topic: &str) -> bool {
        let (payload, device) = if let Some((d, s)) = id.default_service_names() {
            let device = id.default_service_device();
            (
                serde_json::json!({
                    "@parent": format!("device/{d}//"),
                    "@type": "service",
                    "name": s,
                }),
                device,
            )
        } else if let Some(d) = id.default_device_name() {
            (
                serde_json::json!({
                    "@parent": self.cfg.main.as_str(),
                    "@type": "child-device",
                    "name": d,
                }),
                None,
            )
        } else {
            return false;
        };
        if let Some(device) = device {
            if !self.entities.contains_key(&device) && !self.auto_register(&device, topic) {
                return false;
            }
        }
        self.register_local(id, payload, Origin::Auto)
            .map_err(|e| {
                self.reject("auto_registration", Some(id), topic, e.to_string(), true);
            })
            .is_ok()
    }

    /// Registers an entity on the agent's own initiative (auto-registration, POST): checks,
    /// applies, publishes the registration with its resolved parent, then its twin keys, and
    /// releases pending children.
    fn register_local(
        &mut self,
        id: &EntityTopicId,
        payload: Value,
        origin: Origin,
    ) -> Result<(), TwinError> {
        let registration = payload::parse_registration_value(payload)
            .map_err(|e| TwinError::InvalidPayload(e.to_string()))?;
        self.register_parsed(id, registration, origin)
    }

    fn register_parsed(
        &mut self,
        id: &EntityTopicId,
        registration: Registration,
        origin: Origin,
    ) -> Result<(), TwinError> {
        let Admission::Apply { parent } = self.admit(id, &registration, origin)? else {
            return Err(TwinError::ParentNotFound(
                registration
                    .parent
                    .clone()
                    .unwrap_or_else(|| self.cfg.main.clone()),
            ));
        };
        let canonical = registration_payload(&registration, parent.as_ref()).to_string();
        let held = self.pending.remove(id).map(|p| p.held).unwrap_or_default();
        self.apply_registration(id, registration, canonical, parent, true);
        self.replay(held);
        self.release_pending(id);
        Ok(())
    }

    // ---- HTTP writes on the entity tree --------------------------------------------------

    /// `POST /te/v1/entities` (§5.5).
    pub(super) fn http_create(&mut self, new: NewEntity) -> Result<Reply, TwinError> {
        let NewEntity { id, registration } = new;
        if self.entities.contains_key(&id) {
            return Err(TwinError::AlreadyRegistered(id));
        }
        self.warn_ignored_keys(&id, &registration);
        self.register_parsed(&id, registration, Origin::Http)?;
        Ok(Reply::json(
            serde_json::json!({ "@topic-id": id.as_str() }).to_string(),
        ))
    }

    /// `PATCH …/{id}` (§5.6): all checks first, then the change and its republication.
    pub(super) fn http_patch(
        &mut self,
        id: &EntityTopicId,
        parent: Option<EntityTopicId>,
        health: Option<EntityTopicId>,
    ) -> Result<Reply, TwinError> {
        if *id == self.cfg.agent {
            return Err(TwinError::Managed(id.clone()));
        }
        let Some(entity) = self.entities.get(id) else {
            return Err(TwinError::UnknownEntity(id.clone()));
        };
        let old_parent = entity.parent.clone();
        let old_health = entity.health_endpoint.clone();
        if let Some(p) = &parent {
            if p == id {
                return Err(TwinError::OwnParent(id.clone()));
            }
            if *id == self.cfg.main {
                return Err(TwinError::MainParent);
            }
            let Some(parent_entity) = self.entities.get(p) else {
                return Err(TwinError::ParentNotFound(p.clone()));
            };
            if parent_entity.etype == EntityType::Service {
                return Err(TwinError::ServiceParent {
                    parent: p.clone(),
                    id: id.clone(),
                });
            }
            if self.is_descendant(p, id) {
                return Err(TwinError::DescendantParent {
                    parent: p.clone(),
                    id: id.clone(),
                });
            }
        }
        if let Some(h) = &health {
            let Some(endpoint) = self.entities.get(h) else {
                return Err(TwinError::HealthNotFound(h.clone()));
            };
            if endpoint.etype != EntityType::Service {
                return Err(TwinError::HealthNotService {
                    health: h.clone(),
                    id: id.clone(),
                });
            }
        }
        let new_parent = parent.or(old_parent.clone());
        let new_health = health.or(old_health.clone());
        if new_parent != old_parent || new_health != old_health {
            if new_parent != old_parent {
                self.unlink(id, old_parent.as_ref());
                self.link(id, new_parent.as_ref());
            }
            let topic = id.topic(&self.cfg.root, &Channel::Registration);
            let mut payload = String::new();
            let mut previous = None;
            if let Some(entity) = self.entities.get_mut(id) {
                entity.parent = new_parent;
                entity.health_endpoint = new_health;
                payload = metadata_registration(entity).to_string();
                previous = entity.last_payload.replace(payload.as_str().into());
            }
            self.touch(id, Durability::Now);
            self.registration_changed(id);
            let stale = previous.map_or(Stale::Nothing, |p| Stale::Value(p.to_string()));
            self.publish_tracked(topic, Some(payload), stale);
        }
        let entity = self
            .entities
            .get(id)
            .ok_or_else(|| TwinError::UnknownEntity(id.clone()))?;
        Ok(Reply::json(to_json(&entity.metadata())))
    }

    /// `DELETE …/{id}` (§5.6, §4.8).
    pub(super) fn http_delete(&mut self, id: &EntityTopicId) -> Result<Reply, TwinError> {
        if *id == self.cfg.main {
            return Err(TwinError::MainNotDeregistrable);
        }
        if *id == self.cfg.agent {
            return Err(TwinError::Managed(id.clone()));
        }
        if !self.entities.contains_key(id) {
            self.pending.remove(id);
            return Ok(Reply::empty());
        }
        let removed = self.deregister(id);
        // Serialized directly, not through `Value`, which would sort the keys (§5.3 order).
        let body: Vec<_> = removed.iter().map(|e| e.metadata()).collect();
        Ok(Reply::json(to_json(&body)))
    }

    // ---- deregistration ------------------------------------------------------------------

    /// An empty payload on a registration topic (§4.6, §4.8).
    pub(super) fn deregister_mqtt(&mut self, id: &EntityTopicId, topic: &str) {
        if *id == self.cfg.main {
            self.reject(
                "registration",
                Some(id),
                topic,
                TwinError::MainNotDeregistrable.to_string(),
                true,
            );
            self.republish_registration(id);
            return;
        }
        if *id == self.cfg.agent {
            self.reject(
                "registration",
                Some(id),
                topic,
                TwinError::Managed(id.clone()).to_string(),
                true,
            );
            self.republish_registration(id);
            return;
        }
        // A registered entity may also have an update pending (§4.5): both go.
        self.pending.remove(id);
        if self.entities.contains_key(id) {
            self.deregister(id);
        }
    }

    /// Removes an entity and its subtree (§4.8): persists the removal with its clean-up records,
    /// then publishes the data and registration clean-ups bottom-up. Returns the removed
    /// entities in BFS order from the target.
    pub(super) fn deregister(&mut self, id: &EntityTopicId) -> Vec<Entity> {
        let mut bfs: Vec<(EntityTopicId, usize)> = vec![(id.clone(), 0)];
        let mut queue = VecDeque::from([(id.clone(), 0usize)]);
        // A guard: `relink` keeps the tree acyclic, so no entity should be reached twice.
        let mut seen = HashSet::from([id.clone()]);
        while let Some((current, depth)) = queue.pop_front() {
            if let Some(entity) = self.entities.get(&current) {
                for child in entity.children() {
                    if !seen.insert(child.clone()) {
                        continue;
                    }
                    bfs.push((child.clone(), depth + 1));
                    queue.push_back((child.clone(), depth + 1));
                }
            }
        }
        let mut bottom_up = bfs.clone();
        bottom_up.sort_by(|(a, da), (b, db)| db.cmp(da).then_with(|| a.cmp(b)));

        let root = self.cfg.root.clone();
        let mut data_clears = Vec::new();
        let mut registration_clears = Vec::new();
        for (entity_id, _) in &bottom_up {
            let Some(entity) = self.entities.get(entity_id) else {
                continue;
            };
            let mut channels: Vec<&String> = entity.retained.iter().collect();
            channels.sort_by_key(|c| (cleanup_group(c), c.as_str()));
            for channel in channels {
                data_clears.push(format!("{root}/{entity_id}/{channel}"));
            }
            registration_clears.push((
                entity_id.topic(&root, &Channel::Registration),
                entity.last_payload.as_deref().map(str::to_string),
            ));
        }
        let parent = self.entities.get(id).and_then(|e| e.parent.clone());
        self.unlink(id, parent.as_ref());
        let mut removed = Vec::with_capacity(bfs.len());
        for (entity_id, _) in &bfs {
            if let Some(entity) = self.entities.remove(entity_id) {
                removed.push(*entity);
            }
            // A pending update must not bring a removed entity back (§4.8 (g)).
            self.pending.remove(entity_id);
            self.dirty.remove(entity_id);
            self.removed.insert(entity_id.clone());
            self.history.remove(entity_id);
            self.entity_removed(entity_id);
        }
        self.fx.durable = true;
        // The broker's retained data of a removed entity may be anything; its registration is
        // the last accepted payload (§7.6: a different one is a new registration).
        for topic in data_clears {
            self.publish_tracked(topic, None, Stale::Any);
        }
        for (topic, payload) in registration_clears {
            let stale = payload.map_or(Stale::Nothing, Stale::Value);
            self.publish_tracked(topic, None, stale);
        }
        removed
    }
}

fn push_children_reversed(
    stack: &mut Vec<EntityTopicId>,
    children: Option<std::collections::BTreeSet<EntityTopicId>>,
) {
    if let Some(children) = children {
        stack.extend(children.into_iter().rev());
    }
}

/// Channel groups of the data clean-up order (§4.8 step 3).
fn cleanup_group(channel: &str) -> u8 {
    let levels: Vec<&str> = channel.split('/').collect();
    match levels.as_slice() {
        ["twin", ..] => 0,
        ["config"] => 1,
        ["m", _, "meta"] => 2,
        ["e", _, "meta"] => 3,
        ["a", _, "meta"] => 4,
        ["a", _] => 5,
        ["cmd", _] => 6,
        ["cmd", _, _] => 7,
        ["status", ..] => 8,
        _ => 9,
    }
}

/// The registration a POST or auto-registration publishes: `@` fields with the resolved parent
/// explicit, plus the inline data, keys sorted (serde_json's map is ordered by key).
fn registration_payload(reg: &Registration, parent: Option<&EntityTopicId>) -> Value {
    let mut map = Map::new();
    map.insert("@type".into(), Value::from(reg.etype.as_str()));
    if let Some(p) = parent {
        map.insert("@parent".into(), Value::from(p.as_str()));
    }
    if let Some(x) = &reg.external_id {
        map.insert("@id".into(), Value::from(x.as_str()));
    }
    if let Some(h) = &reg.health {
        map.insert("@health".into(), Value::from(h.as_str()));
    }
    for (k, v) in &reg.inline {
        map.insert(k.clone(), v.clone());
    }
    Value::Object(map)
}

/// The registration a PATCH publishes: metadata only (§5.6).
fn metadata_registration(entity: &Entity) -> Value {
    let mut map = Map::new();
    map.insert("@type".into(), Value::from(entity.etype.as_str()));
    if let Some(p) = &entity.parent {
        map.insert("@parent".into(), Value::from(p.as_str()));
    }
    if let Some(x) = &entity.external_id {
        map.insert("@id".into(), Value::from(x.as_str()));
    }
    if let Some(h) = &entity.health_endpoint {
        map.insert("@health".into(), Value::from(h.as_str()));
    }
    Value::Object(map)
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}
