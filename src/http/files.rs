//! The file transfer routes (issue #3): any method on `/te/v1/files/<path>` and on the legacy
//! `/tedge/file-transfer/<path>`, answered as thin-edge.io does, plus digests, validators,
//! ranges and limits.
//!
//! The handler reads what the request carries (method, raw path, precondition and digest
//! headers, body), asks the [`Store`] (on the blocking pool) and builds the response. Bodies of
//! errors are plain text; their statuses come from `error::file_status`. Responses on the legacy
//! prefix also carry the deprecation headers.

use warp::http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
    LAST_MODIFIED, RANGE, RETRY_AFTER,
};
use warp::http::{Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::body::Body;
use super::error::file_status;
use crate::files::conditional::{self, Conditions, Outcome, Selection, Validators};
use crate::files::digest;
use crate::files::store::{OpenFile, Precondition};
use crate::files::upload::{self, Upload};
use crate::files::{self, download, FileError, Store, StorePath};

const PREFIX: &str = "/te/v1/files";
const LEGACY_PREFIX: &str = "/tedge/file-transfer";
const ALLOWED: &str = "GET, HEAD, PUT, DELETE";
const SUNSET: &str = "Thu, 31 Dec 2025 23:59:59 GMT";
const DEPRECATION_LINK: &str = "</te/v1/files>; rel=\"deprecation\"";

/// Any method on `/te/v1/files[/<path>]` and `/tedge/file-transfer[/<path>]`.
pub fn routes(store: Store) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let current = warp::path!("te" / "v1" / "files" / ..).map(|| false);
    let legacy = warp::path!("tedge" / "file-transfer" / ..).map(|| true);
    current
        .or(legacy)
        .unify()
        .and(warp::any().map(move || store.clone()))
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(super::request_body())
        .then(handle)
}

async fn handle(
    legacy: bool,
    store: Store,
    method: Method,
    full: FullPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let prefix = if legacy { LEGACY_PREFIX } else { PREFIX };
    let raw = full.as_str().strip_prefix(prefix).unwrap_or_default();
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let result = match StorePath::parse(raw) {
        Err(e) => Err(FileError::from(e)),
        Ok(path) => match method {
            Method::GET | Method::HEAD => get(&store, path, &headers, method == Method::HEAD).await,
            Method::PUT => put(&store, path, &headers, body).await,
            Method::DELETE => delete(&store, path, &headers).await,
            _ => Err(FileError::MethodNotAllowed),
        },
    };
    let mut res = result.unwrap_or_else(|e| refused(&store, e));
    if legacy {
        let h = res.headers_mut();
        h.insert(
            HeaderName::from_static("deprecation"),
            HeaderValue::from_static("true"),
        );
        h.insert(
            HeaderName::from_static("sunset"),
            HeaderValue::from_static(SUNSET),
        );
        h.insert(
            HeaderName::from_static("link"),
            HeaderValue::from_static(DEPRECATION_LINK),
        );
    }
    res
}

fn conditions(headers: &HeaderMap) -> Conditions<'_> {
    let h = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    Conditions {
        if_match: h(IF_MATCH),
        if_none_match: h(IF_NONE_MATCH),
        if_modified_since: h(IF_MODIFIED_SINCE),
        if_unmodified_since: h(IF_UNMODIFIED_SINCE),
        if_range: h(IF_RANGE),
        range: h(RANGE),
    }
}

fn validators(file: &OpenFile) -> Validators {
    Validators::new(file.digest.etag(), file.modified)
}

async fn open(store: &Store, path: &StorePath) -> Result<OpenFile, FileError> {
    let s = store.clone();
    let p = path.clone();
    files::blocking(move || s.open_read(&p)).await
}

