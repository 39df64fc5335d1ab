//! `op start`: the `POST /te/v1/operations` request made of the command line, and a local file
//! uploaded first.
//!
//! A local file (`--file`) goes where the agent serves it for this command,
//! `<device>/<op>/<name>-<cmd_id>` (the agent recognises a file named for the command and
//! serves it in place, then removes it with the operation unless `--keep-file`), so the command
//! id is chosen here when none is given. The upload never replaces a file (`If-None-Match: *`),
//! and a start the agent refuses removes the upload again: nothing is left behind.
//!
//! `--set key=value` fills the payload: a value that reads as a JSON object, array, string,
//! `true`, `false` or `null` is taken as that JSON, anything else as text, numbers included,
//! since a version like `1.10` must not arrive as `1.1`; `--set key:=json` takes any JSON value,
//! for the numbers.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::{OpError, OPERATIONS_ROUTE};
use crate::client::{Base, Client, ClientError, PutOptions};
use crate::files::digest::Sha256;
use crate::ops::model::{Operation, MAX_CMD_ID};
use crate::ops::store::{device_name, safe_segment};
use crate::topic::EntityTopicId;

/// What `op start` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub operation: String,
    pub entity: EntityTopicId,
    pub source: Source,
    /// The file's expected SHA-256: checked against a local file before it is sent, and
    /// against a downloaded one by the agent.
    pub sha256: Option<Sha256>,
    pub settings: Vec<Setting>,
    pub cmd_id: Option<String>,
    pub timeout: Option<Duration>,
    pub force: bool,
    pub keep_file: bool,
}

/// Where the operation's file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    None,
    /// Uploaded from here.
    Local(PathBuf),
    /// Downloaded by the agent from this http(s) URL.
    Remote(String),
}

/// `--set key=value` or `--set key:=json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Value,
}

impl FromStr for Setting {
    type Err = String;

    fn from_str(text: &str) -> Result<Setting, String> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("expected KEY=VALUE or KEY:=JSON: {text:?}"));
        };
        let (key, value) = match key.strip_suffix(':') {
            Some(key) => {
                let value = serde_json::from_str(value)
                    .map_err(|e| format!("the value of {key:?} is not JSON ({e}): {value:?}"))?;
                (key, value)
            }
            None => {
                let value = match serde_json::from_str::<Value>(value) {
                    Ok(Value::Number(_)) | Err(_) => Value::from(value),
                    Ok(json) => json,
                };
                (key, value)
            }
        };
        if key.is_empty() {
            return Err(format!("a key is missing: {text:?}"));
        }
        Ok(Setting {
            key: key.to_owned(),
            value,
        })
    }
}

