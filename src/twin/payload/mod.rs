//! Parsers for the payloads of the `te/` channels (spec/twin.md §3, §4.1, §5.5): bytes in,
//! typed values or the exact rejection message out.
//!
//! Pure and synchronous: no I/O, no clock, no store. What a parsed payload does to the twin
//! (merging, clearing, auto-registration, reporting on `<root>/errors`) is decided by `store`,
//! which also recognises the empty payloads that clear or remove something unless a parser's
//! doc says otherwise. No input makes these functions panic.

mod documents;
mod health;
mod measurement;
mod records;
mod registration;

use serde::de::Unexpected;
use serde_json::{Map, Value};

use super::error::TwinError;

pub use documents::{
    parse_capability, parse_command, parse_config, parse_twin_value, ConfigPayload,
};
pub use health::{health_status, is_mosquitto_bridge};
pub use measurement::{parse_measurement, Measurement, MeasurementValue, DEFAULT_MEASUREMENT_TYPE};
pub use records::{alarm_key, parse_alarm, parse_event, EventMessage};
pub use registration::{
    parse_new_entity, parse_registration, parse_registration_value, registration_json,
    RegistrationError,
};

/// The reason given for a payload that is not UTF-8 on a JSON channel (§9).
pub const INVALID_UTF8: &str = "invalid UTF-8 payload";

/// The payload as text; JSON payloads must be UTF-8 (§3.1).
pub fn utf8(payload: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(payload).map_err(|_| INVALID_UTF8.to_string())
}

/// The twin key rule (§3.3), which inline registration fields and HTTP paths share.
pub fn validate_twin_key(key: &str) -> Result<(), TwinError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(TwinError::InvalidTwinKey(key.to_string()))
    }
}

/// Twin and config keys: non-empty, no `/`, not starting with `@` (§3.3).
fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && !key.contains('/') && !key.starts_with('@')
}

/// A non-empty payload that must be a JSON object.
fn json_object(payload: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_str(utf8(payload)?).map_err(|e| e.to_string())?;
    match value {
        Value::Object(members) => Ok(members),
        other => Err(invalid_type(&other, "a map")),
    }
}

/// serde_json's wording for a value of the wrong JSON type, e.g.
/// ``invalid type: integer `55`, expected a string``, so that our checks read like serde's.
fn invalid_type(value: &Value, expected: &str) -> String {
    let unexpected = match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            (None, None) => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    };
    <serde_json::Error as serde::de::Error>::invalid_type(unexpected, &expected).to_string()
}

/// A member that must be a string when present, e.g. the `text` of an event.
fn check_string_member(members: &Map<String, Value>, key: &str) -> Result<(), String> {
    match members.get(key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(format!("{} for \"{key}\"", invalid_type(other, "a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_payloads_pass_and_invalid_utf8_is_refused_with_the_spec_reason() {
        assert_eq!(utf8(b"{\"a\":\"\xc3\xbc\"}"), Ok("{\"a\":\"ü\"}"));
        assert_eq!(utf8(b""), Ok(""));
        assert_eq!(
            utf8(b"{\"a\":\"\xff\"}"),
            Err("invalid UTF-8 payload".to_string())
        );
    }

    #[test]
    fn twin_keys_that_are_empty_contain_a_slash_or_start_with_at_are_refused() {
        for ok in ["name", "device_OS", "a.b", "ü", "x@y", " "] {
            assert_eq!(validate_twin_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/b", "/", "@x", "@"] {
            assert_eq!(
                validate_twin_key(bad),
                Err(TwinError::InvalidTwinKey(bad.to_string()))
            );
        }
        assert_eq!(
            validate_twin_key("a/b").unwrap_err().to_string(),
            "Invalid twin key: 'a/b'. Keys that are empty, containing '/' or starting with '@' are not allowed"
        );
    }

    #[test]
    fn wrong_json_types_are_described_in_serde_json_wording() {
        let cases = [
            (json!(null), "invalid type: null, expected a string"),
            (
                json!(true),
                "invalid type: boolean `true`, expected a string",
            ),
            (json!(55), "invalid type: integer `55`, expected a string"),
            (json!(-3), "invalid type: integer `-3`, expected a string"),
            (
                json!(2.5),
                "invalid type: floating point `2.5`, expected a string",
            ),
            (json!("x"), "invalid type: string \"x\", expected a string"),
            (json!([1]), "invalid type: sequence, expected a string"),
            (json!({}), "invalid type: map, expected a string"),
        ];
        for (value, message) in cases {
            assert_eq!(invalid_type(&value, "a string"), message);
        }
    }

    #[test]
    fn payloads_that_must_be_objects_name_what_they_got() {
        assert_eq!(
            json_object(b"{\"a\":1}").unwrap(),
            json!({"a":1}).as_object().cloned().unwrap()
        );
        assert_eq!(
            json_object(b"[1]").unwrap_err(),
            "invalid type: sequence, expected a map"
        );
        assert_eq!(
            json_object(b"\"x\"").unwrap_err(),
            "invalid type: string \"x\", expected a map"
        );
        assert_eq!(
            json_object(b"").unwrap_err(),
            "EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(json_object(b"\xff").unwrap_err(), "invalid UTF-8 payload");
    }
}
