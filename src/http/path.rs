//! What a request addresses: the path after `/te/v1/entities/` (spec/twin.md §5.2) and the
//! listing query (§5.4).
//!
//! Pure functions from raw request-line text to typed values; no I/O, no HTTP types. The path is
//! parsed by hand rather than with warp's path filters because warp neither percent-decodes
//! segments nor matches empty ones, and both matter here (`device/child01//`). Which methods a
//! resource accepts, and what the twin does with it, is `entities`' business.

use percent_encoding::percent_decode_str;

use crate::topic::{EntityTopicId, TopicIdError};
use crate::twin::api::Filter;
use crate::twin::error::TwinError;
use crate::twin::payload::DEFAULT_MEASUREMENT_TYPE;
use crate::twin::time::Timestamp;

/// A resource under `/te/v1/entities/` (§5.3).
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `{id}`: 2–4 segments, padded to four.
    Entity(EntityTopicId),
    /// `{id4}/twin`.
    Twin(EntityTopicId),
    /// `{id4}/twin/{key}`, the key already valid.
    TwinKey(EntityTopicId, String),
    /// `{id4}/config`.
    Config(EntityTopicId),
    /// `{id4}/config/{key}`.
    ConfigKey(EntityTopicId, String),
    /// `{id4}/state` (§6.1).
    State(EntityTopicId),
    /// `{id4}/m/{type}`: the history of a measurement type (issue #7).
    History(EntityTopicId, String),
}

/// Why a request target (path and query) addresses no resource.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PathError {
    /// 404 `Not Found`: one segment, or an empty channel segment.
    #[error("Not Found")]
    NotFound,
    /// 404: a channel the HTTP API does not serve, named by its first segment.
    #[error("Actions on channel: {0} are not supported")]
    UnsupportedChannel(String),
    /// 400: a query parameter with a value it cannot have.
    #[error("Invalid value of {name}: {reason}")]
    Parameter { name: &'static str, reason: String },
    /// 400: a query string that is not UTF-8 once decoded, naming the raw text.
    #[error("Failed to deserialize query string: invalid UTF-8 in `{0}`")]
    Query(String),
    /// 400: an invalid topic id, twin key or listing filter.
    #[error(transparent)]
    Invalid(#[from] TwinError),
}

impl From<TopicIdError> for PathError {
    fn from(e: TopicIdError) -> Self {
        PathError::Invalid(e.into())
    }
}

/// Parses the raw (still percent-encoded) path after `/te/v1/entities/`.
///
/// Every segment is decoded before it is checked, so `%2B` is a `+` and is refused like one. A
/// segment that decodes to invalid UTF-8 is an invalid topic id, whatever its position.
pub fn parse(raw: &str) -> Result<Resource, PathError> {
    if !raw.contains('/') {
        return Err(PathError::NotFound);
    }
    let segments = raw
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TopicIdError::InvalidMqttTopic)?;
    let segments: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();

    if segments.len() <= 4 {
        let mut id = [""; 4];
        id[..segments.len()].copy_from_slice(&segments);
        return Ok(Resource::Entity(EntityTopicId::from_segments(id)?));
    }
    // Channel paths need all four id segments: `device/x/twin` is the entity `device/x/twin/`.
    let id = EntityTopicId::from_segments([segments[0], segments[1], segments[2], segments[3]])?;
    Ok(match (segments[4], &segments[5..]) {
        ("", _) => return Err(PathError::NotFound),
        ("twin", []) => Resource::Twin(id),
        ("twin", key) => {
            // `twin/a/b` names the key `a/b`, which the key rule then refuses.
            let key = key.join("/");
            check_twin_key(&key)?;
            Resource::TwinKey(id, key)
        }
        ("config", []) => Resource::Config(id),
        ("config", [key]) => Resource::ConfigKey(id, key.to_string()),
        ("state", []) => Resource::State(id),
        // `m/` holds the measurements published without a type (§3.2).
        ("m", [""]) => Resource::History(id, DEFAULT_MEASUREMENT_TYPE.to_string()),
        ("m", [mtype]) => Resource::History(id, mtype.to_string()),
        (channel, _) => return Err(PathError::UnsupportedChannel(channel.to_string())),
    })
}

/// The twin key rule (§3.3), shared with the MQTT side.
pub fn check_twin_key(key: &str) -> Result<(), TwinError> {
    crate::twin::payload::validate_twin_key(key)
}

