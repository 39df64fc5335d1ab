//! The outbox (spec/twin.md §4.8, §7.6, generalised): retained messages the agent published on
//! its own initiative (clean-ups, twin fragments, registrations it wrote) that the broker has not
//! acknowledged yet. An entry is on disk before its message goes out, and is forgotten once the
//! broker acknowledged that message; after a crash or a reconnection, what is left is published
//! again at the end of the sync (§7.4 step 7). Each entry remembers what the broker may still
//! hold instead: during the window that stale copy is ignored, while a different value, written
//! by someone else, cancels the entry (§7.6). Without it, a crash between the group commit and
//! the publications would lose a registration's inline twin data or a deregistration's clears.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::effects::Publication;
use super::store::{Phase, Store};

/// What the broker may hold on an outbox topic instead of the agent's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stale {
    /// Nothing retained: any message there is someone else's.
    Nothing,
    /// This payload (compared as JSON).
    Value(String),
    /// Any payload: the data topics of a removed entity.
    Any,
}

/// One unacknowledged message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The retained payload the agent published; `None` for an empty (clearing) message.
    pub message: Option<String>,
    pub stale: Stale,
    /// Which publication this is: only its own acknowledgement forgets the entry, and entries
    /// are published again in this order (a registration's clear after its data's, §4.8).
    #[serde(default)]
    pub generation: u64,
}

/// What to do with a message received on an outbox topic.
pub(super) enum Verdict {
    Apply,
    /// The broker's stale copy, received during the window: the agent's message will follow.
    Ignore,
}

pub type Outbox = BTreeMap<String, Outgoing>;

impl Store {
    /// Publishes `message` retained on `topic` through the outbox. `stale` is what the broker held
    /// before; when an older entry is still outstanding, its stale value is kept, since the
    /// broker may not have seen anything newer.
    pub(super) fn publish_tracked(&mut self, topic: String, message: Option<String>, stale: Stale) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let stale = match self.outbox.remove(&topic) {
            Some(previous) => previous.stale,
            None => stale,
        };
        self.outbox.insert(
            topic.clone(),
            Outgoing {
                message: message.clone(),
                stale,
                generation,
            },
        );
        self.outbox_dirty.insert(topic.clone());
        self.outbox_sent.insert(topic.clone());
        self.fx.durable = true;
        self.local_change(&topic);
        self.fx.publications.push(Publication::tracked(
            topic,
            message.map(String::into_bytes).unwrap_or_default(),
            generation,
        ));
    }

    /// Checks a received message against the outbox (§7.6).
    pub(super) fn check_outbox(&mut self, topic: &str, payload: &[u8]) -> Verdict {
        let Some(out) = self.outbox.get(topic) else {
            return Verdict::Apply;
        };
        if same(payload, out.message.as_deref()) {
            return Verdict::Apply;
        }
        // Before the sync completes (the window, and between CONNACK and SUBACK, where a
        // persistent session may already deliver) the broker can still send its stale copy.
        let in_window = !matches!(self.phase, Phase::Ready);
        let stale = match &out.stale {
            Stale::Any => !payload.is_empty(),
            Stale::Value(v) => same(payload, Some(v)),
            Stale::Nothing => false,
        };
        if in_window && stale {
            return Verdict::Ignore;
        }
        // Someone else wrote after the agent: theirs is the newer value.
        self.outbox.remove(topic);
        self.outbox_dirty.insert(topic.to_string());
        self.outbox_sent.remove(topic);
        Verdict::Apply
    }

    /// The broker acknowledged an outbox message. Applied once the sync of this connection has
    /// completed, so that held stale copies are still recognised until then (§7.4 step 8).
    pub fn outbox_acknowledged(&mut self, topic: &str, generation: u64) {
        if !matches!(self.phase, Phase::Ready) {
            self.outbox_acked.push((topic.to_string(), generation));
            return;
        }
        self.forget_outgoing(topic, generation);
    }

    pub(super) fn forget_outgoing(&mut self, topic: &str, generation: u64) {
        if self
            .outbox
            .get(topic)
            .is_some_and(|o| o.generation == generation)
        {
            self.outbox.remove(topic);
            self.outbox_dirty.insert(topic.to_string());
            self.outbox_sent.remove(topic);
        }
    }

    /// Applies the acknowledgements that arrived before the sync completed.
    pub(super) fn apply_deferred_acks(&mut self) {
        for (topic, generation) in std::mem::take(&mut self.outbox_acked) {
            self.forget_outgoing(&topic, generation);
        }
    }

    /// §7.4 step 7: publishes again, in their original order, what was not yet published on
    /// this connection.
    pub(super) fn republish_outbox(&mut self) {
        let mut due: Vec<(&String, &Outgoing)> = self
            .outbox
            .iter()
            .filter(|(topic, _)| !self.outbox_sent.contains(*topic))
            .collect();
        due.sort_by_key(|(_, out)| out.generation);
        let publications: Vec<Publication> = due
            .into_iter()
            .map(|(topic, out)| {
                let payload = out.message.clone().map(String::into_bytes);
                Publication::tracked(topic.clone(), payload.unwrap_or_default(), out.generation)
            })
            .collect();
        for publication in publications {
            self.outbox_sent.insert(publication.topic.clone());
            self.fx.publications.push(publication);
        }
    }

    /// True when the registration of the entity owning `registration_topic` is being cleared.
    pub(super) fn is_being_cleared(&self, registration_topic: &str) -> bool {
        self.outbox
            .get(registration_topic)
            .is_some_and(|o| o.message.is_none())
    }
}

/// Whether a received payload is `expected` (`None`: empty), comparing JSON as values so that a
/// client's formatting does not matter.
fn same(payload: &[u8], expected: Option<&str>) -> bool {
    match expected {
        None => payload.is_empty(),
        Some(text) => {
            payload == text.as_bytes()
                || matches!(
                    (
                        serde_json::from_slice::<Value>(payload),
                        serde_json::from_str::<Value>(text)
                    ),
                    (Ok(a), Ok(b)) if a == b
                )
        }
    }
}
