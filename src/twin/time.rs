//! Timestamps of the twin (spec/twin.md §1, §3.2): parsed from `time` members, printed as
//! RFC 3339 UTC with three fractional digits (`2024-05-02T19:12:41.361Z`).
//!
//! A [`Timestamp`] is milliseconds since the Unix epoch, limited to years 0000–9999 so that every
//! value can be printed in RFC 3339.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The accepted range of unix seconds: `0000-01-01T00:00:00Z` to `9999-12-31T23:59:59Z`.
pub const MIN_UNIX_SECONDS: i64 = -62_167_219_200;
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

const EXPECTED: &str =
    "expected a date formatted as a unix timestamp (as an integer number of seconds) or an ISO-8601 string";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms.clamp(MIN_UNIX_SECONDS * 1000, MAX_UNIX_SECONDS * 1000 + 999))
    }

    /// Unix milliseconds.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Unix seconds as a float with millisecond precision (the health `time` of §8).
    pub fn unix_seconds_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Parses a `time` member (§3.2). The error is the message the spec gives for the value.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::Number(n) => {
                if let Some(secs) = n.as_i64() {
                    check_range_int(secs)?;
                    Ok(Timestamp(secs * 1000))
                } else if let Some(secs) = n.as_u64() {
                    Err(out_of_range(&secs.to_string()))
                } else {
                    let secs = n.as_f64().unwrap_or(f64::NAN);
                    if !secs.is_finite()
                        || secs < MIN_UNIX_SECONDS as f64
                        || secs >= (MAX_UNIX_SECONDS + 1) as f64
                    {
                        return Err(out_of_range(&n.to_string()));
                    }
                    let ms = (secs * 1000.0).round() as i64;
                    Ok(Timestamp::from_millis(ms))
                }
            }
            Value::String(s) => Self::parse_rfc3339(s),
            Value::Null => Err(format!("invalid type: null, {EXPECTED}")),
            Value::Bool(b) => Err(format!("invalid type: boolean `{b}`, {EXPECTED}")),
            Value::Array(_) => Err(format!("invalid type: sequence, {EXPECTED}")),
            Value::Object(_) => Err(format!("invalid type: map, {EXPECTED}")),
        }
    }

    /// Parses RFC 3339 with `Z` or an offset, rounding to the millisecond.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let parsed = DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("invalid value: string {s:?}, {EXPECTED}: {e}"))?;
        let utc = parsed.with_timezone(&Utc);
        let micros = utc.timestamp_micros();
        let ms = (micros as f64 / 1000.0).round() as i64;
        if !(MIN_UNIX_SECONDS * 1000..=MAX_UNIX_SECONDS * 1000 + 999).contains(&ms) {
            return Err(format!("invalid value: string {s:?}, {EXPECTED}"));
        }
        Ok(Timestamp(ms))
    }
}

fn check_range_int(secs: i64) -> Result<(), String> {
    if (MIN_UNIX_SECONDS..=MAX_UNIX_SECONDS).contains(&secs) {
        Ok(())
    } else {
        Err(out_of_range(&secs.to_string()))
    }
}

fn out_of_range(value: &str) -> String {
    format!(
        "Invalid unix timestamp: {value}; timestamp must be in the range {MIN_UNIX_SECONDS}..={MAX_UNIX_SECONDS}"
    )
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<String, String> {
        Timestamp::from_json(&v).map(|t| t.to_string())
    }

    #[test]
    fn time_formats_of_the_spec_table_parse_to_utc_milliseconds() {
        assert_eq!(
            parse(json!("2021-04-30T17:03:14.123+02:00")).unwrap(),
            "2021-04-30T15:03:14.123Z"
        );
        assert_eq!(
            parse(json!(1701949168)).unwrap(),
            "2023-12-07T11:39:28.000Z"
        );
        assert_eq!(
            parse(json!(1701949168.001)).unwrap(),
            "2023-12-07T11:39:28.001Z"
        );
        assert_eq!(
            parse(json!(-62167219200i64)).unwrap(),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            parse(json!(253402300799i64)).unwrap(),
            "9999-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn out_of_range_and_wrong_types_are_rejected_with_the_spec_messages() {
        assert_eq!(
            parse(json!(253402300800i64)).unwrap_err(),
            "Invalid unix timestamp: 253402300800; timestamp must be in the range -62167219200..=253402300799"
        );
        assert_eq!(
            parse(Value::Null).unwrap_err(),
            "invalid type: null, expected a date formatted as a unix timestamp (as an integer number of seconds) or an ISO-8601 string"
        );
        for bad in [
            json!("yesterday"),
            json!("2021-04-30T17:03:14"),
            json!(true),
            json!({}),
            json!(1e300),
            json!(u64::MAX),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_round_trip_through_serde() {
        let t = Timestamp::parse_rfc3339("2024-05-02T19:12:41.361Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2024-05-02T19:12:41.361Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
