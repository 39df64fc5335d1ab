//! Rate limiting of rejected-input reports (spec/twin.md §2.6, §9): at most one `<root>/errors`
//! message per minute per (reason kind, topic id), and 10 messages per second overall.
//!
//! The log has a limit of its own ([`LogLimiter`], issue #7): one line per minute per reason
//! kind, whatever the entity, carrying how many rejections of that kind went unlogged since the
//! line before. The kinds are a fixed set, so a flood of bad messages from any number of devices
//! costs a few lines per minute.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::topic::EntityTopicId;

const PER_KEY: Duration = Duration::from_secs(60);
const GLOBAL_PER_SECOND: u32 = 10;
/// Keys older than this are forgotten, so the table cannot grow without bound.
const MAX_KEYS: usize = 10_000;

#[derive(Debug)]
pub struct RateLimiter {
    last: HashMap<(&'static str, Option<EntityTopicId>), Instant>,
    second_start: Instant,
    in_second: u32,
    pub suppressed: u64,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            last: HashMap::new(),
            second_start: Instant::now(),
            in_second: 0,
            suppressed: 0,
        }
    }
}

impl RateLimiter {
    /// True when a report for this kind and entity may go out now.
    pub fn allow(&mut self, kind: &'static str, id: Option<&EntityTopicId>, now: Instant) -> bool {
        if now.duration_since(self.second_start) >= Duration::from_secs(1) {
            self.second_start = now;
            self.in_second = 0;
        }
        let key = (kind, id.cloned());
        let recent = self
            .last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < PER_KEY);
        if recent || self.in_second >= GLOBAL_PER_SECOND {
            self.suppressed += 1;
            return false;
        }
        if self.last.len() >= MAX_KEYS {
            self.last.retain(|_, t| now.duration_since(*t) < PER_KEY);
        }
        self.last.insert(key, now);
        self.in_second += 1;
        true
    }
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// Kind → when its last line was written, and the rejections unlogged since.
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogLimiter {
    /// `Some(unlogged since the previous line)` when a line for `kind` may be written now.
    pub fn allow(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(kind) {
            Some((at, unlogged)) if now.duration_since(*at) < PER_KEY => {
                *unlogged += 1;
                None
            }
            Some((at, unlogged)) => {
                *at = now;
                Some(std::mem::take(unlogged))
            }
            None => {
                self.last.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_log_line_per_minute_per_kind_with_the_count_of_those_left_out() {
        let mut log = LogLimiter::default();
        let t0 = Instant::now();
        assert_eq!(log.allow("measurement", t0), Some(0));
        for i in 0..1000 {
            assert_eq!(
                log.allow("measurement", t0 + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(log.allow("registration", t0), Some(0));
        assert_eq!(
            log.allow("measurement", t0 + Duration::from_secs(60)),
            Some(1000)
        );
        assert_eq!(log.allow("measurement", t0 + Duration::from_secs(61)), None);
        assert_eq!(
            log.allow("measurement", t0 + Duration::from_secs(120)),
            Some(1)
        );
    }

    #[test]
    fn one_report_per_minute_per_kind_and_entity() {
        let mut limiter = RateLimiter::default();
        let id: EntityTopicId = "device/c1".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.allow("registration", Some(&id), t0));
        assert!(!limiter.allow("registration", Some(&id), t0 + Duration::from_secs(59)));
        assert!(limiter.allow("twin", Some(&id), t0 + Duration::from_secs(59)));
        assert!(limiter.allow("registration", Some(&id), t0 + Duration::from_secs(61)));
        assert_eq!(limiter.suppressed, 1);
    }

    #[test]
    fn at_most_ten_reports_per_second_overall() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        let allowed = (0..25)
            .filter(|i| {
                let id: EntityTopicId = format!("device/c{i}").parse().unwrap();
                limiter.allow("registration", Some(&id), t0)
            })
            .count();
        assert_eq!(allowed, 10);
        assert_eq!(limiter.suppressed, 15);
        let id: EntityTopicId = "device/late".parse().unwrap();
        assert!(limiter.allow("registration", Some(&id), t0 + Duration::from_secs(1)));
    }
}
