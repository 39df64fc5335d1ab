//! Health payloads on `status/health` (spec/twin.md §3.4): the status derived from a payload,
//! which is never rejected.
//!
//! Mosquitto's bridge services report `1`/`0` rather than JSON. An empty payload removes the
//! health record, which the store handles before calling [`health_status`].

use serde_json::Value;

use crate::topic::EntityTopicId;

const UNKNOWN: &str = "unknown";

/// The derived status and the raw text of a non-empty health payload (invalid UTF-8 replaced
/// with U+FFFD).
pub fn health_status(id: &EntityTopicId, payload: &[u8]) -> (String, String) {
    let status = if is_mosquitto_bridge(id) {
        match payload {
            b"1" => "up",
            b"0" => "down",
            _ => UNKNOWN,
        }
        .to_string()
    } else {
        json_status(payload).unwrap_or_else(|| UNKNOWN.to_string())
    };
    (status, String::from_utf8_lossy(payload).into_owned())
}

/// A default-scheme service named `mosquitto-<x>-bridge`.
pub fn is_mosquitto_bridge(id: &EntityTopicId) -> bool {
    id.default_service_names()
        .and_then(|(_, service)| service.strip_prefix("mosquitto-"))
        .is_some_and(|rest| rest.ends_with("-bridge"))
}

/// The non-empty string `status` of a JSON object.
fn json_status(payload: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(payload).ok()? {
        Value::Object(mut members) => match members.remove("status")? {
            Value::String(s) if !s.is_empty() => Some(s),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, payload: &[u8]) -> String {
        health_status(&id.parse().unwrap(), payload).0
    }

    /// The table of §3.4, for an ordinary service and a device.
    #[test]
    fn the_status_is_the_non_empty_string_status_of_a_json_object() {
        for id in ["device/main/service/nodered", "device/c1//", "a/b/c/d"] {
            let cases: [(&[u8], &str); 12] = [
                (br#"{"status":"up"}"#, "up"),
                (br#"{"pid":1234,"status":"up","time":1714676361.361}"#, "up"),
                (br#"{"status":"down"}"#, "down"),
                (br#"{"pid":1234,"status":"down"}"#, "down"),
                (br#"{"status":"foo"}"#, "foo"),
                (br#"{"status":""}"#, "unknown"),
                (b"{}", "unknown"),
                (br#"{"pid":"123456"}"#, "unknown"),
                (br#"{"status":1}"#, "unknown"),
                (br#""up""#, "unknown"),
                (b"1", "unknown"),
                (b"up", "unknown"),
            ];
            for (payload, expected) in cases {
                assert_eq!(status(id, payload), expected, "{id} {payload:?}");
            }
        }
        assert_eq!(
            status(
                "device/main/service/tedge-mapper-bridge-c8y",
                br#"{"status":"up"}"#
            ),
            "up"
        );
    }

    /// §3.4 and §10 #32.
    #[test]
    fn mosquitto_bridges_report_one_and_zero() {
        let bridge = "device/main/service/mosquitto-c8y-bridge";
        assert_eq!(status(bridge, b"1"), "up");
        assert_eq!(status(bridge, b"0"), "down");
        for other in [
            &b"2"[..],
            b" 1",
            b"1\n",
            b"",
            br#"{"status":"up"}"#,
            b"true",
        ] {
            assert_eq!(status(bridge, other), "unknown", "{other:?}");
        }
        assert_eq!(
            status("device/child/service/mosquitto-aws-bridge", b"0"),
            "down"
        );
        assert_eq!(
            status("device/main/service/app", br#"{"status":""}"#),
            "unknown"
        );
    }

    #[test]
    fn only_default_scheme_services_named_mosquitto_something_bridge_are_bridges() {
        for not_bridge in [
            "device/main/service/mosquitto-bridge",
            "device/main/service/mosquitto-c8y-bridge-x",
            "device/main/custom/mosquitto-c8y-bridge",
            "device/mosquitto-c8y-bridge//",
        ] {
            assert_eq!(status(not_bridge, b"1"), "unknown", "{not_bridge}");
            assert_eq!(
                status(not_bridge, br#"{"status":"up"}"#),
                "up",
                "{not_bridge}"
            );
        }
    }

    #[test]
    fn the_raw_text_is_kept_with_invalid_utf8_replaced() {
        let id = "device/main/service/nodered".parse().unwrap();
        assert_eq!(
            health_status(&id, br#"{"status":"up"}"#),
            ("up".to_string(), r#"{"status":"up"}"#.to_string())
        );
        assert_eq!(
            health_status(&id, b"\xffup"),
            ("unknown".to_string(), "\u{fffd}up".to_string())
        );
        assert_eq!(
            health_status(&id, b"{\"status\":\"up\",\"x\":\"\xff\"}").0,
            "unknown"
        );
    }
}
