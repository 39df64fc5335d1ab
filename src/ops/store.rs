//! The table of operations (issue #5): starting one (with the refusals), following the statuses
//! a child publishes, timing out, cancelling, and ending (clearing the command topic, removing
//! the served file). A plain synchronous struct owned by the operations task: every method
//! returns the [`Action`]s (publications, file removals) for the task to carry out.

use std::collections::BTreeMap;
use std::time::Duration;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use super::model::{
    self, NewOperation, Operation, Source, FAILED, INIT, PREPARING, REASON_CANCELLED,
    REASON_TIMEOUT, SUCCESSFUL,
};
use crate::topic::EntityTopicId;
use crate::twin::time::Timestamp;

/// Operations not finished at once, at the most.
const MAX_RUNNING: usize = 1000;

/// Finished operations kept for `GET /te/v1/operations`, the oldest forgotten first.
const KEEP_FINISHED: usize = 1000;

/// What the store knows of its surroundings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub root: String,
    /// `http.public_url`, without a trailing `/`.
    pub public_url: String,
    /// How long a finished command stays on its topic before it is cleared.
    pub keep_final: Duration,
    pub default_timeout: Duration,
    /// Per operation type.
    pub timeouts: BTreeMap<String, Duration>,
}

/// What the twin says about the entity, asked for by the HTTP layer before a start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub registered: bool,
    /// The operations it announced (`cmd/<op>` capabilities).
    pub capabilities: Vec<String>,
}

/// What the task must do after a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish (QoS 1) on the command topic.
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Remove a served file from the store.
    RemoveFile(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    /// 404.
    #[error("The specified entity: {0} does not exist in the entity store")]
    UnknownEntity(String),
    /// 409.
    #[error("{entity} has not announced the {operation} operation (no retained cmd/{operation} capability); give \"force\": true to send it anyway")]
    NoCapability { entity: String, operation: String },
    /// 409.
    #[error("{entity} is already running a {operation} operation: {cmd_id}")]
    Running {
        entity: String,
        operation: String,
        cmd_id: String,
    },
    /// 409.
    #[error("an operation with cmd_id {0} exists already")]
    DuplicateId(String),
    /// 404.
    #[error("File not found in the file store: {0:?}")]
    FileNotFound(String),
    /// 404.
    #[error("operation not found: {0}")]
    NotFound(String),
    /// 409.
    #[error("operation {cmd_id} is already {status}")]
    Finished { cmd_id: String, status: String },
    /// 400.
    #[error("{0}")]
    Invalid(String),
    /// 503.
    #[error("too many operations in progress (at most {0}); retry when some have ended")]
    TooMany(usize),
}

/// A filter of `GET /te/v1/operations`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub entity: Option<String>,
    pub operation: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug)]
pub struct OpsStore {
    settings: Settings,
    ops: BTreeMap<String, Operation>,
    /// For generated command ids.
    counter: u64,
    /// Operations that ended since the agent started, by operation label and final status.
    ended: Ended,
}

/// See [`OpsStore::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpsStats {
    pub ended: Ended,
    /// (operation label, status label) → operations in the table.
    pub current: BTreeMap<(&'static str, &'static str), u64>,
}

/// (operation label, `successful` | `failed`) → count; see [`operation_label`].
pub type Ended = BTreeMap<(&'static str, &'static str), u64>;

/// The operations named in metrics as themselves; any other name counts as `other`, so that
/// no label takes an unbounded set of values (issue #7).
pub const KNOWN_OPERATIONS: [&str; 10] = [
    "config_snapshot",
    "config_update",
    "device_profile",
    "firmware_update",
    "log_upload",
    "restart",
    "software_list",
    "software_update",
    "ssh_connect",
    "remote_access_connect",
];

/// The metrics label of operation `name`.
pub fn operation_label(name: &str) -> &'static str {
    KNOWN_OPERATIONS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("other")
}

/// The statuses named in metrics as themselves: the agent's and thin-edge.io's workflow steps.
/// A child's own steps count as `other`.
const KNOWN_STATUSES: [&str; 8] = [
    PREPARING,
    INIT,
    "scheduled",
    "executing",
    "downloading",
    "downloaded",
    SUCCESSFUL,
    FAILED,
];

