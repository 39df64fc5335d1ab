//! Measurement payloads on `m/<type>` (spec/twin.md §3.2): series, one-level groups, `time`,
//! `type` and `properties`, accepted or rejected as a whole.
//!
//! The payload is read with a small serde visitor rather than into a `serde_json::Value`,
//! because two things are lost there: a repeated root `time` (which rejects the message) and the
//! key whose number overflowed a float64 (which the rejection names). Storing the series is the
//! store's business.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{invalid_type, utf8};
use crate::twin::time::Timestamp;

/// The effective type when neither the payload nor the topic gives one.
pub const DEFAULT_MEASUREMENT_TYPE: &str = "ThinEdgeMeasurement";

const EMPTY: &str = "Empty Thin Edge measurement: it must contain at least one measurement";
const NESTED: &str = "Expect single-value measurement";
const DUPLICATE_TIME: &str = "A measurement must have at most one \"time\" member";

/// An accepted measurement message.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The effective type (§3.2).
    pub mtype: String,
    /// The root `time`; `None` means the reception time.
    pub time: Option<Timestamp>,
    /// Every series, in key order (group members after their group name).
    pub values: Vec<MeasurementValue>,
}

/// One series: `name` alone for a top-level number, `name.member` for a group member.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementValue {
    pub name: String,
    pub member: Option<String>,
    /// As written in the payload: integers stay integers.
    pub value: Number,
}

/// Parses a measurement published on `m/<topic_type>` (`topic_type` may be empty).
pub fn parse_measurement(payload: &[u8], topic_type: &str) -> Result<Measurement, String> {
    let entries = match parse_node(utf8(payload)?)? {
        Node::Object(entries) => entries,
        Node::Other(value) => return Err(invalid_type(&value, "a map")),
    };
    if entries.iter().filter(|(key, _)| key == "time").count() > 1 {
        return Err(DUPLICATE_TIME.into());
    }
    // Any other repeated name: the last occurrence wins.
    let members: Map<String, Value> = entries.into_iter().collect();

    let mut time = None;
    let mut payload_type = None;
    let mut values = Vec::new();
    for (key, value) in members {
        match (key.as_str(), value) {
            ("time", value) => time = Some(Timestamp::from_json(&value)?),
            ("properties", _) => {}
            ("type", Value::String(t)) => payload_type = Some(t).filter(|t| !t.is_empty()),
            (_, Value::Number(n)) => values.push(series(key, None, n)?),
            (_, Value::String(_)) => {}
            (_, Value::Object(group)) => push_group(key, group, &mut values)?,
            (_, other) => {
                return Err(format!(
                    "Unexpected value type for \"{key}\": expected a number or an object, got {}",
                    kind(&other)
                ))
            }
        }
    }
    if values.is_empty() {
        return Err(EMPTY.into());
    }
    let mtype = payload_type.unwrap_or_else(|| match topic_type {
        "" => DEFAULT_MEASUREMENT_TYPE.to_string(),
        t => t.to_string(),
    });
    Ok(Measurement {
        mtype,
        time,
        values,
    })
}

/// A one-level group: number members are series, strings are ignored, `time` is ordinary.
fn push_group(
    name: String,
    members: Map<String, Value>,
    values: &mut Vec<MeasurementValue>,
) -> Result<(), String> {
    let before = values.len();
    for (member, value) in members {
        match value {
            Value::Number(n) => values.push(series(name.clone(), Some(member), n)?),
            Value::String(_) => {}
            Value::Object(_) => return Err(NESTED.into()),
            other => {
                return Err(format!(
                "Unexpected value type for \"{member}\" in \"{name}\": expected a number, got {}",
                kind(&other)
            ))
            }
        }
    }
    if values.len() == before {
        return Err(format!(
            "Empty Thin Edge measurement: \"{name}\" must contain at least one measurement"
        ));
    }
    Ok(())
}

fn series(name: String, member: Option<String>, value: Number) -> Result<MeasurementValue, String> {
    // Unreachable with serde_json's default features, whose numbers are all finite; kept so that
    // enabling `arbitrary_precision` cannot let an infinite series through.
    if !value.as_f64().is_some_and(f64::is_finite) {
        let key = member.as_deref().unwrap_or(&name);
        return Err(too_large(key));
    }
    Ok(MeasurementValue {
        name,
        member,
        value,
    })
}

