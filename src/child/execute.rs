//! One command from `executing` to its final status: download `tedgeUrl` (resumed and verified
//! by [`crate::client`], then checked against the command's `sha256`), run the handler, upload
//! its output, and report `successful` or `failed` with the reason.
//!
//! Each command gets a temporary directory of its own under the work dir, deleted when the
//! command is done: the handler must copy what it wants to keep. A download interrupted by the
//! network is resumed from where it stopped, up to [`DOWNLOAD_ATTEMPTS`] times; any other
//! failure fails the command at once. A stopping runner ([`Job::abort`]) cuts every step short
//! and the command fails as interrupted. A command someone else reported final meanwhile (the
//! agent cancelling it) is cut short too, and the child publishes nothing more on its topic.

use crate::report::chain;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::bus::Bus;
use super::command::{self, Plan, Status};
use super::handler::{self, INTERRUPTED};
use super::settings::Settings;
use crate::client::{Client, ClientError, Downloaded};
use crate::files::digest::{Hasher, Sha256};

/// Attempts at a download that the network interrupted; each resumes the last.
pub const DOWNLOAD_ATTEMPTS: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What every command task shares.
#[derive(Clone)]
pub struct Job {
    pub settings: Arc<Settings>,
    pub bus: Bus,
    pub http: Arc<Client>,
    /// Cancelled when running commands must stop (after the shutdown grace period).
    pub abort: CancellationToken,
}

/// A command to run: its topic, operation, id, payload (as received and as an object), plan.
#[derive(Debug, Clone)]
pub struct Command {
    pub topic: String,
    pub op: String,
    pub id: String,
    pub raw: String,
    pub payload: Map<String, Value>,
    pub plan: Plan,
    /// Cancelled when someone else reported this command final: stop, and stay silent.
    pub cancelled: CancellationToken,
}

impl Job {
    /// Runs `command` to its final status, publishing each status; silent from the moment
    /// someone else reports it final.
    pub async fn run(&self, command: &Command) {
        let Some(handler) = self.settings.handler(&command.op) else {
            // The runner refuses commands it has no handler for before starting them.
            let reason = format!("no handler for {} on this child", command.op);
            return self.publish(command, Status::Failed, Some(&reason)).await;
        };
        self.publish(command, Status::Executing, None).await;
        tracing::info!(op = %command.op, id = %command.id, "executing");
        let stop = self.abort.child_token();
        let steps = self.steps(command, &handler.command, &stop);
        tokio::pin!(steps);
        let outcome = tokio::select! {
            outcome = &mut steps => outcome,
            // Not dropped but stopped: the handler's process group is killed, the directory removed.
            _ = command.cancelled.cancelled() => {
                stop.cancel();
                steps.await
            }
        };
        if command.cancelled.is_cancelled() {
            tracing::info!(op = %command.op, id = %command.id, "reported final by someone else: stopped");
            return;
        }
        let (status, reason) = match &outcome {
            Ok(()) => (Status::Successful, None),
            Err(reason) => (Status::Failed, Some(reason.as_str())),
        };
        match reason {
            None => tracing::info!(op = %command.op, id = %command.id, "successful"),
            Some(reason) => tracing::warn!(op = %command.op, id = %command.id, "failed: {reason}"),
        }
        self.publish(command, status, reason).await;
    }

    async fn publish(&self, command: &Command, status: Status, reason: Option<&str>) {
        let payload = command::status_payload(&command.payload, status, reason);
        self.bus.publish(&command.topic, payload).await;
    }

    /// Download, handler, upload; the failure reason.
    async fn steps(
        &self,
        command: &Command,
        handler_command: &str,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let settings = &self.settings;
        let dir = tempfile::Builder::new()
            .prefix(&format!("edge-agent-child-{}-", command.op))
            .tempdir_in(&settings.work_dir)
            .map_err(|e| {
                format!(
                    "cannot create a work directory in {}: {e}",
                    settings.work_dir.display()
                )
            })?;
        let mut env = vec![
            ("EDGE_OPERATION", OsString::from(&command.op)),
            ("EDGE_CMD_ID", OsString::from(&command.id)),
            ("EDGE_PAYLOAD", OsString::from(&command.raw)),
        ];
        if let Some(download) = &command.plan.download {
            let path = dir.path().join(&download.file_name);
            self.download(&download.url, &path, download.sha256, stop)
                .await?;
            env.push(("EDGE_FILE", path.into_os_string()));
        }
        let output = dir.path().join("output");
        if command.plan.upload.is_some() {
            env.push(("EDGE_OUTPUT", output.clone().into_os_string()));
        }
        let label = format!("{}/{}", command.op, command.id);
        let ended = handler::run(
            handler_command,
            &env,
            settings.handler_timeout,
            stop,
            &label,
        )
        .await
        .map_err(|e| format!("cannot run the handler: {e}"))?;
        if !ended.success() {
            return Err(ended.to_string());
        }
        if let Some(url) = &command.plan.upload {
            self.upload(&output, url, stop).await?;
        }
        Ok(())
    }

    /// Fetches `url` into `path`, resuming after interruptions; checks `expected` when given.
    async fn download(
        &self,
        url: &reqwest::Url,
        path: &Path,
        expected: Option<Sha256>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let mut attempt = 1;
        let downloaded = loop {
            let result = tokio::select! {
                result = self.http.get(url, path) => result,
                _ = stop.cancelled() => return Err(INTERRUPTED.into()),
            };
            match result {
                Err(e @ (ClientError::Interrupted { .. } | ClientError::Connect { .. }))
                    if attempt < DOWNLOAD_ATTEMPTS =>
                {
                    tracing::warn!("download attempt {attempt} failed: {}; retrying", chain(&e));
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_DELAY * attempt) => {}
                        _ = stop.cancelled() => return Err(INTERRUPTED.into()),
                    }
                    attempt += 1;
                }
                Err(ClientError::DigestMismatch {
                    url,
                    expected,
                    actual,
                    ..
                }) => {
                    return Err(format!(
                        "download failed: {url} arrived with SHA-256 {actual}, the agent \
                         announced {expected}"
                    ))
                }
                Err(e) => return Err(format!("download failed: {}", chain(&e))),
                Ok(downloaded) => break downloaded,
            }
        };
        let Some(expected) = expected else {
            return Ok(());
        };
        let actual = match downloaded {
            Downloaded::Fetched {
                digest: Some(digest),
                ..
            }
            | Downloaded::Complete { digest, .. } => digest,
            Downloaded::Fetched { digest: None, .. } => digest_of(path.to_owned())
                .await
                .map_err(|e| format!("cannot read the downloaded file: {e}"))?,
        };
        if actual != expected {
            return Err(format!(
                "sha256 mismatch: the downloaded file's SHA-256 is {actual}, the command's \
                 sha256 is {expected}"
            ));
        }
        Ok(())
    }

    async fn upload(
        &self,
        output: &Path,
        url: &reqwest::Url,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        match tokio::fs::metadata(output).await {
            Ok(meta) if meta.is_file() => {}
            _ => return Err("the handler wrote no file to EDGE_OUTPUT".into()),
        }
        let result = tokio::select! {
            result = self.http.put(output, url) => result,
            _ = stop.cancelled() => return Err(INTERRUPTED.into()),
        };
        result
            .map(drop)
            .map_err(|e| format!("upload failed: {}", chain(&e)))
    }
}

/// The SHA-256 of the file at `path`, on the blocking pool.
async fn digest_of(path: PathBuf) -> std::io::Result<Sha256> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Hasher::new();
        hasher.read_from(&mut file)?;
        Ok(hasher.finish())
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}