/// Reads the `root`, `parent` and `type` parameters of the listing routes (§5.4). Unknown
/// parameters are ignored; a repeated one takes its last value.
pub fn filter_query(raw: Option<&str>) -> Result<Filter, PathError> {
    let (mut root, mut parent, mut etype) = (None, None, None);
    for pair in query_pairs(raw) {
        let (name, value) = pair?;
        let slot = match name.as_str() {
            "root" => &mut root,
            "parent" => &mut parent,
            "type" => &mut etype,
            _ => continue,
        };
        *slot = Some(value);
    }
    Ok(Filter::from_query(
        root.as_deref(),
        parent.as_deref(),
        etype.as_deref(),
    )?)
}

/// The parameters of a query string in order, form-decoded (`+` is a space); a parameter
/// without `=` has an empty value.
pub(super) fn query_pairs(
    raw: Option<&str>,
) -> impl Iterator<Item = Result<(String, String), PathError>> + '_ {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((form_decode(name)?, form_decode(value)?))
        })
}

/// Reads the `since` and `series` parameters of the history route (issue #7): `since` is an
/// RFC 3339 time or unix seconds, as a measurement's `time` may be.
pub fn history_query(raw: Option<&str>) -> Result<(Option<Timestamp>, Option<String>), PathError> {
    let (mut since, mut series) = (None, None);
    for pair in query_pairs(raw) {
        let (name, value) = pair?;
        match name.as_str() {
            "since" if value.is_empty() => since = None,
            "since" => {
                let json = match value.parse::<i64>() {
                    Ok(secs) => serde_json::Value::from(secs),
                    Err(_) => serde_json::Value::from(value.as_str()),
                };
                let time = Timestamp::from_json(&json).map_err(|reason| PathError::Parameter {
                    name: "since",
                    reason,
                })?;
                since = Some(time);
            }
            "series" => series = Some(value).filter(|s| !s.is_empty()),
            _ => {}
        }
    }
    Ok((since, series))
}