fn too_large(key: &str) -> String {
    format!("Number out-of-range: the \"{key}\" value is too large to be represented as a float64.")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON value whose object members are kept in document order, repeated names included.
enum Node {
    Object(Vec<(String, Value)>),
    Other(Value),
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Object(entries) => Value::Object(entries.into_iter().collect()),
            Node::Other(value) => value,
        }
    }
}

/// Parses the whole text. A number too large for a float64 fails serde_json's parser itself
/// (`1e400`); the visitor remembers under which key, so the rejection can name it (§3.2).
fn parse_node(text: &str) -> Result<Node, String> {
    let mut failed_key = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = NodeSeed {
        failed_key: &mut failed_key,
    }
    .deserialize(&mut de)
    .and_then(|node| de.end().map(|()| node));
    // serde_json has no error category of its own for this case, hence the message match.
    parsed.map_err(|e| match failed_key {
        Some(key) if e.to_string().starts_with("number out of range") => too_large(&key),
        _ => e.to_string(),
    })
}

/// Builds a [`Node`], recording the innermost key whose value failed to parse.
struct NodeSeed<'a> {
    failed_key: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Other(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Other(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Other(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Other(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Other(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Other(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element_seed(NodeSeed {
            failed_key: &mut *self.failed_key,
        })? {
            items.push(node.into_value());
        }
        Ok(Node::Other(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let seed = NodeSeed {
                failed_key: &mut *self.failed_key,
            };
            match map.next_value_seed(seed) {
                Ok(node) => entries.push((key, node.into_value())),
                Err(e) => {
                    self.failed_key.get_or_insert(key);
                    return Err(e);
                }
            }
        }
        Ok(Node::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(payload: &str) -> Result<Measurement, String> {
        parse_measurement(payload.as_bytes(), "env")
    }

    fn reason(payload: &str) -> String {
        parse(payload).unwrap_err()
    }

    /// `(name, member, value as JSON text)` for each series.
    fn series_of(m: &Measurement) -> Vec<(&str, Option<&str>, String)> {
        m.values
            .iter()
            .map(|v| (v.name.as_str(), v.member.as_deref(), v.value.to_string()))
            .collect()
    }

    /// §10 #34, first message.
    #[test]
    fn top_level_numbers_and_group_members_are_series_at_the_root_time() {
        let m = parse(r#"{"time":"2021-04-30T17:03:14.123+02:00","t":24,"c":{"x":1,"y":2.5}}"#)
            .unwrap();
        assert_eq!(m.mtype, "env");
        assert_eq!(
            m.time.map(|t| t.to_string()).as_deref(),
            Some("2021-04-30T15:03:14.123Z")
        );
        assert_eq!(
            series_of(&m),
            [
                ("c", Some("x"), "1".to_string()),
                ("c", Some("y"), "2.5".to_string()),
                ("t", None, "24".to_string()),
            ]
        );
    }

    /// §10 #34, the three rejections.
    #[test]
    fn empty_boolean_and_null_time_messages_are_rejected() {
        assert_eq!(
            reason("{}"),
            "Empty Thin Edge measurement: it must contain at least one measurement"
        );
        assert_eq!(
            reason(r#"{"t":true}"#),
            "Unexpected value type for \"t\": expected a number or an object, got a boolean"
        );
        assert_eq!(
            reason(r#"{"time":null,"t":1}"#),
            "invalid type: null, expected a date formatted as a unix timestamp (as an integer number of seconds) or an ISO-8601 string"
        );
    }

    #[test]
    fn a_message_without_any_number_is_an_empty_measurement() {
        for payload in [
            r#"{"time":1701949168}"#,
            r#"{"type":"x"}"#,
            r#"{"s":"text","properties":{"a":1}}"#,
            r#"{"properties":5}"#,
        ] {
            assert_eq!(
                reason(payload),
                "Empty Thin Edge measurement: it must contain at least one measurement",
                "{payload}"
            );
        }
    }

    #[test]
    fn the_effective_type_is_the_payload_type_then_the_topic_type_then_the_default() {
        let of = |payload: &str, topic: &str| {
            parse_measurement(payload.as_bytes(), topic).unwrap().mtype
        };
        assert_eq!(of(r#"{"type":"x","t":1}"#, "env"), "x");
        assert_eq!(of(r#"{"type":"","t":1}"#, "env"), "env");
        assert_eq!(of(r#"{"t":1}"#, "env"), "env");
        assert_eq!(of(r#"{"t":1}"#, ""), "ThinEdgeMeasurement");
        assert_eq!(of(r#"{"type":"","t":1}"#, ""), "ThinEdgeMeasurement");
    }

    #[test]
    fn numbers_keep_their_json_representation() {
        let m = parse(r#"{"big":25000000000,"neg":-3,"f":1.0,"e":1e3,"u":18446744073709551615}"#)
            .unwrap();
        assert_eq!(
            series_of(&m),
            [
                ("big", None, "25000000000".to_string()),
                ("e", None, "1000.0".to_string()),
                ("f", None, "1.0".to_string()),
                ("neg", None, "-3".to_string()),
                ("u", None, "18446744073709551615".to_string()),
            ]
        );
        assert!(m.values[0].value.is_i64());
    }

    #[test]
    fn a_number_too_large_for_a_float64_is_rejected_naming_its_key() {
        assert_eq!(
            reason(r#"{"t":1e400}"#),
            "Number out-of-range: the \"t\" value is too large to be represented as a float64."
        );
        assert_eq!(
            reason(r#"{"a":1,"c":{"x":1,"y":-1e400}}"#),
            "Number out-of-range: the \"y\" value is too large to be represented as a float64."
        );
        let digits = format!(r#"{{"n":1{}}}"#, "0".repeat(400));
        assert_eq!(
            reason(&digits),
            "Number out-of-range: the \"n\" value is too large to be represented as a float64."
        );
        // Large but representable: an integer beyond u64 is read as a float.
        let m = parse(&format!(r#"{{"n":1{}}}"#, "0".repeat(30))).unwrap();
        assert_eq!(m.values[0].value.as_f64(), Some(1e30));
    }

    #[test]
    fn groups_are_one_level_deep_and_need_a_number() {
        assert_eq!(
            reason(r#"{"c":{"x":{"y":1}}}"#),
            "Expect single-value measurement"
        );
        assert_eq!(
            reason(r#"{"t":1,"c":{}}"#),
            "Empty Thin Edge measurement: \"c\" must contain at least one measurement"
        );
        assert_eq!(
            reason(r#"{"t":1,"c":{"s":"x"}}"#),
            "Empty Thin Edge measurement: \"c\" must contain at least one measurement"
        );
        let m = parse(r#"{"c":{"s":"ignored","x":1}}"#).unwrap();
        assert_eq!(series_of(&m), [("c", Some("x"), "1".to_string())]);
    }

    #[test]
    fn booleans_nulls_and_arrays_reject_the_whole_message_naming_the_key() {
        assert_eq!(
            reason(r#"{"a":1,"n":null}"#),
            "Unexpected value type for \"n\": expected a number or an object, got null"
        );
        assert_eq!(
            reason(r#"{"a":[1]}"#),
            "Unexpected value type for \"a\": expected a number or an object, got an array"
        );
        assert_eq!(
            reason(r#"{"c":{"x":1,"ok":false}}"#),
            "Unexpected value type for \"ok\" in \"c\": expected a number, got a boolean"
        );
        assert_eq!(
            reason(r#"{"c":{"x":1,"l":[]}}"#),
            "Unexpected value type for \"l\" in \"c\": expected a number, got an array"
        );
    }

    #[test]
    fn time_is_special_at_the_root_only() {
        let m = parse(r#"{"c":{"time":5}}"#).unwrap();
        assert_eq!(m.time, None);
        assert_eq!(series_of(&m), [("c", Some("time"), "5".to_string())]);
        assert_eq!(
            reason(r#"{"c":{"time":"2021-04-30T17:03:14Z"}}"#),
            "Empty Thin Edge measurement: \"c\" must contain at least one measurement"
        );
    }

    #[test]
    fn properties_are_never_series_and_other_strings_are_ignored() {
        let m = parse(r#"{"properties":{"a":1,"b":[true]},"s":"x","t":2}"#).unwrap();
        assert_eq!(series_of(&m), [("t", None, "2".to_string())]);
    }

    /// Only a string `type` is special: any other value follows the rules of its JSON type.
    #[test]
    fn a_non_string_type_member_is_an_ordinary_member() {
        let m = parse(r#"{"type":5}"#).unwrap();
        assert_eq!(m.mtype, "env");
        assert_eq!(series_of(&m), [("type", None, "5".to_string())]);
        assert_eq!(
            reason(r#"{"t":1,"type":true}"#),
            "Unexpected value type for \"type\": expected a number or an object, got a boolean"
        );
    }

    #[test]
    fn a_second_time_member_rejects_the_message() {
        assert_eq!(
            reason(r#"{"time":1701949168,"t":1,"time":1701949168}"#),
            "A measurement must have at most one \"time\" member"
        );
        assert_eq!(
            reason(r#"{"time":1,"t":1,"\u0074ime":2}"#),
            "A measurement must have at most one \"time\" member"
        );
    }

    #[test]
    fn for_any_other_repeated_name_the_last_occurrence_wins() {
        let m = parse(r#"{"t":true,"t":1,"c":{"x":null,"x":2},"c":{"y":3}}"#).unwrap();
        assert_eq!(
            series_of(&m),
            [
                ("c", Some("y"), "3".to_string()),
                ("t", None, "1".to_string())
            ]
        );
        assert_eq!(
            reason(r#"{"t":1,"t":false}"#),
            "Unexpected value type for \"t\": expected a number or an object, got a boolean"
        );
        let m = parse(r#"{"c":{"x":null,"x":2}}"#).unwrap();
        assert_eq!(series_of(&m), [("c", Some("x"), "2".to_string())]);
    }

    /// The time table of §3.2, through a measurement.
    #[test]
    fn root_times_follow_the_spec_table() {
        let time = |t: &str| {
            parse(&format!(r#"{{"time":{t},"v":1}}"#)).map(|m| m.time.map(|t| t.to_string()))
        };
        assert_eq!(
            time("1701949168"),
            Ok(Some("2023-12-07T11:39:28.000Z".into()))
        );
        assert_eq!(
            time("1701949168.001"),
            Ok(Some("2023-12-07T11:39:28.001Z".into()))
        );
        assert_eq!(
            time("-62167219200"),
            Ok(Some("0000-01-01T00:00:00.000Z".into()))
        );
        assert_eq!(
            time("253402300799"),
            Ok(Some("9999-12-31T23:59:59.000Z".into()))
        );
        assert_eq!(
            time("253402300800"),
            Err("Invalid unix timestamp: 253402300800; timestamp must be in the range -62167219200..=253402300799".into())
        );
        for bad in [r#""yesterday""#, r#""2021-04-30T17:03:14""#, "true", "{}"] {
            assert!(time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse(r#"{"v":1}"#).unwrap().time, None);
    }

    #[test]
    fn payloads_that_are_not_utf8_json_objects_are_rejected() {
        assert_eq!(
            parse_measurement(b"{\"t\":1,\"s\":\"\xff\"}", "").unwrap_err(),
            "invalid UTF-8 payload"
        );
        assert_eq!(reason(""), "EOF while parsing a value at line 1 column 0");
        assert_eq!(
            reason("{\"t\":1"),
            "EOF while parsing an object at line 1 column 6"
        );
        assert_eq!(
            reason(r#"{"t":1} x"#),
            "trailing characters at line 1 column 9"
        );
        assert_eq!(reason("[1]"), "invalid type: sequence, expected a map");
        assert_eq!(reason("5"), "invalid type: integer `5`, expected a map");
        assert_eq!(reason("null"), "invalid type: null, expected a map");
        assert_eq!(
            reason(r#""x""#),
            "invalid type: string \"x\", expected a map"
        );
    }

    #[test]
    fn deeply_nested_payloads_are_rejected_without_overflowing_the_stack() {
        let deep = format!(
            r#"{{"t":1,"p":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            reason(&deep),
            "recursion limit exceeded at line 1 column 138"
        );
    }
}
