//! Synchronisation with the broker's retained state (spec/twin.md §7.4–§7.6): the window that
//! opens on every connection, its sync marker, reconciliation or restoration when the marker comes
//! back, republication of pending clean-ups, replay of held data and the agent's announcement.
//! Extends [`Store`]; no I/O and no timers (the owner task re-sends the marker).

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

use super::effects::Publication;
use super::store::{Durability, Phase, Store};
use super::time::Timestamp;
use crate::topic::{parse_topic, Channel, EntityTopicId};

/// The state of an open sync window.
#[derive(Debug)]
pub struct Window {
    pub nonce: String,
    /// S0: topics of retained-kind items not yet seen again in this window.
    pub s0: HashSet<String>,
    /// Whether the agent's own registration came back (else the broker lost its store).
    pub agent_seen: bool,
    /// Data that would auto-register an entity, held until the window closes.
    pub held: Vec<(String, Bytes)>,
}

impl Store {
    /// Steps 2–3 of §7.4, once the subscription is acknowledged: takes S0, empties the pending
    /// set, opens the window with the data held since this connection's CONNACK, and publishes
    /// the marker.
    pub fn begin_sync(&mut self, nonce: String) {
        let root = self.cfg.root.clone();
        let mut s0 = HashSet::new();
        // Topics in the outbox are the agent's own unacknowledged writes, not items the broker
        // may have lost: they are published again when the window closes.
        for (id, entity) in &self.entities {
            if *id != self.cfg.main && *id != self.cfg.agent {
                let topic = id.topic(&root, &Channel::Registration);
                if !self.outbox.contains_key(&topic) {
                    s0.insert(topic);
                }
            }
            for channel in &entity.retained {
                let topic = format!("{root}/{id}/{channel}");
                if !self.outbox.contains_key(&topic) {
                    s0.insert(topic);
                }
            }
        }
        self.pending.clear();
        self.phase = Phase::Window(Box::new(Window {
            nonce,
            s0,
            agent_seen: false,
            held: std::mem::take(&mut self.held_before_sync),
        }));
        self.resend_marker();
    }

    /// Publishes the marker of the open window again (§7.4 step 5: after 30 s without it).
    pub fn resend_marker(&mut self) {
        if let Phase::Window(window) = &self.phase {
            let topic = self.cfg.agent.topic(
                &self.cfg.root,
                &Channel::Signal(format!("sync-{}", window.nonce)),
            );
            self.fx
                .publications
                .push(Publication::transient(topic, "{}"));
        }
    }

    /// The broker connection is gone: the window, if any, is abandoned.
    pub fn disconnected(&mut self) {
        self.phase = Phase::Disconnected;
        self.held_before_sync.clear();
        self.apply_deferred_acks();
        self.outbox_sent.clear();
    }

    /// A marker came back; only this connection's nonce closes the window.
    pub(super) fn on_marker(&mut self, nonce: &str, now: Timestamp) {
        let window = match std::mem::replace(&mut self.phase, Phase::Ready) {
            Phase::Window(window) if window.nonce == nonce => window,
            other => {
                self.phase = other;
                return;
            }
        };
        let Window {
            s0,
            agent_seen,
            held,
            ..
        } = *window;
        if agent_seen {
            self.reconcile(s0);
        } else {
            self.restore(s0);
        }
        self.republish_outbox();
        for (topic, payload) in held {
            if let Ok((id, _)) = parse_topic(&self.cfg.root, &topic) {
                let registration = id.topic(&self.cfg.root, &Channel::Registration);
                if self.is_being_cleared(&registration) {
                    continue;
                }
            }
            self.replay_message(&topic, &payload, now);
        }
        self.apply_deferred_acks();
        self.announce(now);
        self.counters.sync_completed += 1;
    }

    /// §7.5: what is still in S0 was cleared on the broker while the agent was away.
    fn reconcile(&mut self, s0: HashSet<String>) {
        let root = self.cfg.root.clone();
        let mut registrations = Vec::new();
        let mut items = Vec::new();
        for topic in s0 {
            match parse_topic(&root, &topic) {
                Ok((id, Channel::Registration)) => registrations.push(id),
                Ok((id, channel)) => items.push((id, channel, topic)),
                Err(_) => {}
            }
        }
        let mut depth_sorted: Vec<(usize, EntityTopicId)> = registrations
            .into_iter()
            .map(|id| (self.depth(&id), id))
            .collect();
        depth_sorted.sort();
        let mut pruned = 0u64;
        for (_, id) in depth_sorted {
            if self.entities.contains_key(&id) && id != self.cfg.main && id != self.cfg.agent {
                pruned += self.deregister(&id).len() as u64;
            }
        }
        for (id, channel, _) in items {
            self.drop_item(&id, &channel);
        }
        self.counters.sync_pruned_entities += pruned;
        if pruned > 0 {
            tracing::info!(
                pruned,
                "sync removed entities deregistered while the agent was away"
            );
        }
    }

