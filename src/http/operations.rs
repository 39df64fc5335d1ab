//! `/te/v1/operations` (issue #5): start an operation on a child, list and show operations,
//! cancel one. Handlers only: the rules are the operations task's, the statuses
//! [`super::error`]'s.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /te/v1/operations` | 201 the operation (`preparing`), `Location` its URL |
//! | `GET /te/v1/operations[?entity=&operation=&status=]` | 200 array, oldest first |
//! | `GET /te/v1/operations/<cmd_id>` | 200 the operation, with its history |
//! | `DELETE /te/v1/operations/<cmd_id>` | 200 the operation, `failed` (`cancelled`) |

use percent_encoding::percent_decode_str;
use serde_json::Value;
use warp::http::header::{HeaderValue, LOCATION};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::body::{self, Body};
use super::error::ApiError;
use super::json;
use crate::ops::model::{self, Operation};
use crate::ops::store::{Facts, Filter};
use crate::ops::task::OpsHandle;
use crate::topic::EntityTopicId;
use crate::twin::api::Query;
use crate::twin::error::TwinError;
use crate::twin::TwinHandle;

/// `/te/v1/operations`.
pub async fn collection(
    twin: TwinHandle,
    ops: OpsHandle,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match method {
        Method::GET | Method::HEAD => list(&ops, query.as_deref()).await,
        Method::POST => start(&twin, &ops, &headers, body).await,
        _ => Err(ApiError::MethodNotAllowed {
            allow: "GET, HEAD, POST",
        }),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// `/te/v1/operations/<cmd_id>`.
pub async fn item(ops: OpsHandle, method: Method, cmd_id: String) -> Response {
    let cmd_id = percent_decode_str(&cmd_id).decode_utf8_lossy().into_owned();
    let result = match method {
        Method::GET | Method::HEAD => match ops.get(cmd_id.clone()).await {
            Ok(Some(op)) => Ok(reply(StatusCode::OK, &op)),
            Ok(None) => Err(ApiError::Ops(crate::ops::store::OpsError::NotFound(cmd_id))),
            Err(_) => Err(ApiError::OpsStopped),
        },
        Method::DELETE => match ops.cancel(cmd_id).await {
            Ok(Ok(op)) => Ok(reply(StatusCode::OK, &op)),
            Ok(Err(e)) => Err(ApiError::Ops(e)),
            Err(_) => Err(ApiError::OpsStopped),
        },
        _ => Err(ApiError::MethodNotAllowed {
            allow: "GET, HEAD, DELETE",
        }),
    };
    result.unwrap_or_else(ApiError::into_response)
}

async fn list(ops: &OpsHandle, query: Option<&str>) -> Result<Response, ApiError> {
    let mut filter = Filter::default();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = super::path::form_decode(value)?;
        match key {
            "entity" => filter.entity = Some(normalized(&value)?),
            "operation" => filter.operation = Some(value),
            "status" => filter.status = Some(value),
            other => {
                return Err(ApiError::Ops(crate::ops::store::OpsError::Invalid(
                    format!("unknown query parameter {other:?}: use entity, operation or status"),
                )))
            }
        }
    }
    let found = ops.list(filter).await.map_err(|_| ApiError::OpsStopped)?;
    let body = serde_json::to_string(&found).unwrap_or_else(|_| "[]".into());
    Ok(json(StatusCode::OK, body))
}

/// An entity filter in the topic id's normal form, so that `device/child1` finds `device/child1//`.
fn normalized(id: &str) -> Result<String, ApiError> {
    id.parse::<EntityTopicId>()
        .map(|id| id.as_str().to_owned())
        .map_err(|e| ApiError::Twin(TwinError::from(e)))
}

async fn start(
    twin: &TwinHandle,
    ops: &OpsHandle,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    body::require_json(headers)?;
    let bytes = body::read(headers, body).await?;
    let request: model::Request = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Ops(crate::ops::store::OpsError::Invalid(e.to_string())))?;
    let new = model::check(request)
        .map_err(|e| ApiError::Ops(crate::ops::store::OpsError::Invalid(e)))?;
    let facts = match twin.query(Query::State(new.entity.clone())).await {
        Ok(reply) => {
            let state: Value = reply
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            let capabilities = state["capabilities"]
                .as_object()
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            Facts {
                registered: true,
                capabilities,
            }
        }
        Err(TwinError::EntityNotFound(_)) => Facts {
            registered: false,
            capabilities: Vec::new(),
        },
        Err(e) => return Err(ApiError::Twin(e)),
    };
    let op = ops
        .start(new, facts)
        .await
        .map_err(|_| ApiError::OpsStopped)?
        .map_err(ApiError::Ops)?;
    let mut res = reply(StatusCode::CREATED, &op);
    let location = format!("/te/v1/operations/{}", op.cmd_id);
    if let Ok(value) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(LOCATION, value);
    }
    Ok(res)
}

fn reply(status: StatusCode, op: &Operation) -> Response {
    json(status, serde_json::to_string(op).unwrap_or_default())
}
