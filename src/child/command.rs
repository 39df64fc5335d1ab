//! Command payloads (spec/twin.md §3.3, /work/ops-plan.md): what an incoming message on
//! `<root>/<entity>/cmd/<op>/<cmd_id>` asks for, the status messages the child answers with, and
//! the [`Plan`] of an `init` command (what to download, verify and upload).
//!
//! Pure: bytes and JSON in, values and bytes out. The rules:
//! - an empty payload is the agent clearing the topic: ignored;
//! - a JSON object whose `status` is `init`, or has no `status`, is a command to run;
//! - `successful` and `failed` are final: that command is done, whoever said so;
//! - any other status (`executing`, `scheduled`, custom steps) is ours or the agent's: ignored;
//! - anything else (not JSON, not an object, a non-string `status`) is refused with a reason.
//!
//! A status message is the command's own object with `status` replaced (and `reason` for
//! `failed`), so every field the agent sent travels back; JSON is compact with sorted keys.

use percent_encoding::percent_decode_str;
use reqwest::Url;
use serde_json::{Map, Value};

use crate::client::remote::FILES_ROUTE;
use crate::files::digest::Sha256;

/// Download-type operations that make no sense without a file: `tedgeUrl` is required.
pub const FILE_OPS: [&str; 2] = ["firmware_update", "config_update"];
/// The name of a downloaded file whose URL gives none usable.
const DEFAULT_FILE_NAME: &str = "file";

/// What an incoming command message means to the child.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An empty payload: the topic was cleared.
    Cleared,
    /// A command to run: the payload object, as received.
    Init(Map<String, Value>),
    /// `successful` or `failed`.
    Final,
    /// Any other status: someone else's step, or our own `executing`.
    Progress,
    /// Not a command payload; the reason goes into `failed`.
    Invalid(String),
}

/// Reads an incoming payload.
pub fn classify(payload: &[u8]) -> Incoming {
    if payload.is_empty() {
        return Incoming::Cleared;
    }
    let object = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Incoming::Invalid("invalid command payload: not a JSON object".into()),
        Err(e) => return Incoming::Invalid(format!("invalid command payload: not JSON ({e})")),
    };
    match object.get("status") {
        None => Incoming::Init(object),
        Some(Value::String(status)) => match status.as_str() {
            "init" => Incoming::Init(object),
            "successful" | "failed" => Incoming::Final,
            _ => Incoming::Progress,
        },
        Some(_) => Incoming::Invalid("invalid command payload: status is not a string".into()),
    }
}

/// A status the child reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Executing,
    Successful,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Executing => "executing",
            Status::Successful => "successful",
            Status::Failed => "failed",
        }
    }
}

/// The command's object with `status` set (and `reason`, when given).
pub fn status_payload(
    command: &Map<String, Value>,
    status: Status,
    reason: Option<&str>,
) -> Vec<u8> {
    let mut object = command.clone();
    object.insert("status".into(), status.as_str().into());
    if let Some(reason) = reason {
        object.insert("reason".into(), reason.into());
    }
    Value::Object(object).to_string().into_bytes()
}

/// `failed` for a payload that is no command object: only the status and the reason.
pub fn refusal_payload(reason: &str) -> Vec<u8> {
    status_payload(&Map::new(), Status::Failed, Some(reason))
}

/// What running an `init` command involves besides its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub download: Option<Download>,
    /// Where the handler's output is PUT (upload-type operations).
    pub upload: Option<Url>,
}

/// A file to fetch before the handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub url: Url,
    /// The command's `sha256`, checked on top of the agent's `X-Checksum-Sha256`.
    pub sha256: Option<Sha256>,
    /// The file's name in the command's directory: the URL's last segment, made safe.
    pub file_name: String,
}

pub use crate::ops::model::is_upload;

/// The plan of an `op` command with `payload`, its URLs resolved against `gateway`; a refusal
/// reason for a command that cannot run (no `tedgeUrl` where one is needed, a bad URL or digest).
pub fn plan(op: &str, payload: &Map<String, Value>, gateway: &Url) -> Result<Plan, String> {
    let url = match payload.get("tedgeUrl") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(resolve_url(gateway, text)?),
        Some(_) => return Err("invalid command payload: tedgeUrl is not a string".into()),
    };
    if is_upload(op) {
        let url = url.ok_or_else(|| format!("a {op} command needs a tedgeUrl to upload to"))?;
        return Ok(Plan {
            download: None,
            upload: Some(url),
        });
    }
    if url.is_none() && FILE_OPS.contains(&op) {
        return Err(format!("a {op} command needs a tedgeUrl to download from"));
    }
    let sha256 = match payload.get("sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.parse::<Sha256>().map_err(|()| {
            format!("invalid command payload: sha256 {text:?} is not 64 hex digits")
        })?),
        Some(_) => return Err("invalid command payload: sha256 is not a string".into()),
    };
    Ok(Plan {
        download: url.map(|url| Download {
            file_name: file_name(&url),
            url,
            sha256,
        }),
        upload: None,
    })
}

