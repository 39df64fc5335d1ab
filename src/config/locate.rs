//! Finds the line where a key is written, for [`super::Problem`]s.
//!
//! The checks work on a YAML value tree, which has no positions. serde_yaml puts on an error the
//! position of the event being deserialized, so to place a key, the file is deserialized again by
//! [`Probe`], which fails on purpose when it reads that key.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

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
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping")
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
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        line_of(text, &path)
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
