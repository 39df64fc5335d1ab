//! Handlers of the entity API (spec/twin.md §5.3, §5.7) and of the state listing (§6.1, §6.2).
//!
//! Each request becomes one [`Query`] or [`Write`] for the twin, whose reply body is passed
//! through untouched. This module picks the success statuses and which methods each resource
//! allows (405 with `Allow` otherwise); the error statuses are `error`'s, the path grammar is
//! `path`'s and the body rules are `body`'s. The write and loading gates live in [`TwinHandle`].

use warp::http::{HeaderMap, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::Reply;

use super::body::{self, Body};
use super::error::ApiError;
use super::json;
use super::path::{self, PathError, Resource};
use crate::ops::store::Filter;
use crate::ops::task::OpsHandle;
use crate::topic::EntityTopicId;
use crate::twin::api::{Query, Reply as TwinReply, Write};
use crate::twin::TwinHandle;

/// The mount point of the entity API; `/te/v1` whatever the MQTT root (§5.1).
pub const PREFIX: &str = "/te/v1/entities";

const COLLECTION: &str = "GET, HEAD, POST";
const ENTITY: &str = "GET, HEAD, PATCH, DELETE";
const TWIN: &str = "GET, HEAD, PUT, DELETE";
const READ_ONLY: &str = "GET, HEAD";

/// Any method on `/te/v1/entities` or below it.
pub async fn entities(
    twin: TwinHandle,
    ops: OpsHandle,
    method: Method,
    path: FullPath,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let rest = path.as_str().strip_prefix(PREFIX).unwrap_or_default();
    let result = if rest.is_empty() {
        collection(&twin, method, query, &headers, body).await
    } else {
        match rest.strip_prefix('/') {
            Some(raw) => resource(&twin, &ops, method, raw, query, &headers, body).await,
            None => Err(PathError::NotFound.into()),
        }
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// `GET /te/v1/state`: the state documents of the selected entities (§6.2).
pub async fn states(twin: TwinHandle, method: Method, query: Option<String>) -> Response {
    let result = async {
        if !is_read(&method) {
            return Err(ApiError::MethodNotAllowed { allow: READ_ONLY });
        }
        let filter = path::filter_query(query.as_deref())?;
        Ok(ok(twin.query(Query::States(filter)).await?))
    };
    result.await.unwrap_or_else(ApiError::into_response)
}

/// `GET /te/v1/entities` (listing, §5.4) and `POST /te/v1/entities` (§5.5).
async fn collection(
    twin: &TwinHandle,
    method: Method,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if is_read(&method) {
        let filter = path::filter_query(query.as_deref())?;
        return Ok(ok(twin.query(Query::List(filter)).await?));
    }
    if method != Method::POST {
        return Err(ApiError::MethodNotAllowed { allow: COLLECTION });
    }
    // 415 before reading the body, as thin-edge.io does.
    body::require_json(headers)?;
    let bytes = body::read(headers, body).await?;
    let entity = body::new_entity(&bytes)?;
    let reply = twin.write(Write::Create(entity)).await?;
    Ok(with_status(StatusCode::CREATED, reply))
}

/// Everything under `/te/v1/entities/`: `raw` is the still-encoded rest of the path.
async fn resource(
    twin: &TwinHandle,
    ops: &OpsHandle,
    method: Method,
    raw: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let read = is_read(&method);
    let not_allowed = |allow| Err(ApiError::MethodNotAllowed { allow });
    match path::parse(raw)? {
        Resource::Entity(id) => match method {
            _ if read => Ok(ok(twin.query(Query::Entity(id)).await?)),
            Method::PATCH => {
                let (parent, health) = body::patch(&body::read(headers, body).await?)?;
                let patch = Write::Patch { id, parent, health };
                Ok(ok(twin.write(patch).await?))
            }
            // 200 with the removed entities, or 204 when nothing was registered (§5.6).
            Method::DELETE => Ok(ok(twin.write(Write::Delete(id)).await?)),
            _ => not_allowed(ENTITY),
        },
        Resource::Twin(id) => match method {
            _ if read => Ok(ok(twin.query(Query::Twin(id)).await?)),
            Method::PUT => {
                let map = body::twin_map(&body::read(headers, body).await?)?;
                Ok(ok(twin.write(Write::TwinReplace(id, map)).await?))
            }
            Method::DELETE => {
                twin.write(Write::TwinClear(id)).await?;
                Ok(no_content())
            }
            _ => not_allowed(TWIN),
        },
        Resource::TwinKey(id, key) => match method {
            _ if read => Ok(ok(twin.query(Query::TwinKey(id, key)).await?)),
            Method::PUT => {
                let value = body::twin_value(&body::read(headers, body).await?)?;
                Ok(ok(twin.write(Write::TwinSet(id, key, value)).await?))
            }
            Method::DELETE => {
                twin.write(Write::TwinDelete(id, key)).await?;
                Ok(no_content())
            }
            _ => not_allowed(TWIN),
        },
        Resource::Config(id) if read => Ok(ok(twin.query(Query::Config(id)).await?)),
        Resource::ConfigKey(id, key) if read => {
            Ok(ok(twin.query(Query::ConfigKey(id, key)).await?))
        }
        Resource::State(id) if read => {
            let reply = twin.query(Query::State(id.clone())).await?;
            Ok(ok(with_operations(reply, ops, id).await))
        }
        Resource::History(id, mtype) if read => {
            let (since, series) = path::history_query(query.as_deref())?;
            let history = Query::History {
                id,
                mtype,
                since,
                series,
            };
            Ok(ok(twin.query(history).await?))
        }
        Resource::Config(_)
        | Resource::ConfigKey(..)
        | Resource::State(_)
        | Resource::History(..) => not_allowed(READ_ONLY),
    }
}

/// HEAD is answered as GET; hyper leaves the body out.
fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// The state document with the entity's operations (issue #5), each with its history, as a
/// last member `operations`; the document is unchanged for an entity that has none.
async fn with_operations(mut reply: TwinReply, ops: &OpsHandle, id: EntityTopicId) -> TwinReply {
    let filter = Filter {
        entity: Some(id.as_str().to_owned()),
        ..Filter::default()
    };
    // The operations task saves its table as it goes: a read of the twin never waits on it
    // for long, and is answered without the operations rather than held up.
    let listed = tokio::time::timeout(crate::metrics::ASK_TIMEOUT, ops.list(filter)).await;
    let Ok(Ok(found)) = listed else {
        return reply;
    };
    if found.is_empty() {
        return reply;
    }
    if let Some(body) = reply.body.as_mut() {
        if body.ends_with('}') {
            if let Ok(list) = serde_json::to_string(&found) {
                body.pop();
                body.push_str(",\"operations\":");
                body.push_str(&list);
                body.push('}');
            }
        }
    }
    reply
}

fn ok(reply: TwinReply) -> Response {
    with_status(StatusCode::OK, reply)
}

fn with_status(status: StatusCode, reply: TwinReply) -> Response {
    match reply.body {
        Some(body) => json(status, body),
        None => no_content(),
    }
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