/// GET or HEAD: the file, a range of it, 304, 412 or 416.
async fn get(
    store: &Store,
    path: StorePath,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, FileError> {
    let file = open(store, &path).await?;
    let v = validators(&file);
    let c = conditions(headers);
    match conditional::evaluate(&c, Some(&v), true) {
        Outcome::Proceed => {}
        Outcome::NotModified => {
            let mut res = empty(StatusCode::NOT_MODIFIED);
            validator_headers(res.headers_mut(), &v);
            return Ok(res);
        }
        Outcome::Failed => return Err(FileError::PreconditionFailed),
    }
    // Range applies to GET only (RFC 9110 §14.2): HEAD describes the whole file.
    let selection = if head {
        Selection::Whole
    } else {
        conditional::select(&c, &v, file.len)
    };
    let (status, start, len) = match selection {
        Selection::Whole => (StatusCode::OK, 0, file.len),
        Selection::Part(r) => (
            StatusCode::PARTIAL_CONTENT,
            *r.start(),
            r.end() - r.start() + 1,
        ),
        Selection::Unsatisfiable => return Err(FileError::RangeNotSatisfiable { len: file.len }),
    };
    let mut res = if head || len == 0 {
        empty(status)
    } else {
        let blocks = download::stream(file.file, start, len, store.counters().clone());
        let mut res = warp::reply::stream(blocks).into_response();
        *res.status_mut() = status;
        res
    };
    let h = res.headers_mut();
    validator_headers(h, &v);
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    let mime = mime_guess::from_path(path.file_name()).first_or_octet_stream();
    if let Ok(value) = HeaderValue::from_str(mime.essence_str()) {
        h.insert(CONTENT_TYPE, value);
    }
    insert(h, "repr-digest", &file.digest.structured());
    insert(h, "x-checksum-sha256", &file.digest.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {}-{}/{}", start, start + len - 1, file.len);
        insert(h, CONTENT_RANGE.as_str(), &range);
    }
    Ok(res)
}

/// PUT: stores the body; 201.
async fn put(
    store: &Store,
    path: StorePath,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, FileError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let expected = digest::expected(
        text("content-digest"),
        text("repr-digest"),
        text("x-checksum-sha256"),
    )?;
    let precondition = precondition(store, &path, headers).await?;
    let content_length = text(CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok());
    let upload = Upload {
        path,
        content_length,
        expected,
        precondition,
    };
    upload::receive(store, upload, body).await?;
    Ok(empty(StatusCode::CREATED))
}

/// DELETE: removes the file; 202, also when there was none.
async fn delete(
    store: &Store,
    path: StorePath,
    headers: &HeaderMap,
) -> Result<Response, FileError> {
    let precondition = precondition(store, &path, headers).await?;
    let s = store.clone();
    files::blocking(move || s.delete(&path, precondition)).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// A write's `If-Match`, `If-None-Match` and `If-Unmodified-Since`, if it has any: checked
/// before the body is read (so a doomed upload is refused at once), and again by the store under
/// its commit lock (so two conditional writes cannot both pass against one version).
async fn precondition(
    store: &Store,
    path: &StorePath,
    headers: &HeaderMap,
) -> Result<Option<Precondition>, FileError> {
    let c = conditions(headers);
    if c.if_match.is_none() && c.if_none_match.is_none() && c.if_unmodified_since.is_none() {
        return Ok(None);
    }
    let owned = [c.if_match, c.if_none_match, c.if_unmodified_since].map(|h| h.map(String::from));
    let holds = move |current: Option<&Validators>| {
        let [if_match, if_none_match, if_unmodified_since] = &owned;
        let c = Conditions {
            if_match: if_match.as_deref(),
            if_none_match: if_none_match.as_deref(),
            if_unmodified_since: if_unmodified_since.as_deref(),
            ..Conditions::default()
        };
        conditional::evaluate(&c, current, false) == Outcome::Proceed
    };
    let s = store.clone();
    let p = path.clone();
    let current = files::blocking(move || s.current(&p)).await?;
    if !holds(current.as_ref()) {
        return Err(FileError::PreconditionFailed);
    }
    Ok(Some(Box::new(holds)))
}

/// The response to a refused request: plain text, the status of `error::file_status`.
fn refused(store: &Store, e: FileError) -> Response {
    let status = file_status(&e);
    store.counters().refused(e.reason());
    match e.detail() {
        Some(detail) => tracing::error!(%status, "file transfer failed: {detail}"),
        None => tracing::debug!(%status, error = %e, "file transfer refused"),
    }
    let mut res = e.to_string().into_response();
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match e {
        FileError::MethodNotAllowed => {
            h.insert(ALLOW, HeaderValue::from_static(ALLOWED));
        }
        FileError::Busy => {
            h.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        FileError::RangeNotSatisfiable { len } => {
            insert(h, CONTENT_RANGE.as_str(), &format!("bytes */{len}"));
        }
        _ => {}
    }
    res
}

fn empty(status: StatusCode) -> Response {
    let mut res = Response::default();
    *res.status_mut() = status;
    res
}

fn validator_headers(h: &mut HeaderMap, v: &Validators) {
    insert(h, ETAG.as_str(), &v.etag);
    insert(h, LAST_MODIFIED.as_str(), &v.http_date());
}

fn insert(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        h.insert(name, value);
    }
}
