//! What an operation is (issue #5): the request that starts one, validated; the record the
//! agent keeps of it, with every status it went through; and the kinds of operations.
//!
//! Pure data and the rules of one operation's life: which statuses are final, which operations
//! have the child upload rather than download, how a child's status payload moves a record on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::topic::EntityTopicId;
use crate::twin::time::Timestamp;

/// The agent's own status before it publishes the command: the file is being made available.
pub const PREPARING: &str = "preparing";
pub const INIT: &str = "init";
pub const SUCCESSFUL: &str = "successful";
pub const FAILED: &str = "failed";

/// Reasons the agent gives when it ends an operation itself.
pub const REASON_TIMEOUT: &str = "timeout";
pub const REASON_CANCELLED: &str = "cancelled";

/// True for `successful` and `failed`.
pub fn is_final(status: &str) -> bool {
    status == SUCCESSFUL || status == FAILED
}

/// Operations where the child sends a file to the gateway (it PUTs to `tedgeUrl`), rather than
/// fetching one.
pub fn is_upload(op: &str) -> bool {
    matches!(op, "config_snapshot" | "log_upload")
}

/// One status an operation went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub status: String,
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The agent's record of one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub cmd_id: String,
    pub entity: EntityTopicId,
    pub operation: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The command topic.
    pub topic: String,
    /// The stored file it was started with (`file` of the request), linked to [`Self::file`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_file: Option<String>,
    /// The file-store path of the file served for it, or received from the child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The URL the child reaches the file at (`tedgeUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tedge_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The command payload as last published or received.
    pub payload: Map<String, Value>,
    pub timeout_s: u64,
    /// Keep the served file after the end (upload-type operations always keep theirs).
    pub keep_file: bool,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// When the command was published: the timeout runs from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified: Option<Timestamp>,
    /// When the command topic was cleared after the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared: Option<Timestamp>,
    pub history: Vec<Transition>,
}

impl Operation {
    pub fn is_final(&self) -> bool {
        is_final(&self.status)
    }

    /// Moves to `status` at `time`; a repeated status is not a transition.
    pub fn transition(&mut self, status: &str, reason: Option<String>, time: Timestamp) -> bool {
        if self.status == status && self.reason == reason {
            return false;
        }
        self.status = status.to_owned();
        self.reason = reason.clone();
        self.updated = time;
        // A child cycling through custom steps must not grow the record without end: the
        // first transition and the latest ones are kept.
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(1);
        }
        self.history.push(Transition {
            status: status.to_owned(),
            time,
            reason,
        });
        true
    }

    /// The payload with `status` (and `reason`) set, as the agent publishes it.
    pub fn payload_with(&self, status: &str, reason: Option<&str>) -> Vec<u8> {
        let mut payload = self.payload.clone();
        payload.insert("status".into(), Value::from(status));
        match reason {
            Some(reason) => payload.insert("reason".into(), Value::from(reason)),
            None => payload.remove("reason"),
        };
        serde_json::to_vec(&payload).unwrap_or_default()
    }
}

/// A `POST /te/v1/operations` body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub entity: String,
    pub operation: String,
    #[serde(default)]
    pub cmd_id: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub payload: Option<Map<String, Value>>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub keep_file: bool,
}

/// A request whose values were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOperation {
    pub entity: EntityTopicId,
    pub operation: String,
    pub cmd_id: Option<String>,
    pub source: Source,
    pub sha256: Option<String>,
    pub payload: Map<String, Value>,
    pub timeout_s: Option<u64>,
    pub force: bool,
    pub keep_file: bool,
}

/// Where the file of an operation comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// None: the child needs no file (or, for an upload-type operation, sends one).
    None,
    /// A file already in the store.
    Stored(String),
    /// A remote URL the agent downloads.
    Remote(String),
}

/// The most transitions kept in an operation's history.
pub const MAX_HISTORY: usize = 100;

/// The longest timeout accepted: 30 days.
pub const MAX_TIMEOUT_S: u64 = 30 * 24 * 3600;

/// The longest command id accepted: it is a topic level and part of a file name.
pub const MAX_CMD_ID: usize = 128;

