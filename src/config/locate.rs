//! Finds the line where a key is written, for [`super::Problem`]s.
//!
//! The checks work on a YAML value tree, which has no positions. serde_yaml puts on an error the
//! position of the event being deserialized, so to place a key, the file is deserialized again by
//! [`Probe`], which fails on purpose when it reads that key.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

const PROBE_HIT: &str = "edge-agent config probe: key found";

/// The 1-based line where the key at `path` is written in `text`, if it is.
pub(super) fn line_of(text: &str, path: &[String]) -> Option<usize> {
    let err = Probe(path)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    if !err.to_string().contains(PROBE_HIT) {
        return None;
    }
    err.location().map(|l| l.line())
}

struct Probe<'a>(&'a [String]);

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.0.first().and_then(|part| list_index(part)) {
            Some(_) => d.deserialize_seq(self),
            None => d.deserialize_map(self),
        }
    }
}

/// `[3]` → 3: a path segment naming a list item.
fn list_index(part: &str) -> Option<usize> {
    part.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Fails at once with [`PROBE_HIT`], at the position of the value it is asked to read.
struct Hit;

impl<'de> DeserializeSeed<'de> for Hit {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Hit {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(PROBE_HIT))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(PROBE_HIT))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(PROBE_HIT))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(PROBE_HIT))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(PROBE_HIT))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(PROBE_HIT))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(PROBE_HIT))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(PROBE_HIT))
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(index) = self.0.first().and_then(|part| list_index(part)) else {
            return Ok(());
        };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        match &self.0[1..] {
            // The item itself: its first event carries its position.
            [] => seq.next_element_seed(Hit).map(drop),
            rest => seq.next_element_seed(Probe(rest)).map(drop),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((name, rest)) = self.0.split_first() else {
            return Ok(());
        };
        let key = KeyProbe {
            name,
            last: rest.is_empty(),
        };
        while let Some(found) = map.next_key_seed(key)? {
            if found {
                return map.next_value_seed(Probe(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Reads one key; fails with [`PROBE_HIT`] if it is the last key of the path, so that serde_yaml
/// puts the key's own position on the error.
#[derive(Clone, Copy)]
struct KeyProbe<'a> {
    name: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.name, self.last) {
            (true, true) => Err(E::custom(PROBE_HIT)),
            (found, _) => Ok(found),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, key: &str) -> Option<usize> {
        line_of(text, &super::super::split_key(key))
    }

    #[test]
    fn a_key_inside_a_list_item_is_found_by_its_index() {
        let text = "bridge:\n  clouds:\n    - name: a\n      type: c8y\n    - name: b\n      auth:\n        key_file: /k\n";
        assert_eq!(line(text, "bridge.clouds[0].type"), Some(4));
        assert_eq!(line(text, "bridge.clouds[1].name"), Some(5));
        assert_eq!(line(text, "bridge.clouds[1].auth.key_file"), Some(7));
        assert_eq!(line(text, "bridge.clouds[1]"), Some(5));
        assert_eq!(line(text, "bridge.clouds[2].name"), None);
    }

    #[test]
    fn a_key_is_found_on_its_own_line() {
        let text = "# comment\nmqtt:\n  host: h\n  tls:\n    ca_file: /ca\nhttp: {bind: x,\n  public_url: y}\n";
        assert_eq!(line(text, "mqtt"), Some(2));
        assert_eq!(line(text, "mqtt.host"), Some(3));
        assert_eq!(line(text, "mqtt.tls.ca_file"), Some(5));
        assert_eq!(line(text, "http.bind"), Some(6));
        assert_eq!(line(text, "http.public_url"), Some(7));
    }

    #[test]
    fn an_absent_key_has_no_line() {
        assert_eq!(line("mqtt:\n  host: h\n", "mqtt.port"), None);
        assert_eq!(line("mqtt: 5\n", "mqtt.port"), None);
        assert_eq!(line("", "mqtt"), None);
    }
}