/// The payload of `settings`; a key set twice keeps its last value.
pub fn payload(settings: &[Setting]) -> Map<String, Value> {
    settings
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

/// An operation name or a command id as `op` takes them: letters, digits, `-`, `_`, `.` and
/// `~` (a topic level, and a file name in the store that needs no escaping).
pub fn check_name(what: &str, text: &str) -> Result<String, String> {
    if !crate::ops::model::is_plain_name(text) {
        return Err(format!(
            "{what} {text:?}: use letters, digits, '-', '_', '.' and '~'"
        ));
    }
    if text.len() > MAX_CMD_ID {
        return Err(format!("{what} is longer than {MAX_CMD_ID} bytes"));
    }
    Ok(text.to_owned())
}

/// A command id for a local upload: `cli-<unix ms>-<4 hex digits>`.
pub fn new_cmd_id(unix_ms: i64, random: [u8; 2]) -> String {
    format!("cli-{unix_ms}-{:02x}{:02x}", random[0], random[1])
}

/// Where a local file is uploaded for `cmd_id`: `<device>/<op>/<name>-<cmd_id>`, `<name>` being
/// the local file's name with anything but letters, digits, `-`, `_`, `.` and `~` made `_`.
pub fn upload_path(entity: &EntityTopicId, operation: &str, local: &Path, cmd_id: &str) -> String {
    // The agent's own rules, so that it finds the file where it would serve it.
    let name = local
        .file_name()
        .map(|n| safe_segment(&n.to_string_lossy()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "file".to_owned());
    format!(
        "{}/{}/{name}-{cmd_id}",
        safe_segment(&device_name(entity)),
        safe_segment(operation)
    )
}

/// `timeout_s`: whole seconds, rounded up, at least one.
pub fn timeout_s(timeout: Duration) -> u64 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    secs.max(1)
}

/// The body of `POST /te/v1/operations`; `file` and `sha256` are the upload's.
pub fn request(
    start: &Start,
    cmd_id: Option<&str>,
    file: Option<&str>,
    sha256: Option<Sha256>,
) -> Value {
    let mut body = Map::new();
    body.insert("entity".into(), start.entity.as_str().into());
    body.insert("operation".into(), start.operation.as_str().into());
    if let Some(id) = cmd_id {
        body.insert("cmd_id".into(), id.into());
    }
    if let Some(file) = file {
        body.insert("file".into(), file.into());
    }
    if let Source::Remote(url) = &start.source {
        body.insert("url".into(), url.as_str().into());
    }
    if let Some(sha256) = sha256.or(start.sha256) {
        body.insert("sha256".into(), sha256.to_string().into());
    }
    if !start.settings.is_empty() {
        body.insert("payload".into(), Value::Object(payload(&start.settings)));
    }
    if let Some(timeout) = start.timeout {
        body.insert("timeout_s".into(), timeout_s(timeout).into());
    }
    if start.force {
        body.insert("force".into(), true.into());
    }
    if start.keep_file {
        body.insert("keep_file".into(), true.into());
    }
    Value::Object(body)
}

impl Client {
    /// Uploads the local file if there is one, then starts the operation: the agent's record,
    /// `preparing`.
    pub async fn start_operation(&self, base: &Base, start: &Start) -> Result<Operation, OpError> {
        let url = base.route_url(OPERATIONS_ROUTE, &[]);
        let (body, uploaded) = match &start.source {
            Source::Local(local) => {
                let cmd_id = match &start.cmd_id {
                    Some(id) => id.clone(),
                    None => new_cmd_id(crate::twin::time::Timestamp::now().as_millis(), random()),
                };
                let path = upload_path(&start.entity, &start.operation, local, &cmd_id);
                let file_url = base.file_url(&path);
                let options = PutOptions {
                    expected: start.sha256,
                    create_only: true,
                };
                let uploaded = match self.put_with(local, &file_url, options).await {
                    Ok(uploaded) => uploaded,
                    Err(ClientError::Status { status, .. })
                        if status == StatusCode::PRECONDITION_FAILED =>
                    {
                        return Err(OpError::Taken { cmd_id, path })
                    }
                    Err(e) => return Err(e.into()),
                };
                let body = request(start, Some(&cmd_id), Some(&path), Some(uploaded.digest));
                (body, Some(file_url))
            }
            _ => (request(start, start.cmd_id.as_deref(), None, None), None),
        };
        let started = self
            .call(
                Method::POST,
                url,
                Some(&body),
                StatusCode::CREATED,
                "an operation",
            )
            .await;
        if let (Err(_), Some(file_url)) = (&started, &uploaded) {
            // Refused (or lost): the upload serves nothing. The start's error is the one to
            // report; a removal that fails leaves a file the store's quota still sees.
            if let Err(e) = self.rm(file_url).await {
                eprintln!("cannot remove the upload again: {e}");
            }
        }
        started
    }
}

/// Two random bytes; zeros if the system has none to give (the milliseconds still differ).
fn random() -> [u8; 2] {
    let mut bytes = [0; 2];
    let _ = getrandom::fill(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn setting(text: &str) -> Result<(String, Value), String> {
        text.parse::<Setting>().map(|s| (s.key, s.value))
    }

    #[test]
    fn a_setting_is_json_when_it_reads_as_json_but_a_number_stays_text() {
        assert_eq!(setting("name=fw"), Ok(("name".into(), json!("fw"))));
        assert_eq!(setting("version=1.2"), Ok(("version".into(), json!("1.2"))));
        assert_eq!(
            setting("version=1.10"),
            Ok(("version".into(), json!("1.10")))
        );
        assert_eq!(setting("n=42"), Ok(("n".into(), json!("42"))));
        assert_eq!(setting("on=true"), Ok(("on".into(), json!(true))));
        assert_eq!(setting("x=null"), Ok(("x".into(), json!(null))));
        assert_eq!(setting(r#"q="42""#), Ok(("q".into(), json!("42"))));
        assert_eq!(
            setting(r#"m=[{"a":1}]"#),
            Ok(("m".into(), json!([{"a": 1}])))
        );
        assert_eq!(setting("e="), Ok(("e".into(), json!(""))));
        assert_eq!(setting("u=a=b"), Ok(("u".into(), json!("a=b"))));
        assert_eq!(setting("t= {x"), Ok(("t".into(), json!(" {x"))));
    }

    #[test]
    fn a_setting_with_colon_equals_takes_any_json_and_only_json() {
        assert_eq!(setting("n:=42"), Ok(("n".into(), json!(42))));
        assert_eq!(setting("v:=1.10"), Ok(("v".into(), json!(1.1))));
        assert_eq!(setting(r#"s:="x""#), Ok(("s".into(), json!("x"))));
        assert!(setting("n:=forty").unwrap_err().contains("is not JSON"));
    }

    #[test]
    fn a_setting_needs_a_key_and_an_equals_sign() {
        assert!(setting("name").unwrap_err().contains("KEY=VALUE"));
        assert!(setting("=x").unwrap_err().contains("a key is missing"));
        assert!(setting(":=1").unwrap_err().contains("a key is missing"));
    }

    #[test]
    fn a_key_set_twice_keeps_its_last_value() {
        let settings: Vec<Setting> = ["a=1", "b=x", "a=2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            Value::Object(payload(&settings)),
            json!({"a": "2", "b": "x"})
        );
    }

    #[test]
    fn names_are_plain_topic_levels_and_file_names() {
        assert_eq!(
            check_name("operation", "firmware_update"),
            Ok("firmware_update".into())
        );
        assert_eq!(check_name("cmd id", "cli-1.2~x"), Ok("cli-1.2~x".into()));
        for bad in ["", ".", "..", "a/b", "a b", "a+", "#", "a%41", "é"] {
            assert!(check_name("cmd id", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("cmd id", &"a".repeat(129)).is_err());
        assert!(check_name("cmd id", &"a".repeat(128)).is_ok());
    }

    #[test]
    fn a_generated_command_id_has_the_time_and_four_hex_digits() {
        assert_eq!(
            new_cmd_id(1_700_000_000_123, [0x0a, 0xff]),
            "cli-1700000000123-0aff"
        );
        assert!(check_name("cmd id", &new_cmd_id(1, [0, 0])).is_ok());
    }

    #[test]
    fn a_local_file_goes_where_the_agent_serves_it_for_the_command() {
        let child: EntityTopicId = "device/child1//".parse().unwrap();
        assert_eq!(
            upload_path(
                &child,
                "firmware_update",
                Path::new("/tmp/fw.bin"),
                "cli-1-ab12"
            ),
            "child1/firmware_update/fw.bin-cli-1-ab12"
        );
        let service: EntityTopicId = "device/child1/service/app".parse().unwrap();
        assert_eq!(
            upload_path(&service, "config_update", Path::new("a b#é.conf"), "c"),
            "child1/config_update/a_b__.conf-c"
        );
        let custom: EntityTopicId = "factory/line1/plc/".parse().unwrap();
        assert_eq!(
            upload_path(&custom, "x", Path::new("/"), "c"),
            "factory_line1_plc/x/file-c"
        );
    }

    #[test]
    fn a_timeout_is_whole_seconds_rounded_up() {
        assert_eq!(timeout_s(Duration::from_secs(90)), 90);
        assert_eq!(timeout_s(Duration::from_millis(1500)), 2);
        assert_eq!(timeout_s(Duration::from_millis(1)), 1);
        assert_eq!(timeout_s(Duration::ZERO), 1);
    }

    fn start(source: Source) -> Start {
        Start {
            operation: "firmware_update".into(),
            entity: "device/child1//".parse().unwrap(),
            source,
            sha256: None,
            settings: vec!["name=fw".parse().unwrap(), "version=1.2".parse().unwrap()],
            cmd_id: None,
            timeout: None,
            force: false,
            keep_file: false,
        }
    }

    #[test]
    fn the_request_carries_what_was_given_and_nothing_else() {
        let digest = Sha256([0xab; 32]);
        assert_eq!(
            request(
                &start(Source::Local("fw.bin".into())),
                Some("c1"),
                Some("child1/firmware_update/fw.bin-c1"),
                Some(digest)
            ),
            json!({"entity": "device/child1//", "operation": "firmware_update", "cmd_id": "c1",
                   "file": "child1/firmware_update/fw.bin-c1", "sha256": "ab".repeat(32),
                   "payload": {"name": "fw", "version": "1.2"}})
        );
        let mut remote = start(Source::Remote("https://x/fw.bin".into()));
        remote.sha256 = Some(digest);
        remote.settings.clear();
        remote.timeout = Some(Duration::from_millis(1500));
        remote.force = true;
        remote.keep_file = true;
        assert_eq!(
            request(&remote, None, None, None),
            json!({"entity": "device/child1//", "operation": "firmware_update",
                   "url": "https://x/fw.bin", "sha256": "ab".repeat(32), "timeout_s": 2,
                   "force": true, "keep_file": true})
        );
    }
}
