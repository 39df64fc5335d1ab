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

/// The deepest nesting a persisted record may have. Payloads are accepted up to serde_json's
/// default limit of 128 levels, and a record wraps them in a few more (entity, section, item):
/// read with that default, a record holding such a payload would be refused at the next start,
/// and its entity lost. Records are read without serde_json's limit once this scan shows they
/// stay within this bound, so a hostile state file cannot exhaust the stack either.
const MAX_RECORD_DEPTH: usize = 192;

/// Reads a persisted record.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let depth = nesting(text);
    if depth > MAX_RECORD_DEPTH {
        return Err(format!(
            "nested {depth} levels deep, more than the {MAX_RECORD_DEPTH} a record may be"
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// The deepest nesting of arrays and objects in JSON text (strings skipped).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_deeper_than_serde_jsons_default_limit_are_read_back() {
        let deep = format!("{}{}", "[".repeat(150), "]".repeat(150));
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
        assert!(parse::<serde_json::Value>(&deep).is_ok());
        assert_eq!(nesting(r#"{"a":"[[[{","b":[{"c":"\"]"}]}"#), 3);
        let hostile = "[".repeat(100_000);
        assert_eq!(
            parse::<serde_json::Value>(&hostile).unwrap_err(),
            "nested 100000 levels deep, more than the 192 a record may be"
        );
    }
}