/// The metrics label of a status.
fn status_label(status: &str) -> &'static str {
    KNOWN_STATUSES
        .iter()
        .find(|known| **known == status)
        .copied()
        .unwrap_or("other")
}

/// Moves `op` to `status` (see `Operation::transition`), counting it in `ended` when this ends it.
fn settle(
    ended: &mut Ended,
    op: &mut Operation,
    status: &str,
    reason: Option<String>,
    now: Timestamp,
) -> bool {
    let was_final = op.is_final();
    let changed = op.transition(status, reason, now);
    if changed && !was_final {
        let outcome = match op.status.as_str() {
            SUCCESSFUL => Some(SUCCESSFUL),
            FAILED => Some(FAILED),
            _ => None,
        };
        if let Some(outcome) = outcome {
            *ended
                .entry((operation_label(&op.operation), outcome))
                .or_default() += 1;
        }
    }
    changed
}

/// Characters kept as they are in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl OpsStore {
    pub fn new(settings: Settings, loaded: Vec<Operation>) -> OpsStore {
        let ops = loaded.into_iter().map(|o| (o.cmd_id.clone(), o)).collect();
        OpsStore {
            settings,
            ops,
            counter: 0,
            ended: Ended::new(),
        }
    }

    /// What the metrics endpoint shows: the operations ended since start, and those in the
    /// table now (running, or ended and kept for `keep_final`), by label and status.
    pub fn stats(&self) -> OpsStats {
        let mut current = BTreeMap::new();
        for op in self.ops.values() {
            *current
                .entry((operation_label(&op.operation), status_label(&op.status)))
                .or_default() += 1;
        }
        OpsStats {
            ended: self.ended.clone(),
            current,
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Operation> {
        self.ops.values()
    }

    pub fn get(&self, cmd_id: &str) -> Option<&Operation> {
        self.ops.get(cmd_id)
    }

    /// The operations matching `filter`, oldest first.
    pub fn list(&self, filter: &Filter) -> Vec<&Operation> {
        let mut found: Vec<&Operation> = self
            .ops
            .values()
            .filter(|o| {
                filter
                    .entity
                    .as_deref()
                    .is_none_or(|e| o.entity.as_str() == e)
            })
            .filter(|o| filter.operation.as_deref().is_none_or(|p| o.operation == p))
            .filter(|o| filter.status.as_deref().is_none_or(|s| o.status == s))
            .collect();
        found.sort_by_key(|o| (o.created, o.cmd_id.clone()));
        found
    }

    /// Registers a new operation, `preparing`: the task then makes its file available and
    /// calls [`OpsStore::prepared`].
    pub fn start(
        &mut self,
        new: NewOperation,
        facts: &Facts,
        now: Timestamp,
    ) -> Result<Operation, OpsError> {
        let entity = new.entity.as_str().to_owned();
        if !facts.registered {
            return Err(OpsError::UnknownEntity(entity));
        }
        if !new.force && !facts.capabilities.contains(&new.operation) {
            return Err(OpsError::NoCapability {
                entity,
                operation: new.operation,
            });
        }
        if self.ops.values().filter(|o| !o.is_final()).count() >= MAX_RUNNING {
            return Err(OpsError::TooMany(MAX_RUNNING));
        }
        if let Some(running) = self
            .ops
            .values()
            .find(|o| o.entity == new.entity && o.operation == new.operation && !o.is_final())
        {
            return Err(OpsError::Running {
                entity,
                operation: new.operation,
                cmd_id: running.cmd_id.clone(),
            });
        }
        let cmd_id = match new.cmd_id {
            Some(id) if self.ops.contains_key(&id) => return Err(OpsError::DuplicateId(id)),
            Some(id) => id,
            None => self.new_id(now),
        };
        let device = safe_segment(&device_name(&new.entity));
        let name = match (&new.source, model::is_upload(&new.operation)) {
            (_, true) => new
                .payload
                .get("type")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && !t.contains('/'))
                .unwrap_or(&new.operation)
                .to_owned(),
            // A file uploaded for this very command (`op start --file` names it
            // `<name>-<cmd_id>`) keeps its name: served where it is, not as `…-<id>-<id>`.
            (Source::Stored(path), false) => {
                let name = percent_decode_str(&last_segment(path))
                    .decode_utf8_lossy()
                    .into_owned();
                match name.strip_suffix(&format!("-{cmd_id}")) {
                    Some(stem) if !stem.is_empty() => stem.to_owned(),
                    _ => name,
                }
            }
            (Source::Remote(url), false) => {
                let path = url.split(['?', '#']).next().unwrap_or_default();
                let path = path.splitn(4, '/').nth(3).unwrap_or_default();
                percent_decode_str(&last_segment(path))
                    .decode_utf8_lossy()
                    .into_owned()
            }
            (Source::None, false) => String::new(),
        };
        let file = match (&new.source, model::is_upload(&new.operation)) {
            (Source::None, false) => None,
            _ => {
                let name = match safe_segment(&name) {
                    name if name.is_empty() => "file".to_owned(),
                    name => name,
                };
                let operation = safe_segment(&new.operation);
                Some(format!("{device}/{operation}/{name}-{cmd_id}"))
            }
        };
        // A thin-edge.io child expects the firmware's name; the file's name stands in for it.
        let mut payload = new.payload;
        if new.operation == "firmware_update" && !payload.contains_key("name") {
            if let Some(name) = file
                .as_deref()
                .and_then(|f| f.rsplit('/').next())
                .and_then(|f| f.strip_suffix(&format!("-{cmd_id}")))
            {
                payload.insert("name".into(), Value::from(name));
            }
        }
        let tedge_url = file.as_ref().map(|f| {
            let encoded: Vec<String> = f
                .split('/')
                .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
                .collect();
            format!(
                "{}/te/v1/files/{}",
                self.settings.public_url,
                encoded.join("/")
            )
        });
        let timeout = new
            .timeout_s
            .map(Duration::from_secs)
            .or_else(|| self.settings.timeouts.get(&new.operation).copied())
            .unwrap_or(self.settings.default_timeout);
        let topic = format!(
            "{}/{}/cmd/{}/{cmd_id}",
            self.settings.root,
            new.entity.as_str(),
            new.operation
        );
        let (remote_url, from_file) = match &new.source {
            Source::Remote(url) => (Some(url.clone()), None),
            Source::Stored(path) => (None, Some(path.clone())),
            Source::None => (None, None),
        };
        let op = Operation {
            cmd_id: cmd_id.clone(),
            entity: new.entity,
            operation: new.operation,
            status: PREPARING.to_owned(),
            reason: None,
            topic,
            from_file,
            file,
            tedge_url,
            remote_url,
            sha256: new.sha256,
            payload,
            timeout_s: timeout.as_secs().max(1),
            keep_file: new.keep_file,
            created: now,
            updated: now,
            notified: None,
            cleared: None,
            history: vec![model::Transition {
                status: PREPARING.to_owned(),
                time: now,
                reason: None,
            }],
        };
        self.ops.insert(cmd_id, op.clone());
        self.forget_old();
        Ok(op)
    }

    fn new_id(&mut self, now: Timestamp) -> String {
        loop {
            self.counter += 1;
            let id = format!("edge-{}-{}", now.as_millis(), self.counter);
            if !self.ops.contains_key(&id) {
                return id;
            }
        }
    }

    /// The file is available (its SHA-256 if known), or could not be made so: the command is
    /// published with status `init`, or the operation fails without one.
    pub fn prepared(
        &mut self,
        cmd_id: &str,
        result: Result<Option<String>, String>,
        now: Timestamp,
    ) -> Vec<Action> {
        let Some(op) = self.ops.get_mut(cmd_id) else {
            return Vec::new();
        };
        if op.status != PREPARING {
            // Cancelled or timed out meanwhile: a file linked since is not served.
            return match result {
                Ok(_) => end_file(op).into_iter().collect(),
                Err(_) => Vec::new(),
            };
        }
        match result {
            Err(reason) => {
                settle(&mut self.ended, op, FAILED, Some(reason), now);
                // Nothing was published: nothing to clear.
                op.cleared = Some(now);
                op.file
                    .clone()
                    .filter(|_| !model::is_upload(&op.operation))
                    .map(Action::RemoveFile)
                    .into_iter()
                    .collect()
            }
            Ok(sha256) => {
                if sha256.is_some() {
                    op.sha256 = sha256;
                }
                let mut payload = Map::new();
                payload.insert("status".into(), Value::from(INIT));
                if let Some(url) = &op.tedge_url {
                    payload.insert("tedgeUrl".into(), Value::from(url.as_str()));
                }
                if let Some(url) = &op.remote_url {
                    payload.insert("remoteUrl".into(), Value::from(url.as_str()));
                }
                if let Some(sha) = &op.sha256 {
                    payload.insert("sha256".into(), Value::from(sha.as_str()));
                }
                for (k, v) in &op.payload {
                    payload.insert(k.clone(), v.clone());
                }
                op.payload = payload;
                op.notified = Some(now);
                op.transition(INIT, None, now);
                vec![Action::Publish {
                    topic: op.topic.clone(),
                    payload: op.payload_with(INIT, None),
                    retain: true,
                }]
            }
        }
    }

    /// A message on a command topic: the child's status, if the command is one of ours. Returns
    /// whether the operation changed, and what to publish: a status that arrives after the
    /// command was cleared is cleared again, so that no command stays retained for good.
    pub fn on_update(
        &mut self,
        entity: &EntityTopicId,
        operation: &str,
        cmd_id: &str,
        payload: &[u8],
        now: Timestamp,
    ) -> (bool, Vec<Action>) {
        let Some(op) = self.ops.get_mut(cmd_id) else {
            return (false, Vec::new());
        };
        if op.entity != *entity || op.operation != operation || payload.is_empty() {
            return (false, Vec::new());
        }
        if op.cleared.is_some() {
            return (
                false,
                vec![Action::Publish {
                    topic: op.topic.clone(),
                    payload: Vec::new(),
                    retain: true,
                }],
            );
        }
        // Before the command is published, and after it ended (by the agent or the child),
        // the record stays as it is.
        if op.status == PREPARING || op.is_final() {
            return (false, Vec::new());
        }
        // The twin's command rules: a JSON object, a missing status is `init`.
        let Ok(object) = crate::twin::payload::parse_command(payload) else {
            return (false, Vec::new());
        };
        let status = match object.get("status") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return (false, Vec::new()),
        };
        // `preparing` is the agent's; `init` again (its own command delivered again) would
        // move the operation back.
        if status == PREPARING || (status == INIT && op.status != INIT) {
            return (false, Vec::new());
        }
        let reason = object
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .filter(|_| status == FAILED);
        op.payload = object;
        let changed = settle(&mut self.ended, op, &status, reason, now);
        (changed, Vec::new())
    }

    /// `DELETE /te/v1/operations/<id>`: a command not finished fails with reason `cancelled`
    /// and its topic is cleared at once.
    pub fn cancel(&mut self, cmd_id: &str, now: Timestamp) -> Result<Vec<Action>, OpsError> {
        let op = self
            .ops
            .get_mut(cmd_id)
            .ok_or_else(|| OpsError::NotFound(cmd_id.to_owned()))?;
        if op.is_final() {
            return Err(OpsError::Finished {
                cmd_id: cmd_id.to_owned(),
                status: op.status.clone(),
            });
        }
        let was_published = op.notified.is_some();
        settle(
            &mut self.ended,
            op,
            FAILED,
            Some(REASON_CANCELLED.to_owned()),
            now,
        );
        op.cleared = Some(now);
        let mut actions = Vec::new();
        if was_published {
            actions.push(Action::Publish {
                topic: op.topic.clone(),
                payload: op.payload_with(FAILED, Some(REASON_CANCELLED)),
                retain: true,
            });
            actions.push(Action::Publish {
                topic: op.topic.clone(),
                payload: Vec::new(),
                retain: true,
            });
        }
        actions.extend(end_file(op));
        Ok(actions)
    }

    /// Timeouts and clean-ups due at `now`.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Action> {
        let keep_final = self.settings.keep_final.as_millis() as i64;
        let mut actions = Vec::new();
        for op in self.ops.values_mut() {
            if deadline(op).is_some_and(|d| now.as_millis() >= d) {
                match op.notified {
                    Some(_) => {
                        settle(
                            &mut self.ended,
                            op,
                            FAILED,
                            Some(REASON_TIMEOUT.to_owned()),
                            now,
                        );
                        actions.push(Action::Publish {
                            topic: op.topic.clone(),
                            payload: op.payload_with(FAILED, Some(REASON_TIMEOUT)),
                            retain: true,
                        });
                    }
                    // The file could not be made available in time: the child was never told.
                    None => {
                        settle(
                            &mut self.ended,
                            op,
                            FAILED,
                            Some(format!(
                                "{REASON_TIMEOUT}: the file was not available in time"
                            )),
                            now,
                        );
                        op.cleared = Some(now);
                    }
                }
            }
            if op.is_final()
                && op.cleared.is_none()
                && now.as_millis() >= op.updated.as_millis().saturating_add(keep_final)
            {
                op.cleared = Some(now);
                actions.push(Action::Publish {
                    topic: op.topic.clone(),
                    payload: Vec::new(),
                    retain: true,
                });
                actions.extend(end_file(op));
            }
        }
        actions
    }

    /// When [`OpsStore::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let keep_final = self.settings.keep_final.as_millis() as i64;
        self.ops
            .values()
            .filter_map(|op| match (op.is_final(), op.cleared) {
                (false, _) => deadline(op),
                (true, None) => Some(op.updated.as_millis().saturating_add(keep_final)),
                _ => None,
            })
            .min()
            .map(Timestamp::from_millis)
    }

    /// Forgets the oldest finished and cleared operations beyond [`KEEP_FINISHED`].
    fn forget_old(&mut self) {
        let mut done: Vec<(Timestamp, String)> = self
            .ops
            .values()
            .filter(|o| o.is_final() && o.cleared.is_some())
            .map(|o| (o.updated, o.cmd_id.clone()))
            .collect();
        if done.len() <= KEEP_FINISHED {
            return;
        }
        done.sort();
        for (_, id) in done.iter().take(done.len() - KEEP_FINISHED) {
            self.ops.remove(id);
        }
    }
}

