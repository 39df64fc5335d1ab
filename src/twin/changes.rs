//! The twin's changes as events for `/te/v1/changes` (issue #7): every change of an entity's
//! state gets the next sequence number, and, while someone follows the stream, its event text.
//!
//! Extends [`Store`]: the rules call [`Store::changed`] right after they changed an item, so the
//! event carries the item as the state document now shows it (§6.1); a removed entity gets one
//! event with a `null` registration. Numbering never stops, so a gap is visible to the feed even
//! when no text was made. The journal the HTTP clients read is `feed`'s.

use std::fmt::{self, Write as _};

use super::model::Entity;
use super::payload::alarm_key;
use super::registry::to_json;
use super::store::Store;
use super::time::Timestamp;
use crate::topic::{Channel, EntityTopicId};

/// The store's side of the change stream.
#[derive(Debug)]
pub struct Changes {
    /// The sequence number of the last change.
    seq: u64,
    /// Whether event texts are wanted (someone follows the stream).
    pub active: bool,
    pending: Vec<(u64, String)>,
}

impl Changes {
    /// Numbering that goes on after `seq`.
    pub fn new(seq: u64) -> Changes {
        Changes {
            seq,
            active: false,
            pending: Vec::new(),
        }
    }

    /// Where numbering starts: a random number below 2^51 for each run, so that a number an
    /// earlier run gave is almost never one this run gives (a client holding one is reset, not
    /// resumed somewhere else), whatever the clock does on a gateway without a real-time
    /// clock; and numbers stay exact in JavaScript (below 2^53) for billions of changes.
    pub fn first_seq() -> u64 {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No entropy source: the clock is the next best thing.
            let micros = Timestamp::now()
                .as_millis()
                .unsigned_abs()
                .saturating_mul(1000);
            bytes = micros.to_le_bytes();
        }
        u64::from_le_bytes(bytes) & ((1 << 51) - 1)
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The events made since the last call, in order.
    pub fn take(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.pending)
    }

    fn push(&mut self, id: &EntityTopicId, channel: &dyn fmt::Display, value: &str) {
        let seq = self.seq;
        let channel = channel.to_string();
        let mut text = String::with_capacity(96 + channel.len() + value.len());
        let _ = write!(
            text,
            "id: {seq}\nevent: change\ndata: {{\"seq\":{seq},\"@topic-id\":{},\"channel\":{},\"value\":{value}}}\n\n",
            Json(id.as_str()),
            Json(&channel),
        );
        self.pending.push((seq, text));
    }
}

/// A string as JSON text.
struct Json<'a>(&'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self.0) {
            Ok(text) => f.write_str(&text),
            Err(_) => f.write_str("null"),
        }
    }
}

impl Store {
    /// A change of `channel` of the registered entity `id`; `value` gives the item as the
    /// state document shows it now. No event for an unknown entity (its number is a gap).
    pub(super) fn changed(
        &mut self,
        id: &EntityTopicId,
        channel: &dyn fmt::Display,
        value: impl FnOnce(&Entity) -> String,
    ) {
        // Counted first: with no client following (the usual case) a change costs this
        // increment only, not a lookup of the entity on the ingest path.
        self.changes.seq += 1;
        if !self.changes.active {
            return;
        }
        if let Some(entity) = self.entities.get(id) {
            let value = value(entity);
            self.changes.push(id, channel, &value);
        }
    }

    /// A change of the item `channel` names, as the state document shows it now. Alarms are
    /// named by their key in the state document (`a/ThinEdgeAlarm` for `a/`).
    pub(super) fn item_changed(&mut self, id: &EntityTopicId, channel: &Channel) {
        let value = |e: &Entity| {
            let x = e.extra();
            match channel {
                Channel::Registration => to_json(&e.metadata()),
                Channel::Twin(key) => to_json(&e.twin.get(key.as_str())),
                Channel::Config => to_json(&x.config),
                Channel::Measurement(t) => to_json(&e.measurements.get(t.as_str())),
                Channel::Event(t) => to_json(&x.events.get(t.as_str()).and_then(|l| l.front())),
                Channel::Alarm(t) => to_json(&x.alarms.get(alarm_key(t))),
                Channel::Capability(op) => to_json(&x.capabilities.get(op.as_str())),
                Channel::Command { op, id } => {
                    to_json(&x.commands.get(op.as_str()).and_then(|c| c.get(id.as_str())))
                }
                Channel::Health => to_json(&x.health),
                _ => "null".to_string(),
            }
        };
        match channel {
            Channel::Alarm(t) => self.changed(id, &format_args!("a/{}", alarm_key(t)), value),
            _ => self.changed(id, channel, value),
        }
    }

    /// A registration, new or changed: the event carries the metadata.
    pub(super) fn registration_changed(&mut self, id: &EntityTopicId) {
        self.changed(id, &"", |e| to_json(&e.metadata()));
    }

    /// A removed entity: its registration becomes `null`.
    pub(super) fn entity_removed(&mut self, id: &EntityTopicId) {
        self.changes.seq += 1;
        if self.changes.active {
            self.changes.push(id, &"", "null");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_from_a_random_start_and_made_only_when_wanted() {
        let starts: Vec<u64> = (0..4).map(|_| Changes::first_seq()).collect();
        assert!(starts.iter().all(|s| *s < 1 << 51), "{starts:?}");
        assert!(starts.windows(2).any(|w| w[0] != w[1]), "{starts:?}");
        let mut c = Changes::new(1_000_000);
        assert_eq!(c.seq(), 1_000_000);
        let id: EntityTopicId = "device/c1//".parse().unwrap();
        c.seq += 1;
        c.push(&id, &"twin/name", "\"x\"");
        assert_eq!(
            c.take(),
            [(
                1_000_001,
                "id: 1000001\nevent: change\ndata: {\"seq\":1000001,\"@topic-id\":\"device/c1//\",\"channel\":\"twin/name\",\"value\":\"x\"}\n\n"
                    .to_string()
            )]
        );
        assert!(c.take().is_empty());
    }
}
