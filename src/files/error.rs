//! Everything a file-transfer request can fail with. The messages are the bodies clients see
//! (plain text, thin-edge.io's wording where it has one) and never name a server path; the
//! statuses are chosen in `http::error`. An I/O failure shows only `Internal error`: its detail
//! goes to the log through [`FileError::detail`].

use std::io;

use super::digest::{BadDigestField, Sha256};
use super::path::InvalidPath;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// 404: the path leaves the root (also through a symlink) or names the store's own files.
    #[error(transparent)]
    InvalidPath(#[from] InvalidPath),
    /// 404: no file there, or a directory.
    #[error("File not found: {0:?}")]
    NotFound(String),
    /// 409.
    #[error("Cannot upload: {0:?} is a directory, not a file")]
    UploadOnDirectory(String),
    /// 409: a parent of the path is a file.
    #[error("Cannot upload: {path:?}: {parent:?} is a file, not a directory")]
    ParentIsFile { path: String, parent: String },
    /// 404.
    #[error("Cannot delete: {0:?} is a directory, not a file")]
    DeleteDirectory(String),
    /// 413.
    #[error(
        "File too large: {path:?} is larger than the limit of {limit} bytes (files.max_file_bytes)"
    )]
    TooLarge { path: String, limit: u64 },
    /// 507: the store's quota.
    #[error("Insufficient storage: {path:?} does not fit in the file store's quota of {quota} bytes (files.quota_bytes)")]
    Quota { path: String, quota: u64 },
    /// 507: the file system.
    #[error("Insufficient storage: the disk is full")]
    DiskFull,
    /// 400.
    #[error(transparent)]
    BadDigest(#[from] BadDigestField),
    /// 400: nothing was stored.
    #[error("Digest mismatch: the body's SHA-256 is {actual}, the request announced {expected}")]
    DigestMismatch { expected: Sha256, actual: Sha256 },
    /// 400: the body ended early or could not be read; nothing was stored.
    #[error("Upload interrupted: the request body could not be read to its end")]
    BodyRead,
    /// 408: the body stopped arriving.
    #[error("Upload abandoned: no bytes of the body arrived for a minute")]
    BodyTimeout,
    /// 503: too many uploads at once.
    #[error("Too many uploads in progress, retry later")]
    Busy,
    /// 412.
    #[error("Precondition Failed")]
    PreconditionFailed,
    /// 416.
    #[error("Range Not Satisfiable")]
    RangeNotSatisfiable { len: u64 },
    /// 405.
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// 500.
    #[error("Internal error")]
    Io {
        /// What was being done, with the path relative to the root.
        what: String,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// An I/O failure, unless the disk is full (507).
    pub fn io(what: impl Into<String>, source: io::Error) -> FileError {
        if source.kind() == io::ErrorKind::StorageFull
            || source.kind() == io::ErrorKind::QuotaExceeded
        {
            return FileError::DiskFull;
        }
        FileError::Io {
            what: what.into(),
            source,
        }
    }

    /// What the log says about an internal error; `None` for errors that are the client's.
    pub fn detail(&self) -> Option<String> {
        match self {
            FileError::Io { what, source } => Some(format!("{what}: {source}")),
            _ => None,
        }
    }

    /// A short label for the counters of refused requests.
    pub fn reason(&self) -> &'static str {
        match self {
            FileError::InvalidPath(_) => "invalid_path",
            FileError::NotFound(_) => "not_found",
            FileError::UploadOnDirectory(_) | FileError::ParentIsFile { .. } => "conflict",
            FileError::DeleteDirectory(_) => "directory",
            FileError::TooLarge { .. } => "too_large",
            FileError::Quota { .. } => "quota",
            FileError::DiskFull => "disk_full",
            FileError::BadDigest(_) | FileError::DigestMismatch { .. } => "digest",
            FileError::BodyRead | FileError::BodyTimeout => "body",
            FileError::Busy => "busy",
            FileError::PreconditionFailed => "precondition",
            FileError::RangeNotSatisfiable { .. } => "range",
            FileError::MethodNotAllowed => "method",
            FileError::Io { .. } => "io",
        }
    }
}
