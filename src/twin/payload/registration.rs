//! Registration messages (spec/twin.md §4.1, §4.2) and the body of `POST /te/v1/entities`
//! (§5.5): the `@` fields, the ignored `@` keys and the inline twin data.
//!
//! Only the message itself is checked here: its structure and its inline keys. Parent
//! resolution, the entity rules of §4.3–§4.6 and the no-op comparison belong to `store`.
//! Structure errors use serde's wording, as thin-edge.io's derived deserializer does.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::{invalid_type, is_valid_key, utf8};
use crate::topic::EntityTopicId;
use crate::twin::api::NewEntity;
use crate::twin::error::TwinError;
use crate::twin::model::{EntityType, Registration};

const ENTITY_TYPES: &[&str] = &["device", "child-device", "service"];

/// Why a registration was refused. Structure comes first: an inline key is only checked once the
/// `@` fields are valid (§5.5: 422 before 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationError {
    /// Wrong type, missing or invalid `@` field; the serde-like detail.
    Structure(String),
    /// An inline twin key breaking §3.3.
    InvalidTwinKey(String),
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrationError::Structure(detail) => f.write_str(detail),
            RegistrationError::InvalidTwinKey(key) => {
                fmt::Display::fmt(&TwinError::InvalidTwinKey(key.clone()), f)
            }
        }
    }
}

impl std::error::Error for RegistrationError {}

impl From<RegistrationError> for TwinError {
    /// The HTTP form (§5.5): structure → 422 body error, inline key → 400.
    fn from(e: RegistrationError) -> TwinError {
        match e {
            RegistrationError::Structure(detail) => TwinError::BodyStructure(detail),
            RegistrationError::InvalidTwinKey(key) => TwinError::InvalidTwinKey(key),
        }
    }
}

/// A registration message received over MQTT (§4.1); the payload is non-empty (an empty one
/// deregisters). The error is the reason to report on `<root>/errors` (§4.2).
pub fn parse_registration(payload: &[u8]) -> Result<Registration, String> {
    parse_registration_value(registration_json(payload)?).map_err(|e| e.to_string())
}

/// The JSON value of a registration payload, before its structure is checked: the store keeps
/// it as the last accepted payload (§4.5).
pub fn registration_json(payload: &[u8]) -> Result<Value, String> {
    serde_json::from_str(utf8(payload)?).map_err(|e| e.to_string())
}

/// A registration from an already-parsed JSON value, which must be an object. Every `@` key other
/// than `@type`, `@parent`, `@id` and `@health` (`@topic-id` included) is listed as ignored.
pub fn parse_registration_value(value: Value) -> Result<Registration, RegistrationError> {
    let members = match value {
        Value::Object(members) => members,
        other => return Err(RegistrationError::Structure(invalid_type(&other, "a map"))),
    };
    let (mut etype, mut parent, mut external_id, mut health) = (None, None, None, None);
    let mut inline = BTreeMap::new();
    let mut ignored = Vec::new();
    for (key, value) in members {
        match key.as_str() {
            "@type" => etype = Some(entity_type(&value)?),
            "@parent" => parent = optional_topic_id(&value)?,
            "@id" => external_id = optional_string(value)?,
            "@health" => health = optional_topic_id(&value)?,
            _ if key.starts_with('@') => ignored.push(key),
            _ => {
                inline.insert(key, value);
            }
        }
    }
    let etype = etype.ok_or_else(|| structure("missing field `@type`"))?;
    if let Some(key) = inline.keys().find(|k| !is_valid_key(k)) {
        return Err(RegistrationError::InvalidTwinKey(key.clone()));
    }
    Ok(Registration {
        etype,
        parent,
        external_id,
        health,
        inline,
        ignored,
    })
}

/// The body of `POST /te/v1/entities`, already valid JSON: a registration plus `@topic-id`.
/// Structure problems are 422 [`TwinError::BodyStructure`], an invalid inline key is 400
/// [`TwinError::InvalidTwinKey`] (§5.5).
pub fn parse_new_entity(body: Value) -> Result<NewEntity, TwinError> {
    let mut members = match body {
        Value::Object(members) => members,
        other => return Err(TwinError::BodyStructure(invalid_type(&other, "a map"))),
    };
    let id = match members.remove("@topic-id") {
        None => return Err(TwinError::BodyStructure("missing field `@topic-id`".into())),
        Some(value) => topic_id(&value).map_err(TwinError::from)?,
    };
    let registration = parse_registration_value(Value::Object(members))?;
    Ok(NewEntity { id, registration })
}

fn entity_type(value: &Value) -> Result<EntityType, RegistrationError> {
    match value {
        Value::String(s) => EntityType::from_filter(s).ok_or_else(|| {
            structure(<serde_json::Error as serde::de::Error>::unknown_variant(
                s,
                ENTITY_TYPES,
            ))
        }),
        other => Err(RegistrationError::Structure(invalid_type(
            other, "a string",
        ))),
    }
}

/// `null` counts as absent, as for serde's `Option` fields.
fn optional_string(value: Value) -> Result<Option<String>, RegistrationError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(RegistrationError::Structure(invalid_type(
            &other, "a string",
        ))),
    }
}

