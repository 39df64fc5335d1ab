//! What an `op` command can fail with: the transfer errors of the file client, the agent's
//! refusals (its status and message, as `<status>: <message>`), an answer that is not what the
//! API promises, and what `op start --file` and `op fetch` check before they transfer anything.

use reqwest::{Method, StatusCode};

use crate::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent refused: its status and the `error` of its JSON body.
    #[error("{status}{}", colon(message))]
    Refused { status: StatusCode, message: String },
    #[error("{method} {url} answered with something that is not {expected}")]
    Answer {
        method: Method,
        url: String,
        expected: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// `op start --file --cmd-id ID`: the upload would replace another command's file.
    #[error("command id {cmd_id} is taken: {path} exists already in the agent's file store")]
    Taken { cmd_id: String, path: String },
    #[error(
        "operation {cmd_id} is a {operation}: only config_snapshot and log_upload operations \
         receive a file to fetch"
    )]
    NotAnUpload { cmd_id: String, operation: String },
    #[error("operation {cmd_id} is {status}: its file can be fetched once it is successful")]
    NotSuccessful { cmd_id: String, status: String },
    #[error("operation {cmd_id} names no file")]
    NoFile { cmd_id: String },
}

impl OpError {
    /// A failure that may pass while `--wait` polls: the agent unreachable or restarting.
    pub fn is_transient(&self) -> bool {
        match self {
            OpError::Client(ClientError::Connect { .. } | ClientError::Interrupted { .. }) => true,
            OpError::Refused { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
            _ => false,
        }
    }
}

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}
