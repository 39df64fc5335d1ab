//! The one place where HTTP status codes of errors are chosen (spec/twin.md §5.1, §5.8).
//!
//! Every failure of the HTTP layer (a [`TwinError`] from the store, a path or body error, a
//! method the route does not allow, or a warp rejection) becomes an [`ApiError`], and leaves as
//! `{"error":"<message>"}` with `Content-Type: application/json`. The messages themselves are
//! owned by the error types; this module only picks statuses and the `Allow` and `Retry-After`
//! headers.

use std::convert::Infallible;

use warp::http::header::{HeaderValue, ALLOW, RETRY_AFTER};
use warp::http::StatusCode;
use warp::reject::{
    InvalidHeader, InvalidQuery, LengthRequired, MethodNotAllowed, MissingHeader, PayloadTooLarge,
    UnsupportedMediaType,
};
use warp::reply::Response;
use warp::Rejection;

use super::body::BodyError;
use super::json;
use super::path::PathError;
use crate::files::FileError;
use crate::ops::store::OpsError;
use crate::twin::error::TwinError;

/// Everything an HTTP request can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Twin(#[from] TwinError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Ops(#[from] OpsError),
    /// 503: the operations task is gone (the agent is stopping).
    #[error("The operations service is stopping")]
    OpsStopped,
    /// 405 on a known route; `allow` lists its methods (empty when unknown).
    #[error("Method Not Allowed")]
    MethodNotAllowed { allow: &'static str },
    /// A request warp refused before any route ran, with the status warp chose.
    #[error("{message}")]
    Framework {
        status: StatusCode,
        message: &'static str,
    },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Twin(e) => twin_status(e),
            ApiError::Path(PathError::NotFound | PathError::UnsupportedChannel(_)) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Path(PathError::Query(_) | PathError::Parameter { .. }) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Path(PathError::Invalid(e)) => twin_status(e),
            ApiError::Body(BodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(BodyError::Read(_)) => StatusCode::BAD_REQUEST,
            ApiError::Body(BodyError::NotJson) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Ops(e) => ops_status(e),
            ApiError::OpsStopped => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Framework { status, .. } => *status,
        }
    }

    pub fn into_response(self) -> Response {
        let status = self.status();
        tracing::debug!(%status, error = %self, "http request refused");
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut res = json(status, body);
        match &self {
            ApiError::MethodNotAllowed { allow } if !allow.is_empty() => {
                res.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Twin(TwinError::NotReady(_)) => {
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// The status of each operations error (issue #5). Exhaustive on purpose.
pub fn ops_status(e: &OpsError) -> StatusCode {
    match e {
        OpsError::UnknownEntity(_) | OpsError::NotFound(_) | OpsError::FileNotFound(_) => {
            StatusCode::NOT_FOUND
        }
        OpsError::NoCapability { .. }
        | OpsError::Running { .. }
        | OpsError::DuplicateId(_)
        | OpsError::Finished { .. } => StatusCode::CONFLICT,
        OpsError::Invalid(_) => StatusCode::BAD_REQUEST,
        OpsError::TooMany(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The status of each file-transfer error (issue #3). Exhaustive on purpose.
pub fn file_status(e: &FileError) -> StatusCode {
    use FileError::*;
    match e {
        InvalidPath(_) | NotFound(_) | DeleteDirectory(_) => StatusCode::NOT_FOUND,
        UploadOnDirectory(_) | ParentIsFile { .. } => StatusCode::CONFLICT,
        TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Quota { .. } | DiskFull => StatusCode::INSUFFICIENT_STORAGE,
        BadDigest(_) | DigestMismatch { .. } | BodyRead => StatusCode::BAD_REQUEST,
        BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        Busy => StatusCode::SERVICE_UNAVAILABLE,
        PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of each store error. Exhaustive on purpose: a new variant must be placed here.
fn twin_status(e: &TwinError) -> StatusCode {
    use TwinError::*;
    match e {
        InvalidTopicId(_)
        | RootAndParent
        | InvalidEntityType(_)
        | ParentNotFound(_)
        | OwnParent(_)
        | ServiceParent { .. }
        | DescendantParent { .. }
        | MainParent
        | MainAlreadyRegistered(_)
        | MainNotDeregistrable
        | Managed(_)
        | HealthNotFound(_)
        | HealthNotService { .. }
        | InvalidTwinKey(_)
        | BodySyntax(_)
        | BadBody(_)
        | InvalidPayload(_) => StatusCode::BAD_REQUEST,
        // MQTT-only messages (§5.8): not expected over HTTP, but a client error if they appear.
        TypeUpdate(_) | ExternalIdUpdate(_) | InvalidConfigKey(_) | AutoRegistrationScheme(_) => {
            StatusCode::BAD_REQUEST
        }
        EntityNotFound(_)
        | UnknownEntity(_)
        | TwinKeyNotFound { .. }
        | ConfigKeyNotFound { .. } => StatusCode::NOT_FOUND,
        AlreadyRegistered(_) => StatusCode::CONFLICT,
        BodyStructure(_) => StatusCode::UNPROCESSABLE_ENTITY,
        NotReady(_) | NotAcknowledged | Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        StoreFull(_) | SectionFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
    }
}

/// The single `recover` of the server: turns warp's rejections into the JSON error format.
///
/// The routes answer every request they match themselves, so in practice this sees only "no
/// route matched" (404); the other arms keep the format if a filter is added that rejects.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let framework = |status, message| ApiError::Framework { status, message };
    let error = if rejection.is_not_found() {
        ApiError::Path(PathError::NotFound)
    } else if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed { allow: "" }
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        ApiError::Body(BodyError::TooLarge)
    } else if rejection.find::<UnsupportedMediaType>().is_some() {
        ApiError::Body(BodyError::NotJson)
    } else if rejection.find::<LengthRequired>().is_some() {
        framework(StatusCode::LENGTH_REQUIRED, "Length Required")
    } else if rejection.find::<InvalidQuery>().is_some() {
        framework(
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        )
    } else if rejection.find::<InvalidHeader>().is_some()
        || rejection.find::<MissingHeader>().is_some()
    {
        framework(StatusCode::BAD_REQUEST, "Bad Request")
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        framework(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    };
    Ok(error.into_response())
}

impl warp::reject::Reject for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{EntityTopicId, TopicIdError};
    use warp::http::header::CONTENT_TYPE;

    fn id() -> EntityTopicId {
        "device/c//".parse().unwrap()
    }

    #[test]
    fn every_store_error_has_its_documented_status() {
        let cases = [
            (TwinError::InvalidTopicId(TopicIdError::AllEmpty), 400),
            (TwinError::RootAndParent, 400),
            (TwinError::InvalidEntityType("main".into()), 400),
            (TwinError::ParentNotFound(id()), 400),
            (TwinError::OwnParent(id()), 400),
            (
                TwinError::ServiceParent {
                    parent: id(),
                    id: id(),
                },
                400,
            ),
            (
                TwinError::DescendantParent {
                    parent: id(),
                    id: id(),
                },
                400,
            ),
            (TwinError::MainParent, 400),
            (TwinError::MainAlreadyRegistered(id()), 400),
            (TwinError::MainNotDeregistrable, 400),
            (TwinError::Managed(id()), 400),
            (TwinError::HealthNotFound(id()), 400),
            (
                TwinError::HealthNotService {
                    health: id(),
                    id: id(),
                },
                400,
            ),
            (TwinError::InvalidTwinKey("@x".into()), 400),
            (TwinError::TypeUpdate(id()), 400),
            (TwinError::ExternalIdUpdate(id()), 400),
            (TwinError::InvalidConfigKey("@x".into()), 400),
            (TwinError::AutoRegistrationScheme(id()), 400),
            (TwinError::EntityNotFound(id()), 404),
            (TwinError::UnknownEntity(id()), 404),
            (
                TwinError::TwinKeyNotFound {
                    id: id(),
                    key: "k".into(),
                },
                404,
            ),
            (
                TwinError::ConfigKeyNotFound {
                    id: id(),
                    key: "k".into(),
                },
                404,
            ),
            (TwinError::AlreadyRegistered(id()), 409),
            (TwinError::StoreFull(100000), 507),
            (TwinError::NotReady("x".into()), 503),
            (TwinError::NotAcknowledged, 503),
            (
                TwinError::SectionFull {
                    section: "twin keys",
                    id: id(),
                    limit: 10000,
                },
                507,
            ),
            (TwinError::InvalidPayload("x".into()), 400),
            (TwinError::BodySyntax("x".into()), 400),
            (TwinError::BodyStructure("x".into()), 422),
            (TwinError::BadBody("x".into()), 400),
            (TwinError::Unavailable, 503),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error.clone()).status(), status, "{error:?}");
        }
    }

    #[test]
    fn not_ready_tells_clients_to_retry_after_a_second() {
        let res = ApiError::from(TwinError::NotReady("connecting".into())).into_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[RETRY_AFTER], "1");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let res = ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response();
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()[ALLOW], "GET, HEAD");
    }
}
