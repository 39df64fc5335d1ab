//! The twin's persisted records (spec/twin.md §7.1): which keys the store writes to the journal
//! and snapshot, and how each value is serialized, borrowing from the store so that a burst is
//! written without copying the twin. Loading (`Store::load`) reads the same keys back.

use serde::ser::{Serialize, Serializer};

use super::model::Entity;
use super::outbox::Outgoing;
use super::persist::Op;
use crate::topic::EntityTopicId;

pub const ENTITY_KEY: &str = "e/";
pub const OUTBOX_KEY: &str = "c/";
pub const MAIN_KEY: &str = "main";

/// A record's key: `main`, `e/<topic id>` or `c/<topic>` (an outbox entry).
#[derive(Debug, Clone)]
pub enum Key {
    Main,
    Entity(EntityTopicId),
    Outbox(String),
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Key::Main => s.serialize_str(MAIN_KEY),
            Key::Entity(id) => s.collect_str(&format_args!("{ENTITY_KEY}{id}")),
            Key::Outbox(topic) => s.collect_str(&format_args!("{OUTBOX_KEY}{topic}")),
        }
    }
}

/// A record's value: the main device's id, an entity, or an outbox entry.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Main(&'a EntityTopicId),
    Entity(&'a Entity),
    Outgoing(&'a Outgoing),
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Main(id) => id.serialize(s),
            Value::Entity(entity) => entity.serialize(s),
            Value::Outgoing(outgoing) => outgoing.serialize(s),
        }
    }
}

pub type Record<'a> = Op<Key, Value<'a>>;
