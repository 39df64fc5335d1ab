//! Conditional requests (RFC 9110 §13) and single byte ranges (§14) against a stored file's
//! validators: its strong ETag and its Last-Modified time.
//!
//! Pure: the caller passes header values and the file's [`Validators`] (or `None` when there is no
//! file) and gets a decision. The order of evaluation is RFC 9110 §13.2.2: `If-Match`, else
//! `If-Unmodified-Since`; then `If-None-Match`, else `If-Modified-Since` (GET and HEAD only); then
//! `If-Range` for a `Range` request. Byte-range syntax is parsed by the `http-range-header` crate;
//! resolving it against the length (suffix ranges, clamping, satisfiability) is done here, because
//! that crate refuses a suffix longer than the file, which RFC 9110 says means the whole file.

use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_range_header::{EndPosition, StartPosition};

/// 9999-12-31T23:59:59Z, the last instant an HTTP date can name.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// What a stored file is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity tag, quoted: `"<hex>"`.
    pub etag: String,
    /// The modification time, truncated to whole seconds as HTTP dates are.
    pub last_modified: SystemTime,
}

/// The precondition headers of a request, as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub range: Option<&'a str>,
}

/// The outcome of the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Carry on with the method.
    Proceed,
    /// 304: the client's copy is current (GET and HEAD only).
    NotModified,
    /// 412.
    Failed,
}

/// The part of a file a GET answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// 200 with the whole file.
    Whole,
    /// 206 with these bytes.
    Part(RangeInclusive<u64>),
    /// 416.
    Unsatisfiable,
}

impl Validators {
    pub fn new(etag: String, modified: SystemTime) -> Validators {
        // HTTP dates end with the year 9999 (and httpdate panics after it).
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .min(LAST_HTTP_DATE);
        Validators {
            etag,
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    /// The `Last-Modified` header value.
    pub fn http_date(&self) -> String {
        httpdate::fmt_http_date(self.last_modified)
    }
}

/// Evaluates the preconditions of a request (`safe`: GET or HEAD) against the current file.
pub fn evaluate(c: &Conditions, file: Option<&Validators>, safe: bool) -> Outcome {
    if let Some(list) = c.if_match {
        if !matches_any(list, file, true) {
            return Outcome::Failed;
        }
    } else if let (Some(date), Some(v)) = (c.if_unmodified_since.and_then(date), file) {
        if v.last_modified > date {
            return Outcome::Failed;
        }
    }
    if let Some(list) = c.if_none_match {
        if matches_any(list, file, false) {
            return if safe {
                Outcome::NotModified
            } else {
                Outcome::Failed
            };
        }
    } else if let (true, Some(date), Some(v)) = (safe, c.if_modified_since.and_then(date), file) {
        if v.last_modified <= date {
            return Outcome::NotModified;
        }
    }
    Outcome::Proceed
}

/// The bytes a GET of a file of `len` bytes answers with, after the preconditions passed. A
/// `Range` that is malformed, not in bytes, or asks for several ranges is ignored (the whole file),
/// as RFC 9110 §14.2 allows; so is one whose `If-Range` does not match the file.
pub fn select(c: &Conditions, file: &Validators, len: u64) -> Selection {
    let Some(range) = c.range else {
        return Selection::Whole;
    };
    if let Some(if_range) = c.if_range {
        if !if_range_matches(if_range.trim(), file) {
            return Selection::Whole;
        }
    }
    let Ok(parsed) = http_range_header::parse_range_header(range.trim()) else {
        return Selection::Whole;
    };
    let [one] = parsed.ranges.as_slice() else {
        return Selection::Whole;
    };
    let (start, end) = match (&one.start, &one.end) {
        // `last < first` makes the whole field invalid (§14.1.1), not unsatisfiable.
        (StartPosition::Index(s), EndPosition::Index(e)) if e < s => return Selection::Whole,
        (StartPosition::Index(s), EndPosition::Index(e)) => (*s, (*e).min(len.saturating_sub(1))),
        (StartPosition::Index(s), EndPosition::LastByte) => (*s, len.saturating_sub(1)),
        (StartPosition::FromLast(n), _) => (len.saturating_sub(*n), len.saturating_sub(1)),
    };
    if len == 0 || start >= len || start > end {
        return Selection::Unsatisfiable;
    }
    Selection::Part(start..=end)
}

/// `If-Range`: a strong ETag equal to the file's, or an HTTP date equal to its Last-Modified.
fn if_range_matches(value: &str, file: &Validators) -> bool {
    if value.starts_with('"') {
        value == file.etag
    } else if value.starts_with("W/") {
        false
    } else {
        date(value) == Some(file.last_modified)
    }
}

/// Whether an `If-Match`/`If-None-Match` list matches the file: `*` matches any existing file;
/// `strong` comparison ignores weak tags, weak comparison strips `W/`.
fn matches_any(list: &str, file: Option<&Validators>, strong: bool) -> bool {
    let Some(file) = file else {
        return false;
    };
    list.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        match tag.strip_prefix("W/") {
            Some(weak) => !strong && weak == file.etag,
            None => tag == file.etag,
        }
    })
}

