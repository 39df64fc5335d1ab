//! The retained documents of an entity (spec/twin.md §3.3): twin fragments (`twin/<key>`),
//! the configuration document (`config`), capabilities (`cmd/<op>`) and command instances
//! (`cmd/<op>/<id>`).
//!
//! The twin key in a `twin/<key>` topic is checked by the caller with
//! [`validate_twin_key`](super::validate_twin_key); empty payloads that withdraw a capability or
//! clear a command are recognised by the store before these parsers run.

use serde_json::{Map, Value};

use super::{check_string_member, is_valid_key, json_object, utf8};
use crate::twin::error::TwinError;

/// What a `config` message does.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigPayload {
    /// Empty payload: the stored document is cleared.
    Clear,
    /// The new document, keys valid.
    Document(Map<String, Value>),
    /// Not a JSON object: ignored and counted, not reported (§3.3).
    Ignored,
}

/// A `twin/<key>` payload: `None` deletes the fragment (empty payload or `null`).
pub fn parse_twin_value(payload: &[u8]) -> Result<Option<Value>, String> {
    if payload.is_empty() {
        return Ok(None);
    }
    match serde_json::from_str(utf8(payload)?).map_err(|e| e.to_string())? {
        Value::Null => Ok(None),
        value => Ok(Some(value)),
    }
}

/// A `config` payload. A bad key rejects the whole document, naming the first in byte order.
pub fn parse_config(payload: &[u8]) -> Result<ConfigPayload, TwinError> {
    if payload.is_empty() {
        return Ok(ConfigPayload::Clear);
    }
    let Ok(Value::Object(document)) = serde_json::from_slice::<Value>(payload) else {
        return Ok(ConfigPayload::Ignored);
    };
    match document.keys().find(|k| !is_valid_key(k)) {
        Some(key) => Err(TwinError::InvalidConfigKey(key.clone())),
        None => Ok(ConfigPayload::Document(document)),
    }
}

/// A non-empty `cmd/<op>` payload: any JSON object, stored verbatim.
pub fn parse_capability(payload: &[u8]) -> Result<Map<String, Value>, String> {
    json_object(payload)
}

/// A non-empty `cmd/<op>/<id>` payload. A missing `status` means `init` and is inserted (§3.3);
/// every other member is kept.
pub fn parse_command(payload: &[u8]) -> Result<Map<String, Value>, String> {
    let mut command = json_object(payload)?;
    check_string_member(&command, "status")?;
    command
        .entry("status")
        .or_insert_with(|| Value::String("init".into()));
    Ok(command)
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
    fn a_twin_fragment_is_any_json_value_and_empty_or_null_deletes_it() {
        assert_eq!(parse_twin_value(b""), Ok(None));
        assert_eq!(parse_twin_value(b"null"), Ok(None));
        assert_eq!(parse_twin_value(b" null "), Ok(None));
        for (text, value) in [
            ("9", json!(9)),
            ("\"x\"", json!("x")),
            ("true", json!(true)),
            ("[1,{}]", json!([1, {}])),
            ("{\"a\":{\"b\":null}}", json!({"a":{"b":null}})),
        ] {
            assert_eq!(parse_twin_value(text.as_bytes()), Ok(Some(value)), "{text}");
        }
    }

    #[test]
    fn a_twin_fragment_that_is_not_json_is_rejected() {
        assert_eq!(
            parse_twin_value(b"true true"),
            Err("trailing characters at line 1 column 6".into())
        );
        assert_eq!(
            parse_twin_value(b"up"),
            Err("expected value at line 1 column 1".into())
        );
        assert_eq!(
            parse_twin_value(b"\"\xff\""),
            Err("invalid UTF-8 payload".into())
        );
    }

    #[test]
    fn a_config_object_replaces_the_document_and_an_empty_payload_clears_it() {
        assert_eq!(parse_config(b""), Ok(ConfigPayload::Clear));
        assert_eq!(
            parse_config(br#"{"port":1883,"host":"x","opts":{"a/b":1}}"#),
            Ok(ConfigPayload::Document(object(
                json!({"host":"x","opts":{"a/b":1},"port":1883})
            )))
        );
        assert_eq!(parse_config(b"{}"), Ok(ConfigPayload::Document(Map::new())));
    }

    #[test]
    fn a_bad_config_key_rejects_the_document_naming_the_first_in_byte_order() {
        assert_eq!(
            parse_config(br#"{"ok":1,"b/c":1,"@a":2}"#),
            Err(TwinError::InvalidConfigKey("@a".into()))
        );
        assert_eq!(
            parse_config(br#"{"":1}"#).unwrap_err().to_string(),
            "Invalid config key: ''. Keys that are empty, containing '/' or starting with '@' are not allowed"
        );
    }

    /// §10 #35, second message, and the other examples of §3.3.
    #[test]
    fn a_config_payload_that_is_not_a_json_object_is_ignored() {
        for payload in [
            &b"\"str\""[..],
            b"[1]",
            b"true",
            b"2",
            b"null",
            b"not json",
            b"{\"a\":\"\xff\"}",
        ] {
            assert_eq!(parse_config(payload), Ok(ConfigPayload::Ignored));
        }
    }

    #[test]
    fn a_capability_is_any_json_object_stored_verbatim() {
        for value in [
            json!({}),
            json!({"types":["apt"]}),
            json!({"description":"Restart","x":null}),
        ] {
            let text = value.to_string();
            assert_eq!(parse_capability(text.as_bytes()), Ok(object(value)));
        }
        assert_eq!(
            parse_capability(b"[\"apt\"]"),
            Err("invalid type: sequence, expected a map".into())
        );
        assert_eq!(
            parse_capability(b"{"),
            Err("EOF while parsing an object at line 1 column 1".into())
        );
    }

    /// §10 #35, first message.
    #[test]
    fn a_command_without_status_gets_init() {
        assert_eq!(
            parse_command(br#"{"foo":1}"#),
            Ok(object(json!({"foo":1,"status":"init"})))
        );
    }

    #[test]
    fn a_command_keeps_any_string_status_and_unknown_members() {
        for status in ["init", "executing", "failed", "download", "rollback", ""] {
            let payload = json!({"status":status,"reason":"x","logPath":"/tmp/l"});
            let text = payload.to_string();
            assert_eq!(parse_command(text.as_bytes()), Ok(object(payload)));
        }
    }

    #[test]
    fn a_command_that_is_not_an_object_or_has_a_non_string_status_is_rejected() {
        assert_eq!(
            parse_command(br#"{"status":3}"#),
            Err("invalid type: integer `3`, expected a string for \"status\"".into())
        );
        assert_eq!(
            parse_command(br#"{"status":null}"#),
            Err("invalid type: null, expected a string for \"status\"".into())
        );
        assert_eq!(
            parse_command(b"\"init\""),
            Err("invalid type: string \"init\", expected a map".into())
        );
        assert_eq!(
            parse_command(b"{\"status\":\"\xff\"}"),
            Err("invalid UTF-8 payload".into())
        );
    }
}