/// Why a request is refused before anything happens (400).
pub fn check(request: Request) -> Result<NewOperation, String> {
    let entity: EntityTopicId = request
        .entity
        .parse()
        .map_err(|e| format!("invalid entity {:?}: {e}", request.entity))?;
    check_level("operation", &request.operation)?;
    if request.operation == "health" {
        return Err("\"health\" is not an operation: health checks have no lifecycle".into());
    }
    if let Some(id) = &request.cmd_id {
        if !is_plain_name(id) {
            return Err(format!(
                "cmd_id must be letters, digits, '.', '_', '-' or '~': {id:?}"
            ));
        }
        if id.len() > MAX_CMD_ID {
            return Err(format!("cmd_id is longer than {MAX_CMD_ID} bytes"));
        }
    }
    let source = match (request.file, request.url) {
        (Some(_), Some(_)) => return Err("give file or url, not both".into()),
        (Some(file), None) => Source::Stored(file),
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("url must be an http:// or https:// URL: {url:?}"));
            }
            Source::Remote(url)
        }
        (None, None) => Source::None,
    };
    if is_upload(&request.operation) && source != Source::None {
        return Err(format!(
            "{} is an upload: the child sends the file, so no file or url is given",
            request.operation
        ));
    }
    let sha256 = match request.sha256 {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(hex.to_ascii_lowercase())
        }
        Some(hex) => return Err(format!("sha256 must be 64 hex digits: {hex:?}")),
        None => None,
    };
    let payload = request.payload.unwrap_or_default();
    if let Some(key) = payload
        .keys()
        .find(|k| matches!(k.as_str(), "status" | "tedgeUrl" | "remoteUrl" | "sha256"))
    {
        return Err(format!("payload must not set {key:?}: the agent sets it"));
    }
    if request
        .timeout_s
        .is_some_and(|t| !(1..=MAX_TIMEOUT_S).contains(&t))
    {
        return Err(format!(
            "timeout_s must be from 1 to {MAX_TIMEOUT_S} (30 days)"
        ));
    }
    Ok(NewOperation {
        entity,
        operation: request.operation,
        cmd_id: request.cmd_id,
        source,
        sha256,
        payload,
        timeout_s: request.timeout_s,
        force: request.force,
        keep_file: request.keep_file,
    })
}

/// A command id: it names a topic level, a file and a URL path segment, so plain characters
/// only (letters, digits, `.`, `_`, `-`, `~`), and neither `.` nor `..`.
pub fn is_plain_name(text: &str) -> bool {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~'));
    plain && !text.is_empty() && text != "." && text != ".."
}

/// One topic level: not empty, no `/`, `+`, `#`, spaces or control characters.
fn check_level(name: &str, value: &str) -> Result<(), String> {
    match !crate::topic::is_plain_level(value) {
        true => Err(format!(
            "{name} must be one topic level, without '/', '+', '#' or spaces: {value:?}"
        )),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<NewOperation, String> {
        check(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn a_request_names_an_entity_an_operation_and_at_most_one_source() {
        let ok = request(
            r#"{"entity":"device/child1//","operation":"firmware_update","url":"https://x/fw.bin","sha256":"AB00000000000000000000000000000000000000000000000000000000000000","payload":{"name":"fw","version":"1.2"}}"#,
        )
        .unwrap();
        assert_eq!(ok.entity.as_str(), "device/child1//");
        assert_eq!(ok.source, Source::Remote("https://x/fw.bin".into()));
        assert_eq!(
            ok.sha256.as_deref(),
            Some(&*format!("ab{}", "0".repeat(62)))
        );
        for (json, error) in [
            (
                r#"{"entity":"a/b/c/d/e","operation":"x"}"#,
                "invalid entity",
            ),
            (
                r#"{"entity":"device/c//","operation":"a/b"}"#,
                "operation must be one topic level",
            ),
            (
                r#"{"entity":"device/c//","operation":"x","cmd_id":"a b"}"#,
                "cmd_id must be letters, digits",
            ),
            (
                r#"{"entity":"device/c//","operation":"x","file":"a","url":"http://b"}"#,
                "not both",
            ),
            (
                r#"{"entity":"device/c//","operation":"x","url":"ftp://b"}"#,
                "http:// or https://",
            ),
            (
                r#"{"entity":"device/c//","operation":"x","sha256":"abc"}"#,
                "64 hex digits",
            ),
            (
                r#"{"entity":"device/c//","operation":"x","payload":{"status":"successful"}}"#,
                "must not set \"status\"",
            ),
            (
                r#"{"entity":"device/c//","operation":"log_upload","file":"a"}"#,
                "is an upload",
            ),
            (
                r#"{"entity":"device/c//","operation":"health"}"#,
                "no lifecycle",
            ),
            (
                r#"{"entity":"device/c//","operation":"x","timeout_s":0}"#,
                "from 1 to",
            ),
        ] {
            let e = request(json).unwrap_err();
            assert!(e.contains(error), "{json}: {e}");
        }
    }

    #[test]
    fn a_transition_is_recorded_once_and_the_payload_carries_status_and_reason() {
        let t = Timestamp::from_millis(1_000);
        let mut op = Operation {
            cmd_id: "c1".into(),
            entity: "device/c//".parse().unwrap(),
            operation: "restart".into(),
            status: INIT.into(),
            reason: None,
            topic: "te/device/c///cmd/restart/c1".into(),
            from_file: None,
            file: None,
            tedge_url: None,
            remote_url: None,
            sha256: None,
            payload: serde_json::from_str(r#"{"status":"init","x":1}"#).unwrap(),
            timeout_s: 60,
            keep_file: false,
            created: t,
            updated: t,
            notified: Some(t),
            cleared: None,
            history: vec![],
        };
        assert!(op.transition("executing", None, t));
        assert!(!op.transition("executing", None, t));
        assert!(op.transition(FAILED, Some("boom".into()), t));
        assert!(op.is_final());
        assert_eq!(op.history.len(), 2);
        assert_eq!(
            String::from_utf8(op.payload_with(FAILED, Some("boom"))).unwrap(),
            r#"{"reason":"boom","status":"failed","x":1}"#
        );
    }
}