/// When an unfinished operation times out: `timeout_s` after its command was published, or
/// after it was created while its file is being made available.
fn deadline(op: &Operation) -> Option<i64> {
    if op.is_final() {
        return None;
    }
    let from = op.notified.unwrap_or(op.created).as_millis();
    let timeout = i64::try_from(op.timeout_s).unwrap_or(i64::MAX / 1000);
    Some(from.saturating_add(timeout.saturating_mul(1000)))
}

/// The served file goes at the end, unless the operation keeps it (or the child sent it).
fn end_file(op: &Operation) -> Option<Action> {
    if op.keep_file || model::is_upload(&op.operation) {
        return None;
    }
    op.file.clone().map(Action::RemoveFile)
}

/// The device part of the served file's path: `child1` for `device/child1//` or its services,
/// else the topic id with `_` for `/`.
pub fn device_name(entity: &EntityTopicId) -> String {
    if let Some(name) = entity.default_device_name() {
        return name.to_owned();
    }
    if let Some((device, _)) = entity.default_service_names() {
        return device.to_owned();
    }
    entity
        .segments()
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("_")
}

/// A file-store path segment made of plain characters only (others become `_`), so that the
/// path, its URL and the file on disk are one and the same, never decoded twice; at most 100
/// bytes, and never `.` or `..`.
pub fn safe_segment(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' | '~' => c,
            _ => '_',
        })
        .collect();
    if safe.len() > 100 {
        let cut = (0..=100)
            .rev()
            .find(|i| safe.is_char_boundary(*i))
            .unwrap_or(0);
        safe.truncate(cut);
    }
    match safe.as_str() {
        "." | ".." => "_".repeat(safe.len()),
        _ => safe,
    }
}

