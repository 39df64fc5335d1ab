//! Request bodies of the entity routes (spec/twin.md §5.1, §5.5–§5.7): the 1 MiB limit, the POST
//! content type, and the JSON parsers whose error messages are part of the API.
//!
//! The limit is enforced while reading, not only from `Content-Length`, so a chunked upload is cut
//! off at 1 MiB + 1 byte instead of being buffered whole. What the twin does with a parsed body
//! (key rules of a whole twin map, parent checks, …) is the store's business.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};
use warp::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use warp::http::HeaderMap;

use crate::topic::EntityTopicId;
use crate::twin::api::NewEntity;
use crate::twin::error::TwinError;
use crate::twin::payload::parse_new_entity;

/// The largest body accepted on an entity route (§5.1).
pub const LIMIT: usize = 1024 * 1024;

/// A request body, not yet read.
pub type Body = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// Why a body could not be taken in, before any JSON parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// 413, from `Content-Length` or while reading.
    #[error("Failed to buffer the request body: length limit exceeded")]
    TooLarge,
    /// 400: the connection failed or the chunked framing was broken.
    #[error("Failed to buffer the request body: {0}")]
    Read(String),
    /// 415, POST only.
    #[error("Expected request with `Content-Type: application/json`")]
    NotJson,
}

/// Reads the whole body, refusing it as soon as it is known to exceed [`LIMIT`].
pub async fn read(headers: &HeaderMap, mut body: Body) -> Result<Bytes, BodyError> {
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > LIMIT as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if buf.len() + chunk.len() > LIMIT {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// POST needs `application/json`, parameters allowed (`; charset=utf-8`), case-insensitive.
pub fn require_json(headers: &HeaderMap) -> Result<(), BodyError> {
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    match essence {
        Some(m) if m.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(BodyError::NotJson),
    }
}

/// `POST /te/v1/entities`: syntax errors are 400, structure errors 422 (§5.5).
pub fn new_entity(bytes: &[u8]) -> Result<NewEntity, TwinError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| TwinError::BodySyntax(e.to_string()))?;
    parse_new_entity(value)
}

/// The PATCH body (§5.6). Unknown fields are refused by serde, whose message names the field and
/// its position; `null` means "not given". Topic ids are parsed afterwards so that an invalid one
/// gets the catalogue message, without a position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(rename = "@parent", default)]
    parent: Option<String>,
    #[serde(rename = "@health", default)]
    health: Option<String>,
}

/// `PATCH …/{id}`: the new `@parent` and `@health`, each `None` when not given.
pub fn patch(bytes: &[u8]) -> Result<(Option<EntityTopicId>, Option<EntityTopicId>), TwinError> {
    let body: PatchBody = serde_json::from_slice(bytes).map_err(bad_body)?;
    let parse = |s: Option<String>| s.map(|s| s.parse::<EntityTopicId>()).transpose();
    Ok((parse(body.parent)?, parse(body.health)?))
}

/// `PUT …/{id4}/twin`: a JSON object; its keys are checked by the store (§5.7 (i)).
pub fn twin_map(bytes: &[u8]) -> Result<Map<String, Value>, TwinError> {
    serde_json::from_slice(bytes).map_err(bad_body)
}

/// `PUT …/{id4}/twin/{key}`: any JSON value.
pub fn twin_value(bytes: &[u8]) -> Result<Value, TwinError> {
    serde_json::from_slice(bytes).map_err(bad_body)
}

fn bad_body(e: serde_json::Error) -> TwinError {
    TwinError::BadBody(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use warp::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn chunks(sizes: &[usize]) -> Body {
        let items: Vec<Result<Bytes, warp::Error>> = sizes
            .iter()
            .map(|&n| Ok(Bytes::from(vec![b' '; n])))
            .collect();
        Box::pin(stream::iter(items))
    }

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_is_read_whole() {
        let body = read(&HeaderMap::new(), chunks(&[LIMIT / 2, LIMIT / 2]))
            .await
            .unwrap();
        assert_eq!(body.len(), LIMIT);
    }

    #[tokio::test]
    async fn a_body_without_length_is_cut_off_one_byte_past_the_limit() {
        assert_eq!(
            read(&HeaderMap::new(), chunks(&[LIMIT, 1])).await,
            Err(BodyError::TooLarge)
        );
    }

    #[tokio::test]
    async fn an_announced_length_above_the_limit_is_refused_before_reading() {
        let h = headers(&[("content-length", "1048577")]);
        assert_eq!(read(&h, chunks(&[])).await, Err(BodyError::TooLarge));
    }

    #[test]
    fn post_accepts_json_with_parameters_and_any_case() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
        ] {
            assert_eq!(
                require_json(&headers(&[("content-type", ct)])),
                Ok(()),
                "{ct}"
            );
        }
    }

    #[test]
    fn post_refuses_other_or_missing_content_types() {
        for ct in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
        ] {
            assert_eq!(
                require_json(&headers(&[("content-type", ct)])),
                Err(BodyError::NotJson),
                "{ct}"
            );
        }
        assert_eq!(require_json(&HeaderMap::new()), Err(BodyError::NotJson));
        assert_eq!(
            BodyError::NotJson.to_string(),
            "Expected request with `Content-Type: application/json`"
        );
    }

    #[test]
    fn post_syntax_errors_carry_the_parser_detail() {
        assert_eq!(
            new_entity(b"{").unwrap_err().to_string(),
            "Failed to parse the request body as JSON: EOF while parsing an object at line 1 column 1"
        );
    }

    #[test]
    fn post_structure_errors_are_deserialization_errors() {
        let err = new_entity(br#"{"@type":"child-device"}"#).unwrap_err();
        assert!(matches!(err, TwinError::BodyStructure(_)), "{err:?}");
        assert!(
            err.to_string().contains("missing field `@topic-id`"),
            "{err}"
        );
    }

    #[test]
    fn patch_refuses_unknown_fields_naming_field_and_position() {
        assert_eq!(
            patch(br#"{"@type":"service"}"#).unwrap_err(),
            TwinError::BadBody(
                "unknown field `@type`, expected `@parent` or `@health` at line 1 column 8".into()
            )
        );
    }

    #[test]
    fn patch_reads_parent_and_health_with_null_as_not_given() {
        let (parent, health) = patch(br#"{"@parent":"device/a","@health":null}"#).unwrap();
        assert_eq!(parent.unwrap().as_str(), "device/a//");
        assert_eq!(health, None);
        assert_eq!(patch(b"{}").unwrap(), (None, None));
        assert_eq!(
            patch(br#"{"@parent":"a/b/c/d/e"}"#)
                .unwrap_err()
                .to_string(),
            "An entity topic identifier has at most 4 segments"
        );
    }

    #[test]
    fn a_twin_map_must_be_an_object() {
        assert_eq!(
            twin_map(b"true").unwrap_err(),
            TwinError::BadBody(
                "invalid type: boolean `true`, expected a map at line 1 column 4".into()
            )
        );
    }

    #[test]
    fn a_twin_value_must_be_exactly_one_json_value() {
        assert_eq!(
            twin_value(b"true true").unwrap_err().to_string(),
            "trailing characters at line 1 column 6"
        );
        assert_eq!(
            twin_value(b"").unwrap_err().to_string(),
            "EOF while parsing a value at line 1 column 0"
        );
        assert_eq!(twin_value(b" 5 ").unwrap(), Value::from(5));
    }
}
