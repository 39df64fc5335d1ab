//! What applying one input to the store produces, for the owner task to carry out: MQTT
//! publications (in order), rejections to log and report on `<root>/errors`, and whether the
//! changes must reach the disk before the publications go out (spec/twin.md §7.1).
//!
//! The store never performs I/O; it only fills an [`Effects`] value.

use crate::topic::EntityTopicId;

/// One MQTT publication, always QoS 1 (§1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// An outbox message (`twin::outbox`): its generation, reported back once the broker
    /// acknowledged it, so that the store can forget it.
    pub tracked: Option<u64>,
}

impl Publication {
    pub fn retained(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Publication {
            topic,
            payload: payload.into(),
            retain: true,
            tracked: None,
        }
    }

    pub fn tracked(topic: String, payload: Vec<u8>, generation: u64) -> Self {
        Publication {
            topic,
            payload,
            retain: true,
            tracked: Some(generation),
        }
    }

    pub fn transient(topic: String, payload: impl Into<Vec<u8>>) -> Self {
        Publication {
            topic,
            payload: payload.into(),
            retain: false,
            tracked: None,
        }
    }
}

/// Rejected MQTT input (§2.6, §9): logged, counted and, when `report` is set, published on
/// `<root>/errors` as `<topic>: <reason>`, rate limited per (kind, topic id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: &'static str,
    pub id: Option<EntityTopicId>,
    pub topic: String,
    pub reason: String,
    pub report: bool,
    /// How many publications of the same [`Effects`] came before it: the report goes out in
    /// that place, so `<root>/errors` keeps the order of the inputs.
    pub at: usize,
}

#[derive(Debug, Default)]
pub struct Effects {
    pub publications: Vec<Publication>,
    pub rejections: Vec<Rejection>,
    /// Registration changes, deregistrations or clean-up records: persist before publishing.
    pub durable: bool,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.publications.is_empty() && self.rejections.is_empty() && !self.durable
    }
}
