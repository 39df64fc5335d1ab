//! `GET /healthz` and `GET /readyz` (spec/twin.md §6.3), and `GET /metrics` (issue #7).
//!
//! Liveness says only that the process answers; readiness reports the shared [`Readiness`]
//! (`crate::readiness`) as it is at the time of the request. Neither talks to the twin's task, so
//! both answer even while it is busy.
//!
//! [`Readiness`]: crate::readiness::Readiness

use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use super::json;
use crate::files::Store;
use crate::metrics::Metrics;
use crate::ops::task::OpsHandle;
use crate::twin::feed::ChangeFeed;
use crate::twin::TwinHandle;

/// The media type of the OpenMetrics text format, which Prometheus negotiates and reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const ALLOW: &str = "GET, HEAD";

/// 200 `{"status":"alive"}`.
pub async fn healthz(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: ALLOW }.into_response();
    }
    json(StatusCode::OK, r#"{"status":"alive"}"#.to_string())
}

/// 200 `{"status":"ready"}`, else 503 `{"status":"starting"|"disconnected","reason":…}`.
pub async fn readyz(twin: TwinHandle, method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: ALLOW }.into_response();
    }
    let readiness = twin.readiness();
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&readiness.body())
        .unwrap_or_else(|_| r#"{"status":"starting"}"#.to_string());
    json(status, body)
}

/// 200 with the figures of [`Metrics::scrape`].
pub async fn metrics(
    method: Method,
    metrics: &Metrics,
    twin: &TwinHandle,
    files: &Store,
    ops: &OpsHandle,
    feed: &ChangeFeed,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed { allow: ALLOW }.into_response();
    }
    let text = metrics.scrape(twin, files, ops, feed).await;
    let mut response = Response::new(text.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static(OPENMETRICS),
    );
    response
}