/// Form decoding: `+` is a space, then percent-decoding.
pub(super) fn form_decode(raw: &str) -> Result<String, PathError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| PathError::Query(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::model::EntityType;

    fn id(s: &str) -> EntityTopicId {
        s.parse().unwrap()
    }

    fn message(raw: &str) -> String {
        parse(raw).unwrap_err().to_string()
    }

    #[test]
    fn a_single_segment_is_not_found() {
        assert_eq!(parse("device"), Err(PathError::NotFound));
        assert_eq!(parse(""), Err(PathError::NotFound));
        assert_eq!(parse("%FF"), Err(PathError::NotFound));
        assert_eq!(message("device"), "Not Found");
    }

    #[test]
    fn two_to_four_segments_address_an_entity_padded_to_four() {
        for raw in ["device/child01", "device/child01/", "device/child01//"] {
            assert_eq!(
                parse(raw),
                Ok(Resource::Entity(id("device/child01//"))),
                "{raw}"
            );
        }
        assert_eq!(
            parse("device/main/service/nodered"),
            Ok(Resource::Entity(id("device/main/service/nodered")))
        );
    }

    #[test]
    fn a_channel_name_inside_the_first_four_segments_is_part_of_the_id() {
        assert_eq!(
            parse("device/x/twin"),
            Ok(Resource::Entity(id("device/x/twin/")))
        );
    }

    #[test]
    fn twin_paths_address_the_map_or_one_key() {
        assert_eq!(
            parse("device/child01///twin"),
            Ok(Resource::Twin(id("device/child01//")))
        );
        assert_eq!(
            parse("device/child01///twin/name"),
            Ok(Resource::TwinKey(id("device/child01//"), "name".into()))
        );
    }

    #[test]
    fn nested_empty_and_at_twin_keys_are_invalid() {
        let rule = "Keys that are empty, containing '/' or starting with '@' are not allowed";
        assert_eq!(
            message("device/child01///twin/a/b"),
            format!("Invalid twin key: 'a/b'. {rule}")
        );
        assert_eq!(
            message("device/child01///twin/"),
            format!("Invalid twin key: ''. {rule}")
        );
        assert_eq!(
            message("device/child01///twin/@x"),
            format!("Invalid twin key: '@x'. {rule}")
        );
        assert_eq!(
            message("device/child01///twin/a%2Fb"),
            format!("Invalid twin key: 'a/b'. {rule}")
        );
    }

    #[test]
    fn config_paths_address_the_document_or_one_value() {
        assert_eq!(
            parse("device/child01///config"),
            Ok(Resource::Config(id("device/child01//")))
        );
        assert_eq!(
            parse("device/child01///config/port"),
            Ok(Resource::ConfigKey(id("device/child01//"), "port".into()))
        );
    }

    #[test]
    fn the_state_path_addresses_the_state_document() {
        assert_eq!(
            parse("device/child01///state"),
            Ok(Resource::State(id("device/child01//")))
        );
    }

    #[test]
    fn an_empty_fifth_segment_is_not_found() {
        assert_eq!(parse("device/child01///"), Err(PathError::NotFound));
        assert_eq!(parse("device/child01////twin"), Err(PathError::NotFound));
    }

    #[test]
    fn measurement_history_paths_and_queries() {
        assert_eq!(
            parse("device/c1///m/environment"),
            Ok(Resource::History(id("device/c1//"), "environment".into()))
        );
        assert_eq!(
            parse("device/c1///m/"),
            Ok(Resource::History(
                id("device/c1//"),
                "ThinEdgeMeasurement".into()
            ))
        );
        assert_eq!(
            parse("device/c1///m/a%20b"),
            Ok(Resource::History(id("device/c1//"), "a b".into()))
        );
        assert_eq!(history_query(None), Ok((None, None)));
        let (since, series) =
            history_query(Some("since=2026-11-22T12%3A00%3A00Z&series=temperature")).unwrap();
        assert_eq!(since.map(|t| t.as_millis()), Some(1_795_348_800_000));
        assert_eq!(series.as_deref(), Some("temperature"));
        let (since, _) = history_query(Some("since=1795348800")).unwrap();
        assert_eq!(since.map(|t| t.as_millis()), Some(1_795_348_800_000));
        assert_eq!(history_query(Some("since=&series=")), Ok((None, None)));
        assert!(history_query(Some("since=yesterday"))
            .unwrap_err()
            .to_string()
            .starts_with("Invalid value of since: "));
    }

    #[test]
    fn other_channels_and_extra_levels_are_not_supported() {
        for (raw, channel) in [
            ("device/child01///cmd/restart", "cmd"),
            ("a/b/c/d/e", "e"),
            ("device/child01///state/x", "state"),
            ("device/child01///config/a/b", "config"),
            ("device/child01///m/temp/meta", "m"),
            ("device/child01///e/login", "e"),
        ] {
            assert_eq!(
                message(raw),
                format!("Actions on channel: {channel} are not supported"),
                "{raw}"
            );
        }
    }

    #[test]
    fn invalid_topic_ids_are_refused_with_their_topic_message() {
        let mqtt = "An entity topic identifier must be a valid MQTT topic";
        assert_eq!(message("device/+//"), mqtt);
        assert_eq!(message("device/#"), mqtt);
        assert_eq!(message("device/+///twin"), mqtt);
        assert_eq!(
            message("//"),
            "An entity topic identifier must have at least one non-empty segment"
        );
    }

    #[test]
    fn segments_are_percent_decoded_before_they_are_checked() {
        assert_eq!(
            parse("device/child%20one"),
            Ok(Resource::Entity(id("device/child one//")))
        );
        let mqtt = "An entity topic identifier must be a valid MQTT topic";
        assert_eq!(message("device%2Fx/y"), mqtt);
        assert_eq!(message("device/%2B"), mqtt);
        assert_eq!(message("device/%00"), mqtt);
        assert_eq!(message("device/%FF"), mqtt);
        assert_eq!(
            parse("device/c///tw%69n/k%C3%A9"),
            Ok(Resource::TwinKey(id("device/c//"), "ké".into()))
        );
    }

    #[test]
    fn listing_filters_are_read_from_the_query_string() {
        let filter = filter_query(Some("root=device%2Fc&type=child-device&foo=1&x")).unwrap();
        assert_eq!(filter.root, Some(id("device/c//")));
        assert_eq!(filter.etype, Some(EntityType::ChildDevice));
        let filter = filter_query(Some("parent=device/my+box//")).unwrap();
        assert_eq!(filter.parent, Some(id("device/my box//")));
        assert_eq!(filter_query(None), Ok(Filter::default()));
        assert_eq!(
            filter_query(Some("root=&parent=&type=")),
            Ok(Filter::default())
        );
    }

    #[test]
    fn listing_filter_errors_are_the_twin_messages() {
        assert_eq!(
            filter_query(Some("root=device/a//&parent=device/b//")),
            Err(PathError::Invalid(TwinError::RootAndParent))
        );
        assert_eq!(
            filter_query(Some("type=main")),
            Err(PathError::Invalid(TwinError::InvalidEntityType(
                "main".into()
            )))
        );
    }

    #[test]
    fn a_query_that_is_not_utf8_is_refused() {
        assert_eq!(
            filter_query(Some("root=%FF")).unwrap_err().to_string(),
            "Failed to deserialize query string: invalid UTF-8 in `%FF`"
        );
    }
}
