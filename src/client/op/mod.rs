//! The client of operations on child devices (issue #5): what `edge-agent op
//! start|list|show|cancel|fetch` do against an agent's `/te/v1/operations`.
//!
//! # Layout
//! - `start`: the request `op start` makes of its arguments (payload settings, command id, the
//!   store path a local file is uploaded to; pure), and starting: upload, then `POST`.
//! - `follow`: `op start --wait`: each status once, in order, and how the operation ended
//!   (pure); the polling.
//! - `render`: the table of `op list` and the JSON of `op show` (pure).
//! - `fetch`: downloading the file an upload-type operation received.
//! - `error`: what an `op` command fails with.
//!
//! The calls are [`Client`] methods: they share its TLS setup, and a local file goes up and a
//! received one comes down through its `put` and its verified, resumable `get`. Nothing here
//! prints to stdout: results are returned for `main` (and `--wait`'s lines handed to a callback).

pub mod error;
pub mod fetch;
pub mod follow;
pub mod render;
pub mod start;

use reqwest::{Method, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use error::OpError;
pub use follow::End;
pub use start::{Setting, Source, Start};

use super::error::Transport;
use super::{one_line, unreachable, Base, Client, ClientError};
use crate::ops::model::Operation;
use crate::ops::store::Filter;

/// The route of the operations API, under a base URL.
pub const OPERATIONS_ROUTE: &str = "te/v1/operations";

impl Client {
    /// `GET /te/v1/operations/<cmd_id>`.
    pub async fn operation(&self, base: &Base, cmd_id: &str) -> Result<Operation, OpError> {
        let url = base.route_url(OPERATIONS_ROUTE, &[cmd_id]);
        self.call(Method::GET, url, None, StatusCode::OK, "an operation")
            .await
    }

    /// `GET /te/v1/operations[?entity=&operation=&status=]`, oldest first.
    pub async fn operations(
        &self,
        base: &Base,
        filter: &Filter,
    ) -> Result<Vec<Operation>, OpError> {
        let mut url = base.route_url(OPERATIONS_ROUTE, &[]);
        let pairs = [
            ("entity", &filter.entity),
            ("operation", &filter.operation),
            ("status", &filter.status),
        ];
        if pairs.iter().any(|(_, value)| value.is_some()) {
            let mut query = url.query_pairs_mut();
            for (name, value) in pairs {
                if let Some(value) = value {
                    query.append_pair(name, value);
                }
            }
        }
        self.call(
            Method::GET,
            url,
            None,
            StatusCode::OK,
            "a list of operations",
        )
        .await
    }

    /// `DELETE /te/v1/operations/<cmd_id>`: the operation, `failed` with reason `cancelled`.
    pub async fn cancel_operation(&self, base: &Base, cmd_id: &str) -> Result<Operation, OpError> {
        let url = base.route_url(OPERATIONS_ROUTE, &[cmd_id]);
        self.call(Method::DELETE, url, None, StatusCode::OK, "an operation")
            .await
    }

    /// One request to the operations API, with an optional JSON body; its answer, read as `T`
    /// when it is `success`, else as the agent's refusal.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        success: StatusCode,
        expected: &'static str,
    ) -> Result<T, OpError> {
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| unreachable(&url, &e))?;
        let status = response.status();
        let text = read_text(&url, response).await?;
        if status != success {
            return Err(OpError::Refused {
                status,
                message: message_of(&text),
            });
        }
        serde_json::from_str(&text).map_err(|source| OpError::Answer {
            method,
            url: url.to_string(),
            expected,
            source,
        })
    }
}

async fn read_text(url: &Url, response: Response) -> Result<String, ClientError> {
    response.text().await.map_err(|e| ClientError::Interrupted {
        url: url.to_string(),
        source: Transport::of(&e),
    })
}

/// What a refusal says: the `error` of the agent's `{"error": "…"}`, else its text, on one line.
fn message_of(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(object)) => match object.get("error") {
            Some(Value::String(message)) => one_line(message),
            _ => one_line(body),
        },
        _ => one_line(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_the_agent_said() {
        assert_eq!(
            message_of(r#"{"error":"operation not found: x"}"#),
            "operation not found: x"
        );
        assert_eq!(message_of("Service\n  Unavailable"), "Service Unavailable");
        assert_eq!(message_of(r#"{"other":1}"#), r#"{"other":1}"#);
        assert_eq!(message_of(""), "");
    }

    #[test]
    fn a_refusal_shows_the_status_then_the_message() {
        let e = OpError::Refused {
            status: StatusCode::CONFLICT,
            message: "device/child1// is already running a firmware_update operation: a".into(),
        };
        assert_eq!(
            e.to_string(),
            "409 Conflict: device/child1// is already running a firmware_update operation: a"
        );
        let e = OpError::Refused {
            status: StatusCode::BAD_GATEWAY,
            message: String::new(),
        };
        assert_eq!(e.to_string(), "502 Bad Gateway");
    }
}