    /// Removes one retained item from the twin without publishing anything (§7.5).
    fn drop_item(&mut self, id: &EntityTopicId, channel: &Channel) {
        let Some(entity) = self.entities.get_mut(id) else {
            return;
        };
        entity.set_retained(&channel.to_string(), false);
        match channel {
            Channel::Twin(key) => {
                entity.twin.remove(key);
            }
            Channel::Config => entity.extra_mut().config = None,
            Channel::Alarm(t) => {
                entity
                    .extra_mut()
                    .alarms
                    .remove(super::payload::alarm_key(t));
            }
            Channel::Capability(op) => {
                entity.extra_mut().capabilities.remove(op);
            }
            Channel::Command { op, id: cmd } => {
                if let Some(ops) = entity.extra_mut().commands.get_mut(op) {
                    ops.remove(cmd);
                    if ops.is_empty() {
                        entity.extra_mut().commands.remove(op);
                    }
                }
            }
            Channel::Health => super::data::set_health(entity, None),
            _ => {}
        }
        self.touch(id, Durability::Retained);
        // Meta topics and other statuses are not in the state document: no change to tell.
        if matches!(
            channel,
            Channel::Twin(_)
                | Channel::Config
                | Channel::Alarm(_)
                | Channel::Capability(_)
                | Channel::Command { .. }
                | Channel::Health
        ) {
            self.item_changed(id, channel);
        }
    }

    /// §7.6: the broker lost its retained store. Nothing is removed; registrations still in S0
    /// are republished in BFS order, then their twin fragments.
    fn restore(&mut self, s0: HashSet<String>) {
        let root = self.cfg.root.clone();
        let mut registrations = 0usize;
        let mut fragments = Vec::new();
        let mut queue = VecDeque::from([self.cfg.main.clone()]);
        // A guard: `relink` keeps the tree acyclic, so no entity should be reached twice.
        let mut seen = HashSet::from([self.cfg.main.clone()]);
        let mut publications = Vec::new();
        while let Some(id) = queue.pop_front() {
            let Some(entity) = self.entities.get(&id) else {
                continue;
            };
            let topic = id.topic(&root, &Channel::Registration);
            if s0.contains(&topic) {
                if let Some(payload) = &entity.last_payload {
                    publications.push(Publication::retained(topic, payload.as_bytes()));
                    registrations += 1;
                }
            }
            for (key, value) in entity.twin.iter() {
                let topic = format!("{root}/{id}/twin/{key}");
                if s0.contains(&topic) {
                    fragments.push(Publication::retained(topic, value.to_string()));
                }
            }
            queue.extend(
                entity
                    .children()
                    .filter(|c| seen.insert((*c).clone()))
                    .cloned(),
            );
        }
        let fragment_count = fragments.len();
        self.fx.publications.extend(publications);
        self.fx.publications.extend(fragments);
        if registrations + fragment_count > 0 {
            tracing::warn!(
                registrations,
                twin_fragments = fragment_count,
                "the broker has lost its retained state: republished the twin's registrations and twin fragments"
            );
        }
    }

    /// §7.4 step 9: the agent's registration, its twin keys if they changed, its `up` health.
    fn announce(&mut self, now: Timestamp) {
        let agent = self.cfg.agent.clone();
        let registration = self.agent_registration();
        let topic = agent.topic(&self.cfg.root, &Channel::Registration);
        if let Some(entity) = self.entities.get_mut(&agent) {
            entity.last_payload = Some(registration.to_string().into());
        }
        self.fx
            .publications
            .push(Publication::retained(topic, registration.to_string()));
        if let serde_json::Value::Object(map) = registration {
            let inline: Vec<(String, serde_json::Value)> = map
                .into_iter()
                .filter(|(k, _)| !k.starts_with('@'))
                .collect();
            self.merge_twin(&agent, inline);
        }
        self.publish_up_health(now);
    }

    /// Distance from the main device (0 for a root).
    fn depth(&self, id: &EntityTopicId) -> usize {
        self.ancestors(id).count()
    }
}