/// `tedgeUrl` as the child fetches it. A URL into the agent's file store (its path has
/// `/te/v1/files/`) is taken from `gateway` with the same store path and query: the agent
/// writes its own public URL, which need not be how this child reaches it. A relative URL is
/// joined to `gateway`; any other http(s) URL is used as it is.
pub fn resolve_url(gateway: &Url, text: &str) -> Result<Url, String> {
    let url = Url::options()
        .base_url(Some(gateway))
        .parse(text)
        .map_err(|e| format!("invalid tedgeUrl {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "invalid tedgeUrl {text:?}: only http and https are supported"
        ));
    }
    let marker = format!("/{FILES_ROUTE}/");
    let Some(at) = url.path().find(&marker) else {
        return Ok(url);
    };
    let store_path = &url.path()[at + marker.len()..];
    let mut rebased = gateway.clone();
    let prefix = gateway.path().trim_end_matches('/');
    rebased.set_path(&format!("{prefix}{marker}{store_path}"));
    rebased.set_query(url.query());
    Ok(rebased)
}

/// The URL's last path segment, decoded; [`DEFAULT_FILE_NAME`] when that is no plain name.
fn file_name(url: &Url) -> String {
    let last = url.path().rsplit('/').next().unwrap_or_default();
    let name = percent_decode_str(last).decode_utf8_lossy();
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        DEFAULT_FILE_NAME.to_owned()
    } else {
        name.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        }
    }

    fn gateway() -> Url {
        Url::parse("http://gw:8000/").unwrap()
    }

    const DIGEST: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn a_missing_status_means_init_and_final_statuses_are_told_apart_from_steps() {
        assert_eq!(classify(b""), Incoming::Cleared);
        assert_eq!(
            classify(br#"{"tedgeUrl":"x"}"#),
            Incoming::Init(object(json!({"tedgeUrl":"x"})))
        );
        assert_eq!(
            classify(br#"{"status":"init","a":1}"#),
            Incoming::Init(object(json!({"status":"init","a":1})))
        );
        assert_eq!(classify(br#"{"status":"successful"}"#), Incoming::Final);
        assert_eq!(
            classify(br#"{"status":"failed","reason":"x"}"#),
            Incoming::Final
        );
        for step in ["executing", "scheduled", "download", ""] {
            let payload = format!(r#"{{"status":"{step}"}}"#);
            assert_eq!(classify(payload.as_bytes()), Incoming::Progress, "{step}");
        }
    }

    #[test]
    fn payloads_that_are_no_command_object_are_refused_with_a_reason() {
        assert_eq!(
            classify(b"not json"),
            Incoming::Invalid(
                "invalid command payload: not JSON (expected ident at line 1 column 2)".into()
            )
        );
        assert_eq!(
            classify(b"\xff"),
            Incoming::Invalid(
                "invalid command payload: not JSON (expected value at line 1 column 1)".into()
            )
        );
        for payload in [&b"[1]"[..], b"\"init\"", b"null", b"3"] {
            assert_eq!(
                classify(payload),
                Incoming::Invalid("invalid command payload: not a JSON object".into())
            );
        }
        assert_eq!(
            classify(br#"{"status":1}"#),
            Incoming::Invalid("invalid command payload: status is not a string".into())
        );
    }

    #[test]
    fn status_messages_keep_every_field_of_the_command_with_sorted_keys() {
        let command = object(json!({"tedgeUrl":"u","status":"init","name":"fw","x":{"b":1,"a":2}}));
        assert_eq!(
            String::from_utf8(status_payload(&command, Status::Executing, None)).unwrap(),
            r#"{"name":"fw","status":"executing","tedgeUrl":"u","x":{"a":2,"b":1}}"#
        );
        assert_eq!(
            String::from_utf8(status_payload(
                &command,
                Status::Failed,
                Some("no \"space\"")
            ))
            .unwrap(),
            r#"{"name":"fw","reason":"no \"space\"","status":"failed","tedgeUrl":"u","x":{"a":2,"b":1}}"#
        );
        assert_eq!(
            String::from_utf8(refusal_payload("bad")).unwrap(),
            r#"{"reason":"bad","status":"failed"}"#
        );
    }

    #[test]
    fn a_download_plan_has_the_url_the_digest_and_a_safe_file_name() {
        let payload = object(json!({
            "tedgeUrl": "http://127.0.0.1:0/te/v1/files/c1/firmware_update/fw%201.bin-7",
            "sha256": DIGEST.to_uppercase(),
        }));
        let plan = plan("firmware_update", &payload, &gateway()).unwrap();
        let download = plan.download.unwrap();
        assert_eq!(
            download.url.as_str(),
            "http://gw:8000/te/v1/files/c1/firmware_update/fw%201.bin-7"
        );
        assert_eq!(download.sha256.unwrap().to_string(), DIGEST);
        assert_eq!(download.file_name, "fw 1.bin-7");
        assert_eq!(plan.upload, None);
    }

    #[test]
    fn operations_without_a_file_need_no_tedge_url() {
        let plan = plan("restart", &object(json!({"status":"init"})), &gateway()).unwrap();
        assert_eq!(
            plan,
            Plan {
                download: None,
                upload: None
            }
        );
    }

    #[test]
    fn commands_that_cannot_run_are_refused_with_a_reason() {
        let refused =
            |op: &str, payload: Value| plan(op, &object(payload), &gateway()).unwrap_err();
        assert_eq!(
            refused("firmware_update", json!({})),
            "a firmware_update command needs a tedgeUrl to download from"
        );
        assert_eq!(
            refused("config_snapshot", json!({"type":"x"})),
            "a config_snapshot command needs a tedgeUrl to upload to"
        );
        assert_eq!(
            refused("custom", json!({"tedgeUrl": 5})),
            "invalid command payload: tedgeUrl is not a string"
        );
        assert_eq!(
            refused("custom", json!({"tedgeUrl": "ftp://gw/x"})),
            "invalid tedgeUrl \"ftp://gw/x\": only http and https are supported"
        );
        assert_eq!(
            refused("custom", json!({"tedgeUrl": "http://[bad/x"})),
            "invalid tedgeUrl \"http://[bad/x\": invalid IPv6 address"
        );
        assert_eq!(
            refused(
                "custom",
                json!({"tedgeUrl": "/te/v1/files/a", "sha256": "abc"})
            ),
            "invalid command payload: sha256 \"abc\" is not 64 hex digits"
        );
        assert_eq!(
            refused("custom", json!({"tedgeUrl": "/te/v1/files/a", "sha256": 1})),
            "invalid command payload: sha256 is not a string"
        );
    }

    #[test]
    fn file_store_urls_are_fetched_from_the_gateway_and_others_as_they_are() {
        let gw = gateway();
        let resolved = |text: &str| resolve_url(&gw, text).unwrap().to_string();
        assert_eq!(
            resolved("https://public.example:443/te/v1/files/c1/log_upload/x-1?v=2"),
            "http://gw:8000/te/v1/files/c1/log_upload/x-1?v=2"
        );
        assert_eq!(
            resolved("/te/v1/files/c1/a"),
            "http://gw:8000/te/v1/files/c1/a"
        );
        assert_eq!(
            resolved("https://cdn.example/fw.bin"),
            "https://cdn.example/fw.bin"
        );
        let proxied = Url::parse("https://gw/edge/").unwrap();
        assert_eq!(
            resolve_url(&proxied, "http://127.0.0.1:8000/te/v1/files/c%2F1/a")
                .unwrap()
                .as_str(),
            "https://gw/edge/te/v1/files/c%2F1/a"
        );
    }

    #[test]
    fn a_url_without_a_usable_last_segment_gives_a_default_file_name() {
        for (url, name) in [
            ("http://gw/te/v1/files/a/", "file"),
            ("http://gw/te/v1/files/a/%2E%2E", "file"),
            ("http://gw/te/v1/files/a/b%2Fc", "file"),
            ("http://gw/te/v1/files/a/%C3%A9t%C3%A9", "été"),
        ] {
            assert_eq!(file_name(&Url::parse(url).unwrap()), name, "{url}");
        }
    }
}
