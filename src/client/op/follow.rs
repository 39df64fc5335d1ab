//! `op start --wait`: follows an operation to its end by polling
//! `GET /te/v1/operations/<cmd_id>` every [`POLL`], printing each status it goes through once,
//! in order, as a line: `executing`, `successful`, `failed: <reason>`.
//!
//! The lines come from the operation's history, not from the status seen at each poll, so a
//! status that lasted less than a poll is still printed and none is printed twice. The agent
//! unreachable or restarting (a refused connection, 503) is waited out for [`LOST_AFTER`].
//! [`Follow`] and [`End`] are pure; the polling is the [`Client`]'s.

use std::time::Duration;

use tokio::time::Instant;

use super::OpError;
use crate::client::{Base, Client};
use crate::ops::model::{Operation, Transition, FAILED, REASON_TIMEOUT, SUCCESSFUL};

/// Between two polls.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the agent may stay unreachable before `--wait` gives up.
pub const LOST_AFTER: Duration = Duration::from_secs(30);

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Successful,
    /// `failed`, with its reason (empty when the child gave none).
    Failed(String),
    /// `failed` with reason `timeout`: the child did not finish in time.
    TimedOut,
}

impl End {
    /// Of a final operation; `None` while it runs.
    pub fn of(op: &Operation) -> Option<End> {
        match op.status.as_str() {
            SUCCESSFUL => Some(End::Successful),
            FAILED => match op.reason.as_deref() {
                Some(REASON_TIMEOUT) => Some(End::TimedOut),
                reason => Some(End::Failed(reason.unwrap_or_default().to_owned())),
            },
            _ => None,
        }
    }

    /// `op start --wait`'s exit code: 0 successful, 1 failed, 2 timed out.
    pub fn exit_code(&self) -> u8 {
        match self {
            End::Successful => 0,
            End::Failed(_) => 1,
            End::TimedOut => 2,
        }
    }
}

/// The last status shown. Not a count: the agent keeps the first transition and the latest
/// ones only (`MAX_HISTORY`), so past that length positions shift while the length stays.
#[derive(Debug, Clone, PartialEq)]
pub struct Follow {
    last: Option<Transition>,
}

impl Follow {
    /// Following `op`, whose statuses so far are not shown again.
    pub fn after(op: &Operation) -> Follow {
        Follow {
            last: op.history.last().cloned(),
        }
    }

    /// The lines of the statuses `op` went through since the last call, and its end if it has
    /// ended. When the last one shown was dropped from the history meanwhile, everything after
    /// the first transition is new.
    pub fn update(&mut self, op: &Operation) -> (Vec<String>, Option<End>) {
        let from = match &self.last {
            None => 0,
            Some(last) => op
                .history
                .iter()
                .rposition(|t| t == last)
                .map_or(1, |i| i + 1),
        };
        let new = op.history.get(from..).unwrap_or_default();
        if let Some(latest) = new.last() {
            self.last = Some(latest.clone());
        }
        (new.iter().map(line).collect(), End::of(op))
    }
}

/// `executing`; `failed: <reason>`.
pub fn line(transition: &Transition) -> String {
    match &transition.reason {
        Some(reason) => format!("{}: {reason}", transition.status),
        None => transition.status.clone(),
    }
}