fn date(text: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"abc\"";

    fn file() -> Validators {
        Validators::new(
            ETAG.into(),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_900),
        )
    }

    fn at(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn times_beyond_the_year_9999_are_clamped() {
        let v = Validators::new(
            ETAG.into(),
            UNIX_EPOCH + Duration::from_secs(300_000_000_000),
        );
        assert_eq!(v.http_date(), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn if_match_needs_a_strong_match_or_a_star_on_an_existing_file() {
        let v = file();
        let check = |value, file: Option<&Validators>, safe| {
            evaluate(
                &Conditions {
                    if_match: Some(value),
                    ..Default::default()
                },
                file,
                safe,
            )
        };
        assert_eq!(check("\"abc\"", Some(&v), true), Outcome::Proceed);
        assert_eq!(check("\"x\", \"abc\"", Some(&v), false), Outcome::Proceed);
        assert_eq!(check("*", Some(&v), false), Outcome::Proceed);
        assert_eq!(check("W/\"abc\"", Some(&v), true), Outcome::Failed);
        assert_eq!(check("\"x\"", Some(&v), true), Outcome::Failed);
        assert_eq!(check("*", None, false), Outcome::Failed);
    }

    #[test]
    fn if_none_match_gives_304_to_reads_and_412_to_writes() {
        let v = file();
        let check = |value, file: Option<&Validators>, safe| {
            evaluate(
                &Conditions {
                    if_none_match: Some(value),
                    ..Default::default()
                },
                file,
                safe,
            )
        };
        assert_eq!(check("\"abc\"", Some(&v), true), Outcome::NotModified);
        assert_eq!(check("W/\"abc\"", Some(&v), true), Outcome::NotModified);
        assert_eq!(check("\"x\"", Some(&v), true), Outcome::Proceed);
        assert_eq!(check("*", Some(&v), false), Outcome::Failed);
        assert_eq!(check("*", None, false), Outcome::Proceed, "create only");
    }

    #[test]
    fn dates_compare_in_whole_seconds_and_yield_to_etags() {
        let v = file();
        assert_eq!(v.http_date(), at(1_700_000_000));
        let since = at(1_700_000_000);
        let c = Conditions {
            if_modified_since: Some(&since),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, Some(&v), true), Outcome::NotModified);
        assert_eq!(evaluate(&c, Some(&v), false), Outcome::Proceed);
        let earlier = at(1_699_999_999);
        let c = Conditions {
            if_modified_since: Some(&earlier),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, Some(&v), true), Outcome::Proceed);
        let c = Conditions {
            if_unmodified_since: Some(&earlier),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, Some(&v), false), Outcome::Failed);
        let c = Conditions {
            if_none_match: Some("\"other\""),
            if_modified_since: Some(&since),
            ..Default::default()
        };
        assert_eq!(
            evaluate(&c, Some(&v), true),
            Outcome::Proceed,
            "If-Modified-Since is ignored when If-None-Match is present"
        );
        let c = Conditions {
            if_modified_since: Some("not a date"),
            ..Default::default()
        };
        assert_eq!(evaluate(&c, Some(&v), true), Outcome::Proceed);
    }

    fn range(value: &str, len: u64) -> Selection {
        select(
            &Conditions {
                range: Some(value),
                ..Default::default()
            },
            &file(),
            len,
        )
    }

    #[test]
    fn single_byte_ranges_resolve_against_the_length() {
        assert_eq!(range("bytes=0-99", 1000), Selection::Part(0..=99));
        assert_eq!(range("bytes=500-", 1000), Selection::Part(500..=999));
        assert_eq!(range("bytes=900-5000", 1000), Selection::Part(900..=999));
        assert_eq!(range("bytes=-100", 1000), Selection::Part(900..=999));
        assert_eq!(range("bytes=-5000", 1000), Selection::Part(0..=999));
        assert_eq!(range("bytes=1000-", 1000), Selection::Unsatisfiable);
        assert_eq!(range("bytes=0-", 0), Selection::Unsatisfiable);
        assert_eq!(range("bytes=-1", 0), Selection::Unsatisfiable);
    }

    #[test]
    fn malformed_foreign_or_multiple_ranges_are_ignored() {
        assert_eq!(range("bytes=0-1,5-9", 1000), Selection::Whole);
        assert_eq!(range("items=0-1", 1000), Selection::Whole);
        assert_eq!(range("bytes=a-b", 1000), Selection::Whole);
        assert_eq!(range("bytes=9-1", 1000), Selection::Whole);
    }

    #[test]
    fn if_range_applies_the_range_only_to_the_same_file() {
        let v = file();
        let date = v.http_date();
        let part = |if_range| {
            select(
                &Conditions {
                    range: Some("bytes=10-19"),
                    if_range: Some(if_range),
                    ..Default::default()
                },
                &v,
                100,
            )
        };
        assert_eq!(part(ETAG), Selection::Part(10..=19));
        assert_eq!(part(&date), Selection::Part(10..=19));
        assert_eq!(part("\"other\""), Selection::Whole);
        assert_eq!(part("W/\"abc\""), Selection::Whole, "weak tags never match");
        assert_eq!(part(&at(1)), Selection::Whole);
    }
}