fn optional_topic_id(value: &Value) -> Result<Option<EntityTopicId>, RegistrationError> {
    match value {
        Value::Null => Ok(None),
        other => topic_id(other).map(Some),
    }
}

/// A topic-id string (§2.2); the error is the topic-id message itself.
fn topic_id(value: &Value) -> Result<EntityTopicId, RegistrationError> {
    match value {
        Value::String(s) => s.parse().map_err(structure),
        other => Err(RegistrationError::Structure(invalid_type(
            other, "a string",
        ))),
    }
}

fn structure(e: impl fmt::Display) -> RegistrationError {
    RegistrationError::Structure(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(s: &str) -> EntityTopicId {
        s.parse().unwrap()
    }

    fn reason(payload: &str) -> String {
        parse_registration(payload.as_bytes()).unwrap_err()
    }

    /// §10 #4.
    #[test]
    fn a_child_device_registration_carries_its_external_id_and_inline_twin_data() {
        let r = parse_registration(
            br#"{"@type":"child-device","@id":"c1","name":"c1","maintenance_mode":true,"maintenance_window":5}"#,
        )
        .unwrap();
        assert_eq!(r.etype, EntityType::ChildDevice);
        assert_eq!(r.external_id.as_deref(), Some("c1"));
        assert_eq!(r.parent, None);
        assert_eq!(r.health, None);
        assert_eq!(
            r.inline,
            BTreeMap::from([
                ("maintenance_mode".to_string(), json!(true)),
                ("maintenance_window".to_string(), json!(5)),
                ("name".to_string(), json!("c1")),
            ])
        );
        assert!(r.ignored.is_empty());
    }

    #[test]
    fn the_three_entity_types_are_recognised_case_sensitively() {
        for (text, etype) in [
            ("device", EntityType::Device),
            ("child-device", EntityType::ChildDevice),
            ("service", EntityType::Service),
        ] {
            let payload = format!(r#"{{"@type":"{text}"}}"#);
            assert_eq!(parse_registration(payload.as_bytes()).unwrap().etype, etype);
        }
        assert_eq!(
            reason(r#"{"@type":"Device"}"#),
            "unknown variant `Device`, expected one of `device`, `child-device`, `service`"
        );
        assert_eq!(
            reason(r#"{"@type":"main"}"#),
            "unknown variant `main`, expected one of `device`, `child-device`, `service`"
        );
    }

    #[test]
    fn a_missing_or_non_string_type_is_refused_in_serde_wording() {
        assert_eq!(reason(r#"{"name":"x"}"#), "missing field `@type`");
        assert_eq!(reason("{}"), "missing field `@type`");
        assert_eq!(
            reason(r#"{"@type":5}"#),
            "invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            reason(r#"{"@type":null}"#),
            "invalid type: null, expected a string"
        );
    }

    #[test]
    fn the_external_id_must_be_a_string_and_null_means_absent() {
        assert_eq!(
            reason(r#"{"@type":"child-device","@id":55}"#),
            "invalid type: integer `55`, expected a string"
        );
        assert_eq!(
            reason(r#"{"@type":"child-device","@id":true}"#),
            "invalid type: boolean `true`, expected a string"
        );
        assert_eq!(
            reason(r#"{"@type":"child-device","@id":["a"]}"#),
            "invalid type: sequence, expected a string"
        );
        let r = parse_registration(br#"{"@type":"child-device","@id":null}"#).unwrap();
        assert_eq!(r.external_id, None);
    }

    #[test]
    fn parent_and_health_are_normalised_topic_ids() {
        let r = parse_registration(
            br#"{"@type":"child-device","@parent":"device/c","@health":"device/c/service/s"}"#,
        )
        .unwrap();
        assert_eq!(r.parent, Some(id("device/c//")));
        assert_eq!(r.health, Some(id("device/c/service/s")));
        let r =
            parse_registration(br#"{"@type":"service","@parent":null,"@health":null}"#).unwrap();
        assert_eq!((r.parent, r.health), (None, None));
    }

    #[test]
    fn an_invalid_parent_or_health_is_refused_with_the_topic_id_message() {
        assert_eq!(
            reason(r#"{"@type":"child-device","@parent":"a/b/c/d/e"}"#),
            "An entity topic identifier has at most 4 segments"
        );
        assert_eq!(
            reason(r#"{"@type":"child-device","@health":"device/+//"}"#),
            "An entity topic identifier must be a valid MQTT topic"
        );
        assert_eq!(
            reason(r#"{"@type":"child-device","@parent":"///"}"#),
            "An entity topic identifier must have at least one non-empty segment"
        );
        assert_eq!(
            reason(r#"{"@type":"child-device","@parent":1}"#),
            "invalid type: integer `1`, expected a string"
        );
    }

    /// §10 #36, and `@topic-id` over MQTT (§4.1 (j)).
    #[test]
    fn unknown_at_keys_are_ignored_and_never_become_twin_keys() {
        let r = parse_registration(
            br#"{"@type":"child-device","@custom":1,"@topic-id":"device/x//","name":"n"}"#,
        )
        .unwrap();
        assert_eq!(r.ignored, ["@custom", "@topic-id"]);
        assert_eq!(r.inline, BTreeMap::from([("name".to_string(), json!("n"))]));
    }

    #[test]
    fn inline_nulls_are_kept_to_delete_their_key() {
        let r = parse_registration(br#"{"@type":"device","gone":null,"kept":{"a":[1]}}"#).unwrap();
        assert_eq!(r.inline.get("gone"), Some(&Value::Null));
        assert_eq!(r.inline.get("kept"), Some(&json!({"a":[1]})));
    }

    #[test]
    fn an_invalid_inline_key_is_refused_after_the_structure_is_checked() {
        let err = parse_registration_value(json!({"@type":"device","b/c":1,"":2})).unwrap_err();
        assert_eq!(err, RegistrationError::InvalidTwinKey(String::new()));
        assert_eq!(
            reason(r#"{"@type":"device","a/b":1}"#),
            "Invalid twin key: 'a/b'. Keys that are empty, containing '/' or starting with '@' are not allowed"
        );
        assert_eq!(reason(r#"{"a/b":1}"#), "missing field `@type`");
    }

    #[test]
    fn payloads_that_are_not_utf8_json_objects_are_refused() {
        assert_eq!(
            parse_registration(b"{\"@type\":\"device\",\"n\":\"\xff\"}").unwrap_err(),
            "invalid UTF-8 payload"
        );
        assert_eq!(reason("x"), "expected value at line 1 column 1");
        assert_eq!(
            reason(r#"{"@type":"device"} {}"#),
            "trailing characters at line 1 column 20"
        );
        assert_eq!(reason("[1]"), "invalid type: sequence, expected a map");
        assert_eq!(
            reason(r#""x""#),
            "invalid type: string \"x\", expected a map"
        );
        assert_eq!(reason("null"), "invalid type: null, expected a map");
    }

    /// §10 #40 and #11.
    #[test]
    fn a_posted_body_names_its_topic_id_and_carries_a_registration() {
        let e =
            parse_new_entity(json!({"@topic-id":"device/c7//","@type":"child-device","name":"c7"}))
                .unwrap();
        assert_eq!(e.id, id("device/c7//"));
        assert_eq!(e.registration.etype, EntityType::ChildDevice);
        assert_eq!(
            e.registration.inline,
            BTreeMap::from([("name".to_string(), json!("c7"))])
        );
        assert!(e.registration.ignored.is_empty());
        let e =
            parse_new_entity(json!({"@topic-id":"device/ghost2/service/svc","@type":"service"}))
                .unwrap();
        assert_eq!(e.id, id("device/ghost2/service/svc"));
        assert_eq!(e.registration.parent, None);
        let e = parse_new_entity(json!({"@topic-id":"device/c8","@type":"child-device","@x":1}))
            .unwrap();
        assert_eq!(e.id, id("device/c8//"));
        assert_eq!(e.registration.ignored, ["@x"]);
    }

    #[test]
    fn a_posted_body_of_the_wrong_structure_is_a_body_structure_error() {
        let err = |body: Value| parse_new_entity(body).unwrap_err();
        assert_eq!(
            err(json!({"type":"child-device"})).to_string(),
            "Failed to deserialize the JSON body into the target type: missing field `@topic-id`"
        );
        assert_eq!(
            err(json!([1])),
            TwinError::BodyStructure("invalid type: sequence, expected a map".into())
        );
        assert_eq!(
            err(json!({"@topic-id":"a/b/c/d/e","@type":"service"})),
            TwinError::BodyStructure("An entity topic identifier has at most 4 segments".into())
        );
        assert_eq!(
            err(json!({"@topic-id":7,"@type":"service"})),
            TwinError::BodyStructure("invalid type: integer `7`, expected a string".into())
        );
        assert_eq!(
            err(json!({"@topic-id":"device/c//"})),
            TwinError::BodyStructure("missing field `@type`".into())
        );
        assert_eq!(
            err(json!({"@topic-id":"device/c//","@type":"thing"})),
            TwinError::BodyStructure(
                "unknown variant `thing`, expected one of `device`, `child-device`, `service`"
                    .into()
            )
        );
        assert_eq!(
            err(json!({"@topic-id":"device/c//","@type":"child-device","@id":55})),
            TwinError::BodyStructure("invalid type: integer `55`, expected a string".into())
        );
        assert_eq!(
            err(json!({"@topic-id":"device/c//","@type":"child-device","@parent":"device/#"})),
            TwinError::BodyStructure(
                "An entity topic identifier must be a valid MQTT topic".into()
            )
        );
    }

    #[test]
    fn a_posted_body_with_an_invalid_inline_key_is_an_invalid_twin_key_error() {
        assert_eq!(
            parse_new_entity(json!({"@topic-id":"device/c//","@type":"child-device","a/b":1}))
                .unwrap_err(),
            TwinError::InvalidTwinKey("a/b".into())
        );
    }
}