fn last_segment(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::model::{check, Request};

    fn store() -> OpsStore {
        OpsStore::new(
            Settings {
                root: "te".into(),
                public_url: "http://gw:8000".into(),
                keep_final: Duration::from_secs(60),
                default_timeout: Duration::from_secs(600),
                timeouts: [("firmware_update".to_owned(), Duration::from_secs(3600))].into(),
            },
            Vec::new(),
        )
    }

    fn new(json: &str) -> NewOperation {
        check(serde_json::from_str::<Request>(json).unwrap()).unwrap()
    }

    fn facts(ops: &[&str]) -> Facts {
        Facts {
            registered: true,
            capabilities: ops.iter().map(|s| s.to_string()).collect(),
        }
    }

    const T0: i64 = 1_700_000_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(T0 + secs * 1000)
    }

    #[test]
    fn a_file_uploaded_for_the_command_is_served_where_it_is_and_others_get_the_id_appended() {
        let mut s = store();
        let op = s
            .start(
                new(r#"{"entity":"device/child1//","operation":"firmware_update","cmd_id":"cli-1-ab12","file":"child1/firmware_update/fw.bin-cli-1-ab12"}"#),
                &facts(&["firmware_update"]),
                at(0),
            )
            .unwrap();
        assert_eq!(
            op.file.as_deref(),
            Some("child1/firmware_update/fw.bin-cli-1-ab12")
        );
        assert_eq!(op.from_file, op.file);
        let op = s
            .start(
                new(r#"{"entity":"device/child2//","operation":"firmware_update","cmd_id":"c2","file":"images/fw.bin"}"#),
                &facts(&["firmware_update"]),
                at(0),
            )
            .unwrap();
        assert_eq!(op.file.as_deref(), Some("child2/firmware_update/fw.bin-c2"));
        let op = s
            .start(
                new(r#"{"entity":"device/child3//","operation":"firmware_update","cmd_id":"c3","file":"images/-c3"}"#),
                &facts(&["firmware_update"]),
                at(0),
            )
            .unwrap();
        assert_eq!(op.file.as_deref(), Some("child3/firmware_update/-c3-c3"));
    }

    #[test]
    fn a_firmware_update_from_a_url_is_served_under_the_device_and_published_with_its_urls() {
        let mut s = store();
        let op = s
            .start(
                new(r#"{"entity":"device/child1//","operation":"firmware_update","cmd_id":"c1","url":"https://ex.com/f/fw%201.bin?x=1","payload":{"name":"fw","version":"1.2"}}"#),
                &facts(&["firmware_update"]),
                at(0),
            )
            .unwrap();
        assert_eq!(op.status, PREPARING);
        assert_eq!(
            op.file.as_deref(),
            Some("child1/firmware_update/fw_1.bin-c1")
        );
        assert_eq!(
            op.tedge_url.as_deref(),
            Some("http://gw:8000/te/v1/files/child1/firmware_update/fw_1.bin-c1")
        );
        assert_eq!(op.timeout_s, 3600);
        let actions = s.prepared("c1", Ok(Some("ab".repeat(32))), at(1));
        let [Action::Publish {
            topic,
            payload,
            retain: true,
        }] = &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(topic, "te/device/child1///cmd/firmware_update/c1");
        assert_eq!(
            std::str::from_utf8(payload).unwrap(),
            format!(
                r#"{{"name":"fw","remoteUrl":"https://ex.com/f/fw%201.bin?x=1","sha256":"{}","status":"init","tedgeUrl":"http://gw:8000/te/v1/files/child1/firmware_update/fw_1.bin-c1","version":"1.2"}}"#,
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn refusals_unknown_entity_no_capability_running_and_duplicate_id() {
        let mut s = store();
        let restart = || new(r#"{"entity":"device/c//","operation":"restart","cmd_id":"r1"}"#);
        let unknown = Facts {
            registered: false,
            capabilities: vec![],
        };
        assert!(matches!(
            s.start(restart(), &unknown, at(0)),
            Err(OpsError::UnknownEntity(_))
        ));
        assert!(matches!(
            s.start(restart(), &facts(&[]), at(0)),
            Err(OpsError::NoCapability { .. })
        ));
        s.start(restart(), &facts(&["restart"]), at(0)).unwrap();
        let again = new(r#"{"entity":"device/c//","operation":"restart"}"#);
        assert_eq!(
            s.start(again, &facts(&["restart"]), at(0))
                .unwrap_err()
                .to_string(),
            "device/c// is already running a restart operation: r1"
        );
        let forced =
            new(r#"{"entity":"device/d//","operation":"custom","cmd_id":"r1","force":true}"#);
        assert!(matches!(
            s.start(forced, &facts(&[]), at(0)),
            Err(OpsError::DuplicateId(_))
        ));
    }

    #[test]
    fn the_child_statuses_are_followed_and_the_end_is_cleared_after_keep_final() {
        let mut s = store();
        let id: EntityTopicId = "device/c//".parse().unwrap();
        s.start(
            new(r#"{"entity":"device/c//","operation":"restart","cmd_id":"r1"}"#),
            &facts(&["restart"]),
            at(0),
        )
        .unwrap();
        s.prepared("r1", Ok(None), at(0));
        // The echo of the agent's own init is no change.
        assert!(
            !s.on_update(&id, "restart", "r1", br#"{"status":"init"}"#, at(1))
                .0
        );
        assert!(
            s.on_update(&id, "restart", "r1", br#"{"status":"executing"}"#, at(2))
                .0
        );
        assert!(!s.on_update(&id, "restart", "r1", b"not json", at(2)).0);
        assert!(
            !s.on_update(&id, "other", "r1", br#"{"status":"successful"}"#, at(2))
                .0
        );
        assert!(
            s.on_update(&id, "restart", "r1", br#"{"status":"successful"}"#, at(3))
                .0
        );
        assert!(
            !s.on_update(&id, "restart", "r1", br#"{"status":"executing"}"#, at(4))
                .0
        );
        let statuses: Vec<&str> = s
            .get("r1")
            .unwrap()
            .history
            .iter()
            .map(|t| t.status.as_str())
            .collect();
        assert_eq!(statuses, ["preparing", "init", "executing", "successful"]);
        // Ended once, however often the end is repeated.
        let stats = s.stats();
        assert_eq!(stats.ended, [(("restart", "successful"), 1)].into());
        assert_eq!(stats.current, [(("restart", "successful"), 1)].into());
        assert_eq!(s.next_deadline(), Some(at(63)));
        assert!(s.tick(at(62)).is_empty());
        assert_eq!(
            s.tick(at(63)),
            [Action::Publish {
                topic: "te/device/c///cmd/restart/r1".into(),
                payload: vec![],
                retain: true
            }]
        );
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_child_cannot_move_an_operation_back_and_a_late_status_is_cleared_again() {
        let mut s = store();
        let id: EntityTopicId = "device/c//".parse().unwrap();
        s.start(
            new(r#"{"entity":"device/c//","operation":"restart","cmd_id":"r1"}"#),
            &facts(&["restart"]),
            at(0),
        )
        .unwrap();
        s.prepared("r1", Ok(None), at(0));
        assert!(
            !s.on_update(&id, "restart", "r1", br#"{"status":"preparing"}"#, at(1))
                .0
        );
        assert!(
            s.on_update(&id, "restart", "r1", br#"{"status":"executing"}"#, at(1))
                .0
        );
        assert!(
            !s.on_update(&id, "restart", "r1", br#"{"status":"init"}"#, at(2))
                .0
        );
        assert!(
            s.on_update(&id, "restart", "r1", br#"{"status":"successful"}"#, at(3))
                .0
        );
        assert_eq!(s.tick(at(63)).len(), 1, "cleared");
        let (changed, actions) =
            s.on_update(&id, "restart", "r1", br#"{"status":"successful"}"#, at(70));
        assert!(!changed);
        assert_eq!(
            actions,
            [Action::Publish {
                topic: "te/device/c///cmd/restart/r1".into(),
                payload: vec![],
                retain: true
            }]
        );
    }

    #[test]
    fn a_cancel_while_preparing_removes_the_file_linked_after_it_and_paths_are_plain() {
        let mut s = store();
        let op = s
            .start(new(r#"{"entity":"device/c%41//","operation":"firmware_update","cmd_id":"k","url":"http://x/fw%2541.bin"}"#), &facts(&["firmware_update"]), at(0))
            .unwrap();
        assert_eq!(op.file.as_deref(), Some("c_41/firmware_update/fw_41.bin-k"));
        assert_eq!(
            op.tedge_url.as_deref(),
            Some("http://gw:8000/te/v1/files/c_41/firmware_update/fw_41.bin-k")
        );
        s.cancel("k", at(1)).unwrap();
        assert_eq!(
            s.prepared("k", Ok(None), at(2)),
            [Action::RemoveFile(
                "c_41/firmware_update/fw_41.bin-k".into()
            )]
        );
        // A preparation that takes longer than the timeout fails the operation.
        s.start(new(r#"{"entity":"device/c//","operation":"firmware_update","cmd_id":"slow","url":"http://x/a","timeout_s":5}"#), &facts(&["firmware_update"]), at(0)).unwrap();
        assert_eq!(s.next_deadline(), Some(at(5)));
        assert!(s.tick(at(5)).is_empty(), "nothing was published");
        assert_eq!(s.get("slow").unwrap().status, "failed");
    }

    #[test]
    fn a_firmware_without_a_name_is_named_after_its_file_and_running_operations_are_capped() {
        let mut s = store();
        let op = s
            .start(new(r#"{"entity":"device/c//","operation":"firmware_update","cmd_id":"f","url":"http://x/fw-2.bin"}"#), &facts(&["firmware_update"]), at(0))
            .unwrap();
        assert_eq!(op.payload.get("name"), Some(&Value::from("fw-2.bin")));
        for i in 1..MAX_RUNNING {
            let json = format!(r#"{{"entity":"device/c{i}//","operation":"restart"}}"#);
            s.start(new(&json), &facts(&["restart"]), at(0)).unwrap();
        }
        let more = new(r#"{"entity":"device/x//","operation":"restart"}"#);
        assert_eq!(
            s.start(more, &facts(&["restart"]), at(0)),
            Err(OpsError::TooMany(MAX_RUNNING))
        );
    }

    #[test]
    fn a_silent_child_times_out_and_a_cancel_fails_and_clears_at_once() {
        let mut s = store();
        s.start(
            new(r#"{"entity":"device/c//","operation":"restart","cmd_id":"r1","timeout_s":5}"#),
            &facts(&["restart"]),
            at(0),
        )
        .unwrap();
        s.prepared("r1", Ok(None), at(0));
        assert_eq!(s.next_deadline(), Some(at(5)));
        let actions = s.tick(at(5));
        assert_eq!(actions.len(), 1);
        let op = s.get("r1").unwrap();
        assert_eq!(
            (op.status.as_str(), op.reason.as_deref()),
            ("failed", Some("timeout"))
        );

        s.start(new(r#"{"entity":"device/c//","operation":"firmware_update","cmd_id":"f1","file":"fw.bin"}"#), &facts(&["firmware_update"]), at(0)).unwrap();
        s.prepared("f1", Ok(None), at(0));
        let actions = s.cancel("f1", at(1)).unwrap();
        assert_eq!(actions.len(), 3, "{actions:?}");
        assert_eq!(
            actions[2],
            Action::RemoveFile("c/firmware_update/fw.bin-f1".into())
        );
        assert!(matches!(
            s.cancel("f1", at(2)),
            Err(OpsError::Finished { .. })
        ));
        assert!(matches!(
            s.cancel("nope", at(2)),
            Err(OpsError::NotFound(_))
        ));
        // A timeout and a cancel are failures; a custom operation counts as `other`.
        s.start(
            new(r#"{"entity":"device/d//","operation":"x_custom","cmd_id":"x1"}"#),
            &facts(&["x_custom"]),
            at(0),
        )
        .unwrap();
        s.prepared("x1", Ok(None), at(0));
        let id: EntityTopicId = "device/d//".parse().unwrap();
        s.on_update(&id, "x_custom", "x1", br#"{"status":"my-step"}"#, at(1));
        let stats = s.stats();
        assert_eq!(
            stats.ended,
            [
                (("firmware_update", "failed"), 1),
                (("restart", "failed"), 1)
            ]
            .into()
        );
        assert_eq!(stats.current.get(&("other", "other")), Some(&1));
    }

    #[test]
    fn an_upload_gets_a_destination_named_by_its_type_and_keeps_it() {
        let mut s = store();
        let op = s
            .start(new(r#"{"entity":"device/c//","operation":"config_snapshot","cmd_id":"s1","payload":{"type":"mosquitto"}}"#), &facts(&["config_snapshot"]), at(0))
            .unwrap();
        assert_eq!(op.file.as_deref(), Some("c/config_snapshot/mosquitto-s1"));
        s.prepared("s1", Ok(None), at(0));
        let id: EntityTopicId = "device/c//".parse().unwrap();
        let _ = s.on_update(
            &id,
            "config_snapshot",
            "s1",
            br#"{"status":"successful"}"#,
            at(1),
        );
        let actions = s.tick(at(61));
        assert_eq!(actions.len(), 1, "the file stays: {actions:?}");
    }
}