impl Client {
    /// Polls `started` until it ends, handing each new status line to `print`.
    pub async fn follow(
        &self,
        base: &Base,
        started: &Operation,
        mut print: impl FnMut(&str),
    ) -> Result<End, OpError> {
        let mut follow = Follow::after(started);
        let mut current = started.clone();
        let mut reached = Instant::now();
        loop {
            let (lines, end) = follow.update(&current);
            lines.iter().for_each(|line| print(line));
            if let Some(end) = end {
                return Ok(end);
            }
            tokio::time::sleep(POLL).await;
            match self.operation(base, &started.cmd_id).await {
                Ok(op) => {
                    current = op;
                    reached = Instant::now();
                }
                Err(e) if e.is_transient() && reached.elapsed() < LOST_AFTER => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::time::Timestamp;

    fn op(history: &[(&str, Option<&str>)]) -> Operation {
        let t = Timestamp::from_millis(0);
        let (status, reason) = history.last().copied().unwrap_or(("preparing", None));
        serde_json::from_value(serde_json::json!({
            "cmd_id": "c1", "entity": "device/child1//", "operation": "firmware_update",
            "status": status, "reason": reason, "topic": "te/device/child1///cmd/firmware_update/c1",
            "payload": {}, "timeout_s": 60, "keep_file": false, "created": t, "updated": t,
            "history": history.iter().map(|(s, r)| Transition {
                status: s.to_string(), time: t, reason: r.map(str::to_owned)
            }).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn each_status_is_shown_once_in_order_even_those_passed_between_polls() {
        let started = op(&[("preparing", None)]);
        let mut follow = Follow::after(&started);
        assert_eq!(follow.update(&started), (vec![], None));
        let polled = op(&[("preparing", None), ("init", None), ("executing", None)]);
        assert_eq!(
            follow.update(&polled),
            (vec!["init".to_owned(), "executing".to_owned()], None)
        );
        assert_eq!(follow.update(&polled), (vec![], None));
        let done = op(&[
            ("preparing", None),
            ("init", None),
            ("executing", None),
            ("successful", None),
        ]);
        assert_eq!(
            follow.update(&done),
            (vec!["successful".to_owned()], Some(End::Successful))
        );
    }

    #[test]
    fn a_failure_shows_its_reason_and_a_timeout_is_its_own_end() {
        let mut follow = Follow::after(&op(&[("preparing", None)]));
        let failed = op(&[
            ("preparing", None),
            ("init", None),
            ("failed", Some("flash write failed")),
        ]);
        assert_eq!(
            follow.update(&failed),
            (
                vec!["init".to_owned(), "failed: flash write failed".to_owned()],
                Some(End::Failed("flash write failed".into()))
            )
        );
        let timed_out = op(&[("init", None), ("failed", Some("timeout"))]);
        assert_eq!(End::of(&timed_out), Some(End::TimedOut));
        assert_eq!(
            End::of(&op(&[("failed", None)])),
            Some(End::Failed("".into()))
        );
        assert_eq!(End::of(&op(&[("executing", None)])), None);
    }

    #[test]
    fn statuses_keep_coming_once_the_history_is_capped() {
        // A child cycling through its own steps: the agent keeps the first and the latest 99.
        let steps: Vec<String> = (0..300).map(|i| format!("step-{i}")).collect();
        let capped = |upto: usize| {
            let mut history = vec![("preparing", None)];
            let first = upto.saturating_sub(crate::ops::model::MAX_HISTORY - 1);
            history.extend(steps[first..upto].iter().map(|s| (s.as_str(), None)));
            op(&history)
        };
        let mut follow = Follow::after(&capped(120));
        assert_eq!(
            follow.update(&capped(122)),
            (vec!["step-120".to_owned(), "step-121".to_owned()], None)
        );
        assert_eq!(follow.update(&capped(122)), (vec![], None));
        let (lines, _) = follow.update(&capped(150));
        assert_eq!(lines.first().map(String::as_str), Some("step-122"));
        assert_eq!(lines.len(), 28);
        // More steps than the history holds between two polls: all that is still there.
        let (lines, _) = follow.update(&capped(300));
        assert_eq!(lines.len(), crate::ops::model::MAX_HISTORY - 1);
        assert_eq!(lines.first().map(String::as_str), Some("step-201"));
        assert_eq!(lines.last().map(String::as_str), Some("step-299"));
    }

    #[test]
    fn exit_codes_are_zero_one_and_two() {
        assert_eq!(End::Successful.exit_code(), 0);
        assert_eq!(End::Failed("x".into()).exit_code(), 1);
        assert_eq!(End::TimedOut.exit_code(), 2);
    }

    #[test]
    fn a_shorter_history_shows_nothing_again() {
        let mut follow = Follow::after(&op(&[("preparing", None), ("init", None)]));
        assert_eq!(
            follow.update(&op(&[("preparing", None)])).0,
            Vec::<String>::new()
        );
    }
}
