//! Event (`e/<type>`) and alarm (`a/<type>`) payloads (spec/twin.md §3.3): a JSON object whose
//! `time` is taken out and parsed, everything else kept as given.
//!
//! An empty event payload is a valid event; an empty alarm payload is a clear, which the store
//! recognises before calling [`parse_alarm`]. Keeping the records is the store's business.

use serde_json::{Map, Value};

use super::{check_string_member, json_object};
use crate::twin::time::Timestamp;

/// The effective event type when neither the payload nor the topic gives one.
const DEFAULT_EVENT_TYPE: &str = "ThinEdgeEvent";
/// The key of an alarm whose topic type is empty, so that `a/` and `a/ThinEdgeAlarm` are one.
const DEFAULT_ALARM_TYPE: &str = "ThinEdgeAlarm";

/// An accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMessage {
    /// The effective type: the payload's `type`, else the topic type, else `ThinEdgeEvent`.
    pub etype: String,
    /// `None` means the reception time.
    pub time: Option<Timestamp>,
    /// Every member but `time`, `type` and `text` included.
    pub payload: Map<String, Value>,
}

/// Parses an event published on `e/<topic_type>`; an empty payload is an event with no fields.
pub fn parse_event(payload: &[u8], topic_type: &str) -> Result<EventMessage, String> {
    let mut members = if payload.is_empty() {
        Map::new()
    } else {
        json_object(payload)?
    };
    let time = take_time(&mut members)?;
    check_string_member(&members, "text")?;
    let etype = match members.get("type") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ if topic_type.is_empty() => DEFAULT_EVENT_TYPE.to_string(),
        _ => topic_type.to_string(),
    };
    Ok(EventMessage {
        etype,
        time,
        payload: members,
    })
}

/// Parses a non-empty alarm payload: its `time` and the other members (`severity`, `text`,
/// `type` and extras) as given.
pub fn parse_alarm(payload: &[u8]) -> Result<(Option<Timestamp>, Map<String, Value>), String> {
    let mut members = json_object(payload)?;
    let time = take_time(&mut members)?;
    check_string_member(&members, "text")?;
    Ok((time, members))
}

/// The identity of an alarm: its topic type, `ThinEdgeAlarm` when empty (§3.3).
pub fn alarm_key(topic_type: &str) -> &str {
    if topic_type.is_empty() {
        DEFAULT_ALARM_TYPE
    } else {
        topic_type
    }
}

fn take_time(members: &mut Map<String, Value>) -> Result<Option<Timestamp>, String> {
    members
        .remove("time")
        .map(|t| Timestamp::from_json(&t))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(members) => members,
            _ => Map::new(),
        }
    }

    #[test]
    fn an_empty_event_payload_is_an_event_with_no_fields() {
        let e = parse_event(b"", "login").unwrap();
        assert_eq!(
            e,
            EventMessage {
                etype: "login".into(),
                time: None,
                payload: Map::new(),
            }
        );
        assert_eq!(parse_event(b"", "").unwrap().etype, "ThinEdgeEvent");
        assert_eq!(parse_event(b"{}", "").unwrap().etype, "ThinEdgeEvent");
    }

    #[test]
    fn an_event_keeps_every_member_but_its_time() {
        let e = parse_event(
            br#"{"text":"logged in","time":"2021-04-30T17:03:14.123+02:00","user":{"id":7},"type":"x"}"#,
            "login",
        )
        .unwrap();
        assert_eq!(e.etype, "x");
        assert_eq!(
            e.time.map(|t| t.to_string()).as_deref(),
            Some("2021-04-30T15:03:14.123Z")
        );
        assert_eq!(
            e.payload,
            object(json!({"text":"logged in","type":"x","user":{"id":7}}))
        );
    }

    #[test]
    fn only_a_non_empty_string_type_overrides_the_topic_type() {
        for payload in [r#"{"type":""}"#, r#"{"type":5}"#, r#"{"type":null}"#] {
            let e = parse_event(payload.as_bytes(), "login").unwrap();
            assert_eq!(e.etype, "login", "{payload}");
            assert!(e.payload.contains_key("type"));
        }
        assert_eq!(
            parse_event(br#"{"type":5}"#, "").unwrap().etype,
            "ThinEdgeEvent"
        );
    }

    #[test]
    fn events_with_a_wrong_shape_text_or_time_are_rejected() {
        let reason = |payload: &[u8]| parse_event(payload, "t").unwrap_err();
        assert_eq!(reason(b"[]"), "invalid type: sequence, expected a map");
        assert_eq!(
            reason(b"\"x\""),
            "invalid type: string \"x\", expected a map"
        );
        assert_eq!(reason(b"x"), "expected value at line 1 column 1");
        assert_eq!(reason(b"{\"text\":\"\xff\"}"), "invalid UTF-8 payload");
        assert_eq!(
            reason(br#"{"text":5}"#),
            "invalid type: integer `5`, expected a string for \"text\""
        );
        assert_eq!(
            reason(br#"{"text":null}"#),
            "invalid type: null, expected a string for \"text\""
        );
        assert_eq!(
            reason(br#"{"time":253402300800}"#),
            "Invalid unix timestamp: 253402300800; timestamp must be in the range -62167219200..=253402300799"
        );
        assert!(parse_event(br#"{"time":"yesterday"}"#, "t").is_err());
    }

    /// §10 #33.
    #[test]
    fn an_alarm_keeps_severity_and_text_as_given_and_its_time_apart() {
        let (time, payload) =
            parse_alarm(br#"{"severity":"major","text":"hot","time":1701949168}"#).unwrap();
        assert_eq!(
            time.map(|t| t.to_string()).as_deref(),
            Some("2023-12-07T11:39:28.000Z")
        );
        assert_eq!(payload, object(json!({"severity":"major","text":"hot"})));
    }

    #[test]
    fn alarm_extras_and_unusual_severities_are_kept() {
        let (time, payload) =
            parse_alarm(br#"{"severity":"whatever","timestamp":"x","type":"t","n":[1]}"#).unwrap();
        assert_eq!(time, None);
        assert_eq!(
            payload,
            object(json!({"n":[1],"severity":"whatever","timestamp":"x","type":"t"}))
        );
        assert_eq!(parse_alarm(b"{}").unwrap(), (None, Map::new()));
    }

    #[test]
    fn alarms_with_a_wrong_shape_text_or_time_are_rejected() {
        let reason = |payload: &[u8]| parse_alarm(payload).unwrap_err();
        assert_eq!(
            reason(b"true"),
            "invalid type: boolean `true`, expected a map"
        );
        assert_eq!(reason(b"{\"a\":\"\xfe\"}"), "invalid UTF-8 payload");
        assert_eq!(
            reason(br#"{"text":{}}"#),
            "invalid type: map, expected a string for \"text\""
        );
        assert_eq!(
            reason(br#"{"time":null}"#),
            "invalid type: null, expected a date formatted as a unix timestamp (as an integer number of seconds) or an ISO-8601 string"
        );
    }

    #[test]
    fn alarms_are_keyed_by_topic_type_with_a_default_for_the_empty_one() {
        assert_eq!(alarm_key(""), "ThinEdgeAlarm");
        assert_eq!(alarm_key("ThinEdgeAlarm"), "ThinEdgeAlarm");
        assert_eq!(alarm_key("high_temp"), "high_temp");
    }
}
